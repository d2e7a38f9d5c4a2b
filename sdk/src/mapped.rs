//! DMA buffers mapped into the component's own linear memory ([`MappedDma`]): the driver reaches
//! its rings and data with plain loads and stores instead of a host call per access.
//!
//! The memory a device writes behind the program's back is not memory Rust's rules describe, so
//! this is the one module of the crate, besides the generated bindings, that uses `unsafe`: every
//! access is through a raw pointer, bounds-checked first, volatile for single values (ring
//! indices the device updates) and fenced around copies, as the kernel's own DMA accesses are. No
//! Rust reference to the mapped bytes is ever made.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use crate::bindings::mica::hw::dma;
use crate::hw::{DmaBuffer, ErrorCode, HwError};
use crate::ipc::MemorySpan;

/// The page size the kernel maps in.
const PAGE: usize = 4096;

/// A DMA buffer mapped into this component's linear memory: physically contiguous memory the
/// device reaches by [`bus_address`](MappedDma::bus_address) and the driver by plain loads and
/// stores (`mica:hw/dma.map-into-memory`). Zeroed when allocated; unmapped and freed when dropped.
///
/// As with [`DmaBuffer`], dropping a buffer the device still uses is the driver's bug: stop the
/// device from using it first (complete or reset the queue). The kernel keeps the frames alive
/// as long as either the buffer or the mapping exists, so such a bug stays inside the driver.
#[derive(Debug)]
pub struct MappedDma {
    /// The kernel's buffer; `None` only while dropping.
    buffer: Option<DmaBuffer>,
    /// The page-aligned block of linear memory the buffer is mapped over.
    base: NonNull<u8>,
    layout: Layout,
}

fn out_of_range(offset: u32, len: usize, size: u32) -> HwError {
    HwError::new(
        ErrorCode::OutOfRange,
        format!("mapped DMA buffer: {len} byte(s) at offset {offset:#x} reach past its end ({size:#x} bytes)"),
    )
}

impl MappedDma {
    /// A new zeroed buffer of at least `size` bytes (rounded up to 4 KiB pages), counted against
    /// the manifest's `dma_limit`, mapped over a block of this component's memory allocated for
    /// it. Fails with [`ErrorCode::OutOfMemory`] past the limit or when memory runs out.
    pub fn allocate(size: u32) -> Result<MappedDma, HwError> {
        let buffer = DmaBuffer::allocate(size)?;
        let layout = Layout::from_size_align(buffer.len() as usize, PAGE)
            .map_err(|e| HwError::new(ErrorCode::OutOfMemory, format!("a block for the buffer: {e}")))?;
        // SAFETY: the layout has a non-zero size (a buffer has at least one page).
        let block = unsafe { alloc_zeroed(layout) };
        let Some(base) = NonNull::new(block) else {
            return Err(HwError::new(
                ErrorCode::OutOfMemory,
                format!("no room in linear memory for a {}-byte block to map a DMA buffer", layout.size()),
            ));
        };
        let mapped = MappedDma { buffer: Some(buffer), base, layout };
        let offset = u32::try_from(base.as_ptr() as usize).map_err(|_| {
            HwError::new(ErrorCode::OutOfRange, "the block lies beyond 4 GiB: not a wasm32 linear memory")
        })?;
        // On failure, dropping `mapped` frees the buffer (the kernel finds it unmapped) and the
        // block (whose pages are then still the memory's own).
        dma::map_into_memory(mapped.handle(), offset)?;
        Ok(mapped)
    }

    fn buffer(&self) -> &DmaBuffer {
        self.buffer.as_ref().expect("a mapped buffer keeps its DMA buffer until dropped")
    }

    /// The raw handle value.
    pub fn handle(&self) -> crate::hw::Handle {
        self.buffer().handle()
    }

    /// The address the device uses for the buffer's first byte.
    pub fn bus_address(&self) -> u64 {
        self.buffer().bus_address()
    }

    /// The buffer's size in bytes (a multiple of 4 KiB).
    pub fn len(&self) -> u32 {
        self.buffer().len()
    }

    /// Whether the buffer has no bytes (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the buffer's byte 0 lies in this component's linear memory: with
    /// [`span`](MappedDma::span), what an IPC message sent straight from the buffer names.
    pub fn memory_offset(&self) -> u32 {
        self.base.as_ptr() as usize as u32
    }

