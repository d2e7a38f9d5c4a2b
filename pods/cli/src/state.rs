//! Pod state on disk, crash-consistent.
//!
//! Layout: `<state dir>/pods/<name>/` holds everything of one pod (its record `pod.json`, the
//! console log, the agent socket, the hypervisor's pid file, the secrets disk), so removing the directory
//! removes the pod. The state directory is `$MICA_STATE_DIR`, else `/run/mica` for root, else
//! `$XDG_RUNTIME_DIR/mica` or `/tmp/mica-<uid>`.
//!
//! Every command takes an exclusive lock on the state directory and first reconciles it with
//! what is running: a directory without a record is a pod whose `run` died half-way (its
//! hypervisor, QEMU or mica-vmm, if any, is killed and the directory removed); a record whose hypervisor is gone is a pod that
//! stopped by itself (the directory is removed). The record is written last (to a temporary file
//! renamed into place), so the manager may be killed at any point: what it leaves is either a
//! complete pod, found again, or an incomplete one, cleaned up.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::spec::PodSpec;

/// A pod's record, written once it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The spec it was started from.
    pub spec: PodSpec,
    /// The backend that runs it (`qemu`, `mica-vmm`).
    pub backend: String,
    /// The accelerator (`tcg`, `kvm`).
    pub accel: String,
    /// The hypervisor process.
    pub pid: u32,
    /// When it was started, seconds since the Unix epoch.
    pub started_unix: u64,
}

/// The pods directory, locked for the life of this value.
#[derive(Debug)]
pub struct State {
    root: PathBuf,
    _lock: fs::File,
}

/// The record file in a pod directory.
pub const RECORD: &str = "pod.json";
/// The hypervisor's pid file in a pod directory (QEMU's `-pidfile`, mica-vmm's `--pidfile`).
pub const PIDFILE: &str = "hypervisor.pid";

impl State {
    /// Opens (creating) the state directory and takes its lock.
    pub fn open() -> Result<State> {
        let root = state_dir();
        let pods = root.join("pods");
        fs::create_dir_all(&pods).with_context(|| format!("creating the state directory {}", pods.display()))?;
        let lock_path = root.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        Ok(State { root, _lock: lock })
    }

    /// The directory of pod `name`.
    pub fn pod_dir(&self, name: &str) -> PathBuf {
        self.root.join("pods").join(name)
    }

    /// Every running pod, after cleaning up the dead and the half-made ones (each cleanup is
    /// reported on stderr).
    pub fn reconcile(&self) -> Result<Vec<PodRecord>> {
        let pods = self.root.join("pods");
        let mut running = Vec::new();
        let entries = fs::read_dir(&pods).with_context(|| format!("listing {}", pods.display()))?;
        let mut dirs: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            match read_record(&dir) {
                Some(record) if process_of(record.pid, &dir) => running.push(record),
                Some(record) => {
                    eprintln!(
                        "mica: pod {name} stopped by itself (its hypervisor, pid {}, is gone); cleaning up",
                        record.pid
                    );
                    remove_pod_dir(&dir)?;
                }
                None => {
                    let pid = read_pidfile(&dir);
                    match pid {
                        Some(pid) if process_of(pid, &dir) => {
                            eprintln!(
                                "mica: pod {name} was never completely started; stopping its hypervisor (pid {pid})"
                            );
                            kill_and_wait(pid, &dir, Duration::from_secs(10))?;
                        }
                        _ => eprintln!("mica: pod {name} was never completely started; cleaning up"),
                    }
                    remove_pod_dir(&dir)?;
                }
            }
        }
        Ok(running)
    }

    /// The running pod `name`.
    pub fn find(&self, name: &str) -> Result<PodRecord> {
        crate::spec::check_name(name)?;
        self.reconcile()?
            .into_iter()
            .find(|record| record.spec.name == name)
            .with_context(|| format!("no pod named {name:?} is running (see `mica pod list`)"))
    }
}

