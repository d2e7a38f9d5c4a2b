//! Interrupt lines and inter-processor interrupts as the rest of the kernel sees them, on
//! aarch64: a device line is a GIC shared peripheral interrupt (its INTID, as the device tree
//! numbers it), routed to the CPU that asked; a CPU is named by its MPIDR affinity; a reschedule
//! is the SGI [`gic::RESCHEDULE_SGI`].

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use super::gic;

/// The most device slots the IRQ path dispatches (the slot a line was routed for).
const MAX_LINES: usize = 64;

/// Which INTID each device slot's line is (0: none).
static LINES: [AtomicU32; MAX_LINES] = [const { AtomicU32::new(0) }; MAX_LINES];

/// This CPU's id on the interrupt controller: its MPIDR affinity (Aff2.Aff1.Aff0).
pub fn this_cpu() -> u32 {
    let mpidr: u64;
    // SAFETY: reads a register into a local.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack, preserves_flags)) };
    (mpidr & 0xff_ffff) as u32
}

/// Asks the CPU whose interrupt-controller id is `cpu` to run its scheduler.
pub fn send_reschedule(cpu: u32) {
    if let Err(e) = gic::send_sgi(gic::RESCHEDULE_SGI, cpu) {
        log::warn!("irq: no reschedule for CPU {cpu:#x}: {e}");
    }
}

/// Tells every other CPU to stop ([`crate::panic::stop_other_cpus`]): the SGI
/// [`gic::STOP_SGI`]. A CPU spinning with interrupts masked does not take it (there is no
/// pseudo-NMI here). Returns whether the signal went out.
pub fn signal_stop_others() -> bool {
    gic::try_send_sgi_to_others(gic::STOP_SGI)
}

/// Sets up the controllers of device lines: the GIC, already set up with the tick; returns 1.
pub fn init_device_lines() -> usize {
    1
}

/// Where a device line was routed, for the log: `INTID 48 -> slot 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    line: u32,
    slot: usize,
}

impl fmt::Display for Routed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INTID {} -> slot {}", self.line, self.slot)
    }
}

/// Routes device line `line` (an SPI's INTID) to this CPU, masked, so that it calls
/// [`crate::hw::on_interrupt`]`(slot)` once unmasked; `None` when the GIC refuses it or the slot
/// is beyond what the IRQ path dispatches.
pub fn route_device_line(line: u32, slot: usize) -> Option<Routed> {
    let entry = LINES.get(slot)?;
    if let Err(e) = gic::route_shared(line, this_cpu()) {
        log::warn!("irq: INTID {line}: {e}");
        return None;
    }
    entry.store(line, Ordering::Release);
    Some(Routed { line, slot })
}

/// Masks (`true`) or unmasks device line `line`.
pub fn mask_device_line(line: u32, masked: bool) {
    if let Err(e) = gic::enable_shared(line, !masked) {
        log::warn!("irq: INTID {line}: {e}");
    }
}

/// The device slot whose line is `intid`, if one was routed.
pub fn slot_of(intid: u32) -> Option<usize> {
    LINES.iter().position(|l| l.load(Ordering::Acquire) == intid)
}

/// The virtio-mmio transports the platform describes (the device tree's, with their INTIDs as
/// lines), for the kernel to look for devices in when the command line names none.
pub fn platform_virtio_mmio() -> Option<alloc::vec::Vec<crate::cmdline::MmioDevice>> {
    let platform = super::boot_info::platform()?;
    Some(
        platform
            .virtio_transports()
            .filter_map(|t| {
                Some(crate::cmdline::MmioDevice {
                    base: t.regs.start,
                    size: u32::try_from(t.regs.len()).ok()?,
                    gsi: t.intid,
                })
            })
            .collect(),
    )
}
