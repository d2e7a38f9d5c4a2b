//! The files protocol (connection [`CONNECTION`]): a file system service's volume, reached by
//! paths and by the handles its opens return.
//!
//! Paths are relative to the volume's root, `/`-separated, without `.` or `..` components (the
//! client resolves those against what it was granted); the empty path is the root. The service
//! follows the symbolic links a path passes through; whether it follows one that the path ends
//! at is the request's choice ([`OpenFlags::FOLLOW`], `follow`): requests that make, remove or
//! rename an entry never do.
//!
//! | message | bytes |
//! |---|---|
//! | [`Request::Open`] | `01`, flags: u32 ([`OpenFlags`]), path |
//! | [`Request::Read`] | `02`, handle: u64, offset: u64, length: u32 |
//! | [`Request::Write`] | `03`, handle: u64, offset: u64 ([`APPEND`] for the end), data |
//! | [`Request::SetSize`] | `04`, handle: u64, size: u64 |
//! | [`Request::Sync`] | `05`, handle: u64 |
//! | [`Request::Close`] | `06`, handle: u64 |
//! | [`Request::Stat`] | `07`, follow: u8 (0 or 1), path |
//! | [`Request::StatHandle`] | `08`, handle: u64 |
//! | [`Request::ReadDir`] | `09`, start: u32, path |
//! | [`Request::CreateDir`] | `0a`, path |
//! | [`Request::RemoveDir`] | `0b`, path |
//! | [`Request::Unlink`] | `0c`, path |
//! | [`Request::Rename`] | `0d`, from path, to path |
//! | [`Request::Volume`] | `0e` |
//! | [`Request::SetTimes`] | `0f`, follow: u8, accessed, modified (each a [`SetTime`]: u8 0 keep, 1 now, 2 at, then nanoseconds: u64), path |
//! | [`Request::Symlink`] | `10`, target path, path |
//! | [`Request::ReadLink`] | `11`, path |
//! | [`Response::Opened`] | `81`, handle: u64, kind: u8 ([`Kind`]), size: u64 |
//! | [`Response::Data`] | `82`, data |
//! | [`Response::Written`] | `83`, count: u32 |
//! | [`Response::Done`] | `84` |
//! | [`Response::Stat`] | `85`, kind: u8, size: u64, modified: u64, accessed: u64 ([`NO_TIME`] for none) |
//! | [`Response::Entries`] | `86`, end: u8 (0 or 1), count: u32, then per entry kind: u8, size: u64, name |
//! | [`Response::Volume`] | `87`, block size: u32, blocks: u64 |
//! | [`Response::Error`] | `88`, code: u8 ([`FsErrorCode`]), length: u32, UTF-8 message |
//!
//! A path or name is a u32 length and that many UTF-8 bytes, without NUL. Integers are
//! little-endian; times are nanoseconds since the Unix epoch.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::wire::{Reader, error_message, put_bytes};
use crate::{DecodeError, MAX_MESSAGE_BYTES};

/// The manifest connection a file system service serves.
pub const CONNECTION: &str = "files";

/// The most data one read or write carries: 32 KiB, as the block protocol's.
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// The longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// The longest name of one directory entry, in bytes (littlefs's limit).
pub const MAX_NAME_BYTES: usize = 255;

/// The most entries one [`Response::Entries`] carries.
pub const MAX_ENTRIES: usize = 64;

/// A write's offset that means "at the end of the file" (an append).
pub const APPEND: u64 = u64::MAX;

/// A time the volume does not know (of an entry made by a tool that keeps none).
pub const NO_TIME: u64 = u64::MAX;

/// How a [`Request::SetTimes`] changes one timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// Left as it is.
    Keep,
    /// The service's clock, now.
    Now,
    /// This many nanoseconds since the Unix epoch.
    At(u64),
}

