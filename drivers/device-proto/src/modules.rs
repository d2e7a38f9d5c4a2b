//! The module-store protocol (connection [`CONNECTION`]): the kernel keeps the native code it
//! compiled for this machine's CPU in the module store, a service component, under a key that
//! names the wasm (its SHA-256) and everything the code depends on (the artifact key: Wasmtime
//! version, engine settings, instrumentation, target, CPU features).
//!
//! | message | bytes |
//! |---|---|
//! | [`Request::Get`] | `01`, offset: u64, key length: u32, key |
//! | [`Request::Put`] | `02`, total: u64, offset: u64, key length: u32, key, length: u32, data |
//! | [`Request::Keep`] | `03`, count: u32, then count times: key length: u32, key |
//! | [`Response::Chunk`] | `81`, total: u64, length: u32, data |
//! | [`Response::Missing`] | `82` |
//! | [`Response::Accepted`] | `83` |
//! | [`Response::Stored`] | `84` |
//! | [`Response::Error`] | `85`, code: u8 ([`ModulesErrorCode`]), length: u32, UTF-8 message |
//! | [`Response::Kept`] | `86` |
//!
//! An entry is larger than one IPC message, so it travels in chunks of at most [`MAX_CHUNK_BYTES`]:
//! a `Get` at offset 0 answers the first chunk and the entry's total size, and the client asks for
//! the rest by offset. A `Put` sends the chunks in order; the store keeps them in memory, answers
//! `Accepted` for each but the last, and writes the entry durably when the last arrives, answering
//! `Stored` only once it is on the disk. Integers are little-endian.
//!
//! The store is bounded by its disk. Before anything else the kernel names, in `Keep` messages of
//! at most [`MAX_KEEP_KEYS`] keys each, every key the running system's manifest references (each
//! component's wasm compiled for this CPU); when a put does not fit, the store evicts every entry
//! not named, and refuses (`Full`) only when the named entries and the new one do not fit
//! together.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::wire::{Reader, error_message, put_bytes};
use crate::{DecodeError, MAX_MESSAGE_BYTES};

/// The manifest connection a module store serves.
pub const CONNECTION: &str = "modules";

/// The most bytes of an entry one message carries.
pub const MAX_CHUNK_BYTES: usize = 60 * 1024;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 400;

/// The most keys one `Keep` message names (at the longest keys, it still fits one IPC message).
pub const MAX_KEEP_KEYS: usize = 128;

/// The largest entry, in bytes (the compiler component's own artifact is about 70 MB; an
/// ordinary component's a few hundred KB).
pub const MAX_ENTRY_BYTES: u64 = 256 << 20;

const TAG_GET: u8 = 0x01;
const TAG_PUT: u8 = 0x02;
const TAG_KEEP: u8 = 0x03;
const TAG_CHUNK: u8 = 0x81;
const TAG_MISSING: u8 = 0x82;
const TAG_ACCEPTED: u8 = 0x83;
const TAG_STORED: u8 = 0x84;
const TAG_ERROR: u8 = 0x85;
const TAG_KEPT: u8 = 0x86;

/// A request to the module store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The entry `key`, from byte `offset` on.
    Get {
        /// The entry's key.
        key: String,
        /// Where the chunk starts.
        offset: u64,
    },
    /// A chunk of the entry `key`, which is `total` bytes long in all.
    Put {
        /// The entry's key.
        key: String,
        /// The entry's whole size.
        total: u64,
        /// Where this chunk starts: 0 for the first, then the end of the one before.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
    },
    /// Entries the running system references: a full store does not evict them (added to the
    /// keys named before).
    Keep {
        /// Their keys (at most [`MAX_KEEP_KEYS`]).
        keys: Vec<String>,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ModulesErrorCode {
    /// The request was malformed, out of order, or broke a limit of the protocol.
    BadRequest = 1,
    /// The entry is on the disk, but its bytes do not match its checksum.
    Corrupt = 2,
    /// The store has no room for the entry.
    Full = 3,
    /// The disk failed.
    DeviceError = 4,
}

impl ModulesErrorCode {
    fn from_u8(code: u8) -> Option<ModulesErrorCode> {
        Some(match code {
            1 => ModulesErrorCode::BadRequest,
            2 => ModulesErrorCode::Corrupt,
            3 => ModulesErrorCode::Full,
            4 => ModulesErrorCode::DeviceError,
            _ => return None,
        })
    }
}

/// The module store's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A chunk of the entry asked for, and the entry's whole size.
    Chunk {
        /// The entry's whole size.
        total: u64,
        /// The bytes from the offset asked for (at most [`MAX_CHUNK_BYTES`]).
        data: Vec<u8>,
    },
    /// There is no entry with that key.
    Missing,
    /// A chunk of a `Put` that is not the last was taken.
    Accepted,
    /// The last chunk of a `Put` arrived and the entry is durably on the disk.
    Stored,
    /// The keys of a `Keep` are noted.
    Kept,
    /// The request failed.
    Error {
        /// Why.
        code: ModulesErrorCode,
        /// In words.
        message: String,
    },
}

