//! `wasi:filesystem/types` and `wasi:filesystem/preopens`, forwarded to file system services.
//!
//! A component sees the directories its manifest grants it (`dirs`), each a [`Preopen`]: a path
//! such as `/data`, served by the file system service at the other end of one of its
//! connections. Every operation becomes a request of the files protocol
//! ([`mica_device::files`]) on that connection, made through the instance's IPC port; there is
//! no file system code here. Without a grant there are no preopens, so no descriptor at all.
//!
//! A descriptor is a path on its service's volume, resolved here against the directory it was
//! opened from: `..` may not climb above that directory, and absolute paths are refused
//! (`not-permitted`); a path ending in `/` must name a directory. The `..` of a path are
//! resolved here, by name; the service follows the symbolic links on the way (and the one at
//! the end when the path flags say `symlink-follow`). An open file also holds the service's
//! handle, closed when the descriptor is dropped. A read-only grant refuses every change with
//! `read-only` before it reaches the service.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use mica_device::files::{
    self, APPEND, FsErrorCode, Kind, MAX_DATA_BYTES, OpenFlags as FsOpenFlags, Request, Response, SetTime,
};
use wasmtime::component::Resource;

use super::InstanceState;
use super::error::IoError;
use super::streams::{InputStream, OutputStream};
use super::wasi::clocks::wall_clock::Datetime;
use super::wasi::filesystem::preopens;
use super::wasi::filesystem::types::{
    Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode, Filesize, Host, HostDescriptor,
    HostDirectoryEntryStream, MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};
use crate::ipc::{ErrorCode as IpcCode, Handle};

/// A directory granted to a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// Where the component finds it (`/data`).
    pub path: String,
    /// The component's connection to the file system service that serves it.
    pub connection: String,
    /// Whether the component may only read.
    pub read_only: bool,
}

/// What an instance's file system imports keep: its grants and its connections to the services.
#[derive(Debug, Default)]
pub struct FsState {
    /// The granted directories.
    pub preopens: Vec<Preopen>,
    /// The channel end of each connection in use, by name (connected at first use).
    channels: BTreeMap<String, Handle>,
}

impl FsState {
    /// The state for `preopens`.
    pub fn new(preopens: Vec<Preopen>) -> FsState {
        FsState { preopens, channels: BTreeMap::new() }
    }
}

/// A file or directory descriptor: a path on the volume behind a preopen.
#[derive(Debug)]
pub struct Descriptor {
    /// The preopen it was reached through (index into [`FsState::preopens`]).
    grant: usize,
    /// Its path on the volume (`a/b`; empty for the granted directory itself).
    path: String,
    /// A file's handle at the service; none for a directory.
    handle: Option<u64>,
    /// How it was opened.
    flags: DescriptorFlags,
}

/// A directory listing, fetched whole when it is opened.
#[derive(Debug)]
pub struct DirectoryEntryStream {
    entries: VecDeque<DirectoryEntry>,
}

type FsResult<T> = wasmtime::Result<Result<T, ErrorCode>>;

/// The most entries a directory listing holds: a service that never says `end` cannot keep the
/// runtime asking for ever.
const MAX_LISTING: usize = 1 << 16;

/// The `wasi:filesystem` error for a files-protocol error.
fn code(fs: FsErrorCode) -> ErrorCode {
    match fs {
        FsErrorCode::NoEntry => ErrorCode::NoEntry,
        FsErrorCode::Exists => ErrorCode::Exist,
        FsErrorCode::NotDirectory => ErrorCode::NotDirectory,
        FsErrorCode::IsDirectory => ErrorCode::IsDirectory,
        FsErrorCode::NotEmpty => ErrorCode::NotEmpty,
        FsErrorCode::Invalid | FsErrorCode::BadRequest => ErrorCode::Invalid,
        FsErrorCode::NoSpace => ErrorCode::InsufficientSpace,
        FsErrorCode::NameTooLong => ErrorCode::NameTooLong,
        FsErrorCode::BadHandle => ErrorCode::BadDescriptor,
        FsErrorCode::ReadOnly => ErrorCode::ReadOnly,
        FsErrorCode::Io | FsErrorCode::Corrupt => ErrorCode::Io,
        FsErrorCode::TooManyOpen => ErrorCode::InsufficientMemory,
        FsErrorCode::Unsupported => ErrorCode::Unsupported,
        FsErrorCode::Overflow => ErrorCode::FileTooLarge,
        FsErrorCode::Loop => ErrorCode::Loop,
        FsErrorCode::NotPermitted => ErrorCode::NotPermitted,
    }
}

