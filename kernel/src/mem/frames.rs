//! The physical frame allocator: one bit per 4 KiB frame between the lowest and the highest
//! usable address.
//!
//! [`plan`] turns the firmware's RAM ranges and the ranges the kernel must never hand out (its own
//! image, the boot modules, the boot information, low memory) into the set of free frames and a
//! place for the bitmap itself; [`FrameAllocator`] then hands frames out and takes them back.
//! Everything here is plain logic, tested on the host.

use core::fmt;

use super::range::{PAGE_SIZE, PhysRange, RangeSet, RangeSetFull, align_up};

/// Why a frame operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No run of `frames` free frames with the requested alignment is left.
    OutOfMemory {
        /// How many contiguous frames were asked for.
        frames: u64,
        /// How many frames are free in all.
        free: u64,
    },
    /// The address is not one this allocator manages, or not frame-aligned.
    NotManaged(u64),
    /// The frame was already free: a double free.
    AlreadyFree(u64),
    /// A contiguous request for zero frames or with an alignment that is not a power of two.
    BadRequest,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfMemory { frames, free } => {
                write!(f, "out of physical memory: {frames} contiguous frames asked, {free} free")
            }
            FrameError::NotManaged(a) => write!(f, "{a:#x} is not a managed frame"),
            FrameError::AlreadyFree(a) => write!(f, "frame {a:#x} freed twice"),
            FrameError::BadRequest => write!(f, "bad contiguous frame request"),
        }
    }
}

/// Why the memory map could not be turned into an allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// No usable RAM is left after the reserved ranges are taken out.
    NoUsableMemory,
    /// No free range can hold the bitmap.
    NoRoomForBitmap {
        /// The bitmap's size in bytes.
        bytes: u64,
    },
    /// The map has more separate ranges than the kernel tracks.
    TooFragmented(RangeSetFull),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoUsableMemory => write!(f, "no usable RAM in the memory map"),
            PlanError::NoRoomForBitmap { bytes } => {
                write!(f, "no free range can hold the {bytes}-byte frame bitmap")
            }
            PlanError::TooFragmented(e) => write!(f, "memory map too fragmented: {e}"),
        }
    }
}

impl From<RangeSetFull> for PlanError {
    fn from(e: RangeSetFull) -> Self {
        PlanError::TooFragmented(e)
    }
}

/// The outcome of [`plan`]: which frames are free and where the bitmap goes.
#[derive(Clone, Debug)]
pub struct FramePlan {
    /// Free RAM, page-aligned, with every reserved range and the bitmap taken out.
    pub free: RangeSet,
    /// Where the bitmap lives (page-aligned, inside RAM, outside every reserved range).
    pub bitmap: PhysRange,
    /// The first frame the bitmap describes.
    pub base: u64,
    /// How many frames the bitmap describes.
    pub frames: u64,
}

impl FramePlan {
    /// The number of 64-bit words the bitmap needs.
    pub const fn bitmap_words(&self) -> usize {
        self.frames.div_ceil(64) as usize
    }
}

/// Works out the free frames and the bitmap's place from the RAM ranges and the reserved ones.
pub fn plan(ram: &RangeSet, reserved: &[PhysRange]) -> Result<FramePlan, PlanError> {
    let mut free = ram.clone();
    free.shrink_each_to(PAGE_SIZE);
    for r in reserved {
        free.remove(r.grow_to(PAGE_SIZE))?;
    }
    let (Some(first), Some(last)) = (free.iter().next(), free.iter().last()) else {
        return Err(PlanError::NoUsableMemory);
    };
    let base = first.start;
    let frames = (last.end - base) / PAGE_SIZE;
    let bytes = align_up(frames.div_ceil(64) * 8, PAGE_SIZE);
    let bitmap = free.find_space(bytes, PAGE_SIZE).ok_or(PlanError::NoRoomForBitmap { bytes })?;
    free.remove(bitmap)?;
    if free.is_empty() {
        return Err(PlanError::NoUsableMemory);
    }
    Ok(FramePlan { free, bitmap, base, frames })
}

