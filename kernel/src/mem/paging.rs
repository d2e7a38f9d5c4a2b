//! The kernel's own page tables: built at boot to replace the boot stub's identity map, then the
//! one place where pages are mapped, unmapped and re-protected (4 KiB and 2 MiB), under W^X.
//!
//! Both architectures walk the same shape: four levels of 512 eight-byte entries, 4 KiB pages,
//! 2 MiB blocks at level 2, 48-bit virtual addresses. The policy lives here, once; what an entry
//! looks like and how TLBs forget one is the architecture's (`arch::paging`: the entry format,
//! the TLB flushes and shootdown, and the switch to a new root). On aarch64 one root serves both
//! halves: TTBR0 and TTBR1 hold the same table, whose lower 256 entries the lower half indexes
//! and whose upper 256 the upper half does, as x86_64's one PML4 is indexed.
//!
//! Layout after [`init`]: RAM identity-mapped read-write and never executable (2 MiB pages where a
//! whole aligned block is RAM, 4 KiB pages elsewhere); page 0 unmapped; the kernel image mapped by
//! section (text read-execute, rodata read-only, data and bss read-write, the guard page below
//! every static stack left unmapped); boot modules read-only; the devices the kernel drives
//! before it maps their windows itself (the architecture names them) uncached.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::arch::paging as hw;
use crate::mem::frames::FrameError;
use crate::mem::phys;
use crate::mem::range::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysRange, RangeSet};
use crate::mem::{Protection, WxViolation};

/// The two page sizes the kernel maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB.
    Small,
    /// 2 MiB.
    Large,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Small => PAGE_SIZE,
            PageSize::Large => LARGE_PAGE_SIZE,
        }
    }

    /// The level of the table whose entries map pages of this size (1: the leaf table).
    const fn level(self) -> u32 {
        match self {
            PageSize::Small => 1,
            PageSize::Large => 2,
        }
    }
}

/// Why a paging operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// The protection asked for is writable and executable.
    Wx(WxViolation),
    /// No frame for a page table or a page.
    Frames(FrameError),
    /// The address is not aligned to the page size.
    Misaligned(u64),
    /// The page is already mapped.
    AlreadyMapped(u64),
    /// The page is not mapped (or not at that size).
    NotMapped(u64),
    /// A larger page already covers the address.
    HugePageInTheWay(u64),
    /// The CPU has no NX bit, so W^X cannot be enforced.
    NoNx,
    /// A device window asked for a page that is memory the kernel uses (RAM, or one of its own
    /// mappings), not device registers.
    NotDevice(u64),
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::Wx(e) => write!(f, "{e}"),
            PagingError::Frames(e) => write!(f, "{e}"),
            PagingError::Misaligned(a) => write!(f, "address {a:#x} is not aligned to the page size"),
            PagingError::AlreadyMapped(a) => write!(f, "page {a:#x} is already mapped"),
            PagingError::NotMapped(a) => write!(f, "page {a:#x} is not mapped at that size"),
            PagingError::HugePageInTheWay(a) => write!(f, "a larger page already maps {a:#x}"),
            PagingError::NoNx => write!(f, "the CPU has no NX bit: W^X cannot be enforced"),
            PagingError::NotDevice(a) => {
                write!(f, "page {a:#x} is memory the kernel uses (RAM or a kernel mapping), not device registers")
            }
        }
    }
}

impl From<WxViolation> for PagingError {
    fn from(e: WxViolation) -> Self {
        PagingError::Wx(e)
    }
}

/// A page's translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the virtual address maps to.
    pub phys: u64,
    /// The size of the page that maps it.
    pub size: PageSize,
    /// The leaf entry's rights.
    pub prot: Protection,
}

/// One page table: 512 entries.
type Table = [u64; 512];

/// The root table's physical address, once [`init`] has built it (0 before).
static ROOT: crate::irq_lock::IrqMutex<u64> = crate::irq_lock::IrqMutex::new(0);
static NX: AtomicBool = AtomicBool::new(false);

/// Page-table frames made below the root since boot, less those freed when left empty.
static TABLE_FRAMES: AtomicI64 = AtomicI64::new(0);

/// How many page-table frames (below the root) the kernel has made since boot, less those it
/// freed: a change in it is a change in the frames its page tables hold.
pub fn table_frames() -> i64 {
    TABLE_FRAMES.load(Ordering::Relaxed)
}

