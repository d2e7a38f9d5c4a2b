//! Test doubles: plain memory, a virtio-mmio register file and an interrupt line that behave
//! like the kernel's checks and a device's side of the rings, for host tests of pure logic.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use mica::hw::{ErrorCode, HwError};

use crate::access::{Irq, Memory, Regs};
use crate::queue::Buffer;
use crate::spec::extra::{VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION_MODERN};
use crate::spec::virtio_config::VIRTIO_CONFIG_S_FEATURES_OK;
use crate::spec::virtio_mmio::*;

fn check(size: usize, offset: u32, len: usize, width: Option<u8>) -> Result<std::ops::Range<usize>, HwError> {
    if let Some(w) = width
        && (![1, 2, 4, 8].contains(&w) || !offset.is_multiple_of(u32::from(w)))
    {
        return Err(HwError::new(ErrorCode::BadWidth, format!("width {w} at offset {offset}")));
    }
    let start = offset as usize;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(HwError::new(ErrorCode::OutOfRange, format!("{len} bytes at {offset} in {size}"))),
    }
}

/// Shared plain memory at a made-up bus address, checked like a DMA buffer.
#[derive(Debug, Clone)]
pub struct TestMemory {
    bytes: Rc<RefCell<Vec<u8>>>,
    bus: u64,
}

impl TestMemory {
    pub fn new(bus: u64, size: u32) -> TestMemory {
        TestMemory { bytes: Rc::new(RefCell::new(vec![0xee; size as usize])), bus }
    }
}

impl Memory for TestMemory {
    fn bus_address(&self) -> u64 {
        self.bus
    }

    fn size(&self) -> u32 {
        self.bytes.borrow().len() as u32
    }

    fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        let bytes = self.bytes.borrow();
        Ok(bytes[check(bytes.len(), offset, len as usize, None)?].to_vec())
    }

    fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        let mut bytes = self.bytes.borrow_mut();
        let range = check(bytes.len(), offset, data.len(), None)?;
        bytes[range].copy_from_slice(data);
        Ok(())
    }

    fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        let bytes = self.bytes.borrow();
        let mut value = [0u8; 8];
        let range = check(bytes.len(), offset, width.into(), Some(width))?;
        value[..usize::from(width)].copy_from_slice(&bytes[range]);
        Ok(u64::from_le_bytes(value))
    }

    fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        let mut bytes = self.bytes.borrow_mut();
        let range = check(bytes.len(), offset, width.into(), Some(width))?;
        bytes[range].copy_from_slice(&value.to_le_bytes()[..usize::from(width)]);
        Ok(())
    }
}

/// A virtio-mmio register file with one queue: features by half, a status register that
/// records its writes, and switches for misbehaviour.
#[derive(Debug, Default)]
pub struct FakeRegs {
    values: RefCell<HashMap<u32, u32>>,
    device_features: u64,
    driver_features: Cell<u64>,
    status_writes: RefCell<Vec<u32>>,
    refuse_features_ok: Cell<bool>,
    generation_bumps: Cell<u32>,
}

impl FakeRegs {
    pub fn new(device_id: u32, device_features: u64) -> FakeRegs {
        let regs = FakeRegs { device_features, ..FakeRegs::default() };
        regs.set(VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_MAGIC);
        regs.set(VIRTIO_MMIO_VERSION, VIRTIO_MMIO_VERSION_MODERN);
        regs.set(VIRTIO_MMIO_DEVICE_ID, device_id);
        regs.set(VIRTIO_MMIO_QUEUE_NUM_MAX, 256);
        regs
    }

    pub fn set(&self, offset: u32, value: u32) {
        self.values.borrow_mut().insert(offset, value);
    }

    pub fn get(&self, offset: u32) -> u32 {
        self.values.borrow().get(&offset).copied().unwrap_or(0)
    }

    pub fn driver_features(&self) -> u64 {
        self.driver_features.get()
    }

    pub fn status_writes(&self) -> Vec<u32> {
        self.status_writes.borrow().clone()
    }

    pub fn refuse_features_ok(&self) {
        self.refuse_features_ok.set(true);
    }

    /// The next `n` reads of configuration space change the configuration generation.
    pub fn bump_generation_on_next_config_reads(&self, n: u32) {
        self.generation_bumps.set(n);
    }

    fn half(&self, sel: u32) -> u32 {
        32 * self.get(sel)
    }
}

