//! A pod VM: a Mica legacy pod (`mica-cli`) started for a sandbox, with the agent connection
//! the shim keeps, and the record in the bundle by which `delete` finds it after the shim died.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use containerd_shim::protos::cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics};
use mica_cli::spec::{Backend, PodSpec};
use mica_cli::state::{self, PodRecord};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::guest::{self, Guest};

/// Overrides where the pod image (`vmlinuz`, `initramfs.cpio`) is.
pub const IMAGE_DIR_ENV: &str = "MICA_POD_IMAGE_DIR";
/// The annotation that sets a pod VM's memory in MiB.
pub const MEMORY_ANNOTATION: &str = "io.mica.pod.memory-mib";
/// The annotation that sets a pod VM's virtual CPUs.
pub const VCPUS_ANNOTATION: &str = "io.mica.pod.vcpus";
/// A pod VM's memory when no annotation sets it.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// How long a pod VM may take to boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a clean power-off may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The record a container that owns a VM leaves in its bundle.
const BUNDLE_RECORD: &str = "mica-pod.json";

/// A running pod VM.
pub struct Vm {
    /// Its pod name (`mica pod list` shows it).
    pub name: String,
    /// Its pod directory.
    pub dir: PathBuf,
    record: PodRecord,
    /// The agent connection.
    pub guest: Arc<Guest>,
    /// The bind mount sources copied in so far (their copies are shared by the pod's containers).
    pub volumes: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    stopped: Once,
}

impl Vm {
    /// The hypervisor's pid: the task pid containerd gets.
    pub fn pid(&self) -> u32 {
        self.record.pid
    }

    /// Its memory in MiB.
    pub fn memory_mib(&self) -> u32 {
        self.record.spec.memory_mib
    }

    /// Powers the VM off (or stops its hypervisor) and removes the pod; once.
    pub fn stop(&self) {
        self.stopped.call_once(|| {
            let pid = self.record.pid;
            let clean = self.guest.shutdown().is_ok() && state::wait_gone(pid, &self.dir, STOP_TIMEOUT).is_ok();
            if !clean {
                log::warn!("pod {} did not power off; stopping its hypervisor", self.name);
                if let Err(e) = state::kill_and_wait(pid, &self.dir, Duration::from_secs(10)) {
                    log::error!("{e:#}");
                }
            }
            if let Err(e) = state::remove_pod_dir(&self.dir) {
                log::error!("{e:#}");
            }
            log::info!("pod {} stopped", self.name);
        });
    }
}

/// The pod name of sandbox `pod` in containerd namespace `namespace`: `ctd-`, the start of the
/// id made a name, and a hash of both, so that it is unique and a valid pod name.
pub fn pod_name(namespace: &str, pod: &str) -> String {
    let readable: String =
        pod.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(20).collect();
    let hash = Sha256::digest(format!("{namespace}/{pod}").as_bytes());
    let hex: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let readable = readable.trim_matches('-');
    if readable.is_empty() { format!("ctd-{hex}") } else { format!("ctd-{readable}-{hex}") }
}

/// Where the pod image is: `$MICA_POD_IMAGE_DIR`, else `../share/mica/pods` beside this program
/// (where `cargo xtask install-shim` puts it).
pub fn image_dir() -> Result<PathBuf> {
    installed_dir(IMAGE_DIR_ENV, "pods")
}

/// `$env`, else `../share/mica/<name>` beside this program (where `cargo xtask install-shim`
/// puts what the shim boots).
pub fn installed_dir(env: &str, name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("finding this program's path")?;
    let prefix = exe.parent().and_then(Path::parent).context("this program has no parent directory")?;
    Ok(prefix.join("share/mica").join(name))
}

fn annotation(spec: &Spec, key: &str, default: u32) -> Result<u32> {
    match spec.annotations().as_ref().and_then(|a| a.get(key)) {
        None => Ok(default),
        Some(v) => v.parse().with_context(|| format!("annotation {key} = {v:?} is not a number")),
    }
}

