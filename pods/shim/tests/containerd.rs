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

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The image the tests run.
const IMAGE: &str = "docker.io/mica/busybox:latest";
/// The containerd namespace of `ctr` runs.
const NAMESPACE: &str = "mica-test";

/// Pod VMs boot one at a time: TCG guests on a small machine starve each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The pod image's directory, or `None` (with the reason printed) when this run has none.
fn image_dir() -> Option<PathBuf> {
    let Some(kernel) = std::env::var_os("MICA_POD_KERNEL") else {
        eprintln!("skipped: MICA_POD_KERNEL is not set (run `cargo xtask test`)");
        return None;
    };
    let dir = Path::new(&kernel).parent().unwrap().to_owned();
    assert!(dir.join("vmlinuz").is_file() && dir.join("initramfs.cpio").is_file(), "no pod image in {}", dir.display());
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: the containerd tests need root (containerd mounts snapshots); CI runs them as root");
        return None;
    }
    Some(dir)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// An OCI image layout (as a tar for `ctr images import`) of one layer: `/bin/busybox` with a
/// link for each of its applets, and the directories a root needs.
fn busybox_image() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox: install busybox-static (`cargo xtask setup` does)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    let header = |path: &str, kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h
    };
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "root", "run", "srv"] {
        let mut h = header(dir, tar::EntryType::Directory, if dir == "tmp" { 0o1777 } else { 0o755 }, 0);
        h.set_cksum();
        layer.append(&h, &[][..]).unwrap();
    }
    let mut h = header("bin/busybox", tar::EntryType::Regular, 0o755, busybox.len() as u64);
    h.set_cksum();
    layer.append(&h, &busybox[..]).unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines().filter(|a| *a != "busybox") {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        layer.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut h = header("etc/passwd", tar::EntryType::Regular, 0o644, passwd.len() as u64);
    h.set_cksum();
    layer.append(&h, &passwd[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len() }],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(manifest.as_bytes()), "size": manifest.len(),
            "annotations": { "io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "latest" },
        }],
    })
    .to_string();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(&path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append(&h, data).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), index.as_bytes());
    for blob in [layer.as_slice(), config.as_bytes(), manifest.as_bytes()] {
        add(format!("blobs/sha256/{}", &sha256(blob)["sha256:".len()..]), blob);
    }
    out.into_inner().unwrap()
}

/// A private containerd with the shim registered, and the busybox image imported.
struct Containerd {
    _turn: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// `ctr events`, one per daemon start.
    watchers: Vec<Child>,
    images: PathBuf,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        let images = image_dir()?;
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        // A short path: the sockets' names must fit in 108 bytes.
        let dir = tempfile::Builder::new().prefix("mica-ctd").tempdir_in("/tmp").unwrap();
        let mut containerd = Containerd { _turn: turn, dir, daemon: None, watchers: Vec::new(), images };
        containerd.launch();
        let archive = containerd.path("busybox.tar");
        fs::write(&archive, busybox_image()).unwrap();
        let import = containerd.ctr(&["images", "import", "--snapshotter", "native", archive.to_str().unwrap()]);
        assert!(import.status.success(), "import failed: {}", String::from_utf8_lossy(&import.stderr));
        Some(containerd)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("containerd.sock")
    }

    /// Starts (or restarts) the daemon and waits until it answers.
    fn launch(&mut self) {
        let d = self.dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  disable_apparmor = true
  disable_cgroup = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.mica]
      runtime_type = "io.containerd.mica.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{d}/cni"
