//! Mica's legacy pods as a library: the `mica` command (`src/main.rs`) and the containerd shim
//! (`pods/shim`) start, reach and stop pods through it.
//!
//! A pod is stock Linux in a micro-VM: Debian's kernel, an initramfs whose init ends by starting
//! `mica-agent`, and the agent's virtio-serial channel. See `docs/pods.md`.
#![forbid(unsafe_code)]

pub mod agent;
pub mod backend;
pub mod qemu;
pub mod spec;
pub mod state;
pub mod vmm;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use mica_launch::KvmProbe;

use crate::agent::Agent;
use crate::backend::{AGENT_SOCKET, CONSOLE_LOG, Hypervisor};
use crate::spec::PodSpec;
use crate::state::{PodRecord, State};

/// A pod that [`start`] brought up.
#[derive(Debug)]
pub struct Started {
    /// Its agent, connected and ready.
    pub agent: Agent,
    /// Its record, as written in its directory.
    pub record: PodRecord,
    /// Its directory.
    pub dir: PathBuf,
    /// Why its backend was chosen (for people).
    pub why: String,
    /// How long it took until the agent answered.
    pub ready: Duration,
}

/// A test hook: `MICA_POD_FAULT=<point>` makes `run` die at that point, as a crash would.
fn fault_point(point: &str) {
    if std::env::var("MICA_POD_FAULT").is_ok_and(|wanted| wanted == point) {
        eprintln!("mica: MICA_POD_FAULT={point}: aborting here");
        std::process::abort();
    }
}

/// Starts a pod from a checked spec and waits up to `timeout` for its agent. A pod that does
/// not come up is removed, and the error holds the end of its console.
pub fn start(spec: &PodSpec, timeout: Duration) -> Result<Started> {
    let allow_software = std::env::var_os(backend::ALLOW_SOFTWARE_KVM).is_some_and(|v| v == "1");
    let choice =
        backend::choose(spec, &KvmProbe::detect(), allow_software).with_context(|| format!("pod {}", spec.name))?;
    let hypervisor = choice.hypervisor;
    let state = State::open()?;
    state.reconcile()?;
    let dir = state.pod_dir(&spec.name);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("a pod named {:?} is already running (see `mica pod list`)", spec.name)
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    fault_point("after-mkdir");
    let started = Instant::now();
    let launched = match hypervisor {
        Hypervisor::Qemu(accel) => qemu::launch(spec, &dir, accel),
        Hypervisor::MicaVmm => vmm::launch(spec, &dir),
    };
    let pid = match launched {
        Ok(pid) => pid,
        Err(e) => {
            state::remove_pod_dir(&dir)?;
            return Err(e.context(format!("pod {}", spec.name)));
        }
    };
    fault_point("after-launch");
    let record = PodRecord {
        spec: spec.clone(),
        backend: hypervisor.backend_name().to_owned(),
        accel: hypervisor.accel_name().to_owned(),
        pid,
        started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    if let Err(e) = state::write_record(&dir, &record) {
        discard(pid, &dir);
        return Err(e);
    }
    fault_point("after-record");
    // The pod is complete on disk: other commands may see it while the guest boots.
    drop(state);
    let alive = || state::process_of(pid, &dir);
    let agent = match Agent::connect_while(&dir.join(AGENT_SOCKET), started + timeout, &alive) {
        Ok(agent) => agent,
        Err(e) => {
            let console = tail(&dir.join(CONSOLE_LOG), 20);
            let vmm_log = tail(&dir.join(vmm::VMM_LOG), 10);
            discard(pid, &dir);
            let vmm_log = if vmm_log.is_empty() { String::new() } else { format!("\n--- mica-vmm ---\n{vmm_log}") };
            bail!(
                "pod {} did not come up, so it was removed: {e:#}\n--- console (last lines) ---\n{console}{vmm_log}",
                spec.name
            );
        }
    };
    let ready = started.elapsed();
    Ok(Started { agent, record, dir, why: choice.why, ready })
}

/// Stops a pod's hypervisor and removes its directory, reporting (not failing on) errors: used when
/// `start` cannot finish.
fn discard(pid: u32, dir: &Path) {
    if let Err(e) = state::kill_and_wait(pid, dir, Duration::from_secs(10)) {
        eprintln!("mica: {e:#}");
    }
    if let Err(e) = state::remove_pod_dir(dir) {
        eprintln!("mica: {e:#}");
    }
}

/// Powers pod `record` in `dir` off through its agent, waiting up to `timeout`, else stops its
/// hypervisor; then removes its directory. Says how it ended.
pub fn stop(record: &PodRecord, dir: &Path, timeout: Duration) -> Result<String> {
    let name = &record.spec.name;
    let clean =
        Agent::connect(&dir.join(AGENT_SOCKET), Instant::now() + Duration::from_secs(5)).and_then(|mut agent| {
            agent.shutdown()?;
            // The connection stays open until the hypervisor is gone: closing it at once can make QEMU drop
            // the Shutdown frame unread (it reads from the socket only as the guest takes data),
            // and the guest then never powers off.
            let gone = state::wait_gone(record.pid, dir, timeout);
            drop(agent);
            gone
        });
    let how = match clean {
        Ok(()) => "powered off".to_owned(),
        Err(e) => {
            // What the guest said last: why it did not power off is usually there.
            let console = tail(&dir.join(CONSOLE_LOG), 15);
            eprintln!("mica: pod {name} did not power off cleanly ({e:#}); its console ended with:\n{console}");
            state::signal(record.pid, dir, rustix::process::Signal::TERM);
            if state::wait_gone(record.pid, dir, Duration::from_secs(5)).is_err() {
                state::kill_and_wait(record.pid, dir, Duration::from_secs(10))?;
            }
            format!("stopped (no clean power-off: {e:#})")
        }
    };
    state::remove_pod_dir(dir)?;
    Ok(how)
}

/// The last `lines` lines of a text file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
