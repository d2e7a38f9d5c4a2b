//! Runs the built `mica-agent` and talks the pod protocol with it, as the pod manager would over
//! the virtio-serial port: mostly over its standard input and output (`--stdio`), and over a Unix
//! socket and a pseudo-terminal (`--port`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mica_pod_proto::{FrameError, GuestMsg, HostMsg, read_frame, write_frame};

/// Generous: the tests do not measure time, they only must not hang.
const TIMEOUT: Duration = Duration::from_secs(30);

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A running agent and the host's end of its channel.
struct Agent {
    child: Child,
    input: Option<Box<dyn Write + Send>>,
    frames: Receiver<GuestMsg>,
    /// The agent's log (its standard error).
    log: Arc<Mutex<String>>,
    next_ping: u32,
}

/// What became of one command.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// `(code, signal)` from `Exited`.
    exit: Option<(Option<i32>, Option<i32>)>,
    /// The message of an `Error` with the command's id.
    error: Option<String>,
    /// The largest output chunk.
    largest_chunk: usize,
    /// What `StdinTaken` said it took, chunk by chunk.
    taken: Vec<u64>,
}

impl Outcome {
    fn done(&self) -> bool {
        self.exit.is_some() || self.error.is_some()
    }

    fn stdout(&self) -> &str {
        std::str::from_utf8(&self.stdout).expect("utf-8 stdout")
    }
}

impl Agent {
    /// Starts `mica-agent --stdio` and checks its `Ready`.
    fn start() -> Agent {
        let mut child = Agent::spawn(&["--stdio"], Stdio::piped(), Stdio::piped());
        let output = child.stdout.take().expect("agent stdout");
        let input = child.stdin.take().expect("agent stdin");
        Agent::attach(child, output, Box::new(input))
    }

    /// Starts `mica-agent` with `args`, its standard error piped.
    fn spawn(args: &[&str], stdin: Stdio, stdout: Stdio) -> Child {
        Command::new(env!("CARGO_BIN_EXE_mica-agent"))
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mica-agent")
    }

