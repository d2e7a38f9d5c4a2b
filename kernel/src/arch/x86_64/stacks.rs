//! Kernel stacks, each with an unmapped guard page below it.
//!
//! The boot stack and the interrupt stacks (one per IST slot) are statics in `.bss`; each is
//! preceded by a page-sized guard that the kernel's page tables leave unmapped, so that running
//! off the bottom of a stack is a page fault on the guard rather than silent corruption. Stacks
//! for later threads come from [`KernelStack::new`], which maps them in their own virtual region.

use core::cell::UnsafeCell;
use core::fmt;

use crate::mem::layout::{STACK_SLOT, STACK_SLOTS, STACKS_BASE};
use crate::mem::range::{PAGE_SIZE, PhysRange};

/// Size of a guard page.
pub const GUARD_SIZE: usize = PAGE_SIZE as usize;
/// Size of the boot stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
/// Size of each interrupt stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Number of interrupt stacks (the TSS has seven IST slots).
pub const IST_COUNT: usize = 7;

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

/// The stack the boot stub switches to and `kmain` runs on.
pub static BOOT_STACK: GuardedStack<BOOT_STACK_SIZE> = GuardedStack::new();

/// The interrupt stacks, one per IST slot (IST1 is `IST_STACKS[0]`).
pub static IST_STACKS: [GuardedStack<IST_STACK_SIZE>; IST_COUNT] = [const { GuardedStack::new() }; IST_COUNT];

/// Names of the IST stacks, for reports.
pub const IST_NAMES: [&str; IST_COUNT] = [
    "ist1-double-fault",
    "ist2-nmi",
    "ist3-machine-check",
    "ist4-page-fault",
    "ist5-exceptions",
    "ist6-interrupts",
    "ist7-debug",
];

/// Every static stack: its name, guard page and usable range.
pub fn static_stacks() -> impl Iterator<Item = (&'static str, PhysRange, PhysRange)> {
    core::iter::once(("boot", BOOT_STACK.guard(), BOOT_STACK.stack()))
        .chain(IST_STACKS.iter().zip(IST_NAMES).map(|(s, name)| (name, s.guard(), s.stack())))
}

/// The name of the stack whose guard page holds `addr`, if any.
pub fn guard_page_owner(addr: u64) -> Option<&'static str> {
    if let Some((name, _, _)) = static_stacks().find(|(_, guard, _)| guard.contains(addr)) {
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

static SLOTS: super::irq_lock::IrqMutex<[u64; (STACK_SLOTS / 64) as usize]> =
    super::irq_lock::IrqMutex::new([0; (STACK_SLOTS / 64) as usize]);

/// A kernel stack in the stack region: `pages` mapped pages above an unmapped guard page.
/// Unmapped and its frames freed when dropped.
#[derive(Debug)]
pub struct KernelStack {
    slot: u64,
    pages: u64,
}

impl KernelStack {
    /// Maps a stack of `bytes` (rounded up to pages), read-write and never executable.
    pub fn new(bytes: u64) -> Result<KernelStack, StackError> {
        let pages = bytes.div_ceil(PAGE_SIZE);
        if pages == 0 || (pages + 1) * PAGE_SIZE > STACK_SLOT {
            return Err(StackError::BadSize(bytes));
        }
        let slot = {
            let mut slots = SLOTS.lock();
            let slot =
                (0..STACK_SLOTS).find(|s| slots[(s / 64) as usize] & (1 << (s % 64)) == 0).ok_or(StackError::NoSlot)?;
            slots[(slot / 64) as usize] |= 1 << (slot % 64);
            slot
        };
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
    let rsp: u64;
    // SAFETY: reads the stack pointer into a register; no memory is touched.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    if !(bottom..top).contains(&rsp) || bottom % 8 != 0 {
        return None;
    }
    let mut addr = bottom;
    while addr < rsp {
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
        if let Err(e) = super::paging::unmap_and_free_range(self.bottom(), self.pages) {
            log::error!("kernel stack slot {}: cannot unmap its pages: {e}", self.slot);
        }
        SLOTS.lock()[(self.slot / 64) as usize] &= !(1 << (self.slot % 64));
    }
}
