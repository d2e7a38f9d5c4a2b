//! x86_64: PVH entry, descriptor tables, traps, paging, the local APIC and the clocks.

pub mod apic;
pub mod boot;
pub mod boot_info;
pub mod clock;
pub mod context;
pub mod cpu;
pub mod gdt;
pub mod ioapic;
pub mod irq;
pub mod microvm;
pub mod mptable;
pub mod paging;
pub mod percpu;
pub mod pit;
pub mod pte;
pub mod pvh;
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
use alloc::string::ToString;

use crate::mem::range::PhysRange;

/// The architecture and boot protocol, for the boot banner.
pub const NAME: &str = "x86_64, PVH";

/// Physical memory the firmware and the boot protocol keep for themselves below everything else
/// (real-mode memory, BIOS data, the boot structures QEMU puts there).
pub const FIRMWARE_RESERVED: PhysRange = PhysRange::new(0, 1024 * 1024);

/// The first thing after the console: the descriptor tables and the trap handlers, so that a
/// fault from here on is reported, not a triple fault.
pub fn init_traps() {
    let selectors = gdt::init();
    traps::init(selectors.code.0);
}

/// The processor's vector state: which registers every thread saves (AVX when the CPU has it and
/// its XSAVE area fits a context), logged.
pub fn init_vector_state() {
    match cpu::enable_avx_state() {
        cpu::AvxState::Enabled(bytes) => {
            log::info!("cpu: AVX state on (XCR0 x87|SSE|AVX, {bytes}-byte XSAVE area per thread)")
        }
        cpu::AvxState::NoAvx => log::info!("cpu: no AVX: vector state is x87/SSE (fxsave)"),
        cpu::AvxState::AreaTooLarge(bytes) => log::warn!(
            "cpu: AVX state left off: its XSAVE area ({bytes} bytes) exceeds the {} bytes a context reserves",
            cpu::XSAVE_AREA_BYTES
        ),
    }
}

/// Interrupts and time on the boot CPU: the local interrupt controller, the clocks and the timer
/// ticking at `tick_hz`, logged; interrupts are on from here. Returns the boot CPU's
/// interrupt-controller id, or what failed and why.
pub fn init_interrupts_and_time(tick_hz: u32) -> Result<u32, (&'static str, Cow<'static, str>)> {
    let apic_info = apic::init().map_err(|e| ("local APIC", Cow::Owned(e.to_string())))?;
    let clocks = clock::init(tick_hz).map_err(|e| ("clock", Cow::Owned(e.to_string())))?;
    // From here on the timer interrupt arrives; `traps` counts it.
    enable_interrupts();
    log::info!(
        "time: TSC {}.{:03} MHz; local APIC {} (version {:#x}) timer {}.{:03} MHz, ticking at {} Hz",
        clocks.tsc.hz() / 1_000_000,
        clocks.tsc.hz() / 1000 % 1000,
        apic_info.id,
        apic_info.version,
        clocks.apic_timer.hz() / 1_000_000,
        clocks.apic_timer.hz() / 1000 % 1000,
        clocks.tick_hz
    );
    Ok(apic_info.id)
}

/// Waits for the next interrupt with interrupts enabled (`sti; hlt`, atomically).
pub fn wait_for_interrupt() {
    ::x86_64::instructions::interrupts::enable_and_hlt();
}

/// Whether interrupts are enabled on this CPU.
pub fn interrupts_enabled() -> bool {
    ::x86_64::instructions::interrupts::are_enabled()
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
#[inline(always)]
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
