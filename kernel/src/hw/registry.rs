//! The device registry: the virtio-mmio devices found at boot, which instance has claimed each,
//! and the interrupt state of each device's line (set by the trap handler, waited on by the
//! claiming driver's thread).
//!
//! The kernel acknowledges a virtio-mmio interrupt in the device itself, in the handler: it reads
//! InterruptStatus and writes those bits to InterruptACK (virtio 1.2, 4.2.2), which the transport
//! defines the same way for every device type. The device then lowers its line, so the line stays
//! unmasked, and the driver learns the bits from its wait: no register access and no second host
//! call per interrupt. A line that interrupts with no status bit set (nothing to acknowledge, so
//! it would interrupt again at once) is masked until the driver waits again.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use spin::Once;

use super::names::{self, mmio};
use crate::arch::irq;
use crate::cmdline::MmioDevice;
use crate::irq_lock::IrqMutex;
use crate::mem::mmio::Window;
use crate::sched;

/// A device found at boot.
#[derive(Debug)]
pub(super) struct Device {
    /// Its manifest name (`virtio-blk.0`, ...).
    pub(super) name: String,
    /// Its virtio device id.
    pub(super) device_id: u32,
    /// Its register window.
    pub(super) window: Window,
    gsi: u32,
    /// Its slot: the index of its interrupt state and vector.
    slot: usize,
}

/// Every device found, in the order the machine presents them.
static DEVICES: Once<Vec<Device>> = Once::new();
/// Which instance (by its id) holds each device, by index into [`DEVICES`].
static CLAIMS: IrqMutex<Vec<Option<u64>>> = IrqMutex::new(Vec::new());

/// The interrupt state of one slot.
pub(super) struct Line {
    /// An interrupt came and was not yet waited for.
    pub(super) pending: AtomicBool,
    /// The waiting thread's id plus one (0: none).
    pub(super) waiter: AtomicU64,
    /// The interrupt status bits acknowledged since the driver last waited.
    pub(super) cause: AtomicU32,
    /// The line was masked because it interrupted without a cause.
    pub(super) masked: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialize LINES
const LINE: Line = Line {
    pending: AtomicBool::new(false),
    waiter: AtomicU64::new(0),
    cause: AtomicU32::new(0),
    masked: AtomicBool::new(false),
};
static LINES: [Line; MAX_DEVICES] = [LINE; MAX_DEVICES];

/// The most devices the kernel offers: each has a slot, which numbers its interrupt state here
/// and its interrupt vector on x86_64 (24 vectors, as `microvm` has transports).
pub const MAX_DEVICES: usize = 24;

/// Every device found, in the order the machine presents them (empty before [`discover`]).
pub(super) fn devices() -> &'static [Device] {
    DEVICES.get().map_or(&[], Vec::as_slice)
}

/// Finds the virtio-mmio devices and routes their interrupts (masked) to this CPU, which must
/// be the boot CPU: every transport the command line or the platform describes (`described`:
/// from `virtio_mmio.device=` words, as `mica-vmm` gives them, or the device tree's on `virt`,
/// or `microvm`'s fixed slots) is probed, in order, and the slots go to those with a device
/// plugged in. Logs what it found; returns how many.
pub fn discover(described: &[MmioDevice]) -> usize {
    let list = DEVICES.call_once(|| {
        let controllers = irq::init_device_lines();
        // (slot, device id, window, GSI): a slot numbers the device's interrupt state and vector.
        let mut found: Vec<(usize, u32, Window, u32)> = Vec::new();
        for transport in described {
            let (base, size, gsi) = (transport.base, transport.size, transport.gsi);
            let window = match Window::map(base, size) {
                Ok(window) => window,
                Err(e) => {
                    log::warn!("devices: cannot map a virtio-mmio window at {base:#x}: {e}");
                    continue;
                }
            };
            if window.read(mmio::MAGIC_VALUE, 4) != Some(u64::from(names::VIRTIO_MAGIC)) {
                continue;
            }
            // Device id 0: a transport with nothing plugged in.
            match window.read(mmio::DEVICE_ID, 4) {
                Some(0) | None => continue,
                Some(_) if found.len() == MAX_DEVICES => {
                    log::warn!("devices: more than {MAX_DEVICES} devices; the one at {base:#x} is not offered");
                }
                Some(id) => found.push((found.len(), id as u32, window, gsi)),
            }
        }
        let ids: Vec<u32> = found.iter().map(|&(_, id, _, _)| id).collect();
        let labels = names::name_devices(&ids);
        let mut devices = Vec::with_capacity(found.len());
        for ((slot, device_id, window, gsi), name) in found.into_iter().zip(labels) {
            let Some(routed) = irq::route_device_line(gsi, slot) else {
                log::warn!(
                    "devices: {name}: its interrupt (line {gsi}) has no controller ({controllers} found); not offered"
                );
                continue;
            };
            let version = window.read(mmio::VERSION, 4).unwrap_or(0);
            log::info!("devices: {name} (virtio-mmio v{version} at {:#x}, {routed})", window.base());
            devices.push(Device { name, device_id, window, gsi, slot });
        }
        devices
    });
    *CLAIMS.lock() = alloc::vec![None; list.len()];
    list.len()
}