/// A bitmap frame allocator. A set bit is a frame in use (or not RAM at all).
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    base: u64,
    frames: u64,
    bitmap: &'a mut [u64],
    free: u64,
    /// Free frames promised to pages committed but not yet touched ([`FrameAllocator::reserve`]):
    /// ordinary allocations leave them alone, so a promised page always gets its frame.
    reserved: u64,
    hint: u64,
    /// The frames this allocator may ever hand out; a free of anything else is refused.
    managed: RangeSet,
}

impl<'a> FrameAllocator<'a> {
    /// An allocator for the free frames of `plan`, keeping its bitmap in `bitmap`
    /// (at least [`FramePlan::bitmap_words`] words).
    pub fn new(plan: &FramePlan, bitmap: &'a mut [u64]) -> Self {
        let words = plan.bitmap_words();
        assert!(bitmap.len() >= words, "frame bitmap too small");
        let bitmap = &mut bitmap[..words];
        bitmap.fill(u64::MAX);
        let mut alloc = FrameAllocator {
            base: plan.base,
            frames: plan.frames,
            bitmap,
            free: 0,
            reserved: 0,
            hint: 0,
            managed: plan.free.clone(),
        };
        for r in plan.free.iter() {
            let first = (r.start - plan.base) / PAGE_SIZE;
            alloc.clear_run(first, r.len() / PAGE_SIZE);
            alloc.free += r.len() / PAGE_SIZE;
        }
        alloc
    }

    /// How many frames are free.
    pub const fn free_frames(&self) -> u64 {
        self.free
    }

    /// How many free frames are promised to committed pages.
    pub const fn reserved_frames(&self) -> u64 {
        self.reserved
    }

    /// Promises `count` free frames to pages that will take them later with
    /// [`FrameAllocator::alloc_reserved`]; refused when fewer are free and not promised already.
    pub fn reserve(&mut self, count: u64) -> Result<(), FrameError> {
        if count > self.free - self.reserved {
            return Err(FrameError::OutOfMemory { frames: count, free: self.free - self.reserved });
        }
        self.reserved += count;
        Ok(())
    }

    /// Takes back a promise of `count` frames (pages released before they were touched).
    pub fn unreserve(&mut self, count: u64) {
        debug_assert!(count <= self.reserved, "unreserving more than was reserved");
        self.reserved -= count.min(self.reserved);
    }

    /// One frame, from those promised earlier with [`FrameAllocator::reserve`].
    pub fn alloc_reserved(&mut self) -> Result<u64, FrameError> {
        if self.reserved == 0 {
            return Err(FrameError::BadRequest);
        }
        self.reserved -= 1;
        self.alloc_contiguous(1, 1).inspect_err(|_| self.reserved += 1)
    }

    /// How many frames the bitmap describes (free, used, and holes).
    pub const fn span_frames(&self) -> u64 {
        self.frames
    }

    fn is_used(&self, i: u64) -> bool {
        self.bitmap[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64) {
        self.bitmap[(i / 64) as usize] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: u64) {
        self.bitmap[(i / 64) as usize] &= !(1 << (i % 64));
    }

    /// Clears `count` bits from `first`, whole words at a time where it can (at boot, for every
    /// free frame: bit by bit that was a third of the boot's instructions before calibration).
    fn clear_run(&mut self, first: u64, count: u64) {
        let end = first + count;
        let mut i = first;
        while i < end && !i.is_multiple_of(64) {
            self.clear(i);
            i += 1;
        }
        while i + 64 <= end {
            self.bitmap[(i / 64) as usize] = 0;
            i += 64;
        }
        while i < end {
            self.clear(i);
            i += 1;
        }
    }

    /// One free frame's physical address.
    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        self.alloc_contiguous(1, 1)
    }

