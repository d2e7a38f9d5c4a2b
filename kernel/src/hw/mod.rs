//! Devices for driver components (`mica:hw`): finding them at boot, routing their interrupts,
//! and each component instance's hardware table ([`port::Instance`], its `HwPort`).
//!
//! The kernel does no device work of its own beyond this: it finds the virtio-mmio transports
//! the command line describes (`virtio_mmio.device=`, from `mica-vmm`) or else those QEMU's
//! `microvm` presents, names them (`virtio-blk.0`, ...), and lets the component the
//! manifest grants a device claim its register window and interrupt line and allocate DMA
//! buffers. When the instance ends, the kernel resets the device (so it stops using memory),
//! masks its line and frees the buffers.

pub mod names;
#[cfg(target_os = "none")]
pub mod port;

#[cfg(target_os = "none")]
pub use port::{discover, on_interrupt};
