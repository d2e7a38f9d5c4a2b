//! Where this CPU's [`PerCpu`] is: the GS base. Each CPU's `IA32_GS_BASE` points at its own entry,
//! whose first word is the CPU's index, so `gs:[0]` answers "which CPU am I" in one load. The
//! kernel never runs user code, so GS is never swapped.

use x86_64::registers::model_specific::Msr;

use crate::percpu::PerCpu;

/// `IA32_GS_BASE`.
const IA32_GS_BASE: u32 = 0xc000_0101;

/// Points this CPU's GS base at `cpu`.
pub fn install(cpu: &'static PerCpu) {
    let mut msr = Msr::new(IA32_GS_BASE);
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; it now points at a 'static PerCpu whose
    // first field is the CPU's index, which is all `index()` reads through GS.
    unsafe { msr.write(cpu as *const PerCpu as u64) };
}

/// This CPU's index.
pub fn index() -> usize {
    let index: u64;
    // SAFETY: GS points at this CPU's PerCpu (set by `install` before anything calls this), whose
    // first field is its index; the load has no other effect.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index as usize
}
