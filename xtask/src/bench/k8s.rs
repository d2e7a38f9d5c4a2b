//! `cargo xtask bench k8s`: what kubelet waits for, through containerd's CRI, with the Mica shim
//! against Debian's `runc` on the same containerd in the same run.
//!
//! - **start to output**: RunPodSandbox + CreateContainer + StartContainer until the container's
//!   first line is in its CRI log;
//! - **ExecSync**: one `true` run in the running container, round trip;
//! - **`ctr run` to exit**: a wasm component image (`testkit count 1`) on Mica, the first on the
//!   node (an empty module store: the system compiles it) and later ones (loaded from the store),
//!   beside busybox `echo` in a Mica pod VM and on runc.
//!
//! The calls are made by the shim's ignored test `k8s_bench` (`pods/shim/tests/k8s_bench.rs`),
//! which shares the containerd the shim's tests use; this command builds the pod image, runs it,
//! and prints and writes the report. Pod VMs run on the backend `auto` picks: QEMU with TCG on
//! a software KVM (rows labelled), mica-vmm on hardware KVM.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::KvmProbe;
use serde::Serialize;

use super::stats::Summary;
use crate::machine::Machine;
use crate::{components, install_shim, kernel, pod_image, process, setup, test, toolchain};

/// Pods per runtime.
const RUNS: usize = 10;

/// One runtime's figures, or why it could not run.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Who runs the pods.
    pub runtime: String,
    /// RunPodSandbox + CreateContainer + StartContainer to the first output.
    pub start_to_output: Option<Summary>,
    /// One ExecSync round trip.
    pub exec_sync: Option<Summary>,
    /// The pod VM's CPU while its container sleeps, in millicores (Mica only).
    pub idle_cpu_millicores: Option<f64>,
    /// Why it has no figures.
    pub error: Option<String>,
}

/// One kind of `ctr run`, or why it could not run.
#[derive(Debug, Serialize)]
pub struct CtrRow {
    /// What ran where.
    pub kind: String,
    /// `ctr run --rm` until it exited.
    pub run_to_exit: Option<Summary>,
    /// Why it has no figures.
    pub error: Option<String>,
}

/// The `ctr run` rows from the test's samples.
pub fn ctr_rows(samples: &serde_json::Value, accel: &str) -> Vec<CtrRow> {
    [
        ("wasm_first", format!("wasm component, Mica VM on {accel}: first on the node (compiled at boot)")),
        ("wasm_stored", format!("wasm component, Mica VM on {accel}: from the node's module store")),
        ("mica_linux", format!("busybox `echo`, Mica pod VM on {accel}")),
        ("runc", "busybox `echo`, runc".to_owned()),
    ]
    .into_iter()
    .map(|(key, kind)| {
        let figures = &samples["ctr"][key];
        CtrRow {
            kind,
            run_to_exit: summary(&figures["run_to_exit_s"]),
            error: figures["error"].as_str().map(str::to_owned),
        }
    })
    .collect()
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When.
    pub unix_time_s: u64,
    /// Pods per runtime.
    pub runs: usize,
    /// How the pod VMs were accelerated.
    pub accel: String,
    /// The rows.
    pub rows: Vec<Row>,
    /// The `ctr run` rows.
    pub ctr_rows: Vec<CtrRow>,
    /// How it was measured.
    pub method: Vec<&'static str>,
}

fn summary(samples: &serde_json::Value) -> Option<Summary> {
    let seconds: Vec<Duration> =
        samples.as_array()?.iter().filter_map(|s| s.as_f64()).map(Duration::from_secs_f64).collect();
    Summary::of(&seconds)
}

