//! virtio-blk (virtio 1.2 section 5.2) over a raw disk image file.
//!
//! One request queue. Each request is a descriptor chain: a 16-byte header the device reads
//! (`type`, `reserved`, `sector`), the data (device-readable for a write, device-writable for a
//! read), and a one-byte status the device writes last. The device does not assume how the driver
//! split these over descriptors (section 2.7.4): it reads the header from the device-readable
//! part and takes the status byte from the end of the device-writable part, through
//! `virtio-queue`'s `Reader` and `Writer`. It does check the order section 2.7.4.2 requires:
//! device-readable descriptors first, and the chain ending in a device-writable byte (the status).
//! A chain that breaks that has nowhere to put a status: it is returned unused (used length 0).
//!
//! Offered features: `VIRTIO_F_VERSION_1`, indirect descriptors, `VIRTIO_BLK_F_SEG_MAX`,
//! `VIRTIO_BLK_F_FLUSH`, `VIRTIO_BLK_F_RO` for a read-only image (writes then fail with
//! `VIRTIO_BLK_S_IOERR`), and `VIRTIO_BLK_F_BLK_SIZE` when a block size is set.
//!
//! Requests: `VIRTIO_BLK_T_IN` (read), `VIRTIO_BLK_T_OUT` (write), `VIRTIO_BLK_T_FLUSH`
//! (`fdatasync`), `VIRTIO_BLK_T_GET_ID` (20-byte ID string, NUL-padded); any other type gets
//! `VIRTIO_BLK_S_UNSUPP`. Reads and writes whose data is not a whole number of 512-byte sectors or
//! that reach past the image's end get `VIRTIO_BLK_S_IOERR`. The used length of each chain is the
//! number of bytes written into guest memory, status byte included.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, virtio_blk_config, virtio_blk_outhdr,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::VirtioDevice;
use super::spec::virtio_blk::SECTOR_SIZE;
use crate::error::{Error, Result};

/// The request queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// The length of the ID string (`VIRTIO_BLK_T_GET_ID`).
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
/// The request header's size (`struct virtio_blk_outhdr`).
const HEADER_SIZE: usize = size_of::<virtio_blk_outhdr>();
/// The most data moved between the image and guest memory at once.
const CHUNK: usize = 64 * 1024;
/// The configuration space (`struct virtio_blk_config`) up to and including `blk_size`.
const CONFIG_SIZE: usize = offset_of!(virtio_blk_config, blk_size) + size_of::<u32>();

/// A virtio-blk device backed by a raw image file.
#[derive(Debug)]
pub struct Block {
    file: File,
    path: PathBuf,
    read_only: bool,
    capacity: u64,
    block_size: Option<u32>,
    id: [u8; ID_BYTES],
}

/// How a request failed: the status byte the driver gets.
#[derive(Debug)]
enum Failure {
    IoError(String),
    Unsupported(u32),
}

