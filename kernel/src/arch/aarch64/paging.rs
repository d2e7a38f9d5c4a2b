//! Page tables. Today only the boot stub's identity map exists (1 GiB blocks, `boot.rs`); the
//! kernel's own tables, with W^X and guard pages as on x86_64, are the next step of the port
//! (`docs/aarch64-plan.md`, step 5).

/// Answers a TLB-shootdown request while spinning for a lock. No other CPU runs yet and no page
/// is ever unmapped, so there is never one to answer.
pub fn service_flush() {}
