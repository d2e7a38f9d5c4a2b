//! `cargo xtask bench fs`: files through Mica's file system service against ext4 in a Linux
//! guest, on the same virtual hardware (QEMU `microvm`, virtio-mmio, same CPU model and memory,
//! one vCPU, a fresh 64 MiB disk image each run), in guest instructions (`-accel tcg -icount
//! shift=0`).
//!
//! Both run [`mica_workloads::files`], the same `std::fs` calls: a 1 MiB file written in 32 KiB
//! writes and synced, read back, 50 random 4 KiB writes (synced) and reads in it, 100 small
//! files created (each synced) and removed.
//!
//! - Mica: `components/bench-fs.toml`, `notes bench` (a plain std program) through the
//!   runtime's `wasi:filesystem`, the `fs` component (littlefs) and the virtio-blk driver
//!   component.
//! - Linux: `mica-linux-bench fs` as init, on `/dev/vda` formatted ext4 on the host (`mke2fs`),
//!   through Debian's `virtio_blk` and ext4 (built into its cloud kernel).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mica_bundle::MachineDevice;
use mica_launch::KvmProbe;
use serde::Serialize;

use super::boot::boot;
use super::io::{BlockPhase, guest_image, icount_boot, medians, mica_phases};
use super::report::grouped;
use crate::linux_guest;
use crate::machine::Machine;

/// The benchmark's system.
const MANIFEST: &str = "components/bench-fs.toml";
/// The QEMU options that make the TSC count instructions.
const ICOUNT_OPTIONS: &str = "-accel tcg -icount shift=0";
/// One boot's time limit.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);
/// Both disks' size.
const DISK_BYTES: u64 = 64 << 20;
/// What `notes bench` prints before its fields.
const MICA_PREFIX: &str = "fs-bench ";
/// What `mica-linux-bench` prints before its result.
const LINUX_PREFIX: &str = "mica-linux-bench: ";
/// Modules the Linux guest loads (their dependencies are added by `mica-initramfs`); ext4 is
/// built into Debian's cloud kernel.
const LINUX_MODULES: &[&str] = &["virtio_mmio", "virtio_blk"];
/// Where `mke2fs` is.
const MKE2FS: [&str; 2] = ["/usr/sbin/mke2fs", "/sbin/mke2fs"];

/// Everything `bench fs` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The QEMU options.
    pub qemu_options: &'static str,
    /// The TSC rate Mica calibrated under icount (MHz), in its first run.
    pub tsc_mhz: f64,
    /// Mica's phases: each one's median over the runs.
    pub mica: Vec<BlockPhase>,
    /// Linux's phases: each one's median over the runs.
    pub linux: Vec<BlockPhase>,
    /// Each of Mica's phases: its lowest and highest count over the runs.
    pub mica_ranges: Vec<(u64, u64)>,
    /// Each of Linux's phases: its lowest and highest count over the runs.
    pub linux_ranges: Vec<(u64, u64)>,
    /// The Linux guest's kernel release.
    pub linux_kernel: String,
    /// How the figures were taken.
    pub method: Vec<&'static str>,
}

/// Runs the benchmark, `runs` times per system.
pub fn run(root: &Path, runs: u32) -> Result<()> {
    let super::Prepared { toolchain, kernel: mica, out_dir } = super::prepare(root)?;
    let qemu = mica_launch::find_qemu()?;
    let profile = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
    let cpu = mica_launch::cpu_model(&features);
    let machine = Machine::describe(&qemu, &KvmProbe::detect());
    let disk = out_dir.join("fs-disk.img");
    let devices = || {
        let _ = fs::remove_file(&disk);
        let devices = vec![MachineDevice {
            kind: "virtio-blk".into(),
            disk: Some(disk.to_string_lossy().into_owned()),
            disk_size: DISK_BYTES,
            read_only: false,
            hostfwd: Vec::new(),
            output: None,
        }];
        mica_launch::devices::prepare_disks(&devices).map(|()| devices)
    };

    let bundle = crate::system::prepare(root, &toolchain, &root.join(MANIFEST), &profile)?;
    let guest = linux_guest::fetch(&root.join("target"), mica_launch::GuestArch::X86_64)?;
    let init = linux_guest::build_static(root, "mica-linux-bench", "mica-linux-bench")?;
    let image = out_dir.join("linux-fs.cpio");
    guest_image(&guest, &init, &image, &[], LINUX_MODULES)?;
    let (mut mica_runs, mut linux_runs, mut tsc_mhz) = (Vec::new(), Vec::new(), None);
    for run in 1..=runs {
        eprintln!("bench: fs run {run} of {runs}, std::fs through the file system service ({ICOUNT_OPTIONS})");
        let cmd = icount_boot(&qemu, &mica, &cpu, &bundle, &devices()?);
        let outcome = boot(&cmd, BOOT_TIMEOUT)?;
        let mhz = super::clock::of_boot(&outcome.serial)
            .map(|clock| clock.counter_mhz)
            .with_context(|| format!("no TSC rate line\n{}", outcome.transcript()))?;
        let phases = mica_phases(&outcome.serial, MICA_PREFIX, mhz);
        check_phases(&phases).with_context(|| format!("Mica's run\n{}", outcome.transcript()))?;
        tsc_mhz.get_or_insert(mhz);
        mica_runs.push(phases);

        eprintln!("bench: fs run {run} of {runs}, std::fs on ext4 in Linux {} ({ICOUNT_OPTIONS})", guest.release);
        let linux_devices = devices()?;
        mke2fs(&disk)?;
        let cmd = icount_boot(&qemu, &guest.kernel, &cpu, &image, &linux_devices);
        let cmd = cmd.clone().cmdline(guest.cmdline(&cmd, &["fs"]));
        let line = linux_guest::boot_for_line(&cmd, LINUX_PREFIX, BOOT_TIMEOUT)?;
        linux_runs.push(linux_phases(&line)?);
        let _ = fs::remove_file(&disk);
    }
    let (mica_phases, mica_ranges) = medians(&mica_runs);
    let (linux_phases, linux_ranges) = medians(&linux_runs);
    let report = Report {
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        qemu_options: ICOUNT_OPTIONS,
        tsc_mhz: tsc_mhz.unwrap_or_default(),
        mica: mica_phases,
        linux: linux_phases,
        mica_ranges,
        linux_ranges,
        linux_kernel: guest.release,
        method: vec![
            "both guests on the same virtual hardware (microvm, modern virtio-mmio, a fresh 64 MiB raw image, one \
             vCPU, same CPU model and memory); both run mica_workloads::files, the same std::fs calls",
            "Mica: notes bench (a plain std program) -> the runtime's wasi:filesystem -> IPC -> the fs component \
             (littlefs 2.9 through littlefs2) -> IPC -> the virtio-blk driver component; timed with the monotonic \
             clock (under -icount shift=0, ns x calibrated MHz / 1000 = instructions)",
            "Linux: mica-linux-bench fs as /init on ext4 (mke2fs -t ext4 on the host), Debian's virtio_blk module \
             and the ext4 built into its cloud kernel, the TSC around each phase",
            "every phase that writes ends durable on both: the big file synced after its writes, each small file \
             synced after it is written; Mica's fs makes every write request durable before it answers (littlefs \
             commits on each close, and the disk is flushed after each write littlefs makes)",
            "a random write costs Mica up to the rest of the file: littlefs copies a file from the written place \
             to its end on a write that is not at the end",
            "the counts include the guest idling while the host does the I/O (icount's virtual clock runs on while \
             the guest halts), so they vary from run to run: the table gives each phase's median",
        ],
    };
    super::report::publish(&out_dir, "fs.json", &report.markdown(), &report)
}

