//! Architecture support. This is the only place that switches on the target architecture; every
//! architecture offers the same module and item names, and the kernel outside `arch/` uses only
//! these (the x86_64 boot scenarios in `scenarios.rs` that test x86 state itself excepted):
//!
//! | item | what it is |
//! |---|---|
//! | `NAME` | the architecture and boot protocol, for the boot banner |
//! | `FIRMWARE_RESERVED` | physical memory the firmware keeps |
//! | `init_traps`, `init_vector_state`, `init_interrupts_and_time` | the boot phases that are the architecture's own |
//! | `exit`, `halt_forever` | the end of a run with its verdict |
//! | `enable_interrupts`, `disable_interrupts`, `interrupts_enabled`, `without_interrupts`, `wait_for_interrupt` | this CPU's interrupt state |
//! | `stack_pointer` | the current stack pointer |
//! | `clock` | `counter` (the cycle counter), `monotonic_ns`, `tick_ns`, the tick |
//! | `boot` | `boot_counter`: the counter at the kernel's first instruction |
//! | `irq` | `this_cpu`, `send_reschedule`, device lines: `init_device_lines`, `route_device_line`, `mask_device_line` |
//! | `cpu` | the processor's features (`code_may_use` for compiled code) |
//! | `percpu`, `smp` | where this CPU's `crate::percpu::PerCpu` is (`install`, `index`), starting the other CPUs |
//! | `paging`, `stacks`, `dma`, `mmio` | page tables, guarded stacks, DMA memory, device register windows |
//! | `context` | the context switch |
//! | `serial`, `rtc`, `random` | the console port, the wall clock, hardware randomness |
//!
//! x86_64 has all of it. aarch64 is under way (`docs/aarch64-plan.md`) and has, so far: `NAME`,
//! `FIRMWARE_RESERVED`, `init_traps`, `init_vector_state`, `init_interrupts_and_time`, `exit`,
//! `halt_forever`, the interrupt state, `stack_pointer`, `clock` (`counter`, `monotonic_ns`, the
//! tick), `boot`, `boot_info`, `cpu` (with `code_may_use`), `percpu`, `paging::service_flush` and
//! `serial`; the kernel leaves out what needs the rest (`arch_complete` in `build.rs`).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