impl Block {
    /// Opens the raw image at `path` (read-only, or read-write). Its capacity is its size in
    /// whole 512-byte sectors (a partial last sector is not reachable). The ID string is the
    /// file's name, cut to 20 bytes.
    pub fn open(path: impl Into<PathBuf>, read_only: bool) -> Result<Block> {
        let path = path.into();
        let error = |source| Error::DiskImage { path: path.clone(), read_only, source };
        let mut file = OpenOptions::new().read(true).write(!read_only).open(&path).map_err(error)?;
        if file.metadata().map_err(error)?.is_dir() {
            return Err(error(io::Error::new(io::ErrorKind::IsADirectory, "a directory, not a disk image")));
        }
        // The end offset, not the metadata length, so that block devices work too.
        let size = file.seek(SeekFrom::End(0)).map_err(error)?;
        if !size.is_multiple_of(SECTOR_SIZE) {
            log::warn!(
                "virtio-blk: disk image {} is {size} bytes, not a whole number of 512-byte sectors: its last {} \
                 bytes are out of reach",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let mut id = [0u8; ID_BYTES];
        let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
        let len = name.len().min(ID_BYTES);
        id[..len].copy_from_slice(&name[..len]);
        Ok(Block { file, path, read_only, capacity: size / SECTOR_SIZE, block_size: None, id })
    }

    /// Advertises `size` bytes as the device's block size (`VIRTIO_BLK_F_BLK_SIZE`): a hint for
    /// the driver's logical block size; addressing stays in 512-byte sectors.
    pub fn with_block_size(mut self, size: u32) -> Result<Block> {
        if size < SECTOR_SIZE as u32 || !size.is_power_of_two() {
            return Err(Error::BlockSize(size));
        }
        self.block_size = Some(size);
        Ok(self)
    }

    /// Sets the ID string `VIRTIO_BLK_T_GET_ID` returns: at most 20 bytes are kept, and a shorter
    /// one is NUL-padded.
    pub fn with_id(mut self, id: &[u8]) -> Block {
        let len = id.len().min(ID_BYTES);
        self.id = [0; ID_BYTES];
        self.id[..len].copy_from_slice(&id[..len]);
        self
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The configuration space: `capacity`, `size_max` (0: not offered), `seg_max`, `geometry`
    /// (not offered) and `blk_size`.
    fn config(&self) -> [u8; CONFIG_SIZE] {
        let mut config = [0u8; CONFIG_SIZE];
        config[offset_of!(virtio_blk_config, capacity)..][..8].copy_from_slice(&self.capacity.to_le_bytes());
        config[offset_of!(virtio_blk_config, seg_max)..][..4].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        config[offset_of!(virtio_blk_config, blk_size)..][..4]
            .copy_from_slice(&self.block_size.unwrap_or(0).to_le_bytes());
        config
    }

    /// Executes the request in `chain` and returns the used length: the bytes written into guest
    /// memory, status included; 0 for a chain without a place for the status.
    fn execute(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, memory: &GuestMemoryMmap) -> u32 {
        let head = chain.head_index();
        if let Err(problem) = check_layout(chain.clone()) {
            log::warn!("virtio-blk: descriptor chain {head} returned unused: {problem}");
            return 0;
        }
        let mut writer = match Writer::new(memory, chain.clone()) {
            Ok(writer) => writer,
            Err(e) => {
                log::warn!("virtio-blk: descriptor chain {head} returned unused: its writable buffers: {e}");
                return 0;
            }
        };
        // check_layout made sure the chain ends in at least one writable byte.
        let status_at = writer.available_bytes().saturating_sub(1);
        let mut status_writer = match writer.split_at(status_at) {
            Ok(status_writer) => status_writer,
            Err(e) => {
                log::warn!("virtio-blk: descriptor chain {head} returned unused: no status byte: {e}");
                return 0;
            }
        };
        let status = match Reader::new(memory, chain) {
            Ok(mut reader) => self.request(&mut reader, &mut writer),
            Err(e) => Err(Failure::IoError(format!("its readable buffers: {e}"))),
        };
        let status = match status {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(Failure::IoError(why)) => {
                log::warn!("virtio-blk: request in chain {head} failed: {why}");
                VIRTIO_BLK_S_IOERR
            }
            Err(Failure::Unsupported(kind)) => {
                log::debug!("virtio-blk: request type {kind} in chain {head} is not supported");
                VIRTIO_BLK_S_UNSUPP
            }
        };
        if let Err(e) = status_writer.write_all(&[status as u8]) {
            log::warn!("virtio-blk: cannot write the status of chain {head}: {e}");
        }
        u32::try_from(writer.bytes_written() + status_writer.bytes_written()).unwrap_or(u32::MAX)
    }

    /// Reads the header from `reader` and carries out the request, its data in `reader` (a
    /// write) or `writer` (a read, an ID).
    fn request(&mut self, reader: &mut Reader<'_>, writer: &mut Writer<'_>) -> Result<(), Failure> {
        let mut header = [0u8; HEADER_SIZE];
        reader.read_exact(&mut header).map_err(|_| {
            Failure::IoError(format!(
                "the header needs {HEADER_SIZE} device-readable bytes, the chain has {}",
                reader.bytes_read() + reader.available_bytes()
            ))
        })?;
        let kind = u32::from_le_bytes(header[offset_of!(virtio_blk_outhdr, type_)..][..4].try_into().expect("4 bytes"));
        let sector =
            u64::from_le_bytes(header[offset_of!(virtio_blk_outhdr, sector)..][..8].try_into().expect("8 bytes"));
        match kind {
            VIRTIO_BLK_T_IN => {
                let offset = self.check_range("read", sector, writer.available_bytes())?;
                self.read(offset, writer)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(Failure::IoError(format!("write to sector {sector} of a read-only disk")));
                }
                let offset = self.check_range("write", sector, reader.available_bytes())?;
                self.write(offset, reader)
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only {
                    return Ok(());
                }
                self.file.sync_data().map_err(|e| self.io_error("flushing", &e))
            }
            VIRTIO_BLK_T_GET_ID => {
                let len = writer.available_bytes().min(ID_BYTES);
                writer.write_all(&self.id[..len]).map_err(|e| Failure::IoError(format!("writing the ID: {e}")))
            }
            other => Err(Failure::Unsupported(other)),
        }
    }

    /// Checks that `len` bytes from `sector` are whole sectors within the image; returns the
    /// byte offset.
    fn check_range(&self, what: &str, sector: u64, len: usize) -> Result<u64, Failure> {
        if !(len as u64).is_multiple_of(SECTOR_SIZE) {
            return Err(Failure::IoError(format!("{what} of {len} bytes, not a whole number of 512-byte sectors")));
        }
        let sectors = len as u64 / SECTOR_SIZE;
        match sector.checked_add(sectors) {
            Some(end) if end <= self.capacity => Ok(sector * SECTOR_SIZE),
            _ => Err(Failure::IoError(format!(
                "{what} of {sectors} sectors from sector {sector} is past the end of the disk ({} sectors)",
                self.capacity
            ))),
        }
    }

    /// Copies the image from `offset` into all of `writer`.
    fn read(&mut self, offset: u64, writer: &mut Writer<'_>) -> Result<(), Failure> {
        let mut buffer = vec![0u8; writer.available_bytes().min(CHUNK)];
        let mut at = offset;
        while writer.available_bytes() > 0 {
            let chunk = &mut buffer[..writer.available_bytes().min(CHUNK)];
            self.file.read_exact_at(chunk, at).map_err(|e| self.io_error("reading", &e))?;
            writer.write_all(chunk).map_err(|e| Failure::IoError(format!("copying to guest memory: {e}")))?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// Copies all of `reader` to the image at `offset`.
    fn write(&mut self, offset: u64, reader: &mut Reader<'_>) -> Result<(), Failure> {
        let mut buffer = vec![0u8; reader.available_bytes().min(CHUNK)];
        let mut at = offset;
        while reader.available_bytes() > 0 {
            let chunk = &mut buffer[..reader.available_bytes().min(CHUNK)];
            reader.read_exact(chunk).map_err(|e| Failure::IoError(format!("copying from guest memory: {e}")))?;
            self.file.write_all_at(chunk, at).map_err(|e| self.io_error("writing", &e))?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn io_error(&self, what: &str, e: &io::Error) -> Failure {
        Failure::IoError(format!("{what} {}: {e}", self.path.display()))
    }
}

/// Checks the order section 2.7.4.2 requires: no device-readable descriptor after a
/// device-writable one, and a device-writable last descriptor (the status byte) of at least one
/// byte.
fn check_layout(chain: DescriptorChain<&GuestMemoryMmap>) -> Result<(), &'static str> {
    let mut last = None;
    for descriptor in chain {
        if last.is_some_and(|d: virtio_queue::desc::split::Descriptor| d.is_write_only()) && !descriptor.is_write_only()
        {
            return Err("a device-readable descriptor follows a device-writable one");
        }
        last = Some(descriptor);
    }
    match last {
        None => Err("no descriptors"),
        Some(d) if !d.is_write_only() => Err("the last descriptor (the status byte) is not device-writable"),
        Some(d) if d.len() == 0 => Err("the last descriptor (the status byte) is empty"),
        Some(_) => Ok(()),
    }
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut features = 1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_FLUSH;
        if self.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        if self.block_size.is_some() {
            features |= 1 << VIRTIO_BLK_F_BLK_SIZE;
        }
        features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let len = self.execute(chain, memory);
            if let Err(e) = queue.add_used(memory, head, len) {
                log::warn!("virtio-blk: cannot add chain {head} of queue {index} to the used ring: {e}");
                break;
            }
            used = true;
        }
        used && queue.needs_notification(memory).unwrap_or(true)
    }

    fn reset(&mut self) {
        // Requests complete synchronously: nothing is in flight.
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_SCSI_CMD};
    use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_INTERRUPT_STATUS};
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::testing::{Desc, Driver, F_INDIRECT, F_WRITE};

    const HEADER: u64 = 0x4_0000;
    const DATA: u64 = 0x5_0000;
    const STATUS: u64 = 0xf_f000;
    /// The request header's length, as a descriptor has it.
    const HEADER_LEN: u32 = HEADER_SIZE as u32;
    const OK: u8 = VIRTIO_BLK_S_OK as u8;
    const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
    const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
    /// What the driver leaves in the status byte, to see whether the device wrote it.
    const UNTOUCHED: u8 = 0xee;

    /// A raw image of `sectors` zeroed sectors.
    fn image(sectors: u64) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&vec![0u8; (sectors * SECTOR_SIZE) as usize]).expect("write image");
        file.flush().expect("flush image");
        file
    }

