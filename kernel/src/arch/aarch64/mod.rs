//! aarch64 on QEMU's `virt` (and Linux's arm64 booting protocol): the `Image` entry, the device
//! tree, the PL011 console, exceptions and IRQs, the GIC, the generic timer and counter, and
//! semihosting for the verdict.
//!
//! The port is under way (`docs/aarch64-plan.md`): the kernel boots through memory, interrupts
//! and time, starts every CPU through PSCI, runs threads with preemption on all of them, and
//! finds virtio-mmio devices from the device tree; it runs no components yet.

pub mod boot;
pub mod boot_info;
pub mod clock;
pub mod context;
pub mod cpu;
pub mod gic;
pub mod irq;
pub mod paging;
pub mod percpu;
pub mod pte;
pub mod qemu;
pub mod random;
pub mod rtc;
pub mod scenarios;
pub mod serial;
pub mod smp;
pub mod stacks;
pub mod traps;

pub use qemu::exit;

use alloc::borrow::Cow;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::mem::range::PhysRange;

/// The architecture and boot protocol, for the boot banner.
pub const NAME: &str = "aarch64, Linux Image + device tree";

/// Physical memory the firmware keeps: on `virt`, QEMU's boot code at the start of RAM, below
/// the 2 MiB where the image is loaded.
pub const FIRMWARE_RESERVED: PhysRange = PhysRange::new(0x4000_0000, 0x4020_0000);

/// The first thing after the console: the exception vectors (the stub installed them already;
/// this says so), so that a fault from here on is reported.
pub fn init_traps() {
    traps::init();
}

/// The vector state: FP/SIMD is on from the stub, for the kernel's own code. Logs where the
/// loader entered too.
pub fn init_vector_state() {
    log::info!(
        "cpu: entered at EL{}, running at EL1; FP/SIMD on (CPACR_EL1.FPEN) from the first instruction: the kernel is hard-float",
        boot::entry_el()
    );
}

/// The timer's interrupt (the virtual timer's INTID), once the tick runs.
static TIMER_INTID: AtomicU32 = AtomicU32::new(0);

/// The tick rate every CPU runs its timer at.
static TICK_HZ: AtomicU32 = AtomicU32::new(0);

/// The INTID the tick arrives on, once it runs.
pub fn timer_intid() -> Option<u32> {
    Some(TIMER_INTID.load(Ordering::Relaxed)).filter(|&i| i != 0)
}

/// Interrupts and time on the boot CPU: the GIC the device tree names, the virtual timer ticking
/// at `tick_hz`, logged; interrupts are on from here. Returns the boot CPU's id on the
/// interrupt controller (its MPIDR affinity), or what failed and why.
pub fn init_interrupts_and_time(tick_hz: u32) -> Result<u32, (&'static str, Cow<'static, str>)> {
    let platform = boot_info::platform().ok_or(("interrupts", Cow::Borrowed("no device tree was read")))?;
    let gic = platform.gic.ok_or(("GIC", Cow::Borrowed("the device tree names no interrupt controller")))?;
    let timer = platform.timer.ok_or(("timer", Cow::Borrowed("the device tree names no arm,armv8-timer")))?;
    gic::init(&gic, platform.cpus_listed).map_err(|e| ("GIC", Cow::Borrowed(e)))?;
    // The virtual timer: the one EL1 owns whether or not a hypervisor runs below.
    let virtual_timer = timer[2];
    gic::enable_private(virtual_timer).map_err(|e| ("GIC", Cow::Borrowed(e)))?;
    gic::enable_private(gic::RESCHEDULE_SGI).map_err(|e| ("GIC", Cow::Borrowed(e)))?;
    gic::enable_private(gic::STOP_SGI).map_err(|e| ("GIC", Cow::Borrowed(e)))?;
    TIMER_INTID.store(virtual_timer, Ordering::Relaxed);
    clock::start_tick(tick_hz).map_err(|e| ("timer", Cow::Borrowed(e)))?;
    TICK_HZ.store(tick_hz, Ordering::Relaxed);
    enable_interrupts();
    let hz = clock::frequency();
    log::info!(
        "time: generic counter {}.{:03} MHz; GICv{} (distributor {:#x}); virtual timer INTID {virtual_timer} ticking at {tick_hz} Hz",
        hz / 1_000_000,
        hz / 1000 % 1000,
        gic.version,
        gic.distributor.start,
    );
    let mpidr: u64;
    // SAFETY: reads a register into a local.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack, preserves_flags)) };
    Ok((mpidr & 0xff_ffff) as u32)
}

/// Interrupts and time on another CPU (index `cpu`), as the boot CPU set them up: its GIC
/// interface, the timer's interrupt and the reschedule SGI enabled, its virtual timer ticking.
/// Interrupts stay masked (the scheduler's idle loop lets them in).
pub fn init_ap_interrupts_and_time(cpu: usize) -> Result<(), (&'static str, &'static str)> {
    gic::init_cpu(cpu).map_err(|e| ("GIC", e))?;
    let timer = timer_intid().ok_or(("timer", "the boot CPU's timer is not running"))?;
    gic::enable_private(timer).map_err(|e| ("GIC", e))?;
    gic::enable_private(gic::RESCHEDULE_SGI).map_err(|e| ("GIC", e))?;
    gic::enable_private(gic::STOP_SGI).map_err(|e| ("GIC", e))?;
    clock::start_tick(TICK_HZ.load(Ordering::Relaxed)).map_err(|e| ("timer", e))
}

/// Waits for the next interrupt, then lets it in: `wfi` wakes for a pending interrupt even while
/// it is masked, so unmasking after it loses no wake-up.
pub fn wait_for_interrupt() {
    // SAFETY: waits and unmasks IRQs; no memory is touched.
    unsafe { core::arch::asm!("wfi", "msr daifclr, #2", options(nomem, nostack)) };
}

/// Whether interrupts (IRQs) are enabled on this CPU.
pub fn interrupts_enabled() -> bool {
    let daif: u64;
    // SAFETY: reads a register into a local.
    unsafe { core::arch::asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack, preserves_flags)) };
    daif & (1 << 7) == 0
}

/// Enables interrupts (IRQs) on this CPU.
pub fn enable_interrupts() {
    // SAFETY: unmasks IRQs; not a memory access. The compiler may not move memory accesses
    // across it (no `nomem`), as for a lock release.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
}

/// Disables interrupts (IRQs) on this CPU.
pub fn disable_interrupts() {
    // SAFETY: masks IRQs; as above, a compiler barrier too.
    unsafe { core::arch::asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

/// Runs `f` with interrupts disabled on this CPU, restoring the previous state after.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let enabled = interrupts_enabled();
    disable_interrupts();
    let r = f();
    if enabled {
        enable_interrupts();
    }
    r
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads a register into a local; no memory is touched.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Halts this CPU for good, with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        disable_interrupts();
        // SAFETY: waits; with every interrupt masked this CPU does nothing more.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
