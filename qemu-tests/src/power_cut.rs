//! The power-cut tests of what keeps data on the block device: boot a system that writes
//! through it, kill QEMU at a random point while it writes, boot a second system on the same
//! disk image, and check that it opens cleanly and that everything whose write was
//! acknowledged is there, whole. Two [`Target`]s: the key-value store ([`KV`]: keys through
//! `kvstore`, an append-only log) and the file system service ([`FILES`]: files that an
//! unmodified std program wrote and synced through `fs`, a littlefs volume).
//!
//! The cut point is random (seeded from the clock; `MICA_POWER_CUT_SEED=N` repeats one): after
//! 3 to 102 acknowledged writes plus 0 to 39 ms. Killing QEMU (SIGKILL) loses everything the
//! guest had not yet handed to the host's disk image, which is what a power cut does to a
//! virtual machine; the host's own page cache survives, as it does when a VM host stays up.

use std::path::Path;
use std::time::{Duration, Instant};

use mica_launch::{Accel, OutputMode, QemuCommand, RunOptions};

use crate::live::LiveGuest;
use crate::{BundleUse, TIMEOUT, bundle_path_in, with_system};

/// What a power-cut test writes through, and how its two systems say what they did.
#[derive(Debug)]
pub struct Target {
    /// What it is, for reports.
    pub what: &'static str,
    /// The system that writes until it is killed.
    pub fill_system: &'static str,
    /// The system that reads back.
    pub check_system: &'static str,
    /// The index a fill line acknowledges.
    pub acked: fn(&str) -> Option<u64>,
    /// From the check's output, how many items (0 up to M-1) it found whole.
    pub found: fn(&str) -> Result<u64, String>,
    /// What the check prints when the store or volume opened.
    pub opened: &'static str,
    /// How long the fill system may take to reach the cut, and the check system to finish.
    pub fill_timeout: Duration,
}

/// The key-value store.
pub const KV: Target = Target {
    what: "key-value store",
    fill_system: "kv-block-fill",
    check_system: "kv-block-check",
    acked,
    found,
    opened: "kvstore: opened:",
    fill_timeout: TIMEOUT,
};

/// The file system service, written by an unmodified std program.
pub const FILES: Target = Target {
    what: "file system",
    fill_system: "notes-fill",
    check_system: "notes-check",
    acked: synced,
    found: files_found,
    opened: "[fs] fs: mounted a littlefs volume",
    // About two files a second under TCG (each write is committed and flushed, block by block),
    // slower on a loaded machine: 102 acknowledgements may take over a minute.
    fill_timeout: Duration::from_secs(240),
};

/// The variable that fixes the seed.
pub const SEED_ENV: &str = "MICA_POWER_CUT_SEED";

/// A small deterministic generator (xorshift64*), enough to pick a cut point.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The index in a `kv-fill: acked key-N` line.
pub fn acked(line: &str) -> Option<u64> {
    line.split("kv-fill: acked key-").nth(1)?.trim().parse().ok()
}

/// The index in a `notes: synced f-N` line.
pub fn synced(line: &str) -> Option<u64> {
    line.split("notes: synced f-").nth(1)?.trim().parse().ok()
}

/// From `notes check`'s report, how many files (f-0 up to f-(M-1)) it found whole.
pub fn files_found(serial: &str) -> Result<u64, String> {
    if serial.contains("notes: no files") {
        return Ok(0);
    }
    let line = serial
        .lines()
        .find(|l| l.contains("notes: f-0..f-") && l.ends_with(" intact"))
        .ok_or_else(|| "the checker printed no `notes: f-0..f-M intact` line".to_owned())?;
    let last: u64 = line
        .split("notes: f-0..f-")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("cannot read the checker's line: {line}"))?;
    Ok(last + 1)
}

/// From the checker's report, how many keys (key-0 up to key-(M-1)) it found intact.
pub fn found(serial: &str) -> Result<u64, String> {
    if serial.contains("kv-check: no keys") {
        return Ok(0);
    }
    let line = serial
        .lines()
        .find(|l| l.contains("kv-check: key-0..key-"))
        .ok_or_else(|| "the checker printed no `kv-check: key-0..key-M` line".to_owned())?;
    let last: u64 = line
        .split("kv-check: key-0..key-")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("cannot read the checker's line: {line}"))?;
    Ok(last + 1)
}

fn command(
    qemu: &Path,
    kernel: &Path,
    bundles: &Path,
    system: &'static str,
    scratch: &Path,
) -> Result<QemuCommand, String> {
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    with_system(cmd, &bundle_path_in(bundles, &BundleUse { system, tamper: None }, scratch)?, scratch)
}

