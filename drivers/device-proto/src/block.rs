//! The block protocol (connection [`CONNECTION`]): a disk of 512-byte sectors.
//!
//! | message | bytes |
//! |---|---|
//! | [`Request::Info`] | `01` |
//! | [`Request::Read`] | `02`, sector: u64, count: u32 |
//! | [`Request::Write`] | `03`, sector: u64, length: u32, data |
//! | [`Request::Flush`] | `04` |
//! | [`Response::Info`] | `81`, sectors: u64, sector size: u32, read-only: u8 (0 or 1) |
//! | [`Response::Data`] | `82`, length: u32, data |
//! | [`Response::Done`] | `83` |
//! | [`Response::Error`] | `84`, code: u8 ([`BlockErrorCode`]), length: u32, UTF-8 message |
//!
//! Integers are little-endian. Data is a whole number of sectors, at most
//! [`MAX_DATA_BYTES`] per request, so that every message fits in one IPC message.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::wire::{Reader, error_message, put_bytes};
use crate::{DecodeError, MAX_MESSAGE_BYTES};

/// The manifest connection a block driver serves.
pub const CONNECTION: &str = "block";

/// Bytes per sector.
pub const SECTOR_SIZE: u32 = 512;

/// The most data one read or write carries: 32 KiB. (64 KiB of data would not fit in one IPC
/// message of at most [`MAX_MESSAGE_BYTES`] together with its header.)
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// The most sectors one read or write covers.
pub const MAX_SECTORS_PER_REQUEST: u32 = MAX_DATA_BYTES as u32 / SECTOR_SIZE;

/// The longest error message, in bytes (longer ones are cut on a character boundary).
pub use crate::wire::MAX_ERROR_MESSAGE_BYTES;

// The largest messages (a write request, a data response) fit in one IPC message.
const _: () = assert!(1 + 8 + 4 + MAX_DATA_BYTES <= MAX_MESSAGE_BYTES);

const TAG_INFO: u8 = 0x01;
const TAG_READ: u8 = 0x02;
const TAG_WRITE: u8 = 0x03;
const TAG_FLUSH: u8 = 0x04;
const TAG_INFO_REPLY: u8 = 0x81;
const TAG_DATA: u8 = 0x82;
const TAG_DONE: u8 = 0x83;
const TAG_ERROR: u8 = 0x84;

/// A client's request ([`RequestOf`] with its data owned).
pub type Request = RequestOf<Vec<u8>>;

/// A request whose data is borrowed from the message it was decoded from
/// ([`Request::decode_borrowed`]), so that a driver moves a write's data from the message into
/// its DMA buffer in one copy.
pub type RequestRef<'a> = RequestOf<&'a [u8]>;

/// A client's request, its data of type `D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOf<D> {
    /// The disk's size and whether it is writable: answered with [`Response::Info`].
    Info,
    /// `count` sectors (1 to [`MAX_SECTORS_PER_REQUEST`]) from `sector`: answered with
    /// [`Response::Data`].
    Read {
        /// The first sector.
        sector: u64,
        /// How many sectors.
        count: u32,
    },
    /// `data` (a whole number of sectors, at most [`MAX_DATA_BYTES`]) to the disk at `sector`:
    /// answered with [`Response::Done`].
    Write {
        /// The first sector.
        sector: u64,
        /// The bytes.
        data: D,
    },
    /// Makes every completed write durable: answered with [`Response::Done`].
    Flush,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockErrorCode {
    /// The sectors lie (partly) past the end of the disk.
    OutOfRange = 1,
    /// A write to a read-only disk.
    ReadOnly = 2,
    /// The device reported an I/O error, or the driver lost it.
    DeviceError = 3,
    /// The request was malformed or broke a limit of the protocol.
    BadRequest = 4,
    /// The device does not support the request.
    Unsupported = 5,
}

