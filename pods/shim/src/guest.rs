//! One pod VM's agent connection, shared by every process the shim runs in it.
//!
//! The agent protocol (`mica-pod-proto`) runs several commands at once, told apart by ids the
//! host chooses. The shim holds one connection per VM for the VM's whole life (the agent kills
//! what a connection started when it closes), writes requests under a lock and has one reader
//! thread hand each answer to the [`Sink`] of its command. When the connection ends (the VM
//! stopped or died) every command still registered hears [`Exit::Lost`].

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;

use anyhow::{Context, Result, bail};
use mica_pod_proto::{GuestMsg, HostMsg, read_frame, write_frame};

/// How a command in the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It did not start; the agent said why.
    Failed(String),
    /// The connection to the guest ended first (the VM stopped or died).
    Lost(String),
}

impl Exit {
    /// The status containerd reports: the code, 128 + the signal, 127 for a command that did
    /// not start and 255 for one whose VM went away.
    pub fn status(&self) -> u32 {
        match self {
            Exit::Code(code) => u32::try_from(*code).unwrap_or(255),
            Exit::Signal(signal) => 128 + u32::try_from(*signal).unwrap_or(0),
            Exit::Failed(_) => 127,
            Exit::Lost(_) => 255,
        }
    }
}

/// Where a command's output and end go.
pub trait Sink: Send + Sync {
    /// A chunk of its standard output.
    fn stdout(&self, data: &[u8]);
    /// A chunk of its standard error.
    fn stderr(&self, data: &[u8]);
    /// Its end; called once, after its last output.
    fn exited(&self, exit: Exit);
}

/// A command for [`Guest::spawn`].
#[derive(Clone, Debug, Default)]
pub struct Command {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its root directory in the guest (empty: the guest's).
    pub root: String,
    /// Its working directory (empty: `/`).
    pub cwd: String,
    /// User and group.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Whether its standard input stays open for [`Guest::stdin`].
    pub stdin: bool,
}

impl Command {
    /// A plain command in the guest, as root, its input closed.
    pub fn plain(argv: &[&str]) -> Command {
        Command { argv: argv.iter().map(|s| (*s).to_owned()).collect(), ..Command::default() }
    }
}

/// The connection.
pub struct Guest {
    writer: Mutex<UnixStream>,
    sinks: Mutex<Sinks>,
    /// Signalled when a command took input, ended, or the connection did.
    credit: Condvar,
    next_id: AtomicU32,
}

#[derive(Default)]
struct Sinks {
    by_id: HashMap<u32, Arc<dyn Sink>>,
    /// Per command, the standard input sent that it has not taken yet.
    unread: HashMap<u32, u64>,
    /// Why the connection ended, once it did.
    ended: Option<String>,
}

/// How much standard input may wait in the guest for a command that does not read it: more
/// waits here, in the sender (the FIFO containerd writes, or the shim's own copy).
pub const STDIN_WINDOW: u64 = 1 << 20;

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").finish_non_exhaustive()
    }
}

impl Guest {
    /// Takes over a ready agent connection and starts its reader thread.
    pub fn new(stream: UnixStream) -> Result<Arc<Guest>> {
        let reader = stream.try_clone().context("cloning the agent connection")?;
        let guest = Arc::new(Guest {
            writer: Mutex::new(stream),
            sinks: Mutex::new(Sinks::default()),
            credit: Condvar::new(),
            // 0 is never sent: `watch` registers under it.
            next_id: AtomicU32::new(1),
        });
        let weak = Arc::downgrade(&guest);
        thread::Builder::new()
            .name("agent-reader".into())
            .spawn(move || {
                let why = read_loop(BufReader::new(reader), &weak);
                if let Some(guest) = weak.upgrade() {
                    guest.end(why);
                }
            })
            .context("starting the agent reader thread")?;
        Ok(guest)
    }

