//! A littlefs volume on a [`Disk`]: the block device littlefs sees ([`DiskStorage`]), and
//! [`Volume`], which mounts the volume or formats a blank disk.
//!
//! littlefs works in blocks of [`BLOCK_SIZE`] bytes (8 sectors) and reads and writes whole
//! sectors. A disk needs no erase, so erasing does nothing.
//!
//! littlefs assumes that a write is durable once it returns (as on flash); the `littlefs2`
//! binding has no hook for littlefs's own sync points. So every write is followed by the
//! disk's flush: a disk with a volatile write cache then keeps littlefs's power-loss
//! guarantee, that after a cut the volume is as some completed operation left it.
//!
//! Reads go through a cache of [`CACHED_BLOCKS`] whole blocks (littlefs's metadata, and what was
//! read lately): a miss reads the whole block in one request, and writes update what is cached.
//! littlefs keeps caches of its own, but only within one open file; the service opens a file for
//! each request, so without this every request would read the directory's metadata again.
//!
//! The binding fixes a storage's block count at compile time. A volume is therefore formatted
//! at [`FORMAT_BLOCKS`] blocks, grown at once to the whole disk, and mounted with a block
//! count of 0, which tells littlefs to take the count from the superblock. A disk that has
//! grown since is grown into at the next mount.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::rc::Rc;

use kvstore::disk::{Disk, SECTOR_SIZE};
use littlefs2::consts::{U16, U4096};
use littlefs2::driver::Storage;
use littlefs2::fs::{Allocation, Filesystem};
use littlefs2::io::{Error, Result as LfsResult};

/// Bytes per littlefs block.
pub const BLOCK_SIZE: u32 = 4096;

/// Sectors per littlefs block.
const SECTORS_PER_BLOCK: u64 = BLOCK_SIZE as u64 / SECTOR_SIZE as u64;

/// The blocks a volume is formatted with before it grows to the disk, and the fewest a disk
/// must have.
pub const FORMAT_BLOCKS: usize = 16;

/// The most blocks a volume has (littlefs counts blocks in 32 bits; this keeps byte offsets in
/// 32-bit `usize` on wasm32): 1 GiB less one block.
pub const MAX_BLOCKS: u32 = (u32::MAX / BLOCK_SIZE) / 4;

/// The last disk failure, in words: littlefs reports only "I/O error". Clones share it, so the
/// service keeps one while littlefs holds the storage.
#[derive(Debug, Clone, Default)]
pub struct Failures(Rc<RefCell<Option<String>>>);

impl Failures {
    /// The last failure, taken (so that each is told once).
    pub fn take(&self) -> Option<String> {
        self.0.borrow_mut().take()
    }

    fn set(&self, message: String) -> Error {
        *self.0.borrow_mut() = Some(message);
        Error::IO
    }
}

/// The block device littlefs sees: the disk `D`, in blocks of [`BLOCK_SIZE`], `COUNT` of them
/// as far as the binding knows (0: as the superblock says).
#[derive(Debug)]
pub struct DiskStorage<D: Disk, const COUNT: usize> {
    disk: D,
    /// The disk's capacity in bytes, as far as littlefs may use it.
    bytes: usize,
    failures: Failures,
    cache: BlockCache,
}

/// How many whole blocks [`DiskStorage`] keeps in memory (256 KiB).
pub const CACHED_BLOCKS: usize = 64;

/// Whole blocks as the disk holds them, the oldest dropped first.
#[derive(Debug, Default)]
struct BlockCache {
    blocks: BTreeMap<usize, Vec<u8>>,
    order: VecDeque<usize>,
}

impl BlockCache {
    fn insert(&mut self, block: usize, bytes: Vec<u8>) {
        if self.blocks.insert(block, bytes).is_none() {
            self.order.push_back(block);
            if self.order.len() > CACHED_BLOCKS
                && let Some(oldest) = self.order.pop_front()
            {
                self.blocks.remove(&oldest);
            }
        }
    }
}

impl<D: Disk, const COUNT: usize> DiskStorage<D, COUNT> {
    fn new(disk: D, blocks: u32, failures: Failures) -> DiskStorage<D, COUNT> {
        DiskStorage { disk, bytes: blocks as usize * BLOCK_SIZE as usize, failures, cache: BlockCache::default() }
    }

