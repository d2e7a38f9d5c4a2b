//! The kernel's own page tables: built at boot to replace the stub's 4 GiB identity map, then the
//! one place where pages are mapped, unmapped and re-protected (4 KiB and 2 MiB), under W^X.
//!
//! Layout after [`init`]: RAM identity-mapped read-write and never executable (2 MiB pages where a
//! whole aligned block is RAM, 4 KiB pages elsewhere); page 0 unmapped; the kernel image mapped by
//! section (text read-execute, rodata read-only, data and bss read-write, the guard page below
//! every static stack left unmapped). Walking the tables through the identity map is what the
//! `x86_64` crate's `OffsetPageTable` with offset 0 does.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::{FlagUpdateError, MapToError, MappedFrame, TranslateResult, UnmapError};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame, Size2MiB, Size4KiB,
    Translate,
};
use x86_64::{PhysAddr, VirtAddr};

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

static MAPPER: crate::irq_lock::IrqMutex<Option<OffsetPageTable<'static>>> = crate::irq_lock::IrqMutex::new(None);
static NX: AtomicBool = AtomicBool::new(false);

/// Hands page-table frames to the `x86_64` mapper from the kernel's frame allocator.
struct TableFrames(Option<FrameError>);

// SAFETY: every frame returned comes from the frame allocator, is unused and zeroed.
unsafe impl FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        match phys::alloc_zeroed() {
            Ok(a) => Some(PhysFrame::containing_address(PhysAddr::new(a))),
            Err(e) => {
                self.0 = Some(e);
                None
            }
        }
    }
}

fn flags(prot: Protection) -> Result<Flags, PagingError> {
    let prot = prot.check()?;
    let mut f = Flags::PRESENT;
    if prot.contains(Protection::WRITE) {
        f |= Flags::WRITABLE;
    }
    if !prot.contains(Protection::EXEC) {
        if !NX.load(Ordering::Relaxed) {
            return Err(PagingError::NoNx);
        }
        f |= Flags::NO_EXECUTE;
    }
    if prot.contains(Protection::UNCACHED) {
        f |= Flags::NO_CACHE | Flags::WRITE_THROUGH;
    }
    Ok(f)
}

fn protection(f: Flags) -> Protection {
    let mut p = Protection::READ;
    if f.contains(Flags::WRITABLE) {
        p = p | Protection::WRITE;
    }
    if !f.contains(Flags::NO_EXECUTE) {
        p = p | Protection::EXEC;
    }
    if f.contains(Flags::NO_CACHE) {
        p = p | Protection::UNCACHED;
    }
    p
}

fn map_in<S>(mapper: &mut OffsetPageTable<'static>, virt: u64, phys: u64, f: Flags) -> Result<(), PagingError>
where
    S: x86_64::structures::paging::PageSize,
    OffsetPageTable<'static>: Mapper<S>,
{
    if !virt.is_multiple_of(S::SIZE) || !phys.is_multiple_of(S::SIZE) {
        return Err(PagingError::Misaligned(if !virt.is_multiple_of(S::SIZE) { virt } else { phys }));
    }
    let page = Page::<S>::containing_address(VirtAddr::new(virt));
    let frame = PhysFrame::<S>::containing_address(PhysAddr::new(phys));
    let mut frames = TableFrames(None);
    // SAFETY: mapping is unsafe because a new mapping can alias memory; every caller maps
    // either a frame it owns, MMIO it owns, or the kernel's own identity map of RAM, and W^X is
    // checked by `flags`.
    match unsafe { mapper.map_to(page, frame, f, &mut frames) } {
        Ok(flush) => {
            flush.flush();
            Ok(())
        }
        Err(MapToError::FrameAllocationFailed) => {
            Err(PagingError::Frames(frames.0.unwrap_or(FrameError::OutOfMemory { frames: 1, free: 0 })))
        }
        Err(MapToError::ParentEntryHugePage) => Err(PagingError::HugePageInTheWay(virt)),
        Err(MapToError::PageAlreadyMapped(_)) => Err(PagingError::AlreadyMapped(virt)),
    }
}

fn with_mapper<R>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> R) -> R {
    // A fault on the running thread's own stack needs this lock: it happens before, if at all.
    super::stacks::probe_before_lock();
    let mut guard = MAPPER.lock();
    // Dropped before the guard: nested probes (the frame allocator's) know the lock is ours.
    let _held = super::stacks::MapperHeld::mark();
    f(guard.as_mut().expect("paging used before paging::init"))
}

