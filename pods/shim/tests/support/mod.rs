//! The containerd the shim's tests and `bench k8s` run against: Debian's `containerd` started
//! with its own root, state and socket (never the system's), the shim on its `PATH`, a busybox
//! image built here and imported with `ctr`, and a CRI client as kubelet calls containerd.
#![allow(dead_code, reason = "each test binary uses part of it")]
#![allow(clippy::unwrap_used, reason = "test helpers: a failed setup step should fail the test loudly")]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The image the tests run.
pub const IMAGE: &str = "docker.io/mica/busybox:latest";
/// The containerd namespace of `ctr` runs.
pub const NAMESPACE: &str = "mica-test";

/// Pod VMs boot one at a time: TCG guests on a small machine starve each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The pod image's directory, or `None` (with the reason printed) when this run has none.
pub fn image_dir() -> Option<PathBuf> {
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
pub fn busybox_image() -> Vec<u8> {
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
    // Its default command waits forever: it is the CRI's sandbox (pause) image too.
    let config = serde_json::json!({
        "Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", "while :; do sleep 3600; done"], "WorkingDir": "/"
    });
    oci_archive(IMAGE, layer, config, ("linux", "amd64"))
}

/// The wasm component image the tests run.
pub const WASM_IMAGE: &str = "docker.io/mica/testkit-wasm:latest";

/// The test component (`testkit`, which `cargo xtask test` builds and passes in
/// `MICA_TEST_COMPONENT`), or `None` with the reason printed.
pub fn test_component() -> Option<Vec<u8>> {
    let Some(path) = std::env::var_os("MICA_TEST_COMPONENT") else {
        eprintln!("skipped: MICA_TEST_COMPONENT is not set (run `cargo xtask test`)");
        return None;
    };
    Some(fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display())))
}

/// A wasm image as runwasi's are laid out: platform `wasi/wasm`, one layer holding the
/// component as `/testkit.wasm`, which the entrypoint names.
pub fn wasm_image(component: &[u8]) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("testkit.wasm").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(component.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    layer.append(&h, component).unwrap();
    let layer = layer.into_inner().unwrap();
    let config = serde_json::json!({ "Entrypoint": ["/testkit.wasm"], "Cmd": ["count", "2"], "WorkingDir": "/" });
    oci_archive(WASM_IMAGE, layer, config, ("wasi", "wasm"))
}

