//! `cargo xtask wasi-testsuite --suite DIR`: the WebAssembly WASI test suite
//! (`WebAssembly/wasi-testsuite`), each test booted on Mica.
//!
//! The suite's built tests live on its `prod/testsuite-base` branch: directories
//! `tests/{rust,c,assemblyscript}/testsuite/wasm32-wasip1`, each with a `manifest.json`, the
//! tests (`NAME.wasm`, WASI preview 1 modules) and their specifications (`NAME.json`, see the
//! suite's `doc/specification.md`). For each test this:
//!
//! 1. reads its specification ([`Spec`]): arguments, environment, the directory to give it as
//!    `/`, the exit code and the start of stdout and stderr it must produce. A test that needs
//!    what Mica does not offer a program (sockets, HTTP, input on stdin) is skipped, with the
//!    reason;
//! 2. turns the module into a component with Wasmtime's preview 1 adapter (the release the
//!    runtime is built from), as `wasm-tools component new --adapt` would;
//! 3. copies the directory, if it has one, onto a fresh volume (`fs-volume`, as `cargo xtask
//!    volume build` does), served by the file system service `fs` over the block driver, and
//!    granted to the test as `dirs = [{ path = "/", ... }]`;
//! 4. boots the system under QEMU (TCG), compiled ahead of time on this host, and reads the
//!    test's output lines and exit status off the console.
//!
//! It prints a line per test, then `N passed, N failed, N skipped`, and writes the results as
//! JSON to `target/mica/wasi-testsuite/results-ARCH.json`. Tests listed in [`KNOWN`] are
//! expected to fail, for the reason given there: they are reported as such, and a known test
//! that passes is reported too (the list is then out of date). The exit status is 0 when no
//! other test failed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use mica_launch::{Accel, GuestArch, OutputMode, QemuCommand, RunOptions};
use serde::Serialize;
use serde_json::Value;

use crate::{kernel, setup, system, volume};

/// What `cargo xtask wasi-testsuite` takes.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// A checkout of WebAssembly/wasi-testsuite's `prod/testsuite-base` branch, or any directory
    /// under it: every `wasm32-wasip1` test directory below it is run.
    #[arg(long)]
    pub suite: PathBuf,
    /// Only the tests whose name (`c/lseek`) contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// How long one test's boot may take, in seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// The guest architecture: x86_64 (`microvm`) or aarch64 (`virt`), under TCG.
    #[arg(long, value_name = "ARCH", default_value_t = crate::run::default_arch())]
    pub arch: GuestArch,
}

/// The name the test component has in its system (its console prefix).
const TEST: &str = "wasi-test";
/// The size of a test's volume.
const VOLUME_SIZE: &str = "8MiB";

/// Tests that cannot pass on Mica today, and why (matched against the test's name). The
/// reasons are written out in docs/wasi-testsuite.md.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "assemblyscript/args_get-multiple-arguments",
        "the preview 1 adapter's state and AssemblyScript's heap overlap: an assertion in the adapter traps",
    ),
    (
        "assemblyscript/environ_get-multiple-variables",
        "the preview 1 adapter's state and AssemblyScript's heap overlap: an assertion in the adapter traps",
    ),
    (
        "assemblyscript/fd_write-to-invalid-fd",
        "the preview 1 adapter answers a write of no bytes with success before it looks at the descriptor",
    ),
    (
        "assemblyscript/proc_exit-failure",
        "the preview 1 adapter turns every non-zero exit code into wasi:cli/exit's error, which is status 1",
    ),
    ("rust/path_link", "the volume (littlefs) has no hard links: link-at is `unsupported`"),
];

/// Which output stream a `read` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One test's specification, as far as Mica runs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The directory (relative to the test's) the program gets as `/`.
    pub root: Option<PathBuf>,
    /// The exit code expected.
    pub exit_code: u8,
    /// What each stream must start with, in order of the specification.
    pub reads: Vec<(Stream, String)>,
}

/// A specification read: the test to run, or why it cannot run on Mica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Spec),
    Skip(String),
}

