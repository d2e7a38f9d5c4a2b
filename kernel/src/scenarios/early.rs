//! The boot tests that need only the phases every architecture has: a fault's report and the
//! tick.

use alloc::format;
use alloc::string::String;

use crate::arch::{self, clock};
use crate::kprintln;

/// A read of an unmapped address: reported as the kernel's own fault, and the run ends "failed".
pub(super) fn page_fault() -> Result<(), String> {
    // In the wasm region: a fault there at an instruction of wasm code is a wasm trap, but this
    // is the kernel's own instruction, so it must still be reported as a kernel fault.
    let addr = 0x0000_7eed_beef_0000u64;
    ensure!(crate::mem::paging::translate(addr).is_none(), "{addr:#x} is unexpectedly mapped");
    // SAFETY: not safe at all, deliberately: the address is unmapped (checked above), so the read
    // faults and the page fault handler reports it and ends the run.
    let value = unsafe { core::ptr::read_volatile(addr as *const u64) };
    Err(format!("reading unmapped {addr:#x} returned {value:#x} instead of faulting"))
}

/// The tick: 50 ticks counted while this CPU waits for interrupts, checked against the
/// monotonic clock (the two are set up independently) and against the number of wake-ups (idle
/// means waiting, not spinning).
pub(super) fn timer() -> Result<(), String> {
    const TICKS: u64 = 50;
    let tick_ns = clock::tick_ns();
    ensure!(tick_ns > 0, "the tick is not running");
    // Start on a tick edge.
    let first = clock::ticks();
    while clock::ticks() == first {
        arch::wait_for_interrupt();
    }
    let (k0, t0) = (clock::ticks(), clock::monotonic_ns().ok_or("no monotonic clock")?);
    let mut wakeups = 0u64;
    let mut last = t0;
    while clock::ticks() < k0 + TICKS {
        arch::wait_for_interrupt();
        wakeups += 1;
        let now = clock::monotonic_ns().ok_or("no monotonic clock")?;
        ensure!(now >= last, "monotonic clock went backwards: {last} -> {now} ns");
        last = now;
    }
    let (k1, t1) = (clock::ticks(), clock::monotonic_ns().ok_or("no monotonic clock")?);
    let elapsed = t1 - t0;
    let expected = (k1 - k0) * tick_ns;
    let deviation = elapsed.abs_diff(expected);
    kprintln!(
        "mica: timer: {} ticks of {} us in {} us by the monotonic clock ({}.{}% apart), {wakeups} wake-ups from waiting",
        k1 - k0,
        tick_ns / 1000,
        elapsed / 1000,
        deviation * 100 / expected,
        deviation * 1000 / expected % 10
    );
    ensure!(k1 - k0 >= TICKS, "ticks did not advance");
    // The two clocks are calibrated independently; they must agree. The bound is loose because
    // under TCG the host may delay the interrupt that ends the window.
    ensure!(
        deviation * 4 <= expected,
        "the tick count ({expected} ns) and the monotonic clock ({elapsed} ns) disagree"
    );
    // Idle means waiting (hlt, wfi): the loop above woke up once per interrupt, not millions of times.
    ensure!(wakeups <= (k1 - k0) + 2, "{wakeups} wake-ups for {} ticks: the idle loop is not halting", k1 - k0);
    Ok(())
}
