//! Running one command: spawning it in its own process group, feeding its input, streaming its
//! output and reporting its exit.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread;

use mica_pod_proto::GuestMsg;
use rustix::process::{Pid, Signal, kill_process_group};

use crate::args::Enter;
use crate::reaper::Reaper;
use crate::session::{Execs, Outbox};
use crate::{describe, log};

/// `PATH` of commands whose environment does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most output sent in one frame.
const CHUNK: usize = 32 * 1024;

/// An `Exec` or `Spawn` request.
#[derive(Debug)]
pub struct Request {
    /// The host's id for the command.
    pub id: u32,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The environment, on top of [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Fed to its standard input.
    pub stdin: Vec<u8>,
    /// Whether its standard input then stays open for the host's chunks ([`Execs::inputs`]).
    pub stdin_open: bool,
    /// Where and as whom it runs (`Spawn`); `None` for the agent's own root, directory and user.
    pub within: Option<Within>,
}

/// What a command reads on standard input.
#[derive(Debug)]
enum Input {
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// Chunks as the host sends them, until the sender is dropped.
    Stream(Receiver<Vec<u8>>),
}

/// A container's setting for a command.
#[derive(Debug)]
pub struct Within {
    /// The root directory (empty: the guest's).
    pub root: String,
    /// The working directory (empty: `/`).
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The command that runs `argv` as `within` asks: a root other than the guest's takes a second
/// agent process (`--enter`), which changes root before it executes the program.
fn command(argv: &[String], within: Option<&Within>) -> io::Result<Command> {
    let Some(within) = within else {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        return Ok(cmd);
    };
    let cwd = if within.cwd.is_empty() { "/" } else { within.cwd.as_str() };
    if within.root.is_empty() {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(cwd).uid(within.uid).gid(within.gid);
        return Ok(cmd);
    }
    let enter = Enter {
        root: within.root.clone().into(),
        cwd: cwd.into(),
        uid: within.uid,
        gid: within.gid,
        argv: argv.to_vec(),
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(enter.to_args());
    Ok(cmd)
}

/// The pipes and identity of a started command, handed to its supervisor thread.
#[derive(Debug)]
struct Started {
    id: u32,
    pid: Pid,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

/// Starts the command of `req` and a thread that reports on it. Failures to start are reported
/// to the host as an `Error` with the request's id.
pub fn start(req: Request, out: &Arc<Outbox>, execs: &Arc<Execs>, reaper: &'static Reaper) {
    let Request { id, argv, env, stdin, stdin_open, within } = req;
    let error = |message: String| {
        out.send(&GuestMsg::Error { id: Some(id), message });
    };
    let Some(program) = argv.first() else {
        return error("exec request has an empty argv".into());
    };
    let mut groups = execs.lock();
    if groups.contains_key(&id) {
        return error(format!("exec id {id} is already in use by a running command"));
    }
    let mut cmd = match command(&argv, within.as_ref()) {
        Ok(cmd) => cmd,
        Err(e) => return error(format!("exec of {program:?} failed: cannot find the agent itself: {}", describe(&e))),
    };
    cmd.env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(env)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match reaper.spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) => return error(format!("exec of {program:?} failed: {}", describe(&e))),
    };
    let pid = Pid::from_child(&child);
    let started =
        Started { id, pid, stdin: child.stdin.take(), stdout: child.stdout.take(), stderr: child.stderr.take() };
    let (out2, execs2) = (Arc::clone(out), Arc::clone(execs));
    let (input, sender) = if stdin_open {
        let (sender, receiver) = mpsc::channel();
        if !stdin.is_empty() {
            let _ = sender.send(stdin);
        }
        (Input::Stream(receiver), Some(sender))
    } else {
        (Input::Bytes(stdin), None)
    };
    let supervisor = thread::Builder::new()
        .name(format!("exec-{id}"))
        .spawn(move || supervise(started, input, &out2, &execs2, reaper));
    match supervisor {
        Ok(_) => {
            groups.insert(id, pid);
            if let Some(sender) = sender {
                execs.inputs().insert(id, sender);
            }
        }
        Err(e) => {
            // The closure and with it the pipes are gone; take the command down again.
            let _ = kill_process_group(pid, Signal::KILL);
            reaper.wait_exit(pid);
            error(format!("exec of {program:?} failed: cannot start a thread to supervise it: {e}"));
        }
    }
}

/// Feeds, drains and collects one command, then reports its exit.
fn supervise(cmd: Started, input: Input, out: &Arc<Outbox>, execs: &Execs, reaper: &Reaper) {
    let Started { id, pid, stdin, stdout, stderr } = cmd;
    if let Some(mut pipe) = stdin {
        // A command that does not read its input makes this fail with EPIPE when it exits.
        let taken = Arc::clone(out);
        let feeder = thread::Builder::new().name(format!("exec-{id}-stdin")).spawn(move || match input {
            Input::Bytes(bytes) => {
                let _ = pipe.write_all(&bytes);
            }
            Input::Stream(chunks) => {
                for chunk in chunks {
                    if pipe.write_all(&chunk).is_err() {
                        break;
                    }
                    // In the pipe: the host may send as much again.
                    taken.send(&GuestMsg::StdinTaken { id, bytes: chunk.len() as u64 });
                }
            }
        });
        if let Err(e) = feeder {
            log(format_args!("command {id}: cannot start a thread to feed stdin, closing it: {e}"));
        }
    }
    let stderr_pump = stderr.and_then(|pipe| {
        let out = Arc::clone(out);
        let pump = thread::Builder::new().name(format!("exec-{id}-stderr")).spawn(move || {
            pump(pipe, &out, |data| GuestMsg::Stderr { id, data });
        });
        pump.map_err(|e| log(format_args!("command {id}: cannot start a thread to read stderr, closing it: {e}"))).ok()
    });
    if let Some(pipe) = stdout {
        pump(pipe, out, |data| GuestMsg::Stdout { id, data });
    }
    if let Some(pump) = stderr_pump {
        let _ = pump.join();
    }
    let status = reaper.wait_exit(pid);
    let (code, signal) = status.map_or((None, None), |s| (s.exit_status(), s.terminating_signal()));
    // Under the table's lock, so that the id is not free before the host could know it is.
    let mut groups = execs.lock();
    out.send(&GuestMsg::Exited { id, code, signal });
    groups.remove(&id);
    execs.inputs().remove(&id);
    drop(groups);
    execs.notify();
}

/// Sends everything read from `pipe` to the host, in chunks of at most [`CHUNK`] bytes, until
/// end of file. Keeps draining if the host is gone, so that the command does not block on a full
/// pipe.
fn pump(mut pipe: impl Read, out: &Outbox, msg: impl Fn(Vec<u8>) -> GuestMsg) {
    let mut buf = vec![0; CHUNK];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.send(&msg(buf[..n].to_vec()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log(format_args!("reading command output failed: {e}"));
                break;
            }
        }
    }
}
