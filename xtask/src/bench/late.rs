//! `cargo xtask bench late-binding`: what compiling at boot costs and what it buys.
//!
//! `components/bench-late.toml` boots under `-accel tcg -icount shift=0` with one vCPU on a CPU
//! model with LZCNT, BMI1 and BMI2 beyond the baseline, on a fresh disk for its module store:
//! 1. late binding, first boot: the system compiles `hello` and `testkit` (for `bitscan`) and
//!    keeps them in the store;
//! 2. late binding, the next boot on the same disk: everything from the store;
//! 3. the same system compiled on this host ahead of time for the same CPU features.
//!
//! Each kind boots `--runs` times (a fresh disk for every first boot); guest instructions come
//! from the kernel's `mica: system ran (tsc_since_entry=N idle=I)` line, N - I: the idle threads'
//! time is virtual time that passed while the guest waited (for the host's disk, say), not
//! instructions. Wall time runs from QEMU's start to its exit. Compile cost per KiB of wasm: in the system, the compile line's TSC ticks (the
//! compiling thread's own instructions); on this host, the same wasm compiled by Cranelift
//! natively for the same features (wall clock, median of three). What late binding buys: the
//! `bitscan` component's run compiled for this CPU (boot 2) against the same wasm compiled for
//! the baseline profile ahead of time, run on the same CPU model.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, KvmProbe, QemuCommand};
use mica_runtime::config::{CpuFeature, CpuProfile, Instrumentation, KERNEL_TARGET};
use serde::Serialize;

use super::boot::boot;
use super::stats::Summary;
use crate::machine::Machine;
use crate::system::{Binding, prepare_with};

/// The system.
const MANIFEST: &str = "components/bench-late.toml";
/// One boot's time limit.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The kernel's end-of-run line, up to the number.
const RAN_PREFIX: &str = "mica: system ran (tsc_since_entry=";

/// The CPU the bench boots on: the baseline and LZCNT, BMI1, BMI2.
fn this_cpu() -> CpuProfile {
    CpuProfile::new(
        "baseline+lzcnt+bmi",
        CpuProfile::baseline().features.into_iter().chain([CpuFeature::Lzcnt, CpuFeature::Bmi1, CpuFeature::Bmi2]),
    )
}

/// One kind of boot, measured.
#[derive(Debug, Serialize)]
pub struct Boots {
    /// Guest instructions from the kernel's entry to the end of the system, less the idle
    /// threads' time, per boot.
    pub instructions: Vec<u64>,
    /// Wall time from QEMU's start to its exit.
    pub wall: Summary,
    /// Components compiled in the system, per boot.
    pub compiles: Vec<usize>,
}

/// One component compiled in the system (first boot), against the same compile on this host.
#[derive(Debug, Serialize)]
pub struct Compile {
    /// The component.
    pub name: String,
    /// Its wasm, in KiB.
    pub wasm_kib: u64,
    /// Guest instructions the compile took inside Mica.
    pub mica_instructions: u64,
    /// Wall milliseconds the same compile took natively on this host (median of three).
    pub host_ms: f64,
}

/// What `bench late-binding` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The CPU features QEMU's model offers.
    pub cpu: String,
    /// Late binding, first boot (compile and keep).
    pub first_boot: Boots,
    /// Late binding, next boot (from the store).
    pub store_hit_boot: Boots,
    /// Host-precompiled for the same CPU.
    pub precompiled_boot: Boots,
    /// The compiles of the first boot.
    pub compiles: Vec<Compile>,
    /// `bitscan`'s run, compiled in the system for this CPU (guest instructions).
    pub bitscan_this_cpu: u64,
    /// `bitscan`'s run, compiled ahead of time for the baseline (guest instructions).
    pub bitscan_baseline: u64,
}

/// Busy guest instructions from the `mica: system ran (tsc_since_entry=N idle=I)` line: N - I.
/// Under icount, virtual time passes while the guest halts (waiting for the host's disk, for a
/// timer), and the idle threads' ticks are that time.
fn ran(serial: &str) -> Option<u64> {
    let line = serial.lines().find(|l| l.starts_with(RAN_PREFIX))?;
    let (total, idle) = line[RAN_PREFIX.len()..].trim_end_matches(')').split_once(" idle=")?;
    total.parse::<u64>().ok()?.checked_sub(idle.parse().ok()?)
}

/// The `run=` ticks of component `name`'s `component-costs` line.
fn run_ticks(serial: &str, name: &str) -> Option<u64> {
    let prefix = format!("mica: component-costs name={name} ");
    let line = serial.lines().find(|l| l.starts_with(&prefix))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("run="))?.parse().ok()
}

