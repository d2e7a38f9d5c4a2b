//! The shim under a real containerd: Debian's `containerd` started by the test with its own
//! root, state and socket (never the system's), the shim on its `PATH`, a busybox image built
//! here and imported with `ctr`, and containers run through `ctr` in Mica pod VMs (QEMU, TCG on
//! this project's machines).
//!
//! Needs root (containerd mounts snapshots), `containerd` and `ctr`, a static busybox (`cargo
//! xtask setup` installs them) and the pod image, which `cargo xtask test` builds and passes in
//! `MICA_POD_KERNEL`; without the image (a plain `cargo test`) or root the tests say so and pass
//! without booting anything. `MICA_SHIM_INSTALLED=<prefix>` runs them against the shim that
//! `cargo xtask install-shim --prefix <prefix>` installed instead of this build's.
#![allow(clippy::unwrap_used, reason = "test helpers: a failed setup step should fail the test loudly")]

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::{Containerd, IMAGE, WASM_IMAGE, text};

#[test]
fn ctr_runs_a_container_in_a_pod_vm() {
    let Some(ctd) = Containerd::start() else { return };
    // Output, exit status, environment, working directory and user from the OCI spec.
    let script = "echo hello from $(uname -r); echo GREETING=$GREETING; pwd; id -u; ls /bin/busybox; exit 3";
    let out = ctd.run(&["--rm", "--env", "GREETING=hi", "--cwd", "/srv"], "first", &["sh", "-c", script], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stdout: {stdout}\nstderr: {}\nlog:\n{}", text(&out.stderr), ctd.log());
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("hello from ") && lines[0].ends_with("-cloud-amd64"), "the guest's kernel: {stdout}");
    assert_eq!(&lines[1..], ["GREETING=hi", "/srv", "0", "/bin/busybox"], "{stdout}");
    // Standard input reaches the container, and standard error comes back apart.
    // Every byte, in order: containerd sends CloseIO as soon as it has written the last one.
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = ctd.run(&["--rm"], "second", &["sh", "-c", "sha256sum; echo to stderr >&2"], Some(&input));
    assert_eq!(out.status.code(), Some(0), "stderr: {}\nlog:\n{}", text(&out.stderr), ctd.log());
    assert_eq!(text(&out.stdout), format!("{:x}  -\n", <sha2::Sha256 as sha2::Digest>::digest(&input)));
    assert!(text(&out.stderr).contains("to stderr"), "{}", text(&out.stderr));
    // A program the image does not have: the shell's 127, and why.
    let out = ctd.run(&["--rm"], "third", &["/bin/nosuch"], None);
    assert_eq!(out.status.code(), Some(127), "stdout: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("exec of \"/bin/nosuch\" failed"), "{}", text(&out.stderr));
    ctd.assert_nothing_left();
}

