//! Building the kernel and finding the built image.
//!
//! The path comes from cargo's own JSON messages (`compiler-artifact` for the `mica-kernel`
//! binary), so target-directory settings (`CARGO_TARGET_DIR`, `build.target-dir`) need no
//! guessing here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process;
use crate::toolchain::Toolchain;

/// The kernel binary's name.
const KERNEL_BIN: &str = "mica-kernel";

/// The part of a cargo JSON message this needs.
/// Builds the kernel (cargo's progress goes to stderr) and returns the absolute path of the image.
pub fn build(root: &Path, toolchain: &Toolchain, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    eprintln!("xtask: building the kernel ({profile}) with {toolchain}");
    let start = Instant::now();
    let mut cmd = toolchain.kernel_build(root, release);
    let mut child =
        cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    let stdout = child.stdout.take().context("cargo's stdout was not captured")?;
    let mut kernel = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's messages")?;
        if let Some(path) = kernel_artifact(&line) {
            kernel = Some(path);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("the kernel build failed ({status}): `{}`", process::shown(&cmd));
    }
    let kernel =
        kernel.with_context(|| format!("cargo built no `{KERNEL_BIN}` executable: `{}`", process::shown(&cmd)))?;
    eprintln!("xtask: kernel built in {:.1} s", start.elapsed().as_secs_f64());
    Ok(kernel)
}

/// The kernel image named by one line of cargo's JSON output, if that line names it.
fn kernel_artifact(line: &str) -> Option<PathBuf> {
    let (target, msg) = crate::cargo_json::artifact(line)?;
    let is_kernel = target.name == KERNEL_BIN && target.kind.iter().any(|k| k == "bin");
    if is_kernel { msg.executable } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_in_cargo_messages() {
        let kernel = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"mica-kernel","src_path":"/w/kernel/src/main.rs"},"executable":"/w/target/x86_64-unknown-none/debug/mica-kernel","fresh":true}"#;
        assert_eq!(kernel_artifact(kernel), Some(PathBuf::from("/w/target/x86_64-unknown-none/debug/mica-kernel")));
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"mica_kernel"},"executable":null}"#;
        assert_eq!(kernel_artifact(lib), None);
        let done = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(kernel_artifact(done), None);
        assert_eq!(kernel_artifact("not json"), None);
    }
}
