//! The files protocol ([`mica_device::files`]) served from a littlefs volume: [`Service`]
//! answers one request at a time.
//!
//! Handles are 64-bit numbers drawn from a keyed hash, so a client cannot guess another's. A
//! handle names a path: each read or write opens the file, does its work and closes it, so a
//! write is durable once it is answered (and a sync has nothing left to do). A handle follows
//! a rename made through the service; a handle whose file is removed, or replaced by a rename,
//! is closed by the service (its next use is `bad-handle`), so that it can never reach what is
//! made at that path later. At most [`MAX_OPEN`] handles are open at once; the
//! service keeps them until they are closed.
//!
//! Paths reach littlefs as they are; littlefs's binding takes ASCII names only, and paths of
//! at most 255 bytes (see `docs/files.md`).
//!
//! A symbolic link is a file holding its target, marked by the user attribute [`ATTR_LINK`]
//! (littlefs has no links of its own). The service follows the links a path passes through,
//! from the link's directory, at most [`MAX_FOLLOWS`] times, never above the volume's root (its
//! own `..`, like an absolute target, is `not-permitted`). Until the volume holds its first
//! link (the root's attribute [`ATTR_HAS_LINKS`], set before that link is made), paths are
//! taken as they are, at no cost. A cut while a link is made can leave a plain file with the
//! target as its contents: the request was not answered.
//!
//! Timestamps are a littlefs user attribute of each entry ([`ATTR_TIMES`]): both times are set
//! when a file or directory is made, the modification time again by every write, size change
//! and truncation, and either by a `SetTimes`. Reads do not change the access time (as Linux's
//! `noatime`). An entry without the attribute (made by another tool) has no times. What writes
//! do to a file's times is kept in memory and put on the volume (one commit) when a handle to
//! it is synced or closed, as Linux writes inode times back later: a stat sees them at once,
//! and a power cut before the sync loses them, not the data.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{SystemTime, UNIX_EPOCH};

use littlefs2::driver::Storage;
use littlefs2::fs::{File, Filesystem};
use littlefs2::io::{Error, SeekFrom};
use littlefs2::path::{Error as PathError, PathBuf};
use mica_device::files::{
    APPEND, Entry, FsErrorCode, Kind, MAX_DATA_BYTES, MAX_ENTRIES, MAX_NAME_BYTES, MAX_PATH_BYTES, NO_TIME, OpenFlags,
    Request, Response, SetTime,
};

use crate::volume::{BLOCK_SIZE, Failures};

/// The most handles open at once.
pub const MAX_OPEN: usize = 128;

/// The largest file littlefs holds, and so the largest offset plus length.
pub const MAX_FILE_BYTES: u64 = i32::MAX as u64;

/// The user attribute holding an entry's times: its modification time, then its access time,
/// each nanoseconds since the Unix epoch as a little-endian u64 ([`NO_TIME`]: none).
pub const ATTR_TIMES: u8 = b't';

/// An entry's times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Times {
    modified: Option<u64>,
    accessed: Option<u64>,
}

impl Times {
    fn encode(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.modified.unwrap_or(NO_TIME).to_le_bytes());
        bytes[8..].copy_from_slice(&self.accessed.unwrap_or(NO_TIME).to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Times {
        let at = |i: usize| {
            bytes
                .get(i..i + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .filter(|t| *t != NO_TIME)
        };
        Times { modified: at(0), accessed: at(8) }
    }
}

/// Times that writes changed and the volume does not hold yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    modified: u64,
    /// Set for a file made through the handle; `None`: the volume's stands.
    accessed: Option<u64>,
}

/// The user attribute that marks a file as a symbolic link (one byte, 1).
pub const ATTR_LINK: u8 = b'l';
/// The root's user attribute set once the volume has held a symbolic link (one byte, 1).
pub const ATTR_HAS_LINKS: u8 = b'L';
/// The most symbolic links followed in resolving one path (Linux's limit).
pub const MAX_FOLLOWS: usize = 40;

/// The wall clock, in nanoseconds since the Unix epoch (0 before it).
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1))
}

/// An open handle: what it names, and how it was opened.
struct Open {
    kind: Kind,
    flags: OpenFlags,
    path: String,
}