/// Where state lives.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MICA_STATE_DIR") {
        return PathBuf::from(dir);
    }
    let uid = rustix::process::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/mica");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("mica"),
        None => PathBuf::from(format!("/tmp/mica-{}", uid.as_raw())),
    }
}

/// Writes `record` into `dir` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_record(dir: &Path, record: &PodRecord) -> Result<()> {
    let tmp = dir.join(format!("{RECORD}.tmp"));
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(record)?).with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, dir.join(RECORD)).with_context(|| format!("renaming {} into place", tmp.display()))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn read_record(dir: &Path) -> Option<PodRecord> {
    serde_json::from_slice(&fs::read(dir.join(RECORD)).ok()?).ok()
}

/// The pid in the hypervisor's pid file, if it wrote one.
pub fn read_pidfile(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join(PIDFILE)).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) process whose command line names the pod directory `dir`
/// (so a reused pid is never taken for the pod's hypervisor).
pub fn process_of(pid: u32, dir: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else { return false };
    // The state follows the parenthesized command name, which may itself contain ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else { return false };
    let needle = dir.to_string_lossy();
    cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(needle.as_ref()))
}

/// Sends SIGKILL to `pid` (if it is still the pod's process) and waits until it is gone.
pub fn kill_and_wait(pid: u32, dir: &Path, timeout: Duration) -> Result<()> {
    signal(pid, dir, rustix::process::Signal::KILL);
    wait_gone(pid, dir, timeout)
}

/// Sends `signal` to `pid` if it is the pod's process.
pub fn signal(pid: u32, dir: &Path, signal: rustix::process::Signal) {
    if process_of(pid, dir)
        && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Waits until `pid` is no longer the pod's process.
pub fn wait_gone(pid: u32, dir: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while process_of(pid, dir) {
        if Instant::now() > deadline {
            bail!("the hypervisor (pid {pid}) of {} is still running after {} s", dir.display(), timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Removes a pod directory and everything in it.
pub fn remove_pod_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_recognised_by_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("agent.sock");
        let mut child =
            std::process::Command::new("sh").arg("-c").arg("sleep 30; : \"$0\"").arg(&marker).spawn().unwrap();
        let pid = child.id();
        // Until the child has exec'd, its command line is still this test's.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process_of(pid, dir.path()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(process_of(pid, dir.path()));
        assert!(!process_of(pid, Path::new("/somewhere/else")));
        assert!(!process_of(std::process::id(), dir.path()));
        // Killed, our child is a zombie until reaped: no longer the pod's process.
        kill_and_wait(pid, dir.path(), Duration::from_secs(5)).unwrap();
        child.wait().unwrap();
        assert!(!process_of(pid, dir.path()));
    }

    #[test]
    fn records_round_trip_and_half_made_pods_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let state = State { root: dir.path().to_owned(), _lock: fs::File::open(dir.path()).unwrap() };
        fs::create_dir_all(state.pod_dir("half")).unwrap();
        fs::write(state.pod_dir("half").join(PIDFILE), "999999999\n").unwrap();
        fs::create_dir_all(state.pod_dir("gone")).unwrap();
        let spec: PodSpec = serde_json::from_str(
            r#"{"name":"gone","backend":"qemu","kernel":"/k","initramfs":"/i","cmdline":"","vcpus":1,
                "memory_mib":256,"command":[],"env":{},"secrets":[]}"#,
        )
        .unwrap();
        let record = PodRecord { spec, backend: "qemu".into(), accel: "tcg".into(), pid: 999_999_999, started_unix: 1 };
        write_record(&state.pod_dir("gone"), &record).unwrap();
        assert_eq!(read_record(&state.pod_dir("gone")), Some(record));
        assert!(state.reconcile().unwrap().is_empty());
        assert!(!state.pod_dir("half").exists() && !state.pod_dir("gone").exists());
    }
}