impl BlockErrorCode {
    fn from_u8(code: u8) -> Option<BlockErrorCode> {
        Some(match code {
            1 => BlockErrorCode::OutOfRange,
            2 => BlockErrorCode::ReadOnly,
            3 => BlockErrorCode::DeviceError,
            4 => BlockErrorCode::BadRequest,
            5 => BlockErrorCode::Unsupported,
            _ => return None,
        })
    }
}

/// The driver's answer to one request ([`ResponseOf`] with its data owned).
pub type Response = ResponseOf<Vec<u8>>;

/// A response whose data is borrowed from the message it was decoded from
/// ([`Response::decode_borrowed`]): a client reads a block into its own buffer without a copy
/// of the message.
pub type ResponseRef<'a> = ResponseOf<&'a [u8]>;

/// The driver's answer to one request, its data of type `D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOf<D> {
    /// The disk: `sectors` sectors of `sector_size` bytes.
    Info {
        /// Its capacity in sectors.
        sectors: u64,
        /// Bytes per sector (always [`SECTOR_SIZE`]).
        sector_size: u32,
        /// Whether writes are refused.
        read_only: bool,
    },
    /// The sectors read.
    Data(D),
    /// The write or flush completed.
    Done,
    /// The request failed; nothing was written.
    Error {
        /// What kind of failure.
        code: BlockErrorCode,
        /// What happened, in words.
        message: String,
    },
}

/// Bytes before the data in an encoded [`Response::Data`]: the tag and the length.
pub const DATA_HEADER_BYTES: u32 = 5;

/// The first [`DATA_HEADER_BYTES`] of an encoded [`Response::Data`] of `len` bytes: a driver that
/// writes them right before data already in its memory answers without copying the data.
pub fn data_header(len: u32) -> [u8; DATA_HEADER_BYTES as usize] {
    let [a, b, c, d] = len.to_le_bytes();
    [TAG_DATA, a, b, c, d]
}

impl Response {
    /// An [`Error`](Response::Error) response.
    pub fn error(code: BlockErrorCode, message: impl Into<String>) -> Response {
        ResponseOf::Error { code, message: message.into() }
    }
}

fn check_data(data: &[u8]) -> Result<(), DecodeError> {
    if data.is_empty() || !data.len().is_multiple_of(SECTOR_SIZE as usize) {
        return Err(DecodeError::Invalid {
            field: "write data",
            reason: format!("{} bytes is not a positive whole number of {SECTOR_SIZE}-byte sectors", data.len()),
        });
    }
    Ok(())
}

impl<D: AsRef<[u8]>> RequestOf<D> {
    /// The request as bytes. (An oversized or partial-sector write encodes, and
    /// [`decode`](Request::decode) then refuses it.)
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RequestOf::Info => vec![TAG_INFO],
            RequestOf::Read { sector, count } => {
                let mut out = vec![TAG_READ];
                out.extend_from_slice(&sector.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
                out
            }
            RequestOf::Write { sector, data } => {
                let data = data.as_ref();
                let mut out = Vec::with_capacity(13 + data.len());
                out.push(TAG_WRITE);
                out.extend_from_slice(&sector.to_le_bytes());
                put_bytes(&mut out, data);
                out
            }
            RequestOf::Flush => vec![TAG_FLUSH],
        }
    }
}

