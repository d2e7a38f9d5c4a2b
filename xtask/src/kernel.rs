//! Building the kernel and finding the built image.
//!
//! The path comes from cargo's own JSON messages (`compiler-artifact` for the `mica-kernel`
//! binary), so target-directory settings (`CARGO_TARGET_DIR`, `build.target-dir`) need no
//! guessing here.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::process;
use crate::toolchain::Toolchain;

/// The kernel binary's name.
const KERNEL_BIN: &str = "mica-kernel";

/// Builds the kernel (cargo's progress goes to stderr) and returns the absolute path of the image.
pub fn build(root: &Path, toolchain: &Toolchain, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let first = !crate::toolchain::target_dir(root)
        .join(crate::toolchain::KERNEL_TARGET)
        .join(profile)
        .join(KERNEL_BIN)
        .exists();
    let expect = if first { "; the first build takes a few minutes on 2 cores, later ones seconds" } else { "" };
    eprintln!("xtask: building the kernel ({profile}) with {toolchain}{expect}");
    let start = Instant::now();
    let mut cmd = toolchain.kernel_build(root, release);
    let artifacts = crate::cargo_json::build(&mut cmd, "the kernel build")?;
    let kernel = artifacts
        .into_iter()
        .filter(|(target, _)| target.name == KERNEL_BIN && target.kind.iter().any(|k| k == "bin"))
        .find_map(|(_, msg)| msg.executable)
        .with_context(|| format!("cargo built no `{KERNEL_BIN}` executable: `{}`", process::shown(&cmd)))?;
    eprintln!("xtask: kernel built in {:.1} s", start.elapsed().as_secs_f64());
    Ok(kernel)
}
