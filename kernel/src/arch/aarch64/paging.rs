//! aarch64's side of the page tables (`mem::paging` holds the policy): the entry format
//! (`pte.rs`), TLB maintenance broadcast to every CPU in the inner-shareable domain, and the
//! switch from the boot stub's identity map to the kernel's tables.
//!
//! One root serves both halves: TTBR0_EL1 and TTBR1_EL1 hold the same table. A lower-half address
//! indexes its entries 0..256 and an upper-half one (the heap, the stacks) its entries 256..512,
//! as on x86_64.

use crate::mem::range::PhysRange;

pub use super::pte::*;

/// Makes entries written since the last call visible to every CPU's page walker before the next
/// access through them.
pub fn publish() {
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}

/// Makes every CPU's TLB forget the page at `virt` (the invalidation is broadcast to the inner
/// shareable domain, and the `dsb ish` waits for every CPU to complete it).
pub fn flush_page(virt: u64) {
    // The operand is VA[55:12] in bits 43:0; bits 47:44 (a level hint, with FEAT_TTL) stay 0.
    let operand = (virt >> 12) & ((1 << 44) - 1);
    // SAFETY: TLB maintenance and barriers; no memory is written.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vaae1is, {}",
            "dsb ish",
            "isb",
            in(reg) operand,
            options(nostack, preserves_flags)
        )
    };
}

/// Makes every CPU's TLB forget every kernel translation.
pub fn flush_all() {
    // SAFETY: TLB maintenance and barriers; no memory is written.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalle1is", "dsb ish", "isb", options(nostack, preserves_flags)) };
}

/// After page tables changed in a way a stale TLB entry could outlive: nothing more to do on
/// aarch64, where every flush above was broadcast and waited for.
pub fn shootdown() {}

/// Answers a TLB-shootdown request while spinning for a lock: there are none to answer on aarch64
/// (see [`shootdown`]).
pub fn service_flush() {}

/// Switches this CPU to the page tables rooted at `root`, for both halves: TTBR1 walks are turned
/// on (48-bit, 4 KiB granule, inner-shareable write-back walks, as TTBR0's) and `SCTLR_EL1.WXN`
/// makes the hardware itself refuse to execute any writable page.
///
/// # Safety
/// The tables map everything the kernel touches from here on at the addresses it uses now.
pub unsafe fn activate(root: u64) {
    /// T1SZ = 16, IRGN1 and ORGN1 write-back, SH1 inner shareable, TG1 4 KiB.
    const TTBR1_WALKS: u64 = (16 << 16) | (0b01 << 24) | (0b01 << 26) | (0b11 << 28) | (0b10 << 30);
    /// T1SZ, EPD1 (bit 23), IRGN1, ORGN1, SH1 and TG1.
    const TTBR1_FIELDS: u64 = (0x3f << 16) | (1 << 23) | (0xff << 24);
    /// SCTLR_EL1.WXN.
    const WXN: u64 = 1 << 19;
    // SAFETY: as the caller promises, the new tables map the code, stack and data in use at the
    // same addresses; the TCR change and WXN take effect with the TLB invalidations that follow.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "msr ttbr0_el1, {root}",
            "msr ttbr1_el1, {root}",
            "mrs {t}, tcr_el1",
            "bic {t}, {t}, {fields}",
            "orr {t}, {t}, {walks}",
            "msr tcr_el1, {t}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            // Only now WXN: the boot map's blocks are writable and executable, so with WXN on any
            // of them still in the TLB the next fetch would fault. The kernel's text is not
            // writable in the new tables; the TLBs may cache WXN, hence the second flush.
            "mrs {t}, sctlr_el1",
            "orr {t}, {t}, {wxn}",
            "msr sctlr_el1, {t}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            root = in(reg) root,
            wxn = in(reg) WXN,
            fields = in(reg) TTBR1_FIELDS,
            walks = in(reg) TTBR1_WALKS,
            t = out(reg) _,
            options(nostack, preserves_flags)
        )
    };
}

/// Devices the kernel drives before it maps their register windows itself: the console UART
/// and the GIC, as the device tree names them.
pub fn boot_devices() -> impl Iterator<Item = PhysRange> {
    let platform = super::boot_info::platform();
    let uart = platform.and_then(|p| p.uart);
    let gic = platform.and_then(|p| p.gic);
    uart.into_iter().chain(gic.map(|g| g.distributor)).chain(gic.map(|g| g.cpu))
}
