//! The kernel's side of Wasmtime's virtual-memory interface (`custom-virtual-memory`): the
//! reservations its linear memories, guard regions and code live in, committed and protected
//! through the kernel's page tables.
//!
//! Reservations come from the wasm region of the address space (`layout::WASM_BASE`), which
//! holds nothing else. A reservation is address space only: its pages are unmapped, so any access
//! faults. Committing a range (`wasmtime_mprotect` with rights, or a mapping made with rights)
//! promises a free frame to every page that has none (`phys::reserve`) and marks it committed;
//! the first touch of such a page, by wasm code or by the kernel, faults, and [`populate`] maps
//! the promised frame there, zeroed. So a page costs a frame only once touched, yet running out
//! of frames is an error when Wasmtime makes memory accessible (at instantiation and at each
//! `memory.grow`, within the component's memory budget), never a fault later: promised frames
//! are kept from every other allocation. Taking the rights away (`prot` 0) gives the frames and
//! promises back. W^X holds: the page tables refuse writable and executable at once.
//!
//! A module's initial memory contents are a memory image: the artifact's own pages, where it lies
//! in the boot bundle, mapped copy-on-write into each new linear memory (`wasmtime_memory_image_*`,
//! `paging::map_cow`). Instances share the pages they only read; the first write to one copies
//! it into a frame promised to it when it was mapped.
//!
//! Each function returns 0 on success and an errno-style code otherwise (Wasmtime reports it as
//! "os error N"); the reason is logged with the addresses it concerns.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use mica_runtime::config::{MEMORY_GUARD, MEMORY_RESERVATION};
use mica_runtime::wasmtime::{self, CustomCodeMemory};

use crate::irq_lock::IrqMutex;
use crate::mem::Protection;
use crate::mem::layout::{WASM_BASE, WASM_SIZE};
use crate::mem::paging;
use crate::mem::range::{PAGE_SIZE, align_up};
use crate::mem::vspace::VirtualSpace;

/// Out of memory (frames or address space).
const ENOMEM: i32 = 12;
/// An argument that names no reservation, or rights that break W^X.
const EINVAL: i32 = 22;

/// Wasmtime's protection bits (`WASMTIME_PROT_*` in `wasmtime-platform.h`).
const PROT_READ: u32 = 1;
const PROT_WRITE: u32 = 2;
const PROT_EXEC: u32 = 4;

static SPACE: IrqMutex<Option<VirtualSpace>> = IrqMutex::new(None);

/// Pages committed in the wasm region now (touched or not).
static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// A linear memory: a reservation of [`LINEAR_MEMORY`] bytes, its guard first.
#[derive(Debug)]
struct LinearMemory {
    /// The thread that made it (the instance's own: it instantiates and runs there).
    owner: u64,
    /// Where its byte 0 lies, and how many bytes from there are accessible now.
    view: MemoryView,
    /// Device memory mapped into it ([`map_device_memory`]).
    device: alloc::vec::Vec<DeviceMapping>,
}

/// What keeps the frames of device memory alive while a linear memory maps them: the DMA buffer
/// they belong to. They are freed only once both the driver's hardware table and the memory
/// have let go, so neither a freed buffer nor an ended instance leaves a page mapping a frame
/// that someone else may get.
pub type KeepAlive = Arc<dyn core::any::Any + Send + Sync>;

/// Device memory mapped into a linear memory at `offset..offset + len`.
#[derive(Debug)]
struct DeviceMapping {
    offset: u64,
    len: u64,
    _frames: KeepAlive,
}

/// Where a linear memory's byte 0 lies and how many bytes from there are accessible now (its
/// current size, in whole pages), kept up to date as Wasmtime grows it.
#[derive(Clone, Debug)]
pub struct MemoryView {
    base: u64,
    accessible: Arc<AtomicU64>,
}