/// Boots the VM of sandbox `pod`, sized by the sandbox's annotations.
pub fn boot(namespace: &str, pod: &str, spec: &Spec) -> Result<Arc<Vm>> {
    let images = image_dir()?;
    let (kernel, initramfs) = (images.join("vmlinuz"), images.join("initramfs.cpio"));
    for file in [&kernel, &initramfs] {
        if !file.is_file() {
            bail!(
                "the pod image {} is missing: run `cargo xtask install-shim`, or set {IMAGE_DIR_ENV} to a directory \
                 made by `cargo xtask pod-image`",
                file.display()
            );
        }
    }
    let name = pod_name(namespace, pod);
    let pod_spec = PodSpec {
        name: name.clone(),
        backend: Backend::Auto,
        kernel,
        initramfs,
        cmdline: String::new(),
        vcpus: annotation(spec, VCPUS_ANNOTATION, 1)?,
        memory_mib: annotation(spec, MEMORY_ANNOTATION, DEFAULT_MEMORY_MIB)?,
        command: Vec::new(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
    };
    let started = mica_cli::start(&pod_spec, BOOT_TIMEOUT)?;
    log::info!(
        "pod {name} running: {} with {}, Linux {}, ready in {:.2} s",
        started.record.backend,
        started.why,
        started.agent.kernel_release,
        started.ready.as_secs_f64()
    );
    // On mica-vmm the VMM is this shim's child (QEMU daemonizes): reaped when it exits, so that
    // no zombie outlives the pod.
    reap_if_child(started.record.pid);
    let guest = Guest::new(started.agent.into_stream())?;
    let vm = Arc::new(Vm {
        name,
        dir: started.dir,
        record: started.record,
        guest,
        volumes: std::sync::Mutex::default(),
        stopped: Once::new(),
    });
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        let set = guest::Command::plain(&["hostname", hostname]);
        if let Err(e) = vm.guest.run(&set, None).and_then(|o| o.check("setting the hostname")) {
            vm.stop();
            return Err(e);
        }
    }
    Ok(vm)
}

/// If `pid` is this process's child, a thread waits for it, so that its exit leaves no zombie
/// (the shim runs without containerd-shim's reaper, which would wait for every child).
pub fn reap_if_child(pid: u32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The parent's pid is the second field after the parenthesized command name.
    let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
    let Some(child) = rustix::process::Pid::from_raw(pid as i32) else { return };
    if parent != Some(std::process::id()) {
        return;
    }
    let reaper =
        std::thread::Builder::new().name(format!("reap-{pid}")).spawn(move || {
            match rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty()) {
                Ok(status) => log::info!("the VMM (pid {pid}) exited: {status:?}"),
                Err(e) => log::warn!("waiting for the VMM (pid {pid}): {e}"),
            }
        });
    if let Err(e) = reaper {
        log::warn!("starting the thread that reaps the VMM (pid {pid}): {e}");
    }
}

/// Copies `host` (a directory's contents, or a file as `file`) into directory `dest` in the
/// guest, as a tar stream into the guest's `tar`.
pub fn copy_in(guest: &Guest, host: &Path, dest: &str) -> Result<()> {
    let meta = fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
    let script = format!("mkdir -p {d} && exec tar -x -f - -C {d}", d = crate::container::quote(dest));
    let mut cmd = guest::Command::plain(&["/bin/sh", "-c", &script]);
    cmd.stdin = true;
    let mut feed = |out: &mut dyn Write| -> Result<()> {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        if meta.is_dir() {
            tar.append_dir_all(".", host).with_context(|| format!("archiving {}", host.display()))?;
        } else {
            tar.append_path_with_name(host, "file").with_context(|| format!("archiving {}", host.display()))?;
        }
        tar.finish().context("ending the archive")?;
        Ok(())
    };
    guest.run(&cmd, Some(&mut feed))?.check("unpacking into the pod VM")?;
    Ok(())
}