/// The median of a list of numbers.
fn median(samples: &serde_json::Value) -> Option<f64> {
    let mut values: Vec<f64> = samples.as_array()?.iter().filter_map(serde_json::Value::as_f64).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The rows from the test's samples.
pub fn rows(samples: &serde_json::Value, accel: &str) -> Vec<Row> {
    [
        ("runc", "runc (Debian's, namespaces on this host)".to_owned()),
        ("mica", format!("Mica shim, pod VM on {accel}")),
        ("mica_wasm", format!("Mica shim, wasm component image (its code in the node's store), Mica VM on {accel}")),
    ]
    .into_iter()
    .map(|(key, runtime)| {
        let figures = &samples[key];
        Row {
            runtime,
            start_to_output: summary(&figures["start_to_output_s"]),
            exec_sync: summary(&figures["exec_sync_s"]),
            idle_cpu_millicores: median(&figures["idle_cpu_millicores"]),
            error: figures["error"].as_str().map(str::to_owned),
        }
    })
    .collect()
}

impl Report {
    /// The table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "## bench k8s: {} pods per runtime through containerd's CRI ({})\n\n\
             | runtime | start to output: median | p10 | p90 | ExecSync: median | p90 |\n|---|---:|---:|---:|---:|---:|\n",
            self.runs, self.accel
        );
        let ms = |s: f64| format!("{:.1} ms", s * 1e3);
        for row in &self.rows {
            match (&row.start_to_output, &row.exec_sync, &row.error) {
                (Some(start), exec, _) => {
                    // A wasm container takes no exec.
                    let (exec_median, exec_p90) =
                        exec.as_ref().map_or(("no exec".into(), String::new()), |e| (ms(e.median_s), ms(e.p90_s)));
                    out += &format!(
                        "| {} | {} | {} | {} | {} | {} |\n",
                        row.runtime,
                        ms(start.median_s),
                        ms(start.p10_s),
                        ms(start.p90_s),
                        exec_median,
                        exec_p90
                    )
                }
                (_, _, error) => {
                    out += &format!(
                        "| {} | did not run: {} | | | | |\n",
                        row.runtime,
                        error.as_deref().unwrap_or("no samples")
                    )
                }
            }
        }
        for row in &self.rows {
            if let Some(cpu) = row.idle_cpu_millicores {
                out += &format!(
                    "\n{}: an idle pod VM uses {cpu:.0} millicores of CPU (median over its pods)\n",
                    row.runtime
                );
            }
        }
        out += &format!(
            "\n## `ctr run --rm` to exit, {} containers each\n\n| container | median | p10 | p90 |\n|---|---:|---:|---:|\n",
            self.runs
        );
        for row in &self.ctr_rows {
            match (&row.run_to_exit, &row.error) {
                (Some(t), _) => {
                    out += &format!("| {} | {} | {} | {} |\n", row.kind, ms(t.median_s), ms(t.p10_s), ms(t.p90_s))
                }
                (None, error) => {
                    out +=
                        &format!("| {} | did not run: {} | | |\n", row.kind, error.as_deref().unwrap_or("no samples"))
                }
            }
        }
        out
    }
}

