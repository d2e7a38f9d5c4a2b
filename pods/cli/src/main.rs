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

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use mica_cli::agent::{self, Agent};
use mica_cli::backend::{AGENT_SOCKET, CONSOLE_LOG};
use mica_cli::spec::{self, PodSpec};
use mica_cli::state::State;

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

fn run(spec_path: &std::path::Path, timeout: Duration) -> Result<ExitCode> {
    let spec = spec::load(spec_path)?;
    let started = mica_cli::start(&spec, timeout)?;
    let (kernel, agent_version) = (started.agent.kernel_release.clone(), started.agent.agent_version.clone());
    if !spec.command.is_empty() {
        start_main_process(started.agent, &spec)?;
    }
    println!(
        "pod {} running: {} with {}, Linux {kernel}, mica-agent {}, ready in {:.2} s",
        spec.name,
        started.record.backend,
        started.why,
        agent_version,
        started.ready.as_secs_f64()
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
    let how = mica_cli::stop(&record, &state.pod_dir(name), timeout)?;
    println!("pod {name} {how} and removed");
    Ok(ExitCode::SUCCESS)
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