/// The table at physical address `frame`.
///
/// # Safety
/// `frame` is a page table of the kernel's (the root or one reached from it through a valid
/// table entry), in identity-mapped RAM, and the caller holds the page-table lock ([`ROOT`]), so
/// no one else touches it while the reference lives.
unsafe fn table_at<'a>(frame: u64) -> &'a mut Table {
    // SAFETY: as the caller promises.
    unsafe { &mut *core::ptr::with_exposed_provenance_mut::<Table>(frame as usize) }
}

/// The index of `virt` in a table at `level` (4: the root).
const fn index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 511) as usize
}

/// Bytes one entry of a table at `level` maps.
const fn span(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

/// `prot`, checked: W^X, and no-execute only where the CPU can enforce it.
fn checked(prot: Protection) -> Result<Protection, PagingError> {
    let prot = prot.check()?;
    if !prot.contains(Protection::EXEC) && !NX.load(Ordering::Relaxed) {
        return Err(PagingError::NoNx);
    }
    Ok(prot)
}

/// A leaf entry that is not valid but committed: its rights are `prot`'s, its bits say [`LAZY`].
fn lazy_entry(prot: Protection) -> u64 {
    (hw::leaf(0, false, prot) & !hw::VALID) | hw::LAZY
}

/// Runs `f` with the root table's address, under the page-table lock.
fn with_root<R>(f: impl FnOnce(u64) -> R) -> R {
    // A fault on the running thread's own stack needs this lock: it happens before, if at all.
    crate::mem::stacks::probe_before_lock();
    let guard = ROOT.lock();
    // Dropped before the guard: nested probes (the frame allocator's) know the lock is ours.
    let _held = crate::mem::stacks::MapperHeld::mark();
    assert!(*guard != 0, "paging used before paging::init");
    f(*guard)
}

/// The entry at `level` for `virt` in the tables under `root`, with the tables above it made
/// where missing (when `make`), or `None` where one is missing (when not).
fn entry_at<'a>(root: u64, virt: u64, level: u32, make: bool) -> Result<Option<&'a mut u64>, PagingError> {
    let mut frame = root;
    for l in (level + 1..=4).rev() {
        // SAFETY: `frame` is the root or a table reached from it through a valid table entry;
        // the caller holds the page-table lock.
        let entry = unsafe { &mut table_at(frame)[index(virt, l)] };
        if *entry & hw::VALID == 0 {
            if !make {
                return Ok(None);
            }
            let table = phys::alloc_zeroed().map_err(PagingError::Frames)?;
            TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
            *entry = hw::table(table);
            hw::publish();
        } else if hw::is_block(*entry, l) {
            return Err(PagingError::HugePageInTheWay(virt));
        }
        frame = hw::address(*entry);
    }
    // SAFETY: as above, for the table at `level`.
    Ok(Some(unsafe { &mut table_at(frame)[index(virt, level)] }))
}

/// The leaf table (512 entries of 4 KiB pages, 2 MiB) that maps `virt`, made as [`entry_at`]
/// makes it: a range is walked once per leaf table, not once per page.
fn leaf_table<'a>(root: u64, virt: u64, make: bool) -> Result<Option<&'a mut Table>, PagingError> {
    let Some(entry) = entry_at(root, virt, 2, make)? else { return Ok(None) };
    if *entry & hw::VALID == 0 {
        if !make {
            return Ok(None);
        }
        let table = phys::alloc_zeroed().map_err(PagingError::Frames)?;
        TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        *entry = hw::table(table);
        hw::publish();
    } else if hw::is_block(*entry, 2) {
        return Err(PagingError::HugePageInTheWay(virt));
    }
    // SAFETY: a valid table entry at level 2 points at a leaf table of the kernel's; the caller
    // holds the page-table lock.
    Ok(Some(unsafe { table_at(hw::address(*entry)) }))
}

/// Runs `f` on the leaf entry of each of the `pages` pages from `start` (page-aligned), in order,
/// making missing page tables: the tables are walked once per leaf table (2 MiB), not once per
/// page. Stops at the first error.
fn for_each_leaf(
    root: u64,
    start: u64,
    pages: u64,
    mut f: impl FnMut(u64, u64, &mut u64) -> Result<(), PagingError>,
) -> Result<(), PagingError> {
    let mut table: Option<(u64, &mut Table)> = None;
    for i in 0..pages {
        let virt = start + i * PAGE_SIZE;
        let base = virt & !(LARGE_PAGE_SIZE - 1);
        let leaves = match &mut table {
            Some((b, t)) if *b == base => t,
            _ => &mut table.insert((base, leaf_table(root, virt, true)?.ok_or(PagingError::NotMapped(virt))?)).1,
        };
        f(i, virt, &mut leaves[index(virt, 1)])?;
    }
    hw::publish();
    Ok(())
}

/// Replaces the valid leaf entry `entry` (mapping `virt`) with `new`, which maps another frame:
/// where the architecture asks for it (aarch64's break-before-make), the old entry is made
/// invalid and forgotten by every TLB first.
fn replace(entry: &mut u64, virt: u64, new: u64) {
    if hw::BREAK_BEFORE_MAKE {
        *entry = 0;
        hw::flush_page(virt);
    }
    *entry = new;
    hw::flush_page(virt);
}

fn map_in(root: u64, virt: u64, phys: u64, size: PageSize, prot: Protection) -> Result<(), PagingError> {
    let bytes = size.bytes();
    if !virt.is_multiple_of(bytes) || !phys.is_multiple_of(bytes) {
        return Err(PagingError::Misaligned(if !virt.is_multiple_of(bytes) { virt } else { phys }));
    }
    let entry = entry_at(root, virt, size.level(), true)?.ok_or(PagingError::NotMapped(virt))?;
    if *entry != 0 {
        return Err(PagingError::AlreadyMapped(virt));
    }
    *entry = hw::leaf(phys, size == PageSize::Large, prot);
    hw::publish();
    Ok(())
}

/// Maps the page at `virt` to the frame at `phys` with `prot`. An address already mapped is
/// refused ([`PagingError::AlreadyMapped`]).
///
/// # Safety
/// The frame must not be memory that Rust code owns or reaches another way, unless the caller
/// shares it on purpose and keeps the sharing sound (read-only, or device registers reached only
/// through volatile accesses), and it must stay valid for as long as it is mapped: a free frame
/// the caller owns, a device's register window, or a frame lent for the mapping's lifetime.
pub unsafe fn map(virt: u64, phys: u64, size: PageSize, prot: Protection) -> Result<(), PagingError> {
    let prot = checked(prot)?;
    with_root(|root| map_in(root, virt, phys, size, prot))
}

/// Unmaps the page at `virt`; returns the physical address it mapped. Every CPU's TLB forgets it
/// before this returns.
///
/// # Safety
/// Nothing may use the page afterwards: no reference or pointer into it is used again, no thread
/// runs on it as a stack, no code is executed from it.
pub unsafe fn unmap(virt: u64, size: PageSize) -> Result<u64, PagingError> {
    let frame = unmap_local(virt, size)?;
    hw::shootdown();
    Ok(frame)
}

/// The valid leaf entry of size `size` that maps `virt`.
fn mapped_entry<'a>(root: u64, virt: u64, size: PageSize) -> Result<&'a mut u64, PagingError> {
    let entry = entry_at(root, virt, size.level(), false)?.ok_or(PagingError::NotMapped(virt))?;
    let leaf = match size {
        PageSize::Small => *entry & hw::VALID != 0,
        PageSize::Large => *entry & hw::VALID != 0 && hw::is_block(*entry, 2),
    };
    if !leaf {
        return Err(PagingError::NotMapped(virt));
    }
    Ok(entry)
}

/// [`unmap`] with only this CPU's TLB flushed: the caller calls [`hw::shootdown`] before the
/// frame or the address is used again.
fn unmap_local(virt: u64, size: PageSize) -> Result<u64, PagingError> {
    if !virt.is_multiple_of(size.bytes()) {
        return Err(PagingError::Misaligned(virt));
    }
    with_root(|root| {
        let entry = mapped_entry(root, virt, size)?;
        let frame = hw::address(*entry);
        *entry = 0;
        hw::flush_page(virt);
        Ok(frame)
    })
}

/// Changes the rights of the page at `virt` (never writable and executable at once).
///
/// # Safety
/// No code may rely on a right the page loses (a write through a reference into a page made
/// read-only faults and ends the kernel), and a page made executable must hold code the kernel
/// trusts.
pub unsafe fn protect(virt: u64, size: PageSize, prot: Protection) -> Result<(), PagingError> {
    let prot = checked(prot)?;
    if !virt.is_multiple_of(size.bytes()) {
        return Err(PagingError::Misaligned(virt));
    }
    with_root(|root| {
        let entry = mapped_entry(root, virt, size)?;
        // Changing rights cannot create aliases; W^X was checked above. A page made read-only or
        // non-executable that is still in use faults, which is reported.
        *entry = hw::with_protection(*entry, prot);
        hw::flush_page(virt);
        Ok::<(), PagingError>(())
    })?;
    hw::shootdown();
    Ok(())
}

/// How `virt` is mapped, if it is.
pub fn translate(virt: u64) -> Option<Translation> {
    with_root(|root| {
        let mut frame = root;
        for level in (1..=4).rev() {
            // SAFETY: the root or a table reached from it through a valid table entry, under
            // the page-table lock.
            let entry = unsafe { table_at(frame)[index(virt, level)] };
            if entry & hw::VALID == 0 {
                return None;
            }
            if level == 1 || hw::is_block(entry, level) {
                let size = if level == 1 { PageSize::Small } else { PageSize::Large };
                let offset = virt & (span(level) - 1);
                return Some(Translation { phys: hw::address(entry) + offset, size, prot: hw::protection(entry) });
            }
            frame = hw::address(entry);
        }
        None
    })
}

/// Maps a fresh zeroed frame at `virt` (4 KiB) with `prot`; returns the frame.
pub fn map_new_page(virt: u64, prot: Protection) -> Result<u64, PagingError> {
    prot.check()?;
    let frame = phys::alloc_zeroed().map_err(PagingError::Frames)?;
    // SAFETY: a frame just allocated belongs to nobody else; `map` refuses an address already in
    // use, so nothing that was reachable changes.
    if let Err(e) = unsafe { map(virt, frame, PageSize::Small, prot) } {
        let _ = phys::free(frame);
        return Err(e);
    }
    Ok(frame)
}

/// Unmaps the 4 KiB page at `virt` and frees its frame (once no CPU's TLB has it).
///
/// # Safety
/// As for [`unmap`]; in addition the frame must be the page's own (from [`map_new_page`]), not
/// one that something else still uses.
pub unsafe fn unmap_and_free(virt: u64) -> Result<(), PagingError> {
    // SAFETY: forwarded to the caller.
    let frame = unsafe { unmap(virt, PageSize::Small) }?;
    phys::free(frame).map_err(PagingError::Frames)
}

/// Unmaps `pages` 4 KiB pages from `start` and frees their frames, with one TLB shootdown for
/// all of them. Stops at the first page that cannot be unmapped (what was unmapped is freed).
///
/// # Safety
/// As for [`unmap_and_free`], for every page of the range.
pub unsafe fn unmap_and_free_range(start: u64, pages: u64) -> Result<(), PagingError> {
    let mut frames = alloc::vec::Vec::new();
    let mut result = Ok(());
    for i in 0..pages {
        match unmap_local(start + i * PAGE_SIZE, PageSize::Small) {
            Ok(frame) => frames.push(frame),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    hw::shootdown();
    for frame in frames {
        phys::free(frame).map_err(PagingError::Frames)?;
    }
    result
}

/// Whether `entry` (a leaf) is valid.
fn valid(entry: u64) -> bool {
    entry & hw::VALID != 0
}

/// Whether `entry` (a leaf) has every software bit in `bits`.
fn has(entry: u64, bits: u64) -> bool {
    entry & bits == bits
}

/// Maps `frames` (each page-aligned, one per page) at `virt` copy-on-write: read-only until the
/// first write, which copies the page into a frame of its own ([`copy_on_write`]) when
/// `writable`. Each page keeps or gets a promised frame for that copy: a committed page's promise
/// passes to it, a touched page's frame is freed and a promise made instead, and a page not
/// committed is committed (refused when no frame is left). Returns how many pages were
/// committed anew. The caller keeps the frames alive and unwritten while they are mapped.
///
/// The software bits of a leaf entry (ignored by the hardware): [`hw::LAZY`] marks a committed
/// page not yet touched (not valid; its other bits are the rights it gets, and [`populate`] maps
/// a zeroed frame there on the first touch); [`hw::BORROWED`] a valid page whose frame the region
/// does not own (unmapping it frees nothing); [`hw::COW`] (always with `BORROWED`) a read-only
/// page of a memory image with a frame promised for its private copy; [`hw::COW_WRITABLE`] such
/// a page whose first write makes that copy.
///
/// # Safety
/// `frames` must stay allocated and unwritten for as long as they are mapped here, and the
/// pages at `virt` must not be in use by anything that relies on their present contents or
/// rights.
pub unsafe fn map_cow(virt: u64, frames: &[u64], writable: bool) -> Result<u64, PagingError> {
    if !virt.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(virt));
    }
    if let Some(&bad) = frames.iter().find(|&&f| f % PAGE_SIZE != 0) {
        return Err(PagingError::Misaligned(bad));
    }
    let read = checked(Protection::READ)?;
    let mut bits = hw::BORROWED | hw::COW;
    if writable {
        bits |= hw::COW_WRITABLE;
    }
    let mut fresh = 0;
    let mut freed = alloc::vec::Vec::new();
    let result = with_root(|root| {
        for_each_leaf(root, virt, frames.len() as u64, |i, at, entry| {
            let frame = frames[i as usize];
            let old = *entry;
            if valid(old) && has(old, hw::BORROWED) && !has(old, hw::COW) {
                return Err(PagingError::AlreadyMapped(at));
            }
            if valid(old) && !has(old, hw::BORROWED) {
                // A touched page: its frame goes, a promise takes its place.
                phys::reserve(1).map_err(PagingError::Frames)?;
                freed.push(hw::address(old));
            } else if !valid(old) && !has(old, hw::LAZY) {
                phys::reserve(1).map_err(PagingError::Frames)?;
                fresh += 1;
            }
            let new = hw::leaf(frame, false, read) | bits;
            if valid(old) {
                replace(entry, at, new);
            } else {
                *entry = new;
            }
            Ok(())
        })
    });
    if !freed.is_empty() {
        hw::shootdown();
    }
    for frame in freed {
        phys::free(frame).map_err(PagingError::Frames)?;
    }
    result.map(|()| fresh)
}

/// Makes the private copy of the copy-on-write page holding `virt` (from the frame promised to
/// it) and maps it writable: called for a write fault on a present page. Returns false when the
/// page is not a writable copy-on-write page (the fault is someone's error). A page another CPU
/// copied meanwhile is already writable here: only this CPU's stale TLB entry faulted.
pub fn copy_on_write(virt: u64) -> bool {
    let page = virt & !(PAGE_SIZE - 1);
    with_root(|root| {
        let Ok(Some(entry)) = entry_at(root, page, 1, false) else { return false };
        let old = *entry;
        if valid(old) && !has(old, hw::COW) && hw::protection(old).contains(Protection::WRITE) {
            hw::flush_page(page);
            return true;
        }
        if !valid(old) || !has(old, hw::COW | hw::COW_WRITABLE) {
            return false;
        }
        let Ok(frame) = phys::alloc_reserved() else { return false };
        let image = hw::address(old);
        // SAFETY: both are whole frames in identity-mapped RAM: `image` is an image's frame,
        // which stays alive and unwritten while mapped, and `frame` was just allocated for this
        // page and nothing else refers to it.
        unsafe {
            core::ptr::copy_nonoverlapping(
                core::ptr::with_exposed_provenance::<u8>(image as usize),
                core::ptr::with_exposed_provenance_mut::<u8>(frame as usize),
                PAGE_SIZE as usize,
            )
        };
        let rights = hw::protection(old) | Protection::WRITE;
        replace(entry, page, hw::leaf(frame, false, rights));
        true
    })
}

/// Maps the `pages` frames from `phys` at `virt` (both page-aligned) with the rights `prot`,
/// without taking them over: [`unmap_range`] will unmap them but never free them. The pages at
/// `virt` must not be mapped or committed. The caller keeps the frames alive as long as they are
/// mapped (and unwritten, when they are mapped read-only to share them).
///
/// # Safety
/// As for [`map`], for every frame of the range: the caller keeps them alive while they are
/// mapped and shares them soundly.
pub unsafe fn map_borrowed(virt: u64, phys: u64, pages: u64, prot: Protection) -> Result<(), PagingError> {
    if !virt.is_multiple_of(PAGE_SIZE) || !phys.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(if !virt.is_multiple_of(PAGE_SIZE) { virt } else { phys }));
    }
    let prot = checked(prot)?;
    with_root(|root| {
        for_each_leaf(root, virt, pages, |i, at, entry| {
            if *entry != 0 {
                return Err(PagingError::AlreadyMapped(at));
            }
            *entry = hw::leaf(phys + i * PAGE_SIZE, false, prot) | hw::BORROWED;
            Ok(())
        })
    })
}

