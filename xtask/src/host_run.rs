//! `cargo xtask host-run`: runs a component on this Linux host, under the same Wasmtime, engine
//! settings, capability-gated linker and WASI host as inside Mica, with a [`Platform`] made of
//! the host's clocks, randomness and stdout.
//!
//! It is the hosted baseline of `cargo xtask bench components` (the same `.wasm` on Linux,
//! counted with callgrind) and a quick way to try a component without booting. The component is
//! compiled by Cranelift for this host with Mica's baseline CPU profile and, as in a system, with
//! fuel counting only when a fuel budget is given (`--fuel N`), so the machine code is what Mica
//! would run (compiled in-process at each run; nothing is cached or loaded from disk). There is
//! no epoch ticker here, so no CPU time limit: that is for the kernel.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use mica_runtime::config::{self, CpuProfile, Instrumentation};
use mica_runtime::platform::{NoEntropySource, OutputKind, Platform};
use mica_runtime::program::{self, Launch};
use mica_runtime::wasmtime::Engine;
use mica_runtime::wasmtime::component::Component;

/// The target host artifacts are compiled for.
const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Memory budget when the command line gives none.
const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// Arguments of `cargo xtask host-run`.
#[derive(Debug, Args)]
pub struct HostRunArgs {
    /// The component (`.wasm`, built for `wasm32-wasip2`).
    pub wasm: PathBuf,
    /// Its name on the console (default: the file name without `.wasm`).
    #[arg(long)]
    pub name: Option<String>,
    /// Interfaces to grant, as in a manifest's `grants` (repeatable; default: `wasi`).
    #[arg(long = "grant")]
    pub grants: Vec<String>,
    /// Memory budget in bytes.
    #[arg(long, default_value_t = DEFAULT_MEMORY_LIMIT)]
    pub memory_limit: usize,
    /// A CPU budget in Wasmtime fuel units, as a manifest's `fuel` (compiles in fuel counting;
    /// without it the component runs uninstrumented and unlimited).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub fuel: Option<u64>,
    /// The component's arguments.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Runs the component; the exit status is the component's (1 when it did not exit normally).
pub fn run(args: &HostRunArgs) -> Result<ExitCode> {
    let wasm = fs::read(&args.wasm).with_context(|| format!("reading component {}", args.wasm.display()))?;
    let engine = engine(Instrumentation::for_limits(args.fuel.is_some(), false))?;
    // Compiled in this process (Cranelift), never loaded from a file: nothing here trusts
    // machine code it did not make itself.
    let component = Component::new(&engine, &wasm).map_err(|e| anyhow!("{}: {e:#}", args.wasm.display()))?;
    let grants = if args.grants.is_empty() { vec!["wasi".to_owned()] } else { args.grants.clone() };
    let prepared = program::link(&engine, &component, &grants, true)
        .and_then(|linker| program::prepare(&component, &linker))
        .map_err(|e| anyhow!("{}: {e}", args.wasm.display()))?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.wasm.file_stem().map_or_else(|| "component".to_owned(), |stem| stem.to_string_lossy().into_owned())
    });
    let launch = Launch {
        name: name.clone(),
        args: args.args.clone(),
        env: Vec::new(),
        memory_limit: args.memory_limit,
        fuel: args.fuel,
        cpu_time: None,
        dirs: Vec::new(),
        network: None,
    };
    let (outcome, phases) = program::run_timed(&prepared, Arc::new(HostPlatform), Default::default(), &launch, now_ns)
        .map_err(|e| anyhow!("{name}: {e}"))?;
    eprintln!(
        "xtask: component {name} {outcome} (instantiate {:.3} ms, run {:.3} ms)",
        phases.instantiate as f64 / 1e6,
        phases.run as f64 / 1e6
    );
    Ok(match outcome {
        program::Outcome::Exited(code) => ExitCode::from(code),
        _ => ExitCode::FAILURE,
    })
}

/// Mica's engine settings with `instrumentation`, for this host, with the baseline CPU profile.
fn engine(instrumentation: Instrumentation) -> Result<Engine> {
    let mut cfg = config::engine_config(instrumentation);
    cfg.target(HOST_TARGET).map_err(|e| anyhow!("Wasmtime does not know {HOST_TARGET}: {e:#}"))?;
    config::enable_cpu_features(&mut cfg, &CpuProfile::baseline());
    Engine::new(&cfg).map_err(|e| anyhow!("configuring Wasmtime for this host: {e:#}"))
}

/// Nanoseconds since the first call.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The host's services for a hosted component.
#[derive(Debug)]
struct HostPlatform;

impl Platform for HostPlatform {
    fn monotonic_ns(&self) -> u64 {
        now_ns()
    }

    fn monotonic_resolution_ns(&self) -> u64 {
        1
    }

    fn wall_clock(&self) -> (u64, u32) {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        (since.as_secs(), since.subsec_nanos())
    }

    fn sleep_until(&self, deadline_ns: u64) {
        let now = now_ns();
        if deadline_ns > now {
            std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
        }
    }

    /// The OS's generator (`/dev/urandom`): always there on Linux.
    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), NoEntropySource> {
        let filled = fs::File::open("/dev/urandom").and_then(|mut urandom| urandom.read_exact(buf));
        if let Err(error) = filled {
            // No silent fallback: a hosted run without the OS generator is broken.
            panic!("reading /dev/urandom: {error}");
        }
        Ok(())
    }

    fn insecure_random_bytes(&self, buf: &mut [u8]) {
        // The same bytes: there is nothing cheaper worth having on a host.
        let _ = self.random_bytes(buf);
    }

    fn has_entropy_source(&self) -> bool {
        true
    }

    fn console_line(&self, name: &str, kind: OutputKind, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        match kind {
            OutputKind::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "[{name}] {line}");
            }
            OutputKind::Stderr => eprintln!("[{name}!] {line}"),
        }
    }

    fn component_log(&self, name: &str, level: log::Level, message: &str) {
        eprintln!("[{name}] {level:<5} {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel_counting_is_compiled_in_only_for_a_fuel_budget() {
        for instrumentation in [Instrumentation::NONE, Instrumentation::for_limits(true, false)] {
            let engine = engine(instrumentation).expect("engine");
            assert_eq!(Instrumentation::of(&engine), instrumentation);
        }
    }
}
