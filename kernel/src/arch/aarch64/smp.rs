//! The other CPUs: the device tree lists them (their MPIDRs), PSCI's `CPU_ON` starts each at
//! [`super::boot::mica_aarch64_ap_entry`] with the MMU off, and the entry takes the boot CPU's
//! translation settings from [`ApStart`], its own two stacks, and joins the scheduler.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::boot_info::PsciConduit;
use crate::mem::stacks::KernelStack;

/// The most CPUs the kernel runs.
pub const MAX_CPUS: u32 = crate::percpu::MAX_CPUS as u32;

/// A thread stack for the AP's idle loop (`SP_EL0`) and an exception stack (`SP_EL1`).
const AP_STACK_BYTES: u64 = 64 * 1024;
const AP_EXCEPTION_STACK_BYTES: u64 = 16 * 1024;

/// PSCI 0.2 `CPU_ON`, 64-bit.
const PSCI_CPU_ON: u64 = 0xc400_0003;

static ONLINE: AtomicU32 = AtomicU32::new(1);

/// What the AP entry loads before its MMU is on: written by the boot CPU for one AP at a time,
/// cleaned to memory (the AP reads it uncached), then read by that AP alone.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ApStart {
    /// `MAIR_EL1`.
    mair: AtomicU64,
    /// `TCR_EL1`.
    tcr: AtomicU64,
    /// `TTBR0_EL1` and `TTBR1_EL1`: the kernel's root table.
    ttbr: AtomicU64,
    /// `SCTLR_EL1`: MMU, caches and WXN on.
    sctlr: AtomicU64,
    /// The top of its exception stack.
    sp_el1: AtomicU64,
    /// The top of its thread stack.
    sp_el0: AtomicU64,
    /// Its CPU index.
    index: AtomicU64,
}

/// The record for the AP starting now (offsets used by the entry stub: 0, 8, .., 48).
#[unsafe(no_mangle)]
static MICA_AP_START: ApStart = ApStart {
    mair: AtomicU64::new(0),
    tcr: AtomicU64::new(0),
    ttbr: AtomicU64::new(0),
    sctlr: AtomicU64::new(0),
    sp_el1: AtomicU64::new(0),
    sp_el0: AtomicU64::new(0),
    index: AtomicU64::new(0),
};

/// Where the CPU count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// The device tree's `/cpus`.
    DeviceTree,
    /// Nothing: the boot CPU alone.
    Unknown,
}

impl core::fmt::Display for CpuSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CpuSource::DeviceTree => "the device tree",
            CpuSource::Unknown => "no device tree",
        })
    }
}

/// How CPU bring-up went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmpReport {
    /// CPUs the machine has, or 1 when it cannot say.
    pub present: u32,
    /// CPUs that reported in, the boot CPU included.
    pub online: u32,
    /// Where `present` came from.
    pub source: CpuSource,
}

/// Reads a system register into a local.
macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reads a register into a local.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}

/// PSCI `CPU_ON` for the CPU `mpidr`, entering at physical `entry`: PSCI's return value (0 for
/// success, negative for an error).
fn cpu_on(conduit: PsciConduit, mpidr: u64, entry: u64) -> i64 {
    let ret: u64;
    match conduit {
        // SAFETY: a PSCI call through the conduit the device tree names; it starts another CPU at
        // `entry` and touches no memory of ours.
        PsciConduit::Hvc => unsafe {
            core::arch::asm!("hvc #0", inout("x0") PSCI_CPU_ON => ret, in("x1") mpidr, in("x2") entry, in("x3") 0u64, options(nomem, nostack))
        },
        // SAFETY: as above, through the secure monitor call.
        PsciConduit::Smc => unsafe {
            core::arch::asm!("smc #0", inout("x0") PSCI_CPU_ON => ret, in("x1") mpidr, in("x2") entry, in("x3") 0u64, options(nomem, nostack))
        },
    }
    ret as i64
}

/// PSCI's name for a `CPU_ON` error.
fn psci_error(code: i64) -> &'static str {
    match code {
        -1 => "not supported",
        -2 => "invalid parameters",
        -3 => "denied",
        -4 => "already on",
        -5 => "on pending",
        -6 => "internal failure",
        -9 => "invalid address",
        _ => "an unknown error",
    }
}

