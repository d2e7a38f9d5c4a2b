//! The Mica microkernel.
//!
//! The modules that are plain logic (command line, PVH structures, ranges and frames, clock
//! arithmetic) build on any target and are unit-tested on the host. Everything that touches the
//! hardware builds only for bare metal (`target_os = "none"`), where `main.rs` links it into the
//! kernel image.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod boot_record;
pub mod cmdline;
#[cfg(any(not(target_os = "none"), arch_complete))]
pub mod hw;
#[cfg(any(not(target_os = "none"), arch_complete))]
pub mod ipc;
pub mod mem;
pub mod runqueue;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod irq_lock;
#[cfg(target_os = "none")]
pub mod percpu;

/// x86_64's boot-protocol parsers (the PVH structures, the MP table) live with their platform in
/// `arch/x86_64`; they are plain logic, unit-tested here on the host.
#[cfg(all(test, not(target_os = "none"), target_arch = "x86_64"))]
#[path = "arch/x86_64"]
mod x86_64_boot_protocol {
    pub mod mptable;
    pub mod pvh;
}
/// aarch64's boot protocol (the device tree) lives with its platform in `arch/aarch64`; it is
/// plain logic, unit-tested here on the host.
#[cfg(all(test, not(target_os = "none")))]
#[path = "arch/aarch64"]
#[allow(dead_code, reason = "the kernel reads the tree from memory; the host tests parse blobs")]
mod aarch64_boot_protocol {
    pub mod boot_info;
}
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
mod kmain;
#[cfg(target_os = "none")]
mod panic;

// What needs the whole architecture API (`arch_complete`, set by build.rs for the architectures
// that have it: x86_64 today; aarch64 gets it when its port reaches threads, docs/aarch64-plan.md).
#[cfg(all(target_os = "none", arch_complete))]
pub mod interrupts;
#[cfg(target_os = "none")]
mod scenarios;
#[cfg(all(target_os = "none", arch_complete))]
pub mod sched;
#[cfg(all(target_os = "none", arch_complete))]
pub mod wasm;
