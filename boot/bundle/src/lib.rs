//! The boot bundle: what xtask hands the kernel as one PVH boot module (QEMU `-initrd`).
//!
//! Layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MICABNDL` |
//! | 8 | 4 | format version ([`VERSION`]) |
//! | 12 | 4 | number of entries |
//! | 16 | 8 | total length of the bundle in bytes |
//! | 24 | 4 | CRC-32 of bytes 0..24 and of the whole entry table |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 96 × n | entry table |
//!
//! Each entry: kind (u32: 1 manifest, 2 artifact, 3 wasm), name length (u32), name (64 bytes, UTF-8,
//! zero-padded), data offset (u64, 4096-byte aligned), data length (u64), CRC-32 of the data
//! (u32), reserved (u32). CRC-32 detects corruption and truncation; the bundle is not a security
//! boundary (whoever writes it also chooses the kernel). Data is page-aligned so that the kernel
//! can map an artifact's pages where they lie, without copying them, when the bundle itself is
//! loaded at a page boundary (as PVH boot modules are).
//!
//! The manifest entry holds a [`SystemManifest`] encoded with `postcard`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod devices;
mod manifest;

use alloc::vec::Vec;
use core::fmt;

pub use devices::device_names;
pub use manifest::{
    Code, CompilerSpec, ComponentSpec, Connection, DirGrant, MachineDevice, ManifestError, NativeCode, NetworkGrant,
    Priority, Restart, SystemManifest,
};

/// The magic bytes at the start of every bundle.
pub const MAGIC: [u8; 8] = *b"MICABNDL";
/// The format version this crate reads and writes (7: entry data is page-aligned; 8: entries of
/// wasm for the system to compile, and the compiler component; 10: network grants).
pub const VERSION: u32 = 10;
/// Size of the header.
pub const HEADER_SIZE: usize = 32;
/// Size of one entry in the table.
pub const ENTRY_SIZE: usize = 96;
/// The longest entry name, in bytes.
pub const MAX_NAME: usize = 64;
/// Alignment of every entry's data: a page.
pub const DATA_ALIGN: usize = 4096;
/// The name of the manifest entry.
pub const MANIFEST_ENTRY: &str = "manifest";

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The system manifest.
    Manifest,
    /// A component compiled ahead of time: native code for one target and CPU.
    Artifact,
    /// A component as wasm, for the system to compile for the CPU it runs on.
    Wasm,
}

impl EntryKind {
    fn raw(self) -> u32 {
        match self {
            EntryKind::Manifest => 1,
            EntryKind::Artifact => 2,
            EntryKind::Wasm => 3,
        }
    }
}

/// What is wrong with a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Fewer bytes than the structure needs.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes there.
        got: u64,
    },
    /// Not a Mica bundle.
    BadMagic,
    /// A format version this kernel does not read.
    UnsupportedVersion(u32),
    /// The header or entry table does not match its checksum, or a reserved field is set.
    TableChecksum,
    /// An entry's data lies outside the bundle or is misaligned.
    BadRange {
        /// The entry.
        entry: alloc::string::String,
    },
    /// An entry's name is empty, too long or not UTF-8.
    BadName {
        /// Its index in the table.
        index: u32,
    },
    /// An entry kind this kernel does not know.
    BadKind {
        /// The entry.
        entry: alloc::string::String,
        /// The kind number.
        kind: u32,
    },
    /// Two entries with one name.
    DuplicateName(alloc::string::String),
    /// An entry's data does not match its checksum.
    DataChecksum {
        /// The entry.
        entry: alloc::string::String,
    },
    /// No entry by that name.
    Missing(alloc::string::String),
    /// The writer was given a name it cannot store.
    NameTooLong(alloc::string::String),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Truncated { what, need, got } => {
                write!(f, "boot bundle truncated: {what} needs {need} bytes, {got} present")
            }
            BundleError::BadMagic => write!(f, "not a Mica boot bundle (bad magic)"),
            BundleError::UnsupportedVersion(v) => {
                write!(f, "boot bundle format version {v}; this kernel reads version {VERSION}")
            }
            BundleError::TableChecksum => write!(f, "boot bundle header or entry table is corrupt (checksum mismatch)"),
            BundleError::BadRange { entry } => write!(f, "boot bundle entry '{entry}' lies outside the bundle"),
            BundleError::BadName { index } => write!(f, "boot bundle entry {index} has an invalid name"),
            BundleError::BadKind { entry, kind } => write!(f, "boot bundle entry '{entry}' has unknown kind {kind}"),
            BundleError::DuplicateName(n) => write!(f, "boot bundle has two entries named '{n}'"),
            BundleError::DataChecksum { entry } => {
                write!(f, "boot bundle entry '{entry}' is corrupt or truncated (checksum mismatch)")
            }
            BundleError::Missing(n) => write!(f, "boot bundle has no entry named '{n}'"),
            BundleError::NameTooLong(n) => write!(f, "entry name '{n}' is longer than {MAX_NAME} bytes"),
        }
    }
}

/// The checksum the bundle keeps for each entry's data (CRC-32), also used to name a compiled
/// artifact in reports.
pub fn checksum(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// One entry of a parsed bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// What it holds.
    pub kind: EntryKind,
    /// Its name.
    pub name: &'a str,
    /// Where its data starts in the bundle.
    pub offset: usize,
    data: &'a [u8],
    crc: u32,
}

