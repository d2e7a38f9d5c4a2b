//! The baselines of `cargo xtask bench components`: the sieve component's work done natively in a
//! Linux guest under the same QEMU settings, and the same `.wasm` under Wasmtime on the Linux host.
//!
//! - Linux guest: `mica-linux-bench` (the same `mica_workloads::sieve`, compiled natively and
//!   statically for the guest's architecture) is `/init` of a busybox initramfs booted with
//!   Debian's cloud kernel of that architecture under `-accel tcg -icount shift=0`, with the
//!   machine, CPU model and memory of the Mica boots; it reads the instruction clock (the TSC, or
//!   arm64's virtual counter scaled to nanoseconds) around the sieve, so the count is guest
//!   instructions, Linux's interrupts included.
//! - Host Wasmtime: `cargo xtask host-run` (Mica's engine settings and WASI host, hosted on
//!   Linux, the component compiled for the host with the same baseline CPU profile) under
//!   `valgrind --tool=callgrind`, collecting only inside the `wasi:cli/run` call: host
//!   instructions, not guest ones, but the same program and the same Wasmtime.
//!   Only when the host is of the guest's architecture.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, GuestArch, QemuCommand};
use serde::Serialize;

use crate::linux_guest::{self, LinuxGuest};
use crate::process;

/// The component whose work the baselines repeat.
pub const SIEVE_COMPONENT: &str = "sieve";
/// Linux-guest boots counted.
const LINUX_RUNS: usize = 2;
/// One Linux-guest boot's time limit (TCG with instruction counting boots Linux in seconds).
const LINUX_TIMEOUT: Duration = Duration::from_secs(600);
/// What `mica-linux-bench` prints before its result.
const LINUX_PREFIX: &str = "mica-linux-bench: ";
/// Callgrind collects only inside functions matching this (the generated `wasi:cli/run` call).
const CALLGRIND_TOGGLE: &str = "*call_run*";

/// The sieve, three ways.
#[derive(Debug, Serialize)]
pub struct Sieve {
    /// The sieve's size (`sieve N`).
    pub n: u64,
    /// Primes below `n`, as the native run found them.
    pub primes: u64,
    /// Mica: the component's `wasi:cli/run`, guest instructions.
    pub mica: u64,
    /// The Linux guest's kernel release.
    pub linux_kernel: String,
    /// The native sieve in the Linux guest, guest instructions, per boot.
    pub linux_guest: Vec<u64>,
    /// Host instructions of the same component's `wasi:cli/run` under Wasmtime on Linux
    /// (callgrind), when the host is of the guest's architecture.
    pub host_wasmtime: Option<u64>,
}

/// The `n` of the sieve component's `sieve N` arguments.
pub fn sieve_size(args: &[String]) -> Result<u64> {
    match args {
        [behaviour, n] if behaviour == "sieve" => {
            n.parse().with_context(|| format!("the {SIEVE_COMPONENT} component's size {n:?} is not a number"))
        }
        _ => bail!("the {SIEVE_COMPONENT} component's arguments are {args:?}, expected [\"sieve\", N]"),
    }
}

/// Measures both baselines for a sieve of `n` whose Mica run cost `mica` instructions.
/// `mica_cmd` is the QEMU command of the Mica boots (its architecture, CPU model and memory are
/// reused); `wasm` is the sieve component. The hosted baseline runs only when the host is of
/// that architecture.
pub fn sieve(
    root: &Path,
    toolchain: &crate::toolchain::Toolchain,
    mica_cmd: &QemuCommand,
    n: u64,
    mica: u64,
    wasm: &Path,
) -> Result<Sieve> {
    let target = root.join("target");
    let arch = mica_cmd.guest_arch();
    let guest = linux_guest::fetch(&target, arch)?;
    let (linux_guest, primes) = linux_sieve(root, toolchain, &guest, mica_cmd, n)?;
    let host_wasmtime = if GuestArch::host() == Some(arch) { Some(callgrind_sieve(wasm, n, primes)?) } else { None };
    Ok(Sieve { n, primes, mica, linux_kernel: guest.release, linux_guest, host_wasmtime })
}

