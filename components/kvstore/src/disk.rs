//! The storage a [`Store`](crate::log::Store) lives on: a [`Disk`] of [`SECTOR_SIZE`]-byte
//! sectors, and [`MemDisk`], one in memory that can simulate a power cut (for tests).

use std::fmt;

/// An id for a new store on a blank disk: random (std's hash keys come from the system's random
/// source), mixed with the time.
pub fn new_store_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    RandomState::new().hash_one(now)
}

/// Bytes per sector.
pub const SECTOR_SIZE: usize = 512;

/// A disk of [`SECTOR_SIZE`]-byte sectors that the store reads, writes and flushes.
///
/// An implementation takes reads and writes of any length (it splits them as its device needs).
/// Only [`flush`](Disk::flush) makes completed writes durable: until then, a power cut may lose
/// any of them, or keep some sectors of a write and not others.
pub trait Disk {
    /// What went wrong, in words.
    type Error: fmt::Display;

    /// The capacity in sectors.
    fn sectors(&self) -> u64;

    /// `count` sectors (at least 1) from `sector`; all of them lie on the disk.
    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, Self::Error>;

    /// Writes `data` (a positive whole number of sectors, all on the disk) at `sector`.
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), Self::Error>;

    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// A disk in memory. Writes land in a volatile image; [`flush`](Disk::flush) makes it durable;
/// [`crashed`](MemDisk::crashed) is the disk after a power cut (the durable image only). Reads,
/// writes and flushes can be made to fail.
#[derive(Debug, Clone)]
pub struct MemDisk {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// Whether writes fail (with nothing written).
    pub fail_writes: bool,
    /// Whether flushes fail (with nothing made durable).
    pub fail_flushes: bool,
    /// Whether reads fail.
    pub fail_reads: bool,
}

impl MemDisk {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64) -> MemDisk {
        MemDisk::from_image(vec![0; sectors as usize * SECTOR_SIZE])
    }

    /// A disk holding `image` (durably), whose length must be a whole number of sectors.
    pub fn from_image(image: Vec<u8>) -> MemDisk {
        assert!(image.len().is_multiple_of(SECTOR_SIZE), "a disk image of {} bytes is not whole sectors", image.len());
        MemDisk { volatile: image.clone(), durable: image, fail_writes: false, fail_flushes: false, fail_reads: false }
    }

    /// What a read sees now (durable or not).
    pub fn image(&self) -> &[u8] {
        &self.volatile
    }

    /// What has been flushed: all that survives a power cut for sure.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// The disk after a power cut now: its durable image, no failures armed.
    pub fn crashed(&self) -> MemDisk {
        MemDisk::from_image(self.durable.clone())
    }

    fn range(&self, sector: u64, bytes: usize) -> Result<std::ops::Range<usize>, String> {
        let start = usize::try_from(sector).ok().and_then(|s| s.checked_mul(SECTOR_SIZE));
        match start.and_then(|s| Some(s..s.checked_add(bytes)?)) {
            Some(range) if range.end <= self.volatile.len() && bytes > 0 && bytes.is_multiple_of(SECTOR_SIZE) => {
                Ok(range)
            }
            _ => Err(format!(
                "{bytes} bytes at sector {sector} are not whole sectors on a disk of {} sectors",
                self.sectors()
            )),
        }
    }
}

impl Disk for MemDisk {
    type Error = String;

    fn sectors(&self) -> u64 {
        (self.volatile.len() / SECTOR_SIZE) as u64
    }

    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
        if self.fail_reads {
            return Err("injected read failure".into());
        }
        let range = self.range(sector, count as usize * SECTOR_SIZE)?;
        Ok(self.volatile[range].to_vec())
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        if self.fail_writes {
            return Err("injected write failure".into());
        }
        let range = self.range(sector, data.len())?;
        self.volatile[range].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.fail_flushes {
            return Err("injected flush failure".into());
        }
        self.durable.copy_from_slice(&self.volatile);
        Ok(())
    }
}