/// What one power cut did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// What was written through.
    pub what: &'static str,
    /// The seed that chose the cut point.
    pub seed: u64,
    /// Acknowledged writes seen before the kill.
    pub acks: u64,
    /// The wait after the last counted acknowledgement.
    pub delay: Duration,
    /// Items acknowledged (0 up to the highest acknowledged).
    pub acked_keys: u64,
    /// Items the second boot found whole.
    pub present: u64,
    /// Whether recovery discarded a torn record.
    pub torn: bool,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: cut after {} acknowledged writes + {:?} (seed {}): {} acknowledged, {} present{}",
            self.what,
            self.acks,
            self.delay,
            self.seed,
            self.acked_keys,
            self.present,
            if self.torn { "; a torn record was discarded" } else { "" }
        )
    }
}

/// Runs the test of `target` once, with the seed from [`SEED_ENV`] or the clock and the bundles
/// `cargo xtask test` built; `Ok` says what happened.
pub fn run(qemu: &Path, kernel: &Path, target: &Target) -> Result<String, String> {
    let seed = match std::env::var(SEED_ENV) {
        Ok(v) => v.parse().map_err(|_| format!("{SEED_ENV}={v} is not a number"))?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    };
    run_seeded(qemu, kernel, &crate::bundles_dir()?, target, seed).map(|cut| cut.to_string())
}

/// One power cut of `target` at the point `seed` picks, with the two systems' bundles in
/// `bundles` (`cargo xtask soak power-cut` runs many). An error says what was lost, with the
/// seed.
pub fn run_seeded(qemu: &Path, kernel: &Path, bundles: &Path, target: &Target, seed: u64) -> Result<Cut, String> {
    let mut rng = Rng(seed | 1);
    let cut_after = 3 + rng.next() % 100;
    let delay = Duration::from_millis(rng.next() % 40);
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;

    // Boot 1: write until the cut.
    let fill = command(qemu, kernel, bundles, target.fill_system, scratch.path())?;
    let mut guest = LiveGuest::spawn(&fill)?;
    let deadline = Instant::now() + target.fill_timeout;
    let mut acks = 0;
    let mut highest: Option<u64> = None;
    while acks < cut_after {
        let Some(line) = guest.next_line(deadline) else {
            guest.kill();
            return Err(format!(
                "the fill system ended or stalled after {acks} acknowledged writes, before the cut at {cut_after} \
                 (seed {seed}):\n{}\n{}",
                fill.display(),
                guest.console
            ));
        };
        if let Some(n) = (target.acked)(&line) {
            acks += 1;
            highest = highest.max(Some(n));
        }
    }
    std::thread::sleep(delay);
    // Acknowledgements printed before the kill count too.
    for n in guest.kill().iter().filter_map(|line| (target.acked)(line)) {
        acks += 1;
        highest = highest.max(Some(n));
    }
    let acked_keys = highest.map_or(0, |n| n + 1);

    // Boot 2: the store or volume must open and hold everything acknowledged.
    let check = command(qemu, kernel, bundles, target.check_system, scratch.path())?;
    let options = RunOptions { timeout: target.fill_timeout, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&check, &options).map_err(|e| e.to_string())?;
    let context =
        || format!("(seed {seed}, cut after {acks} acks + {delay:?})\n{}\n{}", check.display(), outcome.transcript());
    if outcome.verdict != Some(mica_exit::ExitCode::Success) {
        return Err(format!("the check system failed: {} {}", outcome.describe(), context()));
    }
    if !outcome.serial.contains(target.opened) {
        return Err(format!("the {} did not report opening ({:?}) {}", target.what, target.opened, context()));
    }
    let present = (target.found)(&outcome.serial).map_err(|e| format!("{e} {}", context()))?;
    if present < acked_keys {
        return Err(format!(
            "lost acknowledged writes to the {}: 0..{} were acknowledged, only {present} survived {}",
            target.what,
            acked_keys - 1,
            context()
        ));
    }
    let torn = outcome.serial.contains("discarded a torn record");
    Ok(Cut { what: target.what, seed, acks, delay, acked_keys, present, torn })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_lines_it_needs() {
        assert_eq!(acked("[fill] kv-fill: acked key-17"), Some(17));
        assert_eq!(acked("[fill] something else"), None);
        let serial = "x\n[check] kv-check: key-0..key-41 present and correct, key-42 missing\n";
        assert_eq!(found(serial), Ok(42));
        assert_eq!(found("[check] kv-check: no keys\n"), Ok(0));
        assert!(found("nothing").is_err());
        assert_eq!(synced("[notes] notes: synced f-3"), Some(3));
        assert_eq!(files_found("[notes] notes: f-0..f-9 intact\n"), Ok(10));
        assert_eq!(files_found("[notes] notes: f-4 has 10 of its 300 bytes\n[notes] notes: f-0..f-3 intact\n"), Ok(4));
        assert_eq!(files_found("[notes] notes: no files\n"), Ok(0));
        assert!(files_found("[notes] notes: boot 1").is_err());
    }

    #[test]
    fn the_generator_moves() {
        let mut r = Rng(7);
        let (a, b) = (r.next(), r.next());
        assert_ne!(a, b);
    }
}