/// The keys of the suite's first ("legacy") specification format.
const LEGACY_KEYS: [&str; 6] = ["args", "root", "env", "exit_code", "stderr", "stdout"];
/// The keys of its operation-based format.
const OPERATION_KEYS: [&str; 4] = ["operations", "proposals", "world", "servers"];

fn strings(value: &Value, what: &str) -> Result<Vec<String>> {
    let list = value.as_array().with_context(|| format!("`{what}` is not a list"))?;
    list.iter().map(|v| v.as_str().map(str::to_owned).with_context(|| format!("`{what}` holds a non-string"))).collect()
}

fn string_map(value: &Value, what: &str) -> Result<BTreeMap<String, String>> {
    let map = value.as_object().with_context(|| format!("`{what}` is not an object"))?;
    map.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().with_context(|| format!("`{what}.{k}` is not a string"))?.to_owned())))
        .collect()
}

fn exit_code(value: &Value) -> Result<u8> {
    value.as_u64().and_then(|c| u8::try_from(c).ok()).with_context(|| format!("`exit_code` {value} is not 0 to 255"))
}

fn string(value: &Value, what: &str) -> Result<String> {
    value.as_str().map(str::to_owned).with_context(|| format!("`{what}` is not a string"))
}

/// The `run` part of a specification (both formats): `args`, `env` and `root`.
fn read_run(spec: &mut Spec, object: &serde_json::Map<String, Value>) -> Result<()> {
    if let Some(args) = object.get("args") {
        spec.args = strings(args, "args")?;
    }
    if let Some(env) = object.get("env") {
        spec.env = string_map(env, "env")?;
    }
    if let Some(root) = object.get("root").filter(|r| !r.is_null()) {
        spec.root = Some(PathBuf::from(string(root, "root")?));
    }
    Ok(())
}

/// Reads a test's specification (`None`: it has no `.json`, so the defaults apply).
pub fn parse_spec(json: Option<&str>) -> Result<Parsed> {
    let Some(json) = json else { return Ok(Parsed::Run(Spec::default())) };
    let value: Value = serde_json::from_str(json).context("not JSON")?;
    let object = value.as_object().context("not a JSON object")?;
    if let Some(key) =
        object.keys().find(|k| !LEGACY_KEYS.contains(&k.as_str()) && !OPERATION_KEYS.contains(&k.as_str()))
    {
        bail!("unknown key `{key}`");
    }
    let legacy = object.keys().any(|k| LEGACY_KEYS.contains(&k.as_str()));
    let operations = object.keys().any(|k| OPERATION_KEYS.contains(&k.as_str()));
    if legacy && operations {
        bail!("keys of both specification formats");
    }
    let mut spec = Spec::default();
    if !operations {
        read_run(&mut spec, object)?;
        if let Some(code) = object.get("exit_code") {
            spec.exit_code = exit_code(code)?;
        }
        for (key, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
            if let Some(payload) = object.get(key).filter(|p| !p.is_null()) {
                spec.reads.push((stream, string(payload, key)?));
            }
        }
        return Ok(Parsed::Run(spec));
    }
    if let Some(proposals) = object.get("proposals") {
        let proposals = strings(proposals, "proposals")?;
        if !proposals.is_empty() {
            return Ok(Parsed::Skip(format!(
                "needs the proposal(s) {}, which Mica does not offer",
                proposals.join(", ")
            )));
        }
    }
    if let Some(world) = object.get("world") {
        let world = string(world, "world")?;
        if world != "wasi:cli/command" {
            return Ok(Parsed::Skip(format!("runs in the world {world}, not wasi:cli/command")));
        }
    }
    if object.get("servers").is_some_and(|s| s.as_array().is_none_or(|a| !a.is_empty())) {
        return Ok(Parsed::Skip("needs network servers (sockets)".into()));
    }
    let ops = object.get("operations").and_then(Value::as_array).context("`operations` is not a list")?;
    let mut ran = false;
    for (i, op) in ops.iter().enumerate() {
        let op = op.as_object().with_context(|| format!("operation {i} is not an object"))?;
        let kind = op.get("type").and_then(Value::as_str).with_context(|| format!("operation {i} has no `type`"))?;
        match kind {
            "run" if !ran => {
                read_run(&mut spec, op)?;
                ran = true;
            }
            "run" => bail!("operation {i}: a second `run`"),
            "wait" => {
                if let Some(code) = op.get("exit_code") {
                    spec.exit_code = exit_code(code)?;
                }
            }
            "read" => {
                let stream = match op.get("id").and_then(Value::as_str).unwrap_or("stdout") {
                    "stdout" => Stream::Stdout,
                    "stderr" => Stream::Stderr,
                    other => bail!("operation {i}: `read` of stream {other:?}"),
                };
                spec.reads
                    .push((stream, op.get("payload").map(|p| string(p, "payload")).transpose()?.unwrap_or_default()));
            }
            "write" => return Ok(Parsed::Skip("writes to the program's stdin, which is empty on Mica".into())),
            "connect" | "send" | "recv" => return Ok(Parsed::Skip(format!("`{kind}` needs sockets"))),
            "request" => return Ok(Parsed::Skip("`request` needs wasi:http".into())),
            "kill" => return Ok(Parsed::Skip("`kill` needs the program killed from outside".into())),
            other => bail!("operation {i}: unknown type {other:?}"),
        }
    }
    if !ran {
        bail!("no `run` operation");
    }
    Ok(Parsed::Run(spec))
}

