//! DMA memory: physically contiguous frames a device may read and write, owned by one
//! [`Region`] and reached only through it (bounds-checked copies and single accesses). RAM is
//! identity-mapped and there is no IOMMU, so a frame's physical address is its bus address.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::mem::frames::FrameError;
use crate::mem::phys;
use crate::mem::range::PAGE_SIZE;

/// Frames held by DMA regions now.
static FRAMES: AtomicU64 = AtomicU64::new(0);

/// How many frames the DMA regions of every driver hold now.
pub fn frames() -> u64 {
    FRAMES.load(Ordering::Relaxed)
}

/// Contiguous zeroed frames, freed when dropped.
#[derive(Debug)]
pub struct Region {
    phys: u64,
    pages: u64,
}

impl Region {
    /// At least `bytes` (rounded up to whole pages, at least one), zeroed.
    pub fn allocate(bytes: u32) -> Result<Region, FrameError> {
        let pages = u64::from(bytes).div_ceil(PAGE_SIZE).max(1);
        let phys = phys::alloc_contiguous(pages, 1)?;
        // SAFETY: the frames were just handed to us alone; RAM is identity-mapped writable.
        unsafe { core::ptr::write_bytes(phys as *mut u8, 0, (pages * PAGE_SIZE) as usize) };
        FRAMES.fetch_add(pages, Ordering::Relaxed);
        Ok(Region { phys, pages })
    }

    /// Its bus (physical) address.
    pub fn bus_address(&self) -> u64 {
        self.phys
    }

    /// Its size in bytes.
    pub fn len(&self) -> u32 {
        (self.pages * PAGE_SIZE) as u32
    }

    /// Whether it is empty (never: a region has at least one page).
    pub fn is_empty(&self) -> bool {
        false
    }

    fn inside(&self, offset: u32, len: usize) -> bool {
        (offset as usize).checked_add(len).is_some_and(|end| end <= self.len() as usize)
    }

    /// Copies bytes from `offset` into `out`; `false` (nothing copied) if that reaches past the end.
    pub fn read(&self, offset: u32, out: &mut [u8]) -> bool {
        if !self.inside(offset, out.len()) {
            return false;
        }
        // SAFETY: the range is inside the region (checked), which this value owns and which is
        // identity-mapped RAM; a device writing it concurrently can only change the bytes read.
        unsafe {
            core::ptr::copy_nonoverlapping((self.phys + u64::from(offset)) as *const u8, out.as_mut_ptr(), out.len())
        };
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Copies `data` in at `offset`; `false` (nothing copied) if that reaches past the end.
    pub fn write(&self, offset: u32, data: &[u8]) -> bool {
        if !self.inside(offset, data.len()) {
            return false;
        }
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), (self.phys + u64::from(offset)) as *mut u8, data.len())
        };
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        true
    }

    /// One aligned access of `width` bytes; `None` if it does not fit or is unaligned.
    pub fn load(&self, offset: u32, width: u8) -> Option<u64> {
        if !matches!(width, 1 | 2 | 4 | 8)
            || !offset.is_multiple_of(u32::from(width))
            || !self.inside(offset, width.into())
        {
            return None;
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: aligned, inside the owned region (checked), identity-mapped RAM; volatile
        // because the device may change it at any time.
        Some(unsafe { super::mmio::read_width(self.phys + u64::from(offset), width) })
    }

    /// One aligned write of `width` bytes, after every earlier write; `false` if it does not fit.
    pub fn store(&self, offset: u32, width: u8, value: u64) -> bool {
        if !matches!(width, 1 | 2 | 4 | 8)
            || !offset.is_multiple_of(u32::from(width))
            || !self.inside(offset, width.into())
        {
            return false;
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: as in `load`.
        unsafe { super::mmio::write_width(self.phys + u64::from(offset), width, value) };
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        FRAMES.fetch_sub(self.pages, Ordering::Relaxed);
        if let Err(e) = phys::free_contiguous(self.phys, self.pages) {
            log::error!("dma: freeing {} page(s) at {:#x}: {e}", self.pages, self.phys);
        }
    }
}
