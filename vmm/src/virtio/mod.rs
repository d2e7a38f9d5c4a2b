//! Virtio devices behind the virtio-mmio transport (virtio 1.2, section 4.2): the transport
//! ([`mmio::MmioTransport`]), the device interface it drives ([`VirtioDevice`]), how it raises its
//! interrupt ([`InterruptLine`]), and the devices: [`block::Block`] (virtio-blk over a raw image
//! file) and [`console::Console`] (virtio-console with a console port and the agent's named port).
//!
//! The virtio specification's constants come from `virtio-bindings`; the few it lacks are written
//! once, in [`spec`].
//!
//! Virtqueues are rust-vmm's `virtio_queue::Queue` (split rings), owned by the transport and lent
//! to the device when the driver notifies one; descriptor chains are walked with `virtio-queue`'s
//! own `DescriptorChain`, `Reader` and `Writer`, so the device sees guest memory only through
//! `vm-memory`'s checked accessors.

use std::io;
use std::os::fd::OwnedFd;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use virtio_queue::Queue;

pub mod block;
pub mod console;
pub mod mmio;
pub mod spec;
#[cfg(test)]
mod testing;

/// A device model behind the virtio-mmio transport.
///
/// The transport does the generic part of the protocol (status, feature negotiation, queue
/// setup, notifications, interrupt status); the device says what it offers and handles the
/// requests the driver puts in its queues.
pub trait VirtioDevice: Send {
    /// The virtio device ID (virtio 1.2 section 5: 2 for a block device).
    fn device_id(&self) -> u32;

    /// The feature bits the device offers, `VIRTIO_F_VERSION_1` (bit 32) included: the transport
    /// is the modern one and refuses drivers that do not accept it.
    fn features(&self) -> u64;

    /// The maximum size of each of the device's virtqueues, one entry per queue. Each must be a
    /// power of two from 1 to 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// Reads `data.len()` bytes of the device configuration space from `offset`. Bytes past the
    /// end of the configuration read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write of `data` to the configuration space at `offset`. The default ignores it
    /// (for devices whose configuration is read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!("virtio: write of {} bytes to read-only config space at {offset:#x} ignored", data.len());
    }

    /// The driver accepted `features` (a subset of [`VirtioDevice::features`], kept with
    /// FEATURES_OK). The default ignores them (for devices that behave the same either way).
    fn ack_features(&mut self, features: u64) {
        let _ = features;
    }

    /// Handles what the driver made available in queue `index` (`queues[index]`: it is ready
    /// and the driver has set DRIVER_OK), adding every finished chain to the used ring. The other
    /// queues are there for devices whose queues work together (a reply on another queue); any of
    /// them may not be ready. Returns whether the driver should be interrupted (used buffers were
    /// added and the driver did not suppress it).
    fn process_queue(&mut self, index: usize, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool;

    /// Does the work that does not come from a driver notification (host-side input for the
    /// guest), called through [`mmio::MmioTransport::poll`] once the driver has set DRIVER_OK.
    /// Returns whether the driver should be interrupted. The default has nothing to do.
    fn poll(&mut self, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        let _ = (queues, memory);
        false
    }

    /// The host descriptors to wait on before the next [`VirtioDevice::poll`] can do anything
    /// (a socket with input for the guest, or room for held output). The VMM's I/O thread waits
    /// on them, then polls. The default: none.
    fn waits(&self) -> Vec<Wait> {
        Vec::new()
    }

    /// Returns the device to its initial state (the driver wrote 0 to the status register). The
    /// transport resets the queues itself.
    fn reset(&mut self);
}

/// A host descriptor a device waits on, and for what. The descriptor is the device's own,
/// duplicated, so the waiting thread holds it even if the device closes its copy meanwhile.
#[derive(Debug)]
pub struct Wait {
    /// The descriptor.
    pub fd: OwnedFd,
    /// Wake when it is readable (or hung up).
    pub readable: bool,
    /// Wake when it is writable.
    pub writable: bool,
}

/// How a virtio-mmio transport interrupts the guest.
///
/// [`InterruptLine::raise`] is called each time the transport sets a bit in its InterruptStatus
/// register. An edge-style line (KVM irqfd, which pulses the GSI) needs nothing more; a
/// level-triggered one (`KVM_IRQ_LINE`) is deasserted in [`InterruptLine::lower`], which the
/// transport calls when the driver has acknowledged every pending bit and on device reset.
///
/// Any `Fn() -> io::Result<()>` closure is an edge-style line.
pub trait InterruptLine: Send {
    /// Signals the interrupt (asserts the line).
    fn raise(&self) -> io::Result<()>;

    /// Deasserts the line: nothing left in InterruptStatus. The default does nothing.
    fn lower(&self) -> io::Result<()> {
        Ok(())
    }
}

/// An eventfd registered with KVM as an irqfd: each write injects the interrupt once.
impl InterruptLine for EventFd {
    fn raise(&self) -> io::Result<()> {
        self.write(1)
    }
}

impl<F: Fn() -> io::Result<()> + Send> InterruptLine for F {
    fn raise(&self) -> io::Result<()> {
        self()
    }
}
