//! The boot tests of memory management, which every architecture with paging runs: the
//! kernel's page tables (sections, guard pages, W^X, 4 KiB and 2 MiB pages, code published
//! read-execute), the heap, and a stack overflow caught by its guard page.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::hint::black_box;

use crate::arch;
use crate::kprintln;
use crate::mem::layout::SCRATCH_BASE;
use crate::mem::paging::{self, PageSize, PagingError};
use crate::mem::range::{LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::mem::stacks::{self, KernelStack};
use crate::mem::{Protection, WxViolation, heap, phys};

#[inline(never)]
#[allow(unconditional_recursion, reason = "the stack_overflow scenario must run off its stack")]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    black_box(recurse(depth + 1)) + frame[7]
}

pub(super) fn stack_overflow() -> Result<(), String> {
    let depth = black_box(recurse(0));
    Err(format!("unbounded recursion returned ({depth}) instead of hitting the guard page"))
}

/// A small deterministic generator, so that a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[repr(C, align(4096))]
struct PageAligned([u8; 4096]);

pub(super) fn heap_stress() -> Result<(), String> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mapped_before = heap::mapped_bytes();
    let mut live: Vec<(Vec<u8>, u8)> = Vec::new();
    let (mut allocations, mut peak, mut bytes_live) = (0u64, 0u64, 0u64);
    for round in 0..20_000u64 {
        if live.len() < 1500 && rng.below(3) != 0 {
            let size = match rng.below(100) {
                0..=69 => 1 + rng.below(256),
                70..=94 => 256 + rng.below(16 * 1024),
                _ => 16 * 1024 + rng.below(256 * 1024),
            } as usize;
            let fill = (round % 251) as u8;
            let mut v = Vec::new();
            v.try_reserve_exact(size).map_err(|e| format!("allocating {size} bytes: {e}"))?;
            v.resize(size, fill);
            bytes_live += size as u64;
            peak = peak.max(bytes_live);
            allocations += 1;
            live.push((v, fill));
        } else if !live.is_empty() {
            let (v, fill) = live.swap_remove(rng.below(live.len() as u64) as usize);
            ensure!(v.iter().all(|b| *b == fill), "allocation of {} bytes was corrupted", v.len());
            bytes_live -= v.len() as u64;
        }
    }
    for (v, fill) in &live {
        ensure!(v.iter().all(|b| b == fill), "allocation of {} bytes was corrupted", v.len());
    }
    drop(live);
    // Page-aligned and large allocations.
    let pages: Vec<Box<PageAligned>> = (0..64).map(|i| Box::new(PageAligned([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        ensure!(((&raw const **p) as u64).is_multiple_of(4096), "page-aligned box {i} is not page-aligned");
        ensure!(p.0.iter().all(|b| *b == i as u8), "page-aligned box {i} was corrupted");
    }
    let big = alloc::vec![0xa5u8; 24 * 1024 * 1024];
    ensure!(big.iter().step_by(4096).all(|b| *b == 0xa5), "24 MiB allocation was corrupted");
    let grown = heap::mapped_bytes();
    ensure!(
        grown >= mapped_before + 24 * 1024 * 1024,
        "heap did not grow from the frame allocator ({mapped_before} -> {grown} bytes)"
    );
    drop(big);
    drop(pages);
    let again = alloc::vec![1u8; 24 * 1024 * 1024];
    ensure!(heap::mapped_bytes() == grown, "freed memory was not reused: the heap grew again");
    drop(again);
    kprintln!(
        "mica: heap: {allocations} allocations, peak {} KiB live, heap grew {} times to {} MiB, {} frames free",
        peak / 1024,
        heap::growths(),
        grown / (1024 * 1024),
        phys::free_frames()
    );
    Ok(())
}

fn expect_err<T: core::fmt::Debug>(what: &str, r: Result<T, PagingError>, want: PagingError) -> Result<(), String> {
    match r {
        Err(e) if e == want => Ok(()),
        other => Err(format!("{what}: expected {want:?}, got {other:?}")),
    }
}

fn prot_of(addr: u64) -> Result<Protection, String> {
    paging::translate(addr).map(|t| t.prot).ok_or_else(|| format!("{addr:#x} is not mapped"))
}

#[inline(never)]
fn some_function() -> u64 {
    black_box(7)
}

static RODATA: [u8; 16] = [3; 16];
static DATA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

pub(super) fn paging() -> Result<(), String> {
    let rw = Protection::READ | Protection::WRITE;
    let rx = Protection::READ | Protection::EXEC;
    let wx = rw | Protection::EXEC;

    // The kernel image is mapped by section.
    let text = prot_of(some_function as *const () as u64)?;
    ensure!(text.contains(Protection::EXEC) && !text.contains(Protection::WRITE), "kernel text is {text:?}");
    let ro = prot_of(RODATA.as_ptr() as u64)?;
    ensure!(!ro.contains(Protection::EXEC) && !ro.contains(Protection::WRITE), "kernel rodata is {ro:?}");
    let data = prot_of(&raw const DATA as u64)?;
    ensure!(data.contains(Protection::WRITE) && !data.contains(Protection::EXEC), "kernel data is {data:?}");
    ensure!(paging::translate(0).is_none(), "page 0 is mapped");

    // Every static stack has an unmapped guard page; a thread stack too.
    for (name, guard, stack) in arch::stacks::static_stacks() {
        ensure!(paging::translate(guard.start).is_none(), "guard page of stack '{name}' is mapped");
        ensure!(prot_of(stack.start)? == rw, "stack '{name}' is not read-write, no-execute");
    }
    {
        let ks = KernelStack::new(16 * 1024).map_err(|e| format!("kernel stack: {e}"))?;
        ensure!(paging::translate(ks.guard().start).is_none(), "thread stack guard page is mapped");
        ensure!(prot_of(ks.bottom())? == rw && prot_of(ks.top() - 8)? == rw, "thread stack is not read-write");
        ensure!(stacks::guard_page_owner(ks.guard().start) == Some("thread"), "thread guard page not recognised");
        let bottom = ks.bottom();
        drop(ks);
        ensure!(paging::translate(bottom).is_none(), "dropped thread stack is still mapped");
    }

    // 4 KiB: map, write, re-protect, unmap, and the errors.
    let page = SCRATCH_BASE;
    let frame = paging::map_new_page(page, rw).map_err(|e| format!("map: {e}"))?;
    // SAFETY: `page` was just mapped read-write to a frame owned by this test.
    unsafe { core::ptr::write_volatile(page as *mut u64, 0x1234_5678) };
    // SAFETY: as above.
    ensure!(unsafe { core::ptr::read_volatile(frame as *const u64) } == 0x1234_5678, "write did not reach the frame");
    // The refusals below change nothing (that is what they test), so nothing gets aliased or
    // loses a right.
    // SAFETY: refused: the page is mapped already.
    let twice = unsafe { paging::map(page, frame, PageSize::Small, rw) };
    expect_err("mapping twice", twice, PagingError::AlreadyMapped(page))?;
    // SAFETY: refused: writable and executable.
    let wx_map = unsafe { paging::map(page + PAGE_SIZE, frame, PageSize::Small, wx) };
    expect_err("W+X map", wx_map, PagingError::Wx(WxViolation))?;
    // SAFETY: refused: writable and executable.
    let wx_protect = unsafe { paging::protect(page, PageSize::Small, wx) };
    expect_err("W+X protect", wx_protect, PagingError::Wx(WxViolation))?;
    // SAFETY: refused: misaligned.
    let misaligned = unsafe { paging::map(page + 1, frame, PageSize::Small, rw) };
    expect_err("misaligned map", misaligned, PagingError::Misaligned(page + 1))?;
    // SAFETY: the test's own scratch page, not written through any reference afterwards.
    unsafe { paging::protect(page, PageSize::Small, Protection::READ) }.map_err(|e| format!("protect: {e}"))?;
    ensure!(prot_of(page)? == Protection::READ, "protect to read-only did not take");

    // Writable while loading, executable after: the path JIT-free AOT code will take.
    let code = page + 2 * PAGE_SIZE;
    paging::map_new_page(code, rw).map_err(|e| format!("map code page: {e}"))?;
    let body = arch::cpu::RETURN_42;
    // SAFETY: `code` is a fresh read-write page owned by this test.
    unsafe { core::ptr::copy_nonoverlapping(body.as_ptr(), code as *mut u8, body.len()) };
    arch::cpu::sync_code(code, body.len() as u64);
    // SAFETY: the page holds the test's own complete function (above), made coherent for
    // instruction fetches; it is not written afterwards.
    unsafe { paging::protect(code, PageSize::Small, rx) }.map_err(|e| format!("protect code: {e}"))?;
    // SAFETY: the page holds a complete function that returns 42 following the C ABI, made
    // coherent for instruction fetches, and is now mapped read-execute.
    let f: extern "C" fn() -> u32 = unsafe { core::mem::transmute(code as *const ()) };
    ensure!(f() == 42, "code published read-execute did not run");
    // SAFETY: the function returned; nothing uses the code page again.
    unsafe { paging::unmap_and_free(code) }.map_err(|e| format!("unmap code: {e}"))?;

    // SAFETY: the test's scratch page (from `map_new_page`), not used again.
    unsafe { paging::unmap_and_free(page) }.map_err(|e| format!("unmap: {e}"))?;
    ensure!(paging::translate(page).is_none(), "page still mapped after unmap");
    // SAFETY: refused: nothing is mapped there any more.
    let twice = unsafe { paging::unmap(page, PageSize::Small) };
    expect_err("unmapping twice", twice, PagingError::NotMapped(page))?;

    // 2 MiB pages.
    let big = SCRATCH_BASE + 16 * LARGE_PAGE_SIZE;
    let frames = phys::alloc_contiguous(512, 512).map_err(|e| format!("2 MiB of frames: {e}"))?;
    // SAFETY: 512 contiguous frames just allocated for this test: nobody else's.
    unsafe { paging::map(big, frames, PageSize::Large, rw) }.map_err(|e| format!("map 2 MiB: {e}"))?;
    let t = paging::translate(big + LARGE_PAGE_SIZE - 8).ok_or("2 MiB page not mapped")?;
    ensure!(t.size == PageSize::Large && t.phys == frames + LARGE_PAGE_SIZE - 8, "2 MiB translation wrong: {t:?}");
    // SAFETY: the whole 2 MiB page was just mapped read-write to frames owned by this test.
    unsafe { core::ptr::write_volatile((big + LARGE_PAGE_SIZE - 8) as *mut u64, 99) };
    // SAFETY: refused: a 2 MiB page covers the address.
    let inside = unsafe { paging::map(big + PAGE_SIZE, frames, PageSize::Small, rw) };
    expect_err("4 KiB inside 2 MiB", inside, PagingError::HugePageInTheWay(big + PAGE_SIZE))?;
    // SAFETY: the test's own 2 MiB page, not written afterwards.
    unsafe { paging::protect(big, PageSize::Large, Protection::READ) }.map_err(|e| format!("protect 2 MiB: {e}"))?;
    ensure!(prot_of(big)? == Protection::READ, "2 MiB protect did not take");
    // SAFETY: the test's own 2 MiB page, not used again.
    let back = unsafe { paging::unmap(big, PageSize::Large) }.map_err(|e| format!("unmap 2 MiB: {e}"))?;
    ensure!(back == frames && paging::translate(big).is_none(), "2 MiB unmap wrong");
    phys::free_contiguous(frames, 512).map_err(|e| format!("free 2 MiB: {e}"))?;

    // Frames never come from the kernel image.
    let image = crate::mem::image::kernel_image();
    let mut held = Vec::new();
    for _ in 0..256 {
        let f = phys::alloc_zeroed().map_err(|e| format!("frame: {e}"))?;
        ensure!(!image.whole.contains(f) && f >= 0x10_0000, "frame {f:#x} overlaps the kernel or low memory");
        held.push(f);
    }
    for f in held {
        phys::free(f).map_err(|e| format!("free: {e}"))?;
    }

    let audit = paging::audit_wx().map_err(|addr| format!("W^X violated at {addr:#x}"))?;
    kprintln!(
        "mica: paging: W^X holds over {} mappings ({} writable, {} executable)",
        audit.leaves,
        audit.writable,
        audit.executable
    );
    Ok(())
}