/// Gives every 4 KiB page in `start..end` the rights `prot`. A page already mapped keeps its
/// frame and changes rights; a page not mapped is committed: a free frame is promised to it
/// (`phys::reserve`, refused when none is left) and it is mapped, zeroed, on its first touch
/// ([`populate`]), so committing costs no zeroing and a page never touched costs no frame. One
/// TLB shootdown for the whole range, only if some mapped page lost rights or changed. Returns
/// how many pages were committed anew. On failure the pages committed so far stay committed:
/// the caller's region owns them and [`unmap_range`] releases them.
///
/// # Safety
/// As for [`protect`], for the pages of the range already mapped; the range must belong to the
/// caller's region.
pub unsafe fn commit_range(start: u64, end: u64, prot: Protection) -> Result<u64, PagingError> {
    let prot = checked(prot)?;
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(if !start.is_multiple_of(PAGE_SIZE) { start } else { end }));
    }
    let pages = (end - start) / PAGE_SIZE;
    let mut fresh = 0;
    let mut changed = false;
    // Promises taken ahead for the pages still to come in the same leaf table (one allocator
    // pass for a run of new pages, not one per page; never across a table, whose own frame must
    // not find the free frames all promised); what is left over goes back at the end.
    let mut banked = 0u64;
    let read_only = prot.without(Protection::WRITE);
    let result = with_root(|root| {
        for_each_leaf(root, start, pages, |i, virt, entry| {
            let old = *entry;
            if has(old, hw::COW) && valid(old) {
                // Copy-on-write stays read-only; the rights say whether a write copies.
                let mut cow = hw::with_protection(old, read_only) & !hw::COW_WRITABLE;
                if prot.contains(Protection::WRITE) {
                    cow |= hw::COW_WRITABLE;
                }
                if old != cow {
                    *entry = cow;
                    hw::flush_page(virt);
                    changed = true;
                }
            } else if valid(old) {
                if hw::protection(old) != prot {
                    *entry = hw::with_protection(old, prot);
                    hw::flush_page(virt);
                    changed = true;
                }
            } else if has(old, hw::LAZY) {
                *entry = lazy_entry(prot);
            } else {
                if banked == 0 {
                    // The pages left in this leaf table, or (when that many frames are not free)
                    // this one.
                    let ahead = (pages - i).min(512 - ((virt >> 12) & 511));
                    banked = match phys::reserve(ahead) {
                        Ok(()) => ahead,
                        Err(_) => phys::reserve(1).map(|()| 1).map_err(PagingError::Frames)?,
                    };
                }
                banked -= 1;
                *entry = lazy_entry(prot);
                fresh += 1;
            }
            Ok(())
        })
    });
    if banked > 0 {
        phys::unreserve(banked);
    }
    if changed {
        hw::shootdown();
    }
    result.map(|()| fresh)
}

