//! Behaviours that fault on purpose, to prove that a wasm trap stops only its component, with a
//! named error: loads, stores and `memory.copy` at the edge of linear memory, growth to the
//! memory limit and past it, division by zero, `unreachable` and a call stack too deep.
//!
//! Guard regions make the hardware catch what bounds checks used to: every access here that is
//! in bounds must work, and the first one out of bounds must trap.
#![allow(unsafe_code)]

use core::arch::wasm32;
use std::hint::black_box;

const PAGE: usize = 65536;

/// Runs the fault behaviour called `name` (with its argument `arg`); false if there is none.
pub fn run(name: &str, arg: &str) -> bool {
    match name {
        "oob-load" => oob_load(),
        "oob-store" => oob_store(),
        "oob-copy" => oob_copy(),
        "grow" => grow(),
        "divide-by-zero" => divide_by_zero(),
        "unreachable" => unreachable(),
        "stack-overflow" => stack_overflow(),
        "stack-overflow-calls" => stack_overflow_calls(),
        "touch" => touch(arg.parse().unwrap_or(64)),
        "statics" => statics(arg),
        _ => return false,
    }
    true
}

/// The size of linear memory 0 in bytes. Read again right before each access: printing may
/// allocate, and the allocator may grow memory.
fn memory_bytes() -> usize {
    wasm32::memory_size(0) * PAGE
}

/// Reads the last byte of memory (fine), then the first byte past it (traps).
pub fn oob_load() {
    println!("loading at the edge of memory");
    let end = memory_bytes();
    // SAFETY: the last byte of linear memory is in bounds.
    let last = unsafe { core::ptr::read_volatile((end - 1) as *const u8) };
    println!("read the last byte of {end} bytes of memory: {last}; now reading the first byte past it");
    // SAFETY: deliberately out of bounds: wasm traps the load before it happens.
    let past = unsafe { core::ptr::read_volatile(black_box(memory_bytes()) as *const u8) };
    println!("read past the end and got {past}: no trap");
}

/// Writes the last byte (fine), then a 4-byte value straddling the end (traps, writing nothing).
pub fn oob_store() {
    println!("storing at the edge of memory");
    let end = memory_bytes();
    // SAFETY: the last byte of linear memory is in bounds and unused by the program.
    unsafe { core::ptr::write_volatile((end - 1) as *mut u8, 7) };
    println!("wrote the last byte of {end} bytes of memory; now a 4-byte store straddling the end");
    // SAFETY: deliberately out of bounds: wasm traps the store before any byte is written.
    unsafe { core::ptr::write_volatile(black_box(memory_bytes() - 2) as *mut u32, 0xdead_beef) };
    println!("stored past the end: no trap");
}

/// Copies 16 bytes ending at the end of memory (fine), then 16 bytes ending 8 past it (traps).
pub fn oob_copy() {
    println!("copying at the edge of memory");
    let end = memory_bytes();
    let source = [0x5au8; 32];
    // SAFETY: `end - 16..end` is in bounds and unused by the program.
    unsafe { core::ptr::copy(source.as_ptr(), black_box(end - 16) as *mut u8, 16) };
    println!("copied 16 bytes up to the end of {end} bytes of memory; now 16 bytes running 8 past it");
    // SAFETY: deliberately out of bounds: `memory.copy` traps before it copies anything.
    unsafe { core::ptr::copy(source.as_ptr(), black_box(memory_bytes() - 8) as *mut u8, black_box(16)) };
    println!("copied past the end: no trap");
}

/// Grows memory a page at a time until the runtime refuses, touches the last byte it got and
/// then the first byte past it (traps).
pub fn grow() {
    let start = wasm32::memory_size(0);
    // Printed before growing: stdout's buffer is allocated now, while there is memory for it.
    println!("growing from {start} pages, one at a time");
    let mut pages = start;
    while wasm32::memory_grow(0, 1) != usize::MAX {
        pages += 1;
    }
    println!("grew from {start} to {pages} pages ({} bytes); one page more was refused", pages * PAGE);
    let end = memory_bytes();
    // SAFETY: the last byte of the grown memory is in bounds.
    unsafe { core::ptr::write_volatile((end - 1) as *mut u8, 1) };
    println!("wrote the last byte of the grown memory; now the first byte past it");
    // SAFETY: deliberately out of bounds.
    unsafe { core::ptr::write_volatile(black_box(memory_bytes()) as *mut u8, 1) };
    println!("wrote past the grown memory: no trap");
}

/// Divides by zero in wasm (`i32.div_s`), where Rust would otherwise check first.
pub fn divide_by_zero() {
    let (n, d) = (black_box(7i32), black_box(0i32));
    println!("dividing {n} by {d}");
    // SAFETY: deliberately false: the promise removes Rust's own check, so the division reaches
    // wasm's `i32.div_s`, which traps on a zero divisor.
    unsafe { core::hint::assert_unchecked(d != 0) };
    println!("quotient {}: no trap", black_box(n / d));
}

/// Executes wasm's `unreachable`.
pub fn unreachable() {
    println!("executing unreachable");
    wasm32::unreachable()
}

/// Recurses until the wasm call stack is exhausted.
pub fn stack_overflow() {
    #[inline(never)]
    fn deep(n: u64) -> u64 {
        if n == 0 { 0 } else { deep(n - 1).wrapping_mul(31).wrapping_add(n) }
    }
    println!("recursing without end");
    println!("recursion returned {}: no trap", deep(black_box(u64::MAX)));
}

/// Recurses until the wasm call stack is exhausted, calling the host (the monotonic clock) at
/// every level: the last host call runs at the very bottom of the wasm stack, where the kernel's
/// own code must still have room.
pub fn stack_overflow_calls() {
    #[inline(never)]
    fn deep(n: u64) -> u64 {
        let now = black_box(std::time::Instant::now());
        if n == 0 { 0 } else { deep(n - 1).wrapping_mul(31).wrapping_add(n) ^ u64::from(now.elapsed().as_nanos() == 0) }
    }
    println!("recursing without end, calling the host at every level");
    println!("recursion returned {}: no trap", deep(black_box(u64::MAX)));
}

/// Touches `mib` MiB of fresh memory (one write per 4 KiB page), checks it, and ends.
pub fn touch(mib: usize) {
    let mut block = vec![0u8; mib << 20];
    for (i, page) in block.chunks_mut(4096).enumerate() {
        page[0] = i as u8;
    }
    let ok = block.chunks(4096).enumerate().all(|(i, page)| page[0] == i as u8);
    println!("touched {mib} MiB: {}", if ok { "every page kept its value" } else { "a page lost its value" });
}

/// The value a static starts with in every instance: its data segment's.
static mut MARK: u32 = 0x1234_5678;

/// Reads a static, writes its own mark into it, and reads it back: every instance of the
/// component must start from the data segment's value, never from another instance's write.
pub fn statics(tag: &str) {
    // SAFETY: one thread; the static is only touched here.
    let before = unsafe { core::ptr::read_volatile(&raw const MARK) };
    let mark = 0x9000_0000 | (black_box(tag.len() as u32) << 8) | u32::from(tag.bytes().last().unwrap_or(0));
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut MARK, mark) };
    // SAFETY: as above.
    let after = unsafe { core::ptr::read_volatile(&raw const MARK) };
    println!("static before {before:#x}, after my write {after:#x}");
}
