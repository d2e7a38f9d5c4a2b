//! A file system service: a littlefs volume on a disk, served on the files protocol
//! ([`mica_device::files`]).
//!
//! - [`volume`]: the disk as littlefs's block device, and mounting (formatting a blank disk).
//! - [`service`]: the protocol's requests answered from the mounted volume.
//!
//! The component (`src/main.rs`) puts the volume on the block driver's `block` connection and
//! serves connection `files`.
#![forbid(unsafe_code)]

pub mod service;
pub mod volume;

#[cfg(test)]
mod tests;