/// Maps the page at `virt` to the frame at `phys` with `prot`.
pub fn map(virt: u64, phys: u64, size: PageSize, prot: Protection) -> Result<(), PagingError> {
    let f = flags(prot)?;
    with_mapper(|m| match size {
        PageSize::Small => map_in::<Size4KiB>(m, virt, phys, f),
        PageSize::Large => map_in::<Size2MiB>(m, virt, phys, f),
    })
}

/// Unmaps the page at `virt`; returns the physical address it mapped. Every CPU's TLB forgets it
/// before this returns.
pub fn unmap(virt: u64, size: PageSize) -> Result<u64, PagingError> {
    let frame = unmap_local(virt, size)?;
    shootdown();
    Ok(frame)
}

/// [`unmap`] with only this CPU's TLB flushed: the caller calls [`shootdown`] before the frame or
/// the address is used again.
fn unmap_local(virt: u64, size: PageSize) -> Result<u64, PagingError> {
    if !virt.is_multiple_of(size.bytes()) {
        return Err(PagingError::Misaligned(virt));
    }
    let err = |e: UnmapError| match e {
        UnmapError::ParentEntryHugePage => PagingError::HugePageInTheWay(virt),
        UnmapError::PageNotMapped | UnmapError::InvalidFrameAddress(_) => PagingError::NotMapped(virt),
    };
    with_mapper(|m| match size {
        PageSize::Small => m.unmap(Page::<Size4KiB>::containing_address(VirtAddr::new(virt))).map(|(fr, fl)| {
            fl.flush();
            fr.start_address().as_u64()
        }),
        PageSize::Large => m.unmap(Page::<Size2MiB>::containing_address(VirtAddr::new(virt))).map(|(fr, fl)| {
            fl.flush();
            fr.start_address().as_u64()
        }),
    })
    .map_err(err)
}

/// Changes the rights of the page at `virt`.
pub fn protect(virt: u64, size: PageSize, prot: Protection) -> Result<(), PagingError> {
    let f = flags(prot)?;
    if !virt.is_multiple_of(size.bytes()) {
        return Err(PagingError::Misaligned(virt));
    }
    let err = |e: FlagUpdateError| match e {
        FlagUpdateError::ParentEntryHugePage => PagingError::HugePageInTheWay(virt),
        FlagUpdateError::PageNotMapped => PagingError::NotMapped(virt),
    };
    with_mapper(|m| {
        // SAFETY: changing rights cannot create aliases; W^X was checked by `flags`. A page made
        // read-only or non-executable that is still in use faults, which is reported.
        unsafe {
            match size {
                PageSize::Small => {
                    m.update_flags(Page::<Size4KiB>::containing_address(VirtAddr::new(virt)), f).map(|fl| fl.flush())
                }
                PageSize::Large => m
                    .update_flags(Page::<Size2MiB>::containing_address(VirtAddr::new(virt)), f | Flags::HUGE_PAGE)
                    .map(|fl| fl.flush()),
            }
        }
    })
    .map_err(err)?;
    shootdown();
    Ok(())
}