    fn started(block: Block) -> Driver<Block> {
        let mut d = Driver::new(block);
        d.start(16);
        d
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Writes a request header at `addr` and clears the status byte.
    fn header(d: &Driver<Block>, addr: u64, kind: u32, sector: u64) {
        let mut raw = [0u8; HEADER_SIZE];
        raw[0..4].copy_from_slice(&kind.to_le_bytes());
        raw[8..16].copy_from_slice(&sector.to_le_bytes());
        d.memory.write_slice(&raw, GuestAddress(addr)).expect("header");
        d.fill(STATUS, 1, UNTOUCHED);
    }

    /// Posts `descs` as one chain, notifies, and returns the chain's used length (checking that
    /// it is the one chain used) and the status byte.
    fn submit(d: &mut Driver<Block>, descs: &[Desc]) -> (u8, u32) {
        let head = d.post(descs);
        d.notify(0);
        let used = d.take_used();
        assert_eq!(used.len(), 1, "one chain used: {used:?}");
        assert_eq!(used[0].0, u32::from(head), "the used entry names the chain's head");
        let status: u8 = d.memory.read_obj(GuestAddress(STATUS)).expect("status");
        (status, used[0].1)
    }

    /// A request laid out as Linux's virtio_blk does: header, data (if `len` > 0) and status,
    /// one descriptor each.
    fn request(d: &mut Driver<Block>, kind: u32, sector: u64, len: u32, data_writable: bool) -> (u8, u32) {
        header(d, HEADER, kind, sector);
        let mut descs = vec![(HEADER, HEADER_LEN, 0)];
        if len > 0 {
            descs.push((DATA, len, if data_writable { F_WRITE } else { 0 }));
        }
        descs.push((STATUS, 1, F_WRITE));
        submit(d, &descs)
    }

    fn file_bytes(file: &tempfile::NamedTempFile) -> Vec<u8> {
        std::fs::read(file.path()).expect("read image")
    }

    #[test]
    fn a_write_then_a_read_round_trip_through_the_image_file() {
        let file = image(64);
        let mut d = started(Block::open(file.path(), false).expect("open"));
        assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
        let data = pattern(1024, 0x5a);
        d.memory.write_slice(&data, GuestAddress(DATA)).expect("data");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, 5, 1024, false), (OK, 1), "a write writes only the status");
        assert_eq!((d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), d.irq.counts().0), (1, 1));

        let on_disk = file_bytes(&file);
        assert_eq!(on_disk.len(), 64 * 512, "the image keeps its size");
        assert_eq!(&on_disk[5 * 512..7 * 512], &data[..], "the data is in the file at sector 5");
        assert!(on_disk[..5 * 512].iter().chain(&on_disk[7 * 512..]).all(|&b| b == 0), "nothing else changed");

        d.fill(DATA, 1024, 0);
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 5, 1024, true), (OK, 1025), "a read: data and status");
        assert_eq!(d.bytes(DATA, 1024), data);

        // The same read with the data split over two descriptors far apart in memory.
        header(&d, HEADER, VIRTIO_BLK_T_IN, 6);
        d.fill(DATA, 512, 0);
        d.fill(0x9_0000, 256, 0);
        let descs = [(HEADER, HEADER_LEN, 0), (0x9_0000, 256, F_WRITE), (DATA, 256, F_WRITE), (STATUS, 1, F_WRITE)];
        assert_eq!(submit(&mut d, &descs), (OK, 513));
        assert_eq!(d.bytes(0x9_0000, 256), data[512..768]);
        assert_eq!(d.bytes(DATA, 256), data[768..]);
    }

    #[test]
    fn data_written_by_the_host_is_read_by_the_guest() {
        let file = image(8);
        let content = pattern(8 * 512, 0x33);
        std::fs::write(file.path(), &content).expect("write image");
        let mut d = started(Block::open(file.path(), true).expect("open"));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 0, 4096, true), (OK, 4097));
        assert_eq!(d.bytes(DATA, 4096), content);
    }

    #[test]
    fn a_read_only_disk_offers_ro_and_refuses_writes() {
        let file = image(16);
        std::fs::write(file.path(), pattern(16 * 512, 1)).expect("write image");
        let block = Block::open(file.path(), true).expect("open");
        assert!(block.read_only());
        let mut d = started(block);
        assert_ne!(d.device_features() & 1 << VIRTIO_BLK_F_RO, 0, "VIRTIO_BLK_F_RO offered");
        d.fill(DATA, 512, 0xff);
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, 0, 512, false), (IOERR, 1));
        assert_eq!(file_bytes(&file), pattern(16 * 512, 1), "the image is unchanged");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_FLUSH, 0, 0, false), (OK, 1));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 1, 512, true), (OK, 513));
        assert_eq!(d.bytes(DATA, 512), pattern(16 * 512, 1)[512..1024]);

        let writable = Driver::new(Block::open(file.path(), false).expect("open")).device_features();
        assert_eq!(writable & 1 << VIRTIO_BLK_F_RO, 0, "a writable disk does not offer RO");
    }

    #[test]
    fn requests_past_the_end_or_of_partial_sectors_fail_with_ioerr() {
        let file = image(64);
        let mut d = started(Block::open(file.path(), false).expect("open"));
        d.fill(DATA, 1024, 0x77);
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 63, 512, true), (OK, 513), "the last sector");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 63, 1024, true), (IOERR, 1), "one sector past the end");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 64, 512, true), (IOERR, 1));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, u64::MAX, 512, true), (IOERR, 1), "sector overflow");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, 64, 512, false), (IOERR, 1));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, u64::MAX / 512, 512, false), (IOERR, 1));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_IN, 0, 100, true), (IOERR, 1), "not whole sectors");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, 0, 700, false), (IOERR, 1), "not whole sectors");
        assert_eq!(file_bytes(&file), vec![0u8; 64 * 512], "no write reached the file, nor grew it");
    }

    #[test]
    fn flush_succeeds_and_the_data_is_in_the_file() {
        let file = image(4);
        let mut d = started(Block::open(file.path(), false).expect("open"));
        assert_ne!(d.device_features() & 1 << VIRTIO_BLK_F_FLUSH, 0, "VIRTIO_BLK_F_FLUSH offered");
        d.memory.write_slice(&pattern(512, 9), GuestAddress(DATA)).expect("data");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, 3, 512, false), (OK, 1));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_FLUSH, 0, 0, false), (OK, 1));
        assert_eq!(file_bytes(&file)[3 * 512..], pattern(512, 9));
    }

    #[test]
    fn get_id_returns_the_20_byte_id() {
        let file = image(1);
        let mut d = started(Block::open(file.path(), false).expect("open").with_id(b"mica-disk-0"));
        d.fill(DATA, 32, 0xcc);
        assert_eq!(request(&mut d, VIRTIO_BLK_T_GET_ID, 0, 20, true), (OK, 21));
        assert_eq!(d.bytes(DATA, 21), b"mica-disk-0\0\0\0\0\0\0\0\0\0\xcc", "NUL-padded, 20 bytes");

        let mut d = started(Block::open(file.path(), false).expect("open").with_id(b"0123456789abcdefghijKLMN"));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_GET_ID, 0, 20, true), (OK, 21));
        assert_eq!(d.bytes(DATA, 20), b"0123456789abcdefghij", "cut to 20 bytes");

        // By default, the file's name.
        let mut d = started(Block::open(file.path(), false).expect("open"));
        assert_eq!(request(&mut d, VIRTIO_BLK_T_GET_ID, 0, 20, true), (OK, 21));
        let name = file.path().file_name().expect("name").as_encoded_bytes();
        let len = name.len().min(20);
        assert_eq!(d.bytes(DATA, len), &name[..len]);
    }

    #[test]
    fn other_request_types_are_unsupported() {
        let file = image(4);
        let mut d = started(Block::open(file.path(), false).expect("open"));
        for kind in [VIRTIO_BLK_T_SCSI_CMD, VIRTIO_BLK_T_DISCARD, 0x1234] {
            assert_eq!(request(&mut d, kind, 0, 512, false), (UNSUPP, 1), "type {kind}");
        }
        assert_eq!(file_bytes(&file), vec![0u8; 4 * 512]);
    }

    #[test]
    fn malformed_chains_are_returned_or_failed_without_panicking() {
        let file = image(8);
        let mut d = started(Block::open(file.path(), false).expect("open"));
        d.fill(DATA, 512, 0x42);

        // A write without a status descriptor: nowhere to report, returned unused.
        header(&d, HEADER, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(submit(&mut d, &[(HEADER, HEADER_LEN, 0), (DATA, 512, 0)]), (UNTOUCHED, 0));
        // A read whose status descriptor is device-readable.
        header(&d, HEADER, VIRTIO_BLK_T_IN, 0);
        assert_eq!(submit(&mut d, &[(HEADER, HEADER_LEN, 0), (DATA, 512, F_WRITE), (STATUS, 1, 0)]), (UNTOUCHED, 0));
        assert_eq!(d.bytes(DATA, 512), vec![0x42; 512], "the data buffer was not touched");
        // A device-readable descriptor after a device-writable one.
        header(&d, HEADER, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(submit(&mut d, &[(HEADER, HEADER_LEN, 0), (STATUS, 1, F_WRITE), (DATA, 512, 0)]), (UNTOUCHED, 0));
        // An empty status descriptor.
        header(&d, HEADER, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(submit(&mut d, &[(HEADER, HEADER_LEN, 0), (STATUS, 0, F_WRITE)]), (UNTOUCHED, 0));
        // A chain whose `next` points past the table ends there, at a readable header.
        header(&d, HEADER, VIRTIO_BLK_T_FLUSH, 0);
        d.write_raw_descriptor(15, HEADER, 16, 1, 200);
        d.publish(15);
        d.notify(0);
        assert_eq!(d.take_used(), [(15, 0)]);
        // A writable buffer outside guest memory.
        header(&d, HEADER, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            submit(&mut d, &[(HEADER, HEADER_LEN, 0), (0xffff_0000, 512, F_WRITE), (STATUS, 1, F_WRITE)]),
            (UNTOUCHED, 0)
        );
        assert_eq!(file_bytes(&file), vec![0u8; 8 * 512], "none of these wrote to the file");

        // A header shorter than 16 bytes: the status can be written, and says IOERR.
        header(&d, HEADER, VIRTIO_BLK_T_IN, 0);
        assert_eq!(submit(&mut d, &[(HEADER, 8, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]), (IOERR, 1));
        // A readable buffer outside guest memory: IOERR too.
        header(&d, HEADER, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(submit(&mut d, &[(0xffff_0000, HEADER_LEN, 0), (STATUS, 1, F_WRITE)]), (IOERR, 1));
        // A read without its own status descriptor: the data buffer's last byte is taken as the
        // status, which leaves 511 bytes of data, not whole sectors.
        header(&d, HEADER, VIRTIO_BLK_T_IN, 0);
        assert_eq!(submit(&mut d, &[(HEADER, HEADER_LEN, 0), (DATA, 512, F_WRITE)]), (UNTOUCHED, 1));
        assert_eq!(d.bytes(DATA + 511, 1), [IOERR]);

        // The queue still works.
        d.memory.write_slice(&pattern(512, 3), GuestAddress(DATA)).expect("data");
        assert_eq!(request(&mut d, VIRTIO_BLK_T_OUT, 2, 512, false), (OK, 1));
        assert_eq!(file_bytes(&file)[1024..1536], pattern(512, 3));
    }

    #[test]
    fn indirect_descriptor_tables_are_followed() {
        let file = image(4);
        std::fs::write(file.path(), pattern(4 * 512, 7)).expect("write image");
        let mut d = started(Block::open(file.path(), false).expect("open"));
        assert_ne!(d.device_features() & 1 << VIRTIO_RING_F_INDIRECT_DESC, 0, "indirect descriptors offered");
        header(&d, HEADER, VIRTIO_BLK_T_IN, 2);
        let table = 0x6_0000;
        d.write_table(table, 0, &[(HEADER, HEADER_LEN, 0), (DATA, 1024, F_WRITE), (STATUS, 1, F_WRITE)]);
        assert_eq!(submit(&mut d, &[(table, 3 * 16, F_INDIRECT)]), (OK, 1025));
        assert_eq!(d.bytes(DATA, 1024), pattern(4 * 512, 7)[1024..]);
    }

    #[test]
    fn requests_posted_together_complete_in_order_with_one_interrupt() {
        let file = image(8);
        let mut d = started(Block::open(file.path(), false).expect("open"));
        let mut heads = Vec::new();
        for i in 0..3u64 {
            let (hdr, data, status) = (HEADER + 0x100 * i, DATA + 0x1000 * i, STATUS + i);
            d.memory.write_slice(&pattern(512, i as u8), GuestAddress(data)).expect("data");
            let mut raw = [0u8; 16];
            raw[0..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
            raw[8..16].copy_from_slice(&(i * 2).to_le_bytes());
            d.memory.write_slice(&raw, GuestAddress(hdr)).expect("header");
            heads.push(d.post(&[(hdr, HEADER_LEN, 0), (data, 512, 0), (status, 1, F_WRITE)]));
        }
        d.notify(0);
        let used = d.take_used();
        assert_eq!(used, heads.iter().map(|&h| (u32::from(h), 1)).collect::<Vec<_>>());
        assert_eq!(d.bytes(STATUS, 3), [OK; 3]);
        assert_eq!(d.irq.counts(), (1, 0), "one interrupt for the three");
        let on_disk = file_bytes(&file);
        for i in 0..3 {
            assert_eq!(on_disk[i * 1024..i * 1024 + 512], pattern(512, i as u8), "request {i}");
        }
    }

    #[test]
    fn config_space_has_capacity_seg_max_and_block_size() {
        let file = image(0);
        std::fs::write(file.path(), vec![0u8; 3 * 1024 * 1024 + 100]).expect("write image");
        let mut d = Driver::new(Block::open(file.path(), false).expect("open"));
        // Capacity is read as two 32-bit words, as Linux's virtio_cread64 does over MMIO.
        let capacity = u64::from(d.read32(VIRTIO_MMIO_CONFIG)) | u64::from(d.read32(VIRTIO_MMIO_CONFIG + 4)) << 32;
        assert_eq!(capacity, 3 * 1024 * 1024 / 512, "whole sectors: the last 100 bytes are out of reach");
        assert_eq!(d.read32(VIRTIO_MMIO_CONFIG + 12), u32::from(QUEUE_SIZE) - 2, "seg_max");
        assert_eq!(d.read32(VIRTIO_MMIO_CONFIG + 20), 0, "no block size");
        assert_eq!(d.device_features() & 1 << VIRTIO_BLK_F_BLK_SIZE, 0);

        let block = Block::open(file.path(), false).expect("open").with_block_size(4096).expect("4 KiB");
        let mut d = Driver::new(block);
        assert_eq!(d.read32(VIRTIO_MMIO_CONFIG + 20), 4096);
        assert_ne!(d.device_features() & 1 << VIRTIO_BLK_F_BLK_SIZE, 0, "VIRTIO_BLK_F_BLK_SIZE offered");
        assert_eq!(d.transport.device().capacity(), 6144);
    }

    #[test]
    fn bad_images_and_settings_are_reported_clearly() {
        let e = Block::open("/nonexistent/disk.img", true).expect_err("missing");
        assert!(matches!(e, Error::DiskImage { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/disk.img read-only"), "{e}");
        let dir = tempfile::tempdir().expect("temp dir");
        let e = Block::open(dir.path(), true).expect_err("directory");
        assert!(e.to_string().contains("a directory, not a disk image"), "{e}");
        let file = image(1);
        for bad in [0, 256, 1000, 3 * 512] {
            let e = Block::open(file.path(), false).expect("open").with_block_size(bad).expect_err("bad size");
            assert!(e.to_string().contains(&format!("block size {bad} is not a power of two")), "{e}");
        }
        assert!(Block::open(file.path(), false).expect("open").with_block_size(512).is_ok());
    }
}
