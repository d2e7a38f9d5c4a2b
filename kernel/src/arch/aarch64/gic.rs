//! The generic interrupt controller, v2 or v3 as the device tree says, through the `arm-gic`
//! driver: set up once on the boot CPU, then each interrupt acknowledged and ended by the IRQ
//! handler.

use core::ptr::NonNull;

use arm_gic::gicv2::GicV2;
use arm_gic::gicv3::{GicCpuInterface, GicV3};
use arm_gic::{IntId, InterruptGroup, Trigger, UniqueMmioPointer};

use super::boot_info::Gic;
use crate::irq_lock::IrqMutex;

/// The controller, with the group its interrupts are in.
enum Controller {
    V2(GicV2<'static>, InterruptGroup),
    V3(GicV3<'static>),
}

// SAFETY: the driver holds pointers to the controller's registers, which any CPU may use; every
// use goes through `GIC`'s lock.
unsafe impl Send for Controller {}

static GIC: IrqMutex<Option<Controller>> = IrqMutex::new(None);

/// Sets the controller up for `cpus` CPUs (the boot CPU first): every interrupt disabled, the
/// boot CPU's interface on and accepting every priority.
pub fn init(gic: &Gic, cpus: usize) -> Result<(), &'static str> {
    let controller = match gic.version {
        2 => {
            // SAFETY: the device tree names these as the distributor's and the CPU interface's
            // registers; the boot map maps the low 1 GiB as device memory, and this driver is
            // their only user.
            let mut v2 = unsafe { GicV2::new(gic.distributor.start as *mut _, gic.cpu.start as *mut _) };
            if v2.typer().has_security_extension() {
                return Err("a GICv2 with the security extensions, seen from the non-secure side: not supported yet");
            }
            v2.setup();
            v2.enable_all_interrupts(false);
            Controller::V2(v2, InterruptGroup::Group0)
        }
        3 => {
            let gicd = NonNull::new(gic.distributor.start as *mut _).ok_or("the GIC distributor is at address 0")?;
            let gicr = NonNull::new(gic.cpu.start as *mut _).ok_or("the GIC redistributors are at address 0")?;
            // SAFETY: as above, for the distributor and the redistributors.
            let mut v3 = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, cpus.max(1)) }
                .map_err(|_| "the GIC redistributors do not answer")?;
            v3.setup(0);
            v3.enable_all_interrupts(false);
            GicCpuInterface::set_priority_mask(0xff);
            Controller::V3(v3)
        }
        _ => return Err("a GIC of a version other than 2 or 3"),
    };
    *GIC.lock() = Some(controller);
    Ok(())
}

/// Enables the private (per-CPU) interrupt `intid` on the boot CPU, level-triggered, at the
/// middle priority.
pub fn enable_private(intid: u32) -> Result<(), &'static str> {
    let id = IntId::ppi(intid.checked_sub(16).ok_or("an SGI is not a private peripheral interrupt")?);
    match GIC.lock().as_mut().ok_or("the GIC is not set up")? {
        Controller::V2(v2, _) => {
            v2.set_interrupt_priority(id, 0x80);
            v2.set_trigger(id, Trigger::Level);
            v2.enable_interrupt(id, true).map_err(|_| "the GIC refused the interrupt")
        }
        Controller::V3(v3) => {
            v3.set_interrupt_priority(id, Some(0), 0x80).map_err(|_| "the GIC refused the priority")?;
            v3.set_trigger(id, Some(0), Trigger::Level).map_err(|_| "the GIC refused the trigger")?;
            v3.enable_interrupt(id, Some(0), true).map_err(|_| "the GIC refused the interrupt")
        }
    }
}

/// Acknowledges the highest-priority pending interrupt: its INTID, or `None` when none is
/// pending (a spurious interrupt).
pub fn acknowledge() -> Option<u32> {
    match GIC.lock().as_mut()? {
        Controller::V2(v2, group) => v2.get_and_acknowledge_interrupt(*group).map(IntId::raw_value),
        Controller::V3(_) => {
            GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map(IntId::raw_value)
        }
    }
}

/// Ends interrupt `intid` (lowers the priority and deactivates it).
pub fn end(intid: u32) {
    let Ok(id) = IntId::try_from(intid) else { return };
    match GIC.lock().as_mut() {
        Some(Controller::V2(v2, group)) => v2.end_interrupt(id, *group),
        Some(Controller::V3(_)) => GicCpuInterface::end_interrupt(id, InterruptGroup::Group1),
        None => {}
    }
}
