//! `cargo xtask fuzz [TARGET] [--time S]`: coverage-guided fuzzing of Mica's input surfaces with
//! libFuzzer.
//!
//! The targets are `fuzz/targets` (plain functions, also run over the committed corpora by
//! `cargo test`); `fuzz/libfuzzer` wraps each in a libFuzzer binary (its `[[bin]]` names are the
//! target list). They are built with the host's nightly toolchain and the instrumentation
//! `cargo fuzz` uses (SanitizerCoverage: inline 8-bit counters, PC table, compare tracing), in
//! `target/fuzz`, then each runs for `--time` seconds from its committed seeds
//! (`fuzz/corpus/TARGET/`) into a working corpus under `target/mica/fuzz/corpus/TARGET/`. A
//! crash leaves its input under `target/mica/fuzz/artifacts/`: fix the cause and commit the input
//! to `fuzz/regressions/TARGET/`, where `cargo test` keeps running it.
//!
//! Prints per target the executions, the coverage libFuzzer reports (`cov`: edges, `ft`:
//! features) and the working corpus, and writes them to `target/mica/fuzz/fuzz.json`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::process;
use crate::toolchain::clear_cargo_run_env;

/// The instrumentation `cargo fuzz` builds with (its defaults, without a sanitizer). Its debug
/// assertions and overflow checks are set in the harness's release profile instead
/// (`fuzz/libfuzzer/Cargo.toml`), so that one crate can be left without them: `littlefs2`,
/// whose debug assertions refuse the way the file system service grows a volume.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
     -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
     -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing";
/// The toolchain libFuzzer's instrumentation needs.
const NIGHTLY: &str = "nightly";

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// One target to fuzz [default: every target, one after another].
    pub target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub time: u64,
}

/// One target's run.
#[derive(Debug, Serialize)]
pub struct Run {
    /// The target.
    pub target: String,
    /// Seconds it ran.
    pub seconds: f64,
    /// Inputs executed.
    pub executions: u64,
    /// Coverage: edges (`cov`).
    pub edges: u64,
    /// Coverage: features (`ft`).
    pub features: u64,
    /// Inputs in the working corpus at the end.
    pub corpus: u64,
    /// The inputs that crashed it, if any.
    pub crashes: Vec<String>,
}

/// Runs `cargo xtask fuzz`.
pub fn run(root: &Path, args: &FuzzArgs) -> Result<ExitCode> {
    let harness = root.join("fuzz").join("libfuzzer");
    let all = targets(&harness.join("Cargo.toml"))?;
    let chosen: Vec<String> = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t:?}; the targets are {}", all.join(", ")),
        None => all,
    };
    let bin_dir = build(root, &harness)?;
    let work = crate::toolchain::target_dir(root).join("mica").join("fuzz");
    let mut runs = Vec::new();
    for target in &chosen {
        runs.push(fuzz_one(root, &bin_dir, &work, target, args.time)?);
    }
    let table = markdown(&runs);
    print!("{table}");
    let json = work.join("fuzz.json");
    fs::write(&json, serde_json::to_vec_pretty(&runs)?).with_context(|| format!("writing {}", json.display()))?;
    eprintln!("Written to {}", json.display());
    let crashed: Vec<&Run> = runs.iter().filter(|r| !r.crashes.is_empty()).collect();
    if crashed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for r in crashed {
        eprintln!(
            "error: fuzz target {} crashed on {}: reproduce with `{}/{} INPUT`, fix the cause, and commit the \
             input to fuzz/regressions/{}/",
            r.target,
            r.crashes.join(", "),
            bin_dir.display(),
            r.target,
            r.target
        );
    }
    Ok(ExitCode::FAILURE)
}

/// The `[[bin]]` names of the harness manifest `manifest`.
fn targets(manifest: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Harness {
        bin: Vec<Bin>,
    }
    #[derive(serde::Deserialize)]
    struct Bin {
        name: String,
    }
    let text = fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let harness: Harness = toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    Ok(harness.bin.into_iter().map(|b| b.name).collect())
}

