//! A QEMU run whose console the test reads line by line while it runs (the HTTP and power-cut
//! tests act on what the guest says, then stop it or let it finish).

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use mica_launch::QemuCommand;

/// A running QEMU; killed when dropped.
#[derive(Debug)]
pub struct LiveGuest {
    child: Child,
    lines: Receiver<String>,
    /// Every console line read so far.
    pub console: String,
}

impl LiveGuest {
    /// Starts `cmd` with its serial console (stdout) read in the background.
    pub fn spawn(cmd: &QemuCommand) -> Result<LiveGuest, String> {
        let mut child = cmd
            .command()
            .map_err(|e| e.to_string())?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start QEMU: {e}"))?;
        let stdout = child.stdout.take().ok_or("QEMU's stdout was not captured")?;
        let (tx, lines) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(LiveGuest { child, lines, console: String::new() })
    }

    /// The next console line, waiting until `deadline`; `None` when the console ended or the
    /// deadline passed.
    pub fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
        self.console.push_str(&line);
        self.console.push('\n');
        Some(line)
    }

    /// Reads until a line contains `needle`.
    pub fn wait_for(&mut self, needle: &str, deadline: Instant) -> Result<(), String> {
        while let Some(line) = self.next_line(deadline) {
            if line.contains(needle) {
                return Ok(());
            }
        }
        Err(format!("no `{needle}` on the console"))
    }

    /// Kills QEMU (SIGKILL) and returns the console lines it printed before, not yet read.
    pub fn kill(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rest: Vec<String> = self.lines.iter().collect();
        for line in &rest {
            self.console.push_str(line);
            self.console.push('\n');
        }
        rest
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait(&mut self) -> Result<ExitStatus, String> {
        self.child.wait().map_err(|e| format!("waiting for QEMU: {e}"))
    }
}

impl Drop for LiveGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