impl MemoryView {
    /// The address of `offset..offset + len`, if those bytes are accessible.
    pub fn span_address(&self, offset: u32, len: u32) -> Result<u64, String> {
        let end = u64::from(offset) + u64::from(len);
        let accessible = self.accessible.load(Ordering::Acquire);
        if end > accessible {
            return Err(format!("span {offset:#x}+{len:#x} is outside the linear memory ({accessible:#x} bytes)"));
        }
        Ok(self.base + u64::from(offset))
    }
}

/// How large the reservation of a linear memory is: the guard before, the memory's reservation,
/// the guard after (`mica_runtime::config`).
const LINEAR_MEMORY: u64 = MEMORY_GUARD + MEMORY_RESERVATION + MEMORY_GUARD;

/// The linear memories, by the start of their reservation.
static MEMORIES: IrqMutex<BTreeMap<u64, LinearMemory>> = IrqMutex::new(BTreeMap::new());

/// Notes that `start..end` was given rights (`writable`) or taken its rights away, for the
/// linear memory it lies in, if any.
fn track_access(start: u64, end: u64, writable: Option<bool>) {
    let memories = MEMORIES.lock();
    let Some((_, memory)) = memories.range(..=start).next_back() else { return };
    let (base, accessible) = (memory.view.base, &memory.view.accessible);
    if start < base || end > base + MEMORY_RESERVATION {
        return;
    }
    let now = accessible.load(Ordering::Acquire);
    match writable {
        Some(true) if start <= base + now => accessible.store(now.max(end - base), Ordering::Release),
        Some(_) => {}
        None => accessible.store(now.min(start - base), Ordering::Release),
    }
}

/// The one linear memory made by thread `owner`; an error when the thread has none or several.
pub fn memory_of(owner: u64) -> Result<MemoryView, String> {
    let mut memories = MEMORIES.lock();
    only_memory_of(&mut memories, owner).map(|(_, m)| m.view.clone())
}

/// The key and record of the one linear memory made by thread `owner`.
fn only_memory_of(memories: &mut BTreeMap<u64, LinearMemory>, owner: u64) -> Result<(u64, &mut LinearMemory), String> {
    let mut mine = memories.iter_mut().filter(|(_, m)| m.owner == owner);
    match (mine.next(), mine.next()) {
        (Some((&key, m)), None) => Ok((key, m)),
        (None, _) => Err(String::from("the component has no linear memory")),
        (Some(_), Some(_)) => Err(String::from("the component has more than one linear memory: spans are ambiguous")),
    }
}

/// Maps the `pages` frames from `phys` (device memory: a DMA buffer's) into the linear memory of
/// thread `owner` at byte `offset`, readable and writable, in place of the pages there (whose
/// frames and promises go back). `offset` must be page-aligned and the whole range accessible
/// now, and it must not overlap device memory mapped before. `frames` is kept with the memory
/// until the range is unmapped ([`unmap_device_memory`]) or the memory goes.
pub fn map_device_memory(owner: u64, offset: u32, phys: u64, pages: u64, frames: KeepAlive) -> Result<(), String> {
    let (offset, len) = (u64::from(offset), pages * PAGE_SIZE);
    let (key, virt) = {
        let mut memories = MEMORIES.lock();
        let (key, memory) = only_memory_of(&mut memories, owner)?;
        if offset % PAGE_SIZE != 0 {
            return Err(format!("offset {offset:#x} is not a multiple of the page size ({PAGE_SIZE})"));
        }
        let accessible = memory.view.accessible.load(Ordering::Acquire);
        if offset + len > accessible {
            return Err(format!(
                "{len:#x} bytes at offset {offset:#x} reach past the linear memory's current size ({accessible:#x} bytes)"
            ));
        }
        if let Some(other) = memory.device.iter().find(|d| d.offset < offset + len && offset < d.offset + d.len) {
            return Err(format!(
                "{len:#x} bytes at offset {offset:#x} overlap the DMA buffer mapped at {:#x}+{:#x}",
                other.offset, other.len
            ));
        }
        (key, memory.view.base + offset)
    };
    let rw = Protection::READ | Protection::WRITE;
    // The range is inside `owner`'s own linear memory (checked above) and `owner` is the running
    // thread, in a host call: the component is not running, and Rust code reaches its memory
    // only through Wasmtime's per-call views, none of which is held across this call. Its pages
    // are the memory's own (committed, or copy-on-write from an image): replacing them drops
    // only the component's bytes, which the interface says it gives up.
    // SAFETY: as said above: nothing uses these pages during the call.
    let released = unsafe { paging::unmap_range(virt, virt + len) }.map_err(|e| format!("unmapping its pages: {e}"))?;
    COMMITTED.fetch_sub(released, Ordering::Relaxed);
    // SAFETY: the frames are a DMA buffer's, kept alive with the memory by `frames` until they
    // are unmapped; the component and its device share them on purpose, and nothing else maps
    // them.
    if let Err(e) = unsafe { paging::map_borrowed(virt, phys, pages, rw) } {
        // SAFETY: the same range as above, in the same state (partly mapped at most).
        let _ = unsafe { paging::unmap_range(virt, virt + len) };
        // SAFETY: the same range, now unmapped: committing it gives it fresh pages.
        if let Ok(fresh) = unsafe { paging::commit_range(virt, virt + len, rw) } {
            COMMITTED.fetch_add(fresh, Ordering::Relaxed);
        }
        return Err(format!("mapping the buffer: {e}"));
    }
    let mapping = DeviceMapping { offset, len, _frames: frames };
    match MEMORIES.lock().get_mut(&key) {
        Some(memory) => memory.device.push(mapping),
        // Only the owner's thread, which is here, unmaps its memory.
        None => log::error!("wasm memory at {key:#x} went while device memory was mapped into it"),
    }
    Ok(())
}