/// Builds the harness with the nightly toolchain and libFuzzer's instrumentation; the directory
/// of its binaries.
fn build(root: &Path, harness: &Path) -> Result<PathBuf> {
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut probe = Command::new("rustup");
    clear_cargo_run_env(&mut probe);
    probe.env_remove("RUSTUP_TOOLCHAIN").args(["run", NIGHTLY, "rustc", "--version"]);
    if process::output(&mut probe).is_err() {
        bail!(
            "fuzzing needs rustup's {NIGHTLY} toolchain for this host (libFuzzer's coverage instrumentation is \
             unstable): `rustup toolchain install {NIGHTLY}`"
        );
    }
    let target_dir = crate::toolchain::target_dir(root).join("fuzz");
    let mut cmd = Command::new("cargo");
    clear_cargo_run_env(&mut cmd);
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .arg(format!("+{NIGHTLY}"))
        .args(["build", "--release", "--locked", "--target", &host])
        .current_dir(harness);
    eprintln!(
        "xtask: building the fuzz targets with {NIGHTLY} and coverage instrumentation (the first build takes minutes)"
    );
    let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status}): `{}`", process::shown(&cmd));
    }
    Ok(target_dir.join(host).join("release"))
}

/// Fuzzes `target` for `seconds`.
fn fuzz_one(root: &Path, bin_dir: &Path, work: &Path, target: &str, seconds: u64) -> Result<Run> {
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts");
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds = root.join("fuzz").join("corpus").join(target);
    let prefix = format!("{}/{target}-", artifacts.display());
    let before: Vec<PathBuf> = crash_files(&artifacts, target);
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let mut cmd = Command::new(bin_dir.join(target));
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={prefix}"))
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    let started = Instant::now();
    let out = process::capture(&mut cmd)?;
    let elapsed = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let crashes: Vec<String> = crash_files(&artifacts, target)
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| p.display().to_string())
        .collect();
    if !out.status.success() && crashes.is_empty() {
        bail!("fuzz target {target} failed ({}) without leaving an input:\n{log}", out.status);
    }
    let stats = Stats::parse(&log);
    let corpus_len = fs::read_dir(&corpus).map(|d| d.count() as u64).unwrap_or(0);
    Ok(Run {
        target: target.to_owned(),
        seconds: elapsed,
        executions: stats.executions,
        edges: stats.edges,
        features: stats.features,
        corpus: corpus_len,
        crashes,
    })
}

/// The inputs libFuzzer saved for `target` (crashes, timeouts, out-of-memory) in `artifacts`.
fn crash_files(artifacts: &Path, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(artifacts) else { return Vec::new() };
    let mut files: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{target}-"))))
        .collect();
    files.sort();
    files
}

/// What libFuzzer reported at the end.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    executions: u64,
    edges: u64,
    features: u64,
}

impl Stats {
    /// Reads `stat::number_of_executed_units:` and the last status line's `cov:` and `ft:`.
    fn parse(log: &str) -> Stats {
        let mut stats = Stats::default();
        for line in log.lines() {
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.executions = n.trim().parse().unwrap_or(0);
            }
            let field = |key: &str| {
                let mut words = line.split_whitespace();
                words.position(|w| w == key)?;
                words.next()?.parse::<u64>().ok()
            };
            if let (Some(cov), Some(ft)) = (field("cov:"), field("ft:")) {
                stats.edges = cov;
                stats.features = ft;
            }
        }
        stats
    }
}

/// The runs as a markdown table.
fn markdown(runs: &[Run]) -> String {
    let mut md = String::from("## Fuzzing (libFuzzer)\n\n");
    md.push_str("| target | seconds | executions | edges (cov) | features (ft) | corpus | crashes |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            r.target,
            r.seconds,
            r.executions,
            r.edges,
            r.features,
            r.corpus,
            r.crashes.len()
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_stats_are_read() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 26Mb\n\
                   #14818498\tDONE   cov: 110 ft: 282 corp: 155/29Kb lim: 4096 exec/s: 478016 rss: 27Mb\n\
                   Done 14818498 runs in 31 second(s)\nstat::number_of_executed_units: 14818498\n\
                   stat::average_exec_per_sec:     478016\n";
        assert_eq!(Stats::parse(log), Stats { executions: 14_818_498, edges: 110, features: 282 });
        assert_eq!(Stats::parse("nothing"), Stats::default());
    }

    #[test]
    fn the_targets_are_the_harness_binaries() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/libfuzzer/Cargo.toml");
        let names = targets(&manifest).expect("the harness manifest parses");
        assert!(names.contains(&"device_tree".to_owned()) && names.contains(&"bundle".to_owned()), "{names:?}");
        // Every harness binary is a target of the library (and so replayed by `cargo test`).
        let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/targets/src/lib.rs"))
            .expect("the targets' source");
        for name in &names {
            assert!(lib.contains(&format!("(\"{name}\", {name})")), "{name} is not in fuzz/targets' TARGETS");
        }
    }
}
