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

/// Turns this CPU's interface to the controller on (another CPU than the boot CPU, which
/// [`init`] set up, with index `cpu`): accepting every priority, its redistributor awake (v3).
pub fn init_cpu(cpu: usize) -> Result<(), &'static str> {
    match GIC.lock().as_mut().ok_or("the GIC is not set up")? {
        // The CPU interface and the private interrupts' group registers are banked per CPU:
        // `setup` sets this CPU's (and rewrites the shared groups as they are).
        Controller::V2(v2, _) => v2.setup(),
        Controller::V3(v3) => {
            v3.init_cpu(cpu);
            GicCpuInterface::enable_group1(true);
            GicCpuInterface::set_priority_mask(0xff);
        }
    }
    Ok(())
}

/// Enables the private (per-CPU) interrupt `intid` (an SGI or a PPI) on this CPU,
/// level-triggered, at the middle priority.
pub fn enable_private(intid: u32) -> Result<(), &'static str> {
    let id = match intid {
        0..16 => IntId::sgi(intid),
        16..32 => IntId::ppi(intid - 16),
        _ => return Err("not a private interrupt"),
    };
    match GIC.lock().as_mut().ok_or("the GIC is not set up")? {
        Controller::V2(v2, _) => {
            v2.set_interrupt_priority(id, 0x80);
            if id.is_ppi() {
                v2.set_trigger(id, Trigger::Level);
            }
            v2.enable_interrupt(id, true).map_err(|_| "the GIC refused the interrupt")
        }
        Controller::V3(v3) => {
            let cpu = Some(crate::percpu::index());
            v3.set_interrupt_priority(id, cpu, 0x80).map_err(|_| "the GIC refused the priority")?;
            if id.is_ppi() {
                v3.set_trigger(id, cpu, Trigger::Level).map_err(|_| "the GIC refused the trigger")?;
            }
            v3.enable_interrupt(id, cpu, true).map_err(|_| "the GIC refused the interrupt")
        }
    }
}

/// Acknowledges the highest-priority pending interrupt: the acknowledge value (its INTID, and
/// on a GICv2 for an SGI the sending CPU in bits 10 to 12), or `None` when none is pending (a
/// spurious interrupt).
pub fn acknowledge() -> Option<u32> {
    match GIC.lock().as_mut()? {
        Controller::V2(v2, group) => v2.get_and_acknowledge_interrupt(*group).map(IntId::raw_value),
        Controller::V3(_) => {
            GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map(IntId::raw_value)
        }
    }
}

/// Ends the interrupt [`acknowledge`] returned `intid` for (lowers the priority and deactivates
/// it).
pub fn end(intid: u32) {
    match (GIC.lock().as_mut(), IntId::try_from(intid)) {
        (Some(Controller::V2(v2, group)), Ok(id)) => v2.end_interrupt(id, *group),
        (Some(Controller::V2(_, group)), Err(_)) => {
            // An SGI's acknowledge value with the sending CPU in bits 10 to 12, which `IntId`
            // cannot carry, and which the end must name again: written to GICC_EOIR (or AEOIR
            // for group 1) as it is. Dropping it instead left the interrupt active, and the CPU
            // took no interrupt of that priority again.
            let offset = if matches!(group, InterruptGroup::Group1) { 0x24 } else { 0x10 };
            if let Some(cpu_interface) = super::boot_info::platform().and_then(|p| p.gic).map(|g| g.cpu.start) {
                let eoir = core::ptr::with_exposed_provenance_mut::<u32>((cpu_interface + offset) as usize);
                // SAFETY: the register lies in the CPU interface's block the device tree names,
                // mapped as device memory (`paging::boot_devices`), and the GIC's lock is held;
                // ending the interrupt this CPU acknowledged is its purpose.
                unsafe { eoir.write_volatile(intid) };
            }
        }
        (Some(Controller::V3(_)), Ok(id)) => GicCpuInterface::end_interrupt(id, InterruptGroup::Group1),
        (Some(Controller::V3(_)), Err(_)) | (None, _) => {}
    }
}

/// The SGI that asks a CPU to run its scheduler.
pub const RESCHEDULE_SGI: u32 = 1;

/// The SGI that tells a CPU to stop for good (the kernel failed on another CPU).
pub const STOP_SGI: u32 = 2;

