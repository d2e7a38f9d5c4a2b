//! The Mica microkernel.
//!
//! The modules that are plain logic (command line, PVH structures, ranges and frames, clock
//! arithmetic) build on any target and are unit-tested on the host. Everything that touches the
//! hardware builds only for bare metal (`target_os = "none"`), where `main.rs` links it into the
//! kernel image.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod hw;
pub mod ipc;
pub mod mem;
pub mod runqueue;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;

/// x86_64's boot-protocol parsers (the PVH structures, the MP table) live with their platform in
/// `arch/x86_64`; they are plain logic, unit-tested here on the host.
#[cfg(all(test, not(target_os = "none"), target_arch = "x86_64"))]
#[path = "arch/x86_64"]
mod x86_64_boot_protocol {
    pub mod mptable;
    pub mod pvh;
}
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod interrupts;
#[cfg(target_os = "none")]
mod kmain;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
mod scenarios;
#[cfg(target_os = "none")]
pub mod sched;
#[cfg(target_os = "none")]
pub mod wasm;
