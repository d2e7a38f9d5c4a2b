//! Hardware randomness: `RNDR` (FEAT_RNG), when the CPU has it.

use aarch64_cpu::registers::{ID_AA64ISAR0_EL1, Readable};

/// What the generators are called, for the boot log.
pub const SOURCE: &str = "the CPU's RNDR";

/// Which hardware generators the CPU offers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Generators {
    /// `RNDR`.
    pub rndr: bool,
}

impl Generators {
    /// Whether the CPU has any of them.
    pub fn any(&self) -> bool {
        self.rndr
    }
}

/// Asks the CPU which generators it has.
pub fn generators() -> Generators {
    Generators { rndr: (ID_AA64ISAR0_EL1.get() >> 60) & 0xf >= 1 }
}

/// One 64-bit random value from `RNDR` (a few retries), or `None`.
pub fn hardware_u64(g: Generators) -> Option<u64> {
    if !g.rndr {
        return None;
    }
    for _ in 0..10 {
        let (value, ok): (u64, u64);
        // SAFETY: reads RNDR (encoded by number: the assembler knows it only with `+rng`), which
        // the ID register says the CPU has; it sets the flags (Z on failure) and touches no memory.
        unsafe {
            core::arch::asm!(
                "mrs {v}, s3_3_c2_c4_0",
                "cset {ok}, ne",
                v = out(reg) value,
                ok = out(reg) ok,
                options(nomem, nostack)
            )
        };
        if ok == 1 {
            return Some(value);
        }
    }
    None
}
