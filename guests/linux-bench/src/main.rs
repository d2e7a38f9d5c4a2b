//! `mica-linux-bench`: the Linux-guest baseline of `cargo xtask bench`.
//!
//! Built as a static binary and run as `/init` of a Linux guest that boots under the same QEMU
//! settings as Mica (`-accel tcg -icount shift=0`, `-M microvm` on x86_64, `-M virt` on
//! aarch64), where the instruction clock ([`tsc`]) advances once per retired guest instruction.
//! It runs one workload, named by its arguments (the kernel passes
//! what follows `--` on its command line to init), and prints one line the host parses:
//!
//! ```text
//! mica-linux-bench: sieve n=10000000 result=664579 instructions=1012345678
//! ```
//!
//! then powers the guest off. `instructions` is the TSC delta around the workload alone (process
//! start-up and exit are not in it). `boot` reports the TSC when `main` began: the instructions
//! from reset to init. Errors print `mica-linux-bench: error: ...`.
//!
//! The IPC baselines of `cargo xtask bench ipc` run two processes: this program starts a copy of
//! itself as a child (`child-echo SIZE` or `child-sink N SIZE`) and talks to it:
//!
//! - `pipe N SIZE`: N round trips of SIZE bytes, out through the child's stdin pipe and back
//!   through its stdout pipe;
//! - `unix N SIZE`: the same over one Unix stream socket (a `socketpair`, the child's stdin);
//! - `pipe-oneway N SIZE`: N messages of SIZE bytes one way, then one byte back once the child
//!   has read them all.
//!
//! `block` and `httpd` are the I/O baselines of `cargo xtask bench io`, `fs` the file baseline of
//! `cargo xtask bench fs`, `echo` the TCP baseline of `cargo xtask bench net` (see `io.rs`).
//!
//! Each IPC workload reports `instructions` for the whole loop (both processes, the kernel, and the switches
//! between them: the guest has one CPU, as Mica's has).

use std::process::ExitCode;

mod io;
mod ipc;

fn main() -> ExitCode {
    // First thing: under `-icount shift=0` this is the number of instructions since reset.
    let entry_tsc = tsc();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = match run(&args, entry_tsc) {
        Ok(line) => {
            println!("mica-linux-bench: {line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("mica-linux-bench: error: {error}");
            ExitCode::FAILURE
        }
    };
    if std::process::id() == 1 {
        // As init, returning would panic the kernel: power the machine off instead.
        rustix::fs::sync();
        if let Err(error) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
            println!("mica-linux-bench: error: power off failed: {error}");
        }
    }
    status
}

/// Runs the workload `args` names; its report line. `entry_tsc` is the TSC when `main` began.
fn run(args: &[String], entry_tsc: u64) -> Result<String, String> {
    let number = |index: usize, what: &str| -> Result<usize, String> {
        let text = args.get(index).ok_or_else(|| format!("missing {what}"))?;
        text.parse().map_err(|_| format!("{what} {text:?} is not a number"))
    };
    match args.first().map(String::as_str) {
        Some("sieve") => {
            let n = number(1, "sieve size")?;
            let (result, instructions) = counted(|| mica_workloads::sieve(n));
            Ok(format!("sieve n={n} result={result} instructions={instructions}"))
        }
        // The TSC starts at 0 at reset: its value when init's `main` begins is the boot's cost.
        Some("boot") => Ok(format!("boot instructions={entry_tsc}")),
        Some(op @ ("pipe" | "unix" | "pipe-oneway")) => {
            let n = number(1, "message count")?;
            let size = number(2, "message size")?;
            let instructions = ipc::run(op, n, size)?;
            Ok(format!("{op} n={n} bytes={size} instructions={instructions}"))
        }
        Some("block") => io::block(),
        Some("httpd") => io::httpd(),
        Some("echo") => io::echo(),
        Some("fs") => io::files(),
        Some("child-echo") => ipc::child_echo(number(1, "message size")?),
        Some("child-sink") => ipc::child_sink(number(1, "message count")?, number(2, "message size")?),
        Some(other) => Err(format!(
            "unknown workload {other:?} (known: sieve N, boot, pipe N SIZE, unix N SIZE, pipe-oneway N SIZE, block, httpd, echo, fs)"
        )),
        None => Err("no workload given: put it after `--` on the kernel command line".to_owned()),
    }
}

/// Runs `work` and returns its result with the TSC ticks it took (guest instructions under
/// `-icount shift=0`).
fn counted<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let start = tsc();
    let result = std::hint::black_box(work());
    let end = tsc();
    (result, end.wrapping_sub(start))
}

/// The guest's instruction clock: under `-icount shift=0` every retired instruction advances
/// QEMU's virtual clock by one nanosecond.
///
/// - x86_64: the time-stamp counter, which QEMU then advances once per instruction.
/// - aarch64: the generic timer's virtual count, scaled by its frequency to nanoseconds (QEMU
///   7.2's `virt` counts at 62.5 MHz, so one tick is 16 instructions; that is the resolution).
#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter and has no memory effects; Linux leaves CR4.TSD clear, so it
    // is allowed in user mode (the guest kernel here is Debian's, configured that way).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// See the x86_64 version.
#[cfg(target_arch = "aarch64")]
fn tsc() -> u64 {
    let (count, frequency): (u64, u64);
    // SAFETY: reads of CNTVCT_EL0 and CNTFRQ_EL0, which Linux lets EL0 read (CNTKCTL_EL1.EL0VCTEN);
    // no memory effects. The `isb` keeps the count from being read ahead of earlier instructions.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {count}, cntvct_el0",
            "mrs {frequency}, cntfrq_el0",
            count = out(reg) count,
            frequency = out(reg) frequency,
            options(nomem, nostack, preserves_flags),
        );
    }
    (u128::from(count) * 1_000_000_000 / u128::from(frequency.max(1))) as u64
}
