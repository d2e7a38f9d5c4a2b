//! `cargo xtask bench components`: what components cost inside the guest, in instructions.
//!
//! Boots the system of `components/bench.toml` (release kernel) under `-accel tcg -icount
//! shift=0`, where the guest's counter counts retired instructions (see [`super::clock`]),
//! [`COUNT_RUNS`] times, on each architecture asked for (`--arch`, both by default). The kernel
//! prints one `mica: component-costs name=N load=N instantiate=N run=N` line per component
//! (counter ticks for deserializing the artifact from the in-memory bundle, for linking and
//! instantiating, and for the `wasi:cli/run` call). The host-call cost is the run difference of
//! the same component making [`HOST_CALLS`] calls and none, over [`HOST_CALLS`].

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, GuestArch, KvmProbe, QemuCommand};
use serde::Serialize;

use super::baselines::{self, SIEVE_COMPONENT, Sieve};
use super::boot::boot;
use super::clock::{self, InstructionClock};
use super::report::grouped;
use crate::machine::Machine;
use crate::manifest;

/// Boots counted.
const COUNT_RUNS: usize = 3;
/// The benchmark's system manifest, relative to the workspace root.
const MANIFEST: &str = "components/bench.toml";
/// The kernel's cost line, up to the fields.
const COSTS_PREFIX: &str = "mica: component-costs ";
/// The QEMU options that make the guest's counter count instructions.
const QEMU_OPTIONS: &str = "-accel tcg -icount shift=0";
/// Host calls made by [`CALLS_MANY`].
const HOST_CALLS: u64 = 100_000;
/// The component making no host calls in its loop.
const CALLS_NONE: &str = "calls-0";
/// The same component making [`HOST_CALLS`] of them.
const CALLS_MANY: &str = "calls-100000";
/// One boot's time limit: instruction counting makes TCG slower.
const BOOT_TIMEOUT_SECS: u64 = 600;

/// One `mica: component-costs` line, in guest instructions (its counter ticks, converted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Costs {
    /// The component's name in the manifest.
    pub name: String,
    /// Deserializing its artifact from the in-memory bundle.
    pub load: u64,
    /// Linking its granted interfaces, making its store and instantiating it.
    pub instantiate: u64,
    /// Its `wasi:cli/run` call.
    pub run: u64,
}

/// The host-call round trip, derived from two runs of the same component.
#[derive(Debug, Serialize)]
pub struct HostCall {
    /// The function called.
    pub function: &'static str,
    /// Calls in the measured run.
    pub calls: u64,
    /// `(run(calls-100000) - run(calls-0)) / calls`.
    pub instructions_per_call: f64,
}

/// Everything `bench components` measured, per architecture.
#[derive(Debug, Serialize)]
pub struct Reports {
    /// One report per architecture, in the order asked for.
    pub arches: Vec<Report>,
}

/// Everything `bench components` measured on one architecture.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The guest architecture.
    pub arch: &'static str,
    /// The counter the kernel read and what it is worth in instructions (first boot).
    pub clock: InstructionClock,
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The Mica kernel image that was measured (release build).
    pub kernel: String,
    /// The system manifest booted.
    pub manifest: &'static str,
    /// The QEMU options that make the guest's counter count instructions.
    pub qemu_options: &'static str,
    /// Per component (first boot), in manifest order, with its arguments.
    pub components: Vec<Row>,
    /// One host call.
    pub host_call: HostCall,
    /// Every boot's cost lines.
    pub boots: Vec<Vec<Costs>>,
    /// Whether every boot counted the same.
    pub identical: bool,
    /// The counts that differ between boots, as `component phase (min..max)`.
    pub differing: Vec<String>,
    /// The sieve component against its native and hosted baselines.
    pub sieve: Sieve,
    /// Published figures to compare with (wall clock on hardware, not instructions).
    pub peers: Vec<&'static str>,
}