/// Unmaps the device memory mapped at byte `offset` of thread `owner`'s linear memory and gives
/// the range fresh committed pages again (zeroed on first touch), so the memory stays whole;
/// then lets go of the device memory's frames.
pub fn unmap_device_memory(owner: u64, offset: u32) -> Result<(), String> {
    let offset = u64::from(offset);
    let (key, virt, mapping) = {
        let mut memories = MEMORIES.lock();
        let (key, memory) = only_memory_of(&mut memories, owner)?;
        let Some(at) = memory.device.iter().position(|d| d.offset == offset) else {
            return Err(format!("no DMA buffer is mapped at offset {offset:#x}"));
        };
        (key, memory.view.base + offset, memory.device.swap_remove(at))
    };
    let len = mapping.len;
    // SAFETY: the DMA buffer mapped into `owner`'s memory (found above); `owner` is the running
    // thread in a host call, and the driver frees a buffer only once its device is done with it.
    if let Err(e) = unsafe { paging::unmap_range(virt, virt + len) } {
        // Still mapped, maybe: the frames must stay alive with the memory.
        if let Some(memory) = MEMORIES.lock().get_mut(&key) {
            memory.device.push(mapping);
        }
        return Err(format!("unmapping the buffer: {e}"));
    }
    drop(mapping);
    // SAFETY: the range just unmapped, inside `owner`'s memory: fresh pages for it.
    let fresh = unsafe { paging::commit_range(virt, virt + len, Protection::READ | Protection::WRITE) }
        .map_err(|e| format!("giving the range fresh pages: {e}"))?;
    COMMITTED.fetch_add(fresh, Ordering::Relaxed);
    Ok(())
}

fn with_space<R>(f: impl FnOnce(&mut VirtualSpace) -> R) -> R {
    let mut guard = SPACE.lock();
    f(guard.get_or_insert_with(|| VirtualSpace::new(WASM_BASE, WASM_SIZE)))
}

/// Handles a page fault at `addr` on a page that is not present: if it is a committed page of the
/// wasm region not touched before, maps its frame and returns true (the faulting instruction is
/// then run again); otherwise false.
pub fn populate(addr: u64) -> bool {
    in_wasm_region(addr) && paging::populate(addr)
}

/// Whether `addr` lies in the wasm region: code there is code Wasmtime compiled.
pub fn in_wasm_region(addr: u64) -> bool {
    (WASM_BASE..WASM_BASE + WASM_SIZE).contains(&addr)
}

