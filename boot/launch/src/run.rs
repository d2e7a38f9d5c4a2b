//! Running QEMU under a host-enforced timeout and reading the verdict.
//!
//! The host never trusts the guest to end:
//! - after the timeout QEMU gets SIGTERM (so it can restore a terminal it put in raw mode), then
//!   SIGKILL if it is still there a moment later;
//! - QEMU's stderr is always read by the launcher (and echoed when asked), because after a
//!   "KVM internal error" QEMU pauses the guest and waits forever instead of exiting: the
//!   launcher stops it at once and says so ([`Ended::QemuGaveUp`]).
//!
//! Serial output (QEMU's stdout) either goes straight to the terminal ([`OutputMode::Inherit`],
//! interactive runs) or is captured for assertions, optionally echoed as it arrives
//! ([`OutputMode::Capture`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use mica_exit::ExitCode;
use wait_timeout::ChildExt;

use crate::{LaunchError, QemuCommand};

/// How long QEMU may take to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the rest of the output once QEMU has exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the launcher looks for a QEMU that gave up while waiting for it to exit.
const POLL: Duration = Duration::from_millis(50);
/// How long QEMU may go on writing its error report before it is stopped.
const REPORT_GRACE: Duration = Duration::from_millis(300);

/// QEMU messages after which it pauses the guest instead of exiting.
const GAVE_UP: [&str; 2] = ["KVM internal error", "KVM: entry failed"];

/// Where QEMU's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// QEMU shares this process's stdin and stdout: the serial console is the terminal. Its
    /// stderr is copied to this process's stderr (and captured).
    Inherit,
    /// Serial output (QEMU's stdout) and QEMU's stderr are captured; stdin is closed.
    Capture {
        /// Also copy both streams to this process's stdout and stderr as they arrive.
        echo: bool,
    },
}

/// How to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The longest the run may take, QEMU start to exit.
    pub timeout: Duration,
    /// Where the output goes.
    pub output: OutputMode,
}

/// How the QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal it did not expect ended it (not ours: see [`Ended::TimedOut`]).
    Signaled(i32),
    /// The host timeout ran out and the launcher stopped it.
    TimedOut,
    /// QEMU reported this error and paused the guest; the launcher stopped it.
    QemuGaveUp(&'static str),
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// How QEMU ended.
    pub ended: Ended,
    /// The kernel's verdict, decoded from the exit status; `None` when QEMU ended another way.
    pub verdict: Option<ExitCode>,
    /// Serial output (QEMU's stdout), when captured.
    pub serial: String,
    /// QEMU's own messages (its stderr).
    pub stderr: String,
    /// Wall time from starting QEMU to its exit.
    pub wall: Duration,
    /// The timeout that applied.
    pub timeout: Duration,
}

impl Outcome {
    /// The raw exit status, when QEMU exited by itself.
    pub fn status(&self) -> Option<i32> {
        match self.ended {
            Ended::Exited(status) => Some(status),
            Ended::Signaled(_) | Ended::TimedOut | Ended::QemuGaveUp(_) => None,
        }
    }

    /// A one-line account: `exit status 33: kernel verdict success (0.045 s)`, `timed out ...`.
    pub fn describe(&self) -> String {
        let secs = self.wall.as_secs_f64();
        match (self.ended, self.verdict) {
            (Ended::Exited(status), Some(code)) => {
                format!("exit status {status}: kernel verdict {} ({secs:.3} s)", code.name())
            }
            (Ended::Exited(status), None) => format!(
                "QEMU exited with status {status} without a kernel verdict (a QEMU error, or the guest reset \
                 or powered off without writing to isa-debug-exit) after {secs:.3} s"
            ),
            (Ended::Signaled(signal), _) => format!("QEMU was killed by signal {signal} after {secs:.3} s"),
            (Ended::TimedOut, _) => {
                format!("timed out: no verdict within {:.0} s, QEMU was stopped", self.timeout.as_secs_f64())
            }
            (Ended::QemuGaveUp(what), _) => format!(
                "QEMU reported \"{what}\" after {secs:.3} s and paused the guest; it was stopped (see QEMU stderr)"
            ),
        }
    }