/// One component's row.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Its costs.
    #[serde(flatten)]
    pub costs: Costs,
    /// Its arguments, space-separated.
    pub args: String,
}

/// Peer figures, quoted in the notes.
const PEERS: &[&str] =
    &["Wasmtime instantiates a WASI hello in ~27 us with its pooling allocator", "a component host call costs ~34 ns"];

/// Runs the components benchmark on every architecture of `arches`.
pub fn run(root: &Path, arches: &[GuestArch]) -> Result<()> {
    let (arches, out_dir) = super::per_arch(arches, |arch| measure(root, arch))?;
    let reports = Reports { arches };
    super::report::publish(&out_dir, "components.json", &reports.markdown(), &reports)
}

/// Measures component costs on `arch`; the report and the output directory.
fn measure(root: &Path, arch: GuestArch) -> Result<(Report, std::path::PathBuf)> {
    let arch_system = super::ArchSystem::prepare(root, arch, MANIFEST)?;
    let system = manifest::load(&root.join(MANIFEST), &root.join("components"))?;
    let (qemu, mica) = (&arch_system.qemu, &arch_system.prepared.kernel);
    let (toolchain, out_dir) = (&arch_system.prepared.toolchain, arch_system.prepared.out_dir.clone());
    let cmd = arch_system.command(mica, Accel::Tcg).cmdline("").initrd(&arch_system.bundle).icount(true);
    let machine = Machine::describe(qemu, &KvmProbe::detect());

    eprint!("bench: component costs on {arch} ({QEMU_OPTIONS}): {COUNT_RUNS} boots of {MANIFEST} ");
    let names: Vec<&str> = system.components.iter().map(|c| c.name.as_str()).collect();
    let mut boots = Vec::new();
    let mut first_clock = None;
    for _ in 0..COUNT_RUNS {
        let outcome = boot(&cmd, Duration::from_secs(BOOT_TIMEOUT_SECS))?;
        let clock =
            clock::of_boot(&outcome.serial).with_context(|| format!("no time line\n{}", outcome.transcript()))?;
        let costs = component_costs(&outcome.serial, &clock);
        let Some(costs) = in_manifest_order(costs, &names) else {
            eprintln!();
            bail!("expected one `{COSTS_PREFIX}` line for each of {names:?}\n{}", outcome.transcript());
        };
        first_clock.get_or_insert(clock);
        boots.push(costs);
        eprint!(".");
    }
    eprintln!();
    let clock = first_clock.context("no boot")?;
    let identical = boots.windows(2).all(|w| w[0] == w[1]);
    let differing = differing(&boots);
    let first = &boots[0];
    let host_call = host_call(first)?;
    let sieve = sieve_baselines(root, toolchain, &system, first, &cmd)?;
    let components = first
        .iter()
        .zip(&system.components)
        .map(|(costs, c)| Row { costs: costs.clone(), args: c.args.join(" ") })
        .collect();
    let report = Report {
        arch: arch.name(),
        clock,
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        kernel: mica.display().to_string(),
        manifest: MANIFEST,
        qemu_options: QEMU_OPTIONS,
        components,
        host_call,
        boots,
        identical,
        differing,
        sieve,
        peers: PEERS.to_vec(),
    };
    Ok((report, out_dir))
}

/// The sieve component's run against the same work natively in a Linux guest and under Wasmtime
/// on this host.
fn sieve_baselines(
    root: &Path,
    toolchain: &crate::toolchain::Toolchain,
    system: &manifest::Manifest,
    costs: &[Costs],
    cmd: &QemuCommand,
) -> Result<Sieve> {
    let component = system
        .components
        .iter()
        .find(|c| c.name == SIEVE_COMPONENT)
        .with_context(|| format!("{MANIFEST} has no {SIEVE_COMPONENT} component"))?;
    let n = baselines::sieve_size(&component.args)?;
    let mica = costs.iter().find(|c| c.name == SIEVE_COMPONENT).map(|c| c.run).context("no sieve costs")?;
    let wasm = match &component.source {
        manifest::Source::Wasm(path) => path.clone(),
        manifest::Source::C(dir) => crate::c_component::build(root, dir)?,
        manifest::Source::Crate(name) => crate::components::build(root, toolchain, std::slice::from_ref(name))?
            .remove(name)
            .with_context(|| format!("building component crate {name} produced no .wasm"))?,
    };
    baselines::sieve(root, toolchain, cmd, n, mica, &wasm)
}