    /// The whole block `block`, from the cache or read into it.
    fn block(&mut self, block: usize) -> Result<&[u8], Error> {
        if !self.cache.blocks.contains_key(&block) {
            let sector = (block * BLOCK_SIZE as usize / SECTOR_SIZE) as u64;
            let count = SECTORS_PER_BLOCK as u32;
            let bytes = match self.disk.read(sector, count) {
                Ok(data) if data.len() == BLOCK_SIZE as usize => data,
                Ok(data) => {
                    return Err(self.failures.set(format!("a read of {count} sectors returned {} bytes", data.len())));
                }
                Err(e) => return Err(self.failures.set(format!("read of {count} sectors at {sector}: {e}"))),
            };
            self.cache.insert(block, bytes);
        }
        Ok(&self.cache.blocks[&block])
    }

    /// The first sector of `len` bytes at byte `offset`, when they are whole sectors on the
    /// volume.
    fn sector(&self, offset: usize, len: usize, what: &str) -> Result<u64, Error> {
        let aligned = offset.is_multiple_of(SECTOR_SIZE) && len.is_multiple_of(SECTOR_SIZE) && len > 0;
        if !aligned || offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(self.failures.set(format!(
                "littlefs asked to {what} {len} bytes at byte {offset}: not whole sectors within the volume's {} bytes",
                self.bytes
            )));
        }
        Ok((offset / SECTOR_SIZE) as u64)
    }
}

impl<D: Disk, const COUNT: usize> Storage for DiskStorage<D, COUNT> {
    const READ_SIZE: usize = SECTOR_SIZE;
    const WRITE_SIZE: usize = SECTOR_SIZE;
    const BLOCK_SIZE: usize = BLOCK_SIZE as usize;
    const BLOCK_COUNT: usize = COUNT;
    /// No wear levelling: a disk does its own.
    const BLOCK_CYCLES: isize = -1;
    type CACHE_SIZE = U4096;
    /// 16 × 64 bits: the allocator looks 1024 blocks ahead at a time.
    type LOOKAHEAD_SIZE = U16;

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> LfsResult<usize> {
        self.sector(offset, buf.len(), "read")?;
        // littlefs reads within one block.
        let (block, at) = (offset / BLOCK_SIZE as usize, offset % BLOCK_SIZE as usize);
        if at + buf.len() > BLOCK_SIZE as usize {
            return Err(self
                .failures
                .set(format!("littlefs asked to read across a block: {} bytes at {offset}", buf.len())));
        }
        let len = buf.len();
        buf.copy_from_slice(&self.block(block)?[at..at + len]);
        Ok(len)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> LfsResult<usize> {
        let sector = self.sector(offset, data.len(), "write")?;
        let count = data.len() / SECTOR_SIZE;
        if let Err(e) = self.disk.write(sector, data) {
            return Err(self.failures.set(format!("write of {count} sectors at {sector}: {e}")));
        }
        let (block, at) = (offset / BLOCK_SIZE as usize, offset % BLOCK_SIZE as usize);
        if let Some(cached) = self.cache.blocks.get_mut(&block) {
            match cached.get_mut(at..at + data.len()) {
                Some(range) => range.copy_from_slice(data),
                // A write across blocks: forget this one rather than half-update it.
                None => {
                    self.cache.blocks.remove(&block);
                    self.cache.order.retain(|b| *b != block);
                }
            }
        }
        // Durable before littlefs goes on (see the module's documentation).
        if let Err(e) = self.disk.flush() {
            return Err(self.failures.set(format!("flush after a write of {count} sectors at {sector}: {e}")));
        }
        Ok(data.len())
    }

    fn erase(&mut self, offset: usize, len: usize) -> LfsResult<usize> {
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(self.failures.set(format!("littlefs asked to erase {len} bytes at byte {offset}")));
        }
        Ok(len)
    }
}

/// The storage a volume is mounted on.
pub type Mounted<D> = DiskStorage<D, 0>;

/// How [`Volume::mount`] found the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountReport {
    /// Whether the disk was blank and has been formatted.
    pub formatted: bool,
    /// Blocks in the volume.
    pub blocks: u32,
}

impl fmt::Display for MountReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.formatted { "formatted a blank disk and mounted" } else { "mounted" };
        write!(f, "{how} a littlefs volume of {} blocks of {BLOCK_SIZE} bytes", self.blocks)
    }
}

/// A disk ready to mount: its storage and littlefs's allocation, which a mounted
/// [`Filesystem`] borrows.
pub struct Volume<D: Disk> {
    /// The storage.
    pub storage: Mounted<D>,
    /// littlefs's state and caches.
    pub alloc: Allocation<Mounted<D>>,
    /// Blocks the disk holds.
    pub blocks: u32,
    /// Where the storage's failures are told.
    pub failures: Failures,
}

