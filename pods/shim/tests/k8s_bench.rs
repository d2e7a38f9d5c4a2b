//! The measurements of `cargo xtask bench k8s`, made as kubelet makes its calls: through
//! containerd's CRI, for the Mica shim and for `runc` on the same containerd in the same run.
//!
//! Then `ctr run` to exit, one container at a time: a wasm component image on Mica (the first
//! container on a node compiles the component, later ones load it from the node's module
//! store), and a busybox `echo` on Mica's pod VM and on runc.
//!
//! Ignored by `cargo test`: `cargo xtask bench k8s` runs it with `MICA_BENCH_OUT` (where the
//! samples go, as JSON) and `MICA_BENCH_RUNS` (pods per runtime), and prints the table.
#![allow(clippy::unwrap_used, reason = "a benchmark that cannot set up should fail loudly")]

mod support;

use std::fs;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ExecSyncRequest, ImageSpec, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopPodSandboxRequest,
};
use support::cri::{connect, create_and_start, sandbox_config};
use support::{Containerd, IMAGE, WASM_IMAGE};

/// ExecSync calls per pod.
const EXECS: usize = 10;
/// How long an idle pod VM's CPU time is measured (its `RuntimeClass` overhead).
const IDLE: Duration = Duration::from_secs(3);

#[test]
#[ignore = "a benchmark: `cargo xtask bench k8s` runs it"]
fn bench_k8s() {
    let out = std::env::var_os("MICA_BENCH_OUT").expect("MICA_BENCH_OUT: where the samples go");
    let runs: usize = std::env::var("MICA_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let ctd = Containerd::start().expect("the pod image (MICA_POD_KERNEL) and root");
    ctd.import_for_cri();
    let logs = ctd.path("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut report = serde_json::Map::new();
    for handler in ["runc", "mica"] {
        let (mut starts, mut execs, mut idle) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            match runtime.block_on(one_pod(&ctd, &logs, handler, run)) {
                Ok((start, exec, cpu)) => {
                    starts.push(start.as_secs_f64());
                    execs.extend(exec.iter().map(Duration::as_secs_f64));
                    idle.extend(cpu);
                }
                // A runtime that cannot run here is a row that says why, not a failed bench.
                Err(e) => {
                    report.insert(handler.into(), serde_json::json!({ "error": e }));
                    break;
                }
            }
        }
        if !report.contains_key(handler) {
            report.insert(
                handler.into(),
                serde_json::json!({ "start_to_output_s": starts, "exec_sync_s": execs, "idle_cpu_millicores": idle }),
            );
        }
    }
    ctd.assert_nothing_left();
    // A wasm component's pod: its code in the node's store first (one pod unmeasured).
    let component = support::test_component().expect("MICA_TEST_COMPONENT: the wasm component");
    ctd.import_wasm(&component, "k8s.io");
    let mut starts = Vec::new();
    for run in 0..=runs {
        let start = runtime.block_on(one_wasm_pod(&ctd, &logs, run));
        if run > 0 {
            starts.push(start.as_secs_f64());
        }
    }
    report.insert("mica_wasm".into(), serde_json::json!({ "start_to_output_s": starts }));
    ctd.assert_nothing_left();
    report.insert("ctr".into(), ctr_runs(&ctd, runs).into());
    ctd.assert_nothing_left();
    fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
}

/// Containers to exit through `ctr run --rm`: seconds per kind, or why a kind did not run.
fn ctr_runs(ctd: &Containerd, runs: usize) -> serde_json::Map<String, serde_json::Value> {
    let component = support::test_component().expect("MICA_TEST_COMPONENT: the wasm component");
    ctd.import_wasm(&component, support::NAMESPACE);
    let store = ctd.path("module-store.img");
    let mica = "io.containerd.mica.v2";
    let kinds: [(&str, &str, &str, &[&str]); 4] = [
        ("wasm_first", mica, WASM_IMAGE, &["/testkit.wasm", "count", "1"]),
        ("wasm_stored", mica, WASM_IMAGE, &["/testkit.wasm", "count", "1"]),
        ("mica_linux", mica, IMAGE, &["echo", "count 1"]),
        ("runc", "io.containerd.runc.v2", IMAGE, &["echo", "count 1"]),
    ];
    let mut out = serde_json::Map::new();
    for (kind, runtime, image, command) in kinds {
        let mut seconds = Vec::new();
        for run in 0..runs {
            // The first container of a component on a node: an empty store each time.
            if kind == "wasm_first" {
                let _ = fs::remove_file(&store);
            }
            let id = format!("{kind}-{run}");
            let mut args = vec!["run", "--rm", "--snapshotter", "native", "--runtime", runtime, image, id.as_str()];
            args.extend(command);
            let started = Instant::now();
            let run = ctd.ctr(&args);
            let took = started.elapsed();
            if !run.status.success() || support::text(&run.stdout) != "count 1\n" {
                let why = format!("{kind}: {} {}", support::text(&run.stdout), support::text(&run.stderr));
                out.insert(kind.into(), serde_json::json!({ "error": why.trim() }));
                break;
            }
            seconds.push(took.as_secs_f64());
        }
        if !out.contains_key(kind) {
            out.insert(kind.into(), serde_json::json!({ "run_to_exit_s": seconds }));
        }
    }
    out
}

/// One pod on `handler`: RunPodSandbox + CreateContainer + StartContainer until the container's
/// first line is in its log, then [`EXECS`] ExecSyncs; the pod is then removed.
async fn one_pod(
    ctd: &Containerd,
    logs: &std::path::Path,
    handler: &str,
    run: usize,
) -> Result<(Duration, Vec<Duration>, Option<f64>), String> {
    let mut cri = connect(ctd.socket()).await;
    let mut config = sandbox_config(logs);
    // A host-network pod shares the node's UTS namespace under runc: no hostname of its own.
    config.hostname.clear();
    if let Some(m) = config.metadata.as_mut() {
        m.name = format!("bench-{handler}-{run}");
        m.uid = format!("uid-{handler}-{run}");
    }
    let log_path = format!("{handler}-{run}.log");
    let started = Instant::now();
    let pod = cri
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() })
        .await
        .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata { name: "bench".into(), attempt: 0 }),
        image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), "echo ready; while :; do sleep 3600; done".into()],
        log_path: log_path.clone(),
        ..Default::default()
    };
    let id = create_and_start(&mut cri, &pod, container, &config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer, StartContainer on {handler}: {e}\nlog:\n{}", ctd.log()));
    let log_file = logs.join(&log_path);
    while !fs::read_to_string(&log_file).unwrap_or_default().contains(" stdout F ready") {
        assert!(started.elapsed() < Duration::from_secs(120), "no output from {handler}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let start = started.elapsed();
    let mut execs = Vec::new();
    for _ in 0..EXECS {
        let t = Instant::now();
        let exec = cri
            .exec_sync(ExecSyncRequest { container_id: id.clone(), cmd: vec!["true".into()], timeout: 60 })
            .await
            .unwrap_or_else(|e| panic!("ExecSync on {handler}: {e}"))
            .into_inner();
        execs.push(t.elapsed());
        assert_eq!(exec.exit_code, 0);
    }
    // The pod VM's own CPU while its container sleeps: its hypervisor's CPU time over [`IDLE`].
    let idle = match ctd.hypervisors().first().and_then(|p| p.split(':').next()?.parse::<u32>().ok()) {
        Some(pid) if handler == "mica" => {
            let before = cpu_ticks(pid);
            tokio::time::sleep(IDLE).await;
            let used = cpu_ticks(pid).saturating_sub(before);
            // 100 ticks a second; a millicore is a thousandth of a CPU.
            Some(used as f64 * 10.0 / IDLE.as_millis() as f64 * 1000.0)
        }
        _ => None,
    };
    cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    Ok((start, execs, idle))
}

/// One pod of a wasm container on Mica: RunPodSandbox + CreateContainer + StartContainer until
/// the component's first line is in its log; the pod is then removed.
async fn one_wasm_pod(ctd: &Containerd, logs: &std::path::Path, run: usize) -> Duration {
    let mut cri = connect(ctd.socket()).await;
    let mut config = sandbox_config(logs);
    if let Some(m) = config.metadata.as_mut() {
        m.name = format!("bench-wasm-{run}");
        m.uid = format!("uid-wasm-{run}");
    }
    let log_path = format!("wasm-{run}.log");
    let started = Instant::now();
    let pod = support::cri::run_pod(&mut cri, &config, ctd).await;
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata { name: "bench".into(), attempt: 0 }),
        image: Some(ImageSpec { image: WASM_IMAGE.into(), ..Default::default() }),
        args: vec!["count".into(), "1".into()],
        log_path: log_path.clone(),
        ..Default::default()
    };
    create_and_start(&mut cri, &pod, container, &config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer, StartContainer of the wasm image: {e}\nlog:\n{}", ctd.log()));
    let log_file = logs.join(&log_path);
    while !fs::read_to_string(&log_file).unwrap_or_default().contains(" stdout F count 1") {
        assert!(started.elapsed() < Duration::from_secs(120), "no output from the wasm container");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let start = started.elapsed();
    cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    start
}

/// The user and system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name.
    [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum()
}
