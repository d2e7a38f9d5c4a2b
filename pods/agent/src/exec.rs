//! Running one command: spawning it in its own process group, feeding its input, streaming its
//! output and reporting its exit.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread;

use mica_pod_proto::GuestMsg;
use rustix::process::{Pid, Signal, kill_process_group};

use crate::reaper::Reaper;
use crate::session::{Execs, Outbox};
use crate::{describe, log};

/// `PATH` of commands whose environment does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most output sent in one frame.
const CHUNK: usize = 32 * 1024;

/// An `Exec` request.
#[derive(Debug)]
pub struct Request {
    /// The host's id for the command.
    pub id: u32,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The environment, on top of [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Fed to standard input.
    pub stdin: Vec<u8>,
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
    let Request { id, argv, env, stdin } = req;
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
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
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
    let supervisor = thread::Builder::new()
        .name(format!("exec-{id}"))
        .spawn(move || supervise(started, stdin, &out2, &execs2, reaper));
    match supervisor {
        Ok(_) => {
            groups.insert(id, pid);
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
fn supervise(cmd: Started, input: Vec<u8>, out: &Arc<Outbox>, execs: &Execs, reaper: &Reaper) {
    let Started { id, pid, stdin, stdout, stderr } = cmd;
    if let Some(mut pipe) = stdin {
        // A command that does not read its input makes this fail with EPIPE when it exits.
        let feeder = thread::Builder::new().name(format!("exec-{id}-stdin")).spawn(move || {
            let _ = pipe.write_all(&input);
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
