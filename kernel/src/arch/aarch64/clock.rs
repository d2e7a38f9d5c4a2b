//! Time from the generic timer's virtual counter (`CNTVCT_EL0`), which runs at `CNTFRQ_EL0` Hz
//! from reset on every CPU alike.

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTVCT_EL0, Readable};

/// The cycle counter: the generic timer's virtual count.
pub fn counter() -> u64 {
    CNTVCT_EL0.get()
}

/// The counter's frequency in Hz, as the firmware set it (0 when it did not).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
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
