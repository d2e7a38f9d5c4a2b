//! The `mica:device` protocols: what driver components offer their clients over IPC.
//!
//! Each protocol is a manifest connection on which the driver is the server: a client `call`s
//! with an encoded request and gets an encoded response as the reply.
//!
//! - [`block`] (connection `block`): sector reads and writes, capacity, flush.
//! - [`console`] (connection `console`): bytes written to and read from a console port.
//! - [`entropy`] (connection `entropy`): random bytes.
//! - [`files`] (connection `files`): a file system service's volume, by paths and handles.
//! - [`net`] (connection `net`): Ethernet frames sent and received through a network card.
//! - [`sockets`] (connection `sockets`): TCP and UDP sockets served by a network stack.
//!
//! The encoding is small and explicit: a tag byte, then fixed-size little-endian fields, then
//! length-prefixed bytes; a message must be consumed exactly. Decoding checks everything and
//! says what was wrong ([`DecodeError`]), so a driver can answer a malformed request instead of
//! trusting it. No message exceeds [`MAX_MESSAGE_BYTES`], the IPC limit.
#![forbid(unsafe_code)]
// no_std (with alloc) so that the kernel can speak the module-store protocol too.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod block;
pub mod console;
pub mod entropy;
pub mod files;
pub mod modules;
pub mod net;
pub mod sockets;
mod wire;

pub use wire::DecodeError;

/// Why a request failed, for the protocols whose only failures are a bad request or a failed
/// device (`net`, `console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DriverErrorCode {
    /// The request was malformed or broke a limit of the protocol.
    BadRequest = 1,
    /// The device failed; the driver ends after answering.
    DeviceError = 2,
}

impl DriverErrorCode {
    pub(crate) fn from_u8(code: u8) -> Option<DriverErrorCode> {
        Some(match code {
            1 => DriverErrorCode::BadRequest,
            2 => DriverErrorCode::DeviceError,
            _ => return None,
        })
    }
}

/// The most bytes one IPC message may carry (`mica:kernel/ipc`).
pub const MAX_MESSAGE_BYTES: usize = 65536;
