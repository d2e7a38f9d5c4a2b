//! The split virtqueue (virtio 1.2, section 2.7): descriptor table, available ring and used
//! ring in one piece of device-visible memory, a free list of descriptors, and the blocking wait
//! for a used buffer driven by the interrupt line.
//!
//! Layout for a queue of `n` descriptors, from the memory's start:
//!
//! | part | offset | bytes | alignment |
//! |---|---|---|---|
//! | descriptor table | 0 | 16 n | 16 |
//! | available ring (flags, idx, ring\[n\], used_event) | 16 n | 6 + 2 n | 2 |
//! | used ring (flags, idx, ring\[n\] of {id, len}, avail_event) | rounded up to 4 | 6 + 8 n | 4 |
//!
//! The free list and the chains in flight are kept in the driver's own memory, never read back
//! from the descriptor table, so a device (or a bug) writing there cannot corrupt them; every
//! entry the device puts in the used ring is checked against the chains in flight.

use std::time::Duration;

use crate::access::{Irq, Memory, Regs};
use crate::error::Error;
use crate::spec::extra::{VRING_DESC_SIZE, VRING_MAX_SIZE, VRING_USED_ELEM_SIZE};
use crate::spec::virtio_ring::{VRING_DESC_ALIGN_SIZE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_ALIGN_SIZE};
use crate::transport::Transport;

/// [`VRING_DESC_F_NEXT`] as a descriptor's `flags` field.
const DESC_F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// [`VRING_DESC_F_WRITE`] as a descriptor's `flags` field.
const DESC_F_WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// One buffer of a descriptor chain: where the device finds it and which way data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Its bus address.
    pub address: u64,
    /// Its length in bytes.
    pub len: u32,
    /// Whether the device writes it (else it reads it).
    pub device_writable: bool,
}

impl Buffer {
    /// A buffer the device reads (a request).
    pub fn device_readable(address: u64, len: u32) -> Buffer {
        Buffer { address, len, device_writable: false }
    }

    /// A buffer the device writes (a response).
    pub fn device_writable(address: u64, len: u32) -> Buffer {
        Buffer { address, len, device_writable: true }
    }
}

/// A chain the device is done with: its head descriptor (as [`Virtqueue::add`] returned it)
/// and how many bytes the device wrote into its device-writable buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// The chain's head descriptor.
    pub head: u16,
    /// Bytes written by the device.
    pub len: u32,
}

/// A split virtqueue in memory `M`.
#[derive(Debug)]
pub struct Virtqueue<M> {
    memory: M,
    index: u16,
    size: u16,
    avail_offset: u32,
    used_offset: u32,
    /// The first free descriptor (meaningless when `num_free` is 0).
    free_head: u16,
    num_free: u16,
    /// Each descriptor's successor: in the free list, or in its chain.
    next: Vec<u16>,
    /// For a chain head in flight, its number of descriptors; 0 for every other descriptor.
    chain_len: Vec<u16>,
    /// The driver's copy of the available ring's idx.
    avail_idx: u16,
    /// The used ring idx up to which the driver has taken entries.
    last_used: u16,
}

impl<M: Memory> Virtqueue<M> {
    /// Bytes of memory a queue of `size` descriptors needs.
    pub fn memory_size(size: u16) -> u32 {
        Self::layout(size).2
    }

    /// (available ring offset, used ring offset, total bytes).
    fn layout(size: u16) -> (u32, u32, u32) {
        let n = u32::from(size);
        let avail = VRING_DESC_SIZE * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(VRING_USED_ALIGN_SIZE);
        (avail, used, used + 6 + VRING_USED_ELEM_SIZE * n)
    }

