//! What a component's `mica:hw` imports need from the kernel: one [`HwPort`] per running
//! component instance, which keeps that instance's hardware (claimed devices, DMA buffers; their
//! handles live in the instance's one capability space, beside its channel ends) and does the
//! accesses. The runtime's host functions (`host/hw.rs`) only translate between
//! WIT values and this trait.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A handle value in a component instance's capability space, naming a hardware object.
pub type HwHandle = u32;

/// The kind of a failure; the WIT `error-code`, case for case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwErrorCode {
    /// Never issued, freed, or of the wrong kind.
    InvalidHandle,
    /// The manifest does not grant the device.
    NotGranted,
    /// Granted but not on this machine.
    NotPresent,
    /// Already claimed.
    Busy,
    /// Outside the window or buffer.
    OutOfRange,
    /// Not 1, 2, 4 or 8 bytes, or unaligned.
    BadWidth,
    /// The wait's timeout passed.
    TimedOut,
    /// Over the DMA limit, or no contiguous memory left.
    OutOfMemory,
}

/// A refused or failed hardware operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwFailure {
    /// Its kind.
    pub code: HwErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl HwFailure {
    /// A failure of kind `code`.
    pub fn new(code: HwErrorCode, message: impl Into<String>) -> HwFailure {
        HwFailure { code, message: message.into() }
    }
}

impl fmt::Display for HwFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a device is attached (the WIT `bus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// A virtio-mmio transport.
    VirtioMmio,
}

/// A device a component may claim (the WIT `device-info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its manifest name, e.g. `virtio-blk.0`.
    pub name: String,
    /// Its bus.
    pub bus: Bus,
    /// The virtio device id.
    pub device_id: u32,
    /// Bytes in its register window.
    pub window_size: u32,
}

/// One component instance's view of the hardware it was granted. Every method acts for the
/// calling instance only; `wait_irq` blocks its thread.
pub trait HwPort: Send + Sync {
    /// The granted devices that are present.
    fn granted(&self) -> Vec<DeviceInfo>;
    /// Claims device `name`: (window, irq line).
    fn claim(&self, name: &str) -> Result<(HwHandle, HwHandle), HwFailure>;
    /// Reads `width` bytes at `offset` of `window`.
    fn mmio_read(&self, window: HwHandle, offset: u32, width: u8) -> Result<u64, HwFailure>;
    /// Writes `width` bytes of `value` at `offset` of `window`.
    fn mmio_write(&self, window: HwHandle, offset: u32, width: u8, value: u64) -> Result<(), HwFailure>;
    /// Waits for an interrupt on `line` (`None`: without a time limit; `Some(0)`: only looks);
    /// returns the device's interrupt status bits the kernel acknowledged since the last wait.
    fn wait_irq(&self, line: HwHandle, timeout_ns: Option<u64>) -> Result<u32, HwFailure>;
    /// A new zeroed DMA buffer of at least `size` bytes.
    fn dma_allocate(&self, size: u32) -> Result<HwHandle, HwFailure>;
    /// The bus address of `buffer`.
    fn dma_bus_address(&self, buffer: HwHandle) -> Result<u64, HwFailure>;
    /// The size of `buffer`.
    fn dma_size(&self, buffer: HwHandle) -> Result<u32, HwFailure>;
    /// Copies `len` bytes out of `buffer` at `offset`.
    fn dma_read(&self, buffer: HwHandle, offset: u32, len: u32) -> Result<Vec<u8>, HwFailure>;
    /// Copies `data` into `buffer` at `offset`.
    fn dma_write(&self, buffer: HwHandle, offset: u32, data: &[u8]) -> Result<(), HwFailure>;
    /// One access of `width` bytes at `offset`.
    fn dma_load(&self, buffer: HwHandle, offset: u32, width: u8) -> Result<u64, HwFailure>;
    /// One write of `width` bytes at `offset`.
    fn dma_store(&self, buffer: HwHandle, offset: u32, width: u8, value: u64) -> Result<(), HwFailure>;
    /// Maps `buffer` into the calling instance's linear memory at byte `offset`.
    fn dma_map(&self, buffer: HwHandle, offset: u32) -> Result<(), HwFailure>;
    /// Frees `buffer` (unmapping it first if it is mapped).
    fn dma_free(&self, buffer: HwHandle) -> Result<(), HwFailure>;
}

/// Checks an access of `width` bytes at `offset` into an object of `size` bytes: the width is
/// 1, 2, 4 or 8, the offset a multiple of it, and the access inside. Shared by MMIO windows and
/// DMA buffers so both refuse the same way.
pub fn check_access(what: &str, size: u32, offset: u32, width: u8) -> Result<(), HwFailure> {
    if !matches!(width, 1 | 2 | 4 | 8) {
        return Err(HwFailure::new(
            HwErrorCode::BadWidth,
            alloc::format!("{what}: access width {width} is not 1, 2, 4 or 8 bytes"),
        ));
    }
    if !offset.is_multiple_of(u32::from(width)) {
        return Err(HwFailure::new(
            HwErrorCode::BadWidth,
            alloc::format!("{what}: offset {offset:#x} is not aligned to the access width {width}"),
        ));
    }
    check_range(what, size, offset, u32::from(width))
}

/// Checks that `len` bytes at `offset` lie inside an object of `size` bytes.
pub fn check_range(what: &str, size: u32, offset: u32, len: u32) -> Result<(), HwFailure> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(HwFailure::new(
            HwErrorCode::OutOfRange,
            alloc::format!("{what}: {len} byte(s) at offset {offset:#x} reach past its end ({size:#x} bytes)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_checked() {
        assert!(check_access("w", 0x200, 0x1fc, 4).is_ok());
        assert!(check_access("w", 0x200, 0, 8).is_ok());
        assert_eq!(check_access("w", 0x200, 0x200, 4).unwrap_err().code, HwErrorCode::OutOfRange);
        assert_eq!(check_access("w", 0x200, 0x1fe, 4).unwrap_err().code, HwErrorCode::BadWidth);
        assert_eq!(check_access("w", 0x200, 0, 3).unwrap_err().code, HwErrorCode::BadWidth);
        assert_eq!(check_access("w", 0x200, u32::MAX - 3, 4).unwrap_err().code, HwErrorCode::OutOfRange);
        let e = check_access("window of virtio-rng.0", 0x200, 0x400, 4).unwrap_err();
        assert_eq!(e.message, "window of virtio-rng.0: 4 byte(s) at offset 0x400 reach past its end (0x200 bytes)");
        assert!(check_range("b", 4096, 4000, 96).is_ok());
        assert_eq!(check_range("b", 4096, 4000, 97).unwrap_err().code, HwErrorCode::OutOfRange);
        assert_eq!(check_range("b", 4096, u32::MAX, 2).unwrap_err().code, HwErrorCode::OutOfRange);
    }
}