/// How `virt` is mapped, if it is.
pub fn translate(virt: u64) -> Option<Translation> {
    with_mapper(|m| match m.translate(VirtAddr::new(virt)) {
        TranslateResult::Mapped { frame, offset, flags } => {
            let (base, size) = match frame {
                MappedFrame::Size4KiB(f) => (f.start_address().as_u64(), PageSize::Small),
                MappedFrame::Size2MiB(f) => (f.start_address().as_u64(), PageSize::Large),
                MappedFrame::Size1GiB(f) => (f.start_address().as_u64(), PageSize::Large),
            };
            Some(Translation { phys: base + offset, size, prot: protection(flags) })
        }
        TranslateResult::NotMapped | TranslateResult::InvalidFrameAddress(_) => None,
    })
}

/// Maps a fresh zeroed frame at `virt` (4 KiB) with `prot`; returns the frame.
pub fn map_new_page(virt: u64, prot: Protection) -> Result<u64, PagingError> {
    prot.check()?;
    let frame = phys::alloc_zeroed().map_err(PagingError::Frames)?;
    if let Err(e) = map(virt, frame, PageSize::Small, prot) {
        let _ = phys::free(frame);
        return Err(e);
    }
    Ok(frame)
}

/// Unmaps the 4 KiB page at `virt` and frees its frame (once no CPU's TLB has it).
pub fn unmap_and_free(virt: u64) -> Result<(), PagingError> {
    let frame = unmap(virt, PageSize::Small)?;
    phys::free(frame).map_err(PagingError::Frames)
}

/// Unmaps `pages` 4 KiB pages from `start` and frees their frames, with one TLB shootdown for
/// all of them. Stops at the first page that cannot be unmapped (what was unmapped is freed).
pub fn unmap_and_free_range(start: u64, pages: u64) -> Result<(), PagingError> {
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
    shootdown();
    for frame in frames {
        phys::free(frame).map_err(PagingError::Frames)?;
    }
    result
}

/// Software bit of a leaf entry that is not present: the page is committed (a frame is promised
/// to it, `phys::reserve`) but not yet touched; the entry's other bits are the rights it gets.
/// The processor ignores every bit of a non-present entry, so it faults as an unmapped page
/// would, and [`populate`] maps a zeroed frame there on the first touch.
const LAZY: Flags = Flags::BIT_9;

/// Software bit of a present leaf entry whose frame the wasm region does not own (an artifact's
/// page mapped where it lies in a boot module, [`map_borrowed`]): unmapping it frees nothing.
const BORROWED: Flags = Flags::BIT_10;

/// Software bit of a present, read-only leaf entry that maps a frame of a memory image (an
/// artifact's page, [`map_cow`]) copy-on-write: a frame is promised to the page for its private
/// copy. Always set with [`BORROWED`]: the image's frame is not the region's.
const COW: Flags = Flags::BIT_11;

/// Software bit of a [`COW`] entry whose page is writable: a write makes the private copy
/// ([`copy_on_write`]) and maps it with write rights.
const COW_WRITABLE: Flags = Flags::BIT_52;