    /// The pointer to `len` bytes at `offset`, once checked to lie inside.
    fn at(&self, offset: u32, len: usize) -> Result<*mut u8, HwError> {
        match (offset as usize).checked_add(len) {
            Some(end) if end <= self.len() as usize => {
                // SAFETY: `offset` is inside the block (checked), which is `len()` bytes long.
                Ok(unsafe { self.base.as_ptr().add(offset as usize) })
            }
            _ => Err(out_of_range(offset, len, self.len())),
        }
    }

    /// Copies bytes from `offset` into `out`.
    pub fn read_into(&self, offset: u32, out: &mut [u8]) -> Result<(), HwError> {
        let from = self.at(offset, out.len())?;
        fence(Ordering::SeqCst);
        // SAFETY: `from..from + out.len()` lies inside the mapped block (checked), which this
        // value owns and which stays mapped while it lives; `out` is a distinct Rust buffer. The
        // device writing the bytes meanwhile can only change the values copied.
        unsafe { std::ptr::copy_nonoverlapping(from, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `len` bytes out from `offset`.
    pub fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        let mut out = vec![0; len as usize];
        self.read_into(offset, &mut out)?;
        Ok(out)
    }

    /// Copies `data` in at `offset`, ordered before every later store and register write.
    pub fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        let to = self.at(offset, data.len())?;
        // SAFETY: as in `read_into`, for writing.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), to, data.len()) };
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// The pointer for one aligned access of `width` bytes at `offset`.
    fn single(&self, offset: u32, width: u8) -> Result<*mut u8, HwError> {
        if !matches!(width, 1 | 2 | 4 | 8) || !offset.is_multiple_of(u32::from(width)) {
            return Err(HwError::new(
                ErrorCode::BadWidth,
                format!(
                    "mapped DMA buffer: {width}-byte access at offset {offset:#x} is not 1, 2, 4 or 8 bytes, aligned"
                ),
            ));
        }
        self.at(offset, width.into())
    }

    /// Reads one little-endian value of `width` bytes (1, 2, 4 or 8, aligned) at `offset` as one
    /// access (for ring indices the device updates).
    pub fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        let p = self.single(offset, width)?;
        fence(Ordering::SeqCst);
        // SAFETY: `p` is inside the mapped block and aligned to `width` (checked; the block is
        // page-aligned), so each read is of a properly aligned value of that width.
        let value = unsafe {
            match width {
                1 => u64::from(p.read_volatile()),
                2 => u64::from(u16::from_le(p.cast::<u16>().read_volatile())),
                4 => u64::from(u32::from_le(p.cast::<u32>().read_volatile())),
                _ => u64::from_le(p.cast::<u64>().read_volatile()),
            }
        };
        fence(Ordering::SeqCst);
        Ok(value)
    }

    /// Writes the low `width` bytes of `value` little-endian at `offset` as one access, ordered
    /// after every earlier write.
    pub fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        let p = self.single(offset, width)?;
        fence(Ordering::SeqCst);
        // SAFETY: as in `load`, for writing.
        unsafe {
            match width {
                1 => p.write_volatile(value as u8),
                2 => p.cast::<u16>().write_volatile((value as u16).to_le()),
                4 => p.cast::<u32>().write_volatile((value as u32).to_le()),
                _ => p.cast::<u64>().write_volatile(value.to_le()),
            }
        }
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// The `(offset, len)` in this component's linear memory of `len` bytes at `offset` of the
    /// buffer: an IPC message sent from there goes straight from the buffer to the receiver, and
    /// one received there lands straight in it.
    pub fn span(&self, offset: u32, len: u32) -> Result<MemorySpan, HwError> {
        self.at(offset, len as usize)?;
        Ok(MemorySpan { offset: self.memory_offset() + offset, len })
    }
}

impl Drop for MappedDma {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else { return };
        // Freeing unmaps the buffer and gives the block fresh pages; only then is the block the
        // allocator's again. If the kernel refused, the block may still map the buffer: it is
        // left allocated rather than handed out again.
        if buffer.free().is_ok() {
            // SAFETY: `base` was allocated with `layout` by `alloc_zeroed` and not freed before.
            unsafe { dealloc(self.base.as_ptr(), self.layout) };
        }
    }
}
