//! Time from the generic timer's virtual counter (`CNTVCT_EL0`), which runs at `CNTFRQ_EL0` Hz
//! from reset on every CPU alike, and the tick from its virtual timer (`CNTV_*`).

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVCT_EL0, Readable, Writeable};

/// The cycle counter: the generic timer's virtual count.
pub fn counter() -> u64 {
    CNTVCT_EL0.get()
}

/// The counter's frequency in Hz, as the firmware set it (0 when it did not).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The frequency of [`counter`], once known.
pub fn counter_frequency() -> Option<crate::time::Frequency> {
    crate::time::Frequency::new(frequency())
}

/// Nanoseconds since the kernel's first instruction, or `None` when the counter's frequency is
/// unknown.
pub fn monotonic_ns() -> Option<u64> {
    let hz = frequency();
    if hz == 0 {
        return None;
    }
    let ticks = counter().wrapping_sub(super::boot::boot_counter());
    Some((u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64)
}

static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_NS: AtomicU64 = AtomicU64::new(0);
/// Counter ticks per timer tick.
static PERIOD: AtomicU64 = AtomicU64::new(0);

/// Timer ticks counted since the tick started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// The tick counter itself, for code that must read it without a call (see
/// `cpu::wait_for_tick_below_stack`).
pub fn ticks_word() -> &'static AtomicU64 {
    &TICKS
}

/// The tick period in nanoseconds (0 before the tick starts).
pub fn tick_ns() -> u64 {
    TICK_NS.load(Ordering::Relaxed)
}

/// Starts the virtual timer ticking at `tick_hz` on this CPU: its compare value one period
/// ahead, enabled and unmasked. Its interrupt must be enabled at the GIC for ticks to arrive.
pub fn start_tick(tick_hz: u32) -> Result<(), &'static str> {
    let hz = frequency();
    if hz == 0 {
        return Err("the firmware left CNTFRQ_EL0 at 0: the counter's frequency is unknown");
    }
    let period = hz / u64::from(tick_hz.max(1));
    if period == 0 {
        return Err("the tick rate is above the counter's frequency");
    }
    PERIOD.store(period, Ordering::Relaxed);
    TICK_NS.store(period * 1_000_000_000 / hz, Ordering::Relaxed);
    CNTV_CVAL_EL0.set(counter() + period);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    Ok(())
}

/// Counts a tick (the boot CPU's, through `interrupts::on_timer`).
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Called from the timer interrupt on every CPU: sets this CPU's next tick a period after this
/// one (or after now, when ticks were missed), which also clears the interrupt.
pub fn rearm() {
    let period = PERIOD.load(Ordering::Relaxed);
    let next = CNTV_CVAL_EL0.get().wrapping_add(period).max(counter().wrapping_add(1));
    CNTV_CVAL_EL0.set(next);
}