/// Maps `frames` (each page-aligned, one per page) at `virt` copy-on-write: read-only until the
/// first write, which copies the page into a frame of its own ([`copy_on_write`]) when
/// `writable`. Each page keeps or gets a promised frame for that copy: a committed page's promise
/// passes to it, a touched page's frame is freed and a promise made instead, and a page not
/// committed is committed (refused when no frame is left). Returns how many pages were
/// committed anew. The caller keeps the frames alive and unwritten while they are mapped.
pub fn map_cow(virt: u64, frames: &[u64], writable: bool) -> Result<u64, PagingError> {
    if !virt.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(virt));
    }
    if let Some(&bad) = frames.iter().find(|&&f| f % PAGE_SIZE != 0) {
        return Err(PagingError::Misaligned(bad));
    }
    let mut f = flags(Protection::READ)? | BORROWED | COW;
    if writable {
        f |= COW_WRITABLE;
    }
    let mut fresh = 0;
    let mut freed = alloc::vec::Vec::new();
    let result = with_mapper(|m| {
        for_each_leaf(m, virt, frames.len() as u64, |i, at, entry| {
            let frame = frames[i as usize];
            let old = entry.flags();
            if old.contains(Flags::PRESENT) && old.contains(BORROWED) && !old.contains(COW) {
                return Err(PagingError::AlreadyMapped(at));
            }
            if old.contains(Flags::PRESENT) && !old.contains(BORROWED) {
                // A touched page: its frame goes, a promise takes its place.
                phys::reserve(1).map_err(PagingError::Frames)?;
                freed.push(entry.addr().as_u64());
            } else if !old.contains(Flags::PRESENT) && !old.contains(LAZY) {
                phys::reserve(1).map_err(PagingError::Frames)?;
                fresh += 1;
            }
            entry.set_addr(PhysAddr::new(frame), f);
            if old.contains(Flags::PRESENT) {
                x86_64::instructions::tlb::flush(VirtAddr::new(at));
            }
            Ok(())
        })
    });
    if !freed.is_empty() {
        shootdown();
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
    with_mapper(|m| {
        let Ok(Some(entry)) = leaf_entry(m, page, false) else { return false };
        let f = entry.flags();
        if f.contains(Flags::PRESENT | Flags::WRITABLE) && !f.contains(COW) {
            x86_64::instructions::tlb::flush(VirtAddr::new(page));
            return true;
        }
        if !f.contains(Flags::PRESENT | COW | COW_WRITABLE) {
            return false;
        }
        let Ok(frame) = phys::alloc_reserved() else { return false };
        let image = entry.addr().as_u64();
        // SAFETY: both are whole frames in identity-mapped RAM: `image` is an image's frame,
        // which stays alive and unwritten while mapped, and `frame` was just allocated for this
        // page and nothing else refers to it.
        unsafe { core::ptr::copy_nonoverlapping(image as *const u8, frame as *mut u8, PAGE_SIZE as usize) };
        entry.set_addr(PhysAddr::new(frame), (f - BORROWED - COW - COW_WRITABLE) | Flags::WRITABLE);
        x86_64::instructions::tlb::flush(VirtAddr::new(page));
        true
    })
}

/// Maps the `pages` frames from `phys` at `virt` (both page-aligned) with the rights `prot`,
/// without taking them over: [`unmap_range`] will unmap them but never free them. The pages at
/// `virt` must not be mapped or committed. The caller keeps the frames alive as long as they are
/// mapped (and unwritten, when they are mapped read-only to share them).
pub fn map_borrowed(virt: u64, phys: u64, pages: u64, prot: Protection) -> Result<(), PagingError> {
    if !virt.is_multiple_of(PAGE_SIZE) || !phys.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(if !virt.is_multiple_of(PAGE_SIZE) { virt } else { phys }));
    }
    let f = flags(prot)? | BORROWED;
    with_mapper(|m| {
        for_each_leaf(m, virt, pages, |i, at, entry| {
            if !entry.is_unused() {
                return Err(PagingError::AlreadyMapped(at));
            }
            entry.set_addr(PhysAddr::new(phys + i * PAGE_SIZE), f);
            Ok(())
        })
    })
}

/// Runs `f` on the leaf entry of each of the `pages` pages from `start` (page-aligned), in order,
/// making missing page tables: the tables are walked once per leaf table (2 MiB), not once per
/// page. Stops at the first error.
fn for_each_leaf(
    m: &mut OffsetPageTable<'static>,
    start: u64,
    pages: u64,
    mut f: impl FnMut(u64, u64, &mut PageTableEntry) -> Result<(), PagingError>,
) -> Result<(), PagingError> {
    let mut table: Option<(u64, &'static mut PageTable)> = None;
    for i in 0..pages {
        let virt = start + i * PAGE_SIZE;
        let base = virt & !(512 * PAGE_SIZE - 1);
        let leaves = match &mut table {
            Some((b, t)) if *b == base => t,
            _ => &mut table.insert((base, leaf_table(m, virt, true)?.ok_or(PagingError::NotMapped(virt))?)).1,
        };
        f(i, virt, &mut leaves[((virt >> 12) & 511) as usize])?;
    }
    Ok(())
}

/// The leaf (4 KiB) entry for `virt`, with the page tables above it made where missing (when
/// `make`) or `None` where one is missing (when not).
fn leaf_entry(
    m: &mut OffsetPageTable<'static>,
    virt: u64,
    make: bool,
) -> Result<Option<&'static mut PageTableEntry>, PagingError> {
    Ok(leaf_table(m, virt, make)?.map(|table| &mut table[((virt >> 12) & 511) as usize]))
}

