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
    pub wasm_pages: u64,
    /// Reservations still held there.
    pub wasm_reservations: u64,
    /// Free physical frames.
    pub frames_free: u64,
    /// Bytes the kernel heap has mapped.
    pub heap_bytes: u64,
}

/// Every `mica: WHAT name=NAME ...` line of `serial`, in order: `memory-after` when an instance
/// ended, `memory-after-component` when the component ended for good.
pub fn memory_after(serial: &str, what: &str, name: &str) -> Result<Vec<MemoryAfter>, String> {
    let prefix = format!("mica: {what} name={name} ");
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
                wasm_pages: field("wasm_pages")?,
                wasm_reservations: field("wasm_reservations")?,
                frames_free: field("frames_free")?,
                heap_bytes: field("heap_bytes")?,
            })
        })
        .collect()
}

/// The kernel's memory-image counters (since boot) on every `mica: WHAT name=NAME ...` line:
/// pages of images mapped copy-on-write, and pages copied on a write.
pub fn image_pages(serial: &str, what: &str, name: &str) -> Vec<(u64, u64)> {
    let prefix = format!("mica: {what} name={name} ");
    let field = |rest: &str, key: &str| {
        rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).and_then(|v| v.parse().ok())
    };
    serial
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| Some((field(rest, "image_pages_mapped")?, field(rest, "image_pages_copied")?)))
        .collect()
}

/// Whether every instance had its memory initialized from the component's image, copy-on-write:
/// between the first report and the last, more image pages were mapped and more were copied.
pub fn check_images(counts: &[(u64, u64)]) -> Result<String, String> {
    match (counts.first(), counts.last()) {
        (Some(&(m0, c0)), Some(&(m1, c1))) if m1 > m0 && c1 > c0 => Ok(format!(
            "memory images mapped copy-on-write: {} pages over {} later instances, {} of them copied on a write",
            m1 - m0,
            counts.len() - 1,
            c1 - c0
        )),
        (Some(first), Some(last)) => Err(format!(
            "memory images not used: (mapped, copied) pages {first:?} after the first instance, {last:?} at the end"
        )),
        _ => Err(String::from("no memory-image counters in the reports")),
    }
}

/// Whether a run's reports show memory coming back: every instance leaves memory exactly as the
/// first did (the loaded code stays for the next one), and when the component has ended for
/// good (`end`), nothing of it is left in the wasm region.
pub fn check(reports: &[MemoryAfter], end: &[MemoryAfter], instances: usize) -> Result<String, String> {
    if reports.len() != instances {
        return Err(format!("{} memory reports, expected one per instance ({instances})", reports.len()));
    }
    let first = reports[0];
    if let Some((i, r)) = reports.iter().enumerate().find(|(_, r)| **r != first) {
        return Err(format!(
            "after the first instance {first:?}, after instance {i} {r:?}: memory was not all returned"
        ));
    }
    match end {
        [r] if r.wasm_pages == 0 && r.wasm_reservations == 0 => Ok(format!(
            "{instances} instances, each leaving {} frames free, {} heap bytes and {} pages of loaded code; none \
             left in the wasm region at the end",
            first.frames_free, first.heap_bytes, first.wasm_pages
        )),
        [r] => Err(format!("after the component ended the wasm region still holds {r:?}")),
        _ => Err(format!("{} reports for the component's end, expected one", end.len())),
    }
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
    let reports =
        memory_after(&outcome.serial, "memory-after", "crasher").map_err(|e| format!("{e}\n{}", context()))?;
    let end = memory_after(&outcome.serial, "memory-after-component", "crasher")
        .map_err(|e| format!("{e}\n{}", context()))?;
    let returned = check(&reports, &end, RESTARTS + 1).map_err(|e| format!("{e}\n{}", context()))?;
    let images = check_images(&image_pages(&outcome.serial, "memory-after", "crasher"))
        .map_err(|e| format!("{e}\n{}", context()))?;
    Ok(format!("{returned}; {images}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "mica: memory-after name=c wasm_pages=9 wasm_reservations=2 frames_free=100 heap_bytes=4096";
    const END: &str =
        "mica: memory-after-component name=c wasm_pages=0 wasm_reservations=0 frames_free=109 heap_bytes=4096";

    #[test]
    fn reports_are_read_and_compared() {
        let serial = format!("{LINE}\nother\n{LINE}\nmica: memory-after name=d wasm_pages=1\n{END}\n");
        let reports = memory_after(&serial, "memory-after", "c").expect("parse");
        let end = memory_after(&serial, "memory-after-component", "c").expect("parse");
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0], MemoryAfter { wasm_pages: 9, wasm_reservations: 2, frames_free: 100, heap_bytes: 4096 });
        assert!(check(&reports, &end, 2).is_ok());
        assert!(check(&reports, &end, 3).expect_err("count").contains("2 memory reports"));
        let leaked = [reports[0], MemoryAfter { frames_free: 99, ..reports[0] }];
        assert!(check(&leaked, &end, 2).expect_err("leak").contains("not all returned"));
        let held = [MemoryAfter { wasm_pages: 3, ..end[0] }];
        assert!(check(&reports, &held, 2).expect_err("held").contains("still holds"));
        assert!(check(&reports, &[], 2).expect_err("no end").contains("expected one"));
        assert!(memory_after("mica: memory-after name=c wasm_pages=x", "memory-after", "c").is_err());
    }

    #[test]
    fn image_counters_must_grow_over_the_run() {
        let serial = "mica: memory-after name=c wasm_pages=1 image_pages_mapped=4 image_pages_copied=1\n\
                      mica: memory-after name=c wasm_pages=1 image_pages_mapped=8 image_pages_copied=2\n";
        let counts = image_pages(serial, "memory-after", "c");
        assert_eq!(counts, [(4, 1), (8, 2)]);
        assert!(check_images(&counts).expect("grew").contains("4 pages over 1 later instances, 1 of them copied"));
        assert!(check_images(&[(4, 1), (4, 1)]).expect_err("same").contains("not used"));
        assert!(check_images(&[]).is_err());
    }
}