/// (name, wasm KiB, tsc) of each `compiled in` line.
fn compile_lines(serial: &str) -> Vec<(String, u64, u64)> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("mica: component ")?;
            let (name, rest) = rest.split_once(": compiled in ")?;
            let kib = rest.split_once(" (")?.1.split_once(" KiB wasm")?.0.parse().ok()?;
            let tsc = rest.split_once(", tsc ")?.1.split_once(',')?.0.parse().ok()?;
            Some((name.to_owned(), kib, tsc))
        })
        .collect()
}

/// Boots `bundle` on the disk image `disk` (fresh when `fresh`), returning the serial output and
/// the wall time.
fn boot_on(base: &QemuCommand, bundle: &Path, disk: &Path, fresh: bool) -> Result<(String, Duration)> {
    if fresh && disk.exists() {
        fs::remove_file(disk).with_context(|| format!("removing {}", disk.display()))?;
    }
    let mut machine = mica_launch::devices::of_bundle(bundle)?;
    for d in machine.iter_mut().filter(|d| d.disk.is_some()) {
        d.disk = Some(disk.to_string_lossy().into_owned());
    }
    mica_launch::devices::prepare_disks(&machine)?;
    let cmd = base
        .clone()
        .initrd(bundle)
        .memory_mib(mica_launch::devices::memory_mib(bundle, crate::run::SYSTEM_MEMORY_MIB)?)
        .extra_args(mica_launch::devices::qemu_args(&machine));
    let start = Instant::now();
    let outcome = boot(&cmd, BOOT_TIMEOUT)?;
    Ok((outcome.serial, start.elapsed()))
}

fn boots(samples: Vec<(String, Duration)>, what: &str) -> Result<(Boots, Vec<String>)> {
    let mut instructions = Vec::new();
    let mut compiles = Vec::new();
    let mut walls = Vec::new();
    let mut serials = Vec::new();
    for (serial, wall) in samples {
        instructions.push(ran(&serial).with_context(|| format!("{what}: no `system ran` line\n{serial}"))?);
        compiles.push(compile_lines(&serial).len());
        walls.push(wall);
        serials.push(serial);
    }
    let wall = Summary::of(&walls).context("no boots")?;
    Ok((Boots { instructions, wall, compiles }, serials))
}