/// Starts every CPU the device tree lists besides the boot CPU (interrupt-controller id
/// `boot_cpu`), one at a time; returns how many are online. Needs the heap, paging, the GIC and
/// the clock.
pub fn start_aps(boot_cpu: u32) -> SmpReport {
    let Some(platform) = super::boot_info::platform() else {
        return SmpReport { present: 1, online: 1, source: CpuSource::Unknown };
    };
    let others: alloc::vec::Vec<u64> = platform
        .cpus
        .iter()
        .flatten()
        .copied()
        .filter(|&m| m != u64::from(boot_cpu))
        .take(MAX_CPUS as usize - 1)
        .collect();
    let present = others.len() as u32 + 1;
    if others.is_empty() {
        return SmpReport { present, online: 1, source: CpuSource::DeviceTree };
    }
    let Some((conduit, _)) = platform.psci else {
        log::warn!("smp: the device tree names no PSCI to start the other {} CPU(s) with", others.len());
        return SmpReport { present, online: 1, source: CpuSource::DeviceTree };
    };
    let record = &MICA_AP_START;
    record.mair.store(read_sysreg!("mair_el1"), Ordering::SeqCst);
    record.tcr.store(read_sysreg!("tcr_el1"), Ordering::SeqCst);
    record.ttbr.store(read_sysreg!("ttbr1_el1"), Ordering::SeqCst);
    record.sctlr.store(read_sysreg!("sctlr_el1"), Ordering::SeqCst);
    let entry = super::boot::ap_entry_address();
    for (index, mpidr) in (1u64..).zip(others) {
        let (stack, exceptions) = match (KernelStack::new(AP_STACK_BYTES), KernelStack::new(AP_EXCEPTION_STACK_BYTES)) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("smp: no stacks for CPU {index} (MPIDR {mpidr:#x}): {e}");
                break;
            }
        };
        record.sp_el0.store(stack.top(), Ordering::SeqCst);
        record.sp_el1.store(exceptions.top(), Ordering::SeqCst);
        record.index.store(index, Ordering::SeqCst);
        // The AP's stacks live as long as the AP: never freed.
        core::mem::forget(stack);
        core::mem::forget(exceptions);
        // The AP reads the record with its MMU and caches off: clean it to the point of
        // coherency first.
        let at = (&raw const MICA_AP_START) as u64;
        // SAFETY: cleans the record's cache line (it is 64-byte aligned and smaller); its data is
        // unchanged.
        unsafe { core::arch::asm!("dc cvac, {}", "dsb sy", in(reg) at, options(nostack, preserves_flags)) };
        let before = ONLINE.load(Ordering::SeqCst);
        let ret = cpu_on(conduit, mpidr, entry);
        if ret != 0 {
            log::error!("smp: PSCI CPU_ON for CPU {index} (MPIDR {mpidr:#x}) failed: {} ({ret})", psci_error(ret));
            break;
        }
        if !crate::percpu::wait_online(&ONLINE, before, 1000) {
            log::error!("smp: CPU {index} (MPIDR {mpidr:#x}) did not start");
            break;
        }
    }
    SmpReport { present, online: online(), source: CpuSource::DeviceTree }
}

/// How many CPUs are online.
pub fn online() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// The first Rust code on an AP: on its thread stack with the kernel's page tables and its
/// exception stack, interrupts masked.
#[unsafe(no_mangle)]
extern "C" fn mica_aarch64_ap_start(index: u64) -> ! {
    crate::percpu::init(index as usize);
    crate::percpu::this().hw_id.store(super::irq::this_cpu(), Ordering::Relaxed);
    if let Err((what, e)) = super::init_ap_interrupts_and_time(index as usize) {
        log::error!("smp: CPU {index}: {what}: {e}");
        super::halt_forever();
    }
    log::info!("smp: CPU {index} (MPIDR {:#x}) online", super::irq::this_cpu());
    ONLINE.fetch_add(1, Ordering::SeqCst);
    crate::sched::join(index as usize)
}
