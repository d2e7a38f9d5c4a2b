//! Hardware access for driver components (`mica:hw`), as owned handles.
//!
//! A driver finds what the manifest grants it with [`granted`], claims one device with
//! [`Device::claim`] (its register [`Window`] and its interrupt [`IrqLine`]) and allocates memory
//! the device may use with [`DmaBuffer::allocate`]. Every access goes through a host call that
//! checks it: a driver never holds an address, so it cannot touch memory it was not given.
//! Refusals are values ([`HwError`]) that say what went wrong.
//!
//! ```no_run
//! use mica::hw::{self, Device, DmaBuffer};
//!
//! let info = hw::granted().into_iter().find(|d| d.device_id == 4).expect("no entropy device");
//! let device = Device::claim(&info.name)?;
//! let magic = device.window().read32(0)?;
//! let ring = DmaBuffer::allocate(4096)?;
//! ring.store32(0, magic)?;
//! # Ok::<(), mica::hw::HwError>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::bindings::mica::hw::{device, dma, irq, mmio, types};

pub use crate::mapped::MappedDma;
pub use device::{Bus, DeviceInfo};
pub use types::ErrorCode;

/// A raw handle value in this component's hardware table.
pub type Handle = types::Handle;

/// A refused or failed hardware operation: what kind, and what happened in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened, in words.
    pub message: String,
}

impl HwError {
    /// An error of kind `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> HwError {
        HwError { code, message: message.into() }
    }
}

impl From<types::Error> for HwError {
    fn from(e: types::Error) -> HwError {
        HwError { code: e.code, message: e.message }
    }
}

impl fmt::Display for HwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HwError {}

/// The devices granted to this component that are present, in the manifest's order.
pub fn granted() -> Vec<DeviceInfo> {
    device::granted()
}

/// A claimed device: its register window and its interrupt line.
///
/// There is no release: the claim lasts as long as this instance. When the instance ends,
/// however it ends, the kernel resets the device, masks its interrupt and frees the instance's
/// DMA buffers.
#[derive(Debug)]
pub struct Device {
    name: String,
    window: Window,
    irq: IrqLine,
}

impl Device {
    /// Claims device `name` (as [`granted`] lists it) for this instance.
    ///
    /// Fails with [`ErrorCode::NotGranted`] when the manifest does not grant it,
    /// [`ErrorCode::NotPresent`] when the machine lacks it and [`ErrorCode::Busy`] when this
    /// instance claimed it already.
    pub fn claim(name: &str) -> Result<Device, HwError> {
        let claimed = device::claim(name)?;
        Ok(Device {
            name: name.to_string(),
            window: Window { handle: claimed.window },
            irq: IrqLine { handle: claimed.irq },
        })
    }

    /// The device's name in the manifest, e.g. `virtio-blk.0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its register window.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Its interrupt line.
    pub fn irq(&self) -> &IrqLine {
        &self.irq
    }

    /// The window and the interrupt line, to be owned apart (e.g. by a transport and a queue).
    pub fn into_parts(self) -> (Window, IrqLine) {
        (self.window, self.irq)
    }
}

/// A claimed device's register window (`mica:hw/mmio`). Offsets are bytes from its start; an
/// access must be 1, 2, 4 or 8 bytes wide and aligned to its width.
#[derive(Debug)]
pub struct Window {
    handle: Handle,
}

impl Window {
    /// The raw handle value (for diagnostics and the misbehaviour tests; see [`raw`]).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Reads `width` bytes (1, 2, 4 or 8) at `offset`, zero-extended.
    pub fn read(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        Ok(mmio::read(self.handle, offset, width)?)
    }

    /// Writes the low `width` bytes of `value` at `offset`. Writes reach the device in program
    /// order, after every earlier DMA buffer write.
    pub fn write(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        Ok(mmio::write(self.handle, offset, width, value)?)
    }

    /// Reads one byte at `offset`.
    pub fn read8(&self, offset: u32) -> Result<u8, HwError> {
        self.read(offset, 1).map(|v| v as u8)
    }

    /// Reads a 16-bit register at `offset`.
    pub fn read16(&self, offset: u32) -> Result<u16, HwError> {
        self.read(offset, 2).map(|v| v as u16)
    }

    /// Reads a 32-bit register at `offset`.
    pub fn read32(&self, offset: u32) -> Result<u32, HwError> {
        self.read(offset, 4).map(|v| v as u32)
    }

    /// Reads a 64-bit register at `offset` (as one access).
    pub fn read64(&self, offset: u32) -> Result<u64, HwError> {
        self.read(offset, 8)
    }

    /// Writes one byte at `offset`.
    pub fn write8(&self, offset: u32, value: u8) -> Result<(), HwError> {
        self.write(offset, 1, value.into())
    }

    /// Writes a 16-bit register at `offset`.
    pub fn write16(&self, offset: u32, value: u16) -> Result<(), HwError> {
        self.write(offset, 2, value.into())
    }

    /// Writes a 32-bit register at `offset`.
    pub fn write32(&self, offset: u32, value: u32) -> Result<(), HwError> {
        self.write(offset, 4, value.into())
    }

