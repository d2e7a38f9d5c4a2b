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
    CpuInfo { midr: MIDR_EL1.get(), features }
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