/// Boots the Linux guest [`LINUX_RUNS`] times; the sieve's instruction counts and its result.
fn linux_sieve(
    root: &Path,
    toolchain: &crate::toolchain::Toolchain,
    guest: &LinuxGuest,
    mica_cmd: &QemuCommand,
    n: u64,
) -> Result<(Vec<u64>, u64)> {
    let init = linux_guest::build_static_for(root, toolchain, "mica-linux-bench", "mica-linux-bench", guest.arch)?;
    let image = root.join("target").join("mica").join("bench").join(format!("linux-bench-{}.cpio", guest.arch));
    linux_guest::init_image(guest, &init, &image)?;
    let n_text = n.to_string();
    let mut cmd = guest.qemu(mica_cmd.program(), Accel::Tcg, &image).memory_mib(mica_cmd.memory()).icount(true);
    cmd = cmd.clone().cmdline(guest.cmdline(&cmd, &["sieve", &n_text]));
    if let Some(cpu) = mica_cmd.cpu_model() {
        cmd = cmd.cpu(cpu);
    }
    eprint!("bench: native sieve in a Linux guest ({}, {LINUX_RUNS} boots) ", guest.release);
    let mut counts = Vec::new();
    let mut primes = None;
    for _ in 0..LINUX_RUNS {
        let line = linux_guest::boot_for_line(&cmd, LINUX_PREFIX, LINUX_TIMEOUT)?;
        counts.push(linux_guest::field(&line, "instructions")?);
        primes = Some(linux_guest::field(&line, "result")?);
        eprint!(".");
    }
    eprintln!();
    Ok((counts, primes.context("no Linux-guest run")?))
}

/// Runs the sieve component under `cargo xtask host-run` in callgrind; host instructions inside
/// `wasi:cli/run`. The run's output must report `primes`.
fn callgrind_sieve(wasm: &Path, n: u64, primes: u64) -> Result<u64> {
    let valgrind = process::which("valgrind").context(
        "valgrind is not installed (the hosted-Wasmtime baseline counts with callgrind): apt-get install valgrind",
    )?;
    let xtask = std::env::current_exe().context("finding the xtask executable")?;
    let host_run = |cmd: &mut Command| {
        cmd.arg("host-run").arg("--name").arg(SIEVE_COMPONENT).arg(wasm).args(["--", "sieve", &n.to_string()]);
    };
    // Natively first: compiles (and caches) the artifact outside valgrind and checks the result.
    let mut native = Command::new(&xtask);
    host_run(&mut native);
    let out = process::output(&mut native)?;
    let expected = format!("[{SIEVE_COMPONENT}] {primes} primes below {n}");
    if !out.lines().any(|line| line == expected) {
        bail!("`{}` did not print {expected:?}:\n{out}", process::shown(&native));
    }
    eprintln!("bench: the same component under Wasmtime on this host, in callgrind");
    let mut counted = Command::new(valgrind);
    counted.args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no"]);
    counted.arg(format!("--toggle-collect={CALLGRIND_TOGGLE}")).arg(&xtask);
    host_run(&mut counted);
    let out = process::capture(&mut counted)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).lines().any(|line| line == expected) {
        bail!("`{}` failed ({}):\n{stderr}", process::shown(&counted), out.status);
    }
    collected(&stderr).with_context(|| format!("no `Collected :` total in callgrind's output:\n{stderr}"))
}

/// Callgrind's `==PID== Collected : N` total.
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| line.split_once("Collected :").and_then(|(_, n)| n.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sieve_size_comes_from_the_arguments() {
        assert_eq!(sieve_size(&["sieve".into(), "1000".into()]).unwrap(), 1000);
        assert!(sieve_size(&["sieve".into(), "lots".into()]).unwrap_err().to_string().contains("not a number"));
        assert!(sieve_size(&["spin".into()]).unwrap_err().to_string().contains("expected [\"sieve\", N]"));
    }

    #[test]
    fn callgrind_total_is_read() {
        let stderr =
            "==42== Events    : Ir\n==42== Collected : 1034567890\n==42== \n==42== I   refs:      1,034,567,890\n";
        assert_eq!(collected(stderr), Some(1_034_567_890));
        assert_eq!(collected("==42== nothing"), None);
    }
}
