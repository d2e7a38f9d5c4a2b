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
pub mod mptable;
pub mod pvh;
pub mod runqueue;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod boot_info;
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
