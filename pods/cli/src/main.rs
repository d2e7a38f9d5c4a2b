//! `mica`: the command line of Mica's legacy pods.
//!
//! A pod is stock Linux in a micro-VM: Debian's kernel, an initramfs whose init ends by starting
//! `mica-agent`, and the agent's virtio-serial channel, through which `mica pod exec` runs
//! commands. See `pods/examples/debian.toml` and `docs/pods.md`.
//!
//! ```text
//! mica pod run SPEC            start a pod; returns once its agent answers
//! mica pod list                running pods
//! mica pod exec NAME -- CMD..  run CMD in the pod: its stdout, stderr and exit status
//! mica pod logs NAME           the pod's serial console
//! mica pod stop NAME           power it off (or stop its hypervisor) and remove it
//! ```
#![forbid(unsafe_code)]

mod agent;
mod backend;
mod qemu;
mod spec;
mod state;
mod vmm;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mica_launch::KvmProbe;

use crate::agent::Agent;
use crate::backend::{AGENT_SOCKET, CONSOLE_LOG, Hypervisor};
use crate::spec::PodSpec;
use crate::state::{PodRecord, State};

/// Mica's command line.
#[derive(Debug, Parser)]
#[command(name = "mica", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// Legacy pods: stock Linux in micro-VMs.
    #[command(subcommand)]
    Pod(PodCommand),
    /// Run mica-vmm (what a `mica-vmm` pod's VMM process is): `mica vmm -- --help`.
    #[command(hide = true)]
    Vmm {
        /// mica-vmm's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum PodCommand {
    /// Start a pod from a spec file; returns once its agent answers.
    Run {
        /// The pod spec (TOML).
        spec: PathBuf,
        /// Seconds to wait for the agent (guest boot) before giving up and removing the pod.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// List running pods.
    List,
    /// Run a command in a pod: its output and exit status are the command's.
    Exec {
        /// The pod.
        name: String,
        /// Seconds to wait for the agent.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a pod's serial console.
    Logs {
        /// The pod.
        name: String,
    },
    /// Power a pod off and remove it.
    Stop {
        /// The pod.
        name: String,
        /// Seconds to wait for a clean power-off before the hypervisor is stopped.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Top::Pod(command) => command,
        Top::Vmm { args } => return mica_vmm::cli::main(std::iter::once("mica-vmm".into()).chain(args)),
    };
    match pod(command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mica: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn pod(command: PodCommand) -> Result<ExitCode> {
    match command {
        PodCommand::Run { spec, timeout } => run(&spec, Duration::from_secs(timeout)),
        PodCommand::List => list(),
        PodCommand::Exec { name, timeout, command } => exec(&name, &command, Duration::from_secs(timeout)),
        PodCommand::Logs { name } => logs(&name),
        PodCommand::Stop { name, timeout } => stop(&name, Duration::from_secs(timeout)),
    }
}

/// A test hook: `MICA_POD_FAULT=<point>` makes `run` die at that point, as a crash would.
fn fault_point(point: &str) {
    if std::env::var("MICA_POD_FAULT").is_ok_and(|wanted| wanted == point) {
        eprintln!("mica: MICA_POD_FAULT={point}: aborting here");
        std::process::abort();
    }
}

fn run(spec_path: &std::path::Path, timeout: Duration) -> Result<ExitCode> {
    let spec = spec::load(spec_path)?;
    let allow_software = std::env::var_os(backend::ALLOW_SOFTWARE_KVM).is_some_and(|v| v == "1");
    let choice =
        backend::choose(&spec, &KvmProbe::detect(), allow_software).with_context(|| format!("pod {}", spec.name))?;
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
        Hypervisor::Qemu(accel) => qemu::launch(&spec, &dir, accel),
        Hypervisor::MicaVmm => vmm::launch(&spec, &dir),
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
    let (kernel, agent_version) = (agent.kernel_release.clone(), agent.agent_version.clone());
    if !spec.command.is_empty() {
        start_main_process(agent, &spec)?;
    }
    println!(
        "pod {} running: {} with {}, Linux {kernel}, mica-agent {}, ready in {:.2} s",
        spec.name,
        hypervisor.backend_name(),
        choice.why,
        agent_version,
        ready.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Starts the spec's `command` detached from the agent session (its own session, output on the
/// console), so it outlives this connection.
fn start_main_process(mut agent: Agent, spec: &PodSpec) -> Result<()> {
    let mut argv = vec![
        "/bin/setsid".to_owned(),
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "exec \"$@\" </dev/null >/dev/console 2>&1 &".to_owned(),
        "main".to_owned(),
    ];
    argv.extend(spec.command.iter().cloned());
    let env: Vec<(String, String)> = spec.env.clone().into_iter().collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let exit = agent.exec(&argv, &env, &mut out, &mut err)?;
    if exit != agent::Exit::Code(0) {
        bail!("starting the pod's command failed ({exit:?}): {}", String::from_utf8_lossy(&err));
    }
    Ok(())
}

/// Stops a pod's hypervisor and removes its directory, reporting (not failing on) errors: used when
/// `run` cannot finish.
fn discard(pid: u32, dir: &std::path::Path) {
    if let Err(e) = state::kill_and_wait(pid, dir, Duration::from_secs(10)) {
        eprintln!("mica: {e:#}");
    }
    if let Err(e) = state::remove_pod_dir(dir) {
        eprintln!("mica: {e:#}");
    }
}

fn list() -> Result<ExitCode> {
    let state = State::open()?;
    let pods = state.reconcile()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    println!("{:<24} {:<8} {:<6} {:>5} {:>8} {:>8} {:>8}", "NAME", "BACKEND", "ACCEL", "VCPUS", "MEMORY", "PID", "AGE");
    for pod in pods {
        println!(
            "{:<24} {:<8} {:<6} {:>5} {:>7}M {:>8} {:>7}s",
            pod.spec.name,
            pod.backend,
            pod.accel,
            pod.spec.vcpus,
            pod.spec.memory_mib,
            pod.pid,
            now.saturating_sub(pod.started_unix)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn exec(name: &str, command: &[String], timeout: Duration) -> Result<ExitCode> {
    let (record, socket) = {
        let state = State::open()?;
        let record = state.find(name)?;
        (record, state.pod_dir(name).join(AGENT_SOCKET))
    };
    let mut agent = Agent::connect(&socket, Instant::now() + timeout).with_context(|| format!("pod {name}"))?;
    let env: Vec<(String, String)> = record.spec.env.into_iter().collect();
    let exit = agent
        .exec(command, &env, &mut std::io::stdout().lock(), &mut std::io::stderr().lock())
        .with_context(|| format!("pod {name}"))?;
    Ok(ExitCode::from(u8::try_from(exit.status()).unwrap_or(255)))
}

fn logs(name: &str) -> Result<ExitCode> {
    let state = State::open()?;
    state.find(name)?;
    let path = state.pod_dir(name).join(CONSOLE_LOG);
    let log = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    std::io::stdout().lock().write_all(&log)?;
    Ok(ExitCode::SUCCESS)
}

fn stop(name: &str, timeout: Duration) -> Result<ExitCode> {
    let state = State::open()?;
    let record = state.find(name)?;
    let dir = state.pod_dir(name);
    let clean =
        Agent::connect(&dir.join(AGENT_SOCKET), Instant::now() + Duration::from_secs(5)).and_then(|mut agent| {
            agent.shutdown()?;
            // The connection stays open until the hypervisor is gone: closing it at once can make QEMU drop
            // the Shutdown frame unread (it reads from the socket only as the guest takes data),
            // and the guest then never powers off.
            let gone = state::wait_gone(record.pid, &dir, timeout);
            drop(agent);
            gone
        });
    let how = match clean {
        Ok(()) => "powered off".to_owned(),
        Err(e) => {
            // What the guest said last: why it did not power off is usually there.
            let console = tail(&dir.join(CONSOLE_LOG), 15);
            eprintln!("mica: pod {name} did not power off cleanly ({e:#}); its console ended with:\n{console}");
            state::signal(record.pid, &dir, rustix::process::Signal::TERM);
            if state::wait_gone(record.pid, &dir, Duration::from_secs(5)).is_err() {
                state::kill_and_wait(record.pid, &dir, Duration::from_secs(10))?;
            }
            format!("stopped (no clean power-off: {e:#})")
        }
    };
    state::remove_pod_dir(&dir)?;
    println!("pod {name} {how} and removed");
    Ok(ExitCode::SUCCESS)
}

/// The last `lines` lines of a text file (empty if unreadable).
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["mica", "pod", "exec", "web"]).is_err(), "a command is required");
        let cli = Cli::try_parse_from(["mica", "pod", "exec", "web", "--", "uname", "-a"]).unwrap();
        let Top::Pod(PodCommand::Exec { name, command, .. }) = cli.command else { panic!("not exec") };
        assert_eq!((name.as_str(), command), ("web", vec!["uname".to_owned(), "-a".to_owned()]));
    }
}
