//! `cargo xtask bench boot`: boots, timed and counted.
//!
//! Wall time covers QEMU start to exit for (i) the empty kernel, which exits at its first
//! instruction and so measures QEMU's own cost, and (ii) Mica's default system (release build),
//! under TCG and, when `/dev/kvm` is usable and of the guest's architecture, KVM; on each
//! architecture asked for (`--arch`, both by default). Every boot must end with the "success"
//! verdict, or the benchmark stops and shows that boot's output. Instruction counts come from
//! the kernel's `mica: ready (tsc_since_entry=N)` line (counter ticks) under `-accel tcg -icount
//! shift=0`, where the guest's counter follows retired instructions (see [`super::clock`]):
//! exact and repeatable on a noisy host.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, ExitCode, GuestArch, KvmProbe, OutputMode, QemuCommand, RunOptions};

use super::BootArgs;
use super::report::{Instructions, Report, Reports, WallRow};
use super::stats::{Summary, human};
use crate::empty_kernel;
use crate::machine::Machine;
use crate::run::{SOFTWARE_KVM_TIMEOUT_SECS, TIMEOUT_SECS};

/// Boots counted for instructions.
const COUNT_RUNS: usize = 3;
/// The kernel's ready line, up to the number.
const READY_PREFIX: &str = "mica: ready (tsc_since_entry=";
/// Mica's command line for the benchmark: the default system.
const CMDLINE: &str = "";

/// Runs the boot benchmark on every architecture `args` names.
pub fn run(root: &Path, args: &BootArgs) -> Result<()> {
    let (arches, out_dir) = super::per_arch(&args.arches.arch, |arch| measure(root, args, arch))?;
    let reports = Reports { arches };
    super::report::publish(&out_dir, "boot.json", &reports.markdown(), &reports)
}

/// Measures boots on `arch`; the report and the output directory.
fn measure(root: &Path, args: &BootArgs, arch: GuestArch) -> Result<(Report, PathBuf)> {
    let system = super::ArchSystem::prepare(root, arch, crate::system::DEFAULT_MANIFEST)?;
    let (qemu, bundle, mica) = (&system.qemu, &system.bundle, &system.prepared.kernel);
    let out_dir = system.prepared.out_dir.clone();
    let empty = out_dir.join(format!("empty-kernel-{arch}"));
    fs::write(&empty, empty_kernel::for_arch(arch)).with_context(|| format!("writing {}", empty.display()))?;

    // The system's devices (its module store's disk), made once: later boots find the store.
    let devices = mica_launch::devices::of_bundle(bundle)?;
    mica_launch::devices::prepare_disks(&devices)?;
    let memory = mica_launch::devices::memory_mib(bundle, crate::run::SYSTEM_MEMORY_MIB)?;
    // Both kernels boot with the same QEMU settings and devices; only Mica gets the default
    // system's bundle.
    let command = |kernel: &Path, accel: Accel| {
        let cmd = system
            .command(kernel, accel)
            .cmdline(CMDLINE)
            .memory_mib(memory)
            .extra_args(mica_launch::devices::qemu_args(&devices));
        if kernel == mica.as_path() { cmd.initrd(bundle) } else { cmd }
    };
    let probe = KvmProbe::detect();
    let machine = Machine::describe(qemu, &probe);
    let kernels = [("empty", empty.as_path()), ("mica", mica.as_path())];

    let mut wall = Vec::new();
    for accel in [Accel::Tcg, Accel::Kvm] {
        let accel_label = match accel {
            Accel::Tcg => "TCG".to_owned(),
            Accel::Kvm => probe.label(),
        };
        let skipped = match accel {
            Accel::Kvm if GuestArch::host() != Some(arch) => Some(format!("this host is not {arch}")),
            Accel::Kvm => probe.unusable_reason(),
            Accel::Tcg => None,
        };
        let timeout = Duration::from_secs(match accel {
            Accel::Kvm if !probe.hardware() => SOFTWARE_KVM_TIMEOUT_SECS,
            Accel::Kvm | Accel::Tcg => TIMEOUT_SECS,
        });
        for (name, kernel) in kernels {
            // A configuration that cannot boot is a row that says why, not the end of the bench.
            let (summary, skipped) = match &skipped {
                Some(why) => {
                    eprintln!("bench: {name} kernel, {accel_label}: skipped ({why})");
                    (None, skipped.clone())
                }
                None => {
                    let cmd = command(kernel, accel);
                    match time_boots(&cmd, args.runs, timeout, &format!("{name} kernel, {accel_label}")) {
                        Ok(summary) => (Some(summary), None),
                        Err(e) => {
                            let first = format!("{e:#}").lines().next().unwrap_or_default().to_owned();
                            eprintln!("bench: {name} kernel, {accel_label}: failed: {first}");
                            (None, Some(format!("failed: {first}")))
                        }
                    }
                }
            };
            wall.push(WallRow {
                kernel: name,
                accel: accel.name(),
                accel_label: accel_label.clone(),
                summary,
                skipped,
            });
        }
    }

    let counted = command(mica, Accel::Tcg).icount(true);
    let counts = count_instructions(&counted)?;
    let identical = counts.windows(2).all(|w| w[0] == w[1]);

    let report = Report {
        arch: arch.name(),
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        kernel: mica.display().to_string(),
        cmdline: CMDLINE.to_owned(),
        runs: args.runs,
        wall,
        instructions: Instructions { qemu_options: "-accel tcg -icount shift=0", counts, identical },
    };
    Ok((report, out_dir))
}

