//! Kernel stacks, each with an unmapped guard page below it.
//!
//! The boot stack and the architecture's exception stacks (`arch::stacks`: x86_64's IST stacks)
//! are statics in `.bss`, [`GuardedStack`]s: each is preceded by a page-sized guard that the
//! kernel's page tables leave unmapped, so that running off the bottom of a stack is a page fault
//! on the guard rather than silent corruption. Stacks for later threads come from
//! [`KernelStack::new`], which maps them in their own virtual region.
//!
//! A thread's stack ([`KernelStack::new_lazy`]) is mapped at its top only; the rest is committed
//! (a frame promised to each page, as for wasm memory) and mapped, zeroed, on the first touch:
//! the page fault runs on a stack of its own, so a fault on the thread's stack can be served.
//! The one hazard is a fault while the thread holds a lock the fault path needs (the page tables',
//! the frame allocator's): both probe the stack below them before they take their lock
//! ([`probe_before_lock`]), so that any fault happens first. Components touch about 14.5 KiB of
//! their 768 KiB stacks (the kernel's `stack-used` lines), so most pages never cost a frame.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::stack_pointer;
use crate::mem::layout::{STACK_SLOT, STACK_SLOTS, STACKS_BASE};
use crate::mem::range::{PAGE_SIZE, PhysRange};

/// Size of a guard page.
pub const GUARD_SIZE: usize = PAGE_SIZE as usize;

/// A stack with a guard page below it, page-aligned.
#[repr(C, align(4096))]
pub struct GuardedStack<const N: usize> {
    guard: UnsafeCell<[u8; GUARD_SIZE]>,
    stack: UnsafeCell<[u8; N]>,
}

// SAFETY: the memory is only ever used by a CPU as its stack (the stub and the TSS hand out the
// top address); Rust code never forms references into it.
unsafe impl<const N: usize> Sync for GuardedStack<N> {}

impl<const N: usize> GuardedStack<N> {
    /// A zeroed stack (placed in `.bss`).
    pub const fn new() -> Self {
        GuardedStack { guard: UnsafeCell::new([0; GUARD_SIZE]), stack: UnsafeCell::new([0; N]) }
    }

    /// The guard page's address range.
    pub fn guard(&self) -> PhysRange {
        PhysRange::sized(self.guard.get() as u64, GUARD_SIZE as u64)
    }

    /// The usable stack's address range.
    pub fn stack(&self) -> PhysRange {
        PhysRange::sized(self.stack.get() as u64, N as u64)
    }

    /// The initial stack pointer (one past the top).
    pub fn top(&self) -> u64 {
        self.stack().end
    }
}

impl<const N: usize> fmt::Debug for GuardedStack<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStack").field("guard", &self.guard()).field("stack", &self.stack()).finish()
    }
}

impl<const N: usize> Default for GuardedStack<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The guard pages of every static stack (`arch::stacks::static_stacks`), which the kernel's
/// page tables leave unmapped.
pub fn static_guards() -> impl Iterator<Item = PhysRange> + Clone {
    crate::arch::stacks::static_stacks().map(|(_, guard, _)| guard)
}

/// The name of the stack whose guard page holds `addr`, if any.
pub fn guard_page_owner(addr: u64) -> Option<&'static str> {
    if let Some((name, _, _)) = crate::arch::stacks::static_stacks().find(|(_, guard, _)| guard.contains(addr)) {
        return Some(name);
    }
    let region = PhysRange::sized(STACKS_BASE, STACK_SLOT * STACK_SLOTS);
    (region.contains(addr) && (addr - STACKS_BASE) % STACK_SLOT < PAGE_SIZE).then_some("thread")
}

/// Why a kernel stack could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// The size is zero or does not fit a slot with its guard page.
    BadSize(u64),
    /// Every stack slot is taken.
    NoSlot,
    /// Mapping the stack failed.
    Map(super::paging::PagingError),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::BadSize(s) => write!(f, "bad kernel stack size {s}"),
            StackError::NoSlot => write!(f, "all {STACK_SLOTS} kernel stack slots are in use"),
            StackError::Map(e) => write!(f, "cannot map kernel stack: {e}"),
        }
    }
}

static SLOTS: crate::irq_lock::IrqMutex<[u64; (STACK_SLOTS / 64) as usize]> =
    crate::irq_lock::IrqMutex::new([0; (STACK_SLOTS / 64) as usize]);

/// The slots whose stacks are committed on demand (bit per slot).
static LAZY_SLOTS: [AtomicU64; (STACK_SLOTS / 64) as usize] =
    [const { AtomicU64::new(0) }; (STACK_SLOTS / 64) as usize];