impl Request {
    /// Decodes and checks a request: known tag, every field present, no bytes left over, a read
    /// of 1 to [`MAX_SECTORS_PER_REQUEST`] sectors, a write of whole sectors up to
    /// [`MAX_DATA_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        Ok(match Request::decode_borrowed(bytes)? {
            RequestOf::Info => RequestOf::Info,
            RequestOf::Read { sector, count } => RequestOf::Read { sector, count },
            RequestOf::Write { sector, data } => RequestOf::Write { sector, data: data.to_vec() },
            RequestOf::Flush => RequestOf::Flush,
        })
    }

    /// [`Request::decode`] with a write's data borrowed from `bytes`.
    pub fn decode_borrowed(bytes: &[u8]) -> Result<RequestRef<'_>, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = match r.tag()? {
            TAG_INFO => RequestOf::Info,
            TAG_READ => {
                let sector = r.u64("sector")?;
                let count = r.u32("sector count")?;
                if count == 0 {
                    return Err(DecodeError::Invalid { field: "sector count", reason: "0 sectors".into() });
                }
                if count > MAX_SECTORS_PER_REQUEST {
                    return Err(DecodeError::Oversized {
                        field: "sector count",
                        len: count.into(),
                        max: MAX_SECTORS_PER_REQUEST.into(),
                    });
                }
                RequestOf::Read { sector, count }
            }
            TAG_WRITE => {
                let sector = r.u64("sector")?;
                let data = r.bytes("write data", MAX_DATA_BYTES)?;
                check_data(data)?;
                RequestOf::Write { sector, data }
            }
            TAG_FLUSH => RequestOf::Flush,
            tag => return Err(DecodeError::UnknownTag { kind: "block request", tag }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl<D: AsRef<[u8]>> ResponseOf<D> {
    /// The response, briefly, for an error message: data by its length, not its bytes.
    pub fn brief(&self) -> String {
        match self {
            ResponseOf::Data(data) => format!("{} bytes of data", data.as_ref().len()),
            ResponseOf::Info { sectors, sector_size, read_only } => {
                format!("Info {{ sectors: {sectors}, sector_size: {sector_size}, read_only: {read_only} }}")
            }
            ResponseOf::Done => String::from("Done"),
            ResponseOf::Error { code, message } => format!("error {code:?}: {message}"),
        }
    }

    /// The response as bytes. An error message longer than [`MAX_ERROR_MESSAGE_BYTES`] is cut
    /// short (at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ResponseOf::Info { sectors, sector_size, read_only } => {
                let mut out = vec![TAG_INFO_REPLY];
                out.extend_from_slice(&sectors.to_le_bytes());
                out.extend_from_slice(&sector_size.to_le_bytes());
                out.push(u8::from(*read_only));
                out
            }
            ResponseOf::Data(data) => {
                let data = data.as_ref();
                let mut out = Vec::with_capacity(5 + data.len());
                out.push(TAG_DATA);
                put_bytes(&mut out, data);
                out
            }
            ResponseOf::Done => vec![TAG_DONE],
            ResponseOf::Error { code, message } => error_message(TAG_ERROR, *code as u8, message),
        }
    }
}

