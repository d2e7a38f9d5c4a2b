//! Hardware randomness: RDSEED, then RDRAND, when the CPU has them.

use core::arch::x86_64::{_rdrand64_step, _rdseed64_step};

use raw_cpuid::CpuId;

/// What the generators are called, for the boot log.
pub const SOURCE: &str = "the CPU's RDSEED/RDRAND";

/// Which hardware generators the CPU offers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Generators {
    /// RDRAND.
    pub rdrand: bool,
    /// RDSEED.
    pub rdseed: bool,
}

impl Generators {
    /// Whether the CPU has any of them.
    pub fn any(&self) -> bool {
        self.rdrand || self.rdseed
    }
}

/// Asks the CPU which generators it has.
pub fn generators() -> Generators {
    let cpuid = CpuId::new();
    Generators {
        rdrand: cpuid.get_feature_info().is_some_and(|f| f.has_rdrand()),
        rdseed: cpuid.get_extended_feature_info().is_some_and(|f| f.has_rdseed()),
    }
}

/// One 64-bit random value from RDSEED or RDRAND (a few retries each), or `None`.
pub fn hardware_u64(g: Generators) -> Option<u64> {
    let mut v = 0u64;
    for _ in 0..10 {
        // SAFETY: RDSEED is only executed when CPUID says the CPU has it.
        if g.rdseed && unsafe { _rdseed64_step(&mut v) } == 1 {
            return Some(v);
        }
        // SAFETY: RDRAND is only executed when CPUID says the CPU has it.
        if g.rdrand && unsafe { _rdrand64_step(&mut v) } == 1 {
            return Some(v);
        }
    }
    None
}