/// The target directory the kernel was built in (`<target>/<kernel target>/<profile>/mica-kernel`).
pub(super) fn target_dir(root: &Path, kernel: &Path) -> PathBuf {
    kernel
        .ancestors()
        .nth(3)
        .filter(|_| {
            let built_for = kernel.ancestors().nth(2).and_then(Path::file_name);
            crate::toolchain::KERNEL_TARGETS.iter().any(|t| built_for == Some(t.as_ref()))
        })
        .map_or_else(|| root.join("target"), Path::to_owned)
}

/// Boots `cmd` `runs` times; every boot must succeed.
fn time_boots(cmd: &QemuCommand, runs: u32, timeout: Duration, what: &str) -> Result<Summary> {
    eprint!("bench: {what}: {runs} boots ");
    let mut samples = Vec::new();
    for _ in 0..runs {
        let outcome = boot(cmd, timeout)?;
        samples.push(outcome.wall);
        eprint!(".");
    }
    let summary = Summary::of(&samples).context("no boots")?;
    eprintln!(" median {}", human(summary.median_s));
    Ok(summary)
}

/// Boots `cmd` [`COUNT_RUNS`] times and reads the instruction count of each.
fn count_instructions(cmd: &QemuCommand) -> Result<Vec<u64>> {
    eprint!("bench: instructions to ready (-icount shift=0): {COUNT_RUNS} boots ");
    let timeout = Duration::from_secs(TIMEOUT_SECS);
    let mut counts = Vec::new();
    for _ in 0..COUNT_RUNS {
        let outcome = boot(cmd, timeout)?;
        let count = ready_count(&outcome.serial)
            .with_context(|| format!("no `{READY_PREFIX}N)` line in the serial output\n{}", outcome.transcript()))?;
        let clock = super::clock::of_boot(&outcome.serial)
            .with_context(|| format!("no time line in the serial output\n{}", outcome.transcript()))?;
        counts.push(clock.ticks(count));
        eprint!(".");
    }
    eprintln!();
    Ok(counts)
}

/// One boot that must end with the success verdict.
pub(super) fn boot(cmd: &QemuCommand, timeout: Duration) -> Result<mica_launch::Outcome> {
    let options = RunOptions { timeout, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(cmd, &options)?;
    if outcome.verdict != Some(ExitCode::Success) {
        eprintln!();
        bail!("boot did not succeed: {}\n{}\n{}", outcome.describe(), cmd.display(), outcome.transcript());
    }
    Ok(outcome)
}

/// N from the last `mica: ready (tsc_since_entry=N)` line.
fn ready_count(serial: &str) -> Option<u64> {
    serial.lines().rev().find_map(|line| {
        let rest = &line[line.find(READY_PREFIX)? + READY_PREFIX.len()..];
        rest[..rest.find(')')?].trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_parsed() {
        let serial = "mica: booting\nmica: ready (tsc_since_entry=1234567)\n";
        assert_eq!(ready_count(serial), Some(1_234_567));
        assert_eq!(ready_count("\x1b[0mmica: ready (tsc_since_entry=42)\r\n"), Some(42));
        assert_eq!(ready_count("mica: ready (tsc_since_entry=)\n"), None);
        assert_eq!(ready_count("mica: ready\n"), None);
    }

    #[test]
    fn target_dir_comes_from_the_kernel_path() {
        let root = Path::new("/ws");
        let k = Path::new("/cache/tgt/x86_64-unknown-none/release/mica-kernel");
        assert_eq!(target_dir(root, k), Path::new("/cache/tgt"));
        assert_eq!(target_dir(root, Path::new("/elsewhere/mica-kernel")), Path::new("/ws/target"));
    }
}
