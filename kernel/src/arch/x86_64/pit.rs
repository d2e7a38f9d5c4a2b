//! The legacy 8254 PIT, used only as the known-frequency reference that the TSC and the local
//! APIC timer are calibrated against. It is polled (channel 0 read back through the latch
//! command), never used for interrupts; the 8259 PIC is masked.

use x86_64::instructions::port::Port;

use crate::time::down_counter_elapsed;

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL0: u16 = 0x40;
const COMMAND: u16 = 0x43;
const PIC1_DATA: u16 = 0x21;
const PIC2_DATA: u16 = 0xa1;

/// Masks every line of both 8259 PICs so that nothing arrives through them.
pub fn mask_legacy_pic() {
    // SAFETY: writing the PIC data ports (in the operational state, OCW1) only sets the
    // interrupt masks.
    unsafe {
        Port::<u8>::new(PIC1_DATA).write(0xff);
        Port::<u8>::new(PIC2_DATA).write(0xff);
    }
}

fn read_channel0() -> u16 {
    // SAFETY: the latch command for channel 0 followed by two reads of its data port (low, high)
    // only reads the counter; interrupts are off during calibration so nothing interleaves.
    unsafe {
        Port::<u8>::new(COMMAND).write(0x00);
        let lo = Port::<u8>::new(CHANNEL0).read();
        let hi = Port::<u8>::new(CHANNEL0).read();
        u16::from_le_bytes([lo, hi])
    }
}

/// Runs channel 0 as a free-running rate generator with the full 65536 period.
fn start_channel0() {
    // SAFETY: programming channel 0 (mode 2, lobyte/hibyte, reload 0 = 65536) changes only the
    // PIT, whose interrupt line is masked at the PIC.
    unsafe {
        Port::<u8>::new(COMMAND).write(0b0011_0100);
        Port::<u8>::new(CHANNEL0).write(0);
        Port::<u8>::new(CHANNEL0).write(0);
    }
}

/// Busy-waits until `pit_ticks` PIT ticks have passed, calling `sample` once at the start and
/// once at the end; returns the PIT ticks actually elapsed (at least `pit_ticks`).
pub fn measure(pit_ticks: u32, mut sample: impl FnMut()) -> u32 {
    start_channel0();
    // The first read after programming may see the counter before it is loaded.
    let mut previous = read_channel0();
    while read_channel0() == previous {
        core::hint::spin_loop();
    }
    previous = read_channel0();
    sample();
    let mut elapsed = 0;
    while elapsed < pit_ticks {
        let now = read_channel0();
        elapsed += down_counter_elapsed(previous, now, 65536);
        previous = now;
    }
    sample();
    elapsed
}
