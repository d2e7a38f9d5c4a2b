//! One connection with the host: requests in, answers out, and cleaning up when it ends.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mica_pod_proto::{FrameError, GuestMsg, HostMsg, read_frame, write_frame};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process_group};
use rustix::system::{RebootCommand, reboot, uname};

use crate::channel::{Reader, Writer};
use crate::reaper::Reaper;
use crate::{describe, exec, log};

/// How long to wait for killed commands to finish when the session ends.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Session settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Honour [`HostMsg::Shutdown`].
    pub allow_poweroff: bool,
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The channel could not be opened.
    Open(io::Error),
    /// The host closed the channel.
    Eof,
    /// The channel failed or lost frame sync.
    Failed(FrameError),
    /// Sending to the host failed.
    SendFailed,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Open(e) => write!(f, "{e}"),
            End::Eof => write!(f, "the host closed the channel"),
            End::Failed(e) => write!(f, "closing the channel: {e}"),
            End::SendFailed => write!(f, "closing the channel: sending to the host failed"),
        }
    }
}

/// The sending half of the channel, shared by everything that reports to the host. Each frame is
/// written whole under the lock.
pub struct Outbox {
    writer: Mutex<Option<Writer>>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    fn new(writer: Writer) -> Self {
        Outbox { writer: Mutex::new(Some(writer)) }
    }

    /// Sends `msg`; returns false (and closes the outbox) if the channel is closed or fails.
    pub fn send(&self, msg: &GuestMsg) -> bool {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = writer.as_mut() else { return false };
        match write_frame(w, msg) {
            Ok(()) => true,
            Err(e) => {
                log(format_args!("sending to the host failed: {e}"));
                *writer = None;
                false
            }
        }
    }

