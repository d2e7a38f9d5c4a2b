//! `cargo xtask bench ipc`: what IPC between components costs, in guest instructions, against
//! the same ping-pong between two processes in a Linux guest.
//!
//! Each architecture asked for (`--arch`, both by default) is measured on its own, Mica against
//! a Linux guest of the same architecture, and the table puts the architectures side by side.
//!
//! - Mica: the system of `components/bench-ipc.toml` (release kernel) under `-accel tcg -icount
//!   shift=0`, [`MICA_RUNS`] boots. The `ipc-bench` component times N calls to the echo server
//!   (64 B and 4 KiB, request and reply alike) and N one-way 64-byte messages with the monotonic
//!   clock, which under `-icount shift=0` converts to instructions (see [`super::clock`]). The
//!   whole loop is counted: client, server, kernel, both thread switches.
//! - Thread switch: the kernel's `test=switch` scenario, two kernel threads yielding to each other.
//! - Linux: `mica-linux-bench` as `/init` of Debian's cloud kernel (amd64 or arm64) with a busybox initramfs, same
//!   QEMU settings, CPU model and memory, one vCPU like Mica: the same ping-pong between two
//!   processes over a pair of pipes and over a Unix stream socket, and one-way over a pipe.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, GuestArch, KvmProbe};
use serde::Serialize;

use super::boot::boot;
use super::clock::{self, InstructionClock};
use super::report::grouped;
use crate::linux_guest;
use crate::machine::Machine;

/// Mica boots counted.
const MICA_RUNS: usize = 2;
/// The benchmark's system manifest, relative to the workspace root.
const MANIFEST: &str = "components/bench-ipc.toml";
/// The QEMU options that make the guest's clocks count instructions.
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
    /// Guest instructions per operation (`ns` in instructions, over `n`).
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

/// Everything `bench ipc` measured, per architecture.
#[derive(Debug, Serialize)]
pub struct Reports {
    /// One report per architecture, in the order asked for.
    pub arches: Vec<Report>,
}

/// Everything `bench ipc` measured on one architecture.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The guest architecture.
    pub arch: &'static str,
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The QEMU options.
    pub qemu_options: &'static str,
    /// The system manifest booted.
    pub manifest: &'static str,
    /// The counter the kernel read and what it is worth in instructions, per boot.
    pub clock: Vec<InstructionClock>,
    /// Mica's measurements, per boot.
    pub mica: Vec<Vec<MicaOp>>,
    /// The same system booted with two vCPUs (`-smp 2`; `-icount` runs them on one TCG thread,
    /// in turns).
    pub mica_smp2: Vec<MicaOp>,
    /// Why there is no `-smp 2` row, when there is none.
    pub smp2_absent: Option<String>,
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

/// Why `bench ipc` has no `-smp 2` row on aarch64.
const SMP2_ICOUNT_AARCH64: &str = "QEMU 7.2 with -icount and two aarch64 vCPUs stops executing in this boot: one vCPU \
     stays parked on the `dsb ish` after a broadcast TLB invalidation (`tlbi vaae1is`, the work QEMU runs with all \
     vCPUs stopped), the other spinning on the page-table lock the first holds, and QEMU never runs the pending \
     flush; the same boot without -icount (`-accel tcg,thread=single`, the same one-thread round robin) completes";

/// Peer figures, quoted in the notes.
const PEERS: &[&str] = &[
    "seL4 call + reply (IPC fastpath): ~772 cycles round trip on x86-64 (seL4 benchmarks)",
    "a Linux pipe round trip costs thousands of instructions (measured here in the same run)",
];

/// Runs the IPC benchmark on every architecture of `arches`.
pub fn run(root: &Path, arches: &[GuestArch]) -> Result<()> {
    let (arches, out_dir) = super::per_arch(arches, |arch| measure(root, arch))?;
    let reports = Reports { arches };
    super::report::publish(&out_dir, "ipc.json", &reports.markdown(), &reports)
}

