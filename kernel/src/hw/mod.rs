//! Devices for driver components (`mica:hw`): finding them at boot and routing their interrupts
//! ([`registry`]), and each component instance's hardware ([`instance::Instance`], its `HwPort`).
//!
//! The kernel does no device work of its own beyond this: it finds the virtio-mmio transports
//! the command line describes (`virtio_mmio.device=`, from `mica-vmm`) or else those QEMU's
//! `microvm` presents, names them (`virtio-blk.0`, ...), and lets the component the
//! manifest grants a device claim its register window and interrupt line and allocate DMA
//! buffers. When the instance ends, the kernel resets the device (so it stops using memory),
//! masks its line and frees the buffers.

#[cfg(target_os = "none")]
pub mod instance;
pub mod names;
#[cfg(target_os = "none")]
pub mod registry;

#[cfg(target_os = "none")]
pub use registry::{MAX_DEVICES, discover, on_interrupt, unwatch_line, watch_line};