/// The host-call cost from the [`CALLS_NONE`] and [`CALLS_MANY`] runs.
fn host_call(costs: &[Costs]) -> Result<HostCall> {
    let run = |name: &str| {
        costs.iter().find(|c| c.name == name).map(|c| c.run).with_context(|| format!("no component {name}"))
    };
    let (none, many) = (run(CALLS_NONE)?, run(CALLS_MANY)?);
    Ok(HostCall {
        function: "wasi:clocks/monotonic-clock.now",
        calls: HOST_CALLS,
        // Counts are far below 2^52: exact as f64.
        instructions_per_call: (many as f64 - none as f64) / HOST_CALLS as f64,
    })
}

/// The counts that differ between boots (boots list the same components in the same order).
fn differing(boots: &[Vec<Costs>]) -> Vec<String> {
    let Some(first) = boots.first() else { return Vec::new() };
    let mut out = Vec::new();
    for (i, c) in first.iter().enumerate() {
        for phase in ["load", "instantiate", "run"] {
            let get = |c: &Costs| match phase {
                "load" => c.load,
                "instantiate" => c.instantiate,
                _ => c.run,
            };
            let values: Vec<u64> = boots.iter().filter_map(|b| b.get(i)).map(get).collect();
            let (min, max) = (values.iter().min(), values.iter().max());
            if let (Some(&min), Some(&max)) = (min, max)
                && min != max
            {
                out.push(format!("{} {phase} ({}..{})", c.name, grouped(min), grouped(max)));
            }
        }
    }
    out
}

/// `costs` in the order of `names` (components run concurrently, so their lines come in any
/// order); `None` unless there is exactly one line per name.
fn in_manifest_order(mut costs: Vec<Costs>, names: &[&str]) -> Option<Vec<Costs>> {
    if costs.len() != names.len() {
        return None;
    }
    let mut ordered = Vec::with_capacity(names.len());
    for name in names {
        let at = costs.iter().position(|c| c.name == *name)?;
        ordered.push(costs.swap_remove(at));
    }
    Some(ordered)
}

/// Every `mica: component-costs` line of `serial`, in order, its ticks in instructions.
fn component_costs(serial: &str, clock: &InstructionClock) -> Vec<Costs> {
    serial
        .lines()
        .filter_map(parse_costs)
        .map(|c| Costs {
            load: clock.ticks(c.load),
            instantiate: clock.ticks(c.instantiate),
            run: clock.ticks(c.run),
            ..c
        })
        .collect()
}

/// One `mica: component-costs name=N load=N instantiate=N run=N` line (anywhere in `line`).
fn parse_costs(line: &str) -> Option<Costs> {
    let rest = &line[line.find(COSTS_PREFIX)? + COSTS_PREFIX.len()..];
    let (mut name, mut load, mut instantiate, mut run) = (None, None, None, None);
    for field in rest.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "name" if !value.is_empty() => name = Some(value.to_owned()),
            "load" => load = Some(value.parse().ok()?),
            "instantiate" => instantiate = Some(value.parse().ok()?),
            "run" => run = Some(value.parse().ok()?),
            _ => return None,
        }
    }
    Some(Costs { name: name?, load: load?, instantiate: instantiate?, run: run? })
}

/// One figure of a report, as its table cell.
type Figure = fn(&Report) -> String;

