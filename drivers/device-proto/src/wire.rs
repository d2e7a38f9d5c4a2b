//! The little-endian wire format's reader and its error type.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// What was wrong with a message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// The first byte names no message of this protocol.
    #[error("unknown {kind} tag {tag:#04x}")]
    UnknownTag {
        /// Which kind of message was expected.
        kind: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// The message ends inside a field.
    #[error("truncated message: {field} needs {needed} bytes, {left} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message.
        left: usize,
    },
    /// Bytes follow the last field.
    #[error("{count} bytes after the end of the message")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A length or count over the protocol's limit.
    #[error("{field} is {len}, over the limit of {max}")]
    Oversized {
        /// The field.
        field: &'static str,
        /// Its value.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A field whose value the protocol does not allow.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Reads fields off the front of a message.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    /// The tag byte; [`DecodeError::Empty`] for an empty message.
    pub(crate) fn tag(&mut self) -> Result<u8, DecodeError> {
        let (&tag, rest) = self.bytes.split_first().ok_or(DecodeError::Empty)?;
        self.bytes = rest;
        Ok(tag)
    }

    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated { field, needed: n, left: self.bytes.len() });
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A u32 length, at most `max`, then that many bytes.
    pub(crate) fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)?;
        if len as usize > max {
            return Err(DecodeError::Oversized { field, len: len.into(), max: max as u64 });
        }
        self.take(field, len as usize)
    }

    /// An error response's body: its code (through `from_u8`, naming `protocol` when it names no
    /// error of it) and its UTF-8 message of at most [`MAX_ERROR_MESSAGE_BYTES`].
    pub(crate) fn error<C>(
        &mut self,
        protocol: &'static str,
        from_u8: fn(u8) -> Option<C>,
    ) -> Result<(C, String), DecodeError> {
        let raw = self.u8("error code")?;
        let code = from_u8(raw).ok_or_else(|| DecodeError::Invalid {
            field: "error code",
            reason: format!("{raw} names no {protocol} error"),
        })?;
        let message = self.bytes("error message", MAX_ERROR_MESSAGE_BYTES)?;
        let message = String::from_utf8(message.to_vec())
            .map_err(|e| DecodeError::Invalid { field: "error message", reason: format!("not UTF-8 ({e})") })?;
        Ok((code, message))
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// The longest error message any protocol carries, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// An error response: `tag`, the code byte, and `message` cut to [`MAX_ERROR_MESSAGE_BYTES`] on
/// a character boundary.
pub(crate) fn error_message(tag: u8, code: u8, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_ERROR_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = vec![tag, code];
    put_bytes(&mut out, &message.as_bytes()[..end]);
    out
}

/// Appends `bytes` with their u32 length in front.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}