// The largest messages fit in one IPC message.
const _: () = assert!(1 + 8 + 8 + 4 + MAX_DATA_BYTES <= MAX_MESSAGE_BYTES);
const _: () = assert!(1 + 1 + 4 + MAX_ENTRIES * (1 + 8 + 4 + MAX_NAME_BYTES) <= MAX_MESSAGE_BYTES);
// A rename: its tag byte and two paths.
const _: () = assert!(2 * (4 + MAX_PATH_BYTES) < MAX_MESSAGE_BYTES);

/// How an [`Open`](Request::Open) opens: a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags(u32);

impl OpenFlags {
    /// Reads are allowed.
    pub const READ: OpenFlags = OpenFlags(1);
    /// Writes are allowed.
    pub const WRITE: OpenFlags = OpenFlags(2);
    /// A missing file is created (needs [`WRITE`](OpenFlags::WRITE)).
    pub const CREATE: OpenFlags = OpenFlags(4);
    /// With [`CREATE`](OpenFlags::CREATE): fails if the file exists.
    pub const EXCLUSIVE: OpenFlags = OpenFlags(8);
    /// The file is cut to 0 bytes (needs [`WRITE`](OpenFlags::WRITE)).
    pub const TRUNCATE: OpenFlags = OpenFlags(16);
    /// The path must be a directory.
    pub const DIRECTORY: OpenFlags = OpenFlags(32);
    /// A symbolic link at the end of the path is followed (without: opening one fails with
    /// [`FsErrorCode::Loop`], as `O_NOFOLLOW`).
    pub const FOLLOW: OpenFlags = OpenFlags(64);
    const ALL: u32 = 127;