/// An OCI image layout (as a tar for `ctr images import`) of image `name`: one layer and the
/// image config's `config` part.
fn oci_archive(name: &str, layer: Vec<u8>, config: serde_json::Value, platform: (&str, &str)) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": platform.1, "os": platform.0,
        "config": config,
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
            "annotations": { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest" },
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
pub struct Containerd {
    _turn: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    pub daemon: Option<Child>,
    /// `ctr events`, one per daemon start.
    watchers: Vec<Child>,
    images: PathBuf,
}

impl Containerd {
    pub fn start() -> Option<Containerd> {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("containerd.sock")
    }

    /// Starts (or restarts) the daemon and waits until it answers.
    pub fn launch(&mut self) {
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
  # The sandbox's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which root lacks on some hosts
  # (this project's machines): runc then fails. Capped at containerd's own value instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.mica]
      runtime_type = "io.containerd.mica.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
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
        } else {
            // The installed shim finds its wasm system beside itself too.
            daemon.env_remove("MICA_WASM_IMAGE_DIR");
        }
        let daemon = daemon
            .arg("--config")
            .arg(self.path("config.toml"))
            .env("PATH", path)
            .env("MICA_STATE_DIR", self.path("mica"))
            // The node's module store: this containerd's own.
            .env("MICA_MODULE_STORE", self.path("module-store.img"))
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

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.socket()).args(["-n", NAMESPACE]).args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).stdin(Stdio::null()).output().expect("ctr")
    }

    /// `ctr run` of the test image with the Mica runtime.
    pub fn run(&self, flags: &[&str], id: &str, command: &[&str], stdin: Option<&[u8]>) -> Output {
        self.run_image(IMAGE, flags, id, command, stdin)
    }

    /// `ctr run` of `image` with the Mica runtime.
    pub fn run_image(&self, image: &str, flags: &[&str], id: &str, command: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut args = vec!["run", "--snapshotter", "native", "--runtime", "io.containerd.mica.v2"];
        args.extend(flags);
        args.extend([image, id]);
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

    /// Imports the test image into the CRI's namespace (`k8s.io`), where kubelet's images are.
    pub fn import_for_cri(&self) {
        self.import("k8s.io", &self.path("busybox.tar"));
    }

    /// Imports the archive at `path` into containerd namespace `namespace`.
    pub fn import(&self, namespace: &str, path: &Path) {
        let import = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", namespace, "images", "import", "--snapshotter", "native"])
            .arg(path)
            .output()
            .unwrap();
        assert!(import.status.success(), "{}", text(&import.stderr));
    }

    /// Imports the wasm image of `component` into namespace `namespace`.
    pub fn import_wasm(&self, component: &[u8], namespace: &str) {
        let archive = self.path("wasm.tar");
        fs::write(&archive, wasm_image(component)).unwrap();
        self.import(namespace, &archive);
    }

    /// The pod VMs' hypervisors still running.
    pub fn hypervisors(&self) -> Vec<String> {
        processes_naming(&self.path("mica"))
    }

    /// The shims still running (the daemon aside).
    pub fn shims(&self) -> Vec<String> {
        processes_naming(&self.socket()).into_iter().filter(|p| p.contains("containerd-shim-mica-v2")).collect()
    }

    /// Mounts under this containerd's directory.
    pub fn mounts(&self) -> Vec<String> {
        let needle = self.dir.path().display().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Checks that no VM, shim or mount is left.
    pub fn assert_nothing_left(&self) {
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
        for kind in ["pods", "wasm"] {
            let left = fs::read_dir(self.path("mica").join(kind)).map(|d| d.count()).unwrap_or(0);
            assert_eq!(left, 0, "{kind} directories left behind");
        }
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
pub fn processes_naming(path: &Path) -> Vec<String> {
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

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Containerd {
    /// `ctr task ls` as (status, pid) of task `id`, if it is listed.
    pub fn task(&self, id: &str) -> Option<(String, u32)> {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout).lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.first() == Some(&id)).then(|| (fields[2].to_owned(), fields[1].parse().unwrap_or(0)))
        })
    }

    /// Waits until task `id` is in `status` (or gone, for `None`).
    pub fn wait_task(&self, id: &str, status: Option<&str>) {
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
    pub fn detached(&self, id: &str) -> u32 {
        let out = self.run(&["-d"], id, &["sh", "-c", "while true; do sleep 1; done"], None);
        assert!(out.status.success(), "{}\nlog:\n{}", text(&out.stderr), self.log());
        self.wait_task(id, Some("RUNNING"));
        self.task(id).unwrap().1
    }

    /// The exit status containerd heard for task `id` (its `/tasks/exit` event, as `ctr events`
    /// prints it), waiting for it.
    pub fn exit_status(&self, id: &str) -> u64 {
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

    /// Kills the shim of running container `id` (SIGKILL) and checks what follows: containerd's
    /// cleanup (`delete`) stops the VM the shim leaves, and reports the task killed (137), as
    /// runc's shim does for a task it cleaned up; then removes the container.
    pub fn kill_shim_of(&self, id: &str) {
        let shim = self.shims().into_iter().find(|s| s.contains(&format!("-id {id} "))).expect("the shim");
        let shim_pid: i32 = shim.split(':').next().unwrap().parse().unwrap();
        let pid = rustix::process::Pid::from_raw(shim_pid).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.hypervisors().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the VM outlived its shim: {:?}\nlog:\n{}",
                self.hypervisors(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(self.exit_status(id), 137);
        self.wait_task(id, None);
        assert!(self.ctr(&["container", "delete", id]).status.success());
    }

    /// `ctr task delete` and `ctr container delete`; the task's exit status.
    pub fn delete(&self, id: &str) -> u64 {
        let status = self.exit_status(id);
        let deleted = self.ctr(&["task", "delete", id]);
        assert!(deleted.status.success(), "{}", text(&deleted.stderr));
        let removed = self.ctr(&["container", "delete", id]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
        status
    }
}

/// kubelet's side of containerd's CRI (v1).
pub mod cri {
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use k8s_cri::v1::{
        ContainerConfig, ContainerStatus, ContainerStatusRequest, CreateContainerRequest, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
        RunPodSandboxRequest, StartContainerRequest,
    };
    use tonic::transport::{Channel, Endpoint, Uri};

    use super::*;

    pub async fn connect(socket: PathBuf) -> RuntimeServiceClient<Channel> {
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

    pub fn sandbox_config(logs: &Path) -> PodSandboxConfig {
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

    /// RunPodSandbox of `config` with the runtime handler `mica`; the pod's id.
    pub async fn run_pod(
        cri: &mut RuntimeServiceClient<Channel>,
        config: &PodSandboxConfig,
        ctd: &Containerd,
    ) -> String {
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: "mica".into() };
        let answer = cri.run_pod_sandbox(request).await;
        answer.unwrap_or_else(|e| panic!("RunPodSandbox: {e}\nlog:\n{}", ctd.log())).into_inner().pod_sandbox_id
    }

    /// CreateContainer and StartContainer in pod `pod`; the container's id.
    pub async fn create_and_start(
        cri: &mut RuntimeServiceClient<Channel>,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        };
        let id = cri.create_container(request).await?.into_inner().container_id;
        cri.start_container(StartContainerRequest { container_id: id.clone() }).await?;
        Ok(id)
    }

    /// ContainerStatus of container `id`.
    pub async fn status(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
        let request = ContainerStatusRequest { container_id: id.to_owned(), verbose: false };
        cri.container_status(request).await.unwrap().into_inner().status.unwrap()
    }
}
