//! The module store on a [`Disk`]: an append-only log of entries (a key and the native code
//! compiled for it), replayed at open into an index in memory. A later entry with a key replaces
//! an earlier one (a corrupt entry is replaced by its recompiled code this way).
//!
//! # Disk format (version 1)
//!
//! All integers are little-endian. Sector 0 is the header; entries follow from sector 1 on.
//!
//! | header bytes | field |
//! |---|---|
//! | 0..8 | magic [`HEADER_MAGIC`] (`MICAMOD1`) |
//! | 8..12 | format version: u32 ([`FORMAT_VERSION`]) |
//! | 12..20 | store id: u64, chosen at random when the disk is formatted |
//! | 20..24 | CRC-32 of bytes 0..20 |
//!
//! An entry is one record sector followed by its data, padded with zeros to whole sectors:
//!
//! | record bytes | field |
//! |---|---|
//! | 0..4 | magic [`RECORD_MAGIC`] (`MMR1`) |
//! | 4..12 | sequence number: u64, 1 for the first entry, then one more for each |
//! | 12..20 | data length: u64 |
//! | 20..24 | CRC-32 of the data |
//! | 24..26 | key length K: u16, 1 to [`MAX_KEY_BYTES`] |
//! | 26..26+K | key (UTF-8) |
//! | 508..512 | CRC-32 of the store id (8 bytes) followed by bytes 0..508 |
//!
//! # Commits and recovery
//!
//! A put writes the data, with one blank sector after it, and flushes; then writes the record
//! sector in front of the data and flushes again. Only then is the entry in the index and the put
//! done. A power cut before the second flush leaves the record sector blank (the blank sector the
//! commit before wrote) or torn: it does not check out, and the log ends there. So a record that
//! checks out always has its data on the disk, written before it, and the log always ends at a
//! blank sector or a torn record, never at leftovers beyond it.
//!
//! Opening replays record sectors only (skipping the data) until the first that does not check
//! out. The data's CRC is checked at every get: an entry whose data was damaged after it was
//! written is reported [`StoreError::Corrupt`], by key, and the caller compiles it again and puts
//! it again. Mixing the store id into the record's CRC means a record left from an earlier store
//! on the same disk, or data that looks like a record, does not check out.
//!
//! # Eviction
//!
//! The running system names the entries it references ([`ModuleStore::keep`]: every component's
//! wasm compiled for this CPU). When a put does not fit behind the log's end, the store evicts
//! every entry not named: it reformats the disk in place under a new store id (one header-sector
//! write, after which no older record checks out) and writes the named entries again from
//! sector 1 on, in log order, so that each lands at or before where it was (one entry at a time
//! in memory; data already in place is not written again), then the new entry after them. Only
//! when the named entries and the new one do not fit together does the put fail with
//! [`StoreError::Full`], naming what was needed and what could be free.
//!
//! A power cut during an eviction may lose named entries not yet written again: they are
//! missing at the next boot and compiled again (the store is a cache of what the compiler
//! makes). It never leaves an entry that loads with the wrong bytes: every record is checked
//! against the new id, every entry's data against its CRC.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kvstore::disk::{Disk, SECTOR_SIZE};

/// The first bytes of a formatted disk.
pub const HEADER_MAGIC: [u8; 8] = *b"MICAMOD1";

/// The format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The first bytes of every record sector.
pub const RECORD_MAGIC: [u8; 4] = *b"MMR1";

/// The longest key.
pub const MAX_KEY_BYTES: usize = 400;

/// Where the record's CRC lies in its sector.
const RECORD_CRC_AT: usize = SECTOR_SIZE - 4;

