//! The console protocol (connection [`CONNECTION`]): bytes out to and in from a console port.
//!
//! | message | bytes |
//! |---|---|
//! | [`Request::Write`] | `01`, length: u32, data |
//! | [`Request::Read`] | `02`, max: u32, wait: u64 (nanoseconds) |
//! | [`Response::Done`] | `81` |
//! | [`Response::Data`] | `82`, length: u32, data |
//! | [`Response::Error`] | `83`, code: u8 ([`ConsoleErrorCode`]), length: u32, UTF-8 message |
//!
//! Integers are little-endian. A write carries at most [`MAX_BYTES`] and is answered with
//! [`Response::Done`] once the device has taken the bytes. A read asks for at most `max` bytes
//! (1 to [`MAX_BYTES`]) and is answered with [`Response::Data`]: whatever input the driver holds,
//! up to `max` bytes, oldest first; when it holds none, it waits up to `wait` for some (0: it
//! does not wait) and answers with what came, possibly nothing. Bytes the answer has no room for
//! stay for the next read.
//!
//! Several clients may share the connection: each request is a call, answered by its reply.
//! They share one stream of input, though: a byte goes to whichever read takes it first.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::wire::{Reader, error_message, put_bytes};
use crate::{DecodeError, MAX_MESSAGE_BYTES};

/// The manifest connection a console driver serves.
pub const CONNECTION: &str = "console";

/// The most bytes one write carries or one read returns: 32 KiB.
pub const MAX_BYTES: usize = 32 * 1024;

/// The longest error message, in bytes (longer ones are cut on a character boundary).
pub use crate::wire::MAX_ERROR_MESSAGE_BYTES;

// The largest messages (a write request, a data response) fit in one IPC message.
const _: () = assert!(1 + 4 + MAX_BYTES <= MAX_MESSAGE_BYTES);

const TAG_WRITE: u8 = 0x01;
const TAG_READ: u8 = 0x02;
const TAG_DONE: u8 = 0x81;
const TAG_DATA: u8 = 0x82;
const TAG_ERROR: u8 = 0x83;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Bytes to output (at most [`MAX_BYTES`]): answered with [`Response::Done`] once the
    /// device has taken them.
    Write(Vec<u8>),
    /// Input: answered with [`Response::Data`].
    Read {
        /// The most bytes to return, 1 to [`MAX_BYTES`].
        max: u32,
        /// How long to wait for a byte when none has come, in nanoseconds (0: do not wait).
        wait_ns: u64,
    },
}

/// Why a request failed.
pub type ConsoleErrorCode = crate::DriverErrorCode;

/// The driver's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The device has taken the bytes of a write.
    Done,
    /// The input of a read (possibly none), oldest first.
    Data(Vec<u8>),
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ConsoleErrorCode,
        /// What happened, in words.
        message: String,
    },
}

impl Response {
    /// An [`Error`](Response::Error) response.
    pub fn error(code: ConsoleErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }
}

