//! Two-process IPC baselines: this program and a child copy of itself over pipes or a Unix
//! socket. See the crate documentation.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

/// Starts this program again as a child with `args`, its stdin and stdout as given.
fn child(args: &[String], stdin: Stdio, stdout: Stdio) -> Result<Child, String> {
    // As init there is no /proc for `current_exe`: the kernel started it by its path.
    let exe = std::env::args_os().next().ok_or("no program path in argv[0]")?;
    Command::new(exe).args(args).stdin(stdin).stdout(stdout).spawn().map_err(|e| format!("starting the child: {e}"))
}

/// Runs `op` (`pipe`, `unix` or `pipe-oneway`) with `n` messages of `size` bytes; the TSC ticks
/// of the loop.
pub fn run(op: &str, n: usize, size: usize) -> Result<u64, String> {
    let message = vec![0xa5u8; size];
    let mut back = vec![0u8; size];
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    let (mut child, ticks) = match op {
        "pipe" => {
            let mut child = child(&["child-echo".into(), size.to_string()], Stdio::piped(), Stdio::piped())?;
            let (mut to, mut from) = (child.stdin.take().ok_or("no stdin")?, child.stdout.take().ok_or("no stdout")?);
            let ticks = counted_loop(n, |_| {
                to.write_all(&message).map_err(io("writing to the child"))?;
                from.read_exact(&mut back).map_err(io("reading from the child"))
            })?;
            drop(to);
            (child, ticks)
        }
        "unix" => {
            let (mut mine, theirs) = UnixStream::pair().map_err(io("socketpair"))?;
            let theirs = OwnedFd::from(theirs);
            let child = child(&["child-echo".into(), size.to_string()], Stdio::from(theirs), Stdio::inherit())?;
            let ticks = counted_loop(n, |_| {
                mine.write_all(&message).map_err(io("writing to the child"))?;
                mine.read_exact(&mut back).map_err(io("reading from the child"))
            })?;
            mine.shutdown(std::net::Shutdown::Both).map_err(io("shutdown"))?;
            (child, ticks)
        }
        "pipe-oneway" => {
            let mut child =
                child(&["child-sink".into(), n.to_string(), size.to_string()], Stdio::piped(), Stdio::piped())?;
            let (mut to, mut from) = (child.stdin.take().ok_or("no stdin")?, child.stdout.take().ok_or("no stdout")?);
            let mut ack = [0u8; 1];
            let start = super::tsc();
            for _ in 0..n {
                to.write_all(&message).map_err(io("writing to the child"))?;
            }
            from.read_exact(&mut ack).map_err(io("reading the child's acknowledgement"))?;
            let ticks = super::tsc().wrapping_sub(start);
            drop(to);
            (child, ticks)
        }
        other => return Err(format!("unknown IPC workload {other:?}")),
    };
    let status = child.wait().map_err(io("waiting for the child"))?;
    if !status.success() {
        return Err(format!("the child failed: {status}"));
    }
    Ok(ticks)
}

/// TSC ticks of `n` calls of `step`.
fn counted_loop(n: usize, mut step: impl FnMut(usize) -> Result<(), String>) -> Result<u64, String> {
    let start = super::tsc();
    for i in 0..n {
        step(i)?;
    }
    Ok(super::tsc().wrapping_sub(start))
}

/// The child of `pipe` and `unix`: echoes messages of `size` bytes on stdin back (to stdout, or
/// to stdin itself when stdin is a socket) until end of input.
pub fn child_echo(size: usize) -> Result<String, String> {
    let mut input = std::io::stdin().lock();
    let stdin_fd =
        std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned().map_err(|e| format!("stdin: {e}"))?;
    let socket = UnixStream::from(stdin_fd);
    let reply_on_stdin = is_socket(&socket);
    let mut buf = vec![0u8; size];
    let mut stdout = std::io::stdout().lock();
    loop {
        match input.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("child reading: {e}")),
        }
        let written = if reply_on_stdin {
            (&socket).write_all(&buf)
        } else {
            stdout.write_all(&buf).and_then(|()| stdout.flush())
        };
        written.map_err(|e| format!("child writing: {e}"))?;
    }
    std::process::exit(0)
}

/// Whether `s` really is a socket (stdin as a pipe converts too, and then fails to send).
fn is_socket(s: &UnixStream) -> bool {
    s.local_addr().is_ok()
}

/// The child of `pipe-oneway`: reads `n` messages of `size` bytes, then writes one byte.
pub fn child_sink(n: usize, size: usize) -> Result<String, String> {
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; size];
    for i in 0..n {
        input.read_exact(&mut buf).map_err(|e| format!("child reading message {i}: {e}"))?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&[1]).and_then(|()| stdout.flush()).map_err(|e| format!("child acknowledging: {e}"))?;
    std::process::exit(0)
}