    /// The flags as their wire bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags of `bits`, or `None` when a bit names no flag.
    pub const fn from_bits(bits: u32) -> Option<OpenFlags> {
        if bits & !OpenFlags::ALL == 0 { Some(OpenFlags(bits)) } else { None }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: OpenFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for OpenFlags {
    type Output = OpenFlags;
    fn bitor(self, other: OpenFlags) -> OpenFlags {
        OpenFlags(self.0 | other.0)
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A regular file.
    File = 1,
    /// A directory.
    Directory = 2,
    /// A symbolic link (its size is its target's length).
    Symlink = 3,
}

impl Kind {
    fn from_u8(kind: u8) -> Result<Kind, DecodeError> {
        match kind {
            1 => Ok(Kind::File),
            2 => Ok(Kind::Directory),
            3 => Ok(Kind::Symlink),
            other => Err(DecodeError::Invalid { field: "kind", reason: format!("{other} names no kind") }),
        }
    }
}

/// Why a request failed. The names follow `wasi:filesystem`'s error codes where one fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FsErrorCode {
    /// No such file or directory.
    NoEntry = 1,
    /// The path exists already.
    Exists = 2,
    /// A component of the path is not a directory, or a directory was required.
    NotDirectory = 3,
    /// The path is a directory where a file was required.
    IsDirectory = 4,
    /// The directory is not empty.
    NotEmpty = 5,
    /// The request made no sense for its target (a bad offset, flags that do not go together).
    Invalid = 6,
    /// The volume is full.
    NoSpace = 7,
    /// A name is longer than [`MAX_NAME_BYTES`].
    NameTooLong = 8,
    /// The handle is not open, or not open for what was asked (a write to a read-only handle).
    BadHandle = 9,
    /// The volume is served read-only.
    ReadOnly = 10,
    /// The disk failed.
    Io = 11,
    /// The volume's structures do not check out.
    Corrupt = 12,
    /// The service has as many handles open as it keeps.
    TooManyOpen = 13,
    /// The request was malformed or broke a limit of the protocol.
    BadRequest = 14,
    /// The volume's format cannot do it (links, for example).
    Unsupported = 15,
    /// An offset or size beyond what a file can hold.
    Overflow = 16,
    /// Too many symbolic links on the way, or one at the end of a path that may not follow it.
    Loop = 17,
    /// A symbolic link would lead outside the volume (an absolute target, or `..` above the
    /// root).
    NotPermitted = 18,
}

impl FsErrorCode {
    fn from_u8(code: u8) -> Option<FsErrorCode> {
        use FsErrorCode::*;
        const ALL: [FsErrorCode; 18] = [
            NoEntry,
            Exists,
            NotDirectory,
            IsDirectory,
            NotEmpty,
            Invalid,
            NoSpace,
            NameTooLong,
            BadHandle,
            ReadOnly,
            Io,
            Corrupt,
            TooManyOpen,
            BadRequest,
            Unsupported,
            Overflow,
            Loop,
            NotPermitted,
        ];
        ALL.into_iter().find(|c| *c as u8 == code)
    }
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Opens `path` (a file, or a directory for [`Stat`](Request::StatHandle) and nothing
    /// else): answered with [`Response::Opened`].
    Open {
        /// How.
        flags: OpenFlags,
        /// What.
        path: String,
    },
    /// Up to `len` bytes (at most [`MAX_DATA_BYTES`]) from `offset`: answered with
    /// [`Response::Data`], shorter at the end of the file.
    Read {
        /// An open file's handle.
        handle: u64,
        /// Where from.
        offset: u64,
        /// How many bytes at most.
        len: u32,
    },
    /// `data` (at most [`MAX_DATA_BYTES`]) at `offset` ([`APPEND`]: at the end): answered with
    /// [`Response::Written`]. Durable only after a [`Sync`](Request::Sync) or a
    /// [`Close`](Request::Close).
    Write {
        /// An open file's handle, opened for writing.
        handle: u64,
        /// Where to.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Cuts or extends (with zeros) the file to `size` bytes: answered with
    /// [`Response::Done`].
    SetSize {
        /// An open file's handle, opened for writing.
        handle: u64,
        /// The new size.
        size: u64,
    },
    /// Makes the file's writes durable: answered with [`Response::Done`] once they are.
    Sync {
        /// An open file's handle.
        handle: u64,
    },
    /// Closes the handle, making its writes durable: answered with [`Response::Done`].
    Close {
        /// An open handle.
        handle: u64,
    },
    /// What `path` names: answered with [`Response::Stat`].
    Stat {
        /// The path.
        path: String,
        /// Whether a symbolic link at its end is followed (else it is described itself).
        follow: bool,
    },
    /// What an open handle names: answered with [`Response::Stat`].
    StatHandle {
        /// The handle.
        handle: u64,
    },
    /// Sets the access and modification times of `path`: answered with [`Response::Done`].
    SetTimes {
        /// The path.
        path: String,
        /// Whether a symbolic link at its end is followed (else its own times are set).
        follow: bool,
        /// The new access time.
        accessed: SetTime,
        /// The new modification time.
        modified: SetTime,
    },
    /// Makes `path` a symbolic link to `target` (relative, resolved from the link's directory):
    /// answered with [`Response::Done`].
    Symlink {
        /// What the link names.
        target: String,
        /// The link.
        path: String,
    },
    /// The target of the symbolic link `path`: answered with [`Response::Data`].
    ReadLink {
        /// The link.
        path: String,
    },
    /// The directory's entries from the `start`th on, without `.` and `..`: answered with
    /// [`Response::Entries`].
    ReadDir {
        /// The first entry wanted (0 for the first).
        start: u32,
        /// The directory.
        path: String,
    },
    /// Creates a directory: answered with [`Response::Done`].
    CreateDir {
        /// Its path.
        path: String,
    },
    /// Removes an empty directory: answered with [`Response::Done`].
    RemoveDir {
        /// Its path.
        path: String,
    },
    /// Removes a file: answered with [`Response::Done`].
    Unlink {
        /// Its path.
        path: String,
    },
    /// Moves a file or directory, replacing a file or empty directory at `to`: answered with
    /// [`Response::Done`].
    Rename {
        /// The path now.
        from: String,
        /// The new path.
        to: String,
    },
    /// The volume's size: answered with [`Response::Volume`].
    Volume,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// A file's size in bytes (0 for a directory).
    pub size: u64,
    /// Its name.
    pub name: String,
}

/// The service's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The path is open as `handle`.
    Opened {
        /// The handle, for later requests.
        handle: u64,
        /// What was opened.
        kind: Kind,
        /// A file's size (0 for a directory).
        size: u64,
    },
    /// Bytes read.
    Data(Vec<u8>),
    /// How many bytes a write wrote.
    Written(u32),
    /// The request was done.
    Done,
    /// What a path or handle names.
    Stat {
        /// What it is.
        kind: Kind,
        /// A file's size in bytes (0 for a directory).
        size: u64,
        /// When its data last changed (a directory: when it was made), if the volume knows.
        modified: Option<u64>,
        /// When it was last accessed, as far as the service keeps track (it does not count
        /// reads), if the volume knows.
        accessed: Option<u64>,
    },
    /// Directory entries.
    Entries {
        /// The entries.
        entries: Vec<Entry>,
        /// Whether these are the last.
        end: bool,
    },
    /// The volume.
    Volume {
        /// Bytes per block.
        block_size: u32,
        /// Blocks in all.
        blocks: u64,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        code: FsErrorCode,
        /// What happened, in words.
        message: String,
    },
}

impl Response {
    /// An [`Error`](Response::Error) response.
    pub fn error(code: FsErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }

    /// The response, briefly, for an error message: data by its length, not its bytes.
    pub fn brief(&self) -> String {
        match self {
            Response::Data(data) => format!("{} bytes of data", data.len()),
            Response::Entries { entries, end } => format!("{} entries (end: {end})", entries.len()),
            Response::Error { code, message } => format!("error {code:?}: {message}"),
            other => format!("{other:?}"),
        }
    }
}

const TAG_OPEN: u8 = 0x01;
const TAG_READ: u8 = 0x02;
const TAG_WRITE: u8 = 0x03;
const TAG_SET_SIZE: u8 = 0x04;
const TAG_SYNC: u8 = 0x05;
const TAG_CLOSE: u8 = 0x06;
const TAG_STAT: u8 = 0x07;
const TAG_STAT_HANDLE: u8 = 0x08;
const TAG_READ_DIR: u8 = 0x09;
const TAG_CREATE_DIR: u8 = 0x0a;
const TAG_REMOVE_DIR: u8 = 0x0b;
const TAG_UNLINK: u8 = 0x0c;
const TAG_RENAME: u8 = 0x0d;
const TAG_VOLUME: u8 = 0x0e;
const TAG_SET_TIMES: u8 = 0x0f;
const TAG_SYMLINK: u8 = 0x10;
const TAG_READ_LINK: u8 = 0x11;
const TAG_OPENED: u8 = 0x81;
const TAG_DATA: u8 = 0x82;
const TAG_WRITTEN: u8 = 0x83;
const TAG_DONE: u8 = 0x84;
const TAG_STAT_REPLY: u8 = 0x85;
const TAG_ENTRIES: u8 = 0x86;
const TAG_VOLUME_REPLY: u8 = 0x87;
const TAG_ERROR: u8 = 0x88;

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn string(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<String, DecodeError> {
    let bytes = r.bytes(field, max)?;
    if bytes.contains(&0) {
        return Err(DecodeError::Invalid { field, reason: "holds a NUL byte".into() });
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::Invalid { field, reason: format!("not UTF-8 ({e})") })
}

fn put_time(out: &mut Vec<u8>, time: SetTime) {
    let (tag, ns) = match time {
        SetTime::Keep => (0, 0),
        SetTime::Now => (1, 0),
        SetTime::At(ns) => (2, ns),
    };
    out.push(tag);
    put_u64(out, ns);
}

fn set_time(r: &mut Reader<'_>, field: &'static str) -> Result<SetTime, DecodeError> {
    let tag = r.u8(field)?;
    let ns = r.u64(field)?;
    match tag {
        0 => Ok(SetTime::Keep),
        1 => Ok(SetTime::Now),
        2 => Ok(SetTime::At(ns)),
        other => Err(DecodeError::Invalid { field, reason: format!("{other} is not 0 (keep), 1 (now) or 2 (at)") }),
    }
}

fn flag(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::Invalid { field, reason: format!("{other} is neither 0 nor 1") }),
    }
}

fn time(ns: u64) -> Option<u64> {
    (ns != NO_TIME).then_some(ns)
}

impl Request {
    /// The request as bytes. (An oversized write or path encodes, and
    /// [`decode`](Request::decode) then refuses it.)
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::Open { flags, path } => {
                out.push(TAG_OPEN);
                out.extend_from_slice(&flags.bits().to_le_bytes());
                put_bytes(&mut out, path.as_bytes());
            }
            Request::Read { handle, offset, len } => {
                out.push(TAG_READ);
                put_u64(&mut out, *handle);
                put_u64(&mut out, *offset);
                out.extend_from_slice(&len.to_le_bytes());
            }
            Request::Write { handle, offset, data } => {
                out.reserve(21 + data.len());
                out.push(TAG_WRITE);
                put_u64(&mut out, *handle);
                put_u64(&mut out, *offset);
                put_bytes(&mut out, data);
            }
            Request::SetSize { handle, size } => {
                out.push(TAG_SET_SIZE);
                put_u64(&mut out, *handle);
                put_u64(&mut out, *size);
            }
            Request::Sync { handle } | Request::Close { handle } | Request::StatHandle { handle } => {
                out.push(match self {
                    Request::Sync { .. } => TAG_SYNC,
                    Request::Close { .. } => TAG_CLOSE,
                    _ => TAG_STAT_HANDLE,
                });
                put_u64(&mut out, *handle);
            }
            Request::ReadDir { start, path } => {
                out.push(TAG_READ_DIR);
                out.extend_from_slice(&start.to_le_bytes());
                put_bytes(&mut out, path.as_bytes());
            }
            Request::Stat { path, follow } => {
                out.push(TAG_STAT);
                out.push(u8::from(*follow));
                put_bytes(&mut out, path.as_bytes());
            }
            Request::CreateDir { path }
            | Request::ReadLink { path }
            | Request::RemoveDir { path }
            | Request::Unlink { path } => {
                out.push(match self {
                    Request::ReadLink { .. } => TAG_READ_LINK,
                    Request::CreateDir { .. } => TAG_CREATE_DIR,
                    Request::RemoveDir { .. } => TAG_REMOVE_DIR,
                    _ => TAG_UNLINK,
                });
                put_bytes(&mut out, path.as_bytes());
            }
            Request::Rename { from, to } => {
                out.push(TAG_RENAME);
                put_bytes(&mut out, from.as_bytes());
                put_bytes(&mut out, to.as_bytes());
            }
            Request::Volume => out.push(TAG_VOLUME),
            Request::SetTimes { path, follow, accessed, modified } => {
                out.push(TAG_SET_TIMES);
                out.push(u8::from(*follow));
                put_time(&mut out, *accessed);
                put_time(&mut out, *modified);
                put_bytes(&mut out, path.as_bytes());
            }
            Request::Symlink { target, path } => {
                out.push(TAG_SYMLINK);
                put_bytes(&mut out, target.as_bytes());
                put_bytes(&mut out, path.as_bytes());
            }
        }
        out
    }

