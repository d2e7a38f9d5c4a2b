//! The processor: who made it and which optional instructions it has, from the ID registers
//! (readable at EL1 on every aarch64 CPU).

use core::fmt;

use aarch64_cpu::registers::{ID_AA64ISAR0_EL1, ID_AA64ISAR1_EL1, ID_AA64PFR0_EL1, MIDR_EL1, Readable};

/// Optional features, by the names Linux's `/proc/cpuinfo` uses.
pub const FEATURE_NAMES: [&str; 10] =
    ["fphp", "atomics", "crc32", "aes", "sha2", "asimddp", "i8mm", "paca", "rng", "sve"];

/// What this processor is and has.
#[derive(Clone, Copy, Debug)]
pub struct CpuInfo {
    /// `MIDR_EL1`: implementer, variant, part and revision.
    pub midr: u64,
    /// Which of [`FEATURE_NAMES`] it has, bit `i` for name `i`.
    features: u16,
    /// Whether pages can be made non-executable: always, on aarch64 (the `PXN` and `UXN` bits).
    pub nx: bool,
}

impl CpuInfo {
    /// Whether it has feature `name` (one of [`FEATURE_NAMES`]).
    pub fn has(&self, name: &str) -> bool {
        FEATURE_NAMES.iter().position(|n| *n == name).is_some_and(|i| self.features & (1 << i) != 0)
    }

    fn implementer(&self) -> &'static str {
        match (self.midr >> 24) & 0xff {
            0x41 => "Arm",
            0x42 => "Broadcom",
            0x43 => "Cavium",
            0x46 => "Fujitsu",
            0x48 => "HiSilicon",
            0x4e => "NVIDIA",
            0x51 => "Qualcomm",
            0x61 => "Apple",
            0xc0 => "Ampere",
            0 => "software",
            _ => "unknown implementer",
        }
    }
}

impl fmt::Display for CpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} part {:#05x} r{}p{} (MIDR {:#x});",
            self.implementer(),
            (self.midr >> 4) & 0xfff,
            (self.midr >> 20) & 0xf,
            self.midr & 0xf,
            self.midr
        )?;
        for name in FEATURE_NAMES.iter().filter(|n| self.has(n)) {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// A 4-bit ID register field.
fn field(register: u64, offset: u32) -> u64 {
    (register >> offset) & 0xf
}

/// Reads the ID registers.
pub fn init() -> CpuInfo {
    let isar0 = ID_AA64ISAR0_EL1.get();
    let isar1 = ID_AA64ISAR1_EL1.get();
    let pfr0 = ID_AA64PFR0_EL1.get();
    let present = [
        field(pfr0, 16) == 1,                         // FP: half precision too
        field(isar0, 20) >= 2,                        // Atomic: LSE
        field(isar0, 16) >= 1,                        // CRC32
        field(isar0, 4) >= 1,                         // AES
        field(isar0, 12) >= 1,                        // SHA2
        field(isar0, 44) >= 1,                        // DP: dot product
        field(isar1, 52) >= 1,                        // I8MM
        field(isar1, 4) != 0 || field(isar1, 8) != 0, // APA or API: pointer authentication
        field(isar0, 60) >= 1,                        // RNDR
        field(pfr0, 32) >= 1,                         // SVE
    ];
    let features = present.iter().enumerate().fold(0u16, |acc, (i, &on)| acc | (u16::from(on) << i));
    CpuInfo { midr: MIDR_EL1.get(), features, nx: true }
}

/// Whether compiled code may use the feature Wasmtime calls `name` (its `detect_host_feature`
/// names): what the ID registers report. `None` for a name that is no aarch64 feature.
pub fn code_may_use(name: &str) -> Option<bool> {
    let cpu = init();
    let ours = match name {
        "lse" => "atomics",
        "paca" => "paca",
        "fp16" => "fphp",
        "dotprod" => "asimddp",
        "i8mm" => "i8mm",
        _ => return None,
    };
    Some(cpu.has(ours))
}

/// The FP control register as the kernel's boot tests see it: FPCR.
pub fn fp_control() -> u64 {
    let value: u64;
    // SAFETY: reads a register into a local (FP/SIMD is on from the entry stub).
    unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Sets the FP control register ([`fp_control`]).
pub fn set_fp_control(value: u64) {
    // SAFETY: writes FPCR, which only changes how later FP instructions round and trap.
    unsafe { core::arch::asm!("msr fpcr, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// `control` with rounding mode `mode` (0 to 3: nearest, up, down, toward zero): FPCR's RMode,
/// bits 22 and 23.
pub const fn with_rounding(control: u64, mode: u64) -> u64 {
    (control & !(0b11 << 22)) | ((mode & 0b11) << 22)
}

/// Machine code of a function that returns 42 (`mov w0, #42; ret`), for the boot test that
/// publishes code read-execute.
pub const RETURN_42: [u8; 8] = [0x40, 0x05, 0x80, 0x52, 0xc0, 0x03, 0x5f, 0xd6];

/// Makes code just written at `start..start + len` visible to instruction fetches on every CPU:
/// the data cache cleaned to the point of unification and the instruction cache invalidated,
/// line by line (each skipped where `CTR_EL0` says the hardware keeps them coherent). The range
/// is mapped and readable.
pub fn sync_code(start: u64, len: u64) {
    let ctr: u64;
    // SAFETY: reads a register into a local.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let end = start.saturating_add(len);
    if ctr & (1 << 28) == 0 {
        let line = 4u64 << ((ctr >> 16) & 0xf);
        let mut at = start & !(line - 1);
        while at < end {
            // SAFETY: cleans a line of a mapped range to the point of unification; the data is
            // unchanged.
            unsafe { core::arch::asm!("dc cvau, {}", in(reg) at, options(nostack, preserves_flags)) };
            at += line;
        }
    }
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
    if ctr & (1 << 29) == 0 {
        let line = 4u64 << (ctr & 0xf);
        let mut at = start & !(line - 1);
        while at < end {
            // SAFETY: invalidates instruction-cache lines of a mapped range; memory is unchanged.
            unsafe { core::arch::asm!("ic ivau, {}", in(reg) at, options(nostack, preserves_flags)) };
            at += line;
        }
    }
    // SAFETY: barriers.
    unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
}

/// Lowers the stack pointer by `by` bytes (a multiple of 16) without storing anything there,
/// waits for the next timer tick, and puts the stack pointer back: the tick's interrupt frame is
/// then the first store into those stack pages (a boot test's way to make that happen at will).
/// Interrupts must be on.
pub fn wait_for_tick_below_stack(by: u64) {
    let ticks = super::clock::ticks_word();
    let start = ticks.load(core::sync::atomic::Ordering::SeqCst);
    // The stack pointer goes down by `by` and comes back before the block ends; nothing is
    // stored below it here, and an interrupt taken meanwhile saves its frame below it and
    // restores everything (that is what the test is about). The tick counter is read with plain
    // aligned 64-bit loads, single-copy atomic on aarch64.
    // SAFETY: as said above: the stack pointer is restored and only the tick counter is read.
    unsafe {
        core::arch::asm!(
            "mov {saved}, sp",
            "sub sp, sp, {by}",
            "2: wfi",
            "ldr {now}, [{ticks}]",
            "cmp {now}, {start}",
            "b.eq 2b",
            "mov sp, {saved}",
            saved = out(reg) _,
            now = out(reg) _,
            by = in(reg) by,
            ticks = in(reg) ticks.as_ptr(),
            start = in(reg) start,
        );
    }
}
