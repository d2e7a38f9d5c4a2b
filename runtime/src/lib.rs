//! Mica's Wasmtime embedding, shared by the kernel (no_std) and the host (`std`, and `aot` for
//! the ahead-of-time compiler in xtask).
//!
//! - [`config`]: the one Wasmtime configuration both sides use, CPU profiles and artifact keys.
//! - [`compiler`]: compiling components inside Mica, in the compiler component.
//! - [`platform`]: the narrow trait the host (the kernel) implements for the runtime.
//! - [`host`]: WASI 0.2 and Mica's interfaces, one file per interface, no unsafe code.
//! - [`ipc`]: what the IPC interface needs from the kernel ([`ipc::IpcPort`]).
//! - [`hw`]: what the `mica:hw` interfaces need from the kernel ([`hw::HwPort`]).
//! - [`program`]: artifact loading, the capability-gated linker, limits and outcomes.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

/// The engine settings, CPU profiles and artifact keys (the `mica-engine` crate).
pub mod config {
    pub use mica_engine::*;
}
pub mod compiler;
pub mod host;
pub mod hw;
pub mod ipc;
pub mod limits;
pub mod platform;
pub mod program;

pub use wasmtime;