fn key(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let key = r.bytes("key", MAX_KEY_BYTES)?;
    if key.is_empty() {
        return Err(DecodeError::Invalid { field: "key", reason: "empty".into() });
    }
    String::from_utf8(key.to_vec())
        .map_err(|e| DecodeError::Invalid { field: "key", reason: alloc::format!("not UTF-8 ({e})") })
}

impl Request {
    /// The message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Get { key, offset } => {
                let mut out = vec![TAG_GET];
                out.extend_from_slice(&offset.to_le_bytes());
                put_bytes(&mut out, key.as_bytes());
                out
            }
            Request::Put { key, total, offset, data } => {
                let mut out = Vec::with_capacity(25 + key.len() + data.len());
                out.push(TAG_PUT);
                out.extend_from_slice(&total.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                put_bytes(&mut out, key.as_bytes());
                put_bytes(&mut out, data);
                out
            }
            Request::Keep { keys } => {
                let mut out = vec![TAG_KEEP];
                out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
                for key in keys {
                    put_bytes(&mut out, key.as_bytes());
                }
                out
            }
        }
    }

    /// Decodes and checks a request: a known tag, every field present, no bytes left over, a key
    /// of 1 to [`MAX_KEY_BYTES`] bytes of UTF-8, a chunk of at most [`MAX_CHUNK_BYTES`] that lies
    /// inside an entry of at most [`MAX_ENTRY_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = match r.tag()? {
            TAG_GET => {
                let offset = r.u64("offset")?;
                Request::Get { key: key(&mut r)?, offset }
            }
            TAG_PUT => {
                let total = r.u64("total")?;
                let offset = r.u64("offset")?;
                let key = key(&mut r)?;
                let data = r.bytes("data", MAX_CHUNK_BYTES)?.to_vec();
                if total > MAX_ENTRY_BYTES {
                    return Err(DecodeError::Oversized { field: "total", len: total, max: MAX_ENTRY_BYTES });
                }
                if offset.checked_add(data.len() as u64).is_none_or(|end| end > total) {
                    return Err(DecodeError::Invalid {
                        field: "offset",
                        reason: alloc::format!("a chunk of {} bytes at {offset} ends past {total}", data.len()),
                    });
                }
                Request::Put { key, total, offset, data }
            }
            TAG_KEEP => {
                let count = r.u32("count")?;
                if count as usize > MAX_KEEP_KEYS {
                    return Err(DecodeError::Oversized {
                        field: "count",
                        len: count.into(),
                        max: MAX_KEEP_KEYS as u64,
                    });
                }
                let keys = (0..count).map(|_| key(&mut r)).collect::<Result<Vec<_>, _>>()?;
                Request::Keep { keys }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "module-store request", tag }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Chunk { total, data } => {
                let mut out = Vec::with_capacity(13 + data.len());
                out.push(TAG_CHUNK);
                out.extend_from_slice(&total.to_le_bytes());
                put_bytes(&mut out, data);
                out
            }
            Response::Missing => vec![TAG_MISSING],
            Response::Accepted => vec![TAG_ACCEPTED],
            Response::Stored => vec![TAG_STORED],
            Response::Kept => vec![TAG_KEPT],
            Response::Error { code, message } => error_message(TAG_ERROR, *code as u8, message),
        }
    }

    /// Decodes and checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let response = match r.tag()? {
            TAG_CHUNK => {
                let total = r.u64("total")?;
                Response::Chunk { total, data: r.bytes("data", MAX_CHUNK_BYTES)?.to_vec() }
            }
            TAG_MISSING => Response::Missing,
            TAG_ACCEPTED => Response::Accepted,
            TAG_STORED => Response::Stored,
            TAG_KEPT => Response::Kept,
            TAG_ERROR => {
                let (code, message) = r.error("module-store", ModulesErrorCode::from_u8)?;
                Response::Error { code, message }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "module-store response", tag }),
        };
        r.finish()?;
        Ok(response)
    }
}