/// Measures IPC on `arch`; the report and the output directory.
fn measure(root: &Path, arch: GuestArch) -> Result<(Report, std::path::PathBuf)> {
    let system = super::ArchSystem::prepare(root, arch, MANIFEST)?;
    let (qemu, bundle, mica) = (&system.qemu, &system.bundle, &system.prepared.kernel);
    let (toolchain, out_dir) = (&system.prepared.toolchain, system.prepared.out_dir.clone());
    let base = system.command(mica, Accel::Tcg).icount(true);
    let machine = Machine::describe(qemu, &KvmProbe::detect());

    eprint!("bench: IPC between components on {arch} ({QEMU_OPTIONS}): {MICA_RUNS} boots of {MANIFEST} ");
    let cmd = base.clone().cmdline("").initrd(bundle);
    let mut clocks = Vec::new();
    let mut mica_runs = Vec::new();
    for _ in 0..MICA_RUNS {
        let outcome = boot(&cmd, BOOT_TIMEOUT)?;
        let clock =
            clock::of_boot(&outcome.serial).with_context(|| format!("no time line\n{}", outcome.transcript()))?;
        let ops = mica_ops(&outcome.serial, &clock);
        if ops.len() != 4 {
            eprintln!();
            bail!("expected 4 `{MICA_PREFIX}` lines\n{}", outcome.transcript());
        }
        clocks.push(clock);
        mica_runs.push(ops);
        eprint!(".");
    }
    eprintln!();
    let (mica_smp2, smp2_absent) = if arch == GuestArch::Aarch64 {
        (Vec::new(), Some(SMP2_ICOUNT_AARCH64.to_owned()))
    } else {
        eprintln!("bench: the same with two vCPUs (-smp 2)");
        let smp2 = cmd.clone().extra_args(["-smp", "2"]);
        let outcome = boot(&smp2, BOOT_TIMEOUT)?;
        let clock =
            clock::of_boot(&outcome.serial).with_context(|| format!("no time line\n{}", outcome.transcript()))?;
        let ops = mica_ops(&outcome.serial, &clock);
        if ops.len() != 4 {
            bail!("expected 4 `{MICA_PREFIX}` lines with -smp 2\n{}", outcome.transcript());
        }
        (ops, None)
    };
    eprintln!("bench: kernel thread switch (test=switch)");
    let outcome = boot(&base.clone().cmdline("test=switch"), BOOT_TIMEOUT)?;
    let thread_switch =
        switch_cost(&outcome.serial).with_context(|| format!("no `{SWITCH_PREFIX}` line\n{}", outcome.transcript()))?;

    // Timed where a hardware KVM exists (a software KVM runs guests hundreds of times slower and
    // its figures would mean nothing): the same boot without instruction counting; the component's
    // clock is then real time.
    let probe = KvmProbe::detect();
    let (kvm_ns, kvm_absent) = if probe.hardware() && GuestArch::host() == Some(arch) {
        eprintln!("bench: the same under KVM ({}), wall clock", probe.label());
        let kvm = system.command(mica, Accel::Kvm).cmdline("").initrd(bundle);
        let outcome = boot(&kvm, BOOT_TIMEOUT)?;
        // One instruction per nanosecond: the nanoseconds stay nanoseconds.
        let wall = InstructionClock { counter: "wall clock", counter_mhz: 1000.0, per_tick: 1.0, per_ns: 1.0 };
        (Some(mica_ops(&outcome.serial, &wall)), None)
    } else if GuestArch::host() != Some(arch) {
        (None, Some(format!("this host is not {arch}")))
    } else {
        let why =
            probe.unusable_reason().unwrap_or_else(|| format!("KVM here is {}, not hardware-backed", probe.label()));
        (None, Some(why))
    };
    let guest = linux_guest::fetch(&root.join("target"), arch)?;
    let init = linux_guest::build_static_for(root, toolchain, "mica-linux-bench", "mica-linux-bench", arch)?;
    let image = out_dir.join(format!("linux-bench-{arch}.cpio"));
    linux_guest::init_image(&guest, &init, &image)?;
    let mut linux = Vec::new();
    for (workload, bytes) in [("pipe", 64), ("pipe", 4096), ("unix", 64), ("unix", 4096), ("pipe-oneway", 64)] {
        eprintln!("bench: Linux guest ({}): {workload} {LINUX_N} x {bytes} B", guest.release);
        let (n, size) = (LINUX_N.to_string(), bytes.to_string());
        let mut cmd = guest.qemu(qemu, Accel::Tcg, &image).memory_mib(crate::run::SYSTEM_MEMORY_MIB).icount(true);
        cmd = cmd.clone().cmdline(guest.cmdline(&cmd, &[workload, &n, &size]));
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
        arch: arch.name(),
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        qemu_options: QEMU_OPTIONS,
        manifest: MANIFEST,
        clock: clocks,
        mica: mica_runs,
        mica_smp2,
        smp2_absent,
        thread_switch,
        kvm_ns,
        kvm_absent,
        linux_kernel: guest.release,
        linux,
        peers: PEERS.to_vec(),
        method: vec![
            "Mica: the ipc-bench component's loop timed with the monotonic clock (under -icount shift=0 one \
             instruction is one nanosecond of QEMU's virtual clock; on x86_64 the kernel derives the clock from \
             the TSC, which advances once per instruction, on aarch64 from the generic counter, exact to 16 \
             instructions at 62.5 MHz): client, echo server, kernel and switches, one CPU",
            "Linux: mica-linux-bench and a child copy of itself, the same instruction clock around the loop (TSC, \
             or CNTVCT_EL0 scaled by CNTFRQ_EL0), one vCPU, same QEMU settings",
            "Mica, -smp 2: the same boot with two vCPUs; -icount makes QEMU run them in turns on one host thread, \
             so the count is the same guest instructions measure, summed over both CPUs. A woken thread goes to \
             the run queue of the CPU that woke it and an idle CPU gets a reschedule IPI; in a ping-pong the \
             waker parks at once and its own CPU usually takes the woken thread before the other vCPU gets its \
             turn, so this mostly measures the same-CPU path plus the IPIs, not a cross-CPU hand-off",
        ],
    };
    Ok((report, out_dir))
}

