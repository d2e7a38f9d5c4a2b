//! A persistent key-value store on a block device: an append-only log of checksummed records,
//! replayed at start into an index in memory.
//!
//! - [`block`]: the disk behind the block driver's `block` connection.
//! - [`disk`]: the [`Disk`](disk::Disk) the store lives on, and [`MemDisk`](disk::MemDisk), one
//!   in memory for tests.
//! - [`log`]: the disk format, commits and recovery ([`Store`](log::Store)).
//! - [`protocol`]: the text protocol the `kvstore` component serves on connection `kv`.
//!
//! The component (`src/main.rs`) puts the store on the block driver's `block` connection.
#![forbid(unsafe_code)]

pub mod block;
pub mod disk;
pub mod log;
pub mod protocol;