/// The leaf page table (512 entries of 4 KiB pages, 2 MiB) that maps `virt`, made as
/// [`leaf_entry`] makes it: a range is walked once per leaf table, not once per page.
fn leaf_table(
    m: &mut OffsetPageTable<'static>,
    virt: u64,
    make: bool,
) -> Result<Option<&'static mut PageTable>, PagingError> {
    let mut table: *mut PageTable = m.level_4_table_mut();
    for level in [4u32, 3, 2] {
        // SAFETY: `table` is the PML4 or a table reached from it through a present non-leaf
        // entry: a page table in identity-mapped RAM that only the mapper (whose lock the caller
        // holds) touches.
        let entry = unsafe { &mut (&mut *table)[((virt >> (12 + 9 * (level - 1))) & 511) as usize] };
        if entry.flags().contains(Flags::HUGE_PAGE) {
            return Err(PagingError::HugePageInTheWay(virt));
        }
        if !entry.flags().contains(Flags::PRESENT) {
            if !make {
                return Ok(None);
            }
            let frame = phys::alloc_zeroed().map_err(PagingError::Frames)?;
            entry.set_addr(PhysAddr::new(frame), Flags::PRESENT | Flags::WRITABLE);
        }
        table = entry.addr().as_u64() as *mut PageTable;
    }
    // SAFETY: as above, for the level-1 table.
    Ok(Some(unsafe { &mut *table }))
}

/// Gives every 4 KiB page in `start..end` the rights `prot`. A page already mapped keeps its
/// frame and changes rights; a page not mapped is committed: a free frame is promised to it
/// (`phys::reserve`, refused when none is left) and it is mapped, zeroed, on its first touch
/// ([`populate`]), so committing costs no zeroing and a page never touched costs no frame. One
/// TLB shootdown for the whole range, only if some mapped page lost rights or changed. Returns
/// how many pages were committed anew. On failure the pages committed so far stay committed:
/// the caller's region owns them and [`unmap_range`] releases them.
pub fn commit_range(start: u64, end: u64, prot: Protection) -> Result<u64, PagingError> {
    let f = flags(prot)?;
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(if !start.is_multiple_of(PAGE_SIZE) { start } else { end }));
    }
    let rights = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE | Flags::NO_CACHE | Flags::WRITE_THROUGH;
    let pages = (end - start) / PAGE_SIZE;
    let mut fresh = 0;
    let mut changed = false;
    // Promises taken ahead for the pages still to come in the same leaf table (one allocator
    // pass for a run of new pages, not one per page; never across a table, whose own frame must
    // not find the free frames all promised); what is left over goes back at the end.
    let mut banked = 0u64;
    let result = with_mapper(|m| {
        for_each_leaf(m, start, pages, |i, virt, entry| {
            let old = entry.flags();
            if old.contains(COW) {
                // Copy-on-write stays read-only; the rights say whether a write copies.
                let mut cow = (f - Flags::WRITABLE) | BORROWED | COW;
                if f.contains(Flags::WRITABLE) {
                    cow |= COW_WRITABLE;
                }
                if old != cow {
                    entry.set_flags(cow);
                    x86_64::instructions::tlb::flush(VirtAddr::new(virt));
                    changed = true;
                }
            } else if old.contains(Flags::PRESENT) {
                if old & rights != f {
                    entry.set_flags(f | (old & BORROWED));
                    x86_64::instructions::tlb::flush(VirtAddr::new(virt));
                    changed = true;
                }
            } else if old.contains(LAZY) {
                entry.set_flags((f - Flags::PRESENT) | LAZY);
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
                entry.set_addr(PhysAddr::new(0), (f - Flags::PRESENT) | LAZY);
                fresh += 1;
            }
            Ok(())
        })
    });
    if banked > 0 {
        phys::unreserve(banked);
    }
    if changed {
        shootdown();
    }
    result.map(|()| fresh)
}

