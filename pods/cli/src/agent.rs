//! The host end of the agent protocol (`mica-pod-proto`) over a pod's agent socket.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mica_pod_proto::{GuestMsg, HostMsg, read_frame, write_frame};

/// A connected, ready agent.
#[derive(Debug)]
pub struct Agent {
    stream: UnixStream,
    /// The guest kernel's release, as the agent reported it.
    pub kernel_release: String,
    /// The agent's version.
    pub agent_version: String,
}

/// A ping id unlikely to match one an earlier connection sent.
fn ping_id() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// Waits up to `timeout` for `stream` to have something to read.
fn readable(stream: &UnixStream, timeout: Duration) -> Result<bool> {
    let timeout = rustix::event::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [rustix::event::PollFd::new(stream, rustix::event::PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("waiting for the agent"),
        }
    }
}

/// How a command run through the agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// The conventional shell status: the code, or 128 + the signal.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }
}

impl Agent {
    /// Connects to the agent behind `socket` and waits, until `deadline`, until it is known to
    /// hear this connection.
    ///
    /// A `Ready` alone proves nothing: QEMU keeps what the guest wrote while no host was
    /// connected and hands it to the next connection, and the guest drops what arrives while the
    /// agent has its port closed (between two sessions, or while the guest boots). So this sends
    /// `Hello` and a `Ping` with a fresh id, again every [`RETRY`] until the matching `Pong`
    /// comes back; only then is the agent listening.
    pub fn connect(socket: &Path, deadline: Instant) -> Result<Agent> {
        Agent::connect_while(socket, deadline, &|| true)
    }

