//! The kernel heap: `talc` as the global allocator, growing on demand by mapping fresh frames at
//! the end of its own virtual region ([`super::layout::HEAP_BASE`]).

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use talc::base::Talc;
use talc::base::binning::Binning;
use talc::source::Source;

use super::Protection;
use super::layout::{HEAP_BASE, HEAP_MAX};
use super::range::{PAGE_SIZE, align_up};
use crate::mem::paging;

/// The heap grows by at least this much at a time.
const GROW_MIN: u64 = 1024 * 1024;

static MAPPED: AtomicU64 = AtomicU64::new(0);
static GROWTHS: AtomicU64 = AtomicU64::new(0);

/// Grows the heap by mapping pages when `talc` runs out.
#[derive(Debug)]
pub struct HeapSource {
    /// End of the mapped part of the heap region.
    mapped_end: u64,
    /// The heap end `talc` last reported (0: nothing claimed yet).
    heap_end: usize,
    /// Whether paging is up and the heap may grow.
    enabled: bool,
}

impl HeapSource {
    const fn new() -> Self {
        HeapSource { mapped_end: HEAP_BASE, heap_end: 0, enabled: false }
    }

    /// Maps `bytes` more at the end of the heap region; on failure unmaps what it mapped.
    fn grow(&mut self, bytes: u64) -> Result<(), ()> {
        if self.mapped_end - HEAP_BASE + bytes > HEAP_MAX {
            return Err(());
        }
        let start = self.mapped_end;
        for page in (start..start + bytes).step_by(PAGE_SIZE as usize) {
            if paging::map_new_page(page, Protection::READ | Protection::WRITE).is_err() {
                for done in (start..page).step_by(PAGE_SIZE as usize) {
                    // SAFETY: the pages this growth just mapped (fresh frames, `map_new_page`),
                    // not yet handed to the allocator: nothing uses them.
                    let _ = unsafe { paging::unmap_and_free(done) };
                }
                return Err(());
            }
        }
        self.mapped_end += bytes;
        MAPPED.store(self.mapped_end - HEAP_BASE, Ordering::Relaxed);
        GROWTHS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

// SAFETY: `acquire` never allocates from the heap (mapping pages uses the frame allocator and
// the page-table lock, neither of which allocates), and the memory it hands to `talc` is freshly
// mapped, zeroed, exclusively owned and never unmapped while the heap lives.
unsafe impl Source for HeapSource {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.enabled {
            return Err(());
        }
        let need = layout.size() as u64 + layout.align() as u64 + talc::min_first_heap_size::<B>() as u64;
        let bytes = align_up(need.max(GROW_MIN), PAGE_SIZE);
        let old_end = talc.source.mapped_end;
        talc.source.grow(bytes)?;
        let new_end = talc.source.mapped_end;
        let end = match NonNull::new(talc.source.heap_end as *mut u8) {
            // SAFETY: `old_end..new_end` was just mapped and belongs to no one else.
            None => unsafe { talc.claim(old_end as *mut u8, (new_end - old_end) as usize) }.ok_or(())?,
            // SAFETY: the memory from the current heap end to `new_end` is mapped, contiguous
            // with the heap and unused.
            Some(heap_end) => unsafe { talc.extend(heap_end, new_end as *mut u8) },
        };
        talc.source.heap_end = end.as_ptr() as usize;
        Ok(())
    }
}

#[global_allocator]
static HEAP: talc::TalcLock<crate::irq_lock::RawIrqSpinlock, HeapSource> = talc::TalcLock::new(HeapSource::new());

/// The heap's first pages could not be mapped (no frames, or the region is taken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapInitError;

impl core::fmt::Display for HeapInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cannot map the first heap pages")
    }
}

/// Lets the heap grow (paging must be up) and maps its first megabyte.
pub fn init() -> Result<(), HeapInitError> {
    let mut talc = HEAP.lock();
    talc.source.enabled = true;
    let first = core::alloc::Layout::from_size_align(GROW_MIN as usize / 2, 16).map_err(|_| HeapInitError)?;
    HeapSource::acquire(&mut talc, first).map_err(|()| HeapInitError)
}

/// Bytes of heap region mapped so far.
pub fn mapped_bytes() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

/// Bytes allocated from the heap now (talc's counters).
pub fn allocated_bytes() -> u64 {
    HEAP.lock().counters().allocated_bytes as u64
}

/// How many times the heap has grown.
pub fn growths() -> u64 {
    GROWTHS.load(Ordering::Relaxed)
}
