//! The kernel's one frame allocator, behind a lock, over the plan made from the boot memory map.

use super::frames::{FrameAllocator, FrameError, FramePlan};
use super::range::PAGE_SIZE;

static FRAMES: crate::irq_lock::IrqMutex<Option<FrameAllocator<'static>>> = crate::irq_lock::IrqMutex::new(None);

/// Installs the frame allocator. The plan's bitmap range must be RAM reachable through the
/// identity map, reserved for this purpose and for nothing else.
pub fn init(plan: &FramePlan) {
    let words = plan.bitmap_words();
    assert!(words as u64 * 8 <= plan.bitmap.len(), "bitmap range too small");
    // SAFETY: `plan` placed the bitmap in RAM that no other range (kernel image, modules, boot
    // data, free frames) covers; RAM is identity-mapped; this is the only reference to it and it
    // lives as long as the kernel.
    let bitmap = unsafe { core::slice::from_raw_parts_mut(plan.bitmap.start as *mut u64, words) };
    *FRAMES.lock() = Some(FrameAllocator::new(plan, bitmap));
}

fn with<R>(f: impl FnOnce(&mut FrameAllocator<'static>) -> R) -> R {
    // A fault on the running thread's own stack needs this lock: it happens before, if at all.
    crate::mem::stacks::probe_before_lock();
    let mut guard = FRAMES.lock();
    f(guard.as_mut().expect("frame allocator used before mem::phys::init"))
}

/// One zeroed frame.
pub fn alloc_zeroed() -> Result<u64, FrameError> {
    let frame = with(|a| a.alloc())?;
    // SAFETY: the frame was just handed out to us alone; RAM is identity-mapped writable.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_SIZE as usize) };
    Ok(frame)
}

/// Promises `count` free frames to pages that take them later ([`alloc_reserved_zeroed`]).
pub fn reserve(count: u64) -> Result<(), FrameError> {
    with(|a| a.reserve(count))
}

/// Takes back a promise of `count` frames.
pub fn unreserve(count: u64) {
    with(|a| a.unreserve(count));
}

/// One of the frames promised earlier (`reserve`), not zeroed: for a page about to be filled
/// whole (a copy-on-write copy).
pub fn alloc_reserved() -> Result<u64, FrameError> {
    with(|a| a.alloc_reserved())
}

/// One zeroed frame from those promised with [`reserve`].
pub fn alloc_reserved_zeroed() -> Result<u64, FrameError> {
    let frame = with(|a| a.alloc_reserved())?;
    // SAFETY: the frame was just handed out to us alone; RAM is identity-mapped writable.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_SIZE as usize) };
    Ok(frame)
}

/// Free frames promised to committed pages now.
pub fn reserved_frames() -> u64 {
    with(|a| a.reserved_frames())
}

/// `count` contiguous frames aligned to `align_frames` frames (not zeroed).
pub fn alloc_contiguous(count: u64, align_frames: u64) -> Result<u64, FrameError> {
    with(|a| a.alloc_contiguous(count, align_frames))
}

/// Gives back one frame.
pub fn free(frame: u64) -> Result<(), FrameError> {
    with(|a| a.free(frame))
}

/// Gives back `count` contiguous frames.
pub fn free_contiguous(frame: u64, count: u64) -> Result<(), FrameError> {
    with(|a| a.free_contiguous(frame, count))
}

/// Free frames now.
pub fn free_frames() -> u64 {
    with(|a| a.free_frames())
}
