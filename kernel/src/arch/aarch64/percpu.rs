//! Where this CPU's [`PerCpu`] is: `TPIDR_EL1`, which points at its entry, whose first word is the
//! CPU's index. The kernel runs no EL0 code, so nothing else uses the register.

use crate::percpu::PerCpu;

/// Points this CPU's `TPIDR_EL1` at `cpu`.
pub fn install(cpu: &'static PerCpu) {
    // SAFETY: TPIDR_EL1 is software's own register; it now points at a 'static PerCpu whose
    // first field is the CPU's index, which is all `index()` reads through it.
    unsafe { core::arch::asm!("msr tpidr_el1, {}", in(reg) cpu as *const PerCpu as u64, options(nomem, nostack)) };
}

/// This CPU's index.
pub fn index() -> usize {
    let cpu: u64;
    // SAFETY: reads a register into a local.
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) cpu, options(nomem, nostack, preserves_flags)) };
    if cpu == 0 {
        // Before `install` (the entry stub zeroes the register): only the boot CPU runs then.
        return 0;
    }
    // SAFETY: a non-zero TPIDR_EL1 is what `install` stored: a 'static PerCpu, whose first
    // field (repr(C)) is the index.
    unsafe { *(cpu as *const u64) as usize }
}