/// The service: a mounted volume and the handles open on it.
pub struct Service<'fs, 'a, S: Storage> {
    fs: &'fs Filesystem<'a, S>,
    failures: Failures,
    open: HashMap<u64, Open>,
    keys: RandomState,
    next: u64,
    blocks: u32,
    /// Whether the volume has held a symbolic link (so paths are resolved component by
    /// component).
    links: bool,
    /// Times changed by writes through open handles, by path, until a sync or close.
    pending: HashMap<String, Pending>,
    /// Set when a request met a disk failure or a corrupt volume: littlefs's state in memory
    /// may then be behind the disk's, so the component ends after answering (its supervisor
    /// starts it again, and a fresh mount finds the volume as the last completed operation
    /// left it).
    pub broken: Option<String>,
}

/// A failed request's answer.
type Failed = Response;

fn fail(code: FsErrorCode, message: impl Into<String>) -> Failed {
    Response::error(code, message)
}

/// The littlefs path of a protocol path: `/` and its components, each checked.
fn lfs_path(path: &str) -> Result<PathBuf, Failed> {
    for component in path.split('/').filter(|_| !path.is_empty()) {
        match component {
            "" => return Err(fail(FsErrorCode::Invalid, format!("{path:?}: an empty path component"))),
            c if c.contains('\0') => return Err(fail(FsErrorCode::Invalid, format!("{path:?}: a NUL byte"))),
            "." | ".." => {
                return Err(fail(FsErrorCode::Invalid, format!("{path:?}: {component:?} is resolved by the client")));
            }
            c if c.len() > MAX_NAME_BYTES => {
                return Err(fail(FsErrorCode::NameTooLong, format!("{path:?}: a name over {MAX_NAME_BYTES} bytes")));
            }
            _ => {}
        }
    }
    PathBuf::try_from(format!("/{path}").as_str()).map_err(|e| match e {
        PathError::TooLarge => fail(
            FsErrorCode::NameTooLong,
            format!("{path:?}: the volume takes paths of at most {} bytes", PathBuf::MAX_SIZE - 1),
        ),
        PathError::NotAscii => fail(FsErrorCode::Invalid, format!("{path:?}: the volume takes ASCII names only")),
        other => fail(FsErrorCode::Invalid, format!("{path:?}: {other:?}")),
    })
}

fn kind_of(is_dir: bool) -> Kind {
    if is_dir { Kind::Directory } else { Kind::File }
}

impl<'fs, 'a, S: Storage> Service<'fs, 'a, S> {
    /// Serves the mounted volume `fs` of `blocks` blocks, whose disk tells its failures to
    /// `failures`.
    pub fn new(fs: &'fs Filesystem<'a, S>, blocks: u32, failures: Failures) -> Service<'fs, 'a, S> {
        let mut flag = [0u8; 1];
        // A root that cannot be read is taken to hold links: paths are then resolved the slow way.
        let links = fs.attribute(littlefs2::path!("/"), ATTR_HAS_LINKS, &mut flag).map_or(true, |a| a.is_some());
        Service {
            fs,
            failures,
            open: HashMap::new(),
            keys: RandomState::new(),
            next: 0,
            blocks,
            links,
            pending: HashMap::new(),
            broken: None,
        }
    }

    /// How many handles are open.
    pub fn open_handles(&self) -> usize {
        self.open.len()
    }

    /// Answers `request`.
    pub fn handle(&mut self, request: Request) -> Response {
        match self.answer(request) {
            Ok(response) | Err(response) => response,
        }
    }

    /// `what` failed with littlefs's `error`: the answer, and the service is broken if the
    /// disk failed or the volume is corrupt.
    fn lfs(&mut self, what: &str, error: Error) -> Failed {
        let code = match error {
            Error::NO_SUCH_ENTRY | Error::NO_ATTRIBUTE => FsErrorCode::NoEntry,
            Error::ENTRY_ALREADY_EXISTED => FsErrorCode::Exists,
            Error::PATH_NOT_DIR => FsErrorCode::NotDirectory,
            Error::PATH_IS_DIR => FsErrorCode::IsDirectory,
            Error::DIR_NOT_EMPTY => FsErrorCode::NotEmpty,
            Error::INVALID => FsErrorCode::Invalid,
            Error::NO_SPACE => FsErrorCode::NoSpace,
            Error::FILENAME_TOO_LONG => FsErrorCode::NameTooLong,
            Error::FILE_TOO_BIG => FsErrorCode::Overflow,
            Error::BAD_FILE_DESCRIPTOR => FsErrorCode::BadHandle,
            Error::CORRUPTION => FsErrorCode::Corrupt,
            _ => FsErrorCode::Io,
        };
        let message = crate::volume::describe(&self.failures, what, error);
        if matches!(code, FsErrorCode::Io | FsErrorCode::Corrupt) {
            self.broken = Some(message.clone());
        }
        fail(code, message)
    }

