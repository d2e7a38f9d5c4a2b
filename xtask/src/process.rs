//! Running helper programs with errors that say what was run and what it printed.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// A command as a person would type it (for messages).
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
}

/// Runs `cmd` to completion with captured output; fails (showing stderr) on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            shown(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion with captured output, whatever its exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run `{}`", shown(cmd)))
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    mica_launch::qemu::find_in_path(name, &std::env::var_os("PATH").unwrap_or_default())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs `first` on a thread of its own while `second` runs on this one, and returns both results
/// (the first error, if any). Used to build the kernel and the components at once: on a small
/// machine each build leaves cores idle in its long serial stretches (one big crate at a time).
pub fn both<A: Send, B>(
    first: impl FnOnce() -> Result<A> + Send,
    second: impl FnOnce() -> Result<B>,
) -> Result<(A, B)> {
    std::thread::scope(|scope| {
        let first = scope.spawn(first);
        let second = second();
        let first = first.join().map_err(|_| anyhow::anyhow!("a build thread panicked"))?;
        Ok((first?, second?))
    })
}