/// What the wasm region holds now.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Reservations.
    pub reservations: usize,
    /// Bytes of address space reserved.
    pub reserved: u64,
    /// Pages committed (each has its frame, or a frame promised to it).
    pub pages: u64,
    /// Pages of memory images mapped copy-on-write since boot.
    pub image_pages_mapped: u64,
    /// Of those, pages copied on a write since boot.
    pub image_pages_copied: u64,
}

/// What the wasm region holds now.
pub fn usage() -> Usage {
    let (reservations, reserved) = with_space(|s| (s.reservations(), s.reserved()));
    Usage {
        reservations,
        reserved,
        pages: COMMITTED.load(Ordering::Relaxed),
        image_pages_mapped: IMAGE_PAGES_MAPPED.load(Ordering::Relaxed),
        image_pages_copied: IMAGE_PAGES_COPIED.load(Ordering::Relaxed),
    }
}

fn protection(prot: u32) -> Option<Protection> {
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
        return None;
    }
    let mut p = Protection::READ;
    if prot & PROT_WRITE != 0 {
        p = p | Protection::WRITE;
    }
    if prot & PROT_EXEC != 0 {
        p = p | Protection::EXEC;
    }
    Some(p)
}

/// Gives `start..end` the rights `prot` (committing its pages), or with `prot` 0 unmaps it and
/// frees its frames and promises.
///
/// # Safety
/// The range must lie in a reservation of the wasm region, and nothing may rely on what the
/// change takes away: the pages' contents when it unmaps them, their rights when it lowers them.
unsafe fn apply(start: u64, end: u64, prot: u32) -> i32 {
    match protection(prot) {
        // SAFETY: forwarded to the caller; the wasm region holds only Wasmtime's mappings.
        Some(p) => match unsafe { paging::commit_range(start, end, p) } {
            Ok(fresh) => {
                COMMITTED.fetch_add(fresh, Ordering::Relaxed);
                track_access(start, end, Some(p.contains(Protection::WRITE)));
                0
            }
            Err(e) => {
                log::warn!("wasm memory {start:#x}..{end:#x}: cannot commit: {e}");
                if matches!(e, paging::PagingError::Frames(_)) { ENOMEM } else { EINVAL }
            }
        },
        // SAFETY: forwarded to the caller.
        None => match unsafe { paging::unmap_range(start, end) } {
            Ok(freed) => {
                COMMITTED.fetch_sub(freed, Ordering::Relaxed);
                track_access(start, end, None);
                0
            }
            Err(e) => {
                log::warn!("wasm memory {start:#x}..{end:#x}: cannot decommit: {e}");
                EINVAL
            }
        },
    }
}

/// The pages of `ptr..ptr + size` (the length rounded up to whole pages, as `mprotect` does) if
/// `ptr` is page-aligned and they lie inside one reservation.
fn reserved_range(what: &str, ptr: *mut u8, size: usize) -> Result<(u64, u64), i32> {
    let start = ptr as u64;
    let end = start.checked_add(align_up(size as u64, PAGE_SIZE)).ok_or(EINVAL)?;
    if !start.is_multiple_of(PAGE_SIZE) {
        log::warn!("wasm {what}: {start:#x}+{size:#x} does not start on a page");
        return Err(EINVAL);
    }
    if size == 0 {
        return Ok((start, end));
    }
    if with_space(|s| s.reservation_of(start, end)).is_none() {
        log::warn!("wasm {what}: {start:#x}+{size:#x} is not inside a reservation");
        return Err(EINVAL);
    }
    Ok((start, end))
}

