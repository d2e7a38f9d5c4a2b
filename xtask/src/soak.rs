//! `cargo xtask soak`: the long versions of the reliability tests, with figures. CI runs their
//! short versions as boot tests (`kv_store_survives_power_cut`: one cut;
//! `hostile_component_beside_a_working_system`: one seed); these run many, each with a fresh
//! random seed that is printed, so any failure can be repeated.
//!
//! - `soak power-cut --runs N`: the key-value store on virtio-blk, power cut at a random point N
//!   times; every acknowledged write must be there after each cut.
//! - `soak hostile --runs N --calls C`: the hostile component (random calls of every interface it
//!   is granted) beside the IPC example, N boots with C calls each; the kernel must never panic
//!   or hang, and the well-behaved components must finish correctly every time.
//!
//! - `soak chaos --time S --runs N`: the chaos system (drivers, key-value store, HTTP server)
//!   under HTTP load from this host while the kernel kills random instances for S seconds, N
//!   boots; every acknowledged write must be readable afterwards, every component running, and
//!   the kernel's memory back where it was.
//!
//! - `soak http --time S`: the same system and load for S seconds with no kills: requests
//!   answered, failures, p50/p99 latency, and the kernel's memory at the start and the end.
//!
//! Each prints a table and writes `target/mica/soak/NAME.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mica_launch::{Accel, GuestArch, OutputMode, QemuCommand, RunOptions};
use serde::Serialize;

use crate::{kernel, setup, system};

/// The soak campaigns.
#[derive(Debug, Subcommand)]
pub enum SoakCommand {
    /// Power cuts while the key-value store writes: every acknowledged write must survive.
    PowerCut(PowerCutArgs),
    /// The hostile component beside a working system, with fresh seeds.
    Hostile(HostileArgs),
    /// Drivers and services killed at random under HTTP load.
    Chaos(ChaosArgs),
    /// Sustained HTTP load on the services, no faults: latency and the kernel's memory.
    Http(HttpArgs),
}

/// `soak http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 600)]
    time: u64,
}

/// `soak chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// How long each boot kills for, in seconds.
    #[arg(long, default_value_t = 600)]
    time: u64,
    /// How many boots.
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

/// `soak power-cut`.
#[derive(Debug, Args)]
pub struct PowerCutArgs {
    /// How many cuts.
    #[arg(long, default_value_t = 100)]
    runs: u32,
    /// Cut the power under files an unmodified program syncs through the file system service,
    /// instead of under the key-value store.
    #[arg(long)]
    files: bool,
}

/// `soak hostile`.
#[derive(Debug, Args)]
pub struct HostileArgs {
    /// How many boots.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// Calls the hostile component makes in each.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
}

/// One run of a campaign, for the JSON.
#[derive(Debug, Serialize)]
struct Run {
    seed: u64,
    ok: bool,
    /// What happened, in words (the error when it failed).
    outcome: String,
    seconds: f64,
}

/// A campaign's figures.
#[derive(Debug, Serialize)]
struct Report {
    campaign: &'static str,
    unix_time_s: u64,
    runs: Vec<Run>,
    failures: usize,
    /// Power cuts: acknowledged writes in all, and how many were lost.
    acknowledged: u64,
    lost: u64,
}

/// A seed from the clock, different for every run.
fn fresh_seed(previous: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ previous.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16
}

