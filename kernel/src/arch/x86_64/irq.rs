//! Interrupt lines and inter-processor interrupts as the rest of the kernel sees them, on
//! x86_64: a device line is an I/O APIC input (a GSI), delivered to the local APIC of the CPU
//! it is routed to as vector [`traps::DEVICE_VECTOR_BASE`] + the device's slot; a CPU is named by
//! its local APIC id; a reschedule is the IPI [`traps::RESCHEDULE_VECTOR`].

use core::fmt;

use super::{apic, ioapic, traps};

/// This CPU's id on the interrupt controller (its local APIC id).
pub fn this_cpu() -> u32 {
    apic::id()
}

/// Asks the CPU whose interrupt-controller id is `cpu` to run its scheduler.
pub fn send_reschedule(cpu: u32) {
    apic::send_to(cpu, traps::RESCHEDULE_VECTOR);
}

/// Tells every other CPU to stop ([`crate::panic::stop_other_cpus`]): an NMI, which a CPU takes
/// even with interrupts off. Returns whether the signal went out.
pub fn signal_stop_others() -> bool {
    apic::send_nmi_to_others();
    true
}

/// Sets up the controllers of device lines (the I/O APICs); returns how many were found.
pub fn init_device_lines() -> usize {
    ioapic::init()
}

/// Where a device line was routed, for the log: `GSI 47 -> vector 0x57`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    line: u32,
    vector: u8,
}

impl fmt::Display for Routed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GSI {} -> vector {:#x}", self.line, self.vector)
    }
}

/// Routes device line `line` to this CPU, masked, so that it calls
/// [`crate::hw::on_interrupt`]`(slot)` once unmasked; `None` when no controller serves the line.
pub fn route_device_line(line: u32, slot: usize) -> Option<Routed> {
    let vector = traps::DEVICE_VECTOR_BASE + u8::try_from(slot).ok()?;
    ioapic::route(line, vector, apic::id()).then_some(Routed { line, vector })
}

/// Masks (`true`) or unmasks device line `line`.
pub fn mask_device_line(line: u32, masked: bool) {
    ioapic::set_masked(line, masked);
}

/// The virtio-mmio transports of the platform: `microvm`'s fixed slots, which the kernel probes.
pub fn platform_virtio_mmio() -> Option<alloc::vec::Vec<crate::cmdline::MmioDevice>> {
    Some(super::microvm::virtio_transports())
}