impl<'a> Entry<'a> {
    /// Its data, after checking the checksum.
    pub fn data(&self) -> Result<&'a [u8], BundleError> {
        if crc32fast::hash(self.data) != self.crc {
            return Err(BundleError::DataChecksum { entry: self.name.into() });
        }
        Ok(self.data)
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A parsed bundle (zero-copy over its bytes).
#[derive(Clone, Debug)]
pub struct Bundle<'a> {
    entries: Vec<Entry<'a>>,
}

impl<'a> Bundle<'a> {
    /// Parses and checks the header and entry table (entry data is checked on access).
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        let got = bytes.len() as u64;
        if bytes.len() < HEADER_SIZE {
            return Err(BundleError::Truncated { what: "the header", need: HEADER_SIZE as u64, got });
        }
        if bytes[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let count = u32_at(bytes, 12);
        let total = u64_at(bytes, 16);
        if total > got {
            return Err(BundleError::Truncated { what: "the bundle", need: total, got });
        }
        let table_end = HEADER_SIZE as u64 + u64::from(count) * ENTRY_SIZE as u64;
        if table_end > total {
            return Err(BundleError::Truncated { what: "the entry table", need: table_end, got: total });
        }
        let bytes = &bytes[..total as usize];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..24]);
        crc.update(&bytes[HEADER_SIZE..table_end as usize]);
        if crc.finalize() != u32_at(bytes, 24) || u32_at(bytes, 28) != 0 {
            return Err(BundleError::TableChecksum);
        }
        let mut entries: Vec<Entry<'a>> = Vec::with_capacity(count as usize);
        for index in 0..count {
            let e = &bytes[HEADER_SIZE + index as usize * ENTRY_SIZE..][..ENTRY_SIZE];
            let name_len = u32_at(e, 4) as usize;
            if name_len == 0 || name_len > MAX_NAME {
                return Err(BundleError::BadName { index });
            }
            let name = core::str::from_utf8(&e[8..8 + name_len]).map_err(|_| BundleError::BadName { index })?;
            let kind = match u32_at(e, 0) {
                1 => EntryKind::Manifest,
                2 => EntryKind::Artifact,
                3 => EntryKind::Wasm,
                kind => return Err(BundleError::BadKind { entry: name.into(), kind }),
            };
            let (offset, len) = (u64_at(e, 72), u64_at(e, 80));
            let end = offset.checked_add(len).ok_or_else(|| BundleError::BadRange { entry: name.into() })?;
            if offset < table_end || end > total || offset % DATA_ALIGN as u64 != 0 {
                return Err(BundleError::BadRange { entry: name.into() });
            }
            if entries.iter().any(|other| other.name == name) {
                return Err(BundleError::DuplicateName(name.into()));
            }
            entries.push(Entry {
                kind,
                name,
                offset: offset as usize,
                data: &bytes[offset as usize..end as usize],
                crc: u32_at(e, 88),
            });
        }
        Ok(Bundle { entries })
    }

    /// The entries, in table order.
    pub fn entries(&self) -> &[Entry<'a>] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Result<&Entry<'a>, BundleError> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| BundleError::Missing(name.into()))
    }

    /// The system manifest, decoded.
    pub fn manifest(&self) -> Result<Result<SystemManifest, ManifestError>, BundleError> {
        Ok(SystemManifest::decode(self.entry(MANIFEST_ENTRY)?.data()?))
    }
}

/// Builds a bundle.
#[derive(Debug, Default)]
pub struct BundleWriter {
    entries: Vec<(EntryKind, alloc::string::String, Vec<u8>)>,
}

impl BundleWriter {
    /// An empty bundle.
    pub fn new() -> BundleWriter {
        BundleWriter::default()
    }

    /// Adds an entry.
    pub fn add(&mut self, kind: EntryKind, name: &str, data: Vec<u8>) -> Result<&mut Self, BundleError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(BundleError::NameTooLong(name.into()));
        }
        if self.entries.iter().any(|(_, n, _)| n == name) {
            return Err(BundleError::DuplicateName(name.into()));
        }
        self.entries.push((kind, name.into(), data));
        Ok(self)
    }

    /// The bundle's bytes.
    pub fn finish(&self) -> Vec<u8> {
        let align = |n: usize| n.div_ceil(DATA_ALIGN) * DATA_ALIGN;
        let table_end = HEADER_SIZE + self.entries.len() * ENTRY_SIZE;
        let mut offsets = Vec::with_capacity(self.entries.len());
        let mut at = align(table_end);
        for (_, _, data) in &self.entries {
            offsets.push(at);
            at = align(at + data.len());
        }
        let mut out = alloc::vec![0u8; at];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&(at as u64).to_le_bytes());
        for (i, ((kind, name, data), offset)) in self.entries.iter().zip(&offsets).enumerate() {
            let e = &mut out[HEADER_SIZE + i * ENTRY_SIZE..][..ENTRY_SIZE];
            e[0..4].copy_from_slice(&kind.raw().to_le_bytes());
            e[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
            e[8..8 + name.len()].copy_from_slice(name.as_bytes());
            e[72..80].copy_from_slice(&(*offset as u64).to_le_bytes());
            e[80..88].copy_from_slice(&(data.len() as u64).to_le_bytes());
            e[88..92].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
            out[*offset..*offset + data.len()].copy_from_slice(data);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[..24]);
        crc.update(&out[HEADER_SIZE..table_end]);
        let sum = crc.finalize();
        out[24..28].copy_from_slice(&sum.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests;