/// Sends software-generated interrupt `sgi` to every CPU but this one, without waiting for the
/// GIC's lock; `false` when the lock is held (by this CPU's failing code) or the GIC refused.
pub fn try_send_sgi_to_others(sgi: u32) -> bool {
    let Some(mut gic) = GIC.try_lock() else {
        return false;
    };
    let id = IntId::sgi(sgi);
    match gic.as_mut() {
        None => false,
        Some(Controller::V2(v2, _)) => {
            v2.send_sgi(id, arm_gic::gicv2::SgiTarget::All);
            true
        }
        Some(Controller::V3(_)) => {
            GicCpuInterface::send_sgi(id, arm_gic::gicv3::SgiTarget::All, arm_gic::gicv3::SgiTargetGroup::CurrentGroup1)
                .is_ok()
        }
    }
}

/// Sends software-generated interrupt `sgi` (0 to 15) to the CPU whose MPIDR affinity is `mpidr`.
pub fn send_sgi(sgi: u32, mpidr: u32) -> Result<(), &'static str> {
    let id = IntId::sgi(sgi);
    let [aff0, aff1, aff2, _] = mpidr.to_le_bytes();
    match GIC.lock().as_mut().ok_or("the GIC is not set up")? {
        Controller::V2(v2, _) => {
            // A GICv2 names up to eight CPU interfaces; on `virt` interface n is the CPU of
            // affinity 0 n.
            let target = arm_gic::gicv2::SgiTarget::List {
                target_list_filter: arm_gic::gicv2::SgiTargetListFilter::CPUTargetList,
                target_list: 1 << (aff0 & 7),
            };
            v2.send_sgi(id, target);
            Ok(())
        }
        Controller::V3(_) => {
            let target = arm_gic::gicv3::SgiTarget::List {
                affinity3: 0,
                affinity2: aff2,
                affinity1: aff1,
                target_list: 1 << (aff0 & 15),
            };
            GicCpuInterface::send_sgi(id, target, arm_gic::gicv3::SgiTargetGroup::CurrentGroup1)
                .map_err(|_| "the GIC refused the SGI")
        }
    }
}

/// Sets shared peripheral interrupt `intid` up for the CPU whose MPIDR affinity is `mpidr`:
/// level-triggered, middle priority, routed to it, and disabled (masked) until
/// [`enable_shared`].
pub fn route_shared(intid: u32, mpidr: u32) -> Result<(), &'static str> {
    let id = shared(intid)?;
    match GIC.lock().as_mut().ok_or("the GIC is not set up")? {
        Controller::V2(v2, group) => {
            v2.enable_interrupt(id, false).map_err(|_| "the GIC refused the interrupt")?;
            v2.set_interrupt_priority(id, 0x80);
            v2.set_trigger(id, Trigger::Level);
            v2.set_group(id, *group);
            let distributor = platform_distributor()?;
            // GICD_ITARGETSR<n>, one byte per interrupt from offset 0x800: the CPU interfaces the
            // interrupt goes to (the `arm-gic` driver does not set targets). On `virt`, interface
            // n is the CPU of affinity 0 n.
            let target =
                core::ptr::with_exposed_provenance_mut::<u8>((distributor + 0x800 + u64::from(intid)) as usize);
            // SAFETY: the byte lies in the distributor's register block the device tree names,
            // mapped as device memory (`paging::boot_devices`); writing a target is its purpose.
            unsafe { target.write_volatile(1 << (mpidr & 7)) };
            Ok(())
        }
        Controller::V3(v3) => {
            v3.enable_interrupt(id, None, false).map_err(|_| "the GIC refused the interrupt")?;
            v3.set_interrupt_priority(id, None, 0x80).map_err(|_| "the GIC refused the priority")?;
            v3.set_trigger(id, None, Trigger::Level).map_err(|_| "the GIC refused the trigger")?;
            v3.distributor().set_routing(id, Some(u64::from(mpidr))).map_err(|_| "the GIC refused the routing")
        }
    }
}

/// Enables (`true`) or disables shared peripheral interrupt `intid`.
pub fn enable_shared(intid: u32, enable: bool) -> Result<(), &'static str> {
    let id = shared(intid)?;
    let refused = "the GIC refused the interrupt";
    match GIC.lock().as_mut().ok_or("the GIC is not set up")? {
        Controller::V2(v2, _) => v2.enable_interrupt(id, enable).map_err(|_| refused),
        Controller::V3(v3) => v3.enable_interrupt(id, None, enable).map_err(|_| refused),
    }
}

/// `intid` as a shared peripheral interrupt.
fn shared(intid: u32) -> Result<IntId, &'static str> {
    IntId::try_from(intid).ok().filter(|i| i.is_spi()).ok_or("not a shared peripheral interrupt")
}

/// The distributor's physical (identity-mapped) address.
fn platform_distributor() -> Result<u64, &'static str> {
    super::boot_info::platform().and_then(|p| p.gic).map(|g| g.distributor.start).ok_or("no GIC in the device tree")
}