/// Makes a mapping of `size` bytes: a reservation, committed with `prot_flags` unless that is 0.
///
/// # Safety
/// `ret` must be valid for a write (Wasmtime passes a pointer to its own local).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_mmap_new(size: usize, prot_flags: u32, ret: &mut *mut u8) -> i32 {
    let start = match with_space(|s| s.reserve(size as u64)) {
        Ok(start) => start,
        Err(e) => {
            log::warn!("wasm mapping of {size:#x} bytes: {e}");
            return ENOMEM;
        }
    };
    let end = start + align_up(size as u64, PAGE_SIZE);
    if end - start == LINEAR_MEMORY {
        let view = MemoryView { base: start + MEMORY_GUARD, accessible: Arc::new(AtomicU64::new(0)) };
        let memory = LinearMemory { owner: crate::sched::current_id(), view, device: alloc::vec::Vec::new() };
        MEMORIES.lock().insert(start, memory);
    }
    if protection(prot_flags).is_some() {
        // SAFETY: the reservation just made: nothing uses it yet.
        let rc = unsafe { apply(start, end, prot_flags) };
        if rc != 0 {
            // SAFETY: the same reservation, handed to no one.
            unsafe { apply(start, end, 0) };
            MEMORIES.lock().remove(&start);
            let _ = with_space(|s| s.release(start, size as u64));
            return rc;
        }
    }
    *ret = core::ptr::with_exposed_provenance_mut(start as usize);
    0
}

/// Replaces `addr..addr + size` with fresh zeroed pages with `prot_flags` (none for 0).
///
/// # Safety
/// Wasmtime's promise for `mmap_remap`: the range is part of a mapping it made, and it wants the
/// old contents gone.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_mmap_remap(addr: *mut u8, size: usize, prot_flags: u32) -> i32 {
    let (start, end) = match reserved_range("remap", addr, size) {
        Ok(r) => r,
        Err(rc) => return rc,
    };
    // SAFETY: inside a reservation (checked); forwarded to the caller.
    match unsafe { apply(start, end, 0) } {
        // SAFETY: the same range, now unmapped.
        0 if protection(prot_flags).is_some() => unsafe { apply(start, end, prot_flags) },
        rc => rc,
    }
}

/// Unmaps the whole mapping `ptr..ptr + size` and releases its reservation.
///
/// # Safety
/// Wasmtime's promise for `munmap`: a mapping it made and no longer uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_munmap(ptr: *mut u8, size: usize) -> i32 {
    let start = ptr as u64;
    let len = align_up(size as u64, PAGE_SIZE);
    if with_space(|s| s.reservation_of(start, start + len)) != Some((start, len)) {
        log::warn!("wasm munmap: {start:#x}+{size:#x} is not one whole reservation");
        return EINVAL;
    }
    // SAFETY: one whole reservation (checked); forwarded to the caller.
    let rc = unsafe { apply(start, start + len, 0) };
    if rc == 0 {
        // Device memory mapped into it is freed here, once unmapped, outside the lock.
        let gone = MEMORIES.lock().remove(&start);
        drop(gone);
        let _ = with_space(|s| s.release(start, size as u64));
    }
    rc
}

/// Gives `ptr..ptr + size` the rights `prot_flags`: committing the pages not committed yet (a
/// frame promised to each, mapped on first touch), or with 0, unmapping the pages and freeing
/// their frames and promises.
///
/// # Safety
/// Wasmtime's promise for `mprotect`: part of a mapping it made, whose users it keeps within the
/// new rights.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_mprotect(ptr: *mut u8, size: usize, prot_flags: u32) -> i32 {
    match reserved_range("mprotect", ptr, size) {
        // SAFETY: inside a reservation (checked); forwarded to the caller.
        Ok((start, end)) if start < end => unsafe { apply(start, end, prot_flags) },
        Ok(_) => 0,
        Err(rc) => rc,
    }
}

/// The page size: 4 KiB.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_page_size() -> usize {
    PAGE_SIZE as usize
}

/// A copy-on-write image of a memory's initial contents: the frames of the artifact's pages that
/// hold it, where the artifact lies in the boot bundle (which lives, unwritten, as long as the
/// kernel runs). Mapping it gives a linear memory those pages read-only; the first write to one
/// copies it ([`copy_on_write`]), so instances share the pages they only read and never see each
/// other's writes.
#[derive(Debug)]
struct MemoryImage {
    frames: alloc::vec::Vec<u64>,
}