/// The record in a bundle.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleRecord {
    /// The pod's directory.
    pub dir: PathBuf,
    /// Its hypervisor.
    pub pid: u32,
    /// Whether this container's deletion stops the VM.
    pub owns_vm: bool,
}

/// Writes the bundle's record (atomically): the VM's directory `dir` (its hypervisor's command
/// line names it) and hypervisor `pid`.
pub fn write_bundle_record(bundle: &Path, dir: &Path, pid: u32, owns_vm: bool) -> Result<()> {
    let record = BundleRecord { dir: dir.to_owned(), pid, owns_vm };
    let tmp = bundle.join(format!("{BUNDLE_RECORD}.tmp"));
    fs::write(&tmp, serde_json::to_vec(&record)?).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, bundle.join(BUNDLE_RECORD)).with_context(|| format!("renaming {}", tmp.display()))
}

/// Removes the bundle's record (the container is gone).
pub fn remove_bundle_record(bundle: &Path) {
    let _ = fs::remove_file(bundle.join(BUNDLE_RECORD));
}

/// What `delete` (containerd's cleanup after a shim went away) does for the container in
/// `bundle`: stops its VM if it owns one that still runs. Says whether it stopped one.
pub fn clean_up(bundle: &Path) -> Result<bool> {
    let path = bundle.join(BUNDLE_RECORD);
    let record: BundleRecord = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut stopped = false;
    if record.owns_vm {
        if state::process_of(record.pid, &record.dir) {
            state::kill_and_wait(record.pid, &record.dir, crate::service::CLEANUP_TIMEOUT)?;
            stopped = true;
        }
        state::remove_pod_dir(&record.dir)?;
    }
    remove_bundle_record(bundle);
    Ok(stopped)
}

/// The CPU time and memory of a VM (hypervisor `pid`, `memory_mib` of guest memory), as cgroup
/// v1 metrics (the pod's, for each of its containers).
pub fn metrics(pid: u32, memory_mib: u32) -> Result<Metrics> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("reading the hypervisor's CPU time")?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name; 100 ticks a second.
    let (user, kernel) = (ticks(11) * 10_000_000, ticks(12) * 10_000_000);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("reading the hypervisor's memory")?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let usage = MemoryEntry { usage: rss_kib * 1024, limit: u64::from(memory_mib) << 20, ..Default::default() };
    Ok(Metrics {
        cpu: Some(CPUStat {
            usage: Some(CPUUsage { total: user + kernel, user, kernel, ..Default::default() }).into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat { rss: rss_kib * 1024, usage: Some(usage).into(), ..Default::default() }).into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_vmm_is_reaped_and_leaves_no_zombie() {
        // A child whose handle is dropped, as mica-cli leaves the VMM.
        let pid = std::process::Command::new("sleep").arg("0.2").spawn().unwrap().id();
        reap_if_child(pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let state = || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
        };
        while state().is_some() {
            assert!(std::time::Instant::now() < deadline, "pid {pid} is still there: {:?}", state());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Not a child: left alone (pid 1 is init).
        reap_if_child(1);
    }

    #[test]
    fn pod_names_are_valid_and_unique() {
        let a = pod_name("k8s.io", "0123456789abcdef0123456789abcdef");
        assert!(a.starts_with("ctd-0123456789abcdef0123-"), "{a}");
        mica_cli::spec::check_name(&a).unwrap();
        assert_ne!(a, pod_name("default", "0123456789abcdef0123456789abcdef"));
        let odd = pod_name("default", "My_Container.1");
        assert!(odd.starts_with("ctd-my-container-1-"), "{odd}");
        mica_cli::spec::check_name(&odd).unwrap();
        mica_cli::spec::check_name(&pod_name("default", "__")).unwrap();
    }
}