    /// Writes a 64-bit register at `offset` (as one access).
    pub fn write64(&self, offset: u32, value: u64) -> Result<(), HwError> {
        self.write(offset, 8, value)
    }
}

/// A claimed device's interrupt line (`mica:hw/irq`).
///
/// When the device interrupts, the kernel acknowledges the interrupt in the device (virtio-mmio's
/// InterruptStatus to InterruptACK), keeps the status bits for the driver and wakes the waiter:
/// the driver needs no register access and no second call for it.
#[derive(Debug)]
pub struct IrqLine {
    handle: Handle,
}

impl IrqLine {
    /// The raw handle value (for diagnostics and the misbehaviour tests; see [`raw`]).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Waits for an interrupt, at most `timeout` (`None`: as long as it takes; zero: only
    /// looks). Returns at once if one came since the last wait, with the interrupt status bits
    /// the kernel acknowledged since then (1: used buffers, 2: configuration change); fails with
    /// [`ErrorCode::TimedOut`] when none came in time.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<u32, HwError> {
        let nanos = timeout.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(irq::wait(self.handle, nanos)?)
    }
}

/// Memory a device may read and write (`mica:hw/dma`): physically contiguous, zeroed when
/// allocated, freed when dropped. The driver reaches it through these calls, never by address;
/// the device uses [`bus_address`](DmaBuffer::bus_address).
///
/// Dropping (or [`free`](DmaBuffer::free)ing) a buffer the device still uses is the driver's bug:
/// stop the device from using it first (complete or reset the queue).
#[derive(Debug)]
pub struct DmaBuffer {
    handle: Handle,
    bus_address: u64,
    len: u32,
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // Freeing fails only for a handle the kernel no longer has: nothing left to do then.
        let _ = dma::free(self.handle);
    }
}

impl DmaBuffer {
    /// A new zeroed buffer of at least `size` bytes (rounded up to 4 KiB pages), counted
    /// against the manifest's `dma_limit`; fails with [`ErrorCode::OutOfMemory`] past it.
    pub fn allocate(size: u32) -> Result<DmaBuffer, HwError> {
        let handle = dma::allocate(size)?;
        // Own the handle at once, so that it is freed if the queries below fail.
        let mut buffer = DmaBuffer { handle, bus_address: 0, len: 0 };
        buffer.bus_address = dma::bus_address(handle)?;
        buffer.len = dma::size(handle)?;
        Ok(buffer)
    }

    /// The raw handle value (for diagnostics and the misbehaviour tests; see [`raw`]).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The address the device uses for the buffer's first byte.
    pub fn bus_address(&self) -> u64 {
        self.bus_address
    }

    /// The buffer's size in bytes (a multiple of 4 KiB).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the buffer has no bytes (never, for an allocated buffer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `len` bytes out of the buffer from `offset`.
    pub fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        Ok(dma::read(self.handle, offset, len)?)
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        Ok(dma::write(self.handle, offset, data)?)
    }

    /// Reads one little-endian value of `width` bytes (1, 2, 4 or 8, aligned) at `offset` as one
    /// access (for ring indices the device updates).
    pub fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        Ok(dma::load(self.handle, offset, width)?)
    }

    /// Writes the low `width` bytes of `value` little-endian at `offset` as one access, ordered
    /// after every earlier write to any buffer.
    pub fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        Ok(dma::store(self.handle, offset, width, value)?)
    }

    /// Loads a `u16` at `offset` (2-aligned).
    pub fn load16(&self, offset: u32) -> Result<u16, HwError> {
        self.load(offset, 2).map(|v| v as u16)
    }

    /// Loads a `u32` at `offset` (4-aligned).
    pub fn load32(&self, offset: u32) -> Result<u32, HwError> {
        self.load(offset, 4).map(|v| v as u32)
    }

    /// Loads a `u64` at `offset` (8-aligned).
    pub fn load64(&self, offset: u32) -> Result<u64, HwError> {
        self.load(offset, 8)
    }

    /// Stores a `u16` at `offset` (2-aligned).
    pub fn store16(&self, offset: u32, value: u16) -> Result<(), HwError> {
        self.store(offset, 2, value.into())
    }

    /// Stores a `u32` at `offset` (4-aligned).
    pub fn store32(&self, offset: u32, value: u32) -> Result<(), HwError> {
        self.store(offset, 4, value.into())
    }

    /// Stores a `u64` at `offset` (8-aligned).
    pub fn store64(&self, offset: u32, value: u64) -> Result<(), HwError> {
        self.store(offset, 8, value)
    }

    /// Frees the buffer now, reporting a refusal (dropping it frees it too, silently).
    pub fn free(self) -> Result<(), HwError> {
        let handle = self.handle;
        std::mem::forget(self);
        Ok(dma::free(handle)?)
    }
}

/// The generated `mica:hw` bindings, unwrapped: calls on raw handle numbers.
///
/// **For misbehaviour tests only**, which hand the kernel numbers it never issued, handles of
/// the wrong kind or freed handles, to check that each is refused. Drivers use [`Device`],
/// [`Window`], [`IrqLine`] and [`DmaBuffer`], which own their handles.
pub mod raw {
    pub use crate::bindings::mica::hw::{device, dma, irq, mmio, types};
}