/// What a test did, read off the console.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Its stdout, a line each (with `\n`).
    pub stdout: String,
    /// Its stderr, likewise.
    pub stderr: String,
    /// The kernel's line on how it ended (`exited with status 0`, `trapped: ...`).
    pub ended: Option<String>,
}

/// The test component's stdout, stderr and end, from the serial console.
pub fn observe(serial: &str) -> Observed {
    let mut seen = Observed::default();
    let (out, err, end) = (format!("[{TEST}] "), format!("[{TEST}!] "), format!("mica: component {TEST} "));
    for line in serial.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(text) = line.strip_prefix(&out) {
            seen.stdout.push_str(text);
            seen.stdout.push('\n');
        } else if let Some(text) = line.strip_prefix(&err) {
            seen.stderr.push_str(text);
            seen.stderr.push('\n');
        } else if let Some(rest) = line.strip_prefix(&end) {
            let ends = ["exited with status", "trapped", "ran out", "exceeded", "refused"];
            if ends.iter().any(|e| rest.starts_with(e)) {
                // The run time in parentheses at the end is not part of how it ended.
                let rest = rest.rsplit_once(" (").filter(|(_, t)| t.ends_with(" ms)")).map_or(rest, |(r, _)| r);
                seen.ended = Some(rest.to_owned());
            }
        }
    }
    seen
}

/// Why `seen` does not meet `spec` (empty: it does).
pub fn judge(spec: &Spec, seen: &Observed) -> Vec<String> {
    let mut failures = Vec::new();
    let expected = format!("exited with status {}", spec.exit_code);
    match &seen.ended {
        Some(ended) if *ended == expected => {}
        Some(ended) => failures.push(format!("expected it to have {expected}; it {ended}")),
        None => failures.push(format!("expected it to have {expected}; it never ended")),
    }
    // The suite's runner reads as many bytes as the payload has and compares: a prefix.
    let (mut out, mut err) = (seen.stdout.as_str(), seen.stderr.as_str());
    for (stream, payload) in &spec.reads {
        let rest = match stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        match rest.strip_prefix(payload.as_str()) {
            Some(after) => *rest = after,
            None => {
                let got: String = rest.chars().take(payload.chars().count().max(40)).collect();
                failures.push(format!("expected {stream:?} to read {payload:?}; it read {got:?}"));
            }
        }
    }
    failures
}