"#
        );
        fs::write(self.path("config.toml"), config).unwrap();
        // `MICA_SHIM_INSTALLED=<prefix>`: the shim `cargo xtask install-shim` put there, which
        // finds its pod image beside itself; otherwise this build's, told where the image is.
        let installed = std::env::var_os("MICA_SHIM_INSTALLED").map(PathBuf::from);
        let shim_dir = match &installed {
            Some(prefix) => prefix.join("bin"),
            None => Path::new(env!("CARGO_BIN_EXE_containerd-shim-mica-v2")).parent().unwrap().to_owned(),
        };
        let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap_or_default());
        let log = fs::OpenOptions::new().create(true).append(true).open(self.path("containerd.log")).unwrap();
        let mut daemon = Command::new("containerd");
        if installed.is_none() {
            daemon.env("MICA_POD_IMAGE_DIR", &self.images);
        }
        let daemon = daemon
            .arg("--config")
            .arg(self.path("config.toml"))
            .env("PATH", path)
            .env("MICA_STATE_DIR", self.path("mica"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (install it: `cargo xtask setup`)");
        self.daemon = Some(daemon);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not answer; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its events, as a client sees them (it ends with the daemon).
        let events = fs::OpenOptions::new().create(true).append(true).open(self.path("events.log")).unwrap();
        let watcher = self.ctr_command(&["events"]).stdin(Stdio::null()).stdout(events).stderr(Stdio::null()).spawn();
        self.watchers.push(watcher.unwrap());
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.socket()).args(["-n", NAMESPACE]).args(args);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).stdin(Stdio::null()).output().expect("ctr")
    }

    /// `ctr run` of the test image with the Mica runtime.
    fn run(&self, flags: &[&str], id: &str, command: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut args = vec!["run", "--snapshotter", "native", "--runtime", "io.containerd.mica.v2"];
        args.extend(flags);
        args.extend([IMAGE, id]);
        args.extend(command);
        let mut cmd = self.ctr_command(&args);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// The pod VMs' hypervisors still running.
    fn hypervisors(&self) -> Vec<String> {
        processes_naming(&self.path("mica"))
    }

    /// The shims still running (the daemon aside).
    fn shims(&self) -> Vec<String> {
        processes_naming(&self.socket()).into_iter().filter(|p| p.contains("containerd-shim-mica-v2")).collect()
    }

    /// Mounts under this containerd's directory.
    fn mounts(&self) -> Vec<String> {
        let needle = self.dir.path().display().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Checks that no VM, shim or mount is left.
    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.hypervisors().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(self.hypervisors(), Vec::<String>::new(), "pod VMs left running");
        while !self.shims().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(self.shims(), Vec::<String>::new(), "shims left running");
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left behind");
        let pods = fs::read_dir(self.path("mica").join("pods")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(pods, 0, "pod directories left behind");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for mut watcher in self.watchers.drain(..) {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        // Whatever a failed test left: its VMs and mounts, so that the directory can go.
        for vm in self.hypervisors().into_iter().chain(self.shims()) {
            if let Some(pid) = vm.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
        }
        for line in self.mounts().iter().rev() {
            if let Some(point) = line.split(' ').nth(4) {
                let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// Processes whose command line names `path`, as `pid: command line`.
fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
    let out = ctd.run(&["--rm"], "second", &["sh", "-c", "wc -c; echo to stderr >&2"], Some(&[b'x'; 100_000]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}\nlog:\n{}", text(&out.stderr), ctd.log());
    assert_eq!(text(&out.stdout).trim(), "100000");
    assert!(text(&out.stderr).contains("to stderr"), "{}", text(&out.stderr));
    // A program the image does not have: the shell's 127, and why.
    let out = ctd.run(&["--rm"], "third", &["/bin/nosuch"], None);
    assert_eq!(out.status.code(), Some(127), "stdout: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("exec of \"/bin/nosuch\" failed"), "{}", text(&out.stderr));
    ctd.assert_nothing_left();
}

impl Containerd {
    /// `ctr task ls` as (status, pid) of task `id`, if it is listed.
    fn task(&self, id: &str) -> Option<(String, u32)> {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout).lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.first() == Some(&id)).then(|| (fields[2].to_owned(), fields[1].parse().unwrap_or(0)))
        })
    }

    /// Waits until task `id` is in `status` (or gone, for `None`).
    fn wait_task(&self, id: &str, status: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.task(id);
            if now.as_ref().map(|t| t.0.as_str()) == status {
                return;
            }
            assert!(Instant::now() < deadline, "task {id} is {now:?}, not {status:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a detached container that runs until killed; its hypervisor's pid.
    fn detached(&self, id: &str) -> u32 {
        let out = self.run(&["-d"], id, &["sh", "-c", "while true; do sleep 1; done"], None);
        assert!(out.status.success(), "{}\nlog:\n{}", text(&out.stderr), self.log());
        self.wait_task(id, Some("RUNNING"));
        self.task(id).unwrap().1
    }

    /// The exit status containerd heard for task `id` (its `/tasks/exit` event, as `ctr events`
    /// prints it), waiting for it.
    fn exit_status(&self, id: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let needle = format!("\"container_id\":\"{id}\"");
        loop {
            let events = fs::read_to_string(self.path("events.log")).unwrap_or_default();
            let exit = events.lines().filter(|l| l.contains("/tasks/exit") && l.contains(&needle)).find_map(|l| {
                let json: serde_json::Value = serde_json::from_str(&l[l.find('{')?..]).ok()?;
                (json["id"] == id).then(|| json["exit_status"].as_u64().unwrap_or(0))
            });
            if let Some(status) = exit {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit event for {id}; events:\n{events}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctr task delete` and `ctr container delete`; the task's exit status.
    fn delete(&self, id: &str) -> u64 {
        let status = self.exit_status(id);
        let deleted = self.ctr(&["task", "delete", id]);
        assert!(deleted.status.success(), "{}", text(&deleted.stderr));
        let removed = self.ctr(&["container", "delete", id]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
        status
    }
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
    let shim = ctd.shims().into_iter().find(|s| s.contains("-id orphan")).expect("the shim of orphan");
    let shim_pid: i32 = shim.split(':').next().unwrap().parse().unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_raw(shim_pid).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ctd.hypervisors().is_empty() {
        assert!(Instant::now() < deadline, "the VM outlived its shim: {:?}\nlog:\n{}", ctd.hypervisors(), ctd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // containerd reports it killed, as runc's shim does for a task it cleaned up.
    assert_eq!(ctd.exit_status("orphan"), 137);
    ctd.wait_task("orphan", None);
    assert!(ctd.ctr(&["container", "delete", "orphan"]).status.success());
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
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use k8s_cri::v1::{
        ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest,
        ExecSyncRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
        PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
        StopPodSandboxRequest, VersionRequest,
    };
    use tonic::transport::{Channel, Endpoint, Uri};

    use super::*;

    async fn connect(socket: PathBuf) -> RuntimeServiceClient<Channel> {
        let channel = Endpoint::try_from("http://[::]")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("connecting to containerd's CRI");
        RuntimeServiceClient::new(channel)
    }

    fn sandbox_config(logs: &Path) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "7a1d-mica".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-pod".into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    // Host networking: no CNI, as the issue's tests ask.
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn kubelets_calls_run_a_pod_through_the_cri() {
        let Some(ctd) = Containerd::start() else { return };
        let archive = ctd.path("busybox.tar");
        let import = Command::new("ctr")
            .arg("--address")
            .arg(ctd.socket())
            .args(["-n", "k8s.io", "images", "import", "--snapshotter", "native"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(import.status.success(), "{}", text(&import.stderr));
        let logs = ctd.path("pod-logs");
        fs::create_dir_all(&logs).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut cri = connect(ctd.socket()).await;
            let version = cri.version(VersionRequest::default()).await.unwrap().into_inner();
            assert_eq!(version.runtime_api_version, "v1");
            let config = sandbox_config(&logs);
            let pod = cri
                .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: "mica".into() })
                .await
                .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\nlog:\n{}", ctd.log()))
                .into_inner()
                .pod_sandbox_id;
            let container = ContainerConfig {
                metadata: Some(ContainerMetadata { name: "hello".into(), attempt: 0 }),
                image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo hello from $(hostname) on $(uname -r); cat /etc/hostname; sleep 3600".into()],
                envs: vec![k8s_cri::v1::KeyValue { key: "ROLE".into(), value: "web".into() }],
                log_path: "hello.log".into(),
                ..Default::default()
            };
            let id = cri
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(container),
                    sandbox_config: Some(config),
                })
                .await
                .unwrap_or_else(|e| panic!("CreateContainer: {e}\nlog:\n{}", ctd.log()))
                .into_inner()
                .container_id;
            cri.start_container(StartContainerRequest { container_id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("StartContainer: {e}\nlog:\n{}", ctd.log()));
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
            let status = cri
                .container_status(ContainerStatusRequest { container_id: id.clone(), verbose: false })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            assert_eq!(status.state, ContainerState::ContainerRunning as i32);
            cri.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() })
                .await
                .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\nlog:\n{}", ctd.log()));
            let status = cri
                .container_status(ContainerStatusRequest { container_id: id.clone(), verbose: false })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            assert_eq!(status.state, ContainerState::ContainerExited as i32);
            assert_eq!(status.exit_code, 137, "killed by StopPodSandbox");
            cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                .await
                .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\nlog:\n{}", ctd.log()));
        });
        ctd.assert_nothing_left();
    }
}