/// Pages of memory images mapped into linear memories, and pages copied on a write since boot.
static IMAGE_PAGES_MAPPED: AtomicU64 = AtomicU64::new(0);
static IMAGE_PAGES_COPIED: AtomicU64 = AtomicU64::new(0);

/// An image of `len` bytes at `ptr`, the data of a module in an artifact mapped in place. When
/// the data does not lie on whole pages of the wasm region, no image is made (null): Wasmtime
/// then copies the data in at each instantiation, as it does on platforms without images.
///
/// # Safety
/// `ret` must be valid for a write (Wasmtime passes a pointer to its own local).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_memory_image_new(ptr: *const u8, len: usize, ret: &mut *mut u8) -> i32 {
    *ret = core::ptr::null_mut();
    let start = ptr as u64;
    if !start.is_multiple_of(PAGE_SIZE) || !(len as u64).is_multiple_of(PAGE_SIZE) || !in_wasm_region(start) {
        log::debug!("memory image at {start:#x}+{len:#x} is not whole pages of the wasm region: data is copied");
        return 0;
    }
    let mut frames = alloc::vec::Vec::new();
    if frames.try_reserve_exact(len / PAGE_SIZE as usize).is_err() {
        return ENOMEM;
    }
    for page in (start..start + len as u64).step_by(PAGE_SIZE as usize) {
        match paging::translate(page) {
            // Only pages nothing can write: an artifact's, mapped where it lies.
            Some(t) if !t.prot.contains(Protection::WRITE) => frames.push(t.phys & !(PAGE_SIZE - 1)),
            _ => {
                log::warn!("memory image page {page:#x} is not a read-only artifact page: data is copied");
                return 0;
            }
        }
    }
    *ret = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(MemoryImage { frames })).cast();
    0
}

/// Maps `image` at `addr` (the first `len` bytes of it) copy-on-write, writable.
///
/// # Safety
/// `image` must come from [`wasmtime_memory_image_new`] and not be freed yet; `addr..addr+len`
/// must be part of a linear memory Wasmtime is (re)initializing, whose old contents it gives up.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_memory_image_map_at(image: *mut u8, addr: *mut u8, len: usize) -> i32 {
    // SAFETY: Wasmtime passes back a pointer `wasmtime_memory_image_new` made from a live
    // `Box<MemoryImage>`, which it frees only through `wasmtime_memory_image_free`.
    let image = unsafe { &*image.cast::<MemoryImage>() };
    let pages = align_up(len as u64, PAGE_SIZE) / PAGE_SIZE;
    let Some(frames) = image.frames.get(..pages as usize) else {
        log::warn!("memory image of {} pages mapped for {len:#x} bytes", image.frames.len());
        return EINVAL;
    };
    let start = addr as u64;
    if reserved_range("image", addr, len).is_err() {
        return EINVAL;
    }
    // SAFETY: the frames are an artifact's read-only pages in the boot bundle, which lives,
    // unwritten, as long as the kernel; the range is inside a reservation (checked) that Wasmtime
    // is initializing (the caller's promise).
    match unsafe { paging::map_cow(start, frames, true) } {
        Ok(fresh) => {
            COMMITTED.fetch_add(fresh, Ordering::Relaxed);
            IMAGE_PAGES_MAPPED.fetch_add(pages, Ordering::Relaxed);
            0
        }
        Err(e) => {
            log::warn!("memory image at {start:#x}+{len:#x}: {e}");
            if matches!(e, paging::PagingError::Frames(_)) { ENOMEM } else { EINVAL }
        }
    }
}

/// Frees an image made by [`wasmtime_memory_image_new`] (its frames are the bundle's: they stay).
///
/// # Safety
/// `image` must come from [`wasmtime_memory_image_new`] (or be null), and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_memory_image_free(image: *mut u8) {
    if !image.is_null() {
        // SAFETY: as in `wasmtime_memory_image_map_at`; this is the last use of the pointer.
        drop(unsafe { alloc::boxed::Box::from_raw(image.cast::<MemoryImage>()) });
    }
}