/// `path` resolved against the volume path `base` (a directory descriptor's): `.` and empty
/// components skipped, `..` up one level but never above `base` (a descriptor reaches only
/// what is below it, as in WASI's capability model), absolute paths and NUL bytes refused. The
/// flag says whether `path` must name a directory: it ends in `/`, `/.` or `/..`.
pub fn resolve(base: &str, path: &str) -> Result<(String, bool), ErrorCode> {
    if path.is_empty() {
        return Err(ErrorCode::NoEntry);
    }
    if path.starts_with('/') {
        return Err(ErrorCode::NotPermitted);
    }
    if path.contains('\0') {
        return Err(ErrorCode::Invalid);
    }
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    let floor = parts.len();
    let mut last = "";
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." if parts.len() > floor => {
                parts.pop();
            }
            ".." => return Err(ErrorCode::NotPermitted),
            c => parts.push(c),
        }
        last = component;
    }
    Ok((parts.join("/"), matches!(last, "" | "." | "..")))
}

fn kind_type(kind: Kind) -> DescriptorType {
    match kind {
        Kind::File => DescriptorType::RegularFile,
        Kind::Directory => DescriptorType::Directory,
        Kind::Symlink => DescriptorType::SymbolicLink,
    }
}

/// A time in nanoseconds since the Unix epoch, as WASI has it.
fn datetime(ns: u64) -> Datetime {
    Datetime { seconds: ns / 1_000_000_000, nanoseconds: (ns % 1_000_000_000) as u32 }
}

/// A stat from the service's answer. The volume keeps no status-change time.
fn stat_of(kind: Kind, size: u64, modified: Option<u64>, accessed: Option<u64>) -> DescriptorStat {
    DescriptorStat {
        type_: kind_type(kind),
        link_count: 1,
        size,
        data_access_timestamp: accessed.map(datetime),
        data_modification_timestamp: modified.map(datetime),
        status_change_timestamp: None,
    }
}

/// A WASI timestamp change as the service takes it; a time before the epoch or too far after
/// it for 64 bits of nanoseconds is `invalid`.
fn set_time(t: NewTimestamp) -> Result<SetTime, ErrorCode> {
    match t {
        NewTimestamp::NoChange => Ok(SetTime::Keep),
        NewTimestamp::Now => Ok(SetTime::Now),
        NewTimestamp::Timestamp(Datetime { seconds, nanoseconds }) => seconds
            .checked_mul(1_000_000_000)
            .and_then(|ns| ns.checked_add(u64::from(nanoseconds)))
            .filter(|ns| nanoseconds < 1_000_000_000 && *ns != files::NO_TIME)
            .map(SetTime::At)
            .ok_or(ErrorCode::Invalid),
    }
}