/// littlefs's `error` in words (the binding's own `Debug` says only "Error").
pub fn error_name(error: Error) -> String {
    let name = match error {
        Error::IO => "I/O error",
        Error::CORRUPTION => "corrupt",
        Error::NO_SUCH_ENTRY => "no such entry",
        Error::ENTRY_ALREADY_EXISTED => "exists",
        Error::PATH_NOT_DIR => "not a directory",
        Error::PATH_IS_DIR => "is a directory",
        Error::DIR_NOT_EMPTY => "directory not empty",
        Error::BAD_FILE_DESCRIPTOR => "bad file",
        Error::FILE_TOO_BIG => "file too big",
        Error::INVALID => "invalid (for a mount: not littlefs, or a newer on-disk version than 2.0)",
        Error::NO_SPACE => "no space left",
        Error::NO_MEMORY => "out of memory",
        Error::NO_ATTRIBUTE => "no such attribute",
        Error::FILENAME_TOO_LONG => "name too long",
        _ => "unknown error",
    };
    format!("{name} (littlefs error {})", error.code())
}

/// `what` failed with littlefs's `error`, with the disk failure behind it if there was one.
pub fn describe(failures: &Failures, what: &str, error: Error) -> String {
    match failures.take() {
        Some(failure) => format!("{what}: {}: {failure}", error_name(error)),
        None => format!("{what}: {}", error_name(error)),
    }
}

impl<D: Disk> Volume<D> {
    /// The volume on `disk`, formatted first when the disk is blank (zeros where littlefs keeps
    /// its superblocks). A disk that holds something else is refused and left untouched; so
    /// is one smaller than [`FORMAT_BLOCKS`] blocks.
    pub fn open(disk: D) -> Result<(Volume<D>, bool), String> {
        let sectors = disk.sectors();
        let blocks = u32::try_from(sectors / SECTORS_PER_BLOCK).unwrap_or(u32::MAX).min(MAX_BLOCKS);
        if (blocks as usize) < FORMAT_BLOCKS {
            return Err(format!(
                "the disk has {sectors} sectors; a volume needs at least {} ({FORMAT_BLOCKS} blocks of {BLOCK_SIZE} bytes)",
                FORMAT_BLOCKS as u64 * SECTORS_PER_BLOCK
            ));
        }
        let failures = Failures::default();
        let mut storage = Mounted::new(disk, blocks, failures.clone());
        let mut alloc = Allocation::new();
        let mount_error = match Filesystem::mount(&mut alloc, &mut storage) {
            Ok(_) => return Ok((Volume { storage, alloc: Allocation::new(), blocks, failures }, false)),
            Err(e) => e,
        };
        if let Some(failure) = failures.take() {
            return Err(format!("mounting the volume: {failure}"));
        }
        let mut blank = true;
        for block in 0..2 {
            let bytes = storage.block(block).map_err(|e| describe(&failures, "reading the superblocks", e))?;
            blank &= bytes.iter().all(|&b| b == 0);
        }
        if !blank {
            return Err(format!(
                "the disk holds no littlefs volume (mounting: {}) and is not blank; refusing to format it",
                error_name(mount_error)
            ));
        }
        let mut small = DiskStorage::<D, FORMAT_BLOCKS>::new(storage.disk, blocks, failures.clone());
        Filesystem::format(&mut small).map_err(|e| describe(&failures, "formatting the blank disk", e))?;
        Ok((Volume { storage: Mounted::new(small.disk, blocks, failures.clone()), alloc, blocks, failures }, true))
    }

    /// Mounts the volume, growing it to the whole disk if it is smaller (a disk that has
    /// grown since the last mount). `formatted` is what [`open`](Volume::open) said.
    pub fn mount(&mut self, formatted: bool) -> Result<(Filesystem<'_, Mounted<D>>, MountReport), String> {
        let failures = self.failures.clone();
        let fs = Filesystem::mount(&mut self.alloc, &mut self.storage)
            .map_err(|e| describe(&failures, "mounting the volume", e))?;
        // Growing to the size the volume has already changes nothing.
        fs.grow(self.blocks as usize).map_err(|e| describe(&failures, "growing the volume to the disk", e))?;
        // A power cut can interrupt a rename between directories, or leave an orphan; littlefs
        // finishes or drops them before its first change after a mount. Until then a listing
        // of the directory a file was moved out of misses the entry after it (the power-cut
        // test found this), so the mount makes littlefs do it at once: removing the root
        // first does that, then fails as it must, with nothing removed.
        match fs.remove(littlefs2::path!("/")) {
            Err(Error::INVALID) => {}
            Err(e) => return Err(describe(&failures, "finishing what a power cut interrupted", e)),
            Ok(()) => return Err("littlefs removed the volume's root".into()),
        }
        Ok((fs, MountReport { formatted, blocks: self.blocks }))
    }
}
