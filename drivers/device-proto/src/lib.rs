//! The `mica:device` protocols: what driver components offer their clients over IPC.
//!
//! Each protocol is a manifest connection on which the driver is the server: a client `call`s
//! with an encoded request and gets an encoded response as the reply.
//!
//! - [`block`] (connection `block`): sector reads and writes, capacity, flush.
//! - [`console`] (connection `console`): bytes written to and read from a console port.
//! - [`entropy`] (connection `entropy`): random bytes.
//! - [`net`] (connection `net`): Ethernet frames sent and received through a network card.
//!
//! The encoding is small and explicit: a tag byte, then fixed-size little-endian fields, then
//! length-prefixed bytes; a message must be consumed exactly. Decoding checks everything and
//! says what was wrong ([`DecodeError`]), so a driver can answer a malformed request instead of
//! trusting it. No message exceeds [`MAX_MESSAGE_BYTES`], the IPC limit.
#![forbid(unsafe_code)]

pub mod block;
pub mod console;
pub mod entropy;
pub mod net;
mod wire;

pub use wire::DecodeError;

/// The most bytes one IPC message may carry (`mica:kernel/ipc`).
pub const MAX_MESSAGE_BYTES: usize = 65536;