/// Formats `disk` ext4 for the Linux guest.
fn mke2fs(disk: &Path) -> Result<()> {
    let tool = MKE2FS
        .iter()
        .find(|p| Path::new(p).exists())
        .context("mke2fs not found (cargo xtask setup installs e2fsprogs)")?;
    let out = Command::new(tool)
        .args(["-q", "-F", "-t", "ext4"])
        .arg(disk)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -t ext4 {} failed: {}", disk.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The phases of `fs seq-write=I ...` (instructions per phase).
fn linux_phases(line: &str) -> Result<Vec<BlockPhase>> {
    mica_workloads::files::PHASES
        .iter()
        .map(|&(op, bytes, n)| {
            Ok(BlockPhase { op: op.to_owned(), bytes, n, instructions: linux_guest::field(line, op)? })
        })
        .collect()
}

/// Every phase, once, in order, with the counts the workload uses.
fn check_phases(phases: &[BlockPhase]) -> Result<()> {
    let got: Vec<(&str, u64, u64)> = phases.iter().map(|p| (p.op.as_str(), p.bytes, p.n)).collect();
    if got != mica_workloads::files::PHASES {
        bail!("expected the phases {:?}, got {got:?}", mica_workloads::files::PHASES);
    }
    Ok(())
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "## Files in guest instructions ({})\n", self.qemu_options);
        let _ =
            writeln!(md, "Machine: {} ({} CPUs), {}; Linux guest {}\n", m.cpu_model, m.cpus, m.qemu, self.linux_kernel);
        md.push_str(
            "Each phase's median per operation (lowest to highest in brackets).\n\n\
             | phase | operations | Mica (littlefs service) instr./op | Linux (ext4) instr./op | Mica / Linux |\n\
             |---|---:|---:|---:|---:|\n",
        );
        let ranges = self.mica_ranges.iter().zip(&self.linux_ranges);
        for ((mica, linux), (mica_range, linux_range)) in self.mica.iter().zip(&self.linux).zip(ranges) {
            let per = |p: &BlockPhase, (low, high): (u64, u64)| {
                let n = p.n.max(1);
                format!("{} ({}-{})", grouped(p.per_request().round() as u64), grouped(low / n), grouped(high / n))
            };
            let label = if mica.bytes == 0 { mica.op.clone() } else { format!("{} {} B", mica.op, mica.bytes) };
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {:.2} |",
                mica.n,
                per(mica, *mica_range),
                per(linux, *linux_range),
                mica.per_request() / linux.per_request(),
            );
        }
        md.push_str("\nNotes:\n");
        for line in &self.method {
            let _ = writeln!(md, "- {line}.");
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_are_read_phase_by_phase() {
        let line = "fs seq-write=100 seq-read=200 rand-write=300 rand-read=400 create=500 remove=600";
        let phases = linux_phases(line).expect("every phase");
        assert!(check_phases(&phases).is_ok());
        assert_eq!(phases[2].instructions, 300);
        assert!(linux_phases("fs seq-write=1").is_err());
        let serial: String = mica_workloads::files::PHASES
            .iter()
            .map(|(op, bytes, n)| format!("[notes] fs-bench op={op} bytes={bytes} n={n} ns=1000\n"))
            .collect();
        let mica = mica_phases(&serial, MICA_PREFIX, 2000.0);
        assert!(check_phases(&mica).is_ok());
        assert!(mica.iter().all(|p| p.instructions == 2000));
        assert!(check_phases(&mica[1..]).is_err());
    }
}