    fn new_handle(&mut self) -> u64 {
        loop {
            self.next += 1;
            let handle = self.keys.hash_one(self.next);
            if handle != 0 && !self.open.contains_key(&handle) {
                return handle;
            }
        }
    }

    fn answer(&mut self, request: Request) -> Result<Response, Failed> {
        match request {
            Request::Open { flags, path } => {
                // An exclusive create never follows a link at the end: the link exists (POSIX).
                let exclusive = flags.contains(OpenFlags::CREATE) && flags.contains(OpenFlags::EXCLUSIVE);
                let path = self.resolve(&path, flags.contains(OpenFlags::FOLLOW) && !exclusive)?;
                if self.is_link(&path)? {
                    if exclusive {
                        return Err(fail(FsErrorCode::Exists, format!("{path:?} exists (a symbolic link)")));
                    }
                    return Err(fail(
                        FsErrorCode::Loop,
                        format!("{path:?} is a symbolic link, and it is not followed"),
                    ));
                }
                self.open(flags, &path)
            }
            Request::Read { handle, offset, len } => self.read(handle, offset, len),
            Request::Write { handle, offset, data } => self.write(handle, offset, &data),
            Request::SetSize { handle, size } => {
                if size > MAX_FILE_BYTES {
                    return Err(fail(
                        FsErrorCode::Overflow,
                        format!("{size} bytes is over the {MAX_FILE_BYTES} a file holds"),
                    ));
                }
                let path = self.writable(handle)?;
                let result = self.with_file(&path, true, |file| file.set_len(size as usize));
                result.map_err(|e| self.lfs(&format!("setting the size of {path:?}"), e))?;
                self.touch(&path, false);
                Ok(Response::Done)
            }
            // Every write was durable when it was answered; only the times may be left.
            Request::Sync { handle } => {
                let path = self.get(handle)?.path.clone();
                self.flush_times(&path)?;
                Ok(Response::Done)
            }
            Request::Close { handle } => {
                let path = self.open.remove(&handle).ok_or_else(|| bad_handle(handle))?.path;
                self.flush_times(&path)?;
                Ok(Response::Done)
            }
            Request::Stat { path, follow } => {
                let path = self.resolve(&path, follow)?;
                self.stat(&path)
            }
            Request::StatHandle { handle } => {
                let path = self.get(handle)?.path.clone();
                self.stat(&path)
            }
            Request::ReadDir { start, path } => {
                let path = self.resolve(&path, true)?;
                self.read_dir(start, &path)
            }
            Request::CreateDir { path } => {
                let path = self.resolve(&path, false)?;
                let lfs = lfs_path(&path)?;
                self.fs.create_dir(&lfs).map_err(|e| self.lfs(&format!("creating {path:?}"), e))?;
                let t = now();
                self.write_times(&path, Times { modified: Some(t), accessed: Some(t) })?;
                Ok(Response::Done)
            }
            Request::RemoveDir { path } => {
                let path = self.resolve(&path, false)?;
                self.remove(&path, Kind::Directory)
            }
            Request::Unlink { path } => {
                let path = self.resolve(&path, false)?;
                self.remove(&path, Kind::File)
            }
            Request::Rename { from, to } => {
                let (from, to) = (self.resolve(&from, false)?, self.resolve(&to, false)?);
                let (lfs_from, lfs_to) = (lfs_path(&from)?, lfs_path(&to)?);
                if from.is_empty() || to.is_empty() {
                    return Err(fail(FsErrorCode::Invalid, "the volume's root cannot be renamed or replaced"));
                }
                self.fs.rename(&lfs_from, &lfs_to).map_err(|e| self.lfs(&format!("renaming {from:?} to {to:?}"), e))?;
                if from == to {
                    return Ok(Response::Done);
                }
                // What the rename replaced is gone for its handles, and takes its times with it.
                self.forget(&to);
                // Handles and times not yet written follow what they name.
                let moved = |path: &str| {
                    if path == from {
                        Some(to.clone())
                    } else {
                        path.strip_prefix(&format!("{from}/")).map(|rest| format!("{to}/{rest}"))
                    }
                };
                for open in self.open.values_mut() {
                    if let Some(path) = moved(&open.path) {
                        open.path = path;
                    }
                }
                let renamed: Vec<String> = self.pending.keys().filter(|p| moved(p).is_some()).cloned().collect();
                for old in renamed {
                    if let (Some(new), Some(times)) = (moved(&old), self.pending.remove(&old)) {
                        self.pending.insert(new, times);
                    }
                }
                Ok(Response::Done)
            }
            Request::Volume => Ok(Response::Volume { block_size: BLOCK_SIZE, blocks: self.blocks.into() }),
            Request::SetTimes { path, follow, accessed, modified } => {
                let path = self.resolve(&path, follow)?;
                let lfs = lfs_path(&path)?;
                self.fs.metadata(&lfs).map_err(|e| self.lfs(&format!("{path:?}"), e))?;
                self.set_times(&path, accessed, modified)?;
                Ok(Response::Done)
            }
            Request::Symlink { target, path } => self.symlink(&target, &path),
            Request::ReadLink { path } => {
                let path = self.resolve(&path, false)?;
                if !self.is_link(&path)? {
                    self.fs.metadata(&lfs_path(&path)?).map_err(|e| self.lfs(&format!("{path:?}"), e))?;
                    return Err(fail(FsErrorCode::Invalid, format!("{path:?} is not a symbolic link")));
                }
                self.link_target(&path).map(|t| Response::Data(t.into_bytes()))
            }
        }
    }