const _: () = assert!(MAX_CHUNK_BYTES + MAX_KEY_BYTES + 64 <= MAX_MESSAGE_BYTES, "a chunk fits one IPC message");
const _: () = assert!(5 + MAX_KEEP_KEYS * (4 + MAX_KEY_BYTES) <= MAX_MESSAGE_BYTES, "a keep list fits one IPC message");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let requests = [
            Request::Get { key: "k".into(), offset: 0 },
            Request::Get { key: "a".repeat(MAX_KEY_BYTES), offset: 1 << 40 },
            Request::Put { key: "k".into(), total: 3, offset: 0, data: vec![1, 2, 3] },
            Request::Put { key: "k".into(), total: 1 << 20, offset: 60 * 1024, data: vec![7; MAX_CHUNK_BYTES] },
            Request::Keep { keys: Vec::new() },
            Request::Keep { keys: vec!["a".repeat(MAX_KEY_BYTES); MAX_KEEP_KEYS] },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request.clone()), "{request:?}");
            assert!(request.encode().len() <= MAX_MESSAGE_BYTES);
        }
        let responses = [
            Response::Chunk { total: 10, data: vec![9; 10] },
            Response::Missing,
            Response::Accepted,
            Response::Stored,
            Response::Kept,
            Response::Error { code: ModulesErrorCode::Full, message: "full: 10 KiB free".into() },
        ];
        for response in responses {
            assert_eq!(Response::decode(&response.encode()), Ok(response.clone()), "{response:?}");
        }
    }

    #[test]
    fn bad_requests_are_named() {
        let put = |total: u64, offset: u64, len: usize| {
            Request::Put { key: "k".into(), total, offset, data: vec![0; len] }.encode()
        };
        assert_eq!(
            Request::decode(&put(4, 2, 3)).expect_err("past the end").to_string(),
            "invalid offset: a chunk of 3 bytes at 2 ends past 4"
        );
        assert!(matches!(
            Request::decode(&put(MAX_ENTRY_BYTES + 1, 0, 1)),
            Err(DecodeError::Oversized { field: "total", .. })
        ));
        assert!(matches!(Request::decode(&put(u64::MAX, u64::MAX, 1)), Err(DecodeError::Oversized { .. })));
        let mut long = Request::Get { key: "k".into(), offset: 0 }.encode();
        long.push(0);
        assert_eq!(Request::decode(&long), Err(DecodeError::TrailingBytes { count: 1 }));
        let empty_key = Request::Get { key: String::new(), offset: 0 }.encode();
        assert_eq!(Request::decode(&empty_key).expect_err("empty key").to_string(), "invalid key: empty");
        let too_long = Request::Get { key: "a".repeat(MAX_KEY_BYTES + 1), offset: 0 }.encode();
        assert!(matches!(Request::decode(&too_long), Err(DecodeError::Oversized { field: "key", .. })));
        let too_many = Request::Keep { keys: vec!["k".into(); MAX_KEEP_KEYS + 1] }.encode();
        assert!(matches!(Request::decode(&too_many), Err(DecodeError::Oversized { field: "count", .. })));
        let empty_kept = Request::Keep { keys: vec!["k".into(), String::new()] }.encode();
        assert_eq!(Request::decode(&empty_kept).expect_err("empty key").to_string(), "invalid key: empty");
        assert_eq!(Request::decode(&[0x7f]), Err(DecodeError::UnknownTag { kind: "module-store request", tag: 0x7f }));
        assert_eq!(Response::decode(&[]), Err(DecodeError::Empty));
        assert!(Response::decode(&[TAG_ERROR, 9, 0, 0, 0, 0]).is_err());
    }
}