/// The interrupt for device slot `slot` (from the trap handler): acknowledges it in the device,
/// keeps the status bits for the driver and wakes the driver's waiting thread. A line that
/// interrupts without a status bit is masked until the driver waits again.
pub fn on_interrupt(slot: usize) {
    let Some(device) = devices().iter().find(|d| d.slot == slot) else {
        log::warn!("devices: interrupt on slot {slot}, which has no device");
        return;
    };
    let line = &LINES[slot];
    let cause = device.window.read(mmio::INTERRUPT_STATUS, 4).unwrap_or(0) as u32;
    if cause == 0 {
        line.masked.store(true, Ordering::SeqCst);
        irq::mask_device_line(device.gsi, true);
    } else {
        device.window.write(mmio::INTERRUPT_ACK, 4, cause.into());
        line.cause.fetch_or(cause, Ordering::SeqCst);
    }
    line.pending.store(true, Ordering::SeqCst);
    let waiter = line.waiter.load(Ordering::SeqCst);
    if waiter != 0 {
        sched::unpark(waiter - 1);
    }
}

impl Device {
    /// The interrupt state of its line.
    pub(super) fn line(&self) -> &'static Line {
        &LINES[self.slot]
    }

    /// Its line from now on: no interrupt pending, unmasked (after a claim).
    pub(super) fn arm(&self) {
        let line = self.line();
        line.pending.store(false, Ordering::SeqCst);
        line.cause.store(0, Ordering::SeqCst);
        line.masked.store(false, Ordering::SeqCst);
        self.set_masked(false);
    }

    /// Unmasks its line if an interrupt without a cause masked it (before a driver waits).
    pub(super) fn unmask_if_quiet(&self) {
        if self.line().masked.swap(false, Ordering::SeqCst) {
            self.set_masked(false);
        }
    }

    /// Masks (`true`) or unmasks its interrupt line.
    pub(super) fn set_masked(&self, masked: bool) {
        irq::mask_device_line(self.gsi, masked);
    }
}

/// A wait on several handles (`mica:kernel/ipc.wait`) takes in the line of device `index`:
/// `thread` becomes its waiter (woken by its next interrupt), the line is unmasked if an
/// interrupt without a cause masked it, and the answer says whether an interrupt is pending
/// (one the driver's `irq.wait` has not taken). Looked at after registering, so an interrupt
/// in between is not missed.
pub fn watch_line(index: usize, thread: u64) -> bool {
    let Some(device) = devices().get(index) else { return true };
    device.unmask_if_quiet();
    let line = device.line();
    line.waiter.store(thread + 1, Ordering::SeqCst);
    line.pending.load(Ordering::SeqCst)
}

/// The wait of `thread` on device `index`'s line is over (it stays the waiter of nothing).
pub fn unwatch_line(index: usize, thread: u64) {
    if let Some(device) = devices().get(index) {
        let _ = device.line().waiter.compare_exchange(thread + 1, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Records that instance `instance` holds device `index` (into [`devices`]); if one holds it
/// already, returns that holder's id.
pub(super) fn claim(index: usize, instance: u64) -> Result<(), u64> {
    let mut claims = CLAIMS.lock();
    if let Some(holder) = claims[index] {
        return Err(holder);
    }
    claims[index] = Some(instance);
    Ok(())
}

/// Undoes a [`claim`] that could not be completed (nothing was done with the device).
pub(super) fn unclaim(index: usize) {
    CLAIMS.lock()[index] = None;
}

/// The claim on device `index` ends: resets the device (so it stops using memory), masks its
/// line, forgets its interrupt state and releases it, in that order.
pub(super) fn reset_and_release(index: usize) {
    let device = &devices()[index];
    device.window.write(mmio::STATUS, 4, 0);
    // Reading back makes sure the reset happened before the memory is reused.
    let _ = device.window.read(mmio::STATUS, 4);
    device.set_masked(true);
    let line = device.line();
    line.waiter.store(0, Ordering::SeqCst);
    line.pending.store(false, Ordering::SeqCst);
    line.cause.store(0, Ordering::SeqCst);
    line.masked.store(false, Ordering::SeqCst);
    CLAIMS.lock()[index] = None;
}