/// Handles a write fault at `addr` on a present page: if it is a copy-on-write page of the wasm
/// region, gives it its private copy and returns true (the write then runs again).
pub fn copy_on_write(addr: u64) -> bool {
    let copied = in_wasm_region(addr) && paging::copy_on_write(addr);
    if copied {
        IMAGE_PAGES_COPIED.fetch_add(1, Ordering::Relaxed);
    }
    copied
}

/// An artifact's pages mapped read-only where they lie (in the boot bundle, which the kernel
/// never writes) into a reservation of the wasm region, so that Wasmtime loads it in place
/// instead of copying it. Unmapped, and the reservation released, when dropped.
#[derive(Debug)]
pub struct BorrowedMapping {
    start: u64,
    len: usize,
}

impl BorrowedMapping {
    /// Maps `bytes`, which must start on a page. They are reached through the identity map
    /// (their address is their physical address), as boot modules are.
    pub fn new(bytes: &'static [u8]) -> Result<BorrowedMapping, String> {
        let phys = bytes.as_ptr() as u64;
        if !phys.is_multiple_of(PAGE_SIZE) {
            return Err(format!("the artifact at {phys:#x} does not start on a page"));
        }
        let pages = align_up(bytes.len() as u64, PAGE_SIZE) / PAGE_SIZE;
        let start = with_space(|s| s.reserve(pages * PAGE_SIZE)).map_err(|e| format!("{e}"))?;
        let mapping = BorrowedMapping { start, len: bytes.len() };
        // SAFETY: `bytes` is 'static and lies in the boot bundle, which nothing writes: mapped
        // read-only, its frames are shared soundly and outlive the mapping.
        unsafe { paging::map_borrowed(start, phys, pages, Protection::READ) }
            .map_err(|e| format!("mapping the artifact at {phys:#x}: {e}"))?;
        Ok(mapping)
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> NonNull<[u8]> {
        let ptr: *mut u8 = core::ptr::with_exposed_provenance_mut(self.start as usize);
        NonNull::slice_from_raw_parts(NonNull::new(ptr).expect("the wasm region is not at 0"), self.len)
    }
}

impl Drop for BorrowedMapping {
    fn drop(&mut self) {
        let len = align_up(self.len as u64, PAGE_SIZE);
        // SAFETY: this mapping's own reservation; Wasmtime drops the component (and so this)
        // only once nothing runs its code or reads its data.
        if unsafe { apply(self.start, self.start + len, 0) } == 0 {
            let _ = with_space(|s| s.release(self.start, len));
        }
    }
}

/// Publishing compiled code: its pages in the wasm region (copied there, or borrowed from the
/// bundle) become read-execute, never writable. Wasmtime calls this for code loaded in place,
/// where it cannot change protections itself.
#[derive(Debug)]
pub struct KernelCodeMemory;

impl CustomCodeMemory for KernelCodeMemory {
    fn required_alignment(&self) -> usize {
        PAGE_SIZE as usize
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // Instruction fetches must see the code as written (nothing to do on x86; aarch64 cleans
        // and invalidates its caches), while the pages are still readable.
        crate::arch::cpu::sync_code(ptr as u64, len as u64);
        // SAFETY: Wasmtime publishes code it wrote (or loaded in place) and finished: nothing
        // writes these pages any more, and executing them is what it asks for.
        match unsafe { wasmtime_mprotect(ptr.cast_mut(), len, PROT_READ | PROT_EXEC) } {
            0 => Ok(()),
            rc => Err(wasmtime::format_err!("publishing code at {ptr:p}+{len:#x}: error {rc}")),
        }
    }

    /// Wasmtime unpublishes code when it drops it (and would to edit it, which Mica never asks
    /// for): the pages stop being executable but stay read-only, since code loaded in place is
    /// the bundle's, which nothing may write.
    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // SAFETY: Wasmtime unpublishes code it no longer runs.
        match unsafe { wasmtime_mprotect(ptr.cast_mut(), len, PROT_READ) } {
            0 => Ok(()),
            rc => Err(wasmtime::format_err!("unpublishing code at {ptr:p}+{len:#x}: error {rc}")),
        }
    }
}