    /// The captured serial output and QEMU messages, framed for a failure report.
    pub fn transcript(&self) -> String {
        let mut s = String::new();
        let mut section = |title: &str, body: &str| {
            s.push_str(&format!("--- {title} ---\n{body}"));
            if !body.is_empty() && !body.ends_with('\n') {
                s.push('\n');
            }
        };
        section("serial output", &self.serial);
        if !self.stderr.is_empty() {
            section("QEMU stderr", &self.stderr);
        }
        s.push_str("--- end ---\n");
        s
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Runs `qemu` until it exits, gives up on the guest, or `options.timeout` runs out.
pub fn run(qemu: &QemuCommand, options: &RunOptions) -> Result<Outcome, LaunchError> {
    run_command(qemu.command()?, qemu.program(), options)
}

/// Runs any command the way [`run`] runs QEMU (tests use a shell script as a stand-in).
fn run_command(mut cmd: Command, program: &Path, options: &RunOptions) -> Result<Outcome, LaunchError> {
    let (echo_serial, echo_stderr) = match options.output {
        OutputMode::Inherit => {
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
            (false, true)
        }
        OutputMode::Capture { echo } => {
            cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            (echo, echo)
        }
    };
    cmd.stderr(Stdio::piped());

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn { program: program.to_owned(), source })?;
    let serial = child.stdout.take().map(|out| Collector::start(out, echo_serial.then(io::stdout), None));
    let (gave_up_tx, gave_up) = mpsc::channel();
    let stderr = child.stderr.take().map(|err| Collector::start(err, echo_stderr.then(io::stderr), Some(gave_up_tx)));

    let ended = match wait(&mut child, start + options.timeout, &gave_up) {
        Ok(ended) => ended,
        Err(e) => {
            // Never leave QEMU running behind an error.
            let _ = stop(&mut child);
            return Err(e);
        }
    };
    let wall = start.elapsed();

    let verdict = match ended {
        Ended::Exited(status) => ExitCode::from_qemu_status(status),
        Ended::Signaled(_) | Ended::TimedOut | Ended::QemuGaveUp(_) => None,
    };
    Ok(Outcome {
        ended,
        verdict,
        serial: serial.map(Collector::finish).unwrap_or_default(),
        stderr: stderr.map(Collector::finish).unwrap_or_default(),
        wall,
        timeout: options.timeout,
    })
}

/// Waits for the child to exit; stops it at `deadline` or when it reports that it gave up.
fn wait(child: &mut Child, deadline: Instant, gave_up: &Receiver<&'static str>) -> Result<Ended, LaunchError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            stop(child)?;
            return Ok(Ended::TimedOut);
        }
        let exited = child
            .wait_timeout(left.min(POLL))
            .map_err(|source| LaunchError::Process { doing: "waiting for", source })?;
        if let Some(status) = exited {
            return Ok(ended_by(status));
        }
        if let Ok(what) = gave_up.try_recv() {
            // Let QEMU finish its register dump, unless it exits by itself meanwhile.
            if let Some(status) = child
                .wait_timeout(REPORT_GRACE)
                .map_err(|source| LaunchError::Process { doing: "waiting for", source })?
            {
                return Ok(ended_by(status));
            }
            stop(child)?;
            return Ok(Ended::QemuGaveUp(what));
        }
    }
}

fn ended_by(status: ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signaled(signal),
        // Unix reports one or the other; treat anything else as a killed process.
        (None, None) => Ended::Signaled(0),
    }
}

/// Asks QEMU to terminate, then kills it if it does not within [`TERM_GRACE`].
fn stop(child: &mut Child) -> Result<(), LaunchError> {
    let pid = rustix::process::Pid::from_child(child);
    // Failure means it is already gone; the wait below tells.
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let gone = child.wait_timeout(TERM_GRACE).map_err(|source| LaunchError::Process { doing: "stopping", source })?;
    if gone.is_none() {
        child.kill().map_err(|source| LaunchError::Process { doing: "killing", source })?;
        child.wait().map_err(|source| LaunchError::Process { doing: "reaping", source })?;
    }
    Ok(())
}

/// Output read from a pipe by a thread: the bytes so far, and a signal when the pipe ends.
struct Collector {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: Receiver<()>,
}

impl Collector {
    /// Reads `pipe` to its end on a thread, copying to `echo` as bytes arrive and sending the
    /// first [`GAVE_UP`] message seen to `watch`.
    fn start<W: Write + Send + 'static>(
        mut pipe: impl Read + Send + 'static,
        mut echo: Option<W>,
        watch: Option<Sender<&'static str>>,
    ) -> Collector {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let sink = Arc::clone(&bytes);
        thread::spawn(move || {
            let mut watch = watch;
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let seen = {
                            let mut all = lock(&sink);
                            let from = all.len().saturating_sub(64);
                            all.extend_from_slice(&buf[..n]);
                            gave_up_in(&all[from..])
                        };
                        if let (Some(what), Some(w)) = (seen, watch.as_ref()) {
                            // The receiver only goes away once the run is over.
                            let _ = w.send(what);
                            watch = None;
                        }
                        if let Some(out) = echo.as_mut() {
                            // Echo is best effort: a closed terminal must not lose the capture.
                            if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                                echo = None;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // The receiver may have given up waiting; nothing is lost, the bytes are shared.
            let _ = tx.send(());
        });
        Collector { bytes, done }
    }

    /// The output, once the pipe has ended or [`DRAIN_GRACE`] has passed since QEMU exited (a
    /// process QEMU left behind could hold the pipe open forever; the host must not hang on it).
    fn finish(self) -> String {
        let _ = self.done.recv_timeout(DRAIN_GRACE);
        String::from_utf8_lossy(&lock(&self.bytes)).into_owned()
    }
}

