//! The virtio-mmio transport, modern interface (virtio 1.2 section 4.2.2, Version 2): a 0x200-byte
//! register window whose first 0x100 bytes are the transport's 32-bit registers and the rest the
//! device's configuration space.
//!
//! The transport follows the driver through the initialization of section 3.1.1: reset (0 to
//! Status), ACKNOWLEDGE, DRIVER, the feature words, FEATURES_OK (kept only if the driver accepted
//! `VIRTIO_F_VERSION_1` and nothing the device does not offer), the queues (QueueSel, QueueNum, the
//! three ring addresses, QueueReady), then DRIVER_OK. A write to QueueNotify then hands the queue to
//! the device, and when it used buffers the transport sets bit 0 of InterruptStatus and raises the
//! interrupt; the driver clears it through InterruptACK.
//!
//! Accesses the specification does not allow (registers other than the configuration space
//! accessed with other than aligned 32-bit loads and stores, writes to read-only registers, queue
//! setup outside of its window in the status sequence) are logged and ignored; such reads return 0.

use std::fmt;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::spec::virtio_mmio::{MAGIC_VALUE, VERSION_MODERN};
use super::{InterruptLine, VirtioDevice};
use crate::devices::MmioDevice;
use crate::error::{Error, Result};

/// The size of a virtio-mmio device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x200;
/// VendorID: "MICA" in little-endian.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"MICA");
/// InterruptStatus bit 0: the device used buffers in a queue.
pub const INT_USED_BUFFER: u32 = VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit 1: the device configuration changed.
pub const INT_CONFIG_CHANGE: u32 = VIRTIO_MMIO_INT_CONFIG;

/// The device configuration space starts here in the window.
const CONFIG_START: u64 = VIRTIO_MMIO_CONFIG as u64;

/// The kernel command line word by which Linux (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`) finds a
/// virtio-mmio device without firmware tables: `virtio_mmio.device=<size>@<base>:<irq>`.
pub fn linux_cmdline_word(base: u64, gsi: u32) -> String {
    format!("virtio_mmio.device={MMIO_WINDOW_SIZE}@{base:#x}:{gsi}")
}

/// A virtio device `D` behind a virtio-mmio register window, with its queues and its interrupt.
pub struct MmioTransport<D> {
    device: D,
    memory: GuestMemoryMmap,
    interrupt: Box<dyn InterruptLine>,
    queues: Vec<Queue>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
}