/// Maps a zeroed frame at the committed, untouched page holding `virt` (from the frame promised
/// to it), with the rights it was committed with: called for a page fault on a page that is not
/// present. Returns false when the page is not such a page (the fault is someone's error).
pub fn populate(virt: u64) -> bool {
    with_root(|root| {
        let Ok(Some(entry)) = entry_at(root, virt & !(PAGE_SIZE - 1), 1, false) else { return false };
        let old = *entry;
        if valid(old) || !has(old, hw::LAZY) {
            return false;
        }
        match phys::alloc_reserved_zeroed() {
            Ok(frame) => {
                *entry = hw::leaf(frame, false, hw::protection(old));
                hw::publish();
                true
            }
            Err(_) => false,
        }
    })
}

/// Unmaps every 4 KiB page mapped in `start..end` and frees its frame, gives back the frames
/// promised to committed pages never touched, and frees the page tables left empty. The range
/// must not be covered by large pages (the wasm region never is). Other CPUs' TLBs forget the
/// pages before any frame is freed. Returns how many of the region's own pages were released,
/// touched or not, copy-on-write pages among them (page tables and other borrowed pages not
/// counted).
///
/// # Safety
/// As for [`unmap`], for every page of the range; the range must belong to the caller's region
/// (its frames and promises are the region's own, or borrowed).
pub unsafe fn unmap_range(start: u64, end: u64) -> Result<u64, PagingError> {
    /// What clearing entries released.
    #[derive(Default)]
    struct Released {
        /// Frames to free: pages', and page tables' (marked with bit 0; frames are aligned).
        frames: alloc::vec::Vec<u64>,
        /// Committed pages never touched: their promised frames are given back.
        lazy: u64,
        /// Valid pages whose frames are not the region's ([`hw::BORROWED`]).
        borrowed: u64,
    }
    /// Clears the entries of the table at `frame` (at paging `level`, 4 = the root) for
    /// `start..end`; returns whether the table is empty afterwards.
    fn clear(frame: u64, level: u32, start: u64, end: u64, out: &mut Released) -> Result<bool, PagingError> {
        // SAFETY: the root or a table reached from it through a valid table entry; the caller
        // holds the page-table lock.
        let table = unsafe { table_at(frame) };
        let mut addr = start;
        while addr < end {
            let next = (addr & !(span(level) - 1)).saturating_add(span(level)).min(end);
            let entry = &mut table[index(addr, level)];
            let e = *entry;
            if level == 1 && !valid(e) && has(e, hw::LAZY) {
                out.lazy += 1;
                *entry = 0;
            } else if valid(e) {
                if level == 1 {
                    if has(e, hw::BORROWED) {
                        out.borrowed += 1;
                        if has(e, hw::COW) {
                            // Its promise for the copy goes back, as a committed page's does.
                            out.lazy += 1;
                        }
                    } else {
                        out.frames.push(hw::address(e));
                    }
                    *entry = 0;
                } else if hw::is_block(e, level) {
                    return Err(PagingError::HugePageInTheWay(addr));
                } else {
                    let child = hw::address(e);
                    if clear(child, level - 1, addr, next, out)? {
                        *entry = 0;
                        out.frames.push(child | 1);
                    }
                }
            }
            addr = next;
        }
        Ok(level < 4 && table.iter().all(|&e| e == 0))
    }
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(if !start.is_multiple_of(PAGE_SIZE) { start } else { end }));
    }
    let mut out = Released::default();
    let result = with_root(|root| clear(root, 4, start, end, &mut out));
    if out.lazy > 0 {
        phys::unreserve(out.lazy);
    }
    if !out.frames.is_empty() || out.borrowed > 0 {
        hw::flush_all();
        hw::shootdown();
    }
    let mut released = out.lazy;
    for frame in out.frames {
        phys::free(frame & !1).map_err(PagingError::Frames)?;
        released += u64::from(frame & 1 == 0);
        if frame & 1 == 1 {
            TABLE_FRAMES.fetch_sub(1, Ordering::Relaxed);
        }
    }
    result.map(|_| released)
}