/// Maps a zeroed frame at the committed, untouched page holding `virt` (from the frame promised
/// to it), with the rights it was committed with: called for a page fault on a page that is not
/// present. Returns false when the page is not such a page (the fault is someone's error).
pub fn populate(virt: u64) -> bool {
    with_mapper(|m| {
        let Ok(Some(entry)) = leaf_entry(m, virt & !(PAGE_SIZE - 1), false) else { return false };
        let f = entry.flags();
        if f.contains(Flags::PRESENT) || !f.contains(LAZY) {
            return false;
        }
        match phys::alloc_reserved_zeroed() {
            Ok(frame) => {
                entry.set_addr(PhysAddr::new(frame), (f - LAZY) | Flags::PRESENT);
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
pub fn unmap_range(start: u64, end: u64) -> Result<u64, PagingError> {
    /// What clearing entries released.
    #[derive(Default)]
    struct Released {
        /// Frames to free: pages', and page tables' (marked with bit 0; frames are aligned).
        frames: alloc::vec::Vec<u64>,
        /// Committed pages never touched: their promised frames are given back.
        lazy: u64,
        /// Present pages whose frames are not the region's ([`BORROWED`]).
        borrowed: u64,
    }
    /// Clears the entries of `table` (at paging `level`, 4 = PML4) for `start..end`; returns
    /// whether the table is empty afterwards.
    fn clear(table: &mut PageTable, level: u32, start: u64, end: u64, out: &mut Released) -> Result<bool, PagingError> {
        let span = 1u64 << (12 + 9 * (level - 1));
        let mut addr = start;
        while addr < end {
            let next = (addr & !(span - 1)).saturating_add(span).min(end);
            let entry = &mut table[((addr >> (12 + 9 * (level - 1))) & 511) as usize];
            let f = entry.flags();
            if level == 1 && !f.contains(Flags::PRESENT) && f.contains(LAZY) {
                out.lazy += 1;
                entry.set_unused();
            } else if f.contains(Flags::PRESENT) {
                if level == 1 {
                    if f.contains(BORROWED) {
                        out.borrowed += 1;
                        if f.contains(COW) {
                            // Its promise for the copy goes back, as a committed page's does.
                            out.lazy += 1;
                        }
                    } else {
                        out.frames.push(entry.addr().as_u64());
                    }
                    entry.set_unused();
                } else if f.contains(Flags::HUGE_PAGE) {
                    return Err(PagingError::HugePageInTheWay(addr));
                } else {
                    let child = entry.addr().as_u64();
                    // SAFETY: a present non-leaf entry points at a page table in identity-mapped
                    // RAM, which only the mapper (whose lock the caller holds) touches.
                    let child_table = unsafe { &mut *(child as *mut PageTable) };
                    if clear(child_table, level - 1, addr, next, out)? {
                        entry.set_unused();
                        out.frames.push(child | 1);
                    }
                }
            }
            addr = next;
        }
        Ok(level < 4 && table.iter().all(|e| e.is_unused()))
    }
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Misaligned(if !start.is_multiple_of(PAGE_SIZE) { start } else { end }));
    }
    let mut out = Released::default();
    let result = with_mapper(|m| clear(m.level_4_table_mut(), 4, start, end, &mut out));
    if out.lazy > 0 {
        phys::unreserve(out.lazy);
    }
    if !out.frames.is_empty() || out.borrowed > 0 {
        x86_64::instructions::tlb::flush_all();
        shootdown();
    }
    let mut released = out.lazy;
    for frame in out.frames {
        phys::free(frame & !1).map_err(PagingError::Frames)?;
        released += u64::from(frame & 1 == 0);
    }
    result.map(|_| released)
}

/// The generation of the last TLB flush any CPU asked for.
static FLUSH_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every other online CPU flush its TLB, and waits until they have: called after page
/// tables changed in a way a stale TLB entry could outlive (an unmap, fewer rights). Each CPU
/// flushes from the IPI ([`service_flush`]), or while it spins on a kernel lock (so a CPU waiting
/// with interrupts off for a lock the caller holds still answers). Kernel mappings are not global,
/// so reloading CR3 flushes them all.
pub fn shootdown() {
    let online = super::smp::online() as usize;
    if online <= 1 {
        return;
    }
    let me = crate::percpu::index();
    let generation = FLUSH_GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    super::apic::send_to_others(super::traps::TLB_VECTOR);
    for cpu in (0..online).filter(|&c| c != me) {
        let Some(data) = crate::percpu::of(cpu) else { continue };
        while data.flushed.load(Ordering::Acquire) < generation {
            service_flush();
            core::hint::spin_loop();
        }
    }
}

/// Flushes this CPU's TLB if another CPU asked for it since the last time.
pub fn service_flush() {
    let generation = FLUSH_GENERATION.load(Ordering::Acquire);
    let me = crate::percpu::this();
    if me.flushed.load(Ordering::Relaxed) < generation {
        x86_64::instructions::tlb::flush_all();
        me.flushed.store(generation, Ordering::Release);
    }
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

/// Builds the kernel's page tables and switches to them. `ram` is every RAM range; `extra` are
/// ranges outside RAM that must stay readable (boot modules), mapped read-only.
pub fn init(ram: &RangeSet, extra: &[PhysRange], nx: bool) -> Result<PagingReport, PagingError> {
    if !nx {
        return Err(PagingError::NoNx);
    }
    NX.store(true, Ordering::Relaxed);
    let image = crate::mem::image::kernel_image();
    let guards: [PhysRange; 1 + super::stacks::IST_COUNT] = {
        let mut g = [PhysRange::default(); 1 + super::stacks::IST_COUNT];
        for (slot, (_, guard, _)) in g.iter_mut().zip(super::stacks::static_stacks()) {
            *slot = guard;
        }
        g
    };
    let pml4 = phys::alloc_zeroed().map_err(PagingError::Frames)?;
    // SAFETY: the frame is fresh, zeroed (an empty table) and identity-mapped; the mapper owns it
    // from here on.
    let table = unsafe { &mut *(pml4 as *mut PageTable) };
    // SAFETY: all of physical memory that page tables live in is identity-mapped, both by the
    // boot tables now and by the tables built here, so offset 0 is correct.
    let mut mapper = unsafe { OffsetPageTable::new(table, VirtAddr::new(0)) };
    let mut report = PagingReport::default();
    let rw = flags(Protection::READ | Protection::WRITE)?;
    let ro = flags(Protection::READ)?;
    let rx = flags(Protection::READ | Protection::EXEC)?;

    // Boot modules are never written: even where they lie in RAM they are mapped read-only (with
    // the `extra` ranges below), so that the kernel can map a module's pages elsewhere, as
    // component code, with no writable alias of them.
    let module = |addr: u64| extra.iter().any(|r| r.grow_to(PAGE_SIZE).contains(addr));
    let overlaps_module = |block: &PhysRange| extra.iter().any(|r| r.grow_to(PAGE_SIZE).overlaps(block));
    for r in ram.iter() {
        let r = r.shrink_to(PAGE_SIZE);
        let mut addr = r.start;
        while addr < r.end {
            let block = PhysRange::sized(addr, LARGE_PAGE_SIZE);
            if addr % LARGE_PAGE_SIZE == 0
                && block.end <= r.end
                && addr != 0
                && !block.overlaps(&image.whole)
                && !overlaps_module(&block)
            {
                map_in::<Size2MiB>(&mut mapper, addr, addr, rw)?;
                report.large_pages += 1;
                addr += LARGE_PAGE_SIZE;
                continue;
            }
            if addr != 0 && !image.whole.contains(addr) && !module(addr) {
                map_in::<Size4KiB>(&mut mapper, addr, addr, rw)?;
                report.small_pages += 1;
            }
            addr += PAGE_SIZE;
        }
    }
    for addr in (image.whole.start..image.whole.end).step_by(PAGE_SIZE as usize) {
        if guards.iter().any(|g| g.contains(addr)) {
            report.guard_pages += 1;
            continue;
        }
        let f = if image.text.contains(addr) {
            rx
        } else if image.rodata.contains(addr) {
            ro
        } else {
            rw
        };
        map_in::<Size4KiB>(&mut mapper, addr, addr, f)?;
        report.small_pages += 1;
    }
    for r in extra {
        let r = r.grow_to(PAGE_SIZE);
        let mut addr = r.start;
        while addr < r.end {
            // A boot module holds the whole system's wasm and code (tens of MiB with the compiler
            // component): its aligned interior goes in large pages, read-only all the same.
            let block = PhysRange::sized(addr, LARGE_PAGE_SIZE);
            if addr % LARGE_PAGE_SIZE == 0
                && block.end <= r.end
                && !block.overlaps(&image.whole)
                && map_in::<Size2MiB>(&mut mapper, addr, addr, ro).is_ok()
            {
                report.large_pages += 1;
                addr += LARGE_PAGE_SIZE;
                continue;
            }
            if mapper.translate_addr(VirtAddr::new(addr)).is_none() {
                map_in::<Size4KiB>(&mut mapper, addr, addr, ro)?;
                report.small_pages += 1;
            }
            addr += PAGE_SIZE;
        }
    }
    // SAFETY: the new tables map everything the kernel touches from here on: its image (with the
    // same addresses), its stacks, RAM (boot data, frame bitmap, page tables) and boot modules.
    unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(pml4)), Cr3Flags::empty()) };
    *MAPPER.lock() = Some(mapper);
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
/// rights of every level into account). Returns the first offending virtual address as an error.
pub fn audit_wx() -> Result<WxAudit, u64> {
    fn walk(table: &PageTable, level: u8, base: u64, w: bool, x: bool, audit: &mut WxAudit) -> Result<(), u64> {
        for (i, e) in table.iter().enumerate() {
            if !e.flags().contains(Flags::PRESENT) {
                continue;
            }
            let shift = 12 + 9 * (u64::from(level) - 1);
            let mut virt = base | ((i as u64) << shift);
            if virt & (1 << 47) != 0 {
                virt |= 0xffff_0000_0000_0000;
            }
            let w = w && e.flags().contains(Flags::WRITABLE);
            let x = x && !e.flags().contains(Flags::NO_EXECUTE);
            if level == 1 || e.flags().contains(Flags::HUGE_PAGE) {
                audit.leaves += 1;
                audit.writable += u64::from(w);
                audit.executable += u64::from(x);
                if w && x {
                    return Err(virt);
                }
            } else {
                // SAFETY: a present non-leaf entry points at a page table in identity-mapped RAM.
                let next = unsafe { &*(e.addr().as_u64() as *const PageTable) };
                walk(next, level - 1, virt, w, x, audit)?;
            }
        }
        Ok(())
    }
    with_mapper(|m| {
        let mut audit = WxAudit::default();
        walk(m.level_4_table(), 4, 0, true, true, &mut audit).map(|()| audit)
    })
}