/// The module as a component: a preview 1 module goes through the adapter; a component stays
/// as it is.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    // The layer field after the version: 0 for a core module, 1 for a component.
    if module.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00]) {
        return Ok(module.to_vec());
    }
    if module.get(0..8) != Some(&[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]) {
        bail!("not a WebAssembly module");
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .context("reading the module")?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .context("the preview 1 adapter")?
        .encode()
        .context("making the component")
}

/// The system manifest that runs the test component `wasm` with `spec`; `disk` holds its `/`.
pub fn manifest(wasm: &Path, spec: &Spec, disk: Option<&Path>) -> Result<String> {
    use toml::{Table, Value as T};
    let text = |s: &str| T::String(s.to_owned());
    let mut doc = Table::new();
    let mut components: Vec<T> = Vec::new();
    let mut test = Table::new();
    test.insert("name".into(), text(TEST));
    test.insert("wasm".into(), text(wasm.to_str().context("the component's path is not UTF-8")?));
    test.insert("grants".into(), T::Array(vec![text("wasi")]));
    test.insert("args".into(), T::Array(spec.args.iter().map(|a| text(a)).collect()));
    test.insert("env".into(), T::Table(spec.env.iter().map(|(k, v)| (k.clone(), text(v))).collect()));
    if let Some(disk) = disk {
        let link = |from: &str, to: &str, name: &str| {
            T::Table(Table::from_iter([
                ("from".into(), text(from)),
                ("to".into(), text(to)),
                ("name".into(), text(name)),
            ]))
        };
        doc.insert("connect".into(), T::Array(vec![link("fs", "blk", "block"), link(TEST, "fs", "files")]));
        let device = Table::from_iter([
            ("kind".to_owned(), text("virtio-blk")),
            ("disk".to_owned(), text(disk.to_str().context("the disk's path is not UTF-8")?)),
        ]);
        doc.insert("device".into(), T::Array(vec![T::Table(device)]));
        let grants = |g: &[&str]| T::Array(g.iter().map(|g| text(g)).collect());
        components.push(T::Table(Table::from_iter([
            ("name".to_owned(), text("blk")),
            ("crate".to_owned(), text("virtio-blk")),
            ("devices".to_owned(), grants(&["virtio-blk.0"])),
            ("grants".to_owned(), grants(&["wasi", "mica:kernel/ipc", "mica:hw"])),
            ("priority".to_owned(), text("high")),
        ])));
        components.push(T::Table(Table::from_iter([
            ("name".to_owned(), text("fs")),
            ("crate".to_owned(), text("fs")),
            ("grants".to_owned(), grants(&["wasi", "mica:kernel/ipc"])),
        ])));
        let dir = Table::from_iter([("path".to_owned(), text("/")), ("connection".to_owned(), text("files"))]);
        test.insert("dirs".into(), T::Array(vec![T::Table(dir)]));
    }
    components.push(T::Table(test));
    doc.insert("component".into(), T::Array(components));
    Ok(toml::to_string(&doc)?)
}

/// One test found in the suite.
#[derive(Debug, Clone)]
struct Case {
    /// `c/lseek`: the language directory and the test's name.
    name: String,
    wasm: PathBuf,
    json: Option<PathBuf>,
}

/// The language of a test directory `tests/LANG/testsuite/wasm32-wasip1` (else its parent's
/// name).
fn group_of(dir: &Path) -> String {
    let parts: Vec<&str> = dir.iter().filter_map(|p| p.to_str()).collect();
    match parts.as_slice() {
        [.., lang, "testsuite", _] => (*lang).to_owned(),
        [.., parent, _] => (*parent).to_owned(),
        _ => "tests".to_owned(),
    }
}

/// Every `wasm32-wasip1` test directory under `dir` (one with a `manifest.json` saying so).
fn find_dirs(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let manifest = dir.join("manifest.json");
    if manifest.is_file() {
        let text = fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", manifest.display()))?;
        if value.get("version").and_then(Value::as_str) == Some("wasm32-wasip1") {
            found.push(dir.to_path_buf());
            return Ok(());
        }
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.extension().is_none_or(|x| x != "dir"))
        .collect();
    entries.sort();
    for entry in entries {
        find_dirs(&entry, found)?;
    }
    Ok(())
}

