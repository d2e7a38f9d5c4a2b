//! `cargo xtask bench ipc`: what IPC between components costs, in guest instructions, against
//! the same ping-pong between two processes in a Linux guest.
//!
//! - Mica: the system of `components/bench-ipc.toml` (release kernel) under `-accel tcg -icount
//!   shift=0`, [`MICA_RUNS`] boots. The `ipc-bench` component times N calls to the echo server
//!   (64 B and 4 KiB, request and reply alike) and N one-way 64-byte messages with the monotonic
//!   clock; the kernel derives that clock from the TSC, which under `-icount shift=0` advances once
//!   per instruction, so nanoseconds times the TSC rate the kernel calibrated (printed at boot) are
//!   instructions. The whole loop is counted: client, server, kernel, both thread switches.
//! - Thread switch: the kernel's `test=switch` scenario, two kernel threads yielding to each other.
//! - Linux: `mica-linux-bench` as `/init` of Debian's cloud kernel with a busybox initramfs, same
//!   QEMU settings, CPU model and memory, one vCPU like Mica: the same ping-pong between two
//!   processes over a pair of pipes and over a Unix stream socket, and one-way over a pipe.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, KvmProbe, QemuCommand};
use serde::Serialize;

use super::boot::boot;
use super::report::grouped;
use crate::linux_guest;
use crate::machine::Machine;

/// Mica boots counted.
const MICA_RUNS: usize = 2;
/// The benchmark's system manifest, relative to the workspace root.
const MANIFEST: &str = "components/bench-ipc.toml";
/// The QEMU options that make the TSC count instructions.
const QEMU_OPTIONS: &str = "-accel tcg -icount shift=0";
/// One boot's time limit.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages per Linux measurement.
const LINUX_N: u64 = 20_000;
/// What the component prints before its fields.
const MICA_PREFIX: &str = "ipc-bench ";
/// What `mica-linux-bench` prints before its result.
const LINUX_PREFIX: &str = "mica-linux-bench: ";
/// The kernel's switch line.
const SWITCH_PREFIX: &str = "mica: bench switch ";

/// One Mica measurement: `n` operations took `ns` on the guest's monotonic clock.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MicaOp {
    /// `round-trip` or `one-way`.
    pub op: String,
    /// Payload bytes.
    pub bytes: u64,
    /// Operations.
    pub n: u64,
    /// Monotonic nanoseconds for all of them.
    pub ns: u64,
    /// Guest instructions per operation (`ns * tsc_mhz / 1000 / n`).
    pub instructions_per_op: f64,
}

/// One Linux measurement.
#[derive(Clone, Debug, Serialize)]
pub struct LinuxOp {
    /// `pipe`, `unix` or `pipe-oneway`.
    pub workload: &'static str,
    /// Payload bytes.
    pub bytes: u64,
    /// Operations.
    pub n: u64,
    /// Guest instructions for all of them.
    pub instructions: u64,
    /// Per operation.
    pub instructions_per_op: f64,
}

/// Everything `bench ipc` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The QEMU options.
    pub qemu_options: &'static str,
    /// The system manifest booted.
    pub manifest: &'static str,
    /// The TSC rate the kernel calibrated under icount (MHz), per boot.
    pub tsc_mhz: Vec<f64>,
    /// Mica's measurements, per boot.
    pub mica: Vec<Vec<MicaOp>>,
    /// The same system booted with two vCPUs (`-smp 2`; `-icount` runs them on one TCG thread,
    /// in turns).
    pub mica_smp2: Vec<MicaOp>,
    /// A kernel thread switch (yield to yield), guest instructions.
    pub thread_switch: u64,
    /// Wall-clock nanoseconds per operation under a hardware KVM (one boot), if there is one.
    pub kvm_ns: Option<Vec<MicaOp>>,
    /// Why there are no KVM figures, when there are none.
    pub kvm_absent: Option<String>,
    /// The Linux guest's kernel release.
    pub linux_kernel: String,
    /// Linux's measurements.
    pub linux: Vec<LinuxOp>,
    /// Published figures to compare with.
    pub peers: Vec<&'static str>,
    /// How the figures were taken.
    pub method: Vec<&'static str>,
}