/// Phase `phase` of component `name`'s costs in `report`, or `-`.
fn cost(report: &Report, name: &str, phase: fn(&Costs) -> u64) -> String {
    report.components.iter().find(|row| row.costs.name == name).map_or("-".to_owned(), |row| grouped(phase(&row.costs)))
}

impl Reports {
    /// The architectures side by side, then each one's own tables.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        if self.arches.len() > 1 {
            let _ = writeln!(md, "## Component costs per architecture, guest instructions ({QEMU_OPTIONS})\n");
            let header: Vec<&str> = self.arches.iter().map(|r| r.arch).collect();
            let _ = writeln!(md, "| figure | {} |", header.join(" | "));
            let _ = writeln!(md, "|---|{}", "---:|".repeat(header.len()));
            let rows: [(&str, Figure); 6] = [
                ("load `hello`", |r| cost(r, "hello", |c| c.load)),
                ("instantiate `hello`", |r| cost(r, "hello", |c| c.instantiate)),
                ("host call `monotonic-clock.now`", |r| format!("{:.0}", r.host_call.instructions_per_call)),
                ("sieve, Mica component", |r| grouped(r.sieve.mica)),
                ("sieve, native in the Linux guest", |r| {
                    r.sieve.linux_guest.first().map_or("-".to_owned(), |c| grouped(*c))
                }),
                ("sieve, Mica / native Linux", |r| match r.sieve.linux_guest.first() {
                    Some(&linux) if linux > 0 => format!("{:.2}x", r.sieve.mica as f64 / linux as f64),
                    _ => "-".to_owned(),
                }),
            ];
            for (label, figure) in &rows {
                let cells: Vec<String> = self.arches.iter().map(figure).collect();
                let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
            }
            md.push('\n');
        }
        for report in &self.arches {
            md.push_str(&report.markdown());
            md.push('\n');
        }
        md
    }
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        // Writing to a String cannot fail.
        let _ = writeln!(md, "## Component costs on {} in guest instructions ({})\n", self.arch, self.qemu_options);
        let _ = writeln!(md, "Machine: {} ({} CPUs), {}\n", m.cpu_model, m.cpus, m.qemu);
        md.push_str("| component | args | load | instantiate | run |\n");
        md.push_str("|---|---|---:|---:|---:|\n");
        for row in &self.components {
            let c = &row.costs;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                c.name,
                row.args,
                grouped(c.load),
                grouped(c.instantiate),
                grouped(c.run)
            );
        }
        let h = &self.host_call;
        let _ = writeln!(
            md,
            "\nHost call (`{}`), (run({CALLS_MANY}) - run({CALLS_NONE})) / {}: **{:.1} instructions per call**",
            h.function,
            grouped(h.calls),
            h.instructions_per_call
        );
        md.push_str(&self.sieve_markdown());
        if self.identical {
            let _ = writeln!(md, "\n{} boots: identical counts", self.boots.len());
        } else {
            let _ = writeln!(
                md,
                "\n{} boots: identical counts except {} (the table shows the first boot)",
                self.boots.len(),
                self.differing.join(", ")
            );
        }
        md.push_str("\nNotes:\n");
        md.push_str(
            "- These are guest instruction counts under QEMU TCG with `-icount shift=0` (the TSC advances once \
             per instruction; aarch64's generic counter once per 16 at 62.5 MHz, so its counts are exact to 16), not time. load: deserializing the artifact from the in-memory bundle; \
             instantiate: linking the granted interfaces, making the store, instantiating; run: the \
             `wasi:cli/run` call. Each is the component thread's own CPU time (the TSC is accounted per \
             thread at each switch): the components run concurrently and do not count each other; timer \
             interrupts taken while the thread runs are included.\n",
        );
        md.push_str(
            "- hello sleeps 10 ms: it gives its turn to the other components meanwhile; if none is ready the \
             CPU halts, `-icount` moves the TSC on by the time slept, and that time counts as hello's.\n",
        );
        let _ = writeln!(
            md,
            "- Peers (wall clock on hardware, not comparable one-to-one with instruction counts under TCG): {}.",
            self.peers.join("; ")
        );
        md
    }
}

