//! x86_64: PVH entry, descriptor tables, traps, paging, the local APIC and the clocks.

pub mod apic;
pub mod boot;
pub mod clock;
pub mod context;
pub mod cpu;
pub mod dma;
pub mod gdt;
pub mod ioapic;
pub mod irq_lock;
pub mod mmio;
pub mod paging;
pub mod percpu;
pub mod pit;
pub mod qemu;
pub mod random;
pub mod rtc;
pub mod serial;
pub mod smp;
pub mod stacks;
pub mod traps;

pub use qemu::exit;

/// Waits for the next interrupt with interrupts enabled (`sti; hlt`, atomically).
pub fn wait_for_interrupt() {
    ::x86_64::instructions::interrupts::enable_and_hlt();
}

/// Enables interrupts on this CPU.
pub fn enable_interrupts() {
    ::x86_64::instructions::interrupts::enable();
}

/// Runs `f` with interrupts disabled on this CPU, restoring the previous state after.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    ::x86_64::instructions::interrupts::without_interrupts(f)
}

/// The current stack pointer.
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register into a local; no memory is touched.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// Disables interrupts on this CPU.
pub fn disable_interrupts() {
    ::x86_64::instructions::interrupts::disable();
}

/// Halts this CPU for good, with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        ::x86_64::instructions::interrupts::disable();
        ::x86_64::instructions::hlt();
    }
}
