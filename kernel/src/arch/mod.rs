//! Architecture support. This is the only place that switches on the target architecture; every
//! architecture offers the same module names.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
