//! Per-CPU data: one [`PerCpu`] per CPU in a static table. Each architecture keeps a pointer to
//! its CPU's entry in a register of its own (`arch::percpu`: the GS base on x86_64, `TPIDR_EL1`
//! on aarch64), whose first word is the CPU's index, so "which CPU am I" is one load.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::arch;

/// The most CPUs Mica runs on.
pub const MAX_CPUS: usize = 16;

/// One CPU's own data.
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// This CPU's index (0 for the boot CPU): the first word, which `arch::percpu::index` reads.
    index: u64,
    /// Wasmtime's two TLS slots of the thread running on this CPU.
    pub tls: [AtomicPtr<u8>; 2],
    /// The TLB-flush generation this CPU has caught up with (see `paging::shootdown`).
    pub flushed: AtomicU64,
    /// This CPU's id on the interrupt controller, for IPIs to it (its local APIC id on x86_64).
    pub hw_id: AtomicU32,
}

static CPUS: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const {
        PerCpu {
            index: 0,
            tls: [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())],
            flushed: AtomicU64::new(0),
            hw_id: AtomicU32::new(0),
        }
    }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i].index = i as u64;
        i += 1;
    }
    cpus
};

/// Makes `CPUS[index]` this CPU's data. The boot CPU calls it first thing; another CPU before it
/// touches anything per-CPU.
pub fn init(index: usize) {
    if let Some(cpu) = CPUS.get(index) {
        arch::percpu::install(cpu);
    }
}

/// This CPU's index.
pub fn index() -> usize {
    arch::percpu::index()
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

/// Waits up to `ms` milliseconds (on the monotonic clock) for `online` to pass `before`: how the
/// boot CPU waits for a CPU it started to report in.
pub fn wait_online(online: &AtomicU32, before: u32, ms: u64) -> bool {
    let end = arch::clock::monotonic_ns().unwrap_or(0) + ms * 1_000_000;
    while arch::clock::monotonic_ns().unwrap_or(u64::MAX) < end {
        if online.load(Ordering::SeqCst) > before {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}
