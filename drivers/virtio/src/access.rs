//! The three ways a driver touches its device, as traits: registers ([`Regs`]), memory the
//! device reads and writes ([`Memory`]) and the interrupt line ([`Irq`]). `mica::hw` implements
//! them for real devices (see `hw.rs`); the tests implement them over plain memory.

use std::time::Duration;

use mica::hw::HwError;

/// A device's register window: accesses of 1, 2, 4 or 8 bytes at offsets aligned to their width.
pub trait Regs {
    /// Reads `width` bytes at `offset`, zero-extended.
    fn read(&self, offset: u32, width: u8) -> Result<u64, HwError>;

    /// Writes the low `width` bytes of `value` at `offset`. Writes reach the device in program
    /// order, after every earlier [`Memory`] write.
    fn write(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError>;

    /// Reads a 32-bit register.
    fn read32(&self, offset: u32) -> Result<u32, HwError> {
        self.read(offset, 4).map(|v| v as u32)
    }

    /// Writes a 32-bit register.
    fn write32(&self, offset: u32, value: u32) -> Result<(), HwError> {
        self.write(offset, 4, value.into())
    }
}

/// Memory the device uses by bus address and the driver through copies and single accesses.
pub trait Memory {
    /// The address the device uses for byte 0.
    fn bus_address(&self) -> u64;

    /// The number of bytes.
    fn size(&self) -> u32;

    /// Copies `len` bytes out from `offset`.
    fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError>;

    /// Copies `data` in at `offset`.
    fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError>;

    /// Reads one little-endian value of `width` bytes (1, 2, 4 or 8, aligned) as one access.
    fn load(&self, offset: u32, width: u8) -> Result<u64, HwError>;

    /// Writes one little-endian value of `width` bytes (aligned) as one access, ordered after
    /// every earlier write.
    fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError>;

    /// Loads a `u16`.
    fn load16(&self, offset: u32) -> Result<u16, HwError> {
        self.load(offset, 2).map(|v| v as u16)
    }

    /// Stores a `u16`.
    fn store16(&self, offset: u32, value: u16) -> Result<(), HwError> {
        self.store(offset, 2, value.into())
    }
}

/// A device's interrupt line: the kernel acknowledges each interrupt in the device
/// (InterruptStatus to InterruptACK) as it comes and keeps the status bits for the waiter.
pub trait Irq {
    /// Waits for an interrupt, at most `timeout` (`None`: as long as it takes). Returns at once
    /// if one came since the last wait, with the interrupt status bits acknowledged since then;
    /// fails with `timed-out` when none came.
    fn wait(&self, timeout: Option<Duration>) -> Result<u32, HwError>;
}

impl<T: Regs + ?Sized> Regs for &T {
    fn read(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        (**self).read(offset, width)
    }

    fn write(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        (**self).write(offset, width, value)
    }
}

impl<T: Memory + ?Sized> Memory for &T {
    fn bus_address(&self) -> u64 {
        (**self).bus_address()
    }

    fn size(&self) -> u32 {
        (**self).size()
    }

    fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        (**self).read(offset, len)
    }

    fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        (**self).write(offset, data)
    }

    fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        (**self).load(offset, width)
    }

    fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        (**self).store(offset, width, value)
    }
}

impl<T: Irq + ?Sized> Irq for &T {
    fn wait(&self, timeout: Option<Duration>) -> Result<u32, HwError> {
        (**self).wait(timeout)
    }
}
