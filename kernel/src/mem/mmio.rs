//! Device register windows: physical MMIO ranges mapped uncached, read and written with single
//! volatile accesses of 1, 2, 4 or 8 bytes. Callers check offsets and widths first
//! (`mica_runtime::hw::check_access`); these functions check them again and refuse rather than
//! touch memory outside the window.

use crate::mem::Protection;
use crate::mem::paging::{self, PageSize, PagingError};
use crate::mem::range::PAGE_SIZE;

/// A mapped register window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    base: u64,
    size: u32,
}

/// Whether a `width`-byte access at `offset` fits a window of `size` bytes and is aligned.
fn fits(size: u32, offset: u32, width: u8) -> bool {
    matches!(width, 1 | 2 | 4 | 8)
        && offset.is_multiple_of(u32::from(width))
        && offset.checked_add(u32::from(width)).is_some_and(|end| end <= size)
}

/// One volatile read of `width` bytes (1, 2, 4; anything else reads 8) at `addr`.
///
/// # Safety
/// `addr` must be mapped, aligned to `width` and readable as `width` bytes without side effects
/// on memory the caller does not own (its own device's registers, or memory it owns).
pub(super) unsafe fn read_width(addr: u64, width: u8) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe {
        match width {
            1 => u64::from(core::ptr::read_volatile(addr as *const u8)),
            2 => u64::from(core::ptr::read_volatile(addr as *const u16)),
            4 => u64::from(core::ptr::read_volatile(addr as *const u32)),
            _ => core::ptr::read_volatile(addr as *const u64),
        }
    }
}

/// One volatile write of the low `width` bytes of `value` (1, 2, 4; anything else writes 8).
///
/// # Safety
/// As for [`read_width`], for writing.
pub(super) unsafe fn write_width(addr: u64, width: u8, value: u64) {
    // SAFETY: forwarded to the caller; truncating `value` to the width is intended.
    unsafe {
        match width {
            1 => core::ptr::write_volatile(addr as *mut u8, value as u8),
            2 => core::ptr::write_volatile(addr as *mut u16, value as u16),
            4 => core::ptr::write_volatile(addr as *mut u32, value as u32),
            _ => core::ptr::write_volatile(addr as *mut u64, value),
        }
    }
}

impl Window {
    /// Maps `size` bytes of device registers at physical `base` (identity, uncached, never
    /// executable). Pages already mapped uncached (a window sharing a page with another) are
    /// kept. A window that would reach memory the kernel uses (RAM, which [`paging::init`]
    /// identity-maps, or the regions above the identity map) is refused, whoever named it (the
    /// command line names windows too).
    pub fn map(base: u64, size: u32) -> Result<Window, PagingError> {
        let first = base & !(PAGE_SIZE - 1);
        let end =
            base.checked_add(u64::from(size)).ok_or(PagingError::NotDevice(base))?.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if end > crate::mem::layout::WASM_BASE {
            return Err(PagingError::NotDevice(first));
        }
        let device = Protection::READ | Protection::WRITE | Protection::UNCACHED;
        for page in (first..end).step_by(PAGE_SIZE as usize) {
            // The page lies in the identity-mapped lower half, below every region the kernel maps
            // virtually. Every frame the kernel uses there (RAM, its image, the boot modules) is
            // mapped since `paging::init`, and `map` refuses a mapped page: a page it maps is one
            // no Rust code reaches.
            // SAFETY: as said above: the device's registers alias nothing.
            match unsafe { paging::map(page, page, PageSize::Small, device) } {
                Ok(()) => {}
                // Another window's page: uncached like this one, and only reached through
                // volatile accesses.
                Err(PagingError::AlreadyMapped(_))
                    if paging::translate(page).is_some_and(|t| t.prot.contains(Protection::UNCACHED)) => {}
                Err(PagingError::AlreadyMapped(_)) => return Err(PagingError::NotDevice(page)),
                Err(e) => return Err(e),
            }
        }
        Ok(Window { base, size })
    }

    /// Its size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Its physical base address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Reads `width` bytes at `offset`; `None` if the access does not fit.
    pub fn read(&self, offset: u32, width: u8) -> Option<u64> {
        if !fits(self.size, offset, width) {
            return None;
        }
        // SAFETY: `map` mapped the whole window uncached; the access is aligned, of a size the
        // bus supports, and inside the window (checked above), so it touches only this device's
        // registers.
        Some(unsafe { read_width(self.base + u64::from(offset), width) })
    }

    /// Writes the low `width` bytes of `value` at `offset`, after every earlier memory write
    /// (so a device told to look at a ring sees what was written to it); `false` if the access
    /// does not fit.
    pub fn write(&self, offset: u32, width: u8, value: u64) -> bool {
        if !fits(self.size, offset, width) {
            return false;
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: as in `read`.
        unsafe { write_width(self.base + u64::from(offset), width, value) };
        true
    }
}