    /// Decodes and checks a request: known tag, every field present, no bytes left over, known
    /// flags, a read or write of at most [`MAX_DATA_BYTES`], paths of at most
    /// [`MAX_PATH_BYTES`] of UTF-8.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let path = |r: &mut Reader<'_>| string(r, "path", MAX_PATH_BYTES);
        let request = match r.tag()? {
            TAG_OPEN => {
                let bits = r.u32("open flags")?;
                let flags = OpenFlags::from_bits(bits).ok_or_else(|| DecodeError::Invalid {
                    field: "open flags",
                    reason: format!("{bits:#x} sets bits that name no flag"),
                })?;
                Request::Open { flags, path: path(&mut r)? }
            }
            TAG_READ => {
                let handle = r.u64("handle")?;
                let offset = r.u64("offset")?;
                let len = r.u32("length")?;
                if len as usize > MAX_DATA_BYTES {
                    return Err(DecodeError::Oversized {
                        field: "length",
                        len: len.into(),
                        max: MAX_DATA_BYTES as u64,
                    });
                }
                Request::Read { handle, offset, len }
            }
            TAG_WRITE => {
                let handle = r.u64("handle")?;
                let offset = r.u64("offset")?;
                let data = r.bytes("write data", MAX_DATA_BYTES)?.to_vec();
                Request::Write { handle, offset, data }
            }
            TAG_SET_SIZE => Request::SetSize { handle: r.u64("handle")?, size: r.u64("size")? },
            TAG_SYNC => Request::Sync { handle: r.u64("handle")? },
            TAG_CLOSE => Request::Close { handle: r.u64("handle")? },
            TAG_STAT => {
                let follow = flag(&mut r, "follow flag")?;
                Request::Stat { path: path(&mut r)?, follow }
            }
            TAG_STAT_HANDLE => Request::StatHandle { handle: r.u64("handle")? },
            TAG_READ_DIR => Request::ReadDir { start: r.u32("start")?, path: path(&mut r)? },
            TAG_CREATE_DIR => Request::CreateDir { path: path(&mut r)? },
            TAG_REMOVE_DIR => Request::RemoveDir { path: path(&mut r)? },
            TAG_UNLINK => Request::Unlink { path: path(&mut r)? },
            TAG_RENAME => Request::Rename { from: path(&mut r)?, to: path(&mut r)? },
            TAG_VOLUME => Request::Volume,
            TAG_SET_TIMES => {
                let follow = flag(&mut r, "follow flag")?;
                let accessed = set_time(&mut r, "access time")?;
                let modified = set_time(&mut r, "modification time")?;
                Request::SetTimes { path: path(&mut r)?, follow, accessed, modified }
            }
            TAG_SYMLINK => Request::Symlink { target: path(&mut r)?, path: path(&mut r)? },
            TAG_READ_LINK => Request::ReadLink { path: path(&mut r)? },
            tag => return Err(DecodeError::UnknownTag { kind: "files request", tag }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The response as bytes. An error message longer than the limit is cut short (at a
    /// character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Opened { handle, kind, size } => {
                out.push(TAG_OPENED);
                put_u64(&mut out, *handle);
                out.push(*kind as u8);
                put_u64(&mut out, *size);
            }
            Response::Data(data) => {
                out.reserve(5 + data.len());
                out.push(TAG_DATA);
                put_bytes(&mut out, data);
            }
            Response::Written(count) => {
                out.push(TAG_WRITTEN);
                out.extend_from_slice(&count.to_le_bytes());
            }
            Response::Done => out.push(TAG_DONE),
            Response::Stat { kind, size, modified, accessed } => {
                out.push(TAG_STAT_REPLY);
                out.push(*kind as u8);
                put_u64(&mut out, *size);
                put_u64(&mut out, modified.unwrap_or(NO_TIME));
                put_u64(&mut out, accessed.unwrap_or(NO_TIME));
            }
            Response::Entries { entries, end } => {
                out.push(TAG_ENTRIES);
                out.push(u8::from(*end));
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for entry in entries {
                    out.push(entry.kind as u8);
                    put_u64(&mut out, entry.size);
                    put_bytes(&mut out, entry.name.as_bytes());
                }
            }
            Response::Volume { block_size, blocks } => {
                out.push(TAG_VOLUME_REPLY);
                out.extend_from_slice(&block_size.to_le_bytes());
                put_u64(&mut out, *blocks);
            }
            Response::Error { code, message } => return error_message(TAG_ERROR, *code as u8, message),
        }
        out
    }