impl Response {
    /// Decodes and checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        Ok(match Response::decode_borrowed(bytes)? {
            ResponseOf::Info { sectors, sector_size, read_only } => {
                ResponseOf::Info { sectors, sector_size, read_only }
            }
            ResponseOf::Data(data) => ResponseOf::Data(data.to_vec()),
            ResponseOf::Done => ResponseOf::Done,
            ResponseOf::Error { code, message } => ResponseOf::Error { code, message },
        })
    }

    /// [`Response::decode`] with the data borrowed from `bytes`.
    pub fn decode_borrowed(bytes: &[u8]) -> Result<ResponseRef<'_>, DecodeError> {
        let mut r = Reader::new(bytes);
        let response = match r.tag()? {
            TAG_INFO_REPLY => {
                let sectors = r.u64("sector count")?;
                let sector_size = r.u32("sector size")?;
                let read_only = match r.u8("read-only flag")? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(DecodeError::Invalid {
                            field: "read-only flag",
                            reason: format!("{other} is neither 0 nor 1"),
                        });
                    }
                };
                ResponseOf::Info { sectors, sector_size, read_only }
            }
            TAG_DATA => ResponseOf::Data(r.bytes("data", MAX_DATA_BYTES)?),
            TAG_DONE => ResponseOf::Done,
            TAG_ERROR => {
                let (code, message) = r.error("block", BlockErrorCode::from_u8)?;
                ResponseOf::Error { code, message }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "block response", tag }),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_decoding_sees_the_same_messages() {
        let write = Request::Write { sector: 3, data: vec![9; 1024] }.encode();
        assert_eq!(Request::decode_borrowed(&write), Ok(RequestRef::Write { sector: 3, data: &[9; 1024][..] }));
        assert_eq!(RequestRef::Write { sector: 3, data: &[9u8; 1024][..] }.encode(), write);
        let data = Response::Data(vec![4; 512]).encode();
        assert_eq!(Response::decode_borrowed(&data), Ok(ResponseRef::Data(&[4; 512][..])));
        let partial = Request::Write { sector: 0, data: vec![0; 500] }.encode();
        assert_eq!(Request::decode_borrowed(&partial).unwrap_err(), Request::decode(&partial).unwrap_err());
    }

    #[test]
    fn a_data_header_before_the_data_is_a_data_response() {
        let data = vec![7u8; 1024];
        let mut out = data_header(1024).to_vec();
        out.extend_from_slice(&data);
        assert_eq!(out, Response::Data(data).encode());
        assert_eq!(Response::decode(&out), Ok(Response::Data(vec![7u8; 1024])));
    }

    #[test]
    fn responses_are_told_briefly() {
        assert_eq!(Response::Data(vec![0; 1024]).brief(), "1024 bytes of data");
        assert_eq!(Response::Done.brief(), "Done");
        let error = Response::Error { code: BlockErrorCode::OutOfRange, message: "past the end".into() };
        assert_eq!(error.brief(), "error OutOfRange: past the end");
        let info = Response::Info { sectors: 8, sector_size: 512, read_only: false };
        assert_eq!(info.brief(), "Info { sectors: 8, sector_size: 512, read_only: false }");
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Info,
            Request::Read { sector: 0, count: 1 },
            Request::Read { sector: u64::MAX, count: MAX_SECTORS_PER_REQUEST },
            Request::Write { sector: 7, data: (0..512).map(|i| i as u8).collect() },
            Request::Write { sector: 1 << 40, data: vec![0xa5; MAX_DATA_BYTES] },
            Request::Flush,
        ];
        for request in requests {
            let bytes = request.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            assert_eq!(Request::decode(&bytes), Ok(request));
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            Response::Info { sectors: 2048, sector_size: SECTOR_SIZE, read_only: false },
            Response::Info { sectors: u64::MAX, sector_size: SECTOR_SIZE, read_only: true },
            Response::Data(vec![]),
            Response::Data(vec![7; MAX_DATA_BYTES]),
            Response::Done,
            Response::error(BlockErrorCode::OutOfRange, "sectors 10..12 past the end (10 sectors)"),
            Response::error(BlockErrorCode::ReadOnly, ""),
            Response::error(BlockErrorCode::DeviceError, "I/O error"),
            Response::error(BlockErrorCode::BadRequest, "ünïcödé"),
            Response::error(BlockErrorCode::Unsupported, "no"),
        ];
        for response in responses {
            let bytes = response.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            assert_eq!(Response::decode(&bytes), Ok(response));
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        assert_eq!(
            Request::Read { sector: 0x0102, count: 3 }.encode(),
            [0x02, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]
        );
        assert_eq!(Response::error(BlockErrorCode::ReadOnly, "ro").encode(), [0x84, 2, 2, 0, 0, 0, b'r', b'o']);
        assert_eq!(
            Response::Info { sectors: 1, sector_size: 512, read_only: true }.encode(),
            [0x81, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 1]
        );
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let Ok(Response::Error { message, .. }) =
            Response::decode(&Response::error(BlockErrorCode::DeviceError, long).encode())
        else {
            panic!("an error response");
        };
        assert_eq!(message, "é".repeat(MAX_ERROR_MESSAGE_BYTES / 2));
    }

    #[test]
    fn every_truncation_is_refused() {
        let messages = [
            Request::Read { sector: 9, count: 2 }.encode(),
            Request::Write { sector: 9, data: vec![1; 1024] }.encode(),
            Response::Info { sectors: 9, sector_size: 512, read_only: false }.encode(),
            Response::Data(vec![1; 100]).encode(),
            Response::error(BlockErrorCode::DeviceError, "gone").encode(),
        ];
        for (i, bytes) in messages.iter().enumerate() {
            for cut in 0..bytes.len() {
                let short = &bytes[..cut];
                let error = if i < 2 { Request::decode(short).err() } else { Response::decode(short).err() };
                match error {
                    Some(DecodeError::Empty) => assert_eq!(cut, 0),
                    Some(DecodeError::Truncated { .. }) => {}
                    other => panic!("message {i} cut to {cut} bytes: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Request::decode(&[0x42]), Err(DecodeError::UnknownTag { kind: "block request", tag: 0x42 }));
        assert_eq!(Request::decode(&[0x83]), Err(DecodeError::UnknownTag { kind: "block request", tag: 0x83 }));
        assert_eq!(Request::decode(&[TAG_INFO, 0]), Err(DecodeError::TrailingBytes { count: 1 }));
        assert_eq!(Request::decode(&[TAG_FLUSH, 1, 2]), Err(DecodeError::TrailingBytes { count: 2 }));

        let zero = Request::Read { sector: 0, count: 0 }.encode();
        assert!(matches!(Request::decode(&zero), Err(DecodeError::Invalid { field: "sector count", .. })));
        let many = Request::Read { sector: 0, count: MAX_SECTORS_PER_REQUEST + 1 }.encode();
        assert!(matches!(Request::decode(&many), Err(DecodeError::Oversized { field: "sector count", .. })));

        let partial = Request::Write { sector: 0, data: vec![0; 500] }.encode();
        let e = Request::decode(&partial).expect_err("partial sector");
        assert!(e.to_string().contains("500 bytes is not a positive whole number of 512-byte sectors"), "{e}");
        let empty = Request::Write { sector: 0, data: vec![] }.encode();
        assert!(matches!(Request::decode(&empty), Err(DecodeError::Invalid { .. })));
        let big = Request::Write { sector: 0, data: vec![0; MAX_DATA_BYTES + 512] }.encode();
        assert_eq!(
            Request::decode(&big),
            Err(DecodeError::Oversized {
                field: "write data",
                len: (MAX_DATA_BYTES + 512) as u64,
                max: MAX_DATA_BYTES as u64
            })
        );
        // A length that claims more than the message has.
        let mut lying = Request::Write { sector: 0, data: vec![0; 512] }.encode();
        lying.truncate(lying.len() - 1);
        assert!(matches!(Request::decode(&lying), Err(DecodeError::Truncated { field: "write data", .. })));
        // A huge length field is refused before anything is allocated.
        let mut huge = vec![TAG_WRITE];
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Request::decode(&huge), Err(DecodeError::Oversized { .. })));
    }

    #[test]
    fn malformed_responses_say_what_is_wrong() {
        assert_eq!(Response::decode(&[0x01]), Err(DecodeError::UnknownTag { kind: "block response", tag: 0x01 }));
        let mut info = Response::Info { sectors: 1, sector_size: 512, read_only: false }.encode();
        *info.last_mut().expect("flag") = 2;
        assert!(matches!(Response::decode(&info), Err(DecodeError::Invalid { field: "read-only flag", .. })));
        let mut error = Response::error(BlockErrorCode::OutOfRange, "x").encode();
        error[1] = 0;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error code", .. })));
        let mut error = Response::error(BlockErrorCode::OutOfRange, "x").encode();
        *error.last_mut().expect("message") = 0xff;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error message", .. })));
        let mut done = Response::Done.encode();
        done.push(0);
        assert_eq!(Response::decode(&done), Err(DecodeError::TrailingBytes { count: 1 }));
    }
}