/// The first [`GAVE_UP`] message in `bytes`.
fn gave_up_in(bytes: &[u8]) -> Option<&'static str> {
    GAVE_UP.into_iter().find(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes()))
}

fn lock(bytes: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // The reader thread holds the lock only to append; a poisoned buffer is still valid bytes.
    bytes.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ended: Ended) -> Outcome {
        let verdict = match ended {
            Ended::Exited(s) => ExitCode::from_qemu_status(s),
            _ => None,
        };
        Outcome {
            ended,
            verdict,
            serial: "hello".into(),
            stderr: String::new(),
            wall: Duration::from_millis(45),
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn statuses_decode_to_verdicts() {
        assert_eq!(outcome(Ended::Exited(33)).verdict, Some(ExitCode::Success));
        assert_eq!(outcome(Ended::Exited(35)).verdict, Some(ExitCode::Failed));
        assert_eq!(outcome(Ended::Exited(1)).verdict, None);
        assert_eq!(outcome(Ended::Exited(33)).status(), Some(33));
        assert_eq!(outcome(Ended::TimedOut).status(), None);
    }

    #[test]
    fn descriptions_name_what_happened() {
        assert_eq!(outcome(Ended::Exited(33)).describe(), "exit status 33: kernel verdict success (0.045 s)");
        assert!(outcome(Ended::Exited(1)).describe().contains("without a kernel verdict"));
        assert!(outcome(Ended::Signaled(9)).describe().contains("signal 9"));
        assert_eq!(outcome(Ended::TimedOut).describe(), "timed out: no verdict within 60 s, QEMU was stopped");
        assert!(outcome(Ended::QemuGaveUp(GAVE_UP[0])).describe().contains("\"KVM internal error\""));
    }

    #[test]
    fn transcript_frames_the_output() {
        let mut o = outcome(Ended::Exited(35));
        o.stderr = "qemu: oops\n".into();
        assert_eq!(o.transcript(), "--- serial output ---\nhello\n--- QEMU stderr ---\nqemu: oops\n--- end ---\n");
    }

    #[test]
    fn gave_up_messages_are_recognised() {
        assert_eq!(gave_up_in(b"KVM internal error. Suberror: 1\n"), Some("KVM internal error"));
        assert_eq!(gave_up_in(b"warning: host doesn't support requested feature"), None);
    }

    /// A stand-in for QEMU: `sh -c SCRIPT` through the real runner.
    fn run_script(script: &str, timeout: Duration) -> Outcome {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        let options = RunOptions { timeout, output: OutputMode::Capture { echo: false } };
        run_command(cmd, Path::new("/bin/sh"), &options).expect("sh runs")
    }

    #[test]
    fn captures_output_and_status() {
        let o = run_script("echo serial-line; echo oops >&2; exit 33", Duration::from_secs(10));
        assert_eq!(o.ended, Ended::Exited(33));
        assert_eq!(o.verdict, Some(ExitCode::Success));
        assert_eq!(o.serial, "serial-line\n");
        assert_eq!(o.stderr, "oops\n");
    }

    #[test]
    fn timeout_stops_a_hung_process() {
        let start = Instant::now();
        let o = run_script("echo started; exec sleep 30", Duration::from_millis(300));
        assert_eq!(o.ended, Ended::TimedOut);
        assert_eq!(o.verdict, None);
        assert_eq!(o.serial, "started\n");
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }

    #[test]
    fn term_is_followed_by_kill() {
        let start = Instant::now();
        let script = "trap '' TERM; echo stubborn; while :; do sleep 1; done";
        let o = run_script(script, Duration::from_millis(300));
        assert_eq!(o.ended, Ended::TimedOut);
        assert_eq!(o.serial, "stubborn\n");
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }

    #[test]
    fn a_paused_guest_is_stopped_early() {
        let start = Instant::now();
        let script = "echo 'KVM internal error. Suberror: 1' >&2; echo 'RAX=0' >&2; exec sleep 30";
        let o = run_script(script, Duration::from_secs(60));
        assert_eq!(o.ended, Ended::QemuGaveUp("KVM internal error"));
        assert!(o.stderr.contains("RAX=0"), "the rest of the report is kept: {}", o.stderr);
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }
}