/// The slot `addr` lies in, if it lies in the stack region.
fn slot_of(addr: u64) -> Option<u64> {
    let region = PhysRange::sized(STACKS_BASE, STACK_SLOT * STACK_SLOTS);
    region.contains(addr).then(|| (addr - STACKS_BASE) / STACK_SLOT)
}

/// Whether `slot` holds a stack committed on demand.
fn is_lazy(slot: u64) -> bool {
    LAZY_SLOTS[(slot / 64) as usize].load(Ordering::Acquire) & (1 << (slot % 64)) != 0
}

/// How far below the stack pointer [`probe_before_lock`] touches: more than any code holding
/// the page-table or frame lock uses.
const PROBE_BYTES: u64 = 16 * 1024;

/// The stack slot of the thread that holds the page-table lock, or `u64::MAX`.
static MAPPER_HOLDER: AtomicU64 = AtomicU64::new(u64::MAX);

/// Marks the running thread as the holder of the page-table lock until dropped (taken right
/// after the lock, dropped right before it is released).
#[derive(Debug)]
pub struct MapperHeld(());

impl MapperHeld {
    /// The running thread has just taken the page-table lock.
    #[inline(always)]
    pub fn mark() -> MapperHeld {
        MAPPER_HOLDER.store(slot_of(stack_pointer()).unwrap_or(u64::MAX), Ordering::Relaxed);
        MapperHeld(())
    }
}

impl Drop for MapperHeld {
    fn drop(&mut self) {
        MAPPER_HOLDER.store(u64::MAX, Ordering::Relaxed);
    }
}

/// Touches the pages of the running thread's stack that lie up to [`PROBE_BYTES`] below its
/// stack pointer, when it is a stack committed on demand: a page not yet mapped faults here, and
/// is mapped, before the caller takes a lock the page-fault path needs. Not under the page-table
/// lock (the frame allocator's lock is taken there, to allocate page tables): a fault there would
/// need the lock its thread holds, and the probe made before that lock was taken covers it.
#[inline(always)]
pub fn probe_before_lock() {
    let rsp = stack_pointer();
    let Some(slot) = slot_of(rsp) else { return };
    if !is_lazy(slot) || MAPPER_HOLDER.load(Ordering::Relaxed) == slot {
        return;
    }
    // The stack's lowest page: above the slot's guard page.
    let bottom = STACKS_BASE + slot * STACK_SLOT + PAGE_SIZE;
    let mut at = rsp & !(PAGE_SIZE - 1);
    while at >= bottom && rsp - at <= PROBE_BYTES {
        let byte: *const u8 = core::ptr::with_exposed_provenance(at as usize);
        // SAFETY: `at` lies in the running thread's own stack (its slot, above the guard page),
        // at or below its stack pointer: memory no one else uses; a volatile read has no side
        // effect beyond mapping a committed page.
        unsafe { byte.read_volatile() };
        at -= PAGE_SIZE;
    }
}

/// Maps the committed page holding `addr` in a stack committed on demand (called for a page
/// fault on a page not present); false when `addr` is not such a page (a guard page, an eager
/// stack, anything else).
pub fn populate(addr: u64) -> bool {
    let Some(slot) = slot_of(addr) else { return false };
    is_lazy(slot) && (addr - STACKS_BASE) % STACK_SLOT >= PAGE_SIZE && super::paging::populate(addr)
}

/// A free stack slot, taken.
fn take_slot() -> Result<u64, StackError> {
    let mut slots = SLOTS.lock();
    let slot = (0..STACK_SLOTS).find(|s| slots[(s / 64) as usize] & (1 << (s % 64)) == 0).ok_or(StackError::NoSlot)?;
    slots[(slot / 64) as usize] |= 1 << (slot % 64);
    Ok(slot)
}

/// A kernel stack in the stack region: `pages` pages above an unmapped guard page, mapped or
/// (for [`KernelStack::new_lazy`]) committed. Unmapped and its frames freed when dropped.
#[derive(Debug)]
pub struct KernelStack {
    slot: u64,
    pages: u64,
}