/// Sectors read at once (the block protocol's largest request is 64).
const READ_SECTORS: u32 = 64;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The disk failed.
    Device(String),
    /// The disk holds something else than a module store (nothing was written to it).
    NotAStore,
    /// The disk holds a module store of another format version (nothing was written to it).
    OtherVersion(u32),
    /// The disk is too small for a store.
    TooSmall(u64),
    /// The entry's data does not match its checksum.
    Corrupt {
        /// Its key.
        key: String,
        /// How it does not match.
        reason: String,
    },
    /// There is no room for the entry, even with every entry the system does not reference
    /// evicted.
    Full {
        /// Sectors the entry needs.
        needed: u64,
        /// Sectors that would be free with every entry the system does not reference evicted.
        free: u64,
        /// Sectors the entries the system references hold.
        kept: u64,
    },
    /// The key is empty or longer than [`MAX_KEY_BYTES`].
    BadKey(usize),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Device(e) => write!(f, "the disk failed: {e}"),
            StoreError::NotAStore => write!(f, "the disk holds something else than a module store; left untouched"),
            StoreError::OtherVersion(v) => {
                write!(f, "the disk holds a module store of format version {v}, this is version {FORMAT_VERSION}")
            }
            StoreError::TooSmall(sectors) => write!(f, "a disk of {sectors} sectors is too small for a module store"),
            StoreError::Corrupt { key, reason } => write!(f, "entry {key} is corrupt: {reason}"),
            StoreError::Full { needed, free, kept } => write!(
                f,
                "the store is full: the entry needs {} KiB, {} KiB are free with every entry the system does not \
                 reference evicted ({} KiB hold entries it references)",
                kib_up(*needed),
                kib(*free),
                kib_up(*kept)
            ),
            StoreError::BadKey(len) => write!(f, "a key of {len} bytes (1 to {MAX_KEY_BYTES} allowed)"),
        }
    }
}

fn device(e: impl fmt::Display) -> StoreError {
    StoreError::Device(e.to_string())
}

/// Where an entry lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Its first data sector.
    data: u64,
    /// Its data's length in bytes.
    len: u64,
    /// Its data's CRC-32.
    crc: u32,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Whether the disk was blank and has just been formatted.
    pub formatted: bool,
    /// Records replayed.
    pub records: u64,
    /// Distinct keys.
    pub entries: usize,
    /// Where the log ends (the next record's sector).
    pub end: u64,
    /// The disk's size in sectors.
    pub sectors: u64,
    /// Where replay stopped at a record that did not check out (a torn write), if it did.
    pub torn_at: Option<u64>,
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries ({} records), {} of {} KiB used",
            self.entries,
            self.records,
            kib(self.end),
            kib(self.sectors)
        )?;
        if let Some(at) = self.torn_at {
            write!(f, " (discarded a torn record at sector {at})")?;
        }
        Ok(())
    }
}

/// What an eviction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Entries dropped (not referenced by the system, or found corrupt).
    pub dropped: usize,
    /// Entries written again.
    pub kept: usize,
    /// Sectors the log took before the eviction.
    pub before: u64,
    /// Sectors the log takes after (before the new entry).
    pub after: u64,
}

impl fmt::Display for Evicted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "evicted {} entries no manifest references, kept {} ({} KiB used, was {} KiB)",
            self.dropped,
            self.kept,
            kib(self.after),
            kib(self.before)
        )
    }
}

/// KiB in `sectors`, rounded down (what is free or used).
fn kib(sectors: u64) -> u64 {
    sectors * SECTOR_SIZE as u64 / 1024
}

/// KiB in `sectors`, rounded up (what is needed).
fn kib_up(sectors: u64) -> u64 {
    (sectors * SECTOR_SIZE as u64).div_ceil(1024)
}

/// Sectors that `len` bytes take.
fn sectors_for(len: u64) -> u64 {
    len.div_ceil(SECTOR_SIZE as u64)
}

/// The module store.
#[derive(Debug)]
pub struct ModuleStore<D: Disk> {
    disk: D,
    id: u64,
    index: BTreeMap<String, Entry>,
    /// The sector of the next record.
    end: u64,
    /// The next record's sequence number.
    seq: u64,
    /// Keys the running system references: never evicted.
    keep: BTreeSet<String>,
}