    /// `path` is gone: the handles that name it are closed, and its pending times dropped.
    fn forget(&mut self, path: &str) {
        self.open.retain(|_, open| open.path != path);
        self.pending.remove(path);
    }

    /// Whether `path` is a symbolic link (`false` when it does not exist).
    fn is_link(&mut self, path: &str) -> Result<bool, Failed> {
        if !self.links || path.is_empty() {
            return Ok(false);
        }
        let lfs = lfs_path(path)?;
        let mut mark = [0u8; 1];
        match self.fs.attribute(&lfs, ATTR_LINK, &mut mark) {
            Ok(found) => Ok(found.is_some()),
            Err(Error::NO_ATTRIBUTE | Error::NO_SUCH_ENTRY | Error::PATH_NOT_DIR) => Ok(false),
            Err(e) => Err(self.lfs(&format!("{path:?}"), e)),
        }
    }

    /// The target of the symbolic link `path`.
    fn link_target(&mut self, path: &str) -> Result<String, Failed> {
        let read = self.with_file(path, false, |file| read_up_to(file, file.len()?.min(MAX_PATH_BYTES)));
        let target = read.map_err(|e| self.lfs(&format!("reading the link {path:?}"), e))?;
        String::from_utf8(target).map_err(|_| fail(FsErrorCode::Corrupt, format!("the link {path:?} is not UTF-8")))
    }