impl KernelStack {
    /// A stack of `bytes` (rounded up to pages), read-write and never executable, whose top
    /// `eager` bytes are mapped now and the rest committed: each page below gets a promised
    /// frame, mapped zeroed when the stack first grows into it.
    pub fn new_lazy(bytes: u64, eager: u64) -> Result<KernelStack, StackError> {
        let pages = bytes.div_ceil(PAGE_SIZE);
        if pages == 0 || (pages + 1) * PAGE_SIZE > STACK_SLOT {
            return Err(StackError::BadSize(bytes));
        }
        let eager_pages = eager.div_ceil(PAGE_SIZE).min(pages);
        let slot = take_slot()?;
        // Marked before any page is made: dropping the stack then releases the whole range page
        // by page, whatever state each page is in.
        LAZY_SLOTS[(slot / 64) as usize].fetch_or(1 << (slot % 64), Ordering::AcqRel);
        let stack = KernelStack { slot, pages };
        let rw = crate::mem::Protection::READ | crate::mem::Protection::WRITE;
        let lazy_end = stack.top() - eager_pages * PAGE_SIZE;
        // SAFETY: the slot was just taken: its pages are this stack's own and nothing maps or
        // uses them yet.
        unsafe { super::paging::commit_range(stack.bottom(), lazy_end, rw) }.map_err(StackError::Map)?;
        for page in (lazy_end..stack.top()).step_by(PAGE_SIZE as usize) {
            super::paging::map_new_page(page, rw).map_err(StackError::Map)?;
        }
        Ok(stack)
    }

    /// Maps a stack of `bytes` (rounded up to pages), read-write and never executable.
    pub fn new(bytes: u64) -> Result<KernelStack, StackError> {
        let pages = bytes.div_ceil(PAGE_SIZE);
        if pages == 0 || (pages + 1) * PAGE_SIZE > STACK_SLOT {
            return Err(StackError::BadSize(bytes));
        }
        let slot = take_slot()?;
        let stack = KernelStack { slot, pages: 0 };
        let mut stack = stack;
        for i in 0..pages {
            let virt = stack.bottom() + i * PAGE_SIZE;
            super::paging::map_new_page(virt, crate::mem::Protection::READ | crate::mem::Protection::WRITE)
                .map_err(StackError::Map)?;
            stack.pages += 1;
        }
        Ok(stack)
    }

    /// The guard page's address range.
    pub fn guard(&self) -> PhysRange {
        PhysRange::sized(STACKS_BASE + self.slot * STACK_SLOT, PAGE_SIZE)
    }

    /// The lowest stack address.
    pub fn bottom(&self) -> u64 {
        self.guard().end
    }

    /// The initial stack pointer (one past the top).
    pub fn top(&self) -> u64 {
        self.bottom() + self.pages * PAGE_SIZE
    }
}

/// How deep the running thread has used its stack `bottom..top` so far: bytes from the top down
/// to the lowest word that is not zero (a stack's frames are zeroed when it is made). `None`
/// unless the stack pointer lies in `bottom..top`, that is, unless it is the running thread's
/// own stack, which stays mapped while the thread runs.
pub fn high_water(bottom: u64, top: u64) -> Option<u64> {
    let rsp = stack_pointer();
    if !(bottom..top).contains(&rsp) || !bottom.is_multiple_of(8) {
        return None;
    }
    let mut addr = bottom;
    while addr < rsp {
        if addr.is_multiple_of(PAGE_SIZE) && super::paging::translate(addr).is_none() {
            // Committed, never touched: reading it would map it.
            addr += PAGE_SIZE;
            continue;
        }
        let word: *const u64 = core::ptr::with_exposed_provenance(addr as usize);
        // SAFETY: `addr` lies below the stack pointer in the running thread's own stack, whose
        // pages stay mapped while it runs; nothing else writes there, and a volatile read has
        // no side effect.
        if unsafe { word.read_volatile() } != 0 {
            break;
        }
        addr += 8;
    }
    Some(top - addr)
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        // The pages are this stack's own (mapped or committed by `new` or `new_lazy`), and a
        // stack is dropped only once nothing runs on it: the scheduler frees a finished thread's
        // stack after the switch away from it is complete (`sched.rs`).
        let unmapped = if is_lazy(self.slot) {
            // Mapped, committed or neither, page by page: frames and promises go back.
            // SAFETY: as said above: the stack's own pages, no longer in use.
            unsafe { super::paging::unmap_range(self.bottom(), self.top()) }.map(|_| ())
        } else {
            // SAFETY: as said above: the stack's own pages (fresh frames), no longer in use.
            unsafe { super::paging::unmap_and_free_range(self.bottom(), self.pages) }
        };
        if let Err(e) = unmapped {
            log::error!("kernel stack slot {}: cannot unmap its pages: {e}", self.slot);
        }
        LAZY_SLOTS[(self.slot / 64) as usize].fetch_and(!(1 << (self.slot % 64)), Ordering::AcqRel);
        SLOTS.lock()[(self.slot / 64) as usize] &= !(1 << (self.slot % 64));
    }
}
