//! A virtio driver for host unit tests: it programs an [`MmioTransport`] only through its
//! registers, in the order a guest driver does (virtio 1.2 section 3.1.1), and lays out split
//! virtqueues (descriptor table, available ring, used ring) in real guest memory by hand, byte by
//! byte as section 2.7 defines them, so that the device sees exactly what a guest would give it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::MmioTransport;
use super::{InterruptLine, VirtioDevice};

/// Guest memory size of the tests.
pub const MEMORY_SIZE: usize = 1 << 20;
/// Where the driver puts the descriptor table (16-byte aligned).
pub const DESC_TABLE: u64 = 0x1_0000;
/// Where the driver puts the available ring (2-byte aligned).
pub const AVAIL_RING: u64 = 0x2_0000;
/// Where the driver puts the used ring (4-byte aligned).
pub const USED_RING: u64 = 0x3_0000;
/// Descriptor flag: the chain goes on at `next` (as the 16-bit `flags` field holds it).
pub const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// Descriptor flag: device-writable.
pub const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// An interrupt line that counts how often it was raised and lowered.
#[derive(Clone, Debug, Default)]
pub struct CountingIrq {
    /// Times raised.
    pub raised: Arc<AtomicUsize>,
    /// Times lowered.
    pub lowered: Arc<AtomicUsize>,
}

impl CountingIrq {
    /// (raised, lowered).
    pub fn counts(&self) -> (usize, usize) {
        (self.raised.load(Ordering::SeqCst), self.lowered.load(Ordering::SeqCst))
    }
}