impl Report {
    /// The sieve comparison as a markdown table.
    fn sieve_markdown(&self) -> String {
        let s = &self.sieve;
        let mut md = String::new();
        let linux = s.linux_guest.first().copied().unwrap_or(0);
        let ratio =
            |count: u64| if linux == 0 { "-".to_owned() } else { format!("{:.2}x", count as f64 / linux as f64) };
        let _ = writeln!(
            md,
            "\n### sieve of {} ({} primes): the same Rust code three ways\n",
            grouped(s.n),
            grouped(s.primes)
        );
        md.push_str("| where | counted | instructions | vs native Linux guest |\n|---|---|---:|---:|\n");
        let _ = writeln!(
            md,
            "| Mica: `wasm32-wasip2` component, AOT for the baseline CPU | guest (`wasi:cli/run`) | {} | {} |",
            grouped(s.mica),
            ratio(s.mica)
        );
        let same = s.linux_guest.windows(2).all(|w| w[0] == w[1]);
        let _ = writeln!(
            md,
            "| Linux guest ({}): native static binary as /init | guest (the sieve call) | {} | 1.00x |",
            s.linux_kernel,
            grouped(linux)
        );
        match s.host_wasmtime {
            Some(host) => {
                let _ = writeln!(
                    md,
                    "| Wasmtime on this Linux host: the same `.wasm`, `cargo xtask host-run` | host, callgrind (`wasi:cli/run`) | {} | {} |",
                    grouped(host),
                    ratio(host)
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| Wasmtime on this Linux host | not measured: the host is not {} | - | - |",
                    self.arch
                );
            }
        }
        let _ = writeln!(
            md,
            "\n{} Linux-guest boots: {}",
            s.linux_guest.len(),
            if same {
                "identical counts".to_owned()
            } else {
                s.linux_guest.iter().map(|c| grouped(*c)).collect::<Vec<_>>().join(", ")
            }
        );
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(name: &str, load: u64, instantiate: u64, run: u64) -> Costs {
        Costs { name: name.into(), load, instantiate, run }
    }

    #[test]
    fn cost_lines_are_parsed() {
        let serial = "mica: component hello exited with status 0 (12 ms)\n\
                      mica: component-costs name=hello load=100 instantiate=2000 run=30000\r\n\
                      noise\n\
                      \x1b[0mmica: component-costs name=calls-0 load=1 instantiate=2 run=3\n";
        let tsc = clock::of_boot("time: TSC 1000.000 MHz").unwrap();
        assert_eq!(component_costs(serial, &tsc), vec![costs("hello", 100, 2000, 30_000), costs("calls-0", 1, 2, 3)]);
        let arm = clock::of_boot("time: generic counter 62.500 MHz").unwrap();
        assert_eq!(component_costs(serial, &arm)[1], costs("calls-0", 16, 32, 48));
    }

    #[test]
    fn broken_cost_lines_are_skipped() {
        assert_eq!(parse_costs("mica: component-costs name=a load=1 instantiate=2"), None);
        assert_eq!(parse_costs("mica: component-costs name=a load=x instantiate=2 run=3"), None);
        assert_eq!(parse_costs("mica: component-costs name= load=1 instantiate=2 run=3"), None);
        assert_eq!(parse_costs("mica: component-costs name=a load=1 instantiate=2 run=3 extra=4"), None);
        assert_eq!(parse_costs("mica: component-costs name=a load=1 instantiate=2 run=-3"), None);
        assert_eq!(parse_costs("mica: component a exited with status 0 (1 ms)"), None);
        assert_eq!(parse_costs("mica: component-costs name=a run=3 instantiate=2 load=1"), Some(costs("a", 1, 2, 3)));
    }

    #[test]
    fn cost_lines_are_put_in_manifest_order() {
        let lines = vec![costs("b", 1, 1, 1), costs("a", 2, 2, 2)];
        let ordered = in_manifest_order(lines.clone(), &["a", "b"]).expect("one line each");
        assert_eq!(ordered, vec![costs("a", 2, 2, 2), costs("b", 1, 1, 1)]);
        assert_eq!(in_manifest_order(lines.clone(), &["a", "b", "c"]), None);
        assert_eq!(in_manifest_order(vec![costs("a", 1, 1, 1), costs("a", 1, 1, 1)], &["a", "b"]), None);
    }

    #[test]
    fn host_call_is_the_run_difference_per_call() {
        let lines = [costs(CALLS_NONE, 5, 6, 1_000), costs(CALLS_MANY, 5, 6, 1_000 + 250 * HOST_CALLS + 50_000)];
        let h = host_call(&lines).expect("both present");
        assert!((h.instructions_per_call - 250.5).abs() < 1e-9, "{}", h.instructions_per_call);
        assert!(host_call(&lines[..1]).is_err());
    }

    #[test]
    fn differing_counts_are_named() {
        let a = vec![costs("hello", 1, 2, 3), costs("sieve", 4, 5, 6)];
        let b = vec![costs("hello", 1, 2, 1_000_000), costs("sieve", 4, 5, 6)];
        assert!(differing(&[a.clone(), a.clone()]).is_empty());
        assert_eq!(differing(&[a.clone(), b, a]), vec!["hello run (3..1,000,000)".to_owned()]);
    }

    #[test]
    fn markdown_has_rows_and_peers() {
        let boot = vec![costs("hello", 1_234_567, 89_000, 5), costs(CALLS_NONE, 1, 2, 3)];
        let report = Report {
            arch: "x86_64",
            clock: clock::of_boot("time: TSC 1000.000 MHz").unwrap(),
            machine: Machine::sample("none"),
            unix_time_s: 0,
            kernel: "k".into(),
            manifest: MANIFEST,
            qemu_options: QEMU_OPTIONS,
            components: vec![Row { costs: boot[0].clone(), args: "from the bench".into() }],
            host_call: HostCall { function: "f", calls: HOST_CALLS, instructions_per_call: 812.25 },
            boots: vec![boot.clone(), boot],
            identical: true,
            differing: Vec::new(),
            sieve: Sieve {
                n: 10_000_000,
                primes: 664_579,
                mica: 1_200_000_000,
                linux_kernel: "6.1.0-48-cloud-amd64".into(),
                linux_guest: vec![1_000_000_000, 1_000_000_000],
                host_wasmtime: Some(1_100_000_000),
            },
            peers: PEERS.to_vec(),
        };
        let md = report.markdown();
        assert!(md.contains("| hello | from the bench | 1,234,567 | 89,000 | 5 |"), "{md}");
        assert!(md.contains("812.2 instructions per call") || md.contains("812.3 instructions per call"), "{md}");
        assert!(md.contains("2 boots: identical counts"), "{md}");
        assert!(md.contains("| 1,200,000,000 | 1.20x |"), "{md}");
        assert!(md.contains("(6.1.0-48-cloud-amd64): native static binary as /init | guest (the sieve call) | 1,000,000,000 | 1.00x |"), "{md}");
        assert!(md.contains("| 1,100,000,000 | 1.10x |"), "{md}");
        assert!(md.contains("2 Linux-guest boots: identical counts"), "{md}");
        assert!(md.contains("~27 us") && md.contains("~34 ns"), "{md}");
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["components"][0]["load"], 1_234_567);
        assert_eq!(json["components"][0]["args"], "from the bench");
        assert_eq!(json["host_call"]["calls"], HOST_CALLS);
    }
}
