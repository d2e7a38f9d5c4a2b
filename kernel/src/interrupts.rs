//! What the kernel does on an interrupt or a recoverable fault, whatever the architecture: the
//! architecture's trap code decodes the event and calls these, passing how to end the interrupt
//! at its controller. The policy lives here, once: the tick's accounting and preemption, device
//! interrupts waking their drivers, and the page faults the kernel resolves itself.

use crate::arch;

/// The periodic timer fired on this CPU. Every CPU ticks; the clock's tick count and the
/// engines' epochs follow the boot CPU's. `end_of_interrupt` runs before the scheduler may switch
/// threads (returning here only when this one runs again).
pub fn on_timer(end_of_interrupt: impl FnOnce()) {
    if crate::percpu::index() == 0 {
        arch::clock::on_tick();
        crate::wasm::on_tick();
    }
    end_of_interrupt();
    crate::sched::on_tick();
}

/// Another CPU asked this one to run its scheduler.
pub fn on_reschedule(end_of_interrupt: impl FnOnce()) {
    end_of_interrupt();
    crate::sched::on_reschedule();
}

/// The interrupt of device slot `slot`: the device's line is masked or acknowledged and its
/// driver's thread woken before the end of the interrupt (the line is level-triggered), and the
/// scheduler may then switch to that thread.
pub fn on_device(slot: usize, end_of_interrupt: impl FnOnce()) {
    crate::hw::on_interrupt(slot);
    end_of_interrupt();
    crate::sched::on_device_interrupt();
}

/// A page fault at `addr` the kernel may resolve itself (`present`: the page was mapped; `write`:
/// the access was a write). Returns whether it did, and the access should run again:
/// - the first touch of a committed wasm page (by wasm code or the kernel) maps its frame;
/// - a thread's stack growing into a committed page for the first time likewise;
/// - a write to a copy-on-write page of a memory image gives that page its private copy.
pub fn resolve_page_fault(addr: u64, present: bool, write: bool) -> bool {
    if !present {
        crate::wasm::vmem::populate(addr) || crate::mem::stacks::populate(addr)
    } else {
        write && crate::wasm::vmem::copy_on_write(addr)
    }
}