fn find_cases(suite: &Path) -> Result<Vec<Case>> {
    let mut dirs = Vec::new();
    find_dirs(suite, &mut dirs)?;
    if dirs.is_empty() {
        bail!(
            "no wasm32-wasip1 test directory (one with a manifest.json of version \"wasm32-wasip1\") under {}: give a \
             checkout of WebAssembly/wasi-testsuite's prod/testsuite-base branch",
            suite.display()
        );
    }
    let mut cases = Vec::new();
    for dir in dirs {
        let group = group_of(&dir);
        let mut wasm: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        wasm.sort();
        for path in wasm {
            let stem = path.file_stem().and_then(|s| s.to_str()).context("a test's name is not UTF-8")?;
            let json = path.with_extension("json");
            cases.push(Case {
                name: format!("{group}/{stem}"),
                json: json.is_file().then_some(json),
                wasm: path.clone(),
            });
        }
    }
    Ok(cases)
}

/// How one test went.
#[derive(Debug, Clone, Serialize)]
struct Result1 {
    name: String,
    /// `passed`, `failed`, `known` (failed as listed in [`KNOWN`]), `fixed` (listed, but passed)
    /// or `skipped`.
    result: &'static str,
    /// Why it failed or was skipped.
    reasons: Vec<String>,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    passed: usize,
    failed: usize,
    known: usize,
    fixed: usize,
    skipped: usize,
    tests: Vec<Result1>,
}

