//! The file system service across a reboot: boot `files` (the `fs` component formats a blank
//! disk, and a client makes, writes, reads, renames, lists and removes through the files
//! protocol), then `files-again` on the same disk image (the volume mounts, and what the first
//! boot left is there).
//!
//! And files for an unmodified std program ([`run_notes`], and [`run_notes_aarch64`] with the
//! same wasm on QEMU's `virt`): `notes` uses `std::fs` on the directories its manifest grants,
//! through the runtime's `wasi:filesystem`, twice on one disk.

use std::path::Path;

use mica_launch::{Accel, OutputMode, QemuCommand, RunOptions};

use crate::{BundleUse, TIMEOUT, bundle_path, with_system};

/// Boots `system` (x86_64) with its disk in `scratch`; the serial output of a run that
/// succeeded and printed every line of `expect`.
fn boot(qemu: &Path, kernel: &Path, system: &'static str, scratch: &Path, expect: &[&str]) -> Result<String, String> {
    let bundle = bundle_path(&BundleUse { system, tamper: None }, scratch)?;
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    boot_with(cmd, &bundle, system, scratch, expect)
}

/// Boots `bundle` (of `system`) with `cmd` and its disk in `scratch`; as [`boot`].
fn boot_with(cmd: QemuCommand, bundle: &Path, system: &str, scratch: &Path, expect: &[&str]) -> Result<String, String> {
    let cmd = with_system(cmd, bundle, scratch)?;
    let options = RunOptions { timeout: TIMEOUT * 3, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| e.to_string())?;
    let context = format!("{}\n{}", cmd.display(), outcome.transcript());
    if outcome.verdict != Some(mica_exit::ExitCode::Success) {
        return Err(format!("{system}: expected success: {}\n{context}", outcome.describe()));
    }
    if let Some(missing) = expect.iter().find(|line| !outcome.serial.contains(*line)) {
        return Err(format!("{system}: the output lacks \"{missing}\"\n{context}"));
    }
    Ok(outcome.serial)
}

/// Both boots; a one-line report.
pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    boot(
        qemu,
        kernel,
        "files",
        scratch.path(),
        &[
            "[fs] fs: formatted a blank disk and mounted a littlefs volume of 1024 blocks of 4096 bytes",
            "[client] files: mkdir ok",
            "[client] files: write ok",
            "[client] files: read ok",
            "[client] files: rename ok",
            "[client] files: list ok",
            "[client] files: link ok",
            "[fs] fs: all clients gone after 23 requests; 0 handles left open",
            "mica: all components finished: 3 of 3 succeeded",
        ],
    )?;
    boot(
        qemu,
        kernel,
        "files-again",
        scratch.path(),
        &[
            "[fs] fs: mounted a littlefs volume of 1024 blocks of 4096 bytes",
            "[client] files: kept ok",
            "mica: all components finished: 3 of 3 succeeded",
        ],
    )?;
    Ok("formatted, written and listed; found again after a reboot".to_owned())
}

/// `notes` twice on one disk image: std::fs through wasi:filesystem to the `fs` service.
pub fn run_notes(qemu: &Path, kernel: &Path) -> Result<String, String> {
    notes_twice(|scratch, expect| boot(qemu, kernel, "notes", scratch, expect))
}

/// [`run_notes`] on aarch64 (QEMU's `virt`), with the same wasm compiled for aarch64
/// (`notes-aarch64`, built by `cargo xtask test`).
pub fn run_notes_aarch64(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let dir = std::env::var_os(crate::BUNDLES_ENV)
        .ok_or_else(|| format!("{} is not set: run the boot tests with `cargo xtask test`", crate::BUNDLES_ENV))?;
    let bundle = Path::new(&dir).join("notes-aarch64.bundle");
    notes_twice(|scratch, expect| {
        let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).arch(mica_launch::GuestArch::Aarch64);
        boot_with(cmd, &bundle, "notes-aarch64", scratch, expect)
    })
}

/// Two boots of `notes` on one disk (in a scratch directory), each through `boot(scratch,
/// expected lines)`.
fn notes_twice(boot: impl Fn(&Path, &[&str]) -> Result<String, String>) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let steps = ["write ok", "read ok", "times ok", "append ok", "remove ok", "refusals ok"];
    for (n, listed) in [(1, "boot-1.txt"), (2, "boot-1.txt, boot-2.txt")] {
        let first = format!("[notes] notes: boot {n}");
        let list = format!("[notes] notes: list ok ({listed})");
        let mut expect: Vec<String> = vec![first, list, "mica: all components finished: 3 of 3 succeeded".into()];
        expect.extend(steps.iter().map(|s| format!("[notes] notes: {s}")));
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        boot(scratch.path(), &expect).map_err(|e| format!("boot {n}: {e}"))?;
    }
    Ok("std::fs wrote, read, kept times, appended, listed, renamed and removed; found again after a reboot".to_owned())
}