    /// Decodes and checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let response = match r.tag()? {
            TAG_OPENED => {
                let handle = r.u64("handle")?;
                let kind = Kind::from_u8(r.u8("kind")?)?;
                Response::Opened { handle, kind, size: r.u64("size")? }
            }
            TAG_DATA => Response::Data(r.bytes("data", MAX_DATA_BYTES)?.to_vec()),
            TAG_WRITTEN => Response::Written(r.u32("count")?),
            TAG_DONE => Response::Done,
            TAG_STAT_REPLY => {
                let kind = Kind::from_u8(r.u8("kind")?)?;
                let size = r.u64("size")?;
                let modified = time(r.u64("modification time")?);
                Response::Stat { kind, size, modified, accessed: time(r.u64("access time")?) }
            }
            TAG_ENTRIES => {
                let end = flag(&mut r, "end flag")?;
                let count = r.u32("entry count")?;
                if count as usize > MAX_ENTRIES {
                    return Err(DecodeError::Oversized {
                        field: "entry count",
                        len: count.into(),
                        max: MAX_ENTRIES as u64,
                    });
                }
                let mut entries = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let kind = Kind::from_u8(r.u8("kind")?)?;
                    let size = r.u64("size")?;
                    entries.push(Entry { kind, size, name: string(&mut r, "name", MAX_NAME_BYTES)? });
                }
                Response::Entries { entries, end }
            }
            TAG_VOLUME_REPLY => Response::Volume { block_size: r.u32("block size")?, blocks: r.u64("blocks")? },
            TAG_ERROR => {
                let (code, message) = r.error("files", FsErrorCode::from_u8)?;
                Response::Error { code, message }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "files response", tag }),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Open { flags: OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE, path: "a/b.txt".into() },
            Request::Open { flags: OpenFlags::DIRECTORY, path: String::new() },
            Request::Read { handle: 7, offset: 1 << 40, len: MAX_DATA_BYTES as u32 },
            Request::Write { handle: u64::MAX, offset: APPEND, data: vec![1, 2, 3] },
            Request::SetSize { handle: 1, size: 99 },
            Request::Sync { handle: 2 },
            Request::Close { handle: 3 },
            Request::Stat { path: "x".into(), follow: true },
            Request::Stat { path: String::new(), follow: false },
            Request::Symlink { target: "../t".into(), path: "d/l".into() },
            Request::ReadLink { path: "d/l".into() },
            Request::StatHandle { handle: 4 },
            Request::ReadDir { start: 5, path: "dir".into() },
            Request::CreateDir { path: "d".into() },
            Request::RemoveDir { path: "d".into() },
            Request::Unlink { path: "f".into() },
            Request::Rename { from: "f".into(), to: "g/h".into() },
            Request::Volume,
            Request::SetTimes {
                path: "f".into(),
                follow: true,
                accessed: SetTime::Keep,
                modified: SetTime::At(1 << 62),
            },
            Request::SetTimes { path: String::new(), follow: false, accessed: SetTime::Now, modified: SetTime::Now },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request.clone()), "{request:?}");
        }
    }

    #[test]
    fn responses_round_trip() {
        let entries = vec![
            Entry { kind: Kind::File, size: 12, name: "a.txt".into() },
            Entry { kind: Kind::Directory, size: 0, name: "é".repeat(100) },
        ];
        let responses = [
            Response::Opened { handle: 9, kind: Kind::File, size: 3 },
            Response::Data(vec![0; MAX_DATA_BYTES]),
            Response::Written(4096),
            Response::Done,
            Response::Stat { kind: Kind::Directory, size: 0, modified: None, accessed: None },
            Response::Stat { kind: Kind::File, size: 5, modified: Some(1_700_000_000_000_000_000), accessed: Some(0) },
            Response::Entries { entries, end: true },
            Response::Entries { entries: Vec::new(), end: false },
            Response::Volume { block_size: 4096, blocks: 1024 },
            Response::error(FsErrorCode::NotEmpty, "d: not empty"),
        ];
        for response in responses {
            let bytes = response.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            assert_eq!(Response::decode(&bytes), Ok(response.clone()), "{}", response.brief());
        }
        for code in 1..=18 {
            let code = FsErrorCode::from_u8(code).expect("every code from 1 to 18 names an error");
            assert_eq!(Response::decode(&Response::error(code, "m").encode()), Ok(Response::error(code, "m")));
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Request::decode(&[0x7f]), Err(DecodeError::UnknownTag { kind: "files request", tag: 0x7f }));
        let mut open = Request::Open { flags: OpenFlags::READ, path: "a".into() }.encode();
        open[1] = 0x80;
        let e = Request::decode(&open).unwrap_err();
        assert_eq!(e.to_string(), "invalid open flags: 0x80 sets bits that name no flag");
        let read = Request::Read { handle: 1, offset: 0, len: MAX_DATA_BYTES as u32 + 1 }.encode();
        assert!(matches!(Request::decode(&read), Err(DecodeError::Oversized { field: "length", .. })));
        let write = Request::Write { handle: 1, offset: 0, data: vec![0; MAX_DATA_BYTES + 1] }.encode();
        assert!(matches!(Request::decode(&write), Err(DecodeError::Oversized { field: "write data", .. })));
        let long = Request::Stat { path: "a".repeat(MAX_PATH_BYTES + 1), follow: true }.encode();
        assert!(matches!(Request::decode(&long), Err(DecodeError::Oversized { field: "path", .. })));
        let mut bad_utf8 = Request::Unlink { path: "ab".into() }.encode();
        bad_utf8[5] = 0xff;
        assert!(matches!(Request::decode(&bad_utf8), Err(DecodeError::Invalid { field: "path", .. })));
        let mut trailing = Request::Volume.encode();
        trailing.push(0);
        assert_eq!(Request::decode(&trailing), Err(DecodeError::TrailingBytes { count: 1 }));
        let nul = Request::Unlink { path: "a\0".into() }.encode();
        let e = Request::decode(&nul).unwrap_err();
        assert_eq!(e.to_string(), "invalid path: holds a NUL byte");
        let times =
            Request::SetTimes { path: "a".into(), follow: true, accessed: SetTime::Now, modified: SetTime::Keep };
        let mut times = times.encode();
        times[2] = 3;
        assert!(matches!(Request::decode(&times), Err(DecodeError::Invalid { field: "access time", .. })));
        times[1] = 2;
        assert!(matches!(Request::decode(&times), Err(DecodeError::Invalid { field: "follow flag", .. })));
        let cut = Request::Rename { from: "a".into(), to: "b".into() }.encode();
        assert!(matches!(Request::decode(&cut[..cut.len() - 1]), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn bad_responses_say_what_is_wrong() {
        let mut opened = Response::Opened { handle: 1, kind: Kind::File, size: 0 }.encode();
        opened[9] = 4;
        assert_eq!(Response::decode(&opened).unwrap_err().to_string(), "invalid kind: 4 names no kind");
        let mut entries = Response::Entries { entries: Vec::new(), end: true }.encode();
        entries[1] = 2;
        assert!(matches!(Response::decode(&entries), Err(DecodeError::Invalid { field: "end flag", .. })));
        let mut many = vec![TAG_ENTRIES, 1];
        many.extend_from_slice(&(MAX_ENTRIES as u32 + 1).to_le_bytes());
        assert!(matches!(Response::decode(&many), Err(DecodeError::Oversized { field: "entry count", .. })));
        let mut error = Response::error(FsErrorCode::Io, "x").encode();
        error[1] = 0;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error code", .. })));
    }

    #[test]
    fn open_flags_know_their_bits() {
        let flags = OpenFlags::WRITE | OpenFlags::CREATE;
        assert!(flags.contains(OpenFlags::WRITE) && flags.contains(OpenFlags::CREATE));
        assert!(!flags.contains(OpenFlags::READ));
        assert_eq!(OpenFlags::from_bits(flags.bits()), Some(flags));
        assert_eq!(OpenFlags::from_bits(128), None);
    }
}
