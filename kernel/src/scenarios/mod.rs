//! Boot-test scenarios, chosen with `test=NAME` on the kernel command line. Each ends the run:
//! the verdict is the exit code the host sees. Scenarios that must fail (panic, page fault, stack
//! overflow) do so through the kernel's real failure paths: `early` (a fault's report, the tick),
//! `memory` (paging, the heap, guard pages) and `full` (threads, preemption, SMP); each
//! architecture adds boot tests of its own state (`arch::scenarios`).

use alloc::format;

use mica_exit::ExitCode;

use crate::{arch, kprintln};

mod early;
mod full;
mod memory;

/// The scenario names, for errors.
pub const NAMES: &str = "panic, panic_smp, irq_on_fresh_stack_page, page_fault, stack_overflow, heap, timer, paging, threads, preempt, sleep, switch, priority, smp";

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
        "threads" => full::threads(),
        "preempt" => full::preempt(),
        "sleep" => full::sleep(),
        "switch" => full::switch(),
        "priority" => full::priority(),
        "smp" => full::smp(),
        "panic_smp" => full::panic_smp(),
        "irq_on_fresh_stack_page" => full::irq_on_fresh_stack_page(),
        other => arch::scenarios::run(other).unwrap_or_else(|| {
            Err(format!(
                "unknown boot test '{other}' (known: {NAMES}; this architecture's own: {})",
                arch::scenarios::NAMES
            ))
        }),
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