    /// Queue `index` with `size` descriptors (a power of two up to 32768) in `memory`, which must
    /// be 16-byte aligned and hold [`memory_size`](Virtqueue::memory_size) bytes. The rings are
    /// zeroed; the queue is not live until [`Transport::setup_queue`] tells the device.
    pub fn new(index: u16, size: u16, memory: M) -> Result<Virtqueue<M>, Error> {
        if size == 0 || size > VRING_MAX_SIZE || !size.is_power_of_two() {
            return Err(Error::BadQueueSize { size });
        }
        let (avail_offset, used_offset, needed) = Self::layout(size);
        if memory.size() < needed {
            return Err(Error::QueueMemoryTooSmall { size: memory.size(), needed });
        }
        if !memory.bus_address().is_multiple_of(VRING_DESC_ALIGN_SIZE.into()) {
            return Err(Error::QueueMemoryMisaligned { address: memory.bus_address() });
        }
        memory.write(0, &vec![0; needed as usize]).map_err(Error::hw("clearing the queue's rings"))?;
        Ok(Virtqueue {
            memory,
            index,
            size,
            avail_offset,
            used_offset,
            free_head: 0,
            num_free: size,
            next: (1..=size).map(|i| i % size).collect(),
            chain_len: vec![0; size.into()],
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// The queue's index in its device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Its number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Descriptors free for new chains.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains the device has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.chain_len.iter().filter(|&&n| n != 0).count()
    }

    /// The memory the rings live in.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The descriptor table's bus address (QueueDesc).
    pub fn descriptor_address(&self) -> u64 {
        self.memory.bus_address()
    }

    /// The available ring's bus address (QueueDriver).
    pub fn driver_address(&self) -> u64 {
        self.memory.bus_address() + u64::from(self.avail_offset)
    }

    /// The used ring's bus address (QueueDevice).
    pub fn device_address(&self) -> u64 {
        self.memory.bus_address() + u64::from(self.used_offset)
    }

    /// Puts a chain of `buffers` in the available ring and returns its head descriptor. The
    /// device sees it after [`Transport::notify`]. The device-readable buffers should come
    /// before the device-writable ones (virtio 1.2, 2.7.4.2).
    pub fn add(&mut self, buffers: &[Buffer]) -> Result<u16, Error> {
        if buffers.is_empty() {
            return Err(Error::EmptyChain);
        }
        if buffers.len() > usize::from(self.num_free) {
            return Err(Error::QueueFull { needed: buffers.len(), free: self.num_free });
        }
        let head = self.free_head;
        let mut id = head;
        for (i, buffer) in buffers.iter().enumerate() {
            let last = i + 1 == buffers.len();
            let next = self.next[usize::from(id)];
            let mut flags = if buffer.device_writable { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let mut descriptor = [0u8; VRING_DESC_SIZE as usize];
            descriptor[0..8].copy_from_slice(&buffer.address.to_le_bytes());
            descriptor[8..12].copy_from_slice(&buffer.len.to_le_bytes());
            descriptor[12..14].copy_from_slice(&flags.to_le_bytes());
            descriptor[14..16].copy_from_slice(&(if last { 0 } else { next }).to_le_bytes());
            self.memory
                .write(VRING_DESC_SIZE * u32::from(id), &descriptor)
                .map_err(Error::hw("writing a descriptor"))?;
            if last {
                self.free_head = next;
            } else {
                id = next;
            }
        }
        // Taken from the free list only now that every write succeeded.
        self.num_free -= buffers.len() as u16;
        self.chain_len[usize::from(head)] = buffers.len() as u16;
        let slot = self.avail_offset + 4 + 2 * u32::from(self.avail_idx % self.size);
        self.memory.store16(slot, head).map_err(Error::hw("writing the available ring"))?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // Ordered after the descriptor and ring writes: the device sees a complete chain.
        self.memory.store16(self.avail_offset + 2, self.avail_idx).map_err(Error::hw("writing the available index"))?;
        Ok(head)
    }

    /// Takes the next chain the device is done with, if any, and frees its descriptors.
    pub fn pop_used(&mut self) -> Result<Option<Used>, Error> {
        let used_idx = self.memory.load16(self.used_offset + 2).map_err(Error::hw("reading the used index"))?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        let ahead = used_idx.wrapping_sub(self.last_used);
        if ahead > self.size {
            return Err(Error::UsedIndexAhead { used: used_idx, seen: self.last_used, ahead, size: self.size });
        }
        let slot = self.used_offset + 4 + VRING_USED_ELEM_SIZE * u32::from(self.last_used % self.size);
        let entry = self.memory.read(slot, VRING_USED_ELEM_SIZE).map_err(Error::hw("reading the used ring"))?;
        let field = |at: usize| u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
        let (id, len) = (field(0), field(4));
        let head = match u16::try_from(id) {
            Ok(head) if head < self.size && self.chain_len[usize::from(head)] != 0 => head,
            _ => return Err(Error::BadUsedEntry { id, index: self.last_used }),
        };
        self.last_used = self.last_used.wrapping_add(1);
        self.free_chain(head);
        Ok(Some(Used { head, len }))
    }

    /// Waits until the device returns a chain and takes it, as [`pop_used`](Virtqueue::pop_used)
    /// does. Sleeps on `irq`, at most `timeout` per wait (`None`: as long as it takes).
    ///
    /// The used ring is always checked before waiting, and an interrupt that comes after that
    /// check stays pending in the kernel until [`Irq::ack`], so no completion is missed. After
    /// each interrupt: read InterruptStatus, write it to InterruptACK, ack the line, look again.
    pub fn wait_used<R: Regs, I: Irq>(
        &mut self,
        transport: &Transport<R>,
        irq: &I,
        timeout: Option<Duration>,
    ) -> Result<Used, Error> {
        loop {
            if let Some(used) = self.pop_used()? {
                return Ok(used);
            }
            if !transport.wait_interrupt(irq, timeout)? {
                // One last look: the chain may be back without an interrupt having come.
                return self.pop_used()?.ok_or(Error::Timeout(timeout.unwrap_or_default()));
            }
        }
    }

    /// Puts the chain at `head` back on the free list.
    fn free_chain(&mut self, head: u16) {
        let len = std::mem::take(&mut self.chain_len[usize::from(head)]);
        let mut tail = head;
        for _ in 1..len {
            tail = self.next[usize::from(tail)];
        }
        // With no descriptor free, `free_head` is stale, and so is this link: `num_free` says so.
        self.next[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.num_free += len;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use mica::hw::{ErrorCode, HwError};

    use super::*;
    use crate::fake::{FakeDevice, FakeIrq, FakeRegs, TestMemory};
    use crate::spec::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
    use crate::spec::virtio_mmio::{VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_STATUS};
    use crate::transport::VERSION_1;

    fn queue(size: u16) -> (Virtqueue<TestMemory>, FakeDevice) {
        let memory = TestMemory::new(0x4000_0000, Virtqueue::<TestMemory>::memory_size(size));
        let vq = Virtqueue::new(0, size, memory.clone()).expect("queue");
        let device = FakeDevice::new(memory, size, vq.avail_offset, vq.used_offset);
        (vq, device)
    }

    #[test]
    fn layout_follows_the_alignments() {
        assert_eq!(Virtqueue::<TestMemory>::layout(8), (128, 152, 152 + 6 + 64));
        assert_eq!(Virtqueue::<TestMemory>::layout(1), (16, 24, 24 + 6 + 8));
        assert_eq!(Virtqueue::<TestMemory>::layout(256), (4096, 4616, 4616 + 6 + 2048));
        let (vq, _) = queue(8);
        assert_eq!(vq.driver_address(), 0x4000_0000 + 128);
        assert_eq!(vq.device_address() % 4, 0);
    }

    #[test]
    fn bad_sizes_and_memory_are_refused() {
        for size in [0, 3, 12, 65535] {
            assert!(matches!(Virtqueue::new(0, size, TestMemory::new(0, 1 << 20)), Err(Error::BadQueueSize { .. })));
        }
        assert!(matches!(Virtqueue::new(0, 8, TestMemory::new(0, 100)), Err(Error::QueueMemoryTooSmall { .. })));
        assert!(matches!(Virtqueue::new(0, 8, TestMemory::new(8, 4096)), Err(Error::QueueMemoryMisaligned { .. })));
    }

    #[test]
    fn add_writes_the_chain_and_publishes_it() {
        let (mut vq, mut device) = queue(8);
        let chain = [
            Buffer::device_readable(0x1000, 16),
            Buffer::device_readable(0x2000, 512),
            Buffer::device_writable(0x3000, 1),
        ];
        let head = vq.add(&chain).expect("add");
        assert_eq!(head, 0);
        assert_eq!(vq.num_free(), 5);
        let seen = device.take_avail().expect("published");
        assert_eq!(seen.head, 0);
        assert_eq!(seen.buffers, chain);
        assert_eq!(device.flags_of(0), DESC_F_NEXT);
        assert_eq!(device.flags_of(2), DESC_F_WRITE, "the last descriptor has no NEXT");
        assert!(device.take_avail().is_none());
    }

    #[test]
    fn full_and_empty_chains_are_refused() {
        let (mut vq, _) = queue(4);
        assert!(matches!(vq.add(&[]), Err(Error::EmptyChain)));
        vq.add(&[Buffer::device_writable(0, 1); 3]).expect("3 of 4");
        assert!(matches!(vq.add(&[Buffer::device_writable(0, 1); 2]), Err(Error::QueueFull { needed: 2, free: 1 })));
        vq.add(&[Buffer::device_writable(0, 1)]).expect("the last one");
        assert!(matches!(vq.add(&[Buffer::device_writable(0, 1)]), Err(Error::QueueFull { free: 0, .. })));
    }

    #[test]
    fn descriptors_are_reused_after_completion_in_any_order() {
        let (mut vq, mut device) = queue(8);
        let heads: Vec<u16> = (0..4).map(|i| vq.add(&[Buffer::device_writable(i, 1); 2]).expect("add")).collect();
        assert_eq!(vq.num_free(), 0);
        assert_eq!(vq.in_flight(), 4);
        for _ in 0..4 {
            device.take_avail().expect("available");
        }
        // The device completes them out of order.
        for &h in &[heads[2], heads[0], heads[3], heads[1]] {
            device.push_used(h.into(), 7);
        }
        let mut returned = Vec::new();
        while let Some(used) = vq.pop_used().expect("pop") {
            assert_eq!(used.len, 7);
            returned.push(used.head);
        }
        assert_eq!(returned, vec![heads[2], heads[0], heads[3], heads[1]]);
        assert_eq!(vq.num_free(), 8);
        assert_eq!(vq.in_flight(), 0);
        // All eight descriptors are usable again, each exactly once.
        let mut seen = [false; 8];
        for i in 0..8 {
            let head = vq.add(&[Buffer::device_writable(i, 1)]).expect("reuse");
            assert!(!std::mem::replace(&mut seen[usize::from(head)], true), "descriptor {head} given twice");
        }
        assert!(vq.add(&[Buffer::device_writable(0, 1)]).is_err());
    }

    #[test]
    fn indices_wrap_around_at_u16() {
        let (mut vq, mut device) = queue(4);
        for round in 0..70_000u32 {
            let head =
                vq.add(&[Buffer::device_readable(u64::from(round), 4), Buffer::device_writable(0, 4)]).expect("add");
            let chain = device.take_avail().expect("available");
            assert_eq!(chain.head, head);
            assert_eq!(chain.buffers[0].address, u64::from(round));
            device.push_used(head.into(), round);
            assert_eq!(vq.pop_used().expect("pop"), Some(Used { head, len: round }));
            assert_eq!(vq.pop_used().expect("pop"), None);
        }
        assert_eq!(vq.avail_idx, (70_000u32 % 65_536) as u16);
        assert_eq!(vq.num_free(), 4);
    }

    #[test]
    fn bogus_used_entries_are_refused() {
        let (mut vq, mut device) = queue(4);
        vq.add(&[Buffer::device_writable(0, 1)]).expect("add");
        device.push_used(9, 0); // out of range
        assert!(matches!(vq.pop_used(), Err(Error::BadUsedEntry { id: 9, .. })));

        let (mut vq, mut device) = queue(4);
        vq.add(&[Buffer::device_writable(0, 1), Buffer::device_writable(0, 1)]).expect("add");
        device.push_used(1, 0); // inside a chain, not its head
        assert!(matches!(vq.pop_used(), Err(Error::BadUsedEntry { id: 1, .. })));

        let (mut vq, device) = queue(4);
        vq.add(&[Buffer::device_writable(0, 1)]).expect("add");
        device.set_used_idx(5);
        assert!(matches!(vq.pop_used(), Err(Error::UsedIndexAhead { ahead: 5, size: 4, .. })));
    }

    #[test]
    fn a_head_returned_twice_is_refused() {
        let (mut vq, mut device) = queue(4);
        let head = vq.add(&[Buffer::device_writable(0, 1)]).expect("add");
        device.push_used(head.into(), 1);
        device.push_used(head.into(), 1);
        assert!(vq.pop_used().expect("first").is_some());
        assert!(matches!(vq.pop_used(), Err(Error::BadUsedEntry { .. })));
    }

    #[test]
    fn wait_used_checks_the_ring_before_sleeping() {
        let (mut vq, mut device) = queue(4);
        let regs = FakeRegs::new(4, VERSION_1);
        let transport = Transport::new(&regs).expect("transport");
        let head = vq.add(&[Buffer::device_writable(0, 8)]).expect("add");
        device.take_avail().expect("available");
        device.push_used(head.into(), 8);
        // Completed before the driver waits, interrupt not yet seen: no wait at all.
        let irq = FakeIrq::new(|| panic!("waited although the used ring had an entry"));
        assert_eq!(vq.wait_used(&transport, &irq, None).expect("used"), Used { head, len: 8 });
    }

    #[test]
    fn wait_used_waits_until_an_interrupt_brings_the_chain() {
        let (mut vq, device) = queue(4);
        let regs = FakeRegs::new(4, VERSION_1);
        let transport = Transport::new(&regs).expect("transport");
        let head = vq.add(&[Buffer::device_writable(0, 8)]).expect("add");
        let device = std::cell::RefCell::new(device);
        let waits = Cell::new(0);
        let irq = FakeIrq::new(|| {
            waits.set(waits.get() + 1);
            // The first interrupt is spurious (nothing used yet); the second brings the chain.
            if waits.get() == 2 {
                let mut d = device.borrow_mut();
                d.take_avail().expect("available");
                d.push_used(head.into(), 5);
            }
            Ok(1)
        });
        assert_eq!(vq.wait_used(&transport, &irq, None).expect("used"), Used { head, len: 5 });
        assert_eq!(waits.get(), 2);
        assert_eq!(regs.get(VIRTIO_MMIO_INTERRUPT_ACK), 0, "the driver leaves acknowledging to the kernel");
    }

    #[test]
    fn a_device_that_needs_a_reset_is_an_error() {
        let (mut vq, _device) = queue(4);
        let regs = FakeRegs::new(4, VERSION_1);
        regs.set(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_NEEDS_RESET);
        let transport = Transport::new(&regs).expect("transport");
        vq.add(&[Buffer::device_writable(0, 8)]).expect("add");
        let irq = FakeIrq::new(|| Ok(2));
        assert!(matches!(vq.wait_used(&transport, &irq, None), Err(Error::NeedsReset)));
    }

    #[test]
    fn wait_used_times_out_with_an_empty_ring() {
        let (mut vq, _device) = queue(4);
        let regs = FakeRegs::new(4, VERSION_1);
        let transport = Transport::new(&regs).expect("transport");
        vq.add(&[Buffer::device_writable(0, 8)]).expect("add");
        let irq = FakeIrq::new(|| Err(HwError::new(ErrorCode::TimedOut, "no interrupt")));
        let timeout = Some(Duration::from_millis(5));
        assert!(matches!(vq.wait_used(&transport, &irq, timeout), Err(Error::Timeout(_))));
        let irq = FakeIrq::new(|| Err(HwError::new(ErrorCode::InvalidHandle, "bad line")));
        assert!(matches!(vq.wait_used(&transport, &irq, timeout), Err(Error::Hw { .. })));
    }
}