    /// Talks to the agent `child` over `output` (from it) and `input` (to it); checks `Ready`.
    fn attach(mut child: Child, output: impl Read + Send + 'static, input: Box<dyn Write + Send>) -> Agent {
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("agent stderr");
        let log2 = Arc::clone(&log);
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                log2.lock().expect("log lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut agent = Agent { child, input: None, frames: mpsc::channel().1, log, next_ping: 1_000_000 };
        agent.reattach(output, input);
        agent
    }

    /// Switches to a new connection with the agent; checks `Ready`.
    fn reattach(&mut self, mut output: impl Read + Send + 'static, input: Box<dyn Write + Send>) {
        let (tx, frames) = mpsc::channel();
        thread::spawn(move || {
            loop {
                let msg = match read_frame::<GuestMsg>(&mut output) {
                    Ok(Some(msg)) => msg,
                    // End of the connection (a pty master reads EIO once the other side is gone).
                    Ok(None) | Err(FrameError::Io(_)) => break,
                    Err(e) => panic!("agent sent a bad frame: {e}"),
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        self.input = Some(input);
        self.frames = frames;
        match self.recv() {
            GuestMsg::Ready { agent_version, .. } => assert_eq!(agent_version, env!("CARGO_PKG_VERSION")),
            other => panic!("expected Ready first, got {other:?}"),
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    fn send(&mut self, msg: &HostMsg) {
        write_frame(self.input.as_mut().expect("channel open"), msg).expect("send to agent");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("channel open");
        input.write_all(bytes).expect("send to agent");
        input.flush().expect("send to agent");
    }

    fn try_recv(&self) -> Option<GuestMsg> {
        match self.frames.recv_timeout(TIMEOUT) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no message from the agent in {TIMEOUT:?}; its log:\n{}", self.log())
            }
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    fn recv(&self) -> GuestMsg {
        self.try_recv().unwrap_or_else(|| panic!("the agent closed the channel; its log:\n{}", self.log()))
    }

    /// Checks with a ping that nothing else is queued from the agent.
    fn expect_quiet(&mut self) {
        self.next_ping += 1;
        let id = self.next_ping;
        self.send(&HostMsg::Ping { id });
        assert_eq!(self.recv(), GuestMsg::Pong { id });
    }

    fn exec(&mut self, id: u32, argv: &[&str], env: &[(&str, &str)], stdin: &[u8]) {
        self.send(&HostMsg::Exec {
            id,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            stdin: stdin.to_vec(),
        });
    }

    /// Collects messages until every command of `ids` has exited or failed.
    fn collect(&self, ids: &[u32]) -> BTreeMap<u32, Outcome> {
        let mut outcomes: BTreeMap<u32, Outcome> = ids.iter().map(|&id| (id, Outcome::default())).collect();
        while !outcomes.values().all(Outcome::done) {
            let msg = self.recv();
            let id = match &msg {
                GuestMsg::Stdout { id, .. }
                | GuestMsg::Stderr { id, .. }
                | GuestMsg::Exited { id, .. }
                | GuestMsg::StdinTaken { id, .. } => *id,
                GuestMsg::Error { id: Some(id), .. } => *id,
                other => panic!("unexpected {other:?} while waiting for commands {ids:?}"),
            };
            let outcome = outcomes.get_mut(&id).unwrap_or_else(|| panic!("message for unknown command: {msg:?}"));
            assert!(!outcome.done(), "message after the end of command {id}: {msg:?}");
            match msg {
                GuestMsg::Stdout { data, .. } => {
                    outcome.largest_chunk = outcome.largest_chunk.max(data.len());
                    outcome.stdout.extend(data);
                }
                GuestMsg::Stderr { data, .. } => {
                    outcome.largest_chunk = outcome.largest_chunk.max(data.len());
                    outcome.stderr.extend(data);
                }
                GuestMsg::Exited { code, signal, .. } => outcome.exit = Some((code, signal)),
                GuestMsg::Error { message, .. } => outcome.error = Some(message),
                GuestMsg::StdinTaken { bytes, .. } => outcome.taken.push(bytes),
                _ => unreachable!(),
            }
        }
        outcomes
    }

    /// Runs one command to its end.
    fn run(&mut self, id: u32, argv: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
        self.exec(id, argv, env, stdin);
        let outcome = self.collect(&[id]).remove(&id).expect("outcome of the command");
        self.expect_quiet();
        outcome
    }

    /// Reads output of command `id` until `n` whole lines arrived; returns them.
    fn read_lines(&self, id: u32, n: usize) -> Vec<String> {
        let mut text = Vec::new();
        while text.iter().filter(|&&b| b == b'\n').count() < n {
            match self.recv() {
                GuestMsg::Stdout { id: i, data } if i == id => text.extend(data),
                other => panic!("expected stdout of command {id}, got {other:?}"),
            }
        }
        let lines: Vec<String> = String::from_utf8(text).expect("utf-8 output").lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), n, "expected {n} lines of output from command {id}, got {lines:?}");
        lines
    }

    fn read_line(&self, id: u32) -> String {
        self.read_lines(id, 1).remove(0)
    }

    /// Closes the host's (sending) end of the channel.
    fn close(&mut self) {
        self.input.take();
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not exit in {TIMEOUT:?}; its log:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Let the agent clean up after itself; kill it only if it does not.
        self.input.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until process `pid` is gone: not running and reaped (so no zombie either).
fn assert_gone(pid: u32, what: &str) {
    let proc = format!("/proc/{pid}");
    let deadline = Instant::now() + TIMEOUT;
    while Path::new(&proc).exists() {
        let stat = std::fs::read_to_string(format!("{proc}/stat")).unwrap_or_default();
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still exists after {TIMEOUT:?}: {stat}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(line: &str) -> u32 {
    line.parse().unwrap_or_else(|_| panic!("expected a pid, got {line:?}"))
}

#[test]
fn ready_ping_and_hello() {
    let mut agent = Agent::start();
    agent.send(&HostMsg::Ping { id: 42 });
    assert_eq!(agent.recv(), GuestMsg::Pong { id: 42 });
    agent.send(&HostMsg::Hello);
    let release = Command::new("uname").arg("-r").output().unwrap();
    let release = String::from_utf8(release.stdout).unwrap().trim().to_owned();
    assert_eq!(
        agent.recv(),
        GuestMsg::Ready { agent_version: env!("CARGO_PKG_VERSION").into(), kernel_release: release }
    );
    agent.close();
    assert!(agent.wait_exit().success());
    assert!(agent.try_recv().is_none(), "channel closed after the agent exited");
}

#[test]
fn echo_hello() {
    let mut agent = Agent::start();
    let out = agent.run(1, &["echo", "hello"], &[], b"");
    assert_eq!(
        out,
        Outcome { stdout: b"hello\n".to_vec(), exit: Some((Some(0), None)), largest_chunk: 6, ..Default::default() }
    );
}

#[test]
fn stderr_and_exit_code() {
    let mut agent = Agent::start();
    let out = agent.run(2, &["sh", "-c", "echo err >&2; exit 3"], &[], b"");
    assert_eq!(out.stdout, b"");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit, Some((Some(3), None)));
    assert_eq!(out.error, None);
}

#[test]
fn environment_is_exactly_the_one_sent() {
    let mut agent = Agent::start();
    let out = agent.run(1, &["env"], &[("FOO", "bar baz"), ("EMPTY", "")], b"");
    let mut vars: Vec<_> = out.stdout().lines().collect();
    vars.sort_unstable();
    assert_eq!(vars, ["EMPTY=", "FOO=bar baz", &format!("PATH={DEFAULT_PATH}")]);
    assert_eq!(out.exit, Some((Some(0), None)));

    // PATH from the request replaces the default, and is used to find the program.
    let out = agent.run(2, &["sh", "-c", "echo $PATH"], &[("PATH", "/bin:/usr/bin")], b"");
    assert_eq!(out.stdout(), "/bin:/usr/bin\n");
    let out = agent.run(3, &["sh", "-c", "true"], &[("PATH", "/nonexistent")], b"");
    assert_eq!(out.error.as_deref(), Some("exec of \"sh\" failed: No such file or directory"));
}

#[test]
fn stdin_is_fed_then_closed() {
    let mut agent = Agent::start();
    // More than a pipe holds, so that feeding and draining must overlap.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let out = agent.run(1, &["cat"], &[], &input);
    assert!(out.stdout == input, "cat echoed {} bytes of {}, or different ones", out.stdout.len(), input.len());
    assert_eq!(out.exit, Some((Some(0), None)));
    assert!(out.largest_chunk <= 32 * 1024, "output chunks are bounded, got one of {}", out.largest_chunk);

    let out = agent.run(2, &["cat"], &[], b"");
    assert_eq!((out.stdout.len(), out.exit), (0, Some((Some(0), None))));

    // A command that does not read its input still finishes.
    let out = agent.run(3, &["true"], &[], &input);
    assert_eq!(out.exit, Some((Some(0), None)));
}

#[test]
fn missing_program_is_an_error_naming_it() {
    let mut agent = Agent::start();
    let out = agent.run(7, &["nosuch"], &[], b"");
    assert_eq!(
        out,
        Outcome { error: Some("exec of \"nosuch\" failed: No such file or directory".into()), ..Default::default() }
    );
    let out = agent.run(8, &["/nonexistent/dir/prog", "arg"], &[], b"");
    assert_eq!(out.error.as_deref(), Some("exec of \"/nonexistent/dir/prog\" failed: No such file or directory"));
    let out = agent.run(9, &[], &[], b"");
    assert_eq!(out.error.as_deref(), Some("exec request has an empty argv"));
    // The ids are free again.
    let out = agent.run(7, &["true"], &[], b"");
    assert_eq!(out.exit, Some((Some(0), None)));
}

#[test]
fn concurrent_execs_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();

    let mut agent = Agent::start();
    // Command 7 blocks until command 3 writes into the FIFO: both must be in flight at once.
    agent.exec(7, &["sh", "-c", "echo waiting; read line < \"$1\"; echo \"got $line\"", "sh", fifo], &[], b"");
    assert_eq!(agent.read_line(7), "waiting");
    // The agent keeps serving while a command runs, and refuses a second command with the same id.
    agent.expect_quiet();
    agent.exec(7, &["true"], &[], b"");
    match agent.recv() {
        GuestMsg::Error { id: Some(7), message } => {
            assert_eq!(message, "exec id 7 is already in use by a running command")
        }
        other => panic!("expected an error for the reused id, got {other:?}"),
    }
    agent.exec(3, &["sh", "-c", "echo to-fifo; echo from-three > \"$1\"; echo wrote >&2", "sh", fifo], &[], b"");
    let outcomes = agent.collect(&[7, 3]);
    assert_eq!(outcomes[&7].stdout(), "got from-three\n");
    assert_eq!(outcomes[&7].exit, Some((Some(0), None)));
    assert_eq!(outcomes[&3].stdout(), "to-fifo\n");
    assert_eq!(outcomes[&3].stderr, b"wrote\n");
    assert_eq!(outcomes[&3].exit, Some((Some(0), None)));
    agent.expect_quiet();
}

#[test]
fn signals_reach_the_process_group() {
    let mut agent = Agent::start();
    agent.exec(5, &["sh", "-c", "echo ready; exec sleep 1000"], &[], b"");
    assert_eq!(agent.read_line(5), "ready");
    agent.send(&HostMsg::Signal { id: 5, signal: 15 });
    assert_eq!(agent.collect(&[5])[&5].exit, Some((None, Some(15))));

    // Kill takes down the whole group, background children included.
    agent.exec(6, &["sh", "-c", "sleep 1000 & echo $!; wait"], &[], b"");
    let background = pid_of(&agent.read_line(6));
    agent.send(&HostMsg::Kill { id: 6 });
    assert_eq!(agent.collect(&[6])[&6].exit, Some((None, Some(9))));
    assert_gone(background, "background child of a killed command");

    agent.send(&HostMsg::Kill { id: 6 });
    assert_eq!(agent.recv(), GuestMsg::Error { id: Some(6), message: "no running command with id 6 to signal".into() });
    agent.exec(8, &["sh", "-c", "echo ready; exec sleep 1000"], &[], b"");
    assert_eq!(agent.read_line(8), "ready");
    agent.send(&HostMsg::Signal { id: 8, signal: 0 });
    assert_eq!(agent.recv(), GuestMsg::Error { id: Some(8), message: "0 is not a signal number".into() });
    agent.send(&HostMsg::Signal { id: 8, signal: 9 });
    assert_eq!(agent.collect(&[8])[&8].exit, Some((None, Some(9))));
    agent.expect_quiet();
}

#[test]
fn closing_the_channel_kills_and_reaps_everything() {
    let mut agent = Agent::start();
    agent.exec(1, &["sh", "-c", "echo $$; exec sleep 1000"], &[], b"");
    let leader = pid_of(&agent.read_line(1));
    agent.exec(2, &["sh", "-c", "sleep 1000 & echo $!; echo $$; exec sleep 1000"], &[], b"");
    let lines = agent.read_lines(2, 2);
    let (background, leader2) = (pid_of(&lines[0]), pid_of(&lines[1]));
    for pid in [leader, background, leader2] {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} runs before the close");
    }

    agent.close();
    let status = agent.wait_exit();
    assert!(status.success(), "agent exit status {status}; its log:\n{}", agent.log());
    assert!(agent.log().contains("the host closed the channel"), "log:\n{}", agent.log());
    assert_gone(leader, "command 1");
    assert_gone(leader2, "command 2");
    assert_gone(background, "background child of command 2");
}

#[test]
fn adopted_orphans_are_reaped() {
    let mut agent = Agent::start();
    let out = agent.run(1, &["sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"], &[], b"");
    assert_eq!(out.exit, Some((Some(0), None)));
    // The sleep outlived its shell and was adopted by the agent (a child subreaper, as PID 1 is).
    let orphan = pid_of(out.stdout().trim());
    let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap();
    let ppid = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap();
    assert_eq!(ppid, agent.child.id().to_string(), "parent of the orphan: {stat}");
    // When it dies, only the agent can reap it.
    assert!(Command::new("kill").arg(orphan.to_string()).status().unwrap().success());
    assert_gone(orphan, "orphaned sleep");
    agent.expect_quiet();
}

#[test]
fn shutdown_is_refused_unless_pid1() {
    let mut agent = Agent::start();
    agent.send(&HostMsg::Shutdown);
    assert_eq!(
        agent.recv(),
        GuestMsg::Error {
            id: None,
            message: "shutdown refused: the agent is not PID 1 and was not started with --allow-poweroff".into()
        }
    );
    agent.expect_quiet();
}

#[test]
fn bad_frames() {
    let mut agent = Agent::start();
    // A payload that is no message: reported, and the next frame is served.
    agent.send_raw(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    match agent.recv() {
        GuestMsg::Error { id: None, message } => {
            assert!(message.starts_with("frame payload of 3 bytes does not decode as a host message"), "{message}")
        }
        other => panic!("expected an error for the garbage frame, got {other:?}"),
    }
    agent.expect_quiet();

    // An oversize frame loses sync: reported, and the agent gives up the channel.
    agent.exec(1, &["sleep", "1000"], &[], b"");
    agent.send_raw(&u32::MAX.to_le_bytes());
    assert_eq!(
        agent.recv(),
        GuestMsg::Error {
            id: None,
            message: "closing the channel: frame payload of 4294967295 bytes exceeds the maximum of 1048576 bytes"
                .into()
        }
    );
    // The running command is killed on the way out, and reported while the channel still works.
    assert_eq!(agent.collect(&[1])[&1].exit, Some((None, Some(9))));
    assert_eq!(agent.wait_exit().code(), Some(1));
}

#[test]
fn truncated_frame_at_close() {
    let mut agent = Agent::start();
    agent.send_raw(&[10, 0, 0, 0, 1]);
    agent.close();
    match agent.recv() {
        GuestMsg::Error { id: None, message } => {
            assert_eq!(message, "closing the channel: stream ended inside a frame payload: got 1 of 10 bytes")
        }
        other => panic!("expected an error for the truncated frame, got {other:?}"),
    }
    assert_eq!(agent.wait_exit().code(), Some(1));
}

/// The host's sending half of a Unix socket connection: dropping it half-closes the connection,
/// as a host going away would, while the receiving half still reads.
struct SendHalf(UnixStream);

impl Write for SendHalf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

fn accept(listener: &UnixListener) -> UnixStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking socket");
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the agent did not connect in {TIMEOUT:?}");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn socket_port_reconnects_after_the_host_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let child = Agent::spawn(&["--port", path.to_str().unwrap(), "--reconnect"], Stdio::null(), Stdio::null());
    let conn = accept(&listener);
    let mut agent = Agent::attach(child, conn.try_clone().unwrap(), Box::new(SendHalf(conn)));
    agent.exec(1, &["sh", "-c", "echo $$; exec sleep 1000"], &[], b"");
    let pid = pid_of(&agent.read_line(1));

    // The host goes away: the command is killed (and reported while the agent can still send).
    agent.close();
    assert_eq!(agent.collect(&[1])[&1].exit, Some((None, Some(9))));
    assert!(agent.try_recv().is_none(), "the agent closes its end");
    assert_gone(pid, "command of the first connection");

    // As PID 1 would, the agent comes back for the next host.
    let conn = accept(&listener);
    agent.reattach(conn.try_clone().unwrap(), Box::new(SendHalf(conn)));
    let out = agent.run(1, &["echo", "again"], &[], b"");
    assert_eq!((out.stdout(), out.exit), ("again\n", Some((Some(0), None))));
    assert!(agent.child.try_wait().unwrap().is_none(), "the agent keeps running");
    agent.child.kill().unwrap();
}

#[test]
fn console_port_is_switched_to_raw_mode() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let console = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    let master = std::fs::File::from(master);
    let child = Agent::spawn(&["--port", &console], Stdio::null(), Stdio::null());
    let mut agent = Agent::attach(child, master.try_clone().unwrap(), Box::new(master));
    // Every byte value, CR, LF, ^C, ^D and ^S among them, both ways; a cooked terminal would echo,
    // translate or act on them.
    let input: Vec<u8> = (0..=255).cycle().take(64 * 1024).collect();
    let out = agent.run(1, &["cat"], &[], &input);
    assert!(out.stdout == input, "cat echoed {} bytes of {}, or different ones", out.stdout.len(), input.len());
    assert_eq!(out.exit, Some((Some(0), None)));
    agent.child.kill().unwrap();
}

fn spawn_msg(id: u32, argv: &[&str], root: &str, cwd: &str, stdin: bool) -> HostMsg {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    HostMsg::Spawn {
        id,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        root: root.into(),
        cwd: cwd.into(),
        uid,
        gid,
        stdin,
    }
}

#[test]
fn spawned_commands_stream_their_input_and_run_in_their_directory() {
    let mut agent = Agent::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().to_str().expect("utf-8 path");
    // Input arrives in chunks while the command runs; an empty chunk is its end of file.
    agent.send(&spawn_msg(1, &["sh", "-c", "pwd; echo $GREETING; wc -c"], "", cwd, true));
    for chunk in [&b"abc"[..], &[7; 70_000][..]] {
        agent.send(&HostMsg::Stdin { id: 1, data: chunk.to_vec() });
    }
    agent.send(&HostMsg::Stdin { id: 1, data: vec![] });
    let outcome = agent.collect(&[1]).remove(&1).expect("outcome");
    assert_eq!(outcome.exit, Some((Some(0), None)), "{outcome:?}");
    assert_eq!(outcome.stdout(), format!("{cwd}\nhi\n70003\n"));
    // Each chunk is acknowledged once it is in the command's pipe: the host's credit back.
    assert_eq!(outcome.taken, [3, 70_000], "{outcome:?}");
    // Its input is gone with it, and input for a command that does not take any is refused.
    agent.send(&HostMsg::Stdin { id: 1, data: b"late".to_vec() });
    let late = agent.recv();
    assert!(
        matches!(&late, GuestMsg::Error { id: Some(1), message } if message.contains("has its standard input open")),
        "{late:?}"
    );
    // Without open input the command reads end of file at once.
    agent.send(&spawn_msg(2, &["wc", "-c"], "", "", false));
    assert_eq!(agent.collect(&[2]).remove(&2).expect("outcome").stdout().trim(), "0");
    // A missing working directory fails the spawn, and says which.
    agent.send(&spawn_msg(3, &["true"], "", "/nonexistent/mica-dir", false));
    let failed = agent.collect(&[3]).remove(&3).expect("outcome");
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("No such file or directory")), "{failed:?}");
    agent.expect_quiet();
}

#[test]
fn spawned_commands_run_inside_their_root() {
    let mut agent = Agent::start();
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_str().expect("utf-8 path").to_owned();
    fs_setup_root(root.path());
    agent.send(&spawn_msg(1, &["/bin/sh", "-c", "pwd; cat /marker"], &root_path, "/work", false));
    let outcome = agent.collect(&[1]).remove(&1).expect("outcome");
    if rustix::process::geteuid().is_root() {
        assert_eq!(outcome.exit, Some((Some(0), None)), "{outcome:?}");
        assert_eq!(outcome.stdout(), "/work\ninside the root\n");
        // A program the root does not hold: the shell's status and the reason, on stderr.
        agent.send(&spawn_msg(2, &["/bin/nosuch"], &root_path, "", false));
        let missing = agent.collect(&[2]).remove(&2).expect("outcome");
        assert_eq!(missing.exit, Some((Some(127), None)), "{missing:?}");
        let stderr = String::from_utf8_lossy(&missing.stderr);
        assert!(stderr.contains("exec of \"/bin/nosuch\" failed: No such file or directory"), "{stderr}");
    } else {
        // Only root may change root: the failure is the command's, and names why.
        assert_eq!(outcome.exit, Some((Some(126), None)), "{outcome:?}");
        let stderr = String::from_utf8_lossy(&outcome.stderr);
        assert!(stderr.contains(&format!("cannot change root to {root_path}: Operation not permitted")), "{stderr}");
    }
    agent.expect_quiet();
}

/// A root holding a static busybox (Debian's `busybox-static`, which `cargo xtask setup`
/// installs) as `sh`, `cat` and `pwd`.
fn fs_setup_root(root: &Path) {
    std::fs::create_dir_all(root.join("work")).expect("mkdir work");
    std::fs::write(root.join("marker"), "inside the root\n").expect("marker");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "no /bin/busybox: install busybox-static (`cargo xtask setup` does)");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "pwd"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet link");
    }
}
