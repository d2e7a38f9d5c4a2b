//! The entropy protocol (connection [`CONNECTION`]): random bytes from a hardware source.
//!
//! A request is the number of bytes wanted, a u32 little-endian from 1 to [`MAX_BYTES`]; the
//! response is exactly that many bytes. A driver that cannot serve a request (it is malformed,
//! or the device failed) answers with no bytes and logs why.

use alloc::vec::Vec;

use crate::DecodeError;
use crate::wire::Reader;

/// The manifest connection an entropy driver serves.
pub const CONNECTION: &str = "entropy";

/// The most bytes one request may ask for.
pub const MAX_BYTES: u32 = 4096;

/// A request for `len` bytes.
pub fn encode_request(len: u32) -> Vec<u8> {
    len.to_le_bytes().to_vec()
}

/// The number of bytes a request asks for: exactly four bytes, a count from 1 to
/// [`MAX_BYTES`].
pub fn decode_request(bytes: &[u8]) -> Result<u32, DecodeError> {
    let mut r = Reader::new(bytes);
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let len = r.u32("byte count")?;
    r.finish()?;
    if len == 0 {
        return Err(DecodeError::Invalid { field: "byte count", reason: "0 bytes".into() });
    }
    if len > MAX_BYTES {
        return Err(DecodeError::Oversized { field: "byte count", len: len.into(), max: MAX_BYTES.into() });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for len in [1, 64, MAX_BYTES] {
            assert_eq!(decode_request(&encode_request(len)), Ok(len));
        }
        assert_eq!(encode_request(0x0102), [2, 1, 0, 0]);
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(decode_request(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_request(&[1, 0, 0]), Err(DecodeError::Truncated { field: "byte count", needed: 4, left: 3 }));
        assert_eq!(decode_request(&[1, 0, 0, 0, 0]), Err(DecodeError::TrailingBytes { count: 1 }));
        assert!(matches!(decode_request(&encode_request(0)), Err(DecodeError::Invalid { .. })));
        let e = decode_request(&encode_request(MAX_BYTES + 1)).expect_err("oversized");
        assert_eq!(e.to_string(), "byte count is 4097, over the limit of 4096");
    }
}
