//! How a Mica boot's counts become guest instructions under `-icount shift=0`.
//!
//! With instruction counting, QEMU's virtual clock advances one nanosecond per retired guest
//! instruction. What the kernel reads follows from that per architecture:
//!
//! - x86_64: the TSC advances once per instruction; the kernel calibrates its rate against the
//!   PIT (which runs on the virtual clock) and prints `time: TSC N MHz`, so a tick is one
//!   instruction and a nanosecond of the monotonic clock is `N / 1000` of them.
//! - aarch64: the generic counter runs at the rate CNTFRQ_EL0 gives (`time: generic counter N
//!   MHz`, 62.5 MHz on QEMU 7.2's `virt`) off the virtual clock, so a tick is `1000 / N`
//!   instructions (16 there: counts are exact to that) and a nanosecond is one.

use serde::Serialize;

/// The counter a boot's `time:` line names and what it is worth in instructions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InstructionClock {
    /// `TSC` or `generic counter`.
    pub counter: &'static str,
    /// Its rate in MHz, as the kernel printed it.
    pub counter_mhz: f64,
    /// Guest instructions per counter tick.
    pub per_tick: f64,
    /// Guest instructions per nanosecond of the guest's monotonic clock.
    pub per_ns: f64,
}

impl InstructionClock {
    /// `ticks` of the counter in instructions.
    pub fn ticks(&self, ticks: u64) -> u64 {
        (ticks as f64 * self.per_tick).round() as u64
    }

    /// `ns` of the monotonic clock in instructions.
    pub fn ns(&self, ns: u64) -> f64 {
        ns as f64 * self.per_ns
    }
}

/// The instruction clock of a boot, from the kernel's `time:` line in `serial`.
pub fn of_boot(serial: &str) -> Option<InstructionClock> {
    serial.lines().find_map(|line| {
        let rest = &line[line.find("time: ")? + "time: ".len()..];
        let (counter, rest) = if let Some(rest) = rest.strip_prefix("TSC ") {
            ("TSC", rest)
        } else {
            ("generic counter", rest.strip_prefix("generic counter ")?)
        };
        let mhz: f64 = rest.split_whitespace().next()?.parse().ok()?;
        if mhz <= 0.0 {
            return None;
        }
        Some(match counter {
            "TSC" => InstructionClock { counter, counter_mhz: mhz, per_tick: 1.0, per_ns: mhz / 1000.0 },
            _ => InstructionClock { counter, counter_mhz: mhz, per_tick: 1000.0 / mhz, per_ns: 1.0 },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_ticks_are_instructions() {
        let clock = of_boot("[   0.01] INFO  kmain: time: TSC 1000.500 MHz; local APIC 0 timer").unwrap();
        assert_eq!((clock.counter, clock.per_tick), ("TSC", 1.0));
        assert_eq!(clock.ticks(1234), 1234);
        assert_eq!(clock.ns(2000), 2001.0);
    }

    #[test]
    fn arm_counter_ticks_are_scaled_by_its_rate() {
        let clock = of_boot("INFO time: generic counter 62.500 MHz; GICv3 (distributor 0x8000000)").unwrap();
        assert_eq!((clock.counter, clock.per_tick, clock.per_ns), ("generic counter", 16.0, 1.0));
        assert_eq!(clock.ticks(10), 160);
        assert_eq!(clock.ns(480), 480.0);
    }

    #[test]
    fn no_time_line_no_clock() {
        assert_eq!(of_boot("mica: ready\ntime: TSC fast MHz"), None);
        assert_eq!(of_boot("time: generic counter 0 MHz"), None);
    }
}