/// Wall milliseconds to compile `wasm` natively on this host for `cpu` (median of three).
fn host_compile_ms(wasm: &[u8], cpu: &CpuProfile) -> Result<f64> {
    let config = mica_runtime::config::compile_config(KERNEL_TARGET, Instrumentation::NONE, cpu)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = mica_runtime::wasmtime::Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        engine.precompile_component(wasm).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs the benchmark with `runs` boots of each kind.
pub fn run(root: &Path, runs: u32) -> Result<()> {
    let super::Prepared { toolchain, kernel: mica, out_dir } = super::prepare(root)?;
    let qemu = mica_launch::find_qemu()?;
    let cpu = this_cpu();
    let manifest = root.join(MANIFEST);
    let late = prepare_with(root, &toolchain, &manifest, &Binding::Late, Some("bench-late"))?;
    let native = prepare_with(root, &toolchain, &manifest, &Binding::Aot(cpu.clone()), Some("bench-late-aot"))?;
    let baseline =
        prepare_with(root, &toolchain, &manifest, &Binding::Aot(CpuProfile::baseline()), Some("bench-late-baseline"))?;
    let features: Vec<&str> = cpu.features.iter().map(|f| f.name()).collect();
    let base = QemuCommand::new(&qemu, &mica, Accel::Tcg)
        .cpu(mica_launch::cpu_model(&features))
        .icount(true)
        .extra_args(["-smp", "1"]);
    let disk: PathBuf = out_dir.join("late-binding-store.img");
    let (mut first, mut hit, mut pre, mut base_runs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("bench: late-binding: round {} of {runs} (first boot, store-hit boot, precompiled boot)", i + 1);
        first.push(boot_on(&base, &late, &disk, true)?);
        hit.push(boot_on(&base, &late, &disk, false)?);
        pre.push(boot_on(&base, &native, &disk, false)?);
        base_runs.push(boot_on(&base, &baseline, &disk, false)?);
    }
    let (first_boot, first_serials) = boots(first, "first boot")?;
    let (store_hit_boot, hit_serials) = boots(hit, "store-hit boot")?;
    let (precompiled_boot, _) = boots(pre, "precompiled boot")?;
    let (_, baseline_serials) = boots(base_runs, "baseline boot")?;
    if first_boot.compiles.iter().any(|n| *n != 2) || store_hit_boot.compiles.iter().any(|n| *n != 0) {
        bail!(
            "expected 2 compiles on each first boot and none on a store-hit boot, got {:?} and {:?}",
            first_boot.compiles,
            store_hit_boot.compiles
        );
    }
    let bitscan_this_cpu = median(&hit_serials.iter().filter_map(|s| run_ticks(s, "bitscan")).collect::<Vec<_>>());
    let bitscan_baseline = median(&baseline_serials.iter().filter_map(|s| run_ticks(s, "bitscan")).collect::<Vec<_>>());
    let wasm_dir = crate::toolchain::target_dir(root).join(crate::toolchain::COMPONENT_TARGET).join("release");
    let mut compiles = Vec::new();
    for (name, kib, tsc) in compile_lines(&first_serials[0]) {
        let krate = if name == "bitscan" { "testkit" } else { name.as_str() };
        let path = wasm_dir.join(format!("{krate}.wasm"));
        let wasm = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        compiles.push(Compile { host_ms: host_compile_ms(&wasm, &cpu)?, name, wasm_kib: kib, mica_instructions: tsc });
    }
    let report = Report {
        machine: Machine::describe(&qemu, &KvmProbe::detect()),
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        cpu: cpu.feature_list(),
        first_boot,
        store_hit_boot,
        precompiled_boot,
        compiles,
        bitscan_this_cpu,
        bitscan_baseline,
    };
    let g = super::report::grouped;
    let mut md = String::new();
    let _ =
        writeln!(md, "## Late binding (-accel tcg -icount shift=0, one vCPU, CPU {}; medians of {runs})", report.cpu);
    let _ = writeln!(md, "| boot | guest instructions (busy) | wall (QEMU start to exit) | vs precompiled |");
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let pre_i = median(&report.precompiled_boot.instructions) as f64;
    for (what, b) in [
        ("first boot: compile in the system, keep in the store", &report.first_boot),
        ("next boot: native code from the store", &report.store_hit_boot),
        ("host-precompiled for this CPU (`--aot`)", &report.precompiled_boot),
    ] {
        let i = median(&b.instructions);
        let _ = writeln!(
            md,
            "| {what} | {} | {:.2} s | {:.2}x instructions, {:.2}x wall |",
            g(i),
            b.wall.median_s,
            i as f64 / pre_i,
            b.wall.median_s / report.precompiled_boot.wall.median_s
        );
    }
    let _ = writeln!(
        md,
        "\n| compile | wasm | in Mica: instructions per KiB | on this host: ms per KiB (native Cranelift) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for c in &report.compiles {
        let _ = writeln!(
            md,
            "| {} | {} KiB | {} | {:.3} |",
            c.name,
            c.wasm_kib,
            g(c.mica_instructions / c.wasm_kib.max(1)),
            c.host_ms / c.wasm_kib.max(1) as f64
        );
    }
    let _ = writeln!(
        md,
        "\nbitscan (the same wasm, run on this CPU model): compiled for this CPU {} instructions, for the \
         baseline {} ({:.2}x)",
        g(report.bitscan_this_cpu),
        g(report.bitscan_baseline),
        report.bitscan_baseline as f64 / report.bitscan_this_cpu.max(1) as f64
    );
    super::report::publish(&out_dir, "late-binding.json", &md, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_are_read() {
        let serial = "x\nmica: component hello: compiled in 12 ms for x86_64-unknown-none cpu-sse3 instrument-none \
                      (110 KiB wasm, 326 KiB native, tsc 123456, crc32 b2423fcc)\n\
                      mica: component-costs name=bitscan load=1 instantiate=2 run=345\n\
                      mica: system ran (tsc_since_entry=999 idle=99)\n";
        assert_eq!(compile_lines(serial), vec![("hello".to_owned(), 110, 123456)]);
        assert_eq!(run_ticks(serial, "bitscan"), Some(345));
        assert_eq!(run_ticks(serial, "hello"), None);
        assert_eq!(ran(serial), Some(900));
        assert_eq!(median(&[3, 1, 2]), 2);
    }

    #[test]
    fn the_bench_system_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let m =
            crate::manifest::load(&root.join(MANIFEST), &root.join("components")).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(m.components.iter().any(|c| c.module_store));
        assert!(this_cpu().features.contains(&CpuFeature::Lzcnt));
    }
}