    fn sinks(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, msg: &HostMsg) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        write_frame(&mut *writer, msg).context("sending to the pod's agent")
    }

    /// The connection ended: every command still registered is lost.
    fn end(&self, why: String) {
        let sinks: Vec<_> = {
            let mut sinks = self.sinks();
            sinks.ended = Some(why.clone());
            sinks.unread.clear();
            sinks.by_id.drain().map(|(_, sink)| sink).collect()
        };
        self.credit.notify_all();
        for sink in sinks {
            sink.exited(Exit::Lost(why.clone()));
        }
    }

    /// Why the connection ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.sinks().ended.clone()
    }

    /// Starts `cmd`, its output and end going to `sink`; returns its id.
    pub fn spawn(&self, cmd: &Command, sink: Arc<dyn Sink>) -> Result<u32> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        {
            let mut sinks = self.sinks();
            if let Some(why) = &sinks.ended {
                bail!("the pod VM is gone ({why})");
            }
            sinks.by_id.insert(id, sink);
        }
        let msg = HostMsg::Spawn {
            id,
            argv: cmd.argv.clone(),
            env: cmd.env.clone(),
            root: cmd.root.clone(),
            cwd: cmd.cwd.clone(),
            uid: cmd.uid,
            gid: cmd.gid,
            stdin: cmd.stdin,
        };
        if let Err(e) = self.send(&msg) {
            self.sinks().by_id.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Registers `sink` to hear only the end of the connection (a process that is the VM
    /// itself: a pod sandbox).
    pub fn watch(&self, sink: Arc<dyn Sink>) -> Result<()> {
        let mut sinks = self.sinks();
        if let Some(why) = &sinks.ended {
            bail!("the pod VM is gone ({why})");
        }
        sinks.by_id.insert(0, sink);
        Ok(())
    }

    /// Passes standard input to command `id` (empty: end of file). Waits while
    /// [`STDIN_WINDOW`] bytes or more sent before wait in the guest unread; fails when the
    /// command ended or the connection did.
    pub fn stdin(&self, id: u32, data: Vec<u8>) -> Result<()> {
        let len = data.len() as u64;
        if len > 0 {
            let mut sinks = self.sinks();
            loop {
                if let Some(why) = &sinks.ended {
                    bail!("the pod VM is gone ({why})");
                }
                if !sinks.by_id.contains_key(&id) {
                    bail!("command {id} has ended");
                }
                let unread = sinks.unread.get(&id).copied().unwrap_or(0);
                // One chunk may always go, however large.
                if unread == 0 || unread + len <= STDIN_WINDOW {
                    sinks.unread.insert(id, unread + len);
                    break;
                }
                sinks = self.credit.wait(sinks).unwrap_or_else(PoisonError::into_inner);
            }
        }
        self.send(&HostMsg::Stdin { id, data })
    }

    /// Command `id` took `bytes` of its input.
    fn taken(&self, id: u32, bytes: u64) {
        let mut sinks = self.sinks();
        if let Some(unread) = sinks.unread.get_mut(&id) {
            *unread = unread.saturating_sub(bytes);
        }
        drop(sinks);
        self.credit.notify_all();
    }

    /// Command `id` ended: its sink, if it had one; whoever waits to send it input stops.
    fn finished(&self, id: u32) -> Option<Arc<dyn Sink>> {
        let mut sinks = self.sinks();
        sinks.unread.remove(&id);
        let sink = sinks.by_id.remove(&id);
        drop(sinks);
        self.credit.notify_all();
        sink
    }

    /// Sends `signal` to command `id`'s process group.
    pub fn signal(&self, id: u32, signal: u32) -> Result<()> {
        let signal = i32::try_from(signal).context("signal number out of range")?;
        self.send(&HostMsg::Signal { id, signal })
    }

    /// Asks the agent to power the VM off.
    pub fn shutdown(&self) -> Result<()> {
        self.send(&HostMsg::Shutdown)
    }

    /// Runs `cmd` to its end, feeding it `input` (when `cmd.stdin`, through [`Guest::stdin`]
    /// in chunks as `input` produces them); its output and how it ended. A command that has not
    /// ended [`RUN_TIMEOUT`] after its input did is killed, and that is the error.
    pub fn run(&self, cmd: &Command, input: Option<&mut Feed<'_>>) -> Result<Output> {
        let collect = Arc::new(Collect::default());
        let id = self.spawn(cmd, collect.clone())?;
        if let Some(input) = input {
            let mut writer = StdinWriter { guest: self, id, buf: Vec::with_capacity(STDIN_CHUNK) };
            let fed = input(&mut writer).and_then(|()| writer.flush().context("sending input"));
            // End of file either way, so that the command ends.
            let closed = self.stdin(id, Vec::new());
            fed?;
            closed?;
        }
        match collect.wait(RUN_TIMEOUT) {
            Some(output) => Ok(output),
            None => {
                let _ = self.signal(id, 9);
                bail!(
                    "{:?} did not finish in the pod VM within {} s (is the pod image older than the shim? \
                     `cargo xtask install-shim` installs both)",
                    cmd.argv,
                    RUN_TIMEOUT.as_secs()
                )
            }
        }
    }
}

/// How long the shim's own commands in the guest (copies, mounts) may take.
pub const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What writes a command's standard input for [`Guest::run`].
pub type Feed<'a> = dyn FnMut(&mut dyn Write) -> Result<()> + 'a;

/// How much standard input one frame carries.
const STDIN_CHUNK: usize = 256 * 1024;

/// A writer whose bytes become [`HostMsg::Stdin`] chunks.
struct StdinWriter<'a> {
    guest: &'a Guest,
    id: u32,
    buf: Vec<u8>,
}

impl Write for StdinWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(STDIN_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == STDIN_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STDIN_CHUNK));
        self.guest.stdin(self.id, chunk).map_err(std::io::Error::other)
    }
}

/// What [`Guest::run`] collected.
#[derive(Debug, Default)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exit: Option<Exit>,
}

impl Output {
    /// Fails unless the command exited with 0; the error holds `what` and its standard error.
    pub fn check(self, what: &str) -> Result<Output> {
        match &self.exit {
            Some(Exit::Code(0)) => Ok(self),
            exit => {
                bail!("{what} failed in the pod VM ({exit:?}): {}", String::from_utf8_lossy(&self.stderr).trim_end())
            }
        }
    }
}

