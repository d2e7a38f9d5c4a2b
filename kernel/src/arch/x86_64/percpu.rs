//! Per-CPU data, reached through the GS base: each CPU's `IA32_GS_BASE` points at its own
//! [`PerCpu`], whose first word is the CPU's index, so `gs:[0]` answers "which CPU am I" in one
//! load. The kernel never runs user code, so GS is never swapped.

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use x86_64::registers::model_specific::Msr;

/// The most CPUs Mica runs on.
pub const MAX_CPUS: usize = 16;

/// `IA32_GS_BASE`.
const IA32_GS_BASE: u32 = 0xc000_0101;

/// One CPU's own data.
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// This CPU's index (0 for the boot CPU): read as `gs:[0]`.
    index: u64,
    /// Wasmtime's two TLS slots of the thread running on this CPU.
    pub tls: [AtomicPtr<u8>; 2],
    /// The TLB-flush generation this CPU has caught up with (see `paging::shootdown`).
    pub flushed: AtomicU64,
    /// This CPU's id on the interrupt controller, for IPIs to it (its local APIC id here).
    pub hw_id: core::sync::atomic::AtomicU32,
}

static CPUS: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const {
        PerCpu {
            index: 0,
            tls: [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())],
            flushed: AtomicU64::new(0),
            hw_id: core::sync::atomic::AtomicU32::new(0),
        }
    }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i].index = i as u64;
        i += 1;
    }
    cpus
};

/// Points this CPU's GS base at `CPUS[index]`. The boot CPU calls it first thing; an AP before it
/// touches anything per-CPU.
pub fn init(index: usize) {
    let Some(cpu) = CPUS.get(index) else { return };
    let mut msr = Msr::new(IA32_GS_BASE);
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; it now points at a 'static PerCpu whose
    // first field is the CPU's index, which is all `index()` reads through GS.
    unsafe { msr.write(cpu as *const PerCpu as u64) };
}

/// This CPU's index.
pub fn index() -> usize {
    let index: u64;
    // SAFETY: GS points at this CPU's PerCpu (set by `init` before anything calls this), whose
    // first field is its index; the load has no other effect.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index as usize
}

/// This CPU's data.
pub fn this() -> &'static PerCpu {
    &CPUS[index() % MAX_CPUS]
}

/// CPU `index`'s data.
pub fn of(index: usize) -> Option<&'static PerCpu> {
    CPUS.get(index)
}

impl PerCpu {
    /// Its index.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// Loads the TLS slots of `this()`, for `wasm::tls`.
pub fn tls_slot(slot: usize) -> Option<&'static AtomicPtr<u8>> {
    this().tls.get(slot)
}

/// Relaxed ordering is enough for the slots: each is only touched by its own CPU.
pub const TLS_ORDER: Ordering = Ordering::Relaxed;
