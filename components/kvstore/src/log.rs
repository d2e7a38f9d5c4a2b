//! The store: an append-only log of checksummed records on a [`Disk`], and the in-memory index
//! that replaying it builds.
//!
//! # Disk format (version 1)
//!
//! All integers are little-endian. Sector 0 is the header; records follow from sector 1 on.
//!
//! | header bytes | field |
//! |---|---|
//! | 0..8 | magic [`HEADER_MAGIC`] (`MICAKVS1`) |
//! | 8..12 | format version: u32 ([`FORMAT_VERSION`]) |
//! | 12..20 | store id: u64, chosen at random when the disk is formatted |
//! | 20..24 | CRC-32 of bytes 0..20 |
//! | 24..512 | zero |
//!
//! Each record starts on a sector boundary and is padded with zeros to whole sectors:
//!
//! | record bytes | field |
//! |---|---|
//! | 0..4 | magic [`RECORD_MAGIC`] (`KVR1`) |
//! | 4..12 | sequence number: u64, 1 for the first record, then one more for each |
//! | 12 | op: 1 put, 2 delete |
//! | 13..17 | key length K: u32 |
//! | 17..21 | value length V: u32 (0 for a delete) |
//! | 21..21+K | key (UTF-8) |
//! | 21+K..21+K+V | value (UTF-8) |
//! | next 4 | CRC-32 of the store id (8 bytes) followed by bytes 0..21+K+V |
//!
//! A commit writes its record together with one blank sector after it (unless the record ends at
//! the end of the disk), in one write: the log always ends at a blank sector or at a record torn
//! by the last crash, never at leftovers of an older torn record beyond the end.
//!
//! Mixing the store id into the CRC means that a record left over from an earlier store on the
//! same disk, or bytes a client chose to look like a record, does not check out.
//!
//! # Commits and recovery
//!
//! A put or delete writes one record at the log's end and flushes; only then does it change the
//! index and succeed, so what a caller was told has happened survives a power cut. Opening a
//! formatted disk replays records from sector 1 until the first one that does not check out
//! (wrong magic, sequence number, op, lengths or CRC, or running past the end of the disk): that
//! is a record torn by a crash, or never written; the log ends there and the next record
//! overwrites it. A read error while replaying fails the open rather than ending the log early,
//! which would let later writes overwrite good records.
//!
//! Since every record depends on those before it being readable, a record damaged in the middle
//! of the log (not by a crash, which only tears the last) hides all that follow.
//!
//! When the log reaches the end of the disk, puts and deletes fail with [`StoreError::Full`].
//! There is no compaction yet: overwritten and deleted values keep their space.

use std::collections::BTreeMap;
use std::fmt;

use crate::disk::{Disk, SECTOR_SIZE};

/// The first bytes of a formatted disk.
pub const HEADER_MAGIC: [u8; 8] = *b"MICAKVS1";

/// The format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The first bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"KVR1";

/// The largest key plus value one record holds, in bytes (the IPC message limit: no request
/// carries more).
pub const MAX_PAYLOAD_BYTES: usize = 65536;

/// The smallest disk a store fits on: the header and one sector of log.
pub const MIN_SECTORS: u64 = 2;

/// Bytes of a record before its key.
const RECORD_HEADER_BYTES: usize = 21;
/// Bytes of the CRC after its value.
const CRC_BYTES: usize = 4;
/// Sectors read at once while replaying (32 KiB: one block request).
const READ_AHEAD_SECTORS: u32 = 64;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Why the store could not be opened, or an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk cannot hold a store.
    #[error("the disk has {sectors} sector(s); a store needs at least {MIN_SECTORS}")]
    TooSmall {
        /// The disk's capacity.
        sectors: u64,
    },
    /// Sector 0 holds something else than a store header (and is not blank).
    #[error(
        "sector 0 is not a kvstore header (its first bytes are {found:02x?}, not {HEADER_MAGIC:02x?} \"MICAKVS1\"): \
         refusing to format over data that is not a store"
    )]
    Foreign {
        /// The first 8 bytes of sector 0.
        found: [u8; 8],
    },
    /// The store was written in another format version.
    #[error("the store on this disk has format version {found}; this kvstore reads only version {FORMAT_VERSION}")]
    Version {
        /// The version in the header.
        found: u32,
    },
    /// The header's CRC does not check out.
    #[error("the kvstore header in sector 0 is corrupt: its CRC-32 is {stored:#010x}, its bytes give {computed:#010x}")]
    CorruptHeader {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the header's bytes.
        computed: u32,
    },
    /// The log has reached the end of the disk.
    #[error("disk full")]
    Full,
    /// A key and value too large for one record.
    #[error(
        "record too large: a {key}-byte key and a {value}-byte value are over the limit of {MAX_PAYLOAD_BYTES} bytes"
    )]
    TooLarge {
        /// The key's length.
        key: usize,
        /// The value's length.
        value: usize,
    },
    /// The disk failed a request.
    #[error("disk {what} failed: {message}")]
    Disk {
        /// The request, e.g. `write of 1 sector(s) at sector 7`.
        what: String,
        /// The disk's error.
        message: String,
    },
}