    /// `path` with the symbolic links it passes through followed, and the one it ends at if
    /// `follow`: a path on the volume without links on the way.
    fn resolve(&mut self, path: &str, follow: bool) -> Result<String, Failed> {
        if !self.links {
            return Ok(path.to_owned());
        }
        let mut done: Vec<String> = Vec::new();
        let mut todo: VecDeque<String> = path.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
        let mut follows = 0;
        while let Some(component) = todo.pop_front() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Err(fail(FsErrorCode::NotPermitted, format!("{path:?}: a link leads above the root")));
                    }
                    continue;
                }
                _ => done.push(component),
            }
            if todo.is_empty() && !follow {
                break;
            }
            let here = done.join("/");
            if !self.is_link(&here)? {
                continue;
            }
            follows += 1;
            if follows > MAX_FOLLOWS {
                return Err(fail(FsErrorCode::Loop, format!("{path:?}: more than {MAX_FOLLOWS} symbolic links")));
            }
            let target = self.link_target(&here)?;
            if target.starts_with('/') {
                return Err(fail(FsErrorCode::NotPermitted, format!("{here:?} links to an absolute path")));
            }
            done.pop();
            let mut next: VecDeque<String> = target.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
            next.extend(todo.drain(..));
            todo = next;
        }
        Ok(done.join("/"))
    }

    /// Makes `path` a symbolic link to `target`.
    fn symlink(&mut self, target: &str, path: &str) -> Result<Response, Failed> {
        if target.starts_with('/') {
            return Err(fail(FsErrorCode::NotPermitted, format!("{target:?}: a link's target must be relative")));
        }
        if target.is_empty() {
            return Err(fail(FsErrorCode::NoEntry, "a link needs a target"));
        }
        let path = self.resolve(path, false)?;
        if path.is_empty() {
            return Err(fail(FsErrorCode::Exists, "the volume's root exists"));
        }
        let lfs = lfs_path(&path)?;
        match self.fs.metadata(&lfs) {
            Ok(_) => return Err(fail(FsErrorCode::Exists, format!("{path:?} exists"))),
            Err(Error::NO_SUCH_ENTRY) => {}
            Err(e) => return Err(self.lfs(&format!("{path:?}"), e)),
        }
        if !self.links {
            // The mark first: a link never exists on a volume that does not say it may.
            let marked = self.fs.set_attribute(littlefs2::path!("/"), ATTR_HAS_LINKS, &[1]);
            marked.map_err(|e| self.lfs("marking the volume as holding links", e))?;
            self.links = true;
        }
        let made = self.fs.open_file_with_options_and_then(
            |o| o.write(true).create(true).truncate(true),
            &lfs,
            |file| file.write(target.as_bytes()).map(|_| ()),
        );
        made.map_err(|e| self.lfs(&format!("making the link {path:?}"), e))?;
        self.fs
            .set_attribute(&lfs, ATTR_LINK, &[1])
            .map_err(|e| self.lfs(&format!("marking {path:?} as a link"), e))?;
        let t = now();
        self.write_times(&path, Times { modified: Some(t), accessed: Some(t) })?;
        Ok(Response::Done)
    }

    /// Sets the times of `path`, which exists (what writes left pending included).
    fn set_times(&mut self, path: &str, accessed: SetTime, modified: SetTime) -> Result<(), Failed> {
        let mut times = self.times(path)?;
        let clock = now();
        for (time, set) in [(&mut times.accessed, accessed), (&mut times.modified, modified)] {
            match set {
                SetTime::Keep => {}
                SetTime::Now => *time = Some(clock),
                SetTime::At(ns) => *time = Some(ns),
            }
        }
        self.pending.remove(path);
        self.write_times(path, times)
    }

    /// Puts `times` on the volume for `path` (one commit).
    fn write_times(&mut self, path: &str, times: Times) -> Result<(), Failed> {
        let lfs = lfs_path(path)?;
        let set = self.fs.set_attribute(&lfs, ATTR_TIMES, &times.encode());
        set.map_err(|e| self.lfs(&format!("setting the times of {path:?}"), e))
    }

    /// Notes that `path` was written now (and made now, if `made`); on the volume at the next
    /// sync or close of a handle to it.
    fn touch(&mut self, path: &str, made: bool) {
        let t = now();
        let pending = self.pending.entry(path.to_owned()).or_insert(Pending { modified: t, accessed: None });
        pending.modified = t;
        if made {
            pending.accessed = Some(t);
        }
    }

    /// Puts what writes did to `path`'s times on the volume.
    fn flush_times(&mut self, path: &str) -> Result<(), Failed> {
        if !self.pending.contains_key(path) {
            return Ok(());
        }
        let times = self.times(path)?;
        self.pending.remove(path);
        self.write_times(path, times)
    }

    /// The times of `path`: the volume's, with what writes left pending over them.
    fn times(&mut self, path: &str) -> Result<Times, Failed> {
        let lfs = lfs_path(path)?;
        let mut buffer = [0u8; 16];
        let mut times = match self.fs.attribute(&lfs, ATTR_TIMES, &mut buffer) {
            Ok(found) => found.map(|a| Times::decode(a.data())).unwrap_or_default(),
            Err(Error::NO_ATTRIBUTE) => Times::default(),
            Err(e) => return Err(self.lfs(&format!("reading the times of {path:?}"), e)),
        };
        if let Some(pending) = self.pending.get(path) {
            times.modified = Some(pending.modified);
            times.accessed = pending.accessed.or(times.accessed);
        }
        Ok(times)
    }

    fn get(&self, handle: u64) -> Result<&Open, Failed> {
        self.open.get(&handle).ok_or_else(|| bad_handle(handle))
    }

    /// The path of the file open as `handle` for writing.
    fn writable(&self, handle: u64) -> Result<String, Failed> {
        match self.get(handle)? {
            Open { kind: Kind::Directory, path, .. } => {
                Err(fail(FsErrorCode::IsDirectory, format!("{path:?} is a directory")))
            }
            Open { flags, path, .. } if !flags.contains(OpenFlags::WRITE) => {
                Err(fail(FsErrorCode::BadHandle, format!("{path:?} is not open for writing")))
            }
            Open { path, .. } => Ok(path.clone()),
        }
    }

    /// Runs `body` on the file at `path`, opened for writing or for reading, then closes it
    /// (which commits what it wrote).
    fn with_file<R>(
        &self,
        path: &str,
        write: bool,
        body: impl FnOnce(&File<'_, '_, S>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let lfs = lfs_path(path).map_err(|_| Error::INVALID)?;
        self.fs.open_file_with_options_and_then(|o| o.read(!write).write(write), &lfs, body)
    }

    fn stat(&mut self, path: &str) -> Result<Response, Failed> {
        let lfs = lfs_path(path)?;
        let meta = self.fs.metadata(&lfs).map_err(|e| self.lfs(&format!("{path:?}"), e))?;
        let size = if meta.is_dir() { 0 } else { meta.len() as u64 };
        let kind = if self.is_link(path)? { Kind::Symlink } else { kind_of(meta.is_dir()) };
        let Times { modified, accessed } = self.times(path)?;
        Ok(Response::Stat { kind, size, modified, accessed })
    }

    fn open(&mut self, flags: OpenFlags, path: &str) -> Result<Response, Failed> {
        let write = flags.contains(OpenFlags::WRITE);
        let create = flags.contains(OpenFlags::CREATE);
        if (create || flags.contains(OpenFlags::TRUNCATE)) && !write {
            return Err(fail(FsErrorCode::Invalid, format!("{path:?}: create and truncate need write")));
        }
        if flags.contains(OpenFlags::EXCLUSIVE) && !create {
            return Err(fail(FsErrorCode::Invalid, format!("{path:?}: exclusive needs create")));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(fail(FsErrorCode::TooManyOpen, format!("{MAX_OPEN} handles are open; close one first")));
        }
        let lfs = lfs_path(path)?;
        let existing = match self.fs.metadata(&lfs) {
            Ok(meta) => Some(meta),
            Err(Error::NO_SUCH_ENTRY) => None,
            Err(e) => return Err(self.lfs(&format!("{path:?}"), e)),
        };
        let (kind, size) = match existing {
            Some(_) if create && flags.contains(OpenFlags::EXCLUSIVE) => {
                return Err(fail(FsErrorCode::Exists, format!("{path:?} exists")));
            }
            Some(meta) if meta.is_dir() && write => {
                return Err(fail(FsErrorCode::IsDirectory, format!("{path:?} is a directory")));
            }
            Some(meta) if meta.is_dir() => (Kind::Directory, 0),
            Some(_) if flags.contains(OpenFlags::DIRECTORY) => {
                return Err(fail(FsErrorCode::NotDirectory, format!("{path:?} is not a directory")));
            }
            None if !create || flags.contains(OpenFlags::DIRECTORY) => {
                return Err(fail(FsErrorCode::NoEntry, format!("{path:?}: no such file or directory")));
            }
            Some(meta) if !flags.contains(OpenFlags::TRUNCATE) => (Kind::File, meta.len() as u64),
            _ => {
                // Create or truncate now: the file exists, empty, once the open is answered.
                let made = self.fs.open_file_with_options_and_then(
                    |o| o.write(true).create(true).truncate(true),
                    &lfs,
                    |_| Ok(()),
                );
                made.map_err(|e| self.lfs(&format!("opening {path:?}"), e))?;
                self.touch(path, existing.is_none());
                (Kind::File, 0)
            }
        };
        let handle = self.new_handle();
        self.open.insert(handle, Open { kind, flags, path: path.into() });
        Ok(Response::Opened { handle, kind, size })
    }

    fn read(&mut self, handle: u64, offset: u64, len: u32) -> Result<Response, Failed> {
        let path = match self.get(handle)? {
            Open { kind: Kind::Directory, path, .. } => {
                return Err(fail(FsErrorCode::IsDirectory, format!("{path:?} is a directory")));
            }
            Open { flags, path, .. } if !flags.contains(OpenFlags::READ) => {
                return Err(fail(FsErrorCode::BadHandle, format!("{path:?} is not open for reading")));
            }
            Open { path, .. } => path.clone(),
        };
        let len = (len as usize).min(MAX_DATA_BYTES);
        let result = self.with_file(&path, false, |file| {
            if offset >= file.len()? as u64 || len == 0 {
                return Ok(Vec::new());
            }
            file.seek(SeekFrom::Start(offset as u32))?;
            read_up_to(file, len)
        });
        let data = result.map_err(|e| self.lfs(&format!("reading {path:?}"), e))?;
        Ok(Response::Data(data))
    }

    fn write(&mut self, handle: u64, offset: u64, data: &[u8]) -> Result<Response, Failed> {
        let path = self.writable(handle)?;
        let result = self.with_file(&path, true, |file| {
            let start = if offset == APPEND { file.len()? as u64 } else { offset };
            if start + data.len() as u64 > MAX_FILE_BYTES {
                return Err(Error::FILE_TOO_BIG);
            }
            file.seek(SeekFrom::Start(start as u32))?;
            let mut done = 0;
            while done < data.len() {
                match file.write(&data[done..])? {
                    0 => return Err(Error::NO_SPACE),
                    n => done += n,
                }
            }
            Ok(done)
        });
        let done = result.map_err(|e| self.lfs(&format!("writing {} bytes to {path:?}", data.len()), e))?;
        self.touch(&path, false);
        Ok(Response::Written(done as u32))
    }

    fn read_dir(&mut self, start: u32, path: &str) -> Result<Response, Failed> {
        let lfs = lfs_path(path)?;
        let listed = self.fs.read_dir_and_then(&lfs, |dir| {
            let mut entries = Vec::new();
            let mut end = true;
            let real = dir.filter(|e| !matches!(e, Ok(e) if matches!(e.file_name().as_ref(), "." | "..")));
            for entry in real.skip(start as usize) {
                if entries.len() == MAX_ENTRIES {
                    end = false;
                    break;
                }
                let entry = entry?;
                let meta = entry.metadata();
                let size = if meta.is_dir() { 0 } else { meta.len() as u64 };
                entries.push(Entry { kind: kind_of(meta.is_dir()), size, name: entry.file_name().as_ref().to_owned() });
            }
            Ok((entries, end))
        });
        let (mut entries, end) = listed.map_err(|e| self.lfs(&format!("listing {path:?}"), e))?;
        for entry in entries.iter_mut().filter(|e| e.kind == Kind::File) {
            let full = if path.is_empty() { entry.name.clone() } else { format!("{path}/{}", entry.name) };
            if self.is_link(&full)? {
                entry.kind = Kind::Symlink;
            }
        }
        Ok(Response::Entries { entries, end })
    }

    /// Removes `path`, which must be of kind `want`.
    fn remove(&mut self, path: &str, want: Kind) -> Result<Response, Failed> {
        if path.is_empty() {
            return Err(fail(FsErrorCode::Invalid, "the volume's root cannot be removed"));
        }
        let lfs = lfs_path(path)?;
        let meta = self.fs.metadata(&lfs).map_err(|e| self.lfs(&format!("{path:?}"), e))?;
        match (kind_of(meta.is_dir()), want) {
            (Kind::Directory, Kind::File) => {
                return Err(fail(FsErrorCode::IsDirectory, format!("{path:?} is a directory")));
            }
            (Kind::File, Kind::Directory) => {
                return Err(fail(FsErrorCode::NotDirectory, format!("{path:?} is not a directory")));
            }
            _ => {}
        }
        self.fs.remove(&lfs).map_err(|e| self.lfs(&format!("removing {path:?}"), e))?;
        self.forget(path);
        Ok(Response::Done)
    }
}

/// Up to `len` bytes from where `file` is, fewer at its end.
fn read_up_to<S: Storage>(file: &File<'_, '_, S>, len: usize) -> Result<Vec<u8>, Error> {
    let mut data = vec![0; len];
    let mut done = 0;
    while done < len {
        match file.read(&mut data[done..])? {
            0 => break,
            n => done += n,
        }
    }
    data.truncate(done);
    Ok(data)
}

fn bad_handle(handle: u64) -> Failed {
    fail(FsErrorCode::BadHandle, format!("handle {handle:#x} is not open"))
}
