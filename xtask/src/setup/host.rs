//! What setup sees of the machine: the commands it runs, the system files it reads and writes,
//! and whether it runs as root.
//!
//! Every step goes through a [`Host`], so a test can drive the whole setup against a fake
//! machine (a temporary root and a scripted command runner) with nothing installed, which is how
//! a newcomer's machine looks the first time `cargo xtask run` meets it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::process;

/// The machine setup works on.
pub trait Host {
    /// Runs `cmd` to completion with captured output, whatever its exit status; fails only when
    /// it cannot be started (for example, the program is not installed).
    fn capture(&self, cmd: &mut Command) -> Result<Output>;
    /// Runs `cmd` to completion with its output shown (on stderr, as progress); fails on a
    /// non-zero exit status.
    fn stream(&self, cmd: &mut Command) -> Result<()>;
    /// The first executable called `name` on `PATH`.
    fn which(&self, name: &str) -> Option<PathBuf>;
    /// Where the absolute system path `path` (such as `/usr/bin/rustc`) is on this host.
    fn path(&self, path: &str) -> PathBuf;
    /// Whether setup runs as root.
    fn is_root(&self) -> bool;
    /// Downloads `url` to `dest` (an absolute path on this host) and checks that its SHA-256 is
    /// `sha256` (hex); a mismatch is an error and leaves nothing at `dest`.
    fn fetch(&self, url: &str, sha256: &str, dest: &Path) -> Result<()>;

    /// Runs `cmd`; fails with what it printed on a non-zero exit status.
    fn output(&self, cmd: &mut Command) -> Result<String> {
        let out = self.capture(cmd)?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}):\n{}{}",
                process::shown(cmd),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs the system program `program` (an absolute path is mapped with
    /// [`Host::path`]; a bare name is looked up on `PATH` when run).
    fn command(&self, program: &str) -> Command {
        if program.starts_with('/') { Command::new(self.path(program)) } else { Command::new(program) }
    }
}

/// This machine.
#[derive(Debug, Default)]
pub struct RealHost;

impl Host for RealHost {
    fn capture(&self, cmd: &mut Command) -> Result<Output> {
        process::capture(cmd)
    }

    fn stream(&self, cmd: &mut Command) -> Result<()> {
        let status = cmd
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("cannot run `{}`", process::shown(cmd)))?;
        if !status.success() {
            bail!("`{}` failed ({status})", process::shown(cmd));
        }
        Ok(())
    }

    fn which(&self, name: &str) -> Option<PathBuf> {
        process::which(name)
    }

    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(path)
    }

    fn is_root(&self) -> bool {
        process::is_root()
    }

    fn fetch(&self, url: &str, sha256: &str, dest: &Path) -> Result<()> {
        process::output(
            Command::new("curl")
                .args(["--fail", "--silent", "--show-error", "--location", "--retry", "3", "-o"])
                .arg(dest)
                .arg(url),
        )
        .with_context(|| format!("downloading {url}"))?;
        verify_sha256(dest, sha256).inspect_err(|_| {
            let _ = std::fs::remove_file(dest);
        })
    }
}

/// Checks that the file `path` has the SHA-256 `expected` (hex).
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let got: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if got != expected.to_ascii_lowercase() {
        bail!("{}: SHA-256 {got}, expected {expected} (a changed or damaged download)", path.display());
    }
    Ok(())
}

/// Whether `path` exists after following symlinks (a dangling link does not).
pub fn resolves(path: &Path) -> bool {
    path.canonicalize().is_ok()
}
