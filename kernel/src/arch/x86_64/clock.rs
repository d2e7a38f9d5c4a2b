//! Time: the TSC as the monotonic clock (calibrated against the PIT), and the local APIC timer as
//! the periodic tick (calibrated in the same window). The tick is counted by the interrupt handler.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{apic, pit};
use crate::time::Frequency;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_NS: AtomicU64 = AtomicU64::new(0);
/// The local APIC timer count per tick, as calibrated on the boot CPU (every CPU's APIC timer
/// runs at the same rate).
static COUNT_PER_TICK: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Starts this CPU's timer ticking at the boot CPU's rate (an AP, once [`init`] has run).
pub fn start_ap_timer() {
    let count = COUNT_PER_TICK.load(Ordering::Relaxed);
    if count > 0 {
        apic::start_periodic(count);
    }
}

/// The calibration window: 2 ms of PIT ticks. Both clocks are compared over the same window, and
/// both follow the same (host or instruction-counted) time base under QEMU, so a short window is
/// accurate; under `-icount` it costs 2 ms of guest time, i.e. about 2 M instructions.
const CALIBRATION_PIT_TICKS: u32 = (pit::PIT_HZ / 500) as u32;

/// The cycle counter every CPU reads for CPU time and slices, and the kernel's boot timing (the
/// TSC here; under `-icount shift=0`, one count per guest instruction).
pub fn counter() -> u64 {
    rdtsc()
}

/// Reads the TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear, so it is allowed at ring 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The frequency of [`counter`], once known: the TSC's, once calibrated.
pub fn counter_frequency() -> Option<Frequency> {
    tsc_frequency()
}

/// The TSC's frequency, once calibrated.
pub fn tsc_frequency() -> Option<Frequency> {
    Frequency::new(TSC_HZ.load(Ordering::Relaxed))
}

/// Nanoseconds since the kernel's first instruction (`None` before calibration).
pub fn monotonic_ns() -> Option<u64> {
    let f = tsc_frequency()?;
    Some(f.ticks_to_ns(rdtsc().wrapping_sub(super::boot::boot_tsc())))
}

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

/// Called from the timer interrupt.
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// The outcome of calibration.
#[derive(Clone, Copy, Debug)]
pub struct ClockInfo {
    /// TSC frequency.
    pub tsc: Frequency,
    /// APIC timer input frequency (after its divider).
    pub apic_timer: Frequency,
    /// The tick rate asked for.
    pub tick_hz: u32,
    /// The APIC count per tick.
    pub count_per_tick: u32,
}

/// Why the clocks could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockError {
    /// The TSC or the APIC timer did not advance during calibration.
    NotAdvancing(&'static str),
    /// The tick rate cannot be produced by the APIC timer's 32-bit count.
    BadTickRate(u32),
}

impl core::fmt::Display for ClockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClockError::NotAdvancing(what) => write!(f, "{what} did not advance during calibration against the PIT"),
            ClockError::BadTickRate(hz) => write!(f, "a {hz} Hz tick is out of the APIC timer's range"),
        }
    }
}

/// Calibrates the TSC and the APIC timer against the PIT, then starts the periodic tick at
/// `tick_hz`. Interrupts must be disabled; the caller enables them.
pub fn init(tick_hz: u32) -> Result<ClockInfo, ClockError> {
    pit::mask_legacy_pic();
    apic::start_calibration_count(u32::MAX);
    let mut samples = [(0u64, 0u32); 2];
    let mut n = 0;
    let pit_elapsed = pit::measure(CALIBRATION_PIT_TICKS, || {
        samples[n] = (rdtsc(), apic::timer_count());
        n += 1;
    });
    let pit_ref = Frequency::new(pit::PIT_HZ).ok_or(ClockError::NotAdvancing("PIT"))?;
    let tsc = Frequency::calibrate(samples[1].0.wrapping_sub(samples[0].0), u64::from(pit_elapsed), pit_ref)
        .ok_or(ClockError::NotAdvancing("the TSC"))?;
    let apic_timer =
        Frequency::calibrate(u64::from(samples[0].1.wrapping_sub(samples[1].1)), u64::from(pit_elapsed), pit_ref)
            .ok_or(ClockError::NotAdvancing("the local APIC timer"))?;
    let count = apic_timer.hz() / u64::from(tick_hz);
    let count_per_tick = u32::try_from(count).ok().filter(|c| *c > 0).ok_or(ClockError::BadTickRate(tick_hz))?;
    TSC_HZ.store(tsc.hz(), Ordering::Relaxed);
    TICK_NS.store(apic_timer.ticks_to_ns(u64::from(count_per_tick)), Ordering::Relaxed);
    COUNT_PER_TICK.store(count_per_tick, Ordering::Relaxed);
    apic::start_periodic(count_per_tick);
    Ok(ClockInfo { tsc, apic_timer, tick_hz, count_per_tick })
}
