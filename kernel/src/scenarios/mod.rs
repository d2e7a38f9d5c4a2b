//! Boot-test scenarios, chosen with `test=NAME` on the kernel command line. Each ends the run:
//! the verdict is the exit code the host sees. Scenarios that must fail (panic, page fault, stack
//! overflow) do so through the kernel's real failure paths. The `early` ones need only what every
//! architecture has, the `memory` ones paging too; the `full` ones the whole architecture API
//! (`arch_complete`).

use alloc::format;

use mica_exit::ExitCode;

use crate::{arch, kprintln};

/// Asserts a condition, else returns the formatted message as the scenario's error.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

mod early;
#[cfg(arch_complete)]
mod full;
mod memory;

/// The scenario names, for errors.
#[cfg(arch_complete)]
pub const NAMES: &str = "panic, page_fault, stack_overflow, heap, timer, paging, threads, preempt, sleep, switch, priority, avx, smp, vectors";
/// The scenario names, for errors.
#[cfg(not(arch_complete))]
pub const NAMES: &str =
    "panic, page_fault, timer, stack_overflow, heap, paging (the others need what this architecture's port lacks yet)";

/// Runs scenario `name` and ends the run with its verdict.
pub fn run(name: &str) -> ! {
    kprintln!("mica: boot test {name}: start");
    let result = match name {
        "panic" => panic!("boot test: deliberate panic"),
        "page_fault" => early::page_fault(),
        "timer" => early::timer(),
        "stack_overflow" => memory::stack_overflow(),
        "heap" => memory::heap_stress(),
        "paging" => memory::paging(),
        #[cfg(arch_complete)]
        "threads" => full::threads(),
        #[cfg(arch_complete)]
        "preempt" => full::preempt(),
        #[cfg(arch_complete)]
        "sleep" => full::sleep(),
        #[cfg(arch_complete)]
        "switch" => full::switch(),
        #[cfg(arch_complete)]
        "priority" => full::priority(),
        #[cfg(arch_complete)]
        "avx" => full::avx(),
        #[cfg(arch_complete)]
        "smp" => full::smp(),
        #[cfg(arch_complete)]
        "vectors" => full::vectors(),
        other => Err(format!("unknown boot test '{other}' (known: {NAMES})")),
    };
    match result {
        Ok(()) => {
            kprintln!("mica: boot test {name}: passed");
            arch::exit(ExitCode::Success)
        }
        Err(e) => {
            kprintln!("mica: boot test {name}: FAILED: {e}");
            arch::exit(ExitCode::Failed)
        }
    }
}
