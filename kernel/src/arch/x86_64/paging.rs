//! x86_64's side of the page tables (`mem::paging` holds the policy): the entry format of 4-level
//! paging (`pte.rs`), TLB flushes (`invlpg`, a CR3 reload) and the shootdown IPI, and the switch to a new
//! PML4.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

use crate::mem::range::PhysRange;

pub use super::pte::*;

/// Makes entries written since the last call visible to the page walker: nothing on x86, whose
/// walks see stores in program order.
pub fn publish() {}

/// Makes this CPU's TLB forget the page at `virt`.
pub fn flush_page(virt: u64) {
    x86_64::instructions::tlb::flush(VirtAddr::new(virt));
}

/// Makes this CPU's TLB forget everything (kernel mappings are not global).
pub fn flush_all() {
    x86_64::instructions::tlb::flush_all();
}

/// Switches this CPU to the page tables rooted at `root`.
///
/// # Safety
/// The tables map everything the kernel touches from here on at the addresses it uses now.
pub unsafe fn activate(root: u64) {
    // SAFETY: as the caller promises.
    unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(root)), Cr3Flags::empty()) };
}

/// Devices the kernel drives before it maps their register windows itself: none on x86 (the
/// console is a port, and the APICs map their own windows).
pub fn boot_devices() -> impl Iterator<Item = PhysRange> {
    core::iter::empty()
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
        flush_all();
        me.flushed.store(generation, Ordering::Release);
    }
}
