//! Clock arithmetic: turning counter deltas into nanoseconds and calibrating one counter against
//! another. The counters themselves (TSC, APIC timer, PIT) live in the arch code.

/// A counter of known frequency, such as the TSC once calibrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frequency {
    hz: u64,
}

impl Frequency {
    /// A frequency of `hz` ticks per second; `None` for zero.
    pub const fn new(hz: u64) -> Option<Frequency> {
        if hz == 0 { None } else { Some(Frequency { hz }) }
    }

    /// Ticks per second.
    pub const fn hz(&self) -> u64 {
        self.hz
    }

    /// Nanoseconds for `ticks` ticks (exact to the nanosecond, no overflow for 2^64 ticks).
    pub const fn ticks_to_ns(&self, ticks: u64) -> u64 {
        let ns = ticks as u128 * 1_000_000_000 / self.hz as u128;
        if ns > u64::MAX as u128 { u64::MAX } else { ns as u64 }
    }

    /// Ticks in `ns` nanoseconds, rounded down.
    pub const fn ns_to_ticks(&self, ns: u64) -> u64 {
        let t = ns as u128 * self.hz as u128 / 1_000_000_000;
        if t > u64::MAX as u128 { u64::MAX } else { t as u64 }
    }

    /// The frequency of a counter that advanced `ticks` while a reference of frequency
    /// `reference` advanced `reference_ticks`; `None` when either delta is zero.
    pub const fn calibrate(ticks: u64, reference_ticks: u64, reference: Frequency) -> Option<Frequency> {
        if reference_ticks == 0 {
            return None;
        }
        let hz = ticks as u128 * reference.hz as u128 / reference_ticks as u128;
        if hz > u64::MAX as u128 { None } else { Frequency::new(hz as u64) }
    }
}

/// How many PIT ticks elapsed between two reads of a down-counter that wraps every `period`.
pub const fn down_counter_elapsed(previous: u16, current: u16, period: u32) -> u32 {
    let (p, c) = (previous as u32, current as u32);
    if c <= p { p - c } else { p + period - c }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let f = Frequency::new(2_500_000_000).expect("nonzero");
        assert_eq!(f.ticks_to_ns(2_500_000_000), 1_000_000_000);
        assert_eq!(f.ticks_to_ns(5), 2);
        assert_eq!(f.ns_to_ticks(1_000), 2_500);
        assert_eq!(f.ticks_to_ns(u64::MAX), 7_378_697_629_483_820_646);
        assert_eq!(Frequency::new(0), None);
    }

    #[test]
    fn calibration() {
        let pit = Frequency::new(1_193_182).expect("nonzero");
        // 2 ms of PIT ticks while a 1 GHz counter advanced 2,000,000.
        let f = Frequency::calibrate(2_000_000, 2_386, pit).expect("calibrated");
        assert!((f.hz() as i64 - 1_000_000_000).abs() < 1_000_000, "{}", f.hz());
        assert_eq!(Frequency::calibrate(1, 0, pit), None);
        assert_eq!(Frequency::calibrate(0, 10, pit), None);
    }

    #[test]
    fn down_counter_wraps() {
        assert_eq!(down_counter_elapsed(1000, 400, 65536), 600);
        assert_eq!(down_counter_elapsed(100, 65000, 65536), 636);
        assert_eq!(down_counter_elapsed(5, 5, 65536), 0);
    }
}