/// Writes the header of a store with id `id` and a blank first record sector (so the log ends at
/// once), and flushes.
fn format<D: Disk>(disk: &mut D, id: u64) -> Result<(), StoreError> {
    let mut header = vec![0u8; SECTOR_SIZE];
    header[0..8].copy_from_slice(&HEADER_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header.extend_from_slice(&[0; SECTOR_SIZE]);
    disk.write(0, &header).map_err(device)?;
    disk.flush().map_err(device)
}

/// The id of the store that replaces the one with id `id` after `seq` records: another 64-bit
/// value, mixed (SplitMix64's finaliser), so that no record of an earlier generation checks out.
fn next_id(id: u64, seq: u64) -> u64 {
    let mut z = id.wrapping_add(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let z = z ^ (z >> 31);
    if z == id { z ^ 1 } else { z }
}

/// The CRC of a record sector's bytes 0..508, keyed by the store id.
fn record_crc(id: u64, sector: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(&sector[..RECORD_CRC_AT]);
    h.finalize()
}

impl<D: Disk> ModuleStore<D> {
    /// Opens the store on `disk`, formatting it with `new_id` when it is blank (all zeros in its
    /// header sector), and replays its log.
    pub fn open(mut disk: D, new_id: u64) -> Result<(ModuleStore<D>, OpenReport), StoreError> {
        let sectors = disk.sectors();
        if sectors < 3 {
            return Err(StoreError::TooSmall(sectors));
        }
        let header = disk.read(0, 1).map_err(device)?;
        let (id, formatted) = if header.iter().all(|b| *b == 0) {
            format(&mut disk, new_id)?;
            (new_id, true)
        } else {
            if header[0..8] != HEADER_MAGIC || crc32fast::hash(&header[..20]).to_le_bytes() != header[20..24] {
                return Err(StoreError::NotAStore);
            }
            let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
            if version != FORMAT_VERSION {
                return Err(StoreError::OtherVersion(version));
            }
            (u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")), false)
        };
        let mut store = ModuleStore { disk, id, index: BTreeMap::new(), end: 1, seq: 1, keep: BTreeSet::new() };
        let mut records = 0;
        let mut torn_at = None;
        while store.end < sectors {
            let sector = store.disk.read(store.end, 1).map_err(device)?;
            match store.parse_record(&sector, sectors) {
                Some((key, entry)) => {
                    store.index.insert(key, entry);
                    store.end = entry.data + sectors_for(entry.len);
                    store.seq += 1;
                    records += 1;
                }
                None => {
                    if sector.iter().any(|b| *b != 0) {
                        torn_at = Some(store.end);
                    }
                    break;
                }
            }
        }
        let report = OpenReport { formatted, records, entries: store.index.len(), end: store.end, sectors, torn_at };
        Ok((store, report))
    }

    /// The key and entry of the record sector at the log's end, if it checks out.
    fn parse_record(&self, sector: &[u8], sectors: u64) -> Option<(String, Entry)> {
        let u64_at = |at: usize| u64::from_le_bytes(sector[at..at + 8].try_into().expect("8 bytes"));
        if sector[0..4] != RECORD_MAGIC
            || sector[RECORD_CRC_AT..].to_vec() != record_crc(self.id, sector).to_le_bytes()
            || u64_at(4) != self.seq
        {
            return None;
        }
        let len = u64_at(12);
        let crc = u32::from_le_bytes(sector[20..24].try_into().expect("4 bytes"));
        let key_len = usize::from(u16::from_le_bytes([sector[24], sector[25]]));
        if key_len == 0 || key_len > MAX_KEY_BYTES {
            return None;
        }
        let key = String::from_utf8(sector[26..26 + key_len].to_vec()).ok()?;
        let data = self.end + 1;
        if data.checked_add(sectors_for(len))? > sectors {
            return None;
        }
        Some((key, Entry { data, len, crc }))
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Sectors free for new entries.
    pub fn free_sectors(&self) -> u64 {
        self.disk.sectors() - self.end
    }

    /// The data of the entry `key`, checked against its CRC; `None` when there is none.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(entry) = self.index.get(key).copied() else { return Ok(None) };
        self.get_entry(key, entry).map(Some)
    }

    /// The data of `entry`, checked against its CRC.
    fn get_entry(&mut self, key: &str, entry: Entry) -> Result<Vec<u8>, StoreError> {
        let mut data = Vec::with_capacity(usize::try_from(entry.len).unwrap_or(0));
        let mut sector = entry.data;
        let mut left = sectors_for(entry.len);
        while left > 0 {
            let count = u32::try_from(left.min(u64::from(READ_SECTORS))).expect("at most 64");
            data.extend_from_slice(&self.disk.read(sector, count).map_err(device)?);
            sector += u64::from(count);
            left -= u64::from(count);
        }
        data.truncate(usize::try_from(entry.len).unwrap_or(usize::MAX));
        let crc = crc32fast::hash(&data);
        if crc != entry.crc {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                reason: format!("its {} bytes have CRC-32 {crc:08x}, its record says {:08x}", entry.len, entry.crc),
            });
        }
        Ok(data)
    }

    /// Names keys the running system references (added to those named before): a full store
    /// does not evict them.
    pub fn keep(&mut self, keys: impl IntoIterator<Item = String>) {
        self.keep.extend(keys);
    }

    /// Sectors an entry of `len` bytes takes: its record sector and its data.
    fn entry_sectors(len: u64) -> u64 {
        1 + sectors_for(len)
    }

    /// Whether an entry of `len` bytes under `key` can be stored, evicting what the system does
    /// not reference if need be; [`StoreError::Full`] when it cannot.
    pub fn room_for(&self, key: &str, len: u64) -> Result<(), StoreError> {
        let needed = Self::entry_sectors(len);
        if needed <= self.free_sectors() {
            return Ok(());
        }
        let kept: u64 = self
            .index
            .iter()
            .filter(|(k, _)| self.keep.contains(*k) && k.as_str() != key)
            .map(|(_, e)| Self::entry_sectors(e.len))
            .sum();
        let free = (self.disk.sectors() - 1).saturating_sub(kept);
        if needed > free {
            return Err(StoreError::Full { needed, free, kept });
        }
        Ok(())
    }

    /// Stores `data` under `key` durably (see the module's commit order), replacing any entry
    /// with that key; when it does not fit, evicts every entry the system does not reference
    /// first (see the module's eviction), and says what it evicted.
    pub fn put(&mut self, key: &str, data: &[u8]) -> Result<Option<Evicted>, StoreError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(StoreError::BadKey(key.len()));
        }
        self.room_for(key, data.len() as u64)?;
        let evicted =
            if Self::entry_sectors(data.len() as u64) > self.free_sectors() { Some(self.evict(key)?) } else { None };
        self.append(key, data, false)?;
        Ok(evicted)
    }

    /// Drops every entry the system does not reference (and the entry `replacing`, which a put
    /// is about to replace): a new store id, then the referenced entries written again in log
    /// order from sector 1 on.
    fn evict(&mut self, replacing: &str) -> Result<Evicted, StoreError> {
        let before = self.end;
        let mut kept: Vec<(String, Entry)> = self
            .index
            .iter()
            .filter(|(k, _)| self.keep.contains(*k) && k.as_str() != replacing)
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        kept.sort_by_key(|(_, e)| e.data);
        let total = self.index.len();
        self.id = next_id(self.id, self.seq);
        format(&mut self.disk, self.id)?;
        self.index.clear();
        self.end = 1;
        self.seq = 1;
        let mut rewritten = 0;
        for (key, entry) in kept {
            // Each lands at or before where it lay: read it whole before writing over it.
            match self.get_entry(&key, entry) {
                Ok(data) => {
                    let in_place = self.end + 1 == entry.data;
                    self.append(&key, &data, in_place)?;
                    rewritten += 1;
                }
                // Damaged since it was written: dropped (the system compiles it again).
                Err(StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Evicted { dropped: total - rewritten, kept: rewritten, before, after: self.end })
    }

    /// Appends an entry at the log's end; with `data_in_place`, its data already lies there.
    fn append(&mut self, key: &str, data: &[u8], data_in_place: bool) -> Result<(), StoreError> {
        let sectors = self.disk.sectors();
        let data_sectors = sectors_for(data.len() as u64);
        let start = self.end + 1;
        let ends_at_disk_end = start + data_sectors == sectors;
        // The data, and the blank sector after it unless the data ends at the end of the disk.
        if data_in_place {
            if !ends_at_disk_end {
                self.disk.write(start + data_sectors, &[0; SECTOR_SIZE]).map_err(device)?;
            }
        } else {
            let mut padded = data.to_vec();
            let blank = if ends_at_disk_end { 0 } else { SECTOR_SIZE };
            padded.resize(data_sectors as usize * SECTOR_SIZE + blank, 0);
            if !padded.is_empty() {
                self.disk.write(start, &padded).map_err(device)?;
            }
        }
        self.disk.flush().map_err(device)?;
        let crc = crc32fast::hash(data);
        let mut record = vec![0u8; SECTOR_SIZE];
        record[0..4].copy_from_slice(&RECORD_MAGIC);
        record[4..12].copy_from_slice(&self.seq.to_le_bytes());
        record[12..20].copy_from_slice(&(data.len() as u64).to_le_bytes());
        record[20..24].copy_from_slice(&crc.to_le_bytes());
        record[24..26].copy_from_slice(&(key.len() as u16).to_le_bytes());
        record[26..26 + key.len()].copy_from_slice(key.as_bytes());
        let record_crc = record_crc(self.id, &record);
        record[RECORD_CRC_AT..].copy_from_slice(&record_crc.to_le_bytes());
        self.disk.write(self.end, &record).map_err(device)?;
        self.disk.flush().map_err(device)?;
        self.index.insert(key.to_string(), Entry { data: start, len: data.len() as u64, crc });
        self.end = start + data_sectors;
        self.seq += 1;
        Ok(())
    }

    /// The disk, for tests.
    pub fn into_disk(self) -> D {
        self.disk
    }
}

#[cfg(test)]
mod tests {
    use kvstore::disk::MemDisk;

    use super::*;

    fn open(disk: MemDisk) -> (ModuleStore<MemDisk>, OpenReport) {
        ModuleStore::open(disk, 0x5eed).unwrap_or_else(|e| panic!("{e}"))
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn entries_survive_a_reopen_and_later_ones_replace_earlier() {
        let (mut store, report) = open(MemDisk::new(2048));
        assert!(report.formatted);
        assert_eq!(report.entries, 0);
        assert_eq!(store.get("a").expect("get"), None);
        store.put("a", &data(100_000, 1)).expect("put a");
        store.put("b", &[]).expect("put empty");
        store.put("a", &data(700, 2)).expect("replace a");
        let (mut store, report) = open(store.into_disk().crashed());
        assert!(!report.formatted);
        assert_eq!((report.records, report.entries, report.torn_at), (3, 2, None));
        assert_eq!(store.get("a").expect("get"), Some(data(700, 2)));
        assert_eq!(store.get("b").expect("get"), Some(Vec::new()));
        assert_eq!(report.to_string(), format!("2 entries (3 records), {} of 1024 KiB used", report.end / 2));
    }

    #[test]
    fn a_power_cut_at_any_point_of_a_put_leaves_the_entry_whole_or_absent() {
        let (mut store, _) = open(MemDisk::new(512));
        store.put("old", &data(3000, 9)).expect("put");
        let before = store.into_disk();
        // A put makes four disk operations: data, flush, record, flush. Cut power after each.
        for ops in 0..=4 {
            let mut disk = before.clone();
            let mut allowed = ops;
            let result = {
                // Opening a formatted disk writes nothing; the put gets `ops` operations.
                let cut = CutDisk { inner: &mut disk, left: &mut allowed };
                let (mut cut_store, _) = ModuleStore::open(cut, 0x5eed).expect("open");
                cut_store.put("new", &data(5000, 4))
            };
            let (mut after, report) = open(disk.crashed());
            assert_eq!(after.get("old").expect("old"), Some(data(3000, 9)), "cut after {ops} operations");
            match after.get("new").expect("new readable or absent") {
                Some(got) => assert_eq!(got, data(5000, 4), "cut after {ops} operations"),
                None => assert!(result.is_err(), "a put that succeeded was lost (cut after {ops}): {report}"),
            }
            // The store goes on: the next put lands and survives.
            after.put("next", &data(10, 1)).expect("put after the cut");
            let (mut again, _) = open(after.into_disk().crashed());
            assert_eq!(again.get("next").expect("next"), Some(data(10, 1)));
        }
    }

    /// A disk that allows `left` more operations (reads do not count: they change nothing) and
    /// then fails every write and flush, as a machine that lost power.
    struct CutDisk<'a> {
        inner: &'a mut MemDisk,
        left: &'a mut usize,
    }

    impl CutDisk<'_> {
        fn spend(&mut self) -> Result<(), String> {
            if *self.left == 0 {
                return Err("power cut".into());
            }
            *self.left -= 1;
            Ok(())
        }
    }

    impl Disk for CutDisk<'_> {
        type Error = String;
        fn sectors(&self) -> u64 {
            self.inner.sectors()
        }
        fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
            self.inner.read(sector, count)
        }
        fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
            self.spend()?;
            self.inner.write(sector, data)
        }
        fn flush(&mut self) -> Result<(), String> {
            self.spend()?;
            self.inner.flush()
        }
    }

    #[test]
    fn a_torn_record_ends_the_log_and_is_overwritten() {
        let (mut store, _) = open(MemDisk::new(256));
        store.put("a", &data(600, 1)).expect("put");
        let end = store.end;
        let mut disk = store.into_disk();
        // Half a record sector, as a cut during its write leaves it.
        disk.write(end, &[0xa5; SECTOR_SIZE]).expect("write");
        disk.flush().expect("flush");
        let (mut store, report) = open(disk);
        assert_eq!(report.torn_at, Some(end));
        assert_eq!(report.entries, 1);
        store.put("b", &data(10, 2)).expect("put over the torn record");
        let (mut store, report) = open(store.into_disk().crashed());
        assert_eq!((report.entries, report.torn_at), (2, None));
        assert_eq!(store.get("b").expect("b"), Some(data(10, 2)));
    }

    #[test]
    fn damaged_data_is_named_and_a_new_put_replaces_it() {
        let (mut store, _) = open(MemDisk::new(256));
        store.put("k", &data(2000, 3)).expect("put");
        let entry = store.index["k"];
        let mut disk = store.into_disk();
        let mut sector = disk.read(entry.data + 1, 1).expect("read");
        sector[7] ^= 0x40;
        disk.write(entry.data + 1, &sector).expect("write");
        let (mut store, _) = open(disk);
        let e = store.get("k").expect_err("corrupt");
        assert!(matches!(e, StoreError::Corrupt { ref key, .. } if key == "k"), "{e}");
        assert!(e.to_string().starts_with("entry k is corrupt: its 2000 bytes have CRC-32"), "{e}");
        store.put("k", &data(2000, 3)).expect("put again");
        assert_eq!(store.get("k").expect("k"), Some(data(2000, 3)));
    }

    #[test]
    fn a_full_store_refuses_with_what_was_needed() {
        let (mut store, _) = open(MemDisk::new(16));
        store.keep(["a".to_string(), "b".to_string()]);
        store.put("a", &data(4096, 1)).expect("fits");
        let e = store.put("b", &data(4096, 2)).expect_err("full");
        assert_eq!(e, StoreError::Full { needed: 9, free: 6, kept: 9 });
        assert_eq!(
            e.to_string(),
            "the store is full: the entry needs 5 KiB, 3 KiB are free with every entry the system does not reference \
             evicted (5 KiB hold entries it references)"
        );
        // An entry that ends exactly at the end of the disk fits (no blank sector after it).
        assert_eq!(store.put("c", &data(2560, 3)), Ok(None), "fits to the last sector");
        let (mut store, report) = open(store.into_disk().crashed());
        assert_eq!(report.entries, 2);
        assert_eq!(store.get("c").expect("c"), Some(data(2560, 3)));
    }

    #[test]
    fn a_full_store_evicts_what_the_system_does_not_reference() {
        let (mut store, _) = open(MemDisk::new(64));
        for (key, seed) in [("old-1", 1), ("kept-1", 2), ("old-2", 3), ("kept-2", 4)] {
            assert_eq!(store.put(key, &data(5000, seed)), Ok(None));
        }
        // A replaced entry's first version is dead space too.
        assert_eq!(store.put("kept-1", &data(3000, 5)), Ok(None));
        store.keep(["kept-1".to_string(), "kept-2".to_string(), "new".to_string()]);
        let evicted = store.put("new", &data(9000, 6)).expect("evicts").expect("an eviction");
        assert_eq!(evicted, Evicted { dropped: 2, kept: 2, before: 52, after: 19 });
        assert_eq!(evicted.to_string(), "evicted 2 entries no manifest references, kept 2 (9 KiB used, was 26 KiB)");
        let (mut store, report) = open(store.into_disk().crashed());
        assert_eq!((report.entries, report.records), (3, 3));
        assert_eq!(store.get("kept-1").expect("kept-1"), Some(data(3000, 5)));
        assert_eq!(store.get("kept-2").expect("kept-2"), Some(data(5000, 4)));
        assert_eq!(store.get("new").expect("new"), Some(data(9000, 6)));
        assert_eq!(store.get("old-1").expect("old-1"), None);
        // Without a keep list every entry is evictable.
        let evicted = store.put("big", &data(25_000, 7)).expect("evicts all").expect("an eviction");
        assert_eq!((evicted.dropped, evicted.kept), (3, 0));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_refused_put_changes_nothing() {
        let (mut store, _) = open(MemDisk::new(32));
        store.keep(["a".to_string()]);
        store.put("a", &data(8000, 1)).expect("put");
        store.put("b", &data(4000, 2)).expect("put");
        let before = store.into_disk();
        let (mut store, _) = open(before.clone());
        store.keep(["a".to_string()]);
        assert!(matches!(store.put("c", &data(9000, 3)), Err(StoreError::Full { .. })));
        assert_eq!(store.into_disk().read(0, 32), before.clone().read(0, 32));
    }

    #[test]
    fn a_corrupt_entry_is_dropped_at_eviction() {
        let (mut store, _) = open(MemDisk::new(48));
        store.keep(["a".to_string(), "b".to_string()]);
        store.put("a", &data(4000, 1)).expect("put");
        store.put("b", &data(4000, 2)).expect("put");
        store.put("x", &data(4000, 3)).expect("put");
        let entry = store.index["a"];
        let mut disk = store.into_disk();
        let mut sector = disk.read(entry.data, 1).expect("read");
        sector[0] ^= 1;
        disk.write(entry.data, &sector).expect("write");
        let (mut store, _) = open(disk);
        store.keep(["a".to_string(), "b".to_string()]);
        let evicted = store.put("c", &data(10_000, 4)).expect("put").expect("an eviction");
        assert_eq!((evicted.dropped, evicted.kept), (2, 1));
        assert_eq!(store.get("a").expect("a"), None);
        assert_eq!(store.get("b").expect("b"), Some(data(4000, 2)));
    }

    #[test]
    fn a_power_cut_during_an_eviction_never_leaves_wrong_bytes() {
        let (mut store, _) = open(MemDisk::new(64));
        for (key, seed) in [("old", 1), ("kept-1", 2), ("kept-2", 3)] {
            store.put(key, &data(6000, seed)).expect("put");
        }
        let before = store.into_disk();
        let keep = || ["kept-1".to_string(), "kept-2".to_string(), "new".to_string()];
        let mut ops = 0;
        loop {
            let mut disk = before.clone();
            let mut allowed = ops;
            let result = {
                let cut = CutDisk { inner: &mut disk, left: &mut allowed };
                let (mut cut_store, _) = ModuleStore::open(cut, 0x5eed).expect("open");
                cut_store.keep(keep());
                cut_store.put("new", &data(12_000, 4))
            };
            let (mut after, report) = open(disk.crashed());
            // What is there has the right bytes; what the put acknowledged is there.
            for (key, want) in [("kept-1", data(6000, 2)), ("kept-2", data(6000, 3)), ("new", data(12_000, 4))] {
                if let Some(got) = after.get(key).unwrap_or_else(|e| panic!("cut after {ops}: {e}")) {
                    assert_eq!(got, want, "{key}, cut after {ops} operations");
                } else {
                    assert!(result.is_err() || key == "kept-1" || key == "kept-2", "{key} lost: {report}");
                }
            }
            if let Some(got) = after.get("old").expect("old") {
                assert_eq!(got, data(6000, 1));
            }
            after.keep(keep());
            after.put("next", &data(100, 5)).expect("put after the cut");
            if result.is_ok() {
                assert!(after.get("kept-1").expect("kept-1").is_some() && after.get("kept-2").expect("2").is_some());
                break;
            }
            ops += 1;
        }
        assert!(ops >= 6, "the eviction took {ops} operations");
    }

    #[test]
    fn other_disks_are_refused_and_left_alone() {
        let mut disk = MemDisk::new(16);
        disk.write(0, &[0x42; SECTOR_SIZE]).expect("write");
        disk.flush().expect("flush");
        assert_eq!(ModuleStore::open(disk.clone(), 1).expect_err("not a store"), StoreError::NotAStore);
        let (store, _) = open(MemDisk::new(16));
        let mut disk = store.into_disk();
        let mut header = disk.read(0, 1).expect("read");
        header[8] = 2;
        let crc = crc32fast::hash(&header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
        disk.write(0, &header).expect("write");
        assert_eq!(ModuleStore::open(disk, 1).expect_err("version 2"), StoreError::OtherVersion(2));
        assert_eq!(ModuleStore::open(MemDisk::new(2), 1).expect_err("small"), StoreError::TooSmall(2));
        let (mut store, _) = open(MemDisk::new(16));
        assert_eq!(store.put("", &[1]), Err(StoreError::BadKey(0)));
        assert_eq!(store.put(&"k".repeat(MAX_KEY_BYTES + 1), &[1]), Err(StoreError::BadKey(MAX_KEY_BYTES + 1)));
    }

    #[test]
    fn records_of_another_store_on_the_same_disk_do_not_check_out() {
        let (mut store, _) = open(MemDisk::new(64));
        store.put("a", &data(100, 1)).expect("put");
        let mut disk = store.into_disk();
        // Reformat in place with another id: the old record is still at sector 1.
        let mut header = disk.read(0, 1).expect("read");
        header[12..20].copy_from_slice(&7u64.to_le_bytes());
        let crc = crc32fast::hash(&header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
        disk.write(0, &header).expect("write");
        let (_, report) = ModuleStore::open(disk, 1).expect("open");
        assert_eq!(report.entries, 0);
        assert_eq!(report.torn_at, Some(1));
    }
}