/// Guest instructions per kernel thread switch from the `test=switch` scenario's line.
fn switch_cost(serial: &str) -> Option<u64> {
    let clock = clock::of_boot(serial)?;
    let rest = serial.lines().find_map(|l| l.split_once(SWITCH_PREFIX).map(|(_, rest)| rest))?;
    let ticks = linux_guest::field(rest, "ticks").ok()?;
    let switches = linux_guest::field(rest, "switches").ok()?;
    Some(clock.ticks(ticks) / switches.max(1))
}

/// Every `ipc-bench op=... bytes=... n=... ns=...` line, with instructions per operation.
fn mica_ops(serial: &str, clock: &InstructionClock) -> Vec<MicaOp> {
    super::report::op_lines(serial, MICA_PREFIX)
        .into_iter()
        .map(|(op, bytes, n, ns)| {
            let instructions_per_op = clock.ns(ns) / n.max(1) as f64;
            MicaOp { op, bytes, n, ns, instructions_per_op }
        })
        .collect()
}

/// One figure of a report, in instructions, if measured.
type Figure = fn(&Report) -> Option<f64>;

impl Reports {
    /// The architectures side by side, then each one's own table.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| grouped(v.round() as u64));
        if self.arches.len() > 1 {
            let _ = writeln!(md, "## IPC per architecture, guest instructions per operation ({QEMU_OPTIONS})\n");
            let header: Vec<&str> = self.arches.iter().map(|r| r.arch).collect();
            let _ = writeln!(md, "| operation | {} |", header.join(" | "));
            let _ = writeln!(md, "|---|{}", "---:|".repeat(header.len()));
            let rows: [(&str, Figure); 5] = [
                ("Mica round trip, 64 B", |r| r.mica("round-trip", 64)),
                ("Linux pipe round trip, 64 B", |r| r.linux("pipe", 64)),
                ("Mica one-way, 64 B", |r| r.mica("one-way", 64)),
                ("Linux pipe one-way, 64 B", |r| r.linux("pipe-oneway", 64)),
                ("Mica kernel thread switch", |r| Some(r.thread_switch as f64)),
            ];
            for (label, figure) in rows {
                let cells: Vec<String> = self.arches.iter().map(|r| show(figure(r))).collect();
                let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
            }
            let ratios: Vec<String> = self
                .arches
                .iter()
                .map(|r| {
                    r.mica("round-trip", 64)
                        .zip(r.linux("pipe", 64))
                        .map_or("-".to_owned(), |(m, l)| format!("{:.1}x", l / m))
                })
                .collect();
            let _ = writeln!(md, "| Linux pipe / Mica, 64 B round trip | {} |\n", ratios.join(" | "));
        }
        for report in &self.arches {
            md.push_str(&report.markdown());
            md.push('\n');
        }
        md
    }
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
        let _ = writeln!(md, "## IPC on {} in guest instructions per operation ({})\n", self.arch, self.qemu_options);
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
        if let Some(why) = &self.smp2_absent {
            let _ = writeln!(md, "\nNo -smp 2 figures: {why}.");
        }
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
            "{} Mica boots: {} ({} {} MHz)",
            self.mica.len(),
            if same { "identical counts" } else { "counts differ; the table shows the first boot" },
            self.clock.first().map_or("clock", |c| c.counter),
            self.clock.iter().map(|c| format!("{:.3}", c.counter_mhz)).collect::<Vec<_>>().join(", ")
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
        let clock = clock::of_boot(serial).unwrap();
        assert_eq!(clock.counter_mhz, 1000.5);
        let ops = mica_ops(serial, &clock);
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].op.as_str(), ops[0].bytes, ops[0].instructions_per_op.round()), ("round-trip", 64, 2001.0));
        assert_eq!(ops[1].instructions_per_op, 500.25);
        assert!(mica_ops("ipc-bench op=x bytes=1", &clock).is_empty());
    }

    #[test]
    fn switch_cost_is_scaled_by_the_counter() {
        let serial =
            "time: generic counter 62.500 MHz; GICv3\nmica: bench switch switches=1000 ticks=2000 per_switch=2\n";
        assert_eq!(switch_cost(serial), Some(32));
        assert_eq!(switch_cost("time: TSC 1000.000 MHz\n"), None);
    }
}
