//! The local APIC (xAPIC, memory-mapped): enabled at boot, its timer used as the periodic tick.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::model_specific::Msr;

use super::traps::{SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::mem::Protection;
use crate::mem::paging::{self, PageSize, PagingError};

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;

const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SPURIOUS: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
/// ICR: delivery status (send pending).
const ICR_PENDING: u32 = 1 << 12;
/// ICR: INIT, level assert.
const ICR_INIT: u32 = 0x4500;
/// ICR: STARTUP, with the vector (the start page) in the low byte.
const ICR_STARTUP: u32 = 0x4600;

const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;
/// The divider the timer runs with.
pub const TIMER_DIVIDER: u64 = 16;

static BASE: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    debug_assert_ne!(base, 0, "APIC used before apic::init");
    // SAFETY: `base` is the APIC's register page, mapped uncached by `init`; `reg` is a register
    // offset inside it, and APIC registers are read as aligned 32-bit words.
    unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
}

fn write(reg: u32, value: u32) {
    let base = BASE.load(Ordering::Relaxed);
    debug_assert_ne!(base, 0, "APIC used before apic::init");
    // SAFETY: as in `read`; APIC registers are written as aligned 32-bit words.
    unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value) }
}

/// The boot CPU's local APIC.
#[derive(Clone, Copy, Debug)]
pub struct ApicInfo {
    /// Physical address of the register page.
    pub base: u64,
    /// APIC id.
    pub id: u32,
    /// Version register.
    pub version: u32,
}

/// Maps the APIC's registers, enables it with a spurious vector, and masks its timer.
pub fn init() -> Result<ApicInfo, PagingError> {
    let msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU with an APIC (all of them).
    let value = unsafe { msr.read() };
    let base = value & 0x000f_ffff_ffff_f000;
    // SAFETY: IA32_APIC_BASE names the local APIC's register page, which no RAM overlaps; it
    // is reached only through volatile accesses (`read`, `write`).
    unsafe { paging::map(base, base, PageSize::Small, Protection::READ | Protection::WRITE | Protection::UNCACHED) }?;
    if value & APIC_GLOBAL_ENABLE == 0 {
        let mut msr = msr;
        // SAFETY: setting the global enable bit keeps the base address; the APIC is then usable.
        unsafe { msr.write(value | APIC_GLOBAL_ENABLE) };
    }
    BASE.store(base, Ordering::Relaxed);
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
    Ok(ApicInfo { base, id: read(REG_ID) >> 24, version: read(REG_VERSION) & 0xff })
}

/// Starts the timer counting down from `count` in one-shot mode, masked (for calibration).
pub fn start_calibration_count(count: u32) {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
}

/// The timer's current count.
pub fn timer_count() -> u32 {
    read(REG_TIMER_CURRENT)
}

/// Runs the timer periodically, raising [`TIMER_VECTOR`] every `count` timer ticks.
pub fn start_periodic(count: u32) {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
}

/// Signals the end of the current interrupt.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Sends an IPI: `command` to APIC `dest`, waiting until the APIC has sent it.
fn send_ipi(dest: u32, command: u32) {
    // Interrupts off: an IPI sent from an interrupt between the two writes would change the
    // destination under this one.
    x86_64::instructions::interrupts::without_interrupts(|| {
        write(REG_ICR_HIGH, dest << 24);
        write(REG_ICR_LOW, command);
        while read(REG_ICR_LOW) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
    });
}

/// Sends INIT to APIC `dest` (an AP then waits for a STARTUP).
pub fn send_init(dest: u32) {
    send_ipi(dest, ICR_INIT);
}

/// Sends STARTUP to APIC `dest`: the AP starts in real mode at `vector` * 4096.
pub fn send_startup(dest: u32, vector: u8) {
    send_ipi(dest, ICR_STARTUP | u32::from(vector));
}

/// Enables an AP's local APIC (the registers sit at the same address on every CPU, mapped by
/// [`init`] on the boot CPU) with its timer masked.
pub fn init_ap() {
    let msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU with an APIC.
    let value = unsafe { msr.read() };
    if value & APIC_GLOBAL_ENABLE == 0 {
        let mut msr = msr;
        // SAFETY: setting the global enable bit keeps the base address.
        unsafe { msr.write(value | APIC_GLOBAL_ENABLE) };
    }
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// ICR: fixed delivery to all CPUs but this one.
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18;

/// ICR: NMI delivery (the vector is ignored).
const ICR_NMI: u32 = 0b100 << 8;

/// Sends an NMI to every other CPU: taken even with interrupts off.
pub fn send_nmi_to_others() {
    send_ipi(0, ICR_ALL_BUT_SELF | ICR_NMI);
}

/// Sends interrupt `vector` to every other CPU.
pub fn send_to_others(vector: u8) {
    send_ipi(0, ICR_ALL_BUT_SELF | u32::from(vector));
}

/// Sends interrupt `vector` to the CPU whose APIC id is `dest`.
pub fn send_to(dest: u32, vector: u8) {
    send_ipi(dest, u32::from(vector));
}