/// What [`init`] mapped.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingReport {
    /// 2 MiB pages of RAM.
    pub large_pages: u64,
    /// 4 KiB pages (RAM edges and the kernel image).
    pub small_pages: u64,
    /// Guard pages left unmapped.
    pub guard_pages: u64,
}

/// Maps `range` (grown to whole pages) at the same addresses with `prot`: 2 MiB pages for its
/// aligned interior unless `small_only` or a block overlaps `avoid`, 4 KiB pages for the rest;
/// pages already mapped (an overlap with what was mapped before) stay as they are.
fn identity_map(
    root: u64,
    range: PhysRange,
    prot: Protection,
    avoid: &dyn Fn(&PhysRange) -> bool,
    report: &mut PagingReport,
) -> Result<(), PagingError> {
    let mut addr = range.start;
    while addr < range.end {
        let block = PhysRange::sized(addr, LARGE_PAGE_SIZE);
        if addr.is_multiple_of(LARGE_PAGE_SIZE)
            && block.end <= range.end
            && !avoid(&block)
            && map_in(root, addr, addr, PageSize::Large, prot).is_ok()
        {
            report.large_pages += 1;
            addr += LARGE_PAGE_SIZE;
            continue;
        }
        if !avoid(&PhysRange::sized(addr, PAGE_SIZE)) {
            match map_in(root, addr, addr, PageSize::Small, prot) {
                Ok(()) => report.small_pages += 1,
                Err(PagingError::AlreadyMapped(_) | PagingError::HugePageInTheWay(_)) => {}
                Err(e) => return Err(e),
            }
        }
        addr += PAGE_SIZE;
    }
    Ok(())
}