/// Runs `cargo xtask bench k8s`.
pub fn run(root: &Path) -> Result<()> {
    let out_dir = root.join("target").join("mica").join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let image = pod_image::build(root)?;
    // The wasm containers' system as `install-shim` installs it: the release kernel.
    let toolchain = setup::ensure(root)?;
    let kernel = kernel::build(root, &toolchain, mica_launch::GuestArch::X86_64, true)?;
    let wasm = install_shim::wasm_image(root, &toolchain, &kernel, true)?;
    let testkit = components::build(root, &toolchain, &["testkit".to_owned()])?;
    let testkit = testkit.get("testkit").context("testkit was not built")?;
    let probe = KvmProbe::detect();
    let machine = Machine::describe(&mica_launch::find_qemu()?, &probe);
    let accel = if probe.hardware() && probe.usable() {
        "hardware KVM (mica-vmm)".to_owned()
    } else {
        format!("QEMU TCG; {}", probe.unusable_reason().unwrap_or_else(|| probe.label()))
    };
    let samples_path = out_dir.join("k8s-samples.json");
    let _ = fs::remove_file(&samples_path);
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    toolchain::clear_cargo_run_env(&mut cmd);
    cmd.current_dir(root)
        .env(test::POD_KERNEL_ENV, &image.kernel)
        .env(test::POD_INITRAMFS_ENV, &image.initramfs)
        .env(test::WASM_IMAGE_ENV, &wasm.dir)
        .env(test::TEST_COMPONENT_ENV, testkit)
        .env("MICA_BENCH_OUT", &samples_path)
        .env("MICA_BENCH_RUNS", RUNS.to_string())
        .args([
            "test",
            "-p",
            "containerd-shim-mica-v2",
            "--test",
            "k8s_bench",
            "--",
            "--ignored",
            "--exact",
            "bench_k8s",
        ]);
    eprintln!("bench: {}", process::shown(&cmd));
    let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    if !status.success() {
        bail!("the k8s benchmark failed ({status})");
    }
    let samples: serde_json::Value = serde_json::from_slice(&fs::read(&samples_path)?)?;
    let report = Report {
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        runs: RUNS,
        rows: rows(&samples, &accel),
        ctr_rows: ctr_rows(&samples, if probe.hardware() && probe.usable() { "KVM" } else { "QEMU TCG" }),
        accel,
        method: vec![
            "one private containerd 1.6 (Debian's), runtimes runc (io.containerd.runc.v2) and mica \
             (io.containerd.mica.v2), native snapshotter, the same busybox image, host-network pods",
            "the client calls the CRI (runtime.v1) over containerd's socket as kubelet does, one pod at a time; \
             start to output ends when the container's first line is in its CRI log file (polled every 2 ms)",
            "ExecSync runs `true` in the running container, 10 per pod",
            "the wasm row: a pod whose one container is the wasm image (testkit `count 1`) until `count 1` is in its \
             log; one unmeasured pod first puts the component's native code in the node's module store",
            "idle CPU: the Mica pod VM's hypervisor's user + system CPU time over 3 s while its container sleeps, \
             after the ExecSyncs (the RuntimeClass overhead's cpu)",
            "ctr run --rm one container at a time, from the command's start to its exit; the wasm component \
             (testkit, `count 1`) runs in a Mica VM booting the release kernel and install-shim's template \
             system; `first on the node` empties the node's module store before each run",
            "wall clock on a shared 2-core build machine: rough figures",
        ],
    };
    super::report::publish(&out_dir, "k8s.json", &report.markdown(), &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_say_why_a_runtime_did_not_run() {
        let samples = serde_json::json!({
            "runc": { "error": "RunPodSandbox: no" },
            "mica": { "start_to_output_s": [3.0, 2.0, 4.0], "exec_sync_s": [0.02, 0.01], "idle_cpu_millicores": [30.0, 50.0, 40.0] },
            "mica_wasm": { "start_to_output_s": [0.5] },
        });
        let rows = rows(&samples, "QEMU TCG");
        let ctr = serde_json::json!({ "ctr": {
            "wasm_first": { "run_to_exit_s": [4.0] },
            "wasm_stored": { "run_to_exit_s": [1.0, 1.2] },
            "runc": { "error": "runc: no" },
        }});
        assert_eq!(rows[0].error.as_deref(), Some("RunPodSandbox: no"));
        assert!(rows[0].start_to_output.is_none());
        assert_eq!(rows[1].start_to_output.as_ref().map(|s| s.median_s), Some(3.0));
        let report = Report {
            machine: Machine::sample("none"),
            unix_time_s: 0,
            runs: 3,
            accel: "QEMU TCG".into(),
            rows,
            ctr_rows: ctr_rows(&ctr, "QEMU TCG"),
            method: vec![],
        };
        let table = report.markdown();
        assert!(
            table.contains("| runc (Debian's, namespaces on this host) | did not run: RunPodSandbox: no |"),
            "{table}"
        );
        assert!(table.contains("| Mica shim, pod VM on QEMU TCG | 3000.0 ms |"), "{table}");
        assert!(
            table.contains("| wasm component, Mica VM on QEMU TCG: from the node's module store | 1100.0 ms |"),
            "{table}"
        );
        assert!(table.contains("| busybox `echo`, Mica pod VM on QEMU TCG | did not run: no samples |"), "{table}");
        assert!(table.contains("| busybox `echo`, runc | did not run: runc: no |"), "{table}");
        assert!(table.contains("pod VM on QEMU TCG: an idle pod VM uses 40 millicores of CPU"), "{table}");
        assert!(table.contains("Mica VM on QEMU TCG | 500.0 ms | 500.0 ms | 500.0 ms | no exec |  |"), "{table}");
    }
}