/// A hash naming `path` behind grant `grant` (what `metadata-hash` compares).
fn path_hash(grant: usize, path: &str) -> MetadataHashValue {
    // FNV-1a, twice with different offsets: enough to tell paths apart.
    let fnv = |seed: u64| {
        let mut h = seed ^ grant as u64;
        for b in path.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    MetadataHashValue { lower: fnv(0xcbf2_9ce4_8422_2325), upper: fnv(0x6c62_272e_07bb_0142) }
}

impl InstanceState {
    /// Sends `request` to the service behind grant `grant` and returns its answer; a service
    /// error becomes its `wasi:filesystem` code. A service that restarted is connected to again
    /// and asked once more (its handles are gone: a file request then fails `bad-descriptor`).
    pub(super) fn files(&mut self, grant: usize, request: &Request) -> FsResult<Response> {
        let Some(port) = self.ipc.clone() else { return Ok(Err(ErrorCode::Unsupported)) };
        let connection = self.fs.preopens[grant].connection.clone();
        let bytes = request.encode();
        for attempt in 0..2 {
            let channel = match self.fs.channels.get(&connection) {
                Some(&channel) => channel,
                None => match port.connect(&connection) {
                    Ok(channel) => {
                        self.fs.channels.insert(connection.clone(), channel);
                        channel
                    }
                    Err(e) => {
                        log::warn!("{}: connecting to file system service {connection:?}: {e}", self.name);
                        return Ok(Err(ErrorCode::Io));
                    }
                },
            };
            let answered = port.call(channel, bytes.clone(), Vec::new(), None);
            self.check_killed()?;
            match answered {
                Ok(reply) => {
                    return Ok(match Response::decode(&reply.bytes) {
                        Ok(Response::Error { code: c, .. }) => Err(code(c)),
                        Ok(response) => Ok(response),
                        Err(e) => {
                            log::warn!("{}: a malformed answer from {connection:?}: {e}", self.name);
                            Err(ErrorCode::Io)
                        }
                    });
                }
                Err(e) if e.code == IpcCode::PeerClosed && attempt == 0 => {
                    let _ = port.close(channel);
                    self.fs.channels.remove(&connection);
                }
                Err(e) => {
                    log::warn!("{}: file system service {connection:?}: {e}", self.name);
                    return Ok(Err(ErrorCode::Io));
                }
            }
        }
        Ok(Err(ErrorCode::Io))
    }

    /// A request whose answer must be `Done`.
    fn files_done(&mut self, grant: usize, request: &Request) -> FsResult<()> {
        Ok(match self.files(grant, request)? {
            Ok(Response::Done) => Ok(()),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        })
    }

    fn desc(&self, d: &Resource<Descriptor>) -> wasmtime::Result<(usize, String, Option<u64>, DescriptorFlags)> {
        let d = self.table.get(d)?;
        Ok((d.grant, d.path.clone(), d.handle, d.flags))
    }

    /// The directory `d` and `path` resolved against it: (grant, volume path). A path that
    /// must name a directory (a trailing `/`) and names a file is `not-directory`.
    fn at(&mut self, d: &Resource<Descriptor>, path: &str) -> FsResult<(usize, String)> {
        let d = self.table.get(d)?;
        if d.handle.is_some() {
            return Ok(Err(ErrorCode::NotDirectory));
        }
        let grant = d.grant;
        let (path, dir) = match resolve(&d.path, path) {
            Ok(resolved) => resolved,
            Err(e) => return Ok(Err(e)),
        };
        if dir {
            match self.stat_path(grant, path.clone(), true)? {
                Ok(stat) if stat.type_ != DescriptorType::Directory => return Ok(Err(ErrorCode::NotDirectory)),
                // What is missing may still be made (as a directory).
                Ok(_) | Err(ErrorCode::NoEntry) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok((grant, path)))
    }

    /// Like [`at`](Self::at), for a change: refused on a read-only grant.
    fn at_mut(&mut self, d: &Resource<Descriptor>, path: &str) -> FsResult<(usize, String)> {
        Ok(self.at(d, path)?.and_then(|(grant, p)| {
            if self.fs.preopens[grant].read_only { Err(ErrorCode::ReadOnly) } else { Ok((grant, p)) }
        }))
    }

    /// The open file `d`: (grant, service handle).
    fn file(&self, d: &Resource<Descriptor>) -> wasmtime::Result<Result<(usize, u64), ErrorCode>> {
        let d = self.table.get(d)?;
        Ok(d.handle.map(|h| (d.grant, h)).ok_or(ErrorCode::IsDirectory))
    }

    /// What `path` names; a symbolic link at its end is described itself unless `follow`.
    fn stat_path(&mut self, grant: usize, path: String, follow: bool) -> FsResult<DescriptorStat> {
        Ok(match self.files(grant, &Request::Stat { path, follow })? {
            Ok(Response::Stat { kind, size, modified, accessed }) => Ok(stat_of(kind, size, modified, accessed)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        })
    }

    /// Sets the times of `path` (of a symbolic link at its end itself unless `follow`).
    fn set_times_path(
        &mut self,
        grant: usize,
        path: String,
        follow: bool,
        a: NewTimestamp,
        m: NewTimestamp,
    ) -> FsResult<()> {
        if self.fs.preopens[grant].read_only {
            return Ok(Err(ErrorCode::ReadOnly));
        }
        match (set_time(a), set_time(m)) {
            (Ok(accessed), Ok(modified)) => {
                self.files_done(grant, &Request::SetTimes { path, follow, accessed, modified })
            }
            (Err(e), _) | (_, Err(e)) => Ok(Err(e)),
        }
    }

    /// Reads up to `len` bytes at `offset` of the file `handle`; empty at the end.
    pub(super) fn read_file(&mut self, grant: usize, handle: u64, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        let len = len.min(MAX_DATA_BYTES as u64) as u32;
        Ok(match self.files(grant, &Request::Read { handle, offset, len })? {
            Ok(Response::Data(data)) => Ok(data),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        })
    }

    /// Writes all of `data` at `offset` ([`APPEND`]: at the end) of the file `handle`, in
    /// pieces the protocol carries; how many bytes were written.
    pub(super) fn write_file(&mut self, grant: usize, handle: u64, offset: u64, data: &[u8]) -> FsResult<u64> {
        let mut done = 0u64;
        for chunk in data.chunks(MAX_DATA_BYTES) {
            let at = if offset == APPEND { APPEND } else { offset + done };
            match self.files(grant, &Request::Write { handle, offset: at, data: chunk.to_vec() })? {
                Ok(Response::Written(n)) => done += u64::from(n),
                Ok(other) => return Ok(Err(unexpected(&other))),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(done))
    }
}

/// An answer of the wrong kind: the service broke the protocol.
fn unexpected(response: &Response) -> ErrorCode {
    log::warn!("file system service: an answer of the wrong kind: {}", response.brief());
    ErrorCode::Io
}

/// The `wasi:filesystem` error a failed stream operation carries, for `filesystem-error-code`.
pub fn stream_error(e: ErrorCode) -> IoError {
    IoError(format!("file system: {e:?}"), Some(e), None)
}

impl preopens::Host for InstanceState {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let mut dirs = Vec::new();
        for (grant, preopen) in self.fs.preopens.clone().into_iter().enumerate() {
            let mut flags = DescriptorFlags::READ;
            if !preopen.read_only {
                flags |= DescriptorFlags::MUTATE_DIRECTORY;
            }
            let d = self.table.push(Descriptor { grant, path: String::new(), handle: None, flags })?;
            dirs.push((d, preopen.path));
        }
        Ok(dirs)
    }
}

impl Host for InstanceState {
    fn filesystem_error_code(&mut self, err: Resource<IoError>) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(self.table.get(&err)?.1)
    }
}

impl HostDirectoryEntryStream for InstanceState {
    fn read_directory_entry(&mut self, s: Resource<DirectoryEntryStream>) -> FsResult<Option<DirectoryEntry>> {
        Ok(Ok(self.table.get_mut(&s)?.entries.pop_front()))
    }

    fn drop(&mut self, s: Resource<DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl HostDescriptor for InstanceState {
    fn read_via_stream(&mut self, d: Resource<Descriptor>, offset: Filesize) -> FsResult<Resource<InputStream>> {
        Ok(match self.file(&d)? {
            Ok((grant, handle)) => Ok(self.table.push(InputStream::File { grant, handle, offset })?),
            Err(e) => Err(e),
        })
    }

    fn write_via_stream(&mut self, d: Resource<Descriptor>, offset: Filesize) -> FsResult<Resource<OutputStream>> {
        Ok(match self.file(&d)? {
            Ok((grant, handle)) => Ok(self.table.push(OutputStream::File { grant, handle, offset })?),
            Err(e) => Err(e),
        })
    }

    fn append_via_stream(&mut self, d: Resource<Descriptor>) -> FsResult<Resource<OutputStream>> {
        Ok(match self.file(&d)? {
            Ok((grant, handle)) => Ok(self.table.push(OutputStream::File { grant, handle, offset: APPEND })?),
            Err(e) => Err(e),
        })
    }

    fn advise(&mut self, d: Resource<Descriptor>, _: Filesize, _: Filesize, _: Advice) -> FsResult<()> {
        self.table.get(&d)?;
        Ok(Ok(()))
    }

    fn sync_data(&mut self, d: Resource<Descriptor>) -> FsResult<()> {
        self.sync(d)
    }

    fn get_flags(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        Ok(Ok(self.table.get(&d)?.flags))
    }

    fn get_type(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorType> {
        let d = self.table.get(&d)?;
        Ok(Ok(if d.handle.is_some() { DescriptorType::RegularFile } else { DescriptorType::Directory }))
    }

    fn set_size(&mut self, d: Resource<Descriptor>, size: Filesize) -> FsResult<()> {
        match self.file(&d)? {
            Ok((grant, handle)) => self.files_done(grant, &Request::SetSize { handle, size }),
            Err(e) => Ok(Err(e)),
        }
    }

    fn set_times(&mut self, d: Resource<Descriptor>, accessed: NewTimestamp, modified: NewTimestamp) -> FsResult<()> {
        let (grant, path, _, _) = self.desc(&d)?;
        self.set_times_path(grant, path, true, accessed, modified)
    }

    fn read(&mut self, d: Resource<Descriptor>, len: Filesize, offset: Filesize) -> FsResult<(Vec<u8>, bool)> {
        let (grant, handle) = match self.file(&d)? {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.read_file(grant, handle, offset, len)?.map(|data| {
            let end = (data.len() as u64) < len.min(MAX_DATA_BYTES as u64);
            (data, end)
        }))
    }

    fn write(&mut self, d: Resource<Descriptor>, buffer: Vec<u8>, offset: Filesize) -> FsResult<Filesize> {
        match self.file(&d)? {
            Ok((grant, handle)) => self.write_file(grant, handle, offset, &buffer),
            Err(e) => Ok(Err(e)),
        }
    }

    fn read_directory(&mut self, d: Resource<Descriptor>) -> FsResult<Resource<DirectoryEntryStream>> {
        let (grant, path, handle, _) = self.desc(&d)?;
        if handle.is_some() {
            return Ok(Err(ErrorCode::NotDirectory));
        }
        let mut entries = VecDeque::new();
        loop {
            let request = Request::ReadDir { start: entries.len() as u32, path: path.clone() };
            match self.files(grant, &request)? {
                Ok(Response::Entries { entries: page, end }) => {
                    if entries.len() + page.len() > MAX_LISTING {
                        log::warn!("{}: a listing of {path:?} goes past {MAX_LISTING} entries", self.name);
                        return Ok(Err(ErrorCode::Io));
                    }
                    let empty = page.is_empty();
                    entries.extend(page.into_iter().map(|e| DirectoryEntry { type_: kind_type(e.kind), name: e.name }));
                    if end || empty {
                        break;
                    }
                }
                Ok(other) => return Ok(Err(unexpected(&other))),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(self.table.push(DirectoryEntryStream { entries })?))
    }

    fn sync(&mut self, d: Resource<Descriptor>) -> FsResult<()> {
        match self.desc(&d)? {
            (grant, _, Some(handle), _) => self.files_done(grant, &Request::Sync { handle }),
            // A directory's changes were durable when they were answered.
            (_, _, None, _) => Ok(Ok(())),
        }
    }

    fn create_directory_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<()> {
        match self.at_mut(&d, &path)? {
            Ok((grant, path)) => self.files_done(grant, &Request::CreateDir { path }),
            Err(e) => Ok(Err(e)),
        }
    }

    fn stat(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        match self.desc(&d)? {
            (grant, _, Some(handle), _) => Ok(match self.files(grant, &Request::StatHandle { handle })? {
                Ok(Response::Stat { kind, size, modified, accessed }) => Ok(stat_of(kind, size, modified, accessed)),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            }),
            (grant, path, None, _) => self.stat_path(grant, path, true),
        }
    }

    fn stat_at(&mut self, d: Resource<Descriptor>, flags: PathFlags, path: String) -> FsResult<DescriptorStat> {
        match self.at(&d, &path)? {
            Ok((grant, path)) => self.stat_path(grant, path, flags.contains(PathFlags::SYMLINK_FOLLOW)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn set_times_at(
        &mut self,
        d: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
        accessed: NewTimestamp,
        modified: NewTimestamp,
    ) -> FsResult<()> {
        match self.at(&d, &path)? {
            Ok((grant, path)) => {
                self.set_times_path(grant, path, flags.contains(PathFlags::SYMLINK_FOLLOW), accessed, modified)
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn link_at(
        &mut self,
        d: Resource<Descriptor>,
        _: PathFlags,
        path: String,
        to: Resource<Descriptor>,
        _: String,
    ) -> FsResult<()> {
        // littlefs has no hard links.
        self.table.get(&to)?;
        Ok(self.at(&d, &path)?.and(Err(ErrorCode::Unsupported)))
    }

    fn open_at(
        &mut self,
        d: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        open: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        if open.contains(OpenFlags::CREATE) && !open.contains(OpenFlags::DIRECTORY) && path.ends_with('/') {
            // Only a directory can be named so, and this would make a file (as Linux, `EISDIR`).
            return Ok(Err(ErrorCode::IsDirectory));
        }
        let changes =
            open.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE) || flags.contains(DescriptorFlags::WRITE);
        let (grant, path) = match if changes { self.at_mut(&d, &path)? } else { self.at(&d, &path)? } {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let mut fs_flags = FsOpenFlags::default();
        let write = flags.contains(DescriptorFlags::WRITE);
        if flags.contains(DescriptorFlags::READ) || !write {
            fs_flags = fs_flags | FsOpenFlags::READ;
        }
        for (wasi, fs) in [
            (open.contains(OpenFlags::CREATE), FsOpenFlags::CREATE),
            (open.contains(OpenFlags::EXCLUSIVE), FsOpenFlags::EXCLUSIVE),
            (open.contains(OpenFlags::TRUNCATE), FsOpenFlags::TRUNCATE),
            (open.contains(OpenFlags::DIRECTORY), FsOpenFlags::DIRECTORY),
            (path_flags.contains(PathFlags::SYMLINK_FOLLOW), FsOpenFlags::FOLLOW),
            (write || open.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE), FsOpenFlags::WRITE),
        ] {
            if wasi {
                fs_flags = fs_flags | fs;
            }
        }
        let (handle, kind) = match self.files(grant, &Request::Open { flags: fs_flags, path: path.clone() })? {
            Ok(Response::Opened { handle, kind, .. }) => (handle, kind),
            Ok(other) => return Ok(Err(unexpected(&other))),
            Err(e) => return Ok(Err(e)),
        };
        let handle = match kind {
            Kind::File => Some(handle),
            // The service opens what a link names, never the link.
            Kind::Symlink => {
                self.files_done(grant, &Request::Close { handle })?.ok();
                return Ok(Err(ErrorCode::Io));
            }
            Kind::Directory => {
                // A directory descriptor is its path; the service's handle is not needed.
                self.files_done(grant, &Request::Close { handle })?.ok();
                None
            }
        };
        let mut flags = flags;
        if kind == Kind::Directory && !self.fs.preopens[grant].read_only {
            flags |= DescriptorFlags::MUTATE_DIRECTORY;
        }
        Ok(Ok(self.table.push(Descriptor { grant, path, handle, flags })?))
    }

    fn readlink_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<String> {
        let (grant, path) = match self.at(&d, &path)? {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.files(grant, &Request::ReadLink { path })? {
            Ok(Response::Data(target)) => String::from_utf8(target).map_err(|_| ErrorCode::IllegalByteSequence),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        })
    }

    fn remove_directory_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<()> {
        match self.at_mut(&d, &path)? {
            // The granted directory itself.
            Ok((_, path)) if path.is_empty() => Ok(Err(ErrorCode::Busy)),
            Ok((grant, path)) => self.files_done(grant, &Request::RemoveDir { path }),
            Err(e) => Ok(Err(e)),
        }
    }

    fn rename_at(
        &mut self,
        d: Resource<Descriptor>,
        from: String,
        to_dir: Resource<Descriptor>,
        to: String,
    ) -> FsResult<()> {
        let (from_grant, from) = match self.at_mut(&d, &from)? {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let (to_grant, to) = match self.at_mut(&to_dir, &to)? {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        if self.fs.preopens[from_grant].connection != self.fs.preopens[to_grant].connection {
            return Ok(Err(ErrorCode::CrossDevice));
        }
        self.files_done(from_grant, &Request::Rename { from, to })
    }

    fn symlink_at(&mut self, d: Resource<Descriptor>, target: String, path: String) -> FsResult<()> {
        if target.starts_with('/') {
            // A link may not lead outside what the program was given.
            return Ok(Err(ErrorCode::NotPermitted));
        }
        if target.contains('\0') {
            return Ok(Err(ErrorCode::Invalid));
        }
        let (grant, resolved) = match self.at_mut(&d, &path)? {
            Ok(at) => at,
            Err(e) => return Ok(Err(e)),
        };
        if path.ends_with('/') {
            // A link cannot be named as a directory: what is there exists, and what is not
            // cannot be made so.
            return Ok(match self.stat_path(grant, resolved, false)? {
                Ok(_) => Err(ErrorCode::Exist),
                Err(e) => Err(e),
            });
        }
        self.files_done(grant, &Request::Symlink { target, path: resolved })
    }

    fn unlink_file_at(&mut self, d: Resource<Descriptor>, path: String) -> FsResult<()> {
        match self.at_mut(&d, &path)? {
            Ok((grant, path)) => self.files_done(grant, &Request::Unlink { path }),
            Err(e) => Ok(Err(e)),
        }
    }

    fn is_same_object(&mut self, a: Resource<Descriptor>, b: Resource<Descriptor>) -> wasmtime::Result<bool> {
        let (a, b) = (self.table.get(&a)?, self.table.get(&b)?);
        Ok(self.fs.preopens[a.grant].connection == self.fs.preopens[b.grant].connection && a.path == b.path)
    }

    fn metadata_hash(&mut self, d: Resource<Descriptor>) -> FsResult<MetadataHashValue> {
        let d = self.table.get(&d)?;
        Ok(Ok(path_hash(d.grant, &d.path)))
    }

    fn metadata_hash_at(
        &mut self,
        d: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
    ) -> FsResult<MetadataHashValue> {
        let (grant, path) = match self.at(&d, &path)? {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .stat_path(grant, path.clone(), flags.contains(PathFlags::SYMLINK_FOLLOW))?
            .map(|_| path_hash(grant, &path)))
    }

    fn drop(&mut self, d: Resource<Descriptor>) -> wasmtime::Result<()> {
        let d = self.table.delete(d)?;
        if let Some(handle) = d.handle
            && let Err(e) = self.files_done(d.grant, &Request::Close { handle })?
        {
            // No one is left to tell but the log.
            log::warn!("{}: closing {:?} ({}): {e:?}", self.name, d.path, files::CONNECTION);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_granted_directory() {
        assert_eq!(resolve("", "a/b.txt"), Ok(("a/b.txt".into(), false)));
        assert_eq!(resolve("a", "./b//c/"), Ok(("a/b/c".into(), true)));
        assert_eq!(resolve("a/b", "c/../d"), Ok(("a/b/d".into(), false)));
        assert_eq!(resolve("a/b", "../c"), Err(ErrorCode::NotPermitted));
        assert_eq!(resolve("a", "b/.."), Ok(("a".into(), true)));
        assert_eq!(resolve("a", ".."), Err(ErrorCode::NotPermitted));
        assert_eq!(resolve("", "."), Ok((String::new(), true)));
        assert_eq!(resolve("", "d/."), Ok(("d".into(), true)));
        assert_eq!(resolve("", "f\0"), Err(ErrorCode::Invalid));
        assert_eq!(resolve("", ".."), Err(ErrorCode::NotPermitted));
        assert_eq!(resolve("a", "../../etc"), Err(ErrorCode::NotPermitted));
        assert_eq!(resolve("a", "/etc/passwd"), Err(ErrorCode::NotPermitted));
        assert_eq!(resolve("a", ""), Err(ErrorCode::NoEntry));
    }

    #[test]
    fn times_convert_both_ways() {
        let t = datetime(1_700_000_000_123_456_789);
        assert_eq!((t.seconds, t.nanoseconds), (1_700_000_000, 123_456_789));
        let at = |seconds, nanoseconds| set_time(NewTimestamp::Timestamp(Datetime { seconds, nanoseconds }));
        assert_eq!(at(1_700_000_000, 123_456_789), Ok(SetTime::At(1_700_000_000_123_456_789)));
        assert_eq!(at(u64::MAX, 0), Err(ErrorCode::Invalid));
        assert_eq!(at(1, 1_000_000_000), Err(ErrorCode::Invalid));
        assert_eq!(set_time(NewTimestamp::Now), Ok(SetTime::Now));
        assert_eq!(set_time(NewTimestamp::NoChange), Ok(SetTime::Keep));
        let stat = stat_of(Kind::File, 3, Some(5_000_000_001), None);
        assert_eq!(stat.data_modification_timestamp.map(|t| (t.seconds, t.nanoseconds)), Some((5, 1)));
        assert!(stat.data_access_timestamp.is_none());
    }

    #[test]
    fn service_errors_become_wasi_errors() {
        assert_eq!(code(FsErrorCode::Exists), ErrorCode::Exist);
        assert_eq!(code(FsErrorCode::NoSpace), ErrorCode::InsufficientSpace);
        assert_eq!(code(FsErrorCode::BadHandle), ErrorCode::BadDescriptor);
        assert_eq!(code(FsErrorCode::Corrupt), ErrorCode::Io);
        let hash = |grant, path| {
            let h = path_hash(grant, path);
            (h.lower, h.upper)
        };
        assert_eq!(hash(0, "a"), hash(0, "a"));
        assert_ne!(hash(0, "a"), hash(0, "b"));
        assert_ne!(hash(0, "a"), hash(1, "a"));
    }
}