/// Builds the kernel's page tables and switches to them. `ram` is every RAM range; `extra` are
/// ranges outside RAM that must stay readable (boot modules), mapped read-only; `nx` whether
/// the CPU can make pages non-executable (W^X is refused without it).
pub fn init(ram: &RangeSet, extra: &[PhysRange], nx: bool) -> Result<PagingReport, PagingError> {
    if !nx {
        return Err(PagingError::NoNx);
    }
    NX.store(true, Ordering::Relaxed);
    let image = crate::mem::image::kernel_image();
    let root = phys::alloc_zeroed().map_err(PagingError::Frames)?;
    let mut report = PagingReport::default();
    let rw = Protection::READ | Protection::WRITE;

    // Boot modules are never written: even where they lie in RAM they are mapped read-only (with
    // the `extra` ranges below), so that the kernel can map a module's pages elsewhere, as
    // component code, with no writable alias of them. Page 0 stays unmapped: a null pointer
    // faults.
    let in_module = |r: &PhysRange| extra.iter().any(|m| m.grow_to(PAGE_SIZE).overlaps(r));
    let avoid = |r: &PhysRange| r.start == 0 || r.overlaps(&image.whole) || in_module(r);
    for r in ram.iter() {
        identity_map(root, r.shrink_to(PAGE_SIZE), rw, &avoid, &mut report)?;
    }
    let guards = crate::mem::stacks::static_guards();
    for addr in (image.whole.start..image.whole.end).step_by(PAGE_SIZE as usize) {
        if guards.clone().any(|g| g.contains(addr)) {
            report.guard_pages += 1;
            continue;
        }
        let prot = if image.text.contains(addr) {
            Protection::READ | Protection::EXEC
        } else if image.rodata.contains(addr) {
            Protection::READ
        } else {
            rw
        };
        map_in(root, addr, addr, PageSize::Small, prot)?;
        report.small_pages += 1;
    }
    // A boot module holds the whole system's wasm and code (tens of MiB with the compiler
    // component): its aligned interior goes in large pages, read-only all the same.
    let in_image = |r: &PhysRange| r.overlaps(&image.whole);
    for r in extra {
        identity_map(root, r.grow_to(PAGE_SIZE), Protection::READ, &in_image, &mut report)?;
    }
    for r in hw::boot_devices() {
        identity_map(root, r.grow_to(PAGE_SIZE), rw | Protection::UNCACHED, &|_| false, &mut report)?;
    }
    // SAFETY: the new tables map everything the kernel touches from here on: its image (with the
    // same addresses), its stacks, RAM (boot data, frame bitmap, page tables), boot modules and
    // the devices it drives before it maps their windows itself.
    unsafe { hw::activate(root) };
    *ROOT.lock() = root;
    Ok(report)
}

