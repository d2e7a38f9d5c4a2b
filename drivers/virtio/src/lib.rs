//! Virtio for Mica's driver components: the virtio 1.x MMIO transport ([`Transport`]) and one
//! split-virtqueue implementation ([`Virtqueue`]) that every virtio driver shares.
//!
//! A wasm component holds no addresses: it reaches its device's registers through a `mica:hw`
//! register window (each access a checked host call) and the memory the device reads and writes
//! through DMA buffers, mapped into its own linear memory ([`MappedDma`](mica::hw::MappedDma)) or
//! reached by checked host calls ([`DmaBuffer`](mica::hw::DmaBuffer)). That is why this crate exists beside the `virtio-drivers` crate,
//! which reads registers and rings by raw pointer and so cannot run in a component. Here every
//! register and ring access goes through three small traits ([`Regs`], [`Memory`], [`Irq`]) that
//! [`mica::hw`]'s [`Window`](mica::hw::Window), [`DmaBuffer`](mica::hw::DmaBuffer) and
//! [`IrqLine`](mica::hw::IrqLine) implement, so the ring logic is also tested on the host
//! against plain memory.
//!
//! The virtio constants (register offsets, status and feature bits, device ids, layouts) are
//! all in [`spec`], by the names of the `virtio-bindings` crate.
//!
//! A driver's start, after the virtio 1.2 specification, sections 3.1.1 and 4.2.3:
//!
//! ```no_run
//! use mica::hw::MappedDma;
//! use mica_virtio::{Buffer, claim_first};
//!
//! let device = claim_first(mica_virtio::device_id::ENTROPY)?;
//! let mut transport = device.transport;
//! transport.init(0)?; // reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK
//! let mut queue = transport.create_queue(0, 8, MappedDma::allocate)?;
//! transport.driver_ok()?;
//! let data = MappedDma::allocate(4096)?;
//! queue.add(&[Buffer::device_writable(data.bus_address(), 64)])?;
//! transport.notify(queue.index())?;
//! let used = queue.wait_used(&transport, &device.irq, None)?;
//! let bytes = data.read(0, used.len)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod access;
mod error;
mod hw;
mod queue;
pub mod service;
pub use mica_virtio_spec as spec;
mod transport;

#[cfg(test)]
mod fake;

pub use access::{Irq, Memory, Regs};
pub use error::{Error, InitStep};
pub use hw::{ClaimedDevice, claim_first};
pub use queue::{Buffer, Used, Virtqueue};
pub use transport::Transport;

/// The device ids drivers claim by ([`spec::virtio_ids`] under short names).
pub mod device_id {
    use crate::spec::virtio_ids;

    /// A network card.
    pub const NET: u32 = virtio_ids::VIRTIO_ID_NET;
    /// A block device.
    pub const BLOCK: u32 = virtio_ids::VIRTIO_ID_BLOCK;
    /// A console.
    pub const CONSOLE: u32 = virtio_ids::VIRTIO_ID_CONSOLE;
    /// An entropy source.
    pub const ENTROPY: u32 = virtio_ids::VIRTIO_ID_RNG;
}