#[derive(Default)]
struct Collect {
    output: Mutex<Output>,
    done: Condvar,
}

impl Collect {
    fn wait(&self, timeout: std::time::Duration) -> Option<Output> {
        let deadline = std::time::Instant::now() + timeout;
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        while output.exit.is_none() {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            output = self.done.wait_timeout(output, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        Some(std::mem::take(&mut *output))
    }
}

impl Sink for Collect {
    fn stdout(&self, data: &[u8]) {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).stdout.extend_from_slice(data);
    }

    fn stderr(&self, data: &[u8]) {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).stderr.extend_from_slice(data);
    }

    fn exited(&self, exit: Exit) {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).exit = Some(exit);
        self.done.notify_all();
    }
}

/// Reads the agent's messages until the connection ends; returns why it ended.
fn read_loop(mut reader: BufReader<UnixStream>, guest: &std::sync::Weak<Guest>) -> String {
    loop {
        let msg = match read_frame::<GuestMsg>(&mut reader) {
            Ok(Some(msg)) => msg,
            Ok(None) => return "the agent connection closed".into(),
            Err(e) if e.stream_usable() => {
                log::warn!("undecodable message from the agent: {e}");
                continue;
            }
            Err(e) => return format!("the agent connection failed: {e}"),
        };
        let Some(guest) = guest.upgrade() else { return "the shim let go of the VM".into() };
        let sink =
            |id: u32, remove: bool| if remove { guest.finished(id) } else { guest.sinks().by_id.get(&id).cloned() };
        match msg {
            GuestMsg::Stdout { id, data } => {
                if let Some(sink) = sink(id, false) {
                    sink.stdout(&data);
                }
            }
            GuestMsg::Stderr { id, data } => {
                if let Some(sink) = sink(id, false) {
                    sink.stderr(&data);
                }
            }
            GuestMsg::Exited { id, code, signal } => {
                if let Some(sink) = sink(id, true) {
                    sink.exited(match (code, signal) {
                        (_, Some(signal)) => Exit::Signal(signal),
                        (code, None) => Exit::Code(code.unwrap_or(255)),
                    });
                }
            }
            GuestMsg::Error { id: Some(id), message } => {
                // The agent's start failures say "exec ..."; any other error about a command (a
                // signal or input it could not take) leaves it running.
                let starting = message.starts_with("exec ");
                if starting && let Some(sink) = sink(id, true) {
                    sink.exited(Exit::Failed(message));
                } else {
                    log::warn!("agent: command {id}: {message}");
                }
            }
            GuestMsg::Error { id: None, message } => log::warn!("agent: {message}"),
            GuestMsg::StdinTaken { id, bytes } => guest.taken(id, bytes),
            GuestMsg::Ready { .. } | GuestMsg::Pong { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Sink for Quiet {
        fn stdout(&self, _: &[u8]) {}
        fn stderr(&self, _: &[u8]) {}
        fn exited(&self, _: Exit) {}
    }

    /// The next host message the fake agent reads, or `None` when none comes within 300 ms.
    fn next(agent: &mut UnixStream) -> Option<HostMsg> {
        agent.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
        match read_frame::<HostMsg>(agent) {
            Ok(msg) => msg,
            Err(e) if !e.stream_usable() => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn input_the_command_has_not_taken_waits_in_the_shim() {
        let (shim_side, mut agent) = UnixStream::pair().unwrap();
        let guest = Guest::new(shim_side).unwrap();
        let id = guest.spawn(&Command { stdin: true, ..Command::plain(&["cat"]) }, Arc::new(Quiet)).unwrap();
        assert!(matches!(next(&mut agent), Some(HostMsg::Spawn { .. })));
        let half = (STDIN_WINDOW / 2) as usize;
        let sender = {
            let guest = Arc::clone(&guest);
            thread::spawn(move || (0..3).map(|_| guest.stdin(id, vec![1; half])).collect::<Vec<_>>())
        };
        // A window's worth goes; the third chunk waits for the command to take some.
        for _ in 0..2 {
            assert!(matches!(next(&mut agent), Some(HostMsg::Stdin { data, .. }) if data.len() == half));
        }
        assert!(next(&mut agent).is_none(), "input beyond the window was sent before any was taken");
        write_frame(&mut agent, &GuestMsg::StdinTaken { id, bytes: half as u64 }).unwrap();
        assert!(matches!(next(&mut agent), Some(HostMsg::Stdin { data, .. }) if data.len() == half));
        assert!(sender.join().unwrap().iter().all(Result::is_ok));
        // A command that ended takes no more: a waiting sender gets an error, not a hang.
        let blocked = {
            let guest = Arc::clone(&guest);
            thread::spawn(move || guest.stdin(id, vec![1; half]))
        };
        assert!(next(&mut agent).is_none());
        write_frame(&mut agent, &GuestMsg::Exited { id, code: Some(0), signal: None }).unwrap();
        let err = blocked.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("has ended"), "{err}");
    }
}