pub fn run(root: &Path, command: &SoakCommand) -> Result<ExitCode> {
    let toolchain = setup::ensure(root)?;
    let kernel = kernel::build(root, &toolchain, GuestArch::X86_64, false)?;
    let kernel = kernel.canonicalize().with_context(|| format!("{} vanished", kernel.display()))?;
    let qemu = mica_launch::find_qemu()?;
    let profile = mica_runtime::config::CpuProfile::baseline();
    let out = root.join("target").join("mica").join("soak");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut report = match command {
        SoakCommand::PowerCut(args) => {
            let systems = root.join("qemu-tests").join("systems");
            let target = if args.files { &qemu_tests::power_cut::FILES } else { &qemu_tests::power_cut::KV };
            let mut bundles = None;
            for name in [target.fill_system, target.check_system] {
                let bundle = system::prepare(root, &toolchain, &systems.join(format!("{name}.toml")), &profile)?;
                bundles = bundle.parent().map(Path::to_path_buf);
            }
            let bundles = bundles.context("no bundle directory")?;
            power_cuts(&qemu, &kernel, &bundles, target, args.runs)
        }
        SoakCommand::Hostile(args) => hostile(root, &toolchain, &qemu, &kernel, &profile, &out, args)?,
        SoakCommand::Chaos(_) | SoakCommand::Http(_) => {
            let manifest = root.join("qemu-tests").join("systems").join(format!("{}.toml", qemu_tests::chaos::SYSTEM));
            let bundle = system::prepare(root, &toolchain, &manifest, &profile)?;
            let bundles = bundle.parent().context("no bundle directory")?.to_path_buf();
            match command {
                SoakCommand::Http(args) => chaos(&qemu, &kernel, &bundles, "http", 1, args.time, 0),
                SoakCommand::Chaos(args) => {
                    chaos(&qemu, &kernel, &bundles, "chaos", args.runs, args.time, qemu_tests::chaos::GAP_MS)
                }
                _ => unreachable!("matched above"),
            }
        }
    };
    report.unix_time_s = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let json = out.join(format!("{}.json", report.campaign));
    fs::write(&json, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", json.display()))?;
    print_table(&report);
    println!("Written to {}", json.display());
    Ok(if report.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `runs` runs of `one`, each with a fresh seed, tallied into a report: `one` says what happened
/// in words, and how many writes were acknowledged and how many of those lost.
fn campaign(name: &'static str, runs: u32, mut one: impl FnMut(u64) -> Result<(String, u64, u64), String>) -> Report {
    let mut report = Report { campaign: name, unix_time_s: 0, runs: Vec::new(), failures: 0, acknowledged: 0, lost: 0 };
    let mut seed = 0;
    for i in 1..=runs {
        seed = fresh_seed(seed);
        let start = Instant::now();
        let result = one(seed);
        let seconds = start.elapsed().as_secs_f64();
        let run = match result {
            Ok((outcome, acknowledged, lost)) => {
                report.acknowledged += acknowledged;
                report.lost += lost;
                Run { seed, ok: true, outcome, seconds }
            }
            Err(e) => {
                report.failures += 1;
                Run { seed, ok: false, outcome: e, seconds }
            }
        };
        eprintln!("soak: {name} run {i} of {runs}: {}{}", if run.ok { "" } else { "FAILED: " }, run.outcome);
        report.runs.push(run);
    }
    report
}

fn power_cuts(qemu: &Path, kernel: &Path, bundles: &Path, target: &qemu_tests::power_cut::Target, runs: u32) -> Report {
    let name =
        if target.fill_system == qemu_tests::power_cut::FILES.fill_system { "power-cut-files" } else { "power-cut" };
    campaign(name, runs, |seed| {
        let cut = qemu_tests::power_cut::run_seeded(qemu, kernel, bundles, target, seed)?;
        Ok((cut.to_string(), cut.acked_keys, cut.acked_keys.saturating_sub(cut.present)))
    })
}

/// `runs` boots of the chaos system under HTTP load for `seconds`, kills about `gap_ms` apart
/// (none with 0: `soak http`). A run that lost a write fails.
fn chaos(
    qemu: &Path,
    kernel: &Path,
    bundles: &Path,
    name: &'static str,
    runs: u32,
    seconds: u64,
    gap_ms: u64,
) -> Report {
    campaign(name, runs, |seed| {
        let arch = GuestArch::X86_64;
        let run = qemu_tests::chaos::run_seeded(qemu, kernel, bundles, arch, seed, seconds * 1000, gap_ms)?;
        Ok((run.to_string(), run.acked, 0))
    })
}

/// The hostile boot test's system with the seed and the number of calls of a run.
fn hostile_manifest(template: &str, calls: u64, seed: u64) -> Result<String> {
    let line = "args = [\"20000\", \"177476423229030\"]";
    anyhow::ensure!(template.contains(line), "qemu-tests/systems/hostile.toml no longer has {line}");
    Ok(template.replace(line, &format!("args = [\"{calls}\", \"{seed}\"]")))
}

fn hostile(
    root: &Path,
    toolchain: &crate::toolchain::Toolchain,
    qemu: &Path,
    kernel: &Path,
    profile: &mica_runtime::config::CpuProfile,
    out: &Path,
    args: &HostileArgs,
) -> Result<Report> {
    let template_path = root.join("qemu-tests").join("systems").join("hostile.toml");
    let template =
        fs::read_to_string(&template_path).with_context(|| format!("reading {}", template_path.display()))?;
    let manifest: PathBuf = out.join("hostile-soak.toml");
    let mut report =
        Report { campaign: "hostile", unix_time_s: 0, runs: Vec::new(), failures: 0, acknowledged: 0, lost: 0 };
    let mut seed = 0;
    let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
    for i in 1..=args.runs {
        seed = fresh_seed(seed);
        fs::write(&manifest, hostile_manifest(&template, args.calls, seed)?)
            .with_context(|| format!("writing {}", manifest.display()))?;
        let bundle = system::prepare_with(root, toolchain, &manifest, &system::Binding::Aot(profile.clone()), None)?;
        let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg)
            .cpu(mica_launch::cpu_model(&features))
            .initrd(&bundle)
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
            .extra_args(["-smp", "2"]);
        let options = RunOptions {
            timeout: Duration::from_secs(120 + args.calls / 500),
            output: OutputMode::Capture { echo: false },
        };
        let start = Instant::now();
        let outcome = mica_launch::run::run(&cmd, &options)?;
        let seconds = start.elapsed().as_secs_f64();
        let expected = [
            format!("[hostile] hostile: {} calls made (", args.calls),
            "[echo-client] 100 echo calls answered correctly".to_owned(),
            "[kv-client] 50 put/get rounds correct".to_owned(),
            "mica: all components finished: 5 of 5 succeeded".to_owned(),
        ];
        let missing: Vec<&String> = expected.iter().filter(|e| !outcome.serial.contains(e.as_str())).collect();
        let ok = outcome.verdict == Some(mica_exit::ExitCode::Success) && missing.is_empty();
        let run = if ok {
            let line = outcome.serial.lines().find(|l| l.contains("calls made (")).unwrap_or_default();
            Run { seed, ok, outcome: line.trim().to_owned(), seconds }
        } else {
            report.failures += 1;
            let log = out.join(format!("hostile-{seed}.log"));
            let _ = fs::write(&log, outcome.transcript());
            Run {
                seed,
                ok,
                outcome: format!("{}; missing {missing:?}; console in {}", outcome.describe(), log.display()),
                seconds,
            }
        };
        eprintln!("soak: hostile run {i} of {} (seed {seed}): {}", args.runs, run.outcome);
        report.runs.push(run);
    }
    Ok(report)
}

fn print_table(report: &Report) {
    println!("## Soak: {}\n", report.campaign);
    println!("| run | seed | result | seconds |");
    println!("|---:|---:|---|---:|");
    for (i, run) in report.runs.iter().enumerate() {
        let result = if run.ok { run.outcome.clone() } else { format!("FAILED: {}", run.outcome) };
        println!("| {} | {} | {} | {:.1} |", i + 1, run.seed, result.replace('|', "/"), run.seconds);
    }
    println!();
    let passed = report.runs.len() - report.failures;
    print!("{} of {} runs passed", passed, report.runs.len());
    if report.campaign != "hostile" {
        print!("; {} acknowledged writes, {} lost", report.acknowledged, report.lost);
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostile_manifest_gets_the_run_s_seed_and_calls() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository's root");
        let template =
            fs::read_to_string(root.join("qemu-tests/systems/hostile.toml")).expect("the boot test's system");
        let text = hostile_manifest(&template, 20_000, 77).expect("the template has its args line");
        assert!(text.contains("args = [\"20000\", \"77\"]"), "{text}");
        assert!(hostile_manifest("no args here", 1, 1).is_err());
    }

    #[test]
    fn seeds_differ_from_run_to_run() {
        let a = fresh_seed(0);
        let b = fresh_seed(a);
        assert_ne!(a, b);
    }
}