impl<D: fmt::Debug> fmt::Debug for MmioTransport<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device", &self.device)
            .field("status", &format_args!("{:#x}", self.status))
            .field("driver_features", &format_args!("{:#x}", self.driver_features))
            .field("queues", &self.queues)
            .field("interrupt_status", &self.interrupt_status)
            .finish_non_exhaustive()
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Puts `device` behind a register window. Its queues' buffers live in `memory` (a clone of
    /// the VM's guest memory: the same mappings); `interrupt` is its interrupt line.
    pub fn new(device: D, memory: GuestMemoryMmap, interrupt: Box<dyn InterruptLine>) -> Result<MmioTransport<D>> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .enumerate()
            .map(|(index, &max_size)| {
                <Queue as QueueT>::new(max_size).map_err(|_| Error::VirtioQueueSize {
                    device_id: device.device_id(),
                    index,
                    max_size,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MmioTransport {
            device,
            memory,
            interrupt,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device status the driver has set (the Status register).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver accepted (meaningful once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The queues, as the driver configured them.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// A guest load of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_START {
            self.device.read_config(offset - CONFIG_START, data);
            return;
        }
        data.fill(0);
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::warn!("virtio-mmio: {}-byte read at {offset:#x} (registers are 32-bit) returns 0", data.len());
            return;
        }
        let value = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC_VALUE,
            VIRTIO_MMIO_VERSION => VERSION_MODERN,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_id(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: their length reads as all ones (section 4.2.2.1).
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            // No device here changes its configuration while the driver runs.
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            other => {
                log::debug!("virtio-mmio: read of write-only or unknown register {other:#x} returns 0");
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest store of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_START {
            self.device.write_config(offset - CONFIG_START, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!("virtio-mmio: {}-byte write at {offset:#x} (registers are 32-bit) ignored", data.len());
            return;
        };
        if !offset.is_multiple_of(4) {
            log::warn!("virtio-mmio: unaligned write at {offset:#x} ignored");
            return;
        }
        let value = u32::from_le_bytes(bytes);
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => self.setup_queue("QueueNum", |q, _| q.set_size(value as u16)),
            VIRTIO_MMIO_QUEUE_DESC_LOW => {
                self.setup_queue("QueueDescLow", |q, _| q.set_desc_table_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                self.setup_queue("QueueDescHigh", |q, _| q.set_desc_table_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => {
                self.setup_queue("QueueDriverLow", |q, _| q.set_avail_ring_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                self.setup_queue("QueueDriverHigh", |q, _| q.set_avail_ring_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_USED_LOW => {
                self.setup_queue("QueueDeviceLow", |q, _| q.set_used_ring_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_USED_HIGH => {
                self.setup_queue("QueueDeviceHigh", |q, _| q.set_used_ring_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_READY => self.write_queue_ready(value),
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.acknowledge_interrupt(value),
            VIRTIO_MMIO_STATUS => self.write_status(value),
            VIRTIO_MMIO_SHM_SEL => {}
            other => log::warn!("virtio-mmio: write of {value:#x} to read-only or unknown register {other:#x} ignored"),
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn has_status(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER) || self.has_status(VIRTIO_CONFIG_S_FEATURES_OK) {
            log::warn!(
                "virtio-mmio: DriverFeatures written in status {:#x} (only between DRIVER and FEATURES_OK): ignored",
                self.status
            );
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32),
            sel => log::warn!("virtio-mmio: DriverFeatures word {sel} does not exist; {value:#x} ignored"),
        }
    }

    /// Applies a queue setup register write to the selected queue, if queues may be set up now:
    /// after FEATURES_OK, before DRIVER_OK, while the queue is not ready (QueueReady itself may
    /// also be written while it is).
    fn setup_queue(&mut self, register: &str, set: impl FnOnce(&mut Queue, &GuestMemoryMmap)) {
        let in_setup = self.has_status(VIRTIO_CONFIG_S_FEATURES_OK) && !self.has_status(VIRTIO_CONFIG_S_DRIVER_OK);
        let (status, sel) = (self.status, self.queue_sel);
        match self.queues.get_mut(sel as usize) {
            Some(queue) if in_setup && (!queue.ready() || register == "QueueReady") => set(queue, &self.memory),
            Some(_) if in_setup => log::warn!("virtio-mmio: {register} written while queue {sel} is ready: ignored"),
            Some(_) => log::warn!(
                "virtio-mmio: {register} written in status {status:#x} (only after FEATURES_OK, before DRIVER_OK): \
                 ignored"
            ),
            None => log::warn!("virtio-mmio: {register} written for queue {sel}, which does not exist: ignored"),
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        self.setup_queue("QueueReady", |queue, memory| {
            if value == 0 {
                queue.set_ready(false);
                return;
            }
            queue.set_event_idx(event_idx);
            queue.set_ready(true);
            // The size and all three rings must be valid and in guest memory, or the queue stays
            // not ready (the driver reads QueueReady back as 0).
            if !queue.is_valid(memory) {
                log::warn!(
                    "virtio-mmio: queue of size {} with descriptors at {:#x}, driver area at {:#x}, device area \
                     at {:#x} is not valid (outside guest memory or misaligned): not made ready",
                    queue.size(),
                    queue.desc_table(),
                    queue.avail_ring(),
                    queue.used_ring()
                );
                queue.set_ready(false);
            }
        });
    }

    fn notify(&mut self, index: u32) {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER_OK) || self.has_status(VIRTIO_CONFIG_S_FAILED) {
            log::warn!("virtio-mmio: notification of queue {index} in status {:#x} ignored", self.status);
            return;
        }
        let Some(queue) = self.queues.get(index as usize) else {
            log::warn!("virtio-mmio: notification of queue {index}, which does not exist, ignored");
            return;
        };
        if !queue.ready() {
            log::warn!("virtio-mmio: notification of queue {index}, which is not ready, ignored");
            return;
        }
        if self.device.process_queue(index as usize, &mut self.queues, &self.memory) {
            self.signal(INT_USED_BUFFER);
        }
    }

    /// Lets the device do the work no notification brings ([`VirtioDevice::poll`]: for a
    /// console, moving host-side input into the guest's receive buffers), and interrupts the
    /// guest if it used buffers. Nothing happens before DRIVER_OK or after FAILED. The VMM calls
    /// this periodically (or when a host-side descriptor becomes readable).
    pub fn poll(&mut self) {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER_OK) || self.has_status(VIRTIO_CONFIG_S_FAILED) {
            return;
        }
        if self.device.poll(&mut self.queues, &self.memory) {
            self.signal(INT_USED_BUFFER);
        }
    }

    /// What the device waits on before [`MmioTransport::poll`] can do anything
    /// ([`VirtioDevice::waits`]); nothing before DRIVER_OK or after FAILED, when polling does
    /// nothing.
    pub fn waits(&self) -> Vec<super::Wait> {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER_OK) || self.has_status(VIRTIO_CONFIG_S_FAILED) {
            return Vec::new();
        }
        self.device.waits()
    }

    /// Sets `bits` in InterruptStatus and raises the interrupt.
    fn signal(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        if let Err(e) = self.interrupt.raise() {
            log::warn!("virtio-mmio: cannot raise the interrupt: {e}");
        }
    }

    fn acknowledge_interrupt(&mut self, value: u32) {
        let was_pending = self.interrupt_status != 0;
        self.interrupt_status &= !value;
        if was_pending
            && self.interrupt_status == 0
            && let Err(e) = self.interrupt.lower()
        {
            log::warn!("virtio-mmio: cannot lower the interrupt: {e}");
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & self.status != self.status {
            log::warn!("virtio-mmio: Status {value:#x} would clear bits of {:#x}: ignored", self.status);
            return;
        }
        let newly = value & !self.status;
        let mut value = value;
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            log::warn!(
                "virtio-mmio: driver features {:#x} refused (device offers {:#x}, VIRTIO_F_VERSION_1 required): \
                 FEATURES_OK not set",
                self.driver_features,
                self.device.features()
            );
            value &= !VIRTIO_CONFIG_S_FEATURES_OK;
        } else if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.device.ack_features(self.driver_features);
        }
        if newly & VIRTIO_CONFIG_S_DRIVER_OK != 0 && value & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            log::warn!("virtio-mmio: DRIVER_OK without FEATURES_OK: ignored");
            value &= !VIRTIO_CONFIG_S_DRIVER_OK;
        }
        if newly & VIRTIO_CONFIG_S_FAILED != 0 {
            log::warn!("virtio-mmio: the driver gave up on device {} (FAILED)", self.device.device_id());
        }
        self.status = value;
    }

    /// Whether the features the driver accepted can be used: a subset of what the device offers,
    /// with `VIRTIO_F_VERSION_1`.
    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.device.features() == 0 && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    /// Device reset: the status, the features, the queues and the interrupt status go back to
    /// their initial state, and the device resets itself.
    fn reset(&mut self) {
        self.device.reset();
        for queue in &mut self.queues {
            queue.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        if self.interrupt_status != 0 {
            self.interrupt_status = 0;
            if let Err(e) = self.interrupt.lower() {
                log::warn!("virtio-mmio: cannot lower the interrupt: {e}");
            }
        }
    }
}

impl<D: VirtioDevice + fmt::Debug> MmioDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        MmioTransport::read(self, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        MmioTransport::write(self, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_FAILED};
    use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

    use super::*;
    use crate::virtio::testing::{AVAIL_RING, DESC_TABLE, Driver, F_WRITE, MEMORY_SIZE, USED_RING};

    /// A device that returns every chain unused (length 0) and records what happened to it.
    #[derive(Debug, Default)]
    struct Recorder {
        notified: Vec<usize>,
        chains: usize,
        resets: usize,
    }

    /// An extra feature bit the recorder offers besides VERSION_1.
    const F_EXTRA: u64 = 1 << 3;
    const CONFIG: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    impl VirtioDevice for Recorder {
        fn device_id(&self) -> u32 {
            VIRTIO_ID_RNG
        }

        fn features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1 | F_EXTRA
        }

        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }

        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = CONFIG.get(offset as usize + i).copied().unwrap_or(0);
            }
        }

        fn process_queue(&mut self, index: usize, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
            self.notified.push(index);
            let queue = &mut queues[index];
            let mut used = false;
            while let Some(chain) = queue.pop_descriptor_chain(memory) {
                queue.add_used(memory, chain.head_index(), 0).expect("add used");
                self.chains += 1;
                used = true;
            }
            used
        }

        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    const STATUS_FEATURES_OK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;

    #[test]
    fn linux_finds_the_device_by_a_command_line_word() {
        assert_eq!(linux_cmdline_word(0xd000_0000, 5), "virtio_mmio.device=512@0xd0000000:5");
        assert_eq!(linux_cmdline_word(0xd000_1000, 6), "virtio_mmio.device=512@0xd0001000:6");
    }

    #[test]
    fn identification_registers() {
        let mut d = Driver::new(Recorder::default());
        assert_eq!(d.read32(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976, "\"virt\"");
        assert_eq!(d.read32(VIRTIO_MMIO_VERSION), 2, "modern interface");
        assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
        assert_eq!(d.read32(VIRTIO_MMIO_VENDOR_ID), u32::from_le_bytes(*b"MICA"));
        assert_eq!(d.device_features(), 1 << 32 | F_EXTRA);
        d.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
        assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_FEATURES), 0, "no third feature word");
        for (queue, max) in [(0, 16), (1, 8), (2, 0)] {
            d.write32(VIRTIO_MMIO_QUEUE_SEL, queue);
            assert_eq!(d.read32(VIRTIO_MMIO_QUEUE_NUM_MAX), max, "queue {queue}");
        }
        assert_eq!(d.read32(VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX, "no shared memory region");
        assert_eq!(d.read32(VIRTIO_MMIO_CONFIG_GENERATION), 0);
        // Registers are 32-bit: other widths and unaligned offsets read as 0.
        let mut byte = [0xaa];
        d.transport.read(0, &mut byte);
        assert_eq!(byte, [0]);
        let mut word = [0xaa; 4];
        d.transport.read(2, &mut word);
        assert_eq!(word, [0; 4]);
        // A write to a read-only register changes nothing.
        d.write32(VIRTIO_MMIO_MAGIC_VALUE, 0);
        assert_eq!(d.read32(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    }

    #[test]
    fn config_space_is_read_at_any_width_from_0x100() {
        let mut d = Driver::new(Recorder::default());
        let mut one = [0u8; 1];
        d.transport.read(0x103, &mut one);
        assert_eq!(one, [0x44]);
        let mut two = [0u8; 2];
        d.transport.read(0x106, &mut two);
        assert_eq!(two, [0x77, 0x88]);
        assert_eq!(d.read32(0x104), 0x8877_6655);
        let mut eight = [0u8; 8];
        d.transport.read(0x100, &mut eight);
        assert_eq!(eight, CONFIG);
        assert_eq!(d.read32(0x108), 0, "past the device's config");
    }

    #[test]
    fn features_ok_needs_version_1_and_only_offered_bits() {
        let mut d = Driver::new(Recorder::default());
        assert!(!d.negotiate(|_| F_EXTRA), "a legacy driver (no VERSION_1) is refused");
        assert_eq!(d.status(), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        assert!(!d.negotiate(|offered| offered | 1 << 5), "a feature the device does not offer");
        assert!(d.negotiate(|_| 1 << VIRTIO_F_VERSION_1), "VERSION_1 alone");
        assert_eq!(d.transport.driver_features(), 1 << VIRTIO_F_VERSION_1);
        assert!(d.negotiate(|offered| offered));
        assert_eq!(d.transport.driver_features(), 1 << VIRTIO_F_VERSION_1 | F_EXTRA);
        assert_eq!(d.status(), STATUS_FEATURES_OK);
        // After FEATURES_OK the features are fixed.
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES, 0);
        assert_eq!(d.transport.driver_features(), 1 << VIRTIO_F_VERSION_1 | F_EXTRA);
    }

    #[test]
    fn status_sequence_is_enforced() {
        let mut d = Driver::new(Recorder::default());
        // DriverFeatures before DRIVER is ignored.
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        d.write32(VIRTIO_MMIO_DRIVER_FEATURES, 1);
        assert_eq!(d.transport.driver_features(), 0);
        // DRIVER_OK without FEATURES_OK is not kept.
        d.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        d.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK);
        assert_eq!(d.status(), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        // Queue registers before FEATURES_OK are ignored.
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        d.write32(VIRTIO_MMIO_QUEUE_NUM, 4);
        d.write32(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
        assert_eq!((d.transport.queues()[0].size(), d.transport.queues()[0].desc_table()), (16, 0));
        // Clearing a bit is not allowed (only a reset clears the status).
        d.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        assert_eq!(d.status(), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    }

    #[test]
    fn queue_setup_reaches_the_queue() {
        let mut d = Driver::new(Recorder::default());
        assert!(d.negotiate(|offered| offered));
        assert_eq!(d.setup_queue_at(1, 4, 0x1_2345_0000, 0x4_0000, 0x5_0000), 0, "descriptors beyond guest memory");
        let queue = &d.transport.queues()[1];
        assert_eq!((queue.size(), queue.desc_table(), queue.ready()), (4, 0x1_2345_0000, false));
        assert_eq!(d.setup_queue_at(1, 4, 0x3000, 0x4000, MEMORY_SIZE as u64 - 8), 0, "used ring past the end");
        d.write32(VIRTIO_MMIO_QUEUE_NUM, 3);
        assert_eq!(d.transport.queues()[1].size(), 4, "3 is not a power of two");
        assert_eq!(d.setup_queue_at(1, 8, 0x3000, 0x4000, 0x5000), 1);
        let queue = &d.transport.queues()[1];
        assert_eq!(
            (queue.size(), queue.desc_table(), queue.avail_ring(), queue.used_ring(), queue.ready()),
            (8, 0x3000, 0x4000, 0x5000, true)
        );
        // A ready queue's addresses are fixed.
        d.write32(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x6000);
        assert_eq!(d.transport.queues()[1].desc_table(), 0x3000);
        // So are all queues' after DRIVER_OK.
        d.driver_ok();
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        d.write32(VIRTIO_MMIO_QUEUE_NUM, 2);
        assert_eq!(d.transport.queues()[0].size(), 16);
    }

    #[test]
    fn notify_processes_the_queue_and_raises_the_interrupt_until_acknowledged() {
        let mut d = Driver::new(Recorder::default());
        d.start(16);
        let head = d.post(&[(0x8_0000, 64, F_WRITE)]);
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        d.notify(0);
        assert_eq!(d.transport.device().notified, [0]);
        assert_eq!(d.take_used(), [(u32::from(head), 0)]);
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), INT_USED_BUFFER);
        assert_eq!(d.irq.counts(), (1, 0), "raised once");
        // A notification with nothing new: no used buffers, no interrupt.
        d.notify(0);
        assert_eq!(d.irq.counts(), (1, 0));
        // Acknowledging another bit leaves the used-buffer bit pending.
        d.write32(VIRTIO_MMIO_INTERRUPT_ACK, INT_CONFIG_CHANGE);
        assert_eq!((d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), d.irq.counts()), (INT_USED_BUFFER, (1, 0)));
        d.write32(VIRTIO_MMIO_INTERRUPT_ACK, INT_USED_BUFFER);
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        assert_eq!(d.irq.counts(), (1, 1), "lowered once everything was acknowledged");
        // Queue 1 is not ready, queue 2 does not exist: nothing happens.
        d.notify(1);
        d.notify(2);
        assert_eq!(d.transport.device().notified, [0, 0]);
        assert_eq!(d.transport.device().chains, 1);
    }

    #[test]
    fn nothing_is_processed_before_driver_ok_or_after_failed() {
        let mut d = Driver::new(Recorder::default());
        assert!(d.negotiate(|offered| offered));
        assert_eq!(d.setup_queue_at(0, 16, DESC_TABLE, AVAIL_RING, USED_RING), 1);
        d.post(&[(0x8_0000, 64, F_WRITE)]);
        d.notify(0);
        assert!(d.transport.device().notified.is_empty(), "before DRIVER_OK");
        let status = d.status();
        d.write32(VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED);
        d.notify(0);
        assert!(d.transport.device().notified.is_empty(), "after FAILED");
        assert!(d.take_used().is_empty());
    }

    #[test]
    fn reset_clears_status_features_queues_and_interrupt() {
        let mut d = Driver::new(Recorder::default());
        d.start(16);
        d.post(&[(0x8_0000, 64, F_WRITE)]);
        d.notify(0);
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), INT_USED_BUFFER);
        assert_eq!(d.transport.device().resets, 1, "the driver's own first step");
        d.write32(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(d.status(), 0);
        assert_eq!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        assert_eq!(d.irq.counts(), (1, 1), "the pending interrupt was lowered");
        assert_eq!(d.transport.driver_features(), 0);
        assert_eq!(d.transport.device().resets, 2);
        d.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(d.read32(VIRTIO_MMIO_QUEUE_READY), 0);
        let queue = &d.transport.queues()[0];
        assert_eq!((queue.size(), queue.desc_table(), queue.next_avail(), queue.next_used()), (16, 0, 0, 0));
        // A notification after the reset reaches nothing.
        d.notify(0);
        assert_eq!(d.transport.device().notified, [0]);
        // The driver can start over, and the queue starts from index 0 again.
        d.start(8);
        let head = d.post(&[(0x8_0000, 64, F_WRITE)]);
        d.notify(0);
        assert_eq!(d.take_used(), [(u32::from(head), 0)]);
        assert_eq!(d.transport.device().chains, 2);
    }
}