/// What opening a disk found; its [`Display`](fmt::Display) is the line `kvstore` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Whether the disk was blank and has just been formatted.
    pub formatted: bool,
    /// Records replayed.
    pub records: u64,
    /// Keys in the index afterwards.
    pub keys: usize,
    /// The sector where the next record goes.
    pub log_end: u64,
    /// Where replay stopped at a record that did not check out, if it did (rather than at a
    /// blank sector or the end of the disk).
    pub torn_at: Option<u64>,
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "opened: {} records replayed, {} keys, log end at sector {}", self.records, self.keys, self.log_end)?;
        if let Some(sector) = self.torn_at {
            write!(f, " (discarded a torn record at sector {sector})")?;
        }
        Ok(())
    }
}

/// A key-value store kept as a log on a [`Disk`], with its index in memory.
#[derive(Debug)]
pub struct Store<D> {
    disk: D,
    store_id: u64,
    index: BTreeMap<String, String>,
    /// The sequence number of the next record.
    next_sequence: u64,
    /// The sector where the next record goes.
    log_end: u64,
}

fn disk_error(what: impl Into<String>) -> impl FnOnce(&dyn fmt::Display) -> StoreError {
    move |e| StoreError::Disk { what: what.into(), message: e.to_string() }
}

fn sectors_for(bytes: usize) -> u64 {
    bytes.div_ceil(SECTOR_SIZE) as u64
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The header sector of a store with id `store_id`.
fn encode_header(store_id: u64) -> Vec<u8> {
    let mut sector = vec![0; SECTOR_SIZE];
    sector[0..8].copy_from_slice(&HEADER_MAGIC);
    sector[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    sector[12..20].copy_from_slice(&store_id.to_le_bytes());
    let crc = crc32fast::hash(&sector[0..20]);
    sector[20..24].copy_from_slice(&crc.to_le_bytes());
    sector
}

/// The store id in header sector `sector`, or why it is not a store's header.
fn decode_header(sector: &[u8]) -> Result<u64, StoreError> {
    let found: [u8; 8] = sector[0..8].try_into().expect("8 bytes");
    if found != HEADER_MAGIC {
        return Err(StoreError::Foreign { found });
    }
    let version = u32_at(sector, 8);
    if version != FORMAT_VERSION {
        return Err(StoreError::Version { found: version });
    }
    let stored = u32_at(sector, 20);
    let computed = crc32fast::hash(&sector[0..20]);
    if stored != computed {
        return Err(StoreError::CorruptHeader { stored, computed });
    }
    Ok(u64_at(sector, 12))
}

fn record_crc(store_id: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&store_id.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// A record, padded to whole sectors.
fn encode_record(store_id: u64, sequence: u64, op: u8, key: &str, value: &str) -> Vec<u8> {
    let body_len = RECORD_HEADER_BYTES + key.len() + value.len();
    let mut record = Vec::with_capacity(sectors_for(body_len + CRC_BYTES) as usize * SECTOR_SIZE);
    record.extend_from_slice(&RECORD_MAGIC);
    record.extend_from_slice(&sequence.to_le_bytes());
    record.push(op);
    record.extend_from_slice(&(key.len() as u32).to_le_bytes());
    record.extend_from_slice(&(value.len() as u32).to_le_bytes());
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(value.as_bytes());
    let crc = record_crc(store_id, &record);
    record.extend_from_slice(&crc.to_le_bytes());
    record.resize(record.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE, 0);
    record
}

/// The fixed fields of a record whose first sector is `first`, if they are plausible for the
/// record numbered `sequence`: (op, key length, value length).
fn plausible_record(first: &[u8], sequence: u64) -> Option<(u8, usize, usize)> {
    if first[0..4] != RECORD_MAGIC || u64_at(first, 4) != sequence {
        return None;
    }
    let op = first[12];
    let key = u32_at(first, 13) as usize;
    let value = u32_at(first, 17) as usize;
    let fits = key.checked_add(value).is_some_and(|n| n <= MAX_PAYLOAD_BYTES);
    match op {
        OP_PUT if fits => Some((op, key, value)),
        OP_DELETE if fits && value == 0 => Some((op, key, value)),
        _ => None,
    }
}

/// Sectors read ahead during replay, so that it asks the disk for 32 KiB at a time.
struct ReadAhead {
    start: u64,
    data: Vec<u8>,
}

impl ReadAhead {
    /// Sectors `sector..sector + count` (all on the disk).
    fn get<D: Disk>(&mut self, disk: &mut D, sector: u64, count: u64) -> Result<&[u8], StoreError> {
        let held = (self.data.len() / SECTOR_SIZE) as u64;
        if sector < self.start || sector + count > self.start + held {
            let want = count.max(READ_AHEAD_SECTORS.into()).min(disk.sectors() - sector) as u32;
            self.data = disk
                .read(sector, want)
                .map_err(|e| disk_error(format!("read of {want} sector(s) at sector {sector}"))(&e))?;
            self.start = sector;
        }
        let at = (sector - self.start) as usize * SECTOR_SIZE;
        Ok(&self.data[at..at + count as usize * SECTOR_SIZE])
    }
}

impl<D: Disk> Store<D> {
    /// Opens the store on `disk`: formats a blank disk (sector 0 all zeros) as a new store with
    /// id `new_store_id`, else checks its header and replays its log. Refuses a disk whose
    /// sector 0 is anything else than a blank sector or a version-1 store header.
    pub fn open(mut disk: D, new_store_id: u64) -> Result<(Store<D>, OpenReport), StoreError> {
        let sectors = disk.sectors();
        if sectors < MIN_SECTORS {
            return Err(StoreError::TooSmall { sectors });
        }
        let header = disk.read(0, 1).map_err(|e| disk_error("read of the header (sector 0)")(&e))?;
        let formatted = header.iter().all(|&b| b == 0);
        let store_id = if formatted {
            // The header and a blank first log sector, so that the log starts empty whatever the
            // disk held before.
            let mut first = encode_header(new_store_id);
            first.resize(2 * SECTOR_SIZE, 0);
            disk.write(0, &first).map_err(|e| disk_error("write of the header (sector 0)")(&e))?;
            disk.flush().map_err(|e| disk_error("flush after formatting")(&e))?;
            new_store_id
        } else {
            decode_header(&header)?
        };
        let mut store = Store { disk, store_id, index: BTreeMap::new(), next_sequence: 1, log_end: 1 };
        let (records, torn_at) = store.replay()?;
        let report = OpenReport { formatted, records, keys: store.index.len(), log_end: store.log_end, torn_at };
        Ok((store, report))
    }

    /// Replays the log from sector 1 into the index: (records replayed, where a record that did
    /// not check out was found).
    fn replay(&mut self) -> Result<(u64, Option<u64>), StoreError> {
        let sectors = self.disk.sectors();
        let mut ahead = ReadAhead { start: 0, data: Vec::new() };
        let mut records = 0;
        loop {
            let sector = self.log_end;
            if sector >= sectors {
                return Ok((records, None));
            }
            let first = ahead.get(&mut self.disk, sector, 1)?;
            if first.iter().all(|&b| b == 0) {
                return Ok((records, None));
            }
            let Some((op, key_len, value_len)) = plausible_record(first, self.next_sequence) else {
                return Ok((records, Some(sector)));
            };
            let body_len = RECORD_HEADER_BYTES + key_len + value_len;
            let count = sectors_for(body_len + CRC_BYTES);
            if count > sectors - sector {
                return Ok((records, Some(sector)));
            }
            let record = ahead.get(&mut self.disk, sector, count)?;
            if u32_at(record, body_len) != record_crc(self.store_id, &record[..body_len]) {
                return Ok((records, Some(sector)));
            }
            let key = std::str::from_utf8(&record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + key_len]);
            let value = std::str::from_utf8(&record[RECORD_HEADER_BYTES + key_len..body_len]);
            let (Ok(key), Ok(value)) = (key, value) else {
                return Ok((records, Some(sector)));
            };
            if op == OP_PUT {
                self.index.insert(key.to_string(), value.to_string());
            } else {
                self.index.remove(key);
            }
            records += 1;
            self.next_sequence += 1;
            self.log_end += count;
        }
    }

    /// Appends one record and flushes; on success it is durable.
    fn append(&mut self, op: u8, key: &str, value: &str) -> Result<(), StoreError> {
        if key.len() + value.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::TooLarge { key: key.len(), value: value.len() });
        }
        let record = encode_record(self.store_id, self.next_sequence, op, key, value);
        let count = (record.len() / SECTOR_SIZE) as u64;
        if count > self.disk.sectors() - self.log_end {
            return Err(StoreError::Full);
        }
        let at = self.log_end;
        // A blank sector after the record (where there is room) ends the log: whatever lies
        // beyond (the rest of a longer record torn earlier) is never mistaken for a torn record.
        let mut record = record;
        if count < self.disk.sectors() - at {
            record.resize(record.len() + SECTOR_SIZE, 0);
        }
        self.disk
            .write(at, &record)
            .map_err(|e| disk_error(format!("write of {count} sector(s) at sector {at}"))(&e))?;
        self.disk.flush().map_err(|e| disk_error(format!("flush after writing sector {at}"))(&e))?;
        self.log_end += count;
        self.next_sequence += 1;
        Ok(())
    }

    /// Sets `key` to `value`, durably: when this returns `Ok`, the record is on the disk and
    /// flushed. On an error nothing changed (though the record may have reached the disk, and
    /// would then be replayed at the next open, unless a later record overwrites it first).
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.append(OP_PUT, key, value)?;
        self.index.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Removes `key`, durably: `Ok(false)` (and nothing written) when it was not there.
    pub fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        if !self.index.contains_key(key) {
            return Ok(false);
        }
        self.append(OP_DELETE, key, "")?;
        self.index.remove(key);
        Ok(true)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(String::as_str)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The sector where the next record goes.
    pub fn log_end(&self) -> u64 {
        self.log_end
    }

    /// The id chosen when the disk was formatted.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The disk.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The disk, to change (tests arm failures through it).
    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    const ID: u64 = 0x5eed_0000_1234_abcd;

    fn open(disk: MemDisk) -> (Store<MemDisk>, OpenReport) {
        Store::open(disk, ID).expect("open")
    }

    fn value_of(i: usize) -> String {
        format!("value-{i}-{}", "x".repeat(i * 37 % 700))
    }

    #[test]
    fn a_blank_disk_is_formatted_and_round_trips() {
        let (mut store, report) = open(MemDisk::new(64));
        assert_eq!(
            report,
            OpenReport { formatted: true, records: 0, keys: 0, log_end: 1, torn_at: None },
            "a fresh store"
        );
        assert_eq!(report.to_string(), "opened: 0 records replayed, 0 keys, log end at sector 1");
        assert_eq!(&store.disk().durable()[..8], b"MICAKVS1", "the header is flushed");
        store.put("colour", "blue").expect("put");
        store.put("shape", "round and smooth").expect("put");
        store.put("colour", "green").expect("put");
        assert_eq!(store.get("colour"), Some("green"));
        assert_eq!(store.get("shape"), Some("round and smooth"));
        assert_eq!(store.get("size"), None);
        assert_eq!(store.delete("shape"), Ok(true));
        assert_eq!(store.delete("shape"), Ok(false));
        assert_eq!(store.get("shape"), None);
        assert_eq!(store.len(), 1);
        assert_eq!(store.log_end(), 5, "four one-sector records");
    }

    #[test]
    fn reopening_replays_the_log() {
        let (mut store, _) = open(MemDisk::new(256));
        for i in 0..50 {
            store.put(&format!("key-{i}"), &value_of(i)).expect("put");
        }
        for i in (0..50).step_by(7) {
            assert_eq!(store.delete(&format!("key-{i}")), Ok(true));
        }
        store.put("empty", "").expect("an empty value");
        store.put("spaces", "a value with spaces").expect("put");
        let end = store.log_end();
        // A power cut right now: everything acknowledged was flushed.
        let (again, report) = Store::open(store.disk().crashed(), 999).expect("reopen");
        assert_eq!(report.records, 50 + 8 + 2);
        assert_eq!(report.keys, 50 - 8 + 2);
        assert_eq!(report.log_end, end);
        assert_eq!(report.torn_at, None);
        assert!(!report.formatted);
        assert_eq!(again.store_id(), ID, "the id comes from the header, not the argument");
        assert_eq!(again.index, store.index);
        assert_eq!(
            report.to_string(),
            format!("opened: 60 records replayed, 44 keys, log end at sector {end}"),
            "the line kvstore prints"
        );
    }

    #[test]
    fn large_records_span_sectors_and_read_ahead_windows() {
        let (mut store, _) = open(MemDisk::new(1024));
        let big = "b".repeat(40_000);
        store.put("small", "s").expect("put");
        store.put("big", &big).expect("put");
        let max = "m".repeat(MAX_PAYLOAD_BYTES - 3);
        store.put("max", &max).expect("the largest record");
        assert_eq!(
            store.put("max", &format!("{max}!")),
            Err(StoreError::TooLarge { key: 3, value: MAX_PAYLOAD_BYTES - 2 })
        );
        store.put("after", "a").expect("put");
        let (again, report) = open(store.disk().crashed());
        assert_eq!(report.records, 4);
        assert_eq!(again.get("big"), Some(big.as_str()));
        assert_eq!(again.get("max"), Some(max.as_str()));
        assert_eq!(again.get("after"), Some("a"));
    }

    /// `before` with the first `cut` bytes that one commit wrote at byte `at` (as `after` has
    /// them) applied: a write that stopped part-way.
    fn cut_image(before: &[u8], after: &[u8], at: usize, cut: usize) -> MemDisk {
        let mut image = before.to_vec();
        image[at..at + cut].copy_from_slice(&after[at..at + cut]);
        MemDisk::from_image(image)
    }

    fn check_torn_tail(last_value: &str, stale_below: bool) {
        let (mut store, _) = open(MemDisk::new(128));
        if stale_below {
            // A long record whose first sector was torn by a crash: the rest of it lies stale
            // after the log's end, under the records written next.
            let end = store.log_end() as usize;
            store.put("long", &"L".repeat(12_000)).expect("put");
            let mut image = store.disk().durable().to_vec();
            image[end * SECTOR_SIZE..(end + 1) * SECTOR_SIZE].fill(0xee);
            let (again, report) = open(MemDisk::from_image(image));
            assert_eq!((report.torn_at, report.records), (Some(end as u64), 0));
            store = again;
        }
        let stale_end = store.log_end() as usize + 24;
        for i in 0..10 {
            store.put(&format!("key-{i}"), &value_of(i)).expect("put");
        }
        let acked = store.index.clone();
        let before = store.disk().durable().to_vec();
        let at = store.log_end() as usize * SECTOR_SIZE;
        store.put("last", last_value).expect("put");
        let after = store.disk().durable().to_vec();
        let record_len = RECORD_HEADER_BYTES + 4 + last_value.len() + CRC_BYTES;
        if stale_below {
            assert!(at < stale_end * SECTOR_SIZE, "the last record lies over stale sectors");
        }
        // The record and the blank sector after it.
        let written = (store.log_end() as usize + 1) * SECTOR_SIZE - at;
        for cut in 0..=written {
            let (mut reopened, report) = open(cut_image(&before, &after, at, cut));
            if cut >= record_len {
                assert_eq!(reopened.get("last"), Some(last_value), "cut {cut}: the whole record is there");
                if !stale_below || cut == written {
                    assert_eq!(report.torn_at, None, "cut {cut}: the log ends at a blank sector");
                }
            } else {
                assert_eq!(reopened.get("last"), None, "cut {cut}: a torn record is discarded");
                assert_eq!(reopened.index, acked, "cut {cut}: every acknowledged record survives");
                assert_eq!(report.log_end as usize * SECTOR_SIZE, at, "cut {cut}: the log ends before it");
                if !stale_below {
                    let expected = if cut == 0 { None } else { Some(report.log_end) };
                    assert_eq!(report.torn_at, expected, "cut {cut}");
                }
                // Writes go on over the torn record, and survive another reopen.
                reopened.put("next", "n").expect("put after recovery");
                let (again, report) = open(reopened.disk().crashed());
                assert_eq!(report.torn_at, None, "cut {cut}: nothing torn after the overwrite");
                assert_eq!(again.get("next"), Some("n"));
                assert_eq!(again.len(), acked.len() + 1);
            }
        }
    }

    #[test]
    fn a_torn_last_record_is_discarded_at_every_cut() {
        check_torn_tail("short", false);
        check_torn_tail(&"v".repeat(1500), false);
    }

    #[test]
    fn a_torn_record_over_stale_sectors_is_discarded() {
        check_torn_tail(&"w".repeat(700), true);
    }

    #[test]
    fn sectors_written_out_of_order_are_caught() {
        // The device may persist the second sector of a record and not the first, or the first
        // and not the second.
        let (mut store, _) = open(MemDisk::new(64));
        store.put("a", "1").expect("put");
        let before = store.disk().durable().to_vec();
        let at = store.log_end() as usize * SECTOR_SIZE;
        store.put("b", &"2".repeat(1000)).expect("put");
        let after = store.disk().durable().to_vec();
        for sector in 0..2 {
            let mut image = before.clone();
            let range = at + sector * SECTOR_SIZE..at + (sector + 1) * SECTOR_SIZE;
            image[range.clone()].copy_from_slice(&after[range]);
            let (reopened, report) = open(MemDisk::from_image(image));
            assert_eq!(reopened.get("b"), None, "only sector {sector} of 2 written");
            assert_eq!(reopened.get("a"), Some("1"));
            assert_eq!(report.log_end as usize * SECTOR_SIZE, at);
        }
    }

    #[test]
    fn a_flipped_byte_discards_its_record_and_what_follows() {
        let (mut store, _) = open(MemDisk::new(64));
        store.put("first", "1").expect("put");
        store.put("second", "2").expect("put");
        let at = store.log_end() as usize * SECTOR_SIZE;
        store.put("third", "3").expect("put");
        let image = store.disk().durable().to_vec();
        for byte in at..at + RECORD_HEADER_BYTES + 5 + 1 + CRC_BYTES {
            for bit in [0x01, 0x80] {
                let mut flipped = image.clone();
                flipped[byte] ^= bit;
                let (reopened, report) = open(MemDisk::from_image(flipped));
                assert_eq!(reopened.get("third"), None, "byte {byte} bit {bit:#x}");
                assert_eq!((reopened.get("first"), reopened.get("second")), (Some("1"), Some("2")));
                assert_eq!(report.torn_at, Some(3), "byte {byte} bit {bit:#x}");
                assert_eq!(report.records, 2);
            }
        }
        // A flip in the middle of the log hides the records after it.
        let mut flipped = image.clone();
        flipped[2 * SECTOR_SIZE + RECORD_HEADER_BYTES] ^= 1;
        let (reopened, report) = open(MemDisk::from_image(flipped));
        assert_eq!((report.records, report.torn_at), (1, Some(2)));
        assert_eq!(reopened.get("first"), Some("1"));
        assert_eq!(reopened.get("second"), None);
    }

    #[test]
    fn records_of_another_store_do_not_replay() {
        let (mut store, _) = open(MemDisk::new(64));
        store.put("k", "v").expect("put");
        let mut image = store.disk().durable().to_vec();
        // The same log under a header with another id: its records' CRCs do not check out.
        image[..SECTOR_SIZE].copy_from_slice(&encode_header(ID + 1));
        let (other, report) = open(MemDisk::from_image(image));
        assert_eq!((report.records, report.torn_at, other.len()), (0, Some(1), 0));
    }

    #[test]
    fn foreign_disks_are_refused_untouched() {
        let mut image = vec![0u8; 16 * SECTOR_SIZE];
        image[..11].copy_from_slice(b"\x7fELF data!!");
        let e = Store::open(MemDisk::from_image(image.clone()), ID).expect_err("a foreign disk");
        assert!(matches!(e, StoreError::Foreign { .. }), "{e:?}");
        assert!(e.to_string().contains("not a kvstore header"), "{e}");
        assert!(e.to_string().contains("refusing to format"), "{e}");
        // A single non-zero byte anywhere in sector 0 is enough.
        let mut image = vec![0u8; 16 * SECTOR_SIZE];
        image[300] = 1;
        assert!(matches!(Store::open(MemDisk::from_image(image), ID), Err(StoreError::Foreign { .. })));

        let mut header = encode_header(ID);
        header[8] = 2;
        let mut image = header.clone();
        image.resize(16 * SECTOR_SIZE, 0);
        let e = Store::open(MemDisk::from_image(image), ID).expect_err("version 2");
        assert_eq!(e, StoreError::Version { found: 2 });
        assert_eq!(e.to_string(), "the store on this disk has format version 2; this kvstore reads only version 1");

        let mut image = encode_header(ID);
        image[14] ^= 0x10;
        image.resize(16 * SECTOR_SIZE, 0);
        let e = Store::open(MemDisk::from_image(image), ID).expect_err("corrupt header");
        assert!(matches!(e, StoreError::CorruptHeader { .. }), "{e:?}");

        assert_eq!(Store::open(MemDisk::new(1), ID).err(), Some(StoreError::TooSmall { sectors: 1 }));
    }

    #[test]
    fn a_full_disk_refuses_puts_and_keeps_what_it_has() {
        let (mut store, _) = open(MemDisk::new(8));
        for i in 0..7 {
            store.put(&format!("key-{i}"), "v").expect("put");
        }
        assert_eq!(store.log_end(), 8);
        assert_eq!(store.put("key-7", "v"), Err(StoreError::Full));
        assert_eq!(StoreError::Full.to_string(), "disk full");
        assert_eq!(store.delete("key-0"), Err(StoreError::Full), "a delete needs a record too");
        assert_eq!(store.get("key-0"), Some("v"), "a failed delete changes nothing");
        assert_eq!(store.get("key-7"), None);
        let (again, report) = open(store.disk().crashed());
        assert_eq!((report.records, report.log_end, report.torn_at), (7, 8, None));
        assert_eq!(again.len(), 7);

        // A record that does not fit in what is left, though a smaller one would.
        let (mut store, _) = open(MemDisk::new(4));
        store.put("a", &"x".repeat(600)).expect("two sectors");
        assert_eq!(store.put("b", &"x".repeat(600)), Err(StoreError::Full));
        store.put("c", "fits").expect("one sector");
    }

    #[test]
    fn nothing_is_acknowledged_before_it_is_flushed() {
        let (mut store, _) = open(MemDisk::new(16));
        store.put("a", "1").expect("put");
        store.disk_mut().fail_flushes = true;
        let e = store.put("b", "2").expect_err("a failed flush");
        assert_eq!(e.to_string(), "disk flush after writing sector 2 failed: injected flush failure");
        assert_eq!(store.get("b"), None);
        assert_eq!(store.log_end(), 2);
        store.disk_mut().fail_flushes = false;
        store.disk_mut().fail_writes = true;
        let e = store.put("c", "3").expect_err("a failed write");
        assert!(e.to_string().starts_with("disk write of 1 sector(s) at sector 2 failed"), "{e}");
        store.disk_mut().fail_writes = false;
        store.put("d", "4").expect("the disk works again");
        let (again, _) = open(store.disk().crashed());
        assert_eq!(
            (again.get("a"), again.get("b"), again.get("c"), again.get("d")),
            (Some("1"), None, None, Some("4"))
        );
    }

    #[test]
    fn a_read_error_fails_the_open() {
        let (mut store, _) = open(MemDisk::new(16));
        store.put("a", "1").expect("put");
        let mut disk = store.disk().crashed();
        disk.fail_reads = true;
        let e = Store::open(disk, ID).expect_err("unreadable");
        assert!(e.to_string().contains("read of the header"), "{e}");
    }
}