impl Request {
    /// The request as bytes. (A write of more than [`MAX_BYTES`] encodes, and
    /// [`decode`](Request::decode) then refuses it.)
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Write(data) => {
                let mut out = Vec::with_capacity(1 + 4 + data.len());
                out.push(TAG_WRITE);
                put_bytes(&mut out, data);
                out
            }
            Request::Read { max, wait_ns } => {
                let mut out = Vec::with_capacity(1 + 4 + 8);
                out.push(TAG_READ);
                out.extend_from_slice(&max.to_le_bytes());
                out.extend_from_slice(&wait_ns.to_le_bytes());
                out
            }
        }
    }

    /// Decodes and checks a request: known tag, every field present, no bytes left over, at
    /// most [`MAX_BYTES`] to write, a read's `max` from 1 to [`MAX_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = match r.tag()? {
            TAG_WRITE => Request::Write(r.bytes("write data", MAX_BYTES)?.to_vec()),
            TAG_READ => {
                let max = r.u32("read max")?;
                let wait_ns = r.u64("wait")?;
                if max == 0 {
                    return Err(DecodeError::Invalid { field: "read max", reason: "0 bytes".into() });
                }
                if max as usize > MAX_BYTES {
                    return Err(DecodeError::Oversized { field: "read max", len: max.into(), max: MAX_BYTES as u64 });
                }
                Request::Read { max, wait_ns }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "console request", tag }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The response as bytes. An error message longer than [`MAX_ERROR_MESSAGE_BYTES`] is cut
    /// short (at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Done => vec![TAG_DONE],
            Response::Data(data) => {
                let mut out = Vec::with_capacity(1 + 4 + data.len());
                out.push(TAG_DATA);
                put_bytes(&mut out, data);
                out
            }
            Response::Error { code, message } => error_message(TAG_ERROR, *code as u8, message),
        }
    }

    /// Decodes and checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let response = match r.tag()? {
            TAG_DONE => Response::Done,
            TAG_DATA => Response::Data(r.bytes("read data", MAX_BYTES)?.to_vec()),
            TAG_ERROR => {
                let (code, message) = r.error("console", ConsoleErrorCode::from_u8)?;
                Response::Error { code, message }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "console response", tag }),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(3)).collect()
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Write(vec![]),
            Request::Write(b"hello\n".to_vec()),
            Request::Write(data(MAX_BYTES)),
            Request::Read { max: 1, wait_ns: 0 },
            Request::Read { max: 4096, wait_ns: 100_000_000 },
            Request::Read { max: MAX_BYTES as u32, wait_ns: u64::MAX },
        ];
        for request in requests {
            let bytes = request.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
            assert_eq!(Request::decode(&bytes), Ok(request));
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            Response::Done,
            Response::Data(vec![]),
            Response::Data(b"typed\r".to_vec()),
            Response::Data(data(MAX_BYTES)),
            Response::error(ConsoleErrorCode::BadRequest, "write data is 40000, over the limit of 32768"),
            Response::error(ConsoleErrorCode::DeviceError, "ünïcödé"),
            Response::error(ConsoleErrorCode::DeviceError, ""),
        ];
        for response in responses {
            let bytes = response.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
            assert_eq!(Response::decode(&bytes), Ok(response));
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        assert_eq!(Request::Write(b"hi".to_vec()).encode(), [0x01, 2, 0, 0, 0, b'h', b'i']);
        assert_eq!(
            Request::Read { max: 0x0102, wait_ns: 10_000 }.encode(),
            [0x02, 2, 1, 0, 0, 0x10, 0x27, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Response::Done.encode(), [0x81]);
        assert_eq!(Response::Data(vec![9]).encode(), [0x82, 1, 0, 0, 0, 9]);
        assert_eq!(Response::error(ConsoleErrorCode::DeviceError, "x").encode(), [0x83, 2, 1, 0, 0, 0, b'x']);
    }

    #[test]
    fn every_truncation_is_refused() {
        let messages = [
            (true, Request::Write(b"some text".to_vec()).encode()),
            (true, Request::Read { max: 64, wait_ns: 5 }.encode()),
            (false, Response::Done.encode()),
            (false, Response::Data(b"input".to_vec()).encode()),
            (false, Response::error(ConsoleErrorCode::DeviceError, "gone").encode()),
        ];
        for (i, (request, bytes)) in messages.iter().enumerate() {
            for cut in 0..bytes.len() {
                let short = &bytes[..cut];
                let error = if *request { Request::decode(short).err() } else { Response::decode(short).err() };
                match error {
                    Some(DecodeError::Empty) => assert_eq!(cut, 0),
                    Some(DecodeError::Truncated { .. }) => {}
                    other => panic!("message {i} cut to {cut} bytes: {other:?}"),
                }
            }
        }
        // A length that claims more bytes than the message has.
        let mut lying = Request::Write(b"abc".to_vec()).encode();
        lying[1] = 4;
        assert_eq!(Request::decode(&lying), Err(DecodeError::Truncated { field: "write data", needed: 4, left: 3 }));
    }

    #[test]
    fn oversized_writes_and_reads_are_refused() {
        let big = Request::Write(data(MAX_BYTES + 1)).encode();
        assert_eq!(
            Request::decode(&big),
            Err(DecodeError::Oversized { field: "write data", len: MAX_BYTES as u64 + 1, max: MAX_BYTES as u64 })
        );
        // A length beyond any message is refused before anything is read.
        let mut huge = vec![TAG_WRITE];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Request::decode(&huge), Err(DecodeError::Oversized { field: "write data", .. })));
        let e = Request::decode(&Request::Read { max: MAX_BYTES as u32 + 1, wait_ns: 0 }.encode()).expect_err("max");
        assert_eq!(e.to_string(), "read max is 32769, over the limit of 32768");
        let e = Request::decode(&Request::Read { max: 0, wait_ns: 0 }.encode()).expect_err("zero");
        assert_eq!(e, DecodeError::Invalid { field: "read max", reason: "0 bytes".into() });
        let big = Response::Data(data(MAX_BYTES + 1)).encode();
        assert!(matches!(Response::decode(&big), Err(DecodeError::Oversized { field: "read data", .. })));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Response::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Request::decode(&[0x42]), Err(DecodeError::UnknownTag { kind: "console request", tag: 0x42 }));
        assert_eq!(Request::decode(&[0x81]), Err(DecodeError::UnknownTag { kind: "console request", tag: 0x81 }));
        assert_eq!(Response::decode(&[0x01]), Err(DecodeError::UnknownTag { kind: "console response", tag: 0x01 }));
        assert_eq!(Response::decode(&[TAG_DONE, 0]), Err(DecodeError::TrailingBytes { count: 1 }));
        let mut write = Request::Write(b"x".to_vec()).encode();
        write.extend_from_slice(&[1, 2]);
        assert_eq!(Request::decode(&write), Err(DecodeError::TrailingBytes { count: 2 }));
        let mut error = Response::error(ConsoleErrorCode::BadRequest, "x").encode();
        error[1] = 9;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error code", .. })));
        let mut error = Response::error(ConsoleErrorCode::BadRequest, "x").encode();
        *error.last_mut().expect("message") = 0xff;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error message", .. })));
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let Ok(Response::Error { message, .. }) =
            Response::decode(&Response::error(ConsoleErrorCode::DeviceError, long).encode())
        else {
            panic!("an error response");
        };
        assert_eq!(message, "é".repeat(MAX_ERROR_MESSAGE_BYTES / 2));
    }
}
