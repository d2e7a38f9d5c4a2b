//! The boot tests of aarch64's own state: none yet (the kernel's boot-test runner,
//! `scenarios/mod.rs`, asks [`run`] for the names it does not know).

use alloc::string::String;

/// This architecture's boot tests, for errors.
pub const NAMES: &str = "";

/// Runs this architecture's boot test `name`, if it has one by that name.
pub fn run(_name: &str) -> Option<Result<(), String>> {
    None
}