/// The outcome of [`audit_wx`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WxAudit {
    /// Leaf mappings checked.
    pub leaves: u64,
    /// Of those, executable.
    pub executable: u64,
    /// Of those, writable.
    pub writable: u64,
}

/// Walks every page table and checks that no page is both writable and executable (taking the
/// rights of every level into account: the architecture's [`hw::table_rights`]). Returns the
/// first offending virtual address as an error.
pub fn audit_wx() -> Result<WxAudit, u64> {
    fn walk(frame: u64, level: u32, base: u64, w: bool, x: bool, audit: &mut WxAudit) -> Result<(), u64> {
        // SAFETY: the root or a table reached from it through a valid table entry, under the
        // page-table lock.
        let table = unsafe { table_at(frame) };
        for (i, &e) in table.iter().enumerate() {
            if !valid(e) {
                continue;
            }
            let mut virt = base | ((i as u64) << (12 + 9 * (level - 1)));
            if virt & (1 << 47) != 0 {
                virt |= 0xffff_0000_0000_0000;
            }
            if level == 1 || hw::is_block(e, level) {
                let prot = hw::protection(e);
                let (w, x) = (w && prot.contains(Protection::WRITE), x && prot.contains(Protection::EXEC));
                audit.leaves += 1;
                audit.writable += u64::from(w);
                audit.executable += u64::from(x);
                if w && x {
                    return Err(virt);
                }
            } else {
                let (tw, tx) = hw::table_rights(e);
                walk(hw::address(e), level - 1, virt, w && tw, x && tx, audit)?;
            }
        }
        Ok(())
    }
    with_root(|root| {
        let mut audit = WxAudit::default();
        walk(root, 4, 0, true, true, &mut audit).map(|()| audit)
    })
}
