//! x86_64's page-table entries (4-level paging): the format `mem::paging` builds its tables
//! from. Plain logic, unit-tested on the host (`lib.rs`); the TLB and CR3 are `paging.rs`'s.

use crate::mem::Protection;

/// Present.
pub const VALID: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const NO_CACHE: u64 = 1 << 4;
/// A 2 MiB (level 2) or 1 GiB (level 3) page, not a table.
const HUGE_PAGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
/// The bits that say a leaf's rights.
const RIGHTS: u64 = WRITABLE | WRITE_THROUGH | NO_CACHE | NO_EXECUTE;
/// The physical address bits (51..12).
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// Software bits the processor ignores (`mem::paging` says what each means).
pub const LAZY: u64 = 1 << 9;
/// See [`LAZY`].
pub const BORROWED: u64 = 1 << 10;
/// See [`LAZY`].
pub const COW: u64 = 1 << 11;
/// See [`LAZY`].
pub const COW_WRITABLE: u64 = 1 << 52;

/// x86 may change a present entry's frame in place (the old translation lingers only in TLBs,
/// which the flush that follows clears).
pub const BREAK_BEFORE_MAKE: bool = false;

/// An entry pointing at the page table at `frame`. Its rights are the widest: the leaves decide.
pub const fn table(frame: u64) -> u64 {
    frame | VALID | WRITABLE
}

fn rights(prot: Protection) -> u64 {
    let mut bits = 0;
    if prot.contains(Protection::WRITE) {
        bits |= WRITABLE;
    }
    if !prot.contains(Protection::EXEC) {
        bits |= NO_EXECUTE;
    }
    if prot.contains(Protection::UNCACHED) {
        bits |= NO_CACHE | WRITE_THROUGH;
    }
    bits
}

/// A leaf entry mapping `frame` with `prot` (already checked): a 4 KiB page, or a 2 MiB one when
/// `large`.
pub fn leaf(frame: u64, large: bool, prot: Protection) -> u64 {
    frame | VALID | rights(prot) | if large { HUGE_PAGE } else { 0 }
}

/// Whether the valid entry `entry` of a table at `level` (2 or more) maps a page rather than a
/// table.
pub const fn is_block(entry: u64, level: u32) -> bool {
    level > 1 && entry & HUGE_PAGE != 0
}

/// The physical address an entry points at.
pub const fn address(entry: u64) -> u64 {
    entry & ADDRESS
}

/// A leaf entry's rights (also of a committed entry that is not present, whose bits say the
/// rights it will get).
pub fn protection(entry: u64) -> Protection {
    let mut p = Protection::READ;
    if entry & WRITABLE != 0 {
        p = p | Protection::WRITE;
    }
    if entry & NO_EXECUTE == 0 {
        p = p | Protection::EXEC;
    }
    if entry & NO_CACHE != 0 {
        p = p | Protection::UNCACHED;
    }
    p
}

/// `entry` with the rights `prot` (already checked), its frame and other bits kept.
pub fn with_protection(entry: u64, prot: Protection) -> u64 {
    (entry & !RIGHTS) | rights(prot)
}

/// What a table entry allows the pages below it: (writable, executable).
pub const fn table_rights(entry: u64) -> (bool, bool) {
    (entry & WRITABLE != 0, entry & NO_EXECUTE == 0)
}