    /// [`Agent::connect`], giving up as soon as `alive` says the hypervisor behind the socket
    /// is gone (checked between tries).
    pub fn connect_while(socket: &Path, deadline: Instant, alive: &dyn Fn() -> bool) -> Result<Agent> {
        const RETRY: Duration = Duration::from_millis(50);
        let gone = || anyhow::anyhow!("the hypervisor exited before the agent answered (see `mica pod logs`)");
        let mut stream = loop {
            if !alive() {
                return Err(gone());
            }
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("connecting to the agent socket {}", socket.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let first_id = ping_id();
        let mut next_id = first_id;
        let mut ready = None;
        loop {
            let now = Instant::now();
            if !alive() {
                return Err(gone());
            }
            if now >= deadline {
                bail!(
                    "the agent did not answer within the time allowed (is the guest still booting? see `mica pod logs`)"
                );
            }
            // QEMU stops reading the socket while the guest has the port closed: writes must not
            // wait past the deadline once its buffer is full.
            let left = deadline.saturating_duration_since(now).max(Duration::from_millis(1));
            stream.set_write_timeout(Some(left)).context("setting a write timeout")?;
            let greeted = write_frame(&mut stream, &HostMsg::Hello)
                .and_then(|()| write_frame(&mut stream, &HostMsg::Ping { id: next_id }));
            if let Err(e) = greeted {
                if Instant::now() >= deadline {
                    bail!("the agent did not answer within the time allowed (see `mica pod logs`): {e}");
                }
                return Err(e).context("greeting the agent");
            }
            next_id = next_id.wrapping_add(1);
            let wait_until = (now + RETRY).min(deadline);
            while readable(&stream, wait_until.saturating_duration_since(Instant::now()))? {
                match read_frame::<GuestMsg>(&mut stream).context("reading from the agent")? {
                    Some(GuestMsg::Ready { agent_version, kernel_release }) => {
                        ready = Some((agent_version, kernel_release))
                    }
                    Some(GuestMsg::Pong { id }) if id.wrapping_sub(first_id) < next_id.wrapping_sub(first_id) => {
                        if let Some((agent_version, kernel_release)) = ready.take() {
                            stream.set_write_timeout(None).context("clearing the write timeout")?;
                            return Ok(Agent { stream, kernel_release, agent_version });
                        }
                    }
                    Some(_) => {}
                    None => bail!("the agent socket closed before the agent was ready"),
                }
            }
        }
    }

    /// The connection, for a caller that speaks the protocol itself (the containerd shim runs
    /// several commands at once over it).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Runs `argv` in the guest with `env`, writing its output to `stdout` and `stderr` as it
    /// arrives; how it ended.
    pub fn exec(
        &mut self,
        argv: &[String],
        env: &[(String, String)],
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<Exit> {
        const ID: u32 = 1;
        let request = HostMsg::Exec { id: ID, argv: argv.to_vec(), env: env.to_vec(), stdin: Vec::new() };
        write_frame(&mut self.stream, &request).context("sending the command to the agent")?;
        loop {
            match read_frame::<GuestMsg>(&mut self.stream).context("reading from the agent")? {
                Some(GuestMsg::Stdout { id: ID, data }) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some(GuestMsg::Stderr { id: ID, data }) => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                Some(GuestMsg::Exited { id: ID, code, signal }) => {
                    return match (code, signal) {
                        (Some(code), _) => Ok(Exit::Code(code)),
                        (None, Some(signal)) => Ok(Exit::Signal(signal)),
                        (None, None) => bail!("the agent reported an exit with neither code nor signal"),
                    };
                }
                Some(GuestMsg::Error { id: Some(ID) | None, message }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the agent closed the connection before the command finished (did the pod stop?)"),
            }
        }
    }

    /// Asks the guest to power off (the agent syncs and calls `reboot(RB_POWER_OFF)`).
    pub fn shutdown(&mut self) -> Result<()> {
        write_frame(&mut self.stream, &HostMsg::Shutdown).context("asking the agent to power off")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn an_agent_that_never_answers_is_an_error_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Like QEMU while the guest boots: the connection is accepted, nothing is read or answered.
        let holder = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(stream);
        });
        let error = Agent::connect(&path, Instant::now() + Duration::from_millis(400)).unwrap_err();
        assert!(error.to_string().starts_with("the agent did not answer within the time allowed"), "{error:#}");
        holder.join().unwrap();
    }

    #[test]
    fn a_hypervisor_that_exits_is_noticed_before_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let checks = std::cell::Cell::new(0);
        // Alive for the first few checks, then gone; the deadline is far away.
        let alive = || {
            checks.set(checks.get() + 1);
            checks.get() < 4
        };
        let started = Instant::now();
        let error = Agent::connect_while(&path, started + Duration::from_secs(60), &alive).unwrap_err();
        assert!(error.to_string().starts_with("the hypervisor exited before the agent answered"), "{error:#}");
        assert!(started.elapsed() < Duration::from_secs(30), "gave up at once, not at the deadline");
    }

    #[test]
    fn a_stale_ready_is_not_enough_only_a_matching_pong_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let agent = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // A Ready left over from an earlier connection, and a Pong for a ping never sent.
            let stale = GuestMsg::Ready { agent_version: "0".into(), kernel_release: "stale".into() };
            write_frame(&mut stream, &stale).unwrap();
            write_frame(&mut stream, &GuestMsg::Pong { id: 7 }).unwrap();
            // Then the live agent: answers Hello and the first Ping it reads.
            let mut answered = false;
            while !answered {
                match read_frame::<HostMsg>(&mut stream).unwrap() {
                    Some(HostMsg::Hello) => {
                        let ready = GuestMsg::Ready { agent_version: "1".into(), kernel_release: "6.1".into() };
                        write_frame(&mut stream, &ready).unwrap();
                    }
                    Some(HostMsg::Ping { id }) => {
                        write_frame(&mut stream, &GuestMsg::Pong { id }).unwrap();
                        answered = true;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            stream
        });
        let connected = Agent::connect(&path, Instant::now() + Duration::from_secs(30)).unwrap();
        assert_eq!((connected.agent_version.as_str(), connected.kernel_release.as_str()), ("1", "6.1"));
        drop(agent.join().unwrap());
    }
}