    /// `count` contiguous free frames whose first frame's address is a multiple of
    /// `align_frames` frames; returns the first frame's physical address.
    pub fn alloc_contiguous(&mut self, count: u64, align_frames: u64) -> Result<u64, FrameError> {
        if count == 0 || !align_frames.is_power_of_two() {
            return Err(FrameError::BadRequest);
        }
        // Promised frames are not free for anyone else.
        let available = self.free - self.reserved;
        let oom = FrameError::OutOfMemory { frames: count, free: available };
        if count > available {
            return Err(oom);
        }
        // Alignment is of the physical address, not of the bitmap index.
        let align = align_frames * PAGE_SIZE;
        let start_index = |from: u64, base: u64| (align_up(base + from * PAGE_SIZE, align) - base) / PAGE_SIZE;
        let hint = if count == 1 { self.hint } else { 0 };
        for pass_start in [hint, 0] {
            let mut i = start_index(pass_start, self.base);
            while i + count <= self.frames {
                // Fast skip of fully used words for single frames.
                if count == 1 && i % 64 == 0 && self.bitmap[(i / 64) as usize] == u64::MAX {
                    i += 64;
                    continue;
                }
                match (i..i + count).find(|&j| self.is_used(j)) {
                    None => {
                        for j in i..i + count {
                            self.set(j);
                        }
                        self.free -= count;
                        if count == 1 {
                            self.hint = i + 1;
                        }
                        return Ok(self.base + i * PAGE_SIZE);
                    }
                    Some(used) => i = start_index(used + 1, self.base),
                }
            }
        }
        Err(oom)
    }

    /// Gives back the frame at `addr`.
    pub fn free(&mut self, addr: u64) -> Result<(), FrameError> {
        self.free_contiguous(addr, 1)
    }