#[test]
fn ctr_runs_a_wasm_component_image_in_a_mica_vm() {
    let Some(ctd) = Containerd::start() else { return };
    let Some(component) = support::test_component() else { return };
    ctd.import_wasm(&component, support::NAMESPACE);
    // The image's own entrypoint and command (`/testkit.wasm count 2`): the node's Mica system
    // compiles the component for this CPU and keeps it in the node's module store.
    let out = ctd.run_image(WASM_IMAGE, &["--rm"], "wasm-first", &[], None);
    let context = |out: &std::process::Output| {
        format!(
            "stdout: {}
stderr: {}
log:
{}",
            text(&out.stdout),
            text(&out.stderr),
            ctd.log()
        )
    };
    assert_eq!(out.status.code(), Some(0), "{}", context(&out));
    assert_eq!(text(&out.stdout), "count 1\ncount 2\n", "{}", context(&out));
    assert!(ctd.log().contains("mica: component testkit: compiled in "), "not compiled: {}", context(&out));
    assert!(ctd.log().contains("mica: component testkit: kept in the module store"), "not kept: {}", context(&out));
    // Failure comes back, and this time the native code comes from the store. (WASI 0.2's
    // `exit` says success or failure, no code: `exit(3)` is status 1.)
    let out = ctd.run_image(WASM_IMAGE, &["--rm"], "wasm-second", &["/testkit.wasm", "exit", "3"], None);
    assert_eq!(out.status.code(), Some(1), "{}", context(&out));
    assert_eq!(text(&out.stdout), "exiting with status 3\n");
    let log = ctd.log();
    assert!(log.contains("mica: component testkit: native code from the module store"), "{}", context(&out));
    assert_eq!(log.matches("mica: component testkit: compiled in ").count(), 1, "compiled twice: {log}");
    // Standard error comes apart; a panic traps, reported as an abort (128 + SIGABRT).
    let out = ctd.run_image(WASM_IMAGE, &["--rm"], "wasm-third", &["/testkit.wasm", "panic"], None);
    assert_eq!(out.status.code(), Some(134), "{}", context(&out));
    assert!(text(&out.stderr).contains("testkit: deliberate panic"), "{}", context(&out));
    assert_eq!(text(&out.stdout), "");
    // Its memory limit from the spec; running out is 128 + SIGKILL, as the OOM killer's, and
    // containerd hears a TaskOOM.
    let limit = ["--rm", "--memory-limit", "16777216"];
    let out = ctd.run_image(WASM_IMAGE, &limit, "wasm-oom", &["/testkit.wasm", "oom"], None);
    assert_eq!(out.status.code(), Some(137), "{}", context(&out));
    let held = text(&out.stdout).lines().filter(|l| l.starts_with("holding ")).count();
    assert!((1..16).contains(&held), "16 MiB holds fewer than 16 blocks of 1 MiB: {}", context(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let oom = |events: &str| events.lines().any(|l| l.contains("/tasks/oom") && l.contains("\"wasm-oom\""));
    while !oom(&fs::read_to_string(ctd.path("events.log")).unwrap_or_default()) {
        assert!(Instant::now() < deadline, "no TaskOOM event: {}", fs::read_to_string(ctd.path("events.log")).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A running component: its task pid is its VM's QEMU; a kill ends it with 128 + SIGTERM.
    let started = ctd.run_image(WASM_IMAGE, &["-d"], "wasm-spin", &["/testkit.wasm", "spin"], None);
    assert!(started.status.success(), "{}", context(&started));
    ctd.wait_task("wasm-spin", Some("RUNNING"));
    let pid = ctd.task("wasm-spin").unwrap().1;
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("qemu-system") && cmdline.contains("system.bundle"), "pid {pid}: {cmdline}");
    let exec = ctd.ctr(&["task", "exec", "--exec-id", "e1", "wasm-spin", "sh"]);
    assert!(!exec.status.success(), "an exec into a wasm container ran");
    assert!(text(&exec.stderr).contains("a wasm container runs one component"), "{}", text(&exec.stderr));
    let metrics = ctd.ctr(&["task", "metrics", "wasm-spin"]);
    assert!(text(&metrics.stdout).contains("memory.usage_in_bytes"), "{}", text(&metrics.stdout));
    assert!(ctd.ctr(&["task", "kill", "wasm-spin"]).status.success());
    ctd.wait_task("wasm-spin", Some("STOPPED"));
    assert_eq!(ctd.delete("wasm-spin"), 143);
    // Its shim killed mid-run: containerd's cleanup stops the VM and reports 137.
    let started = ctd.run_image(WASM_IMAGE, &["-d"], "wasm-orphan", &["/testkit.wasm", "spin"], None);
    assert!(started.status.success(), "{}", context(&started));
    ctd.wait_task("wasm-orphan", Some("RUNNING"));
    ctd.kill_shim_of("wasm-orphan");
    // A malformed component (a component's header, then nonsense) under the same name: the
    // system refuses it, and the container is a program that could not start (127), with the
    // reason on stderr.
    let mut broken = component[..8].to_vec();
    broken.extend(b"not a component at all");
    ctd.import_wasm(&broken, support::NAMESPACE);
    let out = ctd.run_image(WASM_IMAGE, &["--rm"], "wasm-broken", &[], None);
    assert_eq!(out.status.code(), Some(127), "{}", context(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the Mica system refused the component: compiling it failed"), "{}", context(&out));
    ctd.assert_nothing_left();
}

#[test]
fn ctr_execs_into_kills_and_measures_a_running_container() {
    let Some(ctd) = Containerd::start() else { return };
    let pid = ctd.detached("svc");
    // The task's pid is its VM's hypervisor.
    assert!(fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap().contains("qemu-system"), "pid {pid}");
    let exec = ctd.ctr(&["task", "exec", "--exec-id", "e1", "svc", "sh", "-c", "echo from exec in $(pwd); exit 5"]);
    assert_eq!(exec.status.code(), Some(5), "{}\nlog:\n{}", text(&exec.stderr), ctd.log());
    assert_eq!(text(&exec.stdout), "from exec in /\n");
    // A second exec sees what the first container process does: the same root.
    let ps = ctd.ctr(&["task", "exec", "--exec-id", "e2", "svc", "sh", "-c", "ps -o args | grep -c 'sleep 1'"]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    let pids = ctd.ctr(&["task", "ps", "svc"]);
    assert!(text(&pids.stdout).contains(&pid.to_string()), "{}", text(&pids.stdout));
    let metrics = ctd.ctr(&["task", "metrics", "svc"]);
    assert!(metrics.status.success(), "{}", text(&metrics.stderr));
    assert!(text(&metrics.stdout).contains("memory.usage_in_bytes"), "{}", text(&metrics.stdout));
    // Deleting a running task is refused; a kill ends it with 128 + SIGTERM.
    assert!(!ctd.ctr(&["task", "delete", "svc"]).status.success(), "a running task was deleted");
    assert!(ctd.ctr(&["task", "kill", "svc"]).status.success());
    ctd.wait_task("svc", Some("STOPPED"));
    assert_eq!(ctd.delete("svc"), 143);
    ctd.assert_nothing_left();
}

#[test]
fn a_dead_vm_a_killed_shim_and_a_restarted_containerd_are_each_reported() {
    let Some(mut ctd) = Containerd::start() else { return };
    // The VM dies under a running container: the task stops with 255.
    let pid = ctd.detached("victim");
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
    ctd.wait_task("victim", Some("STOPPED"));
    assert_eq!(ctd.delete("victim"), 255);
    ctd.assert_nothing_left();

    // The shim is killed: containerd's cleanup (`delete`) stops the VM it leaves.
    ctd.detached("orphan");
    ctd.kill_shim_of("orphan");
    ctd.assert_nothing_left();

    // containerd restarts: it finds the running container again, which still works.
    ctd.detached("survivor");
    if let Some(mut daemon) = ctd.daemon.take() {
        rustix::process::kill_process(rustix::process::Pid::from_child(&daemon), rustix::process::Signal::TERM)
            .unwrap();
        daemon.wait().unwrap();
    }
    ctd.launch();
    ctd.wait_task("survivor", Some("RUNNING"));
    let exec = ctd.ctr(&["task", "exec", "--exec-id", "after", "survivor", "echo", "still here"]);
    assert_eq!(text(&exec.stdout), "still here\n", "{}\nlog:\n{}", text(&exec.stderr), ctd.log());
    assert!(ctd.ctr(&["task", "kill", "-s", "SIGKILL", "survivor"]).status.success());
    ctd.wait_task("survivor", Some("STOPPED"));
    assert_eq!(ctd.delete("survivor"), 137);
    ctd.assert_nothing_left();
}

/// kubelet's calls, over containerd's CRI (v1), for one pod with one container.
mod cri {
    use k8s_cri::v1::{
        ContainerConfig, ContainerMetadata, ContainerState, ExecSyncRequest, ImageSpec, RemovePodSandboxRequest,
        StopPodSandboxRequest, VersionRequest,
    };

    use super::support::cri::{self, connect, create_and_start, sandbox_config};
    use super::*;

    #[test]
    fn a_wasm_component_runs_in_a_pod_through_the_cri() {
        let Some(ctd) = Containerd::start() else { return };
        let Some(component) = support::test_component() else { return };
        ctd.import_for_cri();
        ctd.import_wasm(&component, "k8s.io");
        let logs = ctd.path("pod-logs");
        fs::create_dir_all(&logs).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut cri = connect(ctd.socket()).await;
            let config = sandbox_config(&logs);
            let pod = cri::run_pod(&mut cri, &config, &ctd).await;
            // The image's entrypoint with the pod spec's args, as kubelet passes them.
            let wasm = ContainerConfig {
                metadata: Some(ContainerMetadata { name: "counter".into(), attempt: 0 }),
                image: Some(ImageSpec { image: WASM_IMAGE.into(), ..Default::default() }),
                args: vec!["count".into(), "3".into()],
                log_path: "counter.log".into(),
                ..Default::default()
            };
            let id = create_and_start(&mut cri, &pod, wasm, &config)
                .await
                .unwrap_or_else(|e| panic!("CreateContainer, StartContainer: {e}\nlog:\n{}", ctd.log()));
            // It ends by itself: exited 0, its lines in the CRI's log.
            let deadline = Instant::now() + Duration::from_secs(300);
            let status = loop {
                let status = cri::status(&mut cri, &id).await;
                if status.state == ContainerState::ContainerExited as i32 || Instant::now() > deadline {
                    break status;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(
                (status.state, status.exit_code),
                (ContainerState::ContainerExited as i32, 0),
                "{status:?}\nlog:\n{}",
                ctd.log()
            );
            let log = fs::read_to_string(logs.join("counter.log")).unwrap();
            let lines: Vec<&str> = log.lines().collect();
            assert_eq!(lines.len(), 3, "{log}");
            for (i, line) in lines.iter().enumerate() {
                assert!(line.ends_with(&format!(" stdout F count {}", i + 1)), "{log}");
            }
            // A running one: ExecSync into it is refused, and says why.
            let spinner = ContainerConfig {
                metadata: Some(ContainerMetadata { name: "spinner".into(), attempt: 0 }),
                image: Some(ImageSpec { image: WASM_IMAGE.into(), ..Default::default() }),
                args: vec!["spin".into()],
                log_path: "spinner.log".into(),
                ..Default::default()
            };
            let spinner = create_and_start(&mut cri, &pod, spinner, &config)
                .await
                .unwrap_or_else(|e| panic!("the spinner: {e}\nlog:\n{}", ctd.log()));
            assert_eq!(cri::status(&mut cri, &spinner).await.state, ContainerState::ContainerRunning as i32);
            // A pod of wasm containers has no Linux VM: it boots with a pod's first Linux container.
            let running = ctd.hypervisors();
            assert_eq!(running.len(), 1, "{running:?}");
            assert!(running[0].contains("/wasm/") && !running[0].contains("/pods/"), "{running:?}");
            let exec = cri
                .exec_sync(ExecSyncRequest { container_id: spinner.clone(), cmd: vec!["sh".into()], timeout: 60 })
                .await;
            let err = exec.expect_err("an exec into a wasm container ran");
            assert!(err.message().contains("a wasm container runs one component"), "{err}");
            cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() })
                .await
                .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\nlog:\n{}", ctd.log()));
            let stopped = cri::status(&mut cri, &spinner).await;
            assert_eq!((stopped.state, stopped.exit_code), (ContainerState::ContainerExited as i32, 137));
            cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                .await
                .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\nlog:\n{}", ctd.log()));
        });
        ctd.assert_nothing_left();
    }

    #[test]
    fn kubelets_calls_run_a_pod_through_the_cri() {
        let Some(ctd) = Containerd::start() else { return };
        ctd.import_for_cri();
        let logs = ctd.path("pod-logs");
        fs::create_dir_all(&logs).unwrap();
        // A volume both containers of the pod mount.
        let shared = ctd.path("shared");
        fs::create_dir_all(&shared).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut cri = connect(ctd.socket()).await;
            let version = cri.version(VersionRequest::default()).await.unwrap().into_inner();
            assert_eq!(version.runtime_api_version, "v1");
            let config = sandbox_config(&logs);
            let pod = cri::run_pod(&mut cri, &config, &ctd).await;
            let container = ContainerConfig {
                metadata: Some(ContainerMetadata { name: "hello".into(), attempt: 0 }),
                image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
                command: vec!["sh".into(), "-c".into()],
                args: vec![
                    "echo hello from $(hostname) on $(uname -r); cat /etc/hostname; echo written by hello > /shared/note; \
                     sleep 3600"
                        .into(),
                ],
                mounts: vec![k8s_cri::v1::Mount {
                    container_path: "/shared".into(),
                    host_path: shared.display().to_string(),
                    ..Default::default()
                }],
                envs: vec![k8s_cri::v1::KeyValue { key: "ROLE".into(), value: "web".into() }],
                log_path: "hello.log".into(),
                ..Default::default()
            };
            let id = create_and_start(&mut cri, &pod, container, &config)
                .await
                .unwrap_or_else(|e| panic!("CreateContainer, StartContainer: {e}\nlog:\n{}", ctd.log()));
            // Its output reaches the CRI's log, in the CRI's format.
            let log_file = logs.join("hello.log");
            let deadline = Instant::now() + Duration::from_secs(60);
            let log = loop {
                let log = fs::read_to_string(&log_file).unwrap_or_default();
                if log.lines().count() >= 2 || Instant::now() > deadline {
                    break log;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let lines: Vec<&str> = log.lines().collect();
            assert!(lines.len() >= 2, "the container's log: {log:?}\ncontainerd:\n{}", ctd.log());
            // The pod VM's hostname and kernel (Debian's cloud kernel, not the host's).
            assert!(
                lines[0].contains(" stdout F hello from web-pod on ") && lines[0].ends_with("-cloud-amd64"),
                "{log}"
            );
            assert!(lines[1].ends_with(" stdout F web-pod"), "{log}");
            let exec = cri
                .exec_sync(ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec!["sh".into(), "-c".into(), "echo role=$ROLE; echo oops >&2; exit 3".into()],
                    timeout: 60,
                })
                .await
                .unwrap_or_else(|e| panic!("ExecSync: {e}\nlog:\n{}", ctd.log()))
                .into_inner();
            assert_eq!(
                (text(&exec.stdout).as_str(), text(&exec.stderr).as_str(), exec.exit_code),
                ("role=web\n", "oops\n", 3)
            );
            let status = cri::status(&mut cri, &id).await;
            assert_eq!(status.state, ContainerState::ContainerRunning as i32);
            // A second container in the same pod VM sees what the first wrote to their volume,
            // mounted read-only for it.
            let reader = ContainerConfig {
                metadata: Some(ContainerMetadata { name: "reader".into(), attempt: 0 }),
                image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
                command: vec!["sh".into(), "-c".into(), "while :; do sleep 3600; done".into()],
                mounts: vec![k8s_cri::v1::Mount {
                    container_path: "/data".into(),
                    host_path: shared.display().to_string(),
                    readonly: true,
                    ..Default::default()
                }],
                log_path: "reader.log".into(),
                ..Default::default()
            };
            let reader = create_and_start(&mut cri, &pod, reader, &config)
                .await
                .unwrap_or_else(|e| panic!("the second container: {e}\nlog:\n{}", ctd.log()));
            let read = cri
                .exec_sync(ExecSyncRequest {
                    container_id: reader.clone(),
                    cmd: vec!["sh".into(), "-c".into(), "cat /data/note; touch /data/mine".into()],
                    timeout: 60,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(text(&read.stdout), "written by hello\n", "{}", text(&read.stderr));
            assert_eq!(read.exit_code, 1);
            assert!(text(&read.stderr).contains("Read-only file system"), "{}", text(&read.stderr));
            cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() })
                .await
                .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\nlog:\n{}", ctd.log()));
            let status = cri::status(&mut cri, &id).await;
            assert_eq!(status.state, ContainerState::ContainerExited as i32);
            assert_eq!(status.exit_code, 137, "killed by StopPodSandbox");
            let reader = cri::status(&mut cri, &reader).await;
            assert_eq!((reader.state, reader.exit_code), (ContainerState::ContainerExited as i32, 137));
            cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                .await
                .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\nlog:\n{}", ctd.log()));
        });
        ctd.assert_nothing_left();
    }
}
