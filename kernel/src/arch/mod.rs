//! Architecture support. This is the only place that switches on the target architecture; every
//! architecture offers the same module and item names, and the kernel outside `arch/` uses only
//! these:
//!
//! | item | what it is |
//! |---|---|
//! | `NAME` | the architecture and boot protocol, for the boot banner |
//! | `FIRMWARE_RESERVED` | physical memory the firmware keeps |
//! | `init_traps`, `init_vector_state`, `init_interrupts_and_time` | the boot phases that are the architecture's own |
//! | `exit`, `halt_forever` | the end of a run with its verdict |
//! | `enable_interrupts`, `disable_interrupts`, `interrupts_enabled`, `without_interrupts`, `wait_for_interrupt` | this CPU's interrupt state |
//! | `stack_pointer` | the current stack pointer |
//! | `clock` | `counter` (the cycle counter) and `counter_frequency`, `monotonic_ns`, `tick_ns`, the tick |
//! | `boot` | `boot_counter`: the counter at the kernel's first instruction |
//! | `irq` | `this_cpu`, `send_reschedule`, device lines: `init_device_lines`, `route_device_line`, `mask_device_line` |
//! | `cpu` | the processor's features (`code_may_use` for compiled code), the FP control register, `sync_code` for code just written |
//! | `percpu`, `smp` | where this CPU's `crate::percpu::PerCpu` is (`install`, `index`), starting the other CPUs |
//! | `pte`, `paging` | the page-table entry format, TLB flushes and shootdown, switching to new tables (the policy is `mem::paging`) |
//! | `stacks` | the static stacks (boot, exceptions), each a `mem::stacks::GuardedStack` |
//! | `scenarios` | boot tests of the architecture's own state |
//! | `context` | the context switch: `Saved` (what a thread not running keeps) and its `switch` |
//! | `serial`, `rtc`, `random` | the console port, the wall clock, hardware randomness |
//!
//! Both architectures offer all of it. On aarch64 the system runs no components yet
//! (`docs/aarch64-plan.md`: the bundles carry x86_64 code).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
