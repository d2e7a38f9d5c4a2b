//! The restart loop: a component that traps on every start is restarted 200 times, and the
//! kernel's memory after its last instance must be where it was after its first: every frame
//! (linear memory, code, page tables, stacks) and the heap come back each time.

use std::path::Path;

use mica_launch::{Accel, OutputMode, QemuCommand, RunOptions};

use crate::{BundleUse, TIMEOUT, bundle_path, with_system};

/// The system: `qemu-tests/systems/crash-loop.toml`.
const SYSTEM: &str = "crash-loop";
/// Restarts the component asks for before it succeeds (its manifest's `crash-until` argument).
pub const RESTARTS: usize = 200;

/// The kernel's memory after one instance ended (a `mica: memory-after` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryAfter {
    /// Frames still mapped in the wasm region.
    pub wasm_frames: u64,
    /// Reservations still held there.
    pub wasm_reservations: u64,
    /// Free physical frames.
    pub frames_free: u64,
    /// Bytes the kernel heap has mapped.
    pub heap_bytes: u64,
}

/// Every `mica: memory-after name=NAME ...` line of `serial`, in order.
pub fn memory_after(serial: &str, name: &str) -> Result<Vec<MemoryAfter>, String> {
    let prefix = format!("mica: memory-after name={name} ");
    serial
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let field = |key: &str| -> Result<u64, String> {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("no {key}= in \"{rest}\""))
            };
            Ok(MemoryAfter {
                wasm_frames: field("wasm_frames")?,
                wasm_reservations: field("wasm_reservations")?,
                frames_free: field("frames_free")?,
                heap_bytes: field("heap_bytes")?,
            })
        })
        .collect()
}

/// Whether a run's reports show memory coming back: nothing left in the wasm region after any
/// instance, and the last instance leaving frames and heap as the first did.
pub fn check(reports: &[MemoryAfter], instances: usize) -> Result<String, String> {
    if reports.len() != instances {
        return Err(format!("{} memory reports, expected one per instance ({instances})", reports.len()));
    }
    if let Some((i, r)) = reports.iter().enumerate().find(|(_, r)| r.wasm_frames != 0 || r.wasm_reservations != 0) {
        return Err(format!("after instance {i} the wasm region still holds {r:?}"));
    }
    let (first, last) = (reports[0], reports[instances - 1]);
    if (first.frames_free, first.heap_bytes) != (last.frames_free, last.heap_bytes) {
        return Err(format!(
            "after the first instance {first:?}, after the last {last:?}: memory was not all returned"
        ));
    }
    Ok(format!(
        "{instances} instances, each leaving {} frames free and {} heap bytes",
        last.frames_free, last.heap_bytes
    ))
}

/// Boots the restart loop and checks its memory reports.
pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg)
        .cpu(mica_launch::cpu_model(&features))
        .cmdline(format!("restarts={RESTARTS} restart_backoff_ms=0"));
    let cmd =
        with_system(cmd, &bundle_path(&BundleUse { system: SYSTEM, tamper: None }, scratch.path())?, scratch.path())?;
    let options = RunOptions { timeout: TIMEOUT * 4, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| e.to_string())?;
    let context = || format!("{}\n{}", cmd.display(), outcome.transcript());
    if outcome.verdict != Some(mica_exit::ExitCode::Success) {
        return Err(format!("the crash loop did not end in success: {}\n{}", outcome.describe(), context()));
    }
    if !outcome.serial.contains(&format!("[crasher] restarted {RESTARTS} times; done")) {
        return Err(format!("the crasher never got to its last instance\n{}", context()));
    }
    let reports = memory_after(&outcome.serial, "crasher").map_err(|e| format!("{e}\n{}", context()))?;
    check(&reports, RESTARTS + 1).map_err(|e| format!("{e}\n{}", context()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "mica: memory-after name=c wasm_frames=0 wasm_reservations=0 frames_free=100 heap_bytes=4096";

    #[test]
    fn reports_are_read_and_compared() {
        let serial = format!("{LINE}\nother\n{LINE}\nmica: memory-after name=d wasm_frames=1\n");
        let reports = memory_after(&serial, "c").expect("parse");
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0],
            MemoryAfter { wasm_frames: 0, wasm_reservations: 0, frames_free: 100, heap_bytes: 4096 }
        );
        assert!(check(&reports, 2).is_ok());
        assert!(check(&reports, 3).expect_err("count").contains("2 memory reports"));
        let leaked = [reports[0], MemoryAfter { frames_free: 99, ..reports[0] }];
        assert!(check(&leaked, 2).expect_err("leak").contains("not all returned"));
        let held = [reports[0], MemoryAfter { wasm_frames: 3, ..reports[0] }];
        assert!(check(&held, 2).expect_err("held").contains("still holds"));
        assert!(memory_after("mica: memory-after name=c wasm_frames=x", "c").is_err());
    }
}