impl Regs for FakeRegs {
    fn read(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        check(0x200, offset, width.into(), Some(width))?;
        let value = match offset {
            VIRTIO_MMIO_DEVICE_FEATURES => (self.device_features >> self.half(VIRTIO_MMIO_DEVICE_FEATURES_SEL)) as u32,
            o if o >= VIRTIO_MMIO_CONFIG => {
                if self.generation_bumps.get() > 0 {
                    self.generation_bumps.set(self.generation_bumps.get() - 1);
                    self.set(VIRTIO_MMIO_CONFIG_GENERATION, self.get(VIRTIO_MMIO_CONFIG_GENERATION) + 1);
                }
                self.get(o)
            }
            o => self.get(o),
        };
        Ok(value.into())
    }

    fn write(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        check(0x200, offset, width.into(), Some(width))?;
        let mut value = value as u32;
        match offset {
            VIRTIO_MMIO_STATUS => {
                self.status_writes.borrow_mut().push(value);
                if self.refuse_features_ok.get() {
                    value &= !VIRTIO_CONFIG_S_FEATURES_OK;
                }
            }
            VIRTIO_MMIO_DRIVER_FEATURES => {
                let shift = self.half(VIRTIO_MMIO_DRIVER_FEATURES_SEL);
                let kept = self.driver_features.get() & !(0xffff_ffffu64 << shift);
                self.driver_features.set(kept | u64::from(value) << shift);
            }
            _ => {}
        }
        self.set(offset, value);
        Ok(())
    }
}

/// An interrupt line whose `wait` runs a closure, which plays the device and the kernel: it
/// returns the interrupt status bits the kernel would have acknowledged.
pub struct FakeIrq<F> {
    on_wait: F,
}

impl<F: Fn() -> Result<u32, HwError>> FakeIrq<F> {
    pub fn new(on_wait: F) -> FakeIrq<F> {
        FakeIrq { on_wait }
    }
}

impl<F: Fn() -> Result<u32, HwError>> Irq for FakeIrq<F> {
    fn wait(&self, _timeout: Option<Duration>) -> Result<u32, HwError> {
        (self.on_wait)()
    }
}

/// A chain as the device found it in the available ring.
#[derive(Debug)]
pub struct Chain {
    pub head: u16,
    pub buffers: Vec<Buffer>,
}

/// The device's side of one split virtqueue: takes chains from the available ring, puts
/// entries in the used ring.
#[derive(Debug)]
pub struct FakeDevice {
    memory: TestMemory,
    size: u16,
    avail: u32,
    used: u32,
    last_avail: u16,
    used_idx: u16,
}

impl FakeDevice {
    pub fn new(memory: TestMemory, size: u16, avail: u32, used: u32) -> FakeDevice {
        FakeDevice { memory, size, avail, used, last_avail: 0, used_idx: 0 }
    }

    fn descriptor(&self, id: u16) -> (Buffer, u16, u16) {
        let d = self.memory.read(16 * u32::from(id), 16).expect("descriptor");
        let address = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes"));
        let flags = u16::from_le_bytes([d[12], d[13]]);
        let next = u16::from_le_bytes([d[14], d[15]]);
        (Buffer { address, len, device_writable: flags & 2 != 0 }, flags, next)
    }

    pub fn flags_of(&self, id: u16) -> u16 {
        self.descriptor(id).1
    }

    pub fn take_avail(&mut self) -> Option<Chain> {
        let idx = self.memory.load16(self.avail + 2).expect("avail idx");
        if idx == self.last_avail {
            return None;
        }
        let head = self.memory.load16(self.avail + 4 + 2 * u32::from(self.last_avail % self.size)).expect("ring");
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut buffers = Vec::new();
        let mut id = head;
        loop {
            let (buffer, flags, next) = self.descriptor(id);
            buffers.push(buffer);
            if flags & 1 == 0 {
                break;
            }
            assert!(buffers.len() <= usize::from(self.size), "a descriptor loop");
            id = next;
        }
        Some(Chain { head, buffers })
    }

    pub fn push_used(&mut self, id: u32, len: u32) {
        let slot = self.used + 4 + 8 * u32::from(self.used_idx % self.size);
        let mut entry = id.to_le_bytes().to_vec();
        entry.extend_from_slice(&len.to_le_bytes());
        self.memory.write(slot, &entry).expect("used entry");
        self.used_idx = self.used_idx.wrapping_add(1);
        self.set_used_idx(self.used_idx);
    }

    pub fn set_used_idx(&self, idx: u16) {
        self.memory.store16(self.used + 2, idx).expect("used idx");
    }
}