/// Peer figures, quoted in the notes.
const PEERS: &[&str] = &[
    "seL4 call + reply (IPC fastpath): ~772 cycles round trip on x86-64 (seL4 benchmarks)",
    "a Linux pipe round trip costs thousands of instructions (measured here in the same run)",
];

/// Runs the IPC benchmark.
pub fn run(root: &Path) -> Result<()> {
    let super::Prepared { toolchain, kernel: mica, out_dir } = super::prepare(root)?;
    let qemu = mica_launch::find_qemu()?;
    let profile = mica_runtime::config::CpuProfile::baseline();
    let bundle = crate::system::prepare(root, &toolchain, &root.join(MANIFEST), &profile)?;
    let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
    let base = QemuCommand::new(&qemu, &mica, Accel::Tcg)
        .cpu(mica_launch::cpu_model(&features))
        .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
        .icount(true);
    let machine = Machine::describe(&qemu, &KvmProbe::detect());

    eprint!("bench: IPC between components ({QEMU_OPTIONS}): {MICA_RUNS} boots of {MANIFEST} ");
    let cmd = base.clone().cmdline("").initrd(&bundle);
    let mut tsc_mhz = Vec::new();
    let mut mica_runs = Vec::new();
    for _ in 0..MICA_RUNS {
        let outcome = boot(&cmd, BOOT_TIMEOUT)?;
        let mhz = tsc_rate(&outcome.serial).with_context(|| format!("no TSC rate line\n{}", outcome.transcript()))?;
        let ops = mica_ops(&outcome.serial, mhz);
        if ops.len() != 4 {
            eprintln!();
            bail!("expected 4 `{MICA_PREFIX}` lines\n{}", outcome.transcript());
        }
        tsc_mhz.push(mhz);
        mica_runs.push(ops);
        eprint!(".");
    }
    eprintln!();
    eprintln!("bench: the same with two vCPUs (-smp 2)");
    let smp2 = cmd.clone().extra_args(["-smp", "2"]);
    let outcome = boot(&smp2, BOOT_TIMEOUT)?;
    let mhz = tsc_rate(&outcome.serial).with_context(|| format!("no TSC rate line\n{}", outcome.transcript()))?;
    let mica_smp2 = mica_ops(&outcome.serial, mhz);
    if mica_smp2.len() != 4 {
        bail!("expected 4 `{MICA_PREFIX}` lines with -smp 2\n{}", outcome.transcript());
    }
    eprintln!("bench: kernel thread switch (test=switch)");
    let outcome = boot(&base.clone().cmdline("test=switch"), BOOT_TIMEOUT)?;
    let thread_switch = outcome
        .serial
        .lines()
        .find_map(|l| l.split_once(SWITCH_PREFIX).map(|(_, rest)| rest.to_owned()))
        .and_then(|rest| linux_guest::field(&rest, "per_switch").ok())
        .with_context(|| format!("no `{SWITCH_PREFIX}` line\n{}", outcome.transcript()))?;

    // Timed where a hardware KVM exists (a software KVM runs guests hundreds of times slower and
    // its figures would mean nothing): the same boot without instruction counting; the component's
    // clock is then real time.
    let probe = KvmProbe::detect();
    let (kvm_ns, kvm_absent) = if probe.hardware() {
        eprintln!("bench: the same under KVM ({}), wall clock", probe.label());
        let mut kvm = QemuCommand::new(&qemu, &mica, Accel::Kvm)
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
            .cmdline("")
            .initrd(&bundle);
        if let Some(cpu) = base.cpu_model() {
            kvm = kvm.cpu(cpu);
        }
        let outcome = boot(&kvm, BOOT_TIMEOUT)?;
        // 1000 MHz: the nanoseconds stay nanoseconds.
        (Some(mica_ops(&outcome.serial, 1000.0)), None)
    } else {
        let why =
            probe.unusable_reason().unwrap_or_else(|| format!("KVM here is {}, not hardware-backed", probe.label()));
        (None, Some(why))
    };
    let guest = linux_guest::fetch(&root.join("target"))?;
    let init = linux_guest::build_static(root, "mica-linux-bench", "mica-linux-bench")?;
    let image = root.join("target").join("mica").join("bench").join("linux-bench.cpio");
    linux_guest::init_image(&guest, &init, &image)?;
    let mut linux = Vec::new();
    for (workload, bytes) in [("pipe", 64), ("pipe", 4096), ("unix", 64), ("unix", 4096), ("pipe-oneway", 64)] {
        eprintln!("bench: Linux guest ({}): {workload} {LINUX_N} x {bytes} B", guest.release);
        let (n, size) = (LINUX_N.to_string(), bytes.to_string());
        let mut cmd = QemuCommand::new(&qemu, &guest.kernel, Accel::Tcg)
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
            .initrd(&image)
            .cmdline(linux_guest::cmdline(&[workload, &n, &size]))
            .icount(true);
        if let Some(cpu) = base.cpu_model() {
            cmd = cmd.cpu(cpu);
        }
        let line = linux_guest::boot_for_line(&cmd, LINUX_PREFIX, BOOT_TIMEOUT)?;
        let instructions = linux_guest::field(&line, "instructions")?;
        linux.push(LinuxOp {
            workload,
            bytes,
            n: LINUX_N,
            instructions,
            instructions_per_op: instructions as f64 / LINUX_N as f64,
        });
    }
    let report = Report {
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        qemu_options: QEMU_OPTIONS,
        manifest: MANIFEST,
        tsc_mhz,
        mica: mica_runs,
        mica_smp2,
        thread_switch,
        kvm_ns,
        kvm_absent,
        linux_kernel: guest.release,
        linux,
        peers: PEERS.to_vec(),
        method: vec![
            "Mica: the ipc-bench component's loop timed with the monotonic clock (TSC-derived; under -icount \
             shift=0 the TSC advances once per instruction, so ns x calibrated MHz / 1000 = instructions): client, \
             echo server, kernel and switches, one CPU",
            "Linux: mica-linux-bench and a child copy of itself, TSC around the loop, one vCPU, same QEMU settings",
            "Mica, -smp 2: the same boot with two vCPUs; -icount makes QEMU run them in turns on one host thread, \
             so the count is the same guest instructions measure, summed over both CPUs. A woken thread goes to \
             the run queue of the CPU that woke it and an idle CPU gets a reschedule IPI; in a ping-pong the \
             waker parks at once and its own CPU usually takes the woken thread before the other vCPU gets its \
             turn, so this mostly measures the same-CPU path plus the IPIs, not a cross-CPU hand-off",
        ],
    };
    super::report::publish(&out_dir, "ipc.json", &report.markdown(), &report)
}

