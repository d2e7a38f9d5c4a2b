//! The I/O APICs: routing device interrupt lines (GSIs) to vectors on the boot CPU.
//!
//! QEMU's `microvm` has two: the first (GSIs 0-23, at 0xfec0_0000) for the ISA devices, the
//! second (GSIs 24-47, at 0xfec1_0000) for the virtio-mmio transports. Device lines are routed
//! level-triggered, active high (how virtio-mmio raises them), to CPU 0, masked until a driver
//! waits on them; the interrupt handler masks the line again until the driver acknowledges it.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::irq_lock::IrqMutex;
use crate::mem::Protection;
use crate::mem::paging::{self, PageSize};

/// Where QEMU's I/O APICs are, and the first GSI of each.
const IOAPICS: [(u64, u32); 2] = [(0xfec0_0000, 0), (0xfec1_0000, 24)];
/// Pins per I/O APIC (QEMU's have 24).
const PINS: u32 = 24;
/// Register select and data window offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;
const REDIRECTION_MASKED: u32 = 1 << 16;
const REDIRECTION_LEVEL: u32 = 1 << 15;

/// Base addresses of the I/O APICs found (0: not present), indexed like [`IOAPICS`].
static FOUND: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Serializes select-then-access register pairs.
static LOCK: IrqMutex<()> = IrqMutex::new(());

fn read(base: u64, reg: u32) -> u32 {
    // SAFETY: `base` is an I/O APIC's register page, mapped uncached by `init`; IOREGSEL and
    // IOWIN are aligned 32-bit registers inside it, and LOCK (held by every caller) keeps the
    // select-then-read pair together.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

fn write(base: u64, reg: u32, value: u32) {
    // SAFETY: as in `read`, for the select-then-write pair.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
    }
}

/// Maps the I/O APICs, keeps those that answer, and masks all their pins. Returns how many answered.
pub fn init() -> usize {
    let _guard = LOCK.lock();
    let mut found = 0;
    for (slot, (base, _)) in FOUND.iter().zip(IOAPICS) {
        let device = Protection::READ | Protection::WRITE | Protection::UNCACHED;
        // SAFETY: the I/O APIC's register page (the MP table's address or the platform's fixed
        // one), which no RAM overlaps; it is reached only through volatile accesses.
        if unsafe { paging::map(base, base, PageSize::Small, device) }.is_err() {
            continue;
        }
        let version = read(base, REG_VERSION);
        // No device there reads as all ones.
        if version == u32::MAX {
            continue;
        }
        let pins = ((version >> 16) & 0xff) + 1;
        for pin in 0..pins.min(PINS) {
            write(base, 0x10 + 2 * pin, REDIRECTION_MASKED);
        }
        slot.store(base, Ordering::Relaxed);
        found += 1;
    }
    found
}

/// The I/O APIC base and pin of `gsi`, if its I/O APIC is present.
fn locate(gsi: u32) -> Option<(u64, u32)> {
    IOAPICS.iter().zip(&FOUND).find_map(|(&(_, first), found)| {
        let base = found.load(Ordering::Relaxed);
        (base != 0 && (first..first + PINS).contains(&gsi)).then(|| (base, gsi - first))
    })
}

/// Whether `gsi` can be routed.
pub fn present(gsi: u32) -> bool {
    locate(gsi).is_some()
}

/// Routes `gsi` (level-triggered, active high) to `vector` on the CPU with APIC id `apic`,
/// masked.
pub fn route(gsi: u32, vector: u8, apic: u32) -> bool {
    let Some((base, pin)) = locate(gsi) else { return false };
    let _guard = LOCK.lock();
    write(base, 0x11 + 2 * pin, apic << 24);
    write(base, 0x10 + 2 * pin, REDIRECTION_MASKED | REDIRECTION_LEVEL | u32::from(vector));
    true
}

/// Masks or unmasks `gsi` (which [`route`] set up).
pub fn set_masked(gsi: u32, masked: bool) {
    let Some((base, pin)) = locate(gsi) else { return };
    let _guard = LOCK.lock();
    let low = read(base, 0x10 + 2 * pin);
    let low = if masked { low | REDIRECTION_MASKED } else { low & !REDIRECTION_MASKED };
    write(base, 0x10 + 2 * pin, low);
}
