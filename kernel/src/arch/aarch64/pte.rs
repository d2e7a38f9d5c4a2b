//! aarch64's page-table entries: VMSAv8-64 stage-1 descriptors with the 4 KiB granule and
//! 48-bit addresses, the format `mem::paging` builds its tables from. Memory attributes index
//! MAIR_EL1 as the entry stub set it: 0 device nGnRE (uncached), 1 normal write-back. Plain
//! logic, unit-tested on the host (`lib.rs`); the TLB and the translation registers are
//! `paging.rs`'s.

use crate::mem::Protection;

/// Valid.
pub const VALID: u64 = 1;
/// Bit 1: a table (levels 0 to 2) or a page (level 3); clear at levels 1 and 2, a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx (bits 4:2): MAIR index 1, normal write-back memory; index 0 is device memory.
const NORMAL: u64 = 1 << 2;
const ATTR_INDEX: u64 = 0b111 << 2;
/// AP[2]: read-only (AP[1], EL0 access, stays clear: nothing runs at EL0).
const READ_ONLY: u64 = 1 << 7;
/// SH: inner shareable.
const INNER_SHAREABLE: u64 = 0b11 << 8;
/// AF: accessed (set up front: no access-flag faults).
const ACCESSED: u64 = 1 << 10;
/// PXN and UXN: never executable, at EL1 or EL0.
const NO_EXECUTE: u64 = (1 << 53) | (1 << 54);
/// The bits that say a leaf's rights.
const RIGHTS: u64 = ATTR_INDEX | READ_ONLY | NO_EXECUTE;
/// The output address bits (47..12).
const ADDRESS: u64 = 0x0000_ffff_ffff_f000;
/// A table descriptor's limits on what lies below it: PXNTable, and APTable[1] (no writes).
const TABLE_NO_EXECUTE: u64 = 1 << 59;
const TABLE_READ_ONLY: u64 = 1 << 62;

/// Software bits the walker ignores (bits 58:55; `mem::paging` says what each means).
pub const LAZY: u64 = 1 << 55;
/// See [`LAZY`].
pub const BORROWED: u64 = 1 << 56;
/// See [`LAZY`].
pub const COW: u64 = 1 << 57;
/// See [`LAZY`].
pub const COW_WRITABLE: u64 = 1 << 58;

/// A valid entry's output address may not change in place: the architecture asks for
/// break-before-make (invalid, TLBs flushed, then the new entry).
pub const BREAK_BEFORE_MAKE: bool = true;

/// An entry pointing at the page table at `frame`, limiting nothing: the leaves decide.
pub const fn table(frame: u64) -> u64 {
    frame | VALID | TABLE_OR_PAGE
}

fn rights(prot: Protection) -> u64 {
    let mut bits = if prot.contains(Protection::UNCACHED) { 0 } else { NORMAL };
    if !prot.contains(Protection::WRITE) {
        bits |= READ_ONLY;
    }
    if !prot.contains(Protection::EXEC) {
        bits |= NO_EXECUTE;
    }
    bits
}

/// A leaf entry mapping `frame` with `prot` (already checked): a 4 KiB page (level 3), or a 2 MiB
/// block (level 2) when `large`.
pub fn leaf(frame: u64, large: bool, prot: Protection) -> u64 {
    frame | VALID | if large { 0 } else { TABLE_OR_PAGE } | INNER_SHAREABLE | ACCESSED | rights(prot)
}

/// Whether the valid entry `entry` of a table at `level` (2 or more, 4 being the root) maps a
/// block rather than a table.
pub const fn is_block(entry: u64, level: u32) -> bool {
    level > 1 && entry & TABLE_OR_PAGE == 0
}

/// The physical address an entry points at.
pub const fn address(entry: u64) -> u64 {
    entry & ADDRESS
}

/// A leaf entry's rights (also of a committed entry that is not valid, whose bits say the
/// rights it will get).
pub fn protection(entry: u64) -> Protection {
    let mut p = Protection::READ;
    if entry & READ_ONLY == 0 {
        p = p | Protection::WRITE;
    }
    if entry & NO_EXECUTE == 0 {
        p = p | Protection::EXEC;
    }
    if entry & ATTR_INDEX == 0 {
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
    (entry & TABLE_READ_ONLY == 0, entry & TABLE_NO_EXECUTE == 0)
}