/// The TSC rate from the kernel's `time: TSC N MHz` log line.
pub(super) fn tsc_rate(serial: &str) -> Option<f64> {
    serial.lines().find_map(|line| {
        let rest = &line[line.find("time: TSC ")? + "time: TSC ".len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Every `ipc-bench op=... bytes=... n=... ns=...` line, with instructions per operation.
fn mica_ops(serial: &str, tsc_mhz: f64) -> Vec<MicaOp> {
    super::report::op_lines(serial, MICA_PREFIX)
        .into_iter()
        .map(|(op, bytes, n, ns)| {
            let instructions_per_op = ns as f64 * tsc_mhz / 1000.0 / n.max(1) as f64;
            MicaOp { op, bytes, n, ns, instructions_per_op }
        })
        .collect()
}

impl Report {
    /// The Mica figure for `op` and `bytes` (first boot).
    fn mica(&self, op: &str, bytes: u64) -> Option<f64> {
        self.mica.first()?.iter().find(|m| m.op == op && m.bytes == bytes).map(|m| m.instructions_per_op)
    }

    /// The Mica figure for `op` and `bytes` with two vCPUs.
    fn mica_smp2(&self, op: &str, bytes: u64) -> Option<f64> {
        self.mica_smp2.iter().find(|m| m.op == op && m.bytes == bytes).map(|m| m.instructions_per_op)
    }

    /// The Linux figure for `workload` and `bytes`.
    fn linux(&self, workload: &str, bytes: u64) -> Option<f64> {
        self.linux.iter().find(|l| l.workload == workload && l.bytes == bytes).map(|l| l.instructions_per_op)
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| grouped(v.round() as u64));
        let _ = writeln!(md, "## IPC in guest instructions per operation ({})\n", self.qemu_options);
        let _ =
            writeln!(md, "Machine: {} ({} CPUs), {}; Linux guest {}\n", m.cpu_model, m.cpus, m.qemu, self.linux_kernel);
        md.push_str(
            "| operation | Mica (components) | Mica, -smp 2 | Linux pipe | Linux Unix socket |\n|---|---:|---:|---:|---:|\n",
        );
        for (label, op, bytes, pipe, unix) in [
            ("round trip, 64 B", "round-trip", 64, "pipe", Some("unix")),
            ("round trip, 4 KiB", "round-trip", 4096, "pipe", Some("unix")),
            ("one-way message, 64 B", "one-way", 64, "pipe-oneway", None),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} |",
                show(self.mica(op, bytes)),
                show(self.mica_smp2(op, bytes)),
                show(self.linux(pipe, bytes)),
                show(unix.and_then(|u| self.linux(u, bytes)))
            );
        }
        let _ = writeln!(
            md,
            "| IPC host call (`rights-of`) | {} | {} | | |",
            show(self.mica("host-call", 0)),
            show(self.mica_smp2("host-call", 0))
        );
        let _ = writeln!(md, "| kernel thread switch | {} | | | |", grouped(self.thread_switch));
        match (&self.kvm_ns, &self.kvm_absent) {
            (Some(ops), _) => {
                let shown: Vec<String> =
                    ops.iter().map(|o| format!("{} {} B: {:.0} ns", o.op, o.bytes, o.instructions_per_op)).collect();
                let _ = writeln!(md, "\nHardware KVM, wall clock per operation: {}", shown.join("; "));
            }
            (None, Some(why)) => {
                let _ = writeln!(md, "\nNo wall-clock figures: {why}.");
            }
            (None, None) => {}
        }
        let ratio = self.mica("round-trip", 64).zip(self.linux("pipe", 64)).map(|(m, l)| l / m);
        if let Some(r) = ratio {
            let _ = writeln!(md, "\n64-byte round trip: Linux pipe / Mica = {r:.1}x");
        }
        let same = self.mica.windows(2).all(|w| w[0].iter().zip(&w[1]).all(|(a, b)| a.ns == b.ns));
        let _ = writeln!(
            md,
            "{} Mica boots: {} (TSC {} MHz)",
            self.mica.len(),
            if same { "identical counts" } else { "counts differ; the table shows the first boot" },
            self.tsc_mhz.iter().map(|f| format!("{f:.3}")).collect::<Vec<_>>().join(", ")
        );
        md.push_str("\nNotes:\n");
        for line in &self.method {
            let _ = writeln!(md, "- {line}.");
        }
        let _ = writeln!(md, "- Peers: {}.", self.peers.join("; "));
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mica_lines_are_read() {
        let serial = "[   0.01] INFO  kmain: time: TSC 1000.500 MHz; local APIC\n\
                      [ipc-bench] ipc-bench op=round-trip bytes=64 n=100 ns=200000\n\
                      [ipc-bench] ipc-bench op=one-way bytes=64 n=100 ns=50000\n";
        let mhz = tsc_rate(serial).unwrap();
        assert_eq!(mhz, 1000.5);
        let ops = mica_ops(serial, 1000.0);
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].op.as_str(), ops[0].bytes, ops[0].instructions_per_op), ("round-trip", 64, 2000.0));
        assert_eq!(ops[1].instructions_per_op, 500.0);
        assert!(mica_ops("ipc-bench op=x bytes=1", 1000.0).is_empty());
    }
}