/// Runs `cargo xtask wasi-testsuite`.
pub fn run(root: &Path, args: &SuiteArgs) -> Result<ExitCode> {
    let suite =
        args.suite.canonicalize().with_context(|| format!("the suite {} is not there", args.suite.display()))?;
    let mut cases = find_cases(&suite)?;
    if let Some(filter) = &args.filter {
        cases.retain(|c| c.name.contains(filter.as_str()));
    }
    let toolchain = setup::ensure(root)?;
    let kernel = kernel::build(root, &toolchain, args.arch, false)?;
    let kernel = kernel.canonicalize().with_context(|| format!("{} vanished", kernel.display()))?;
    let machine = Machine {
        arch: args.arch,
        qemu: mica_launch::find_qemu_for(args.arch)?,
        kernel,
        profile: crate::aot::profile_for(crate::run::kernel_target(args.arch), "baseline")?,
    };
    let out = crate::toolchain::target_dir(root).join("mica").join("wasi-testsuite");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let start = Instant::now();
        let known = KNOWN.iter().find(|(name, _)| *name == case.name).map(|(_, why)| *why);
        let outcome = run_case(root, &toolchain, &machine, &out, case, args.timeout);
        let outcome = outcome.unwrap_or_else(|e| Checked::Failed(vec![format!("{e:#}")]));
        let (result, reasons) = match (outcome, known) {
            (Checked::Skipped(why), _) => ("skipped", vec![why]),
            (Checked::Passed, Some(why)) => ("fixed", vec![format!("listed as failing ({why}), but passed")]),
            (Checked::Passed, None) => ("passed", Vec::new()),
            (Checked::Failed(failures), Some(why)) => ("known", [vec![why.to_owned()], failures].concat()),
            (Checked::Failed(failures), None) => ("failed", failures),
        };
        let seconds = start.elapsed().as_secs_f64();
        eprintln!("wasi-testsuite: [{}/{}] {}: {result} ({seconds:.1} s)", i + 1, cases.len(), case.name);
        for reason in &reasons {
            eprintln!("    {reason}");
        }
        results.push(Result1 { name: case.name.clone(), result, reasons, seconds });
    }
    let count = |r: &str| results.iter().filter(|t| t.result == r).count();
    let report = Report {
        passed: count("passed"),
        failed: count("failed"),
        known: count("known"),
        fixed: count("fixed"),
        skipped: count("skipped"),
        tests: results,
    };
    let json = out.join(format!("results-{}.json", args.arch));
    fs::write(&json, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", json.display()))?;
    println!(
        "{} passed, {} failed ({} of them known: {} listed in KNOWN), {} skipped; {} listed as failing passed",
        report.passed + report.fixed,
        report.failed + report.known,
        report.known,
        KNOWN.len(),
        report.skipped,
        report.fixed
    );
    println!("results: {}", json.display());
    Ok(if report.failed == 0 && report.fixed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// How one test ran.
enum Checked {
    Passed,
    Failed(Vec<String>),
    Skipped(String),
}

/// What the tests boot on.
struct Machine {
    arch: GuestArch,
    qemu: PathBuf,
    kernel: PathBuf,
    /// The CPU the components are compiled for (and, on x86_64, the one QEMU presents).
    profile: mica_runtime::config::CpuProfile,
}

/// Runs one test; an error is a failure to set it up or boot it.
fn run_case(
    root: &Path,
    toolchain: &crate::toolchain::Toolchain,
    machine: &Machine,
    out: &Path,
    case: &Case,
    timeout: u64,
) -> Result<Checked> {
    let json = case.json.as_ref().map(|p| fs::read_to_string(p).with_context(|| format!("reading {}", p.display())));
    let spec = match parse_spec(json.transpose()?.as_deref()).context("its specification")? {
        Parsed::Skip(why) => return Ok(Checked::Skipped(why)),
        Parsed::Run(spec) => spec,
    };
    let module = fs::read(&case.wasm).with_context(|| format!("reading {}", case.wasm.display()))?;
    let wasm = out.join("test.wasm");
    fs::write(&wasm, componentize(&module).context("making it a component")?)
        .with_context(|| format!("writing {}", wasm.display()))?;
    let disk = match &spec.root {
        None => None,
        Some(dir) => {
            let from = case.wasm.parent().unwrap_or(Path::new(".")).join(dir);
            let image = out.join("test.img");
            let _ = fs::remove_file(&image);
            let command = volume::VolumeCommand::Build { from, image: image.clone(), size: VOLUME_SIZE.into() };
            if volume::run(root, &command)? != ExitCode::SUCCESS {
                bail!("building its volume failed (fs-volume's message is above)");
            }
            Some(image)
        }
    };
    let manifest_path = out.join("wasi-test.toml");
    fs::write(&manifest_path, manifest(&wasm, &spec, disk.as_deref())?)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    let binding = system::Binding::Aot(machine.profile.clone());
    let target = crate::run::kernel_target(machine.arch);
    let bundle = system::prepare_for(root, toolchain, &manifest_path, &binding, None, target)?;
    let devices = mica_launch::devices::of_bundle(&bundle)?;
    mica_launch::devices::prepare_disks(&devices)?;
    let mut command = QemuCommand::new(&machine.qemu, &machine.kernel, Accel::Tcg)
        .arch(machine.arch)
        .initrd(&bundle)
        .memory_mib(mica_launch::devices::memory_mib(&bundle, crate::run::SYSTEM_MEMORY_MIB)?)
        .extra_args(mica_launch::devices::qemu_args(&devices));
    if machine.arch == GuestArch::X86_64 {
        let features: Vec<&str> = machine.profile.features.iter().map(|f| f.name()).collect();
        command = command.cpu(mica_launch::cpu_model(&features));
    }
    let options = RunOptions { timeout: Duration::from_secs(timeout), output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&command, &options)?;
    let mut failures = judge(&spec, &observe(&outcome.serial));
    if failures.is_empty() {
        return Ok(Checked::Passed);
    }
    let log = out.join(format!("{}-{}.log", case.name.replace('/', "-"), machine.arch));
    let _ = fs::write(&log, outcome.transcript());
    failures.push(format!("console: {}", log.display()));
    Ok(Checked::Failed(failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_specification_formats_read() {
        let legacy =
            r#"{ "args": ["a", "b c"], "env": { "X": "1" }, "root": "fs-tests.dir", "exit_code": 33, "stdout": "hi" }"#;
        let Parsed::Run(spec) = parse_spec(Some(legacy)).expect("legacy") else { panic!("skipped") };
        assert_eq!(spec.args, ["a", "b c"]);
        assert_eq!(spec.env.get("X").map(String::as_str), Some("1"));
        assert_eq!(spec.root, Some(PathBuf::from("fs-tests.dir")));
        assert_eq!((spec.exit_code, spec.reads.clone()), (33, vec![(Stream::Stdout, "hi".to_owned())]));

        let ops = r#"{ "operations": [ { "type": "run", "args": ["x"] }, { "type": "read", "id": "stderr", "payload": "oops" },
                      { "type": "wait", "exit_code": 1 } ] }"#;
        let Parsed::Run(spec) = parse_spec(Some(ops)).expect("operations") else { panic!("skipped") };
        assert_eq!((spec.args, spec.exit_code), (vec!["x".to_owned()], 1));
        assert_eq!(spec.reads, [(Stream::Stderr, "oops".to_owned())]);

        assert_eq!(parse_spec(None).expect("none"), Parsed::Run(Spec::default()));
    }

    #[test]
    fn what_mica_cannot_offer_is_skipped_with_the_reason() {
        let sockets = r#"{ "proposals": ["sockets"], "operations": [ { "type": "run" } ] }"#;
        assert!(matches!(parse_spec(Some(sockets)), Ok(Parsed::Skip(why)) if why.contains("sockets")));
        let stdin = r#"{ "operations": [ { "type": "run" }, { "type": "write", "payload": "x" } ] }"#;
        assert!(matches!(parse_spec(Some(stdin)), Ok(Parsed::Skip(why)) if why.contains("stdin")));
    }

    #[test]
    fn bad_specifications_are_named() {
        for (json, expected) in [
            (r#"{ "argz": [] }"#, "unknown key `argz`"),
            (r#"{ "args": [], "operations": [] }"#, "both specification formats"),
            (r#"{ "exit_code": 300 }"#, "`exit_code` 300"),
            (r#"{ "operations": [ { "type": "wait" } ] }"#, "no `run`"),
            (r#"{ "env": { "a": 1 } }"#, "`env.a` is not a string"),
            ("[", "not JSON"),
        ] {
            let e = format!("{:#}", parse_spec(Some(json)).expect_err(json));
            assert!(e.contains(expected), "{json}: {e}");
        }
    }

    #[test]
    fn the_console_gives_the_output_and_the_end() {
        let serial = "mica: booting\n[wasi-test] hello\n[blk] INFO: x\n[wasi-test!] oops\n[wasi-test] world\r\n\
                      mica: component wasi-test exited with status 3 (12 ms)\n";
        let seen = observe(serial);
        assert_eq!(seen.stdout, "hello\nworld\n");
        assert_eq!(seen.stderr, "oops\n");
        assert_eq!(seen.ended.as_deref(), Some("exited with status 3"));

        let spec = Spec { exit_code: 3, reads: vec![(Stream::Stdout, "hello\nwo".into())], ..Spec::default() };
        assert!(judge(&spec, &seen).is_empty());
        let spec = Spec { exit_code: 0, reads: vec![(Stream::Stderr, "fine".into())], ..Spec::default() };
        let failures = judge(&spec, &seen);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("it exited with status 3"), "{failures:?}");
        assert!(failures[1].contains("expected Stderr to read \"fine\""), "{failures:?}");

        let trapped = observe("mica: component wasi-test trapped: unreachable (5 ms)\n");
        assert_eq!(trapped.ended.as_deref(), Some("trapped: unreachable"));
        assert!(judge(&Spec::default(), &Observed::default())[0].contains("never ended"));
    }

    #[test]
    fn a_preview1_module_becomes_a_command_component() {
        // A preview 1 program that prints "hi" through fd_write.
        use wasm_encoder::{
            CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
            ImportSection, Instruction as I, MemArg, MemorySection, MemoryType, Module, TypeSection, ValType,
        };
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32; 4], [ValType::I32]);
        types.ty().function([], []);
        m.section(&types);
        let mut imports = ImportSection::new();
        imports.import("wasi_snapshot_preview1", "fd_write", EntityType::Function(0));
        m.section(&imports);
        let mut funcs = FunctionSection::new();
        funcs.function(1);
        m.section(&funcs);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
        m.section(&memories);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("_start", ExportKind::Func, 1);
        m.section(&exports);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        let at = MemArg { offset: 0, align: 2, memory_index: 0 };
        for i in [I::I32Const(0), I::I32Const(16), I::I32Store(at), I::I32Const(4), I::I32Const(3), I::I32Store(at)] {
            f.instruction(&i);
        }
        for i in [I::I32Const(1), I::I32Const(0), I::I32Const(1), I::I32Const(8), I::Call(0), I::Drop, I::End] {
            f.instruction(&i);
        }
        code.function(&f);
        m.section(&code);
        let mut data = DataSection::new();
        data.active(0, &ConstExpr::i32_const(16), b"hi\n".iter().copied());
        m.section(&data);
        let module = m.finish();
        let component = componentize(&module).expect("componentize");
        assert_eq!(&component[4..8], &[0x0d, 0x00, 0x01, 0x00]);
        // Already a component: unchanged.
        assert_eq!(componentize(&component).expect("again"), component);
        assert!(format!("{:#}", componentize(b"garbage!").expect_err("garbage")).contains("not a WebAssembly module"));
    }

    #[test]
    fn the_manifest_grants_the_volume_as_root() {
        let spec = Spec {
            args: vec!["a \"q\"".into()],
            env: BTreeMap::from([("K".into(), "new\nline".into())]),
            root: Some("d".into()),
            ..Spec::default()
        };
        let text = manifest(Path::new("/t/test.wasm"), &spec, Some(Path::new("/t/test.img"))).expect("manifest");
        let value: toml::Table = toml::from_str(&text).expect("TOML");
        let components = value["component"].as_array().expect("components");
        let test = components.iter().find(|c| c["name"].as_str() == Some(TEST)).expect("test component");
        assert_eq!(test["args"].as_array().expect("args")[0].as_str(), Some("a \"q\""));
        assert_eq!(test["env"]["K"].as_str(), Some("new\nline"));
        assert_eq!(test["dirs"][0]["path"].as_str(), Some("/"));
        assert_eq!(value["device"][0]["disk"].as_str(), Some("/t/test.img"));
        let plain = manifest(Path::new("/t/test.wasm"), &Spec::default(), None).expect("manifest");
        assert!(!plain.contains("dirs") && !plain.contains("virtio-blk"), "{plain}");
    }

    #[test]
    fn tests_are_found_and_named_by_language() {
        let dir = tempfile::tempdir().expect("tempdir");
        let suite = dir.path().join("tests").join("c").join("testsuite").join("wasm32-wasip1");
        fs::create_dir_all(suite.join("fs-tests.dir")).expect("mkdir");
        fs::write(suite.join("manifest.json"), r#"{ "name": "C", "version": "wasm32-wasip1" }"#).expect("manifest");
        fs::write(suite.join("b.wasm"), b"").expect("b");
        fs::write(suite.join("a.wasm"), b"").expect("a");
        fs::write(suite.join("a.json"), "{}").expect("a.json");
        let p3 = dir.path().join("tests").join("rust").join("testsuite").join("wasm32-wasip3");
        fs::create_dir_all(&p3).expect("mkdir");
        fs::write(p3.join("manifest.json"), r#"{ "version": "wasm32-wasip3" }"#).expect("manifest");
        fs::write(p3.join("x.wasm"), b"").expect("x");
        let cases = find_cases(dir.path()).expect("cases");
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c/a", "c/b"]);
        assert!(cases[0].json.is_some() && cases[1].json.is_none());
        let e = format!("{:#}", find_cases(&p3).expect_err("no p1"));
        assert!(e.contains("no wasm32-wasip1 test directory"), "{e}");
    }
}
