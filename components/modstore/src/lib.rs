//! Mica's module store: the native code the system compiled for this machine's CPU, kept across
//! boots on a block device, so that a component is compiled once per CPU, not once per boot.
//!
//! - [`store`]: the disk format, commits and recovery ([`ModuleStore`](store::ModuleStore)).
//! - [`service`]: the `mica:device` modules protocol served over it.
//!
//! The component (`src/main.rs`) puts the store on the block driver's `block` connection and
//! serves the kernel on connection `modules`.
#![forbid(unsafe_code)]

pub mod service;
pub mod store;