    /// Gives back `count` frames starting at `addr`. Nothing changes when any of them is
    /// not managed or already free.
    pub fn free_contiguous(&mut self, addr: u64, count: u64) -> Result<(), FrameError> {
        if !addr.is_multiple_of(PAGE_SIZE) || addr < self.base {
            return Err(FrameError::NotManaged(addr));
        }
        let first = (addr - self.base) / PAGE_SIZE;
        if first.checked_add(count).is_none_or(|end| end > self.frames) {
            return Err(FrameError::NotManaged(addr));
        }
        let run = PhysRange::sized(addr, count * PAGE_SIZE);
        if !self.managed.iter().any(|r| r.start <= run.start && run.end <= r.end) {
            return Err(FrameError::NotManaged(addr));
        }
        if let Some(j) = (first..first + count).find(|&j| !self.is_used(j)) {
            return Err(FrameError::AlreadyFree(self.base + j * PAGE_SIZE));
        }
        for j in first..first + count {
            self.clear(j);
        }
        self.free += count;
        self.hint = self.hint.min(first);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::range::LARGE_PAGE_SIZE;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const MIB: u64 = 1024 * 1024;

    fn ram(ranges: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in ranges {
            s.insert(PhysRange::new(a, b)).expect("capacity");
        }
        s
    }

    /// A QEMU-like map: low memory, a hole, then RAM from 1 MiB.
    fn qemu_map() -> RangeSet {
        ram(&[(0, 0x9fc00), (MIB, 128 * MIB)])
    }

    #[test]
    fn plan_takes_out_reserved_ranges_and_the_bitmap() {
        let kernel = PhysRange::new(MIB, MIB + 0x5_4321);
        let module = PhysRange::new(64 * MIB, 64 * MIB + 5000);
        let p = plan(&qemu_map(), &[PhysRange::new(0, MIB), kernel, module]).expect("plan");
        assert!(!p.free.overlaps(&kernel.grow_to(PAGE_SIZE)));
        assert!(!p.free.overlaps(&module.grow_to(PAGE_SIZE)));
        assert!(!p.free.overlaps(&p.bitmap));
        assert!(!p.bitmap.overlaps(&kernel) && !p.bitmap.overlaps(&module));
        assert_eq!(p.bitmap.start % PAGE_SIZE, 0);
        assert!(p.free.iter().all(|r| r.start >= MIB && r.end <= 128 * MIB));
    }

    #[test]
    fn plan_errors() {
        assert_eq!(plan(&RangeSet::new(), &[]).unwrap_err(), PlanError::NoUsableMemory);
        let tiny = ram(&[(0x1000, 0x2000)]);
        assert_eq!(plan(&tiny, &[PhysRange::new(0, 0x3000)]).unwrap_err(), PlanError::NoUsableMemory);
        // One frame of RAM: the bitmap takes it and nothing is left.
        assert_eq!(plan(&tiny, &[]).unwrap_err(), PlanError::NoUsableMemory);
    }

    fn with_allocator<R>(
        ram: &RangeSet,
        reserved: &[PhysRange],
        f: impl FnOnce(&FramePlan, &mut FrameAllocator<'_>) -> R,
    ) -> R {
        let p = plan(ram, reserved).expect("plan");
        let mut words = vec![0u64; p.bitmap_words()];
        let mut a = FrameAllocator::new(&p, &mut words);
        f(&p, &mut a)
    }

    #[test]
    fn promised_frames_are_kept_for_their_pages() {
        with_allocator(&ram(&[(MIB, 3 * MIB)]), &[], |_, a| {
            let total = a.free_frames();
            a.reserve(10).expect("ten promised");
            assert_eq!(a.reserved_frames(), 10);
            assert!(matches!(a.reserve(total), Err(FrameError::OutOfMemory { .. })), "more than is left");
            // Everything but the promised ten can be taken by ordinary allocations...
            for _ in 0..total - 10 {
                a.alloc().expect("unpromised frame");
            }
            assert_eq!(a.alloc(), Err(FrameError::OutOfMemory { frames: 1, free: 0 }));
            // ...and the promised ones are still there for their pages.
            for _ in 0..10 {
                a.alloc_reserved().expect("promised frame");
            }
            assert_eq!(a.free_frames(), 0);
            assert_eq!(a.alloc_reserved(), Err(FrameError::BadRequest), "no promise left");
        });
        with_allocator(&ram(&[(MIB, 3 * MIB)]), &[], |_, a| {
            let total = a.free_frames();
            a.reserve(total).expect("all promised");
            a.unreserve(total - 1);
            assert_eq!(a.reserved_frames(), 1);
            assert!(a.alloc().is_ok(), "released promises are free again");
        });
    }

    #[test]
    fn allocates_every_free_frame_once_then_reports_oom() {
        with_allocator(&ram(&[(MIB, 3 * MIB)]), &[PhysRange::new(MIB, MIB + 0x3000)], |p, a| {
            let total = a.free_frames();
            assert_eq!(total, p.free.total() / PAGE_SIZE);
            let mut seen = HashSet::new();
            for _ in 0..total {
                let f = a.alloc().expect("frame");
                assert!(p.free.iter().any(|r| r.contains(f)), "{f:#x} outside free ranges");
                assert!(seen.insert(f), "{f:#x} handed out twice");
            }
            assert_eq!(a.alloc(), Err(FrameError::OutOfMemory { frames: 1, free: 0 }));
            let f = *seen.iter().next().expect("one");
            a.free(f).expect("free");
            assert_eq!(a.alloc(), Ok(f));
        });
    }

    #[test]
    fn double_free_and_foreign_frames_are_errors() {
        with_allocator(&qemu_map(), &[PhysRange::new(0, MIB)], |p, a| {
            let f = a.alloc().expect("frame");
            a.free(f).expect("free");
            assert_eq!(a.free(f), Err(FrameError::AlreadyFree(f)));
            assert_eq!(a.free(f + 1), Err(FrameError::NotManaged(f + 1)));
            assert_eq!(a.free(0x1000), Err(FrameError::NotManaged(0x1000)));
            assert_eq!(a.free(p.bitmap.start), Err(FrameError::NotManaged(p.bitmap.start)));
            assert_eq!(a.free(200 * MIB), Err(FrameError::NotManaged(200 * MIB)));
            assert_eq!(a.alloc_contiguous(0, 1), Err(FrameError::BadRequest));
            assert_eq!(a.alloc_contiguous(1, 3), Err(FrameError::BadRequest));
        });
    }

    #[test]
    fn reserved_frames_are_never_freeable() {
        // A stray free of a reserved frame must not make it allocatable.
        let kernel = PhysRange::new(2 * MIB, 2 * MIB + 0x2000);
        with_allocator(&ram(&[(MIB, 4 * MIB)]), &[kernel], |_, a| {
            assert_eq!(a.free(kernel.start), Err(FrameError::NotManaged(kernel.start)));
            while let Ok(f) = a.alloc() {
                assert!(!kernel.contains(f));
            }
        });
    }

    #[test]
    fn contiguous_aligned_runs() {
        with_allocator(&ram(&[(MIB, 16 * MIB)]), &[PhysRange::new(MIB, MIB + 0x1000)], |_, a| {
            let big = a.alloc_contiguous(512, 512).expect("2 MiB");
            assert_eq!(big % LARGE_PAGE_SIZE, 0);
            let run = a.alloc_contiguous(10, 1).expect("run");
            assert!(run + 10 * PAGE_SIZE <= big || run >= big + LARGE_PAGE_SIZE);
            a.free_contiguous(big, 512).expect("free");
            assert_eq!(a.alloc_contiguous(512, 512), Ok(big));
        });
    }

    proptest! {
        #[test]
        fn never_overlaps_reserved_or_repeats(
            ram_ranges in prop::collection::vec((0u64..4096, 1u64..512), 1..8),
            reserved in prop::collection::vec((0u64..4096, 0u64..64), 0..8),
            ops in prop::collection::vec((0u8..3, 1u64..16, 0u32..4), 1..200),
        ) {
            let map = ram(&ram_ranges.iter().map(|&(s, l)| (s * PAGE_SIZE + 17, (s + l) * PAGE_SIZE)).collect::<Vec<_>>());
            let reserved: Vec<PhysRange> = reserved.iter().map(|&(s, l)| PhysRange::sized(s * PAGE_SIZE + 5, l * PAGE_SIZE)).collect();
            let Ok(p) = plan(&map, &reserved) else { return Ok(()); };
            let mut words = vec![0u64; p.bitmap_words()];
            let mut a = FrameAllocator::new(&p, &mut words);
            let mut held: Vec<(u64, u64)> = Vec::new();
            let mut owned = HashSet::new();
            for (op, count, align_log) in ops {
                if op < 2 {
                    let Ok(f) = a.alloc_contiguous(count, 1 << align_log) else { continue };
                    prop_assert_eq!(f % (PAGE_SIZE << align_log), 0);
                    for k in 0..count {
                        let frame = f + k * PAGE_SIZE;
                        prop_assert!(map.iter().any(|r| r.contains(frame)));
                        prop_assert!(!reserved.iter().any(|r| r.grow_to(PAGE_SIZE).contains(frame)));
                        prop_assert!(!p.bitmap.contains(frame));
                        prop_assert!(owned.insert(frame), "frame {:#x} handed out twice", frame);
                    }
                    held.push((f, count));
                } else if let Some((f, count)) = held.pop() {
                    a.free_contiguous(f, count).expect("free held run");
                    for k in 0..count {
                        owned.remove(&(f + k * PAGE_SIZE));
                    }
                }
            }
            prop_assert_eq!(a.free_frames() + owned.len() as u64, p.free.total() / PAGE_SIZE);
        }
    }
}