impl InterruptLine for CountingIrq {
    fn raise(&self) -> std::io::Result<()> {
        self.raised.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn lower(&self) -> std::io::Result<()> {
        self.lowered.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One descriptor as the driver writes it: address, length, flags (`F_NEXT` is added by
/// [`Driver::post`] for all but the last).
pub type Desc = (u64, u32, u16);

/// The test driver.
pub struct Driver<D> {
    /// The device's transport.
    pub transport: MmioTransport<D>,
    /// Guest memory (the same mappings as the transport's).
    pub memory: GuestMemoryMmap,
    /// The transport's interrupt line.
    pub irq: CountingIrq,
    /// The queue size the driver chose for queue 0.
    pub queue_size: u16,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl<D: VirtioDevice> Driver<D> {
    /// A driver for `device` in fresh guest memory; nothing is initialized yet.
    pub fn new(device: D) -> Driver<D> {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_SIZE)]).expect("guest memory");
        let irq = CountingIrq::default();
        let transport = MmioTransport::new(device, memory.clone(), Box::new(irq.clone())).expect("transport");
        Driver { transport, memory, irq, queue_size: 0, next_desc: 0, avail_idx: 0, used_seen: 0 }
    }

    /// A 32-bit register load.
    pub fn read32(&mut self, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    /// A 32-bit register store.
    pub fn write32(&mut self, offset: u32, value: u32) {
        self.transport.write(u64::from(offset), &value.to_le_bytes());
    }

    /// The Status register.
    pub fn status(&mut self) -> u32 {
        self.read32(VIRTIO_MMIO_STATUS)
    }

    /// Both DeviceFeatures words.
    pub fn device_features(&mut self) -> u64 {
        self.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let low = self.read32(VIRTIO_MMIO_DEVICE_FEATURES);
        self.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        let high = self.read32(VIRTIO_MMIO_DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Steps 1 to 5 of section 3.1.1: reset, ACKNOWLEDGE, DRIVER, writes the features `accept`
    /// picks from the offered ones, sets FEATURES_OK and returns whether the device kept it.
    pub fn negotiate(&mut self, accept: impl FnOnce(u64) -> u64) -> bool {
        self.write32(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(self.status(), 0, "reset");
        self.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        let features = accept(self.device_features());
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        let status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        self.write32(VIRTIO_MMIO_STATUS, status);
        self.status() & VIRTIO_CONFIG_S_FEATURES_OK != 0
    }

    /// Sets up queue `index` with `size` entries at `desc`, `avail` and `used` (section 4.2.3.2)
    /// and returns what QueueReady reads back.
    pub fn setup_queue_at(&mut self, index: u32, size: u16, desc: u64, avail: u64, used: u64) -> u32 {
        self.write32(VIRTIO_MMIO_QUEUE_SEL, index);
        assert_eq!(self.read32(VIRTIO_MMIO_QUEUE_READY), 0, "queue {index} not in use yet");
        let max = self.read32(VIRTIO_MMIO_QUEUE_NUM_MAX);
        assert!(max >= u32::from(size), "queue {index}: QueueNumMax {max} < {size}");
        // Zero the rings, as a driver allocating them does (a ring outside guest memory is left
        // for the device to refuse).
        let zeros = vec![0u8; 16 * usize::from(size) + 8];
        for area in [desc, avail, used] {
            let _ = self.memory.write_slice(&zeros, GuestAddress(area));
        }
        self.write32(VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
        for (low, high, addr) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, desc),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, avail),
            (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, used),
        ] {
            self.write32(low, addr as u32);
            self.write32(high, (addr >> 32) as u32);
        }
        self.write32(VIRTIO_MMIO_QUEUE_READY, 1);
        if index == 0 {
            (self.queue_size, self.next_desc, self.avail_idx, self.used_seen) = (size, 0, 0, 0);
        }
        self.read32(VIRTIO_MMIO_QUEUE_READY)
    }

    /// Sets DRIVER_OK (step 8).
    pub fn driver_ok(&mut self) {
        let status = self.status();
        self.write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
    }

    /// The whole initialization: every offered feature accepted, queue 0 with `size` entries at
    /// the usual addresses, DRIVER_OK.
    pub fn start(&mut self, size: u16) {
        assert!(self.negotiate(|offered| offered), "FEATURES_OK kept");
        assert_eq!(self.setup_queue_at(0, size, DESC_TABLE, AVAIL_RING, USED_RING), 1, "queue 0 ready");
        self.driver_ok();
        let all = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        assert_eq!(self.status(), all);
    }

    /// Writes `descs` as a table of chained descriptors at `table` (indices `first..`), each but
    /// the last with `F_NEXT` to the following one.
    pub fn write_table(&self, table: u64, first: u16, descs: &[Desc]) {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = first + i as u16;
            let last = i + 1 == descs.len();
            let flags = if last { flags } else { flags | F_NEXT };
            let next = if last { 0 } else { index + 1 };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            self.memory.write_slice(&raw, GuestAddress(table + 16 * u64::from(index))).expect("descriptor");
        }
    }

    /// Puts the chain `descs` in queue 0's descriptor table and its head in the available ring,
    /// then publishes it (increments `avail->idx`). Returns the head's index.
    pub fn post(&mut self, descs: &[Desc]) -> u16 {
        let count = descs.len() as u16;
        if self.next_desc + count > self.queue_size {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        self.write_table(DESC_TABLE, head, descs);
        self.next_desc += count;
        self.publish(head);
        head
    }

    /// Writes a raw descriptor at `index` of queue 0's table (for malformed chains).
    pub fn write_raw_descriptor(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.memory.write_slice(&raw, GuestAddress(DESC_TABLE + 16 * u64::from(index))).expect("descriptor");
    }

    /// Adds `head` to queue 0's available ring and publishes it.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.queue_size);
        self.memory.write_obj(head.to_le(), GuestAddress(AVAIL_RING + 4 + 2 * slot)).expect("avail ring entry");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.memory.write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL_RING + 2)).expect("avail idx");
    }

    /// Writes QueueNotify for `queue`.
    pub fn notify(&mut self, queue: u32) {
        self.write32(VIRTIO_MMIO_QUEUE_NOTIFY, queue);
    }

    /// The used ring entries (`id`, `len`) of queue 0 added since the last call.
    pub fn take_used(&mut self) -> Vec<(u32, u32)> {
        let idx: u16 = self.memory.read_obj(GuestAddress(USED_RING + 2)).expect("used idx");
        let mut entries = Vec::new();
        while self.used_seen != u16::from_le(idx) {
            let slot = u64::from(self.used_seen % self.queue_size);
            let entry = GuestAddress(USED_RING + 4 + 8 * slot);
            let id: u32 = self.memory.read_obj(entry).expect("used id");
            let len: u32 = self.memory.read_obj(GuestAddress(entry.0 + 4)).expect("used len");
            entries.push((u32::from_le(id), u32::from_le(len)));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        entries
    }

    /// Fills `len` bytes of guest memory at `addr` with `byte`.
    pub fn fill(&self, addr: u64, len: usize, byte: u8) {
        self.memory.write_slice(&vec![byte; len], GuestAddress(addr)).expect("fill guest memory");
    }

    /// Reads `len` bytes of guest memory at `addr`.
    pub fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.memory.read_slice(&mut data, GuestAddress(addr)).expect("read guest memory");
        data
    }
}

/// One more virtqueue the driver runs, for devices with several: its rings' addresses and the
/// driver's position in them (queue 0 of [`Driver::start`] keeps its own in [`Driver`]).
#[derive(Clone, Debug)]
pub struct Ring {
    /// Its size.
    pub size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl<D: VirtioDevice> Driver<D> {
    /// Sets up queue `index` with `size` entries (at most 64), its rings in a 0x3000-byte area of
    /// its own at `0x1_0000 + index * 0x3000`, and returns it (asserting that it is ready).
    pub fn setup_ring(&mut self, index: u32, size: u16) -> Ring {
        assert!(size <= 64, "rings of at most 64 entries fit their area");
        let desc = 0x1_0000 + u64::from(index) * 0x3000;
        let (avail, used) = (desc + 0x1000, desc + 0x2000);
        assert_eq!(self.setup_queue_at(index, size, desc, avail, used), 1, "queue {index} ready");
        Ring { size, desc, avail, used, next_desc: 0, avail_idx: 0, used_seen: 0 }
    }

    /// Puts the chain `descs` in `ring` and publishes it (without notifying). Returns its head.
    pub fn post_to(&mut self, ring: &mut Ring, descs: &[Desc]) -> u16 {
        let count = descs.len() as u16;
        if ring.next_desc + count > ring.size {
            ring.next_desc = 0;
        }
        let head = ring.next_desc;
        self.write_table(ring.desc, head, descs);
        ring.next_desc += count;
        let slot = u64::from(ring.avail_idx % ring.size);
        self.memory.write_obj(head.to_le(), GuestAddress(ring.avail + 4 + 2 * slot)).expect("avail ring entry");
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        self.memory.write_obj(ring.avail_idx.to_le(), GuestAddress(ring.avail + 2)).expect("avail idx");
        head
    }

    /// The used ring entries (`id`, `len`) of `ring` added since the last call.
    pub fn take_used_from(&mut self, ring: &mut Ring) -> Vec<(u32, u32)> {
        let idx: u16 = self.memory.read_obj(GuestAddress(ring.used + 2)).expect("used idx");
        let mut entries = Vec::new();
        while ring.used_seen != u16::from_le(idx) {
            let entry = GuestAddress(ring.used + 4 + 8 * u64::from(ring.used_seen % ring.size));
            let id: u32 = self.memory.read_obj(entry).expect("used id");
            let len: u32 = self.memory.read_obj(GuestAddress(entry.0 + 4)).expect("used len");
            entries.push((u32::from_le(id), u32::from_le(len)));
            ring.used_seen = ring.used_seen.wrapping_add(1);
        }
        entries
    }
}