    /// Closes the channel's sending half; later sends are dropped.
    fn close(&self) {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// The commands of a session that have not finished: id to process group.
#[derive(Debug, Default)]
pub struct Execs {
    groups: Mutex<HashMap<u32, Pid>>,
    finished: Condvar,
    /// Where the standard input of commands spawned with it open goes.
    inputs: Mutex<HashMap<u32, Sender<Vec<u8>>>>,
}

impl Execs {
    /// Locks the table. Held while spawning (ids are checked and taken atomically) and while a
    /// command's `Exited` is sent (its id becomes free only after that).
    pub fn lock(&self) -> MutexGuard<'_, HashMap<u32, Pid>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open standard inputs, by command id. Lock it after [`Execs::lock`], never before.
    pub fn inputs(&self) -> MutexGuard<'_, HashMap<u32, Sender<Vec<u8>>>> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes [`Execs::wait_finished`] after a command left the table.
    pub fn notify(&self) {
        self.finished.notify_all();
    }

    /// Sends SIGKILL to every command's process group.
    fn kill_all(&self) -> usize {
        let groups = self.lock();
        for (id, &pgid) in groups.iter() {
            if let Err(e) = kill_process_group(pgid, Signal::KILL)
                && e != Errno::SRCH
            {
                log(format_args!("killing command {id} (process group {}) failed: {e}", pgid.as_raw_pid()));
            }
        }
        groups.len()
    }

    /// Waits until no command is left or `timeout` passed; returns how many are left.
    fn wait_finished(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut groups = self.lock();
        while !groups.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            groups = self.finished.wait_timeout(groups, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        groups.len()
    }
}

/// Serves one session until the host goes away, then kills and reaps its commands.
pub fn serve(reader: Reader, writer: Writer, config: &Config, reaper: &'static Reaper) -> End {
    let out = Arc::new(Outbox::new(writer));
    let execs = Arc::new(Execs::default());
    let end = serve_requests(BufReader::new(reader), config, &out, &execs, reaper);
    teardown(&execs);
    out.close();
    end
}

fn serve_requests(
    mut reader: BufReader<Reader>,
    config: &Config,
    out: &Arc<Outbox>,
    execs: &Arc<Execs>,
    reaper: &'static Reaper,
) -> End {
    if !out.send(&ready()) {
        return End::SendFailed;
    }
    loop {
        let msg = match read_frame::<HostMsg>(&mut reader) {
            Ok(Some(msg)) => msg,
            Ok(None) => return End::Eof,
            Err(e) if e.stream_usable() => {
                out.send(&GuestMsg::Error { id: None, message: e.to_string() });
                continue;
            }
            Err(e) => {
                out.send(&GuestMsg::Error { id: None, message: format!("closing the channel: {e}") });
                return End::Failed(e);
            }
        };
        let sent = match msg {
            HostMsg::Hello => out.send(&ready()),
            HostMsg::Ping { id } => out.send(&GuestMsg::Pong { id }),
            HostMsg::Exec { id, argv, env, stdin } => {
                let req = exec::Request { id, argv, env, stdin, stdin_open: false, within: None };
                exec::start(req, out, execs, reaper);
                true
            }
            HostMsg::Spawn { id, argv, env, root, cwd, uid, gid, stdin } => {
                let within = Some(exec::Within { root, cwd, uid, gid });
                let req = exec::Request { id, argv, env, stdin: Vec::new(), stdin_open: stdin, within };
                exec::start(req, out, execs, reaper);
                true
            }
            HostMsg::Stdin { id, data } => feed(id, data, out, execs),
            HostMsg::Signal { id, signal } => signal_command(id, signal, out, execs),
            HostMsg::Kill { id } => signal_command(id, Signal::KILL.as_raw(), out, execs),
            HostMsg::Shutdown if config.allow_poweroff => {
                log(format_args!("shutdown requested"));
                teardown(execs);
                let message = format!("power off failed: {}", power_off());
                log(format_args!("{message}"));
                out.send(&GuestMsg::Error { id: None, message })
            }
            HostMsg::Shutdown => out.send(&GuestMsg::Error {
                id: None,
                message: "shutdown refused: the agent is not PID 1 and was not started with --allow-poweroff".into(),
            }),
        };
        if !sent {
            return End::SendFailed;
        }
    }
}

fn ready() -> GuestMsg {
    GuestMsg::Ready {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: uname().release().to_string_lossy().into_owned(),
    }
}

/// Passes a chunk of standard input to command `id` (an empty one closes its input).
fn feed(id: u32, data: Vec<u8>, out: &Outbox, execs: &Execs) -> bool {
    let mut inputs = execs.inputs();
    let Some(sender) = inputs.get(&id) else {
        drop(inputs);
        return out.send(&GuestMsg::Error {
            id: Some(id),
            message: format!("no running command with id {id} has its standard input open"),
        });
    };
    // A command whose feeder is gone (its input pipe broke) just drops the bytes.
    if data.is_empty() || sender.send(data).is_err() {
        inputs.remove(&id);
    }
    true
}

/// Sends `signal` to the process group of command `id`; reports failures to the host.
fn signal_command(id: u32, signal: i32, out: &Outbox, execs: &Execs) -> bool {
    let Some(pgid) = execs.lock().get(&id).copied() else {
        return out
            .send(&GuestMsg::Error { id: Some(id), message: format!("no running command with id {id} to signal") });
    };
    let Some(sig) = Signal::from_named_raw(signal) else {
        return out.send(&GuestMsg::Error { id: Some(id), message: format!("{signal} is not a signal number") });
    };
    match kill_process_group(pgid, sig) {
        // The group is gone: the command is finishing and will report so.
        Ok(()) | Err(Errno::SRCH) => true,
        Err(e) => out.send(&GuestMsg::Error {
            id: Some(id),
            message: format!("sending signal {signal} to command {id} failed: {}", describe(&e.into())),
        }),
    }
}

/// Kills the session's commands and waits until their supervisors collected them.
fn teardown(execs: &Execs) {
    if execs.kill_all() == 0 {
        return;
    }
    let left = execs.wait_finished(TEARDOWN_TIMEOUT);
    if left > 0 {
        log(format_args!("{left} killed command(s) still hold their output open; leaving them"));
    }
}

/// Syncs file systems and powers the machine off. Returns only if that failed.
pub fn power_off() -> io::Error {
    rustix::fs::sync();
    match reboot(RebootCommand::PowerOff) {
        Ok(()) => io::Error::other("reboot(RB_POWER_OFF) returned"),
        Err(e) => e.into(),
    }
}
