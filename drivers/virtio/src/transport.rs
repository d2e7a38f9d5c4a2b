//! The virtio-mmio transport, version 2 ("modern", virtio 1.2 section 4.2.2): probing, the
//! initialization sequence, queue setup, notification and interrupt acknowledgement.

use std::time::Duration;

use mica::hw::{ErrorCode, HwError};

use crate::access::{Irq, Memory, Regs};
use crate::error::{Error, InitStep};
use crate::queue::Virtqueue;
use crate::spec::extra::{VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION_LEGACY, VIRTIO_MMIO_VERSION_MODERN, VRING_MAX_SIZE};
use crate::spec::feature;
use crate::spec::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use crate::spec::virtio_mmio::*;

/// The device-independent feature every device must offer: virtio 1.x.
pub(crate) const VERSION_1: u64 = feature(VIRTIO_F_VERSION_1);

/// How many times to read Status after a reset before giving up.
const RESET_POLLS: u32 = 10_000;

/// A virtio-mmio transport over a register window.
///
/// Initialization is three calls, with the device-specific setup between them:
/// [`init`](Transport::init) (reset through FEATURES_OK), then
/// [`create_queue`](Transport::create_queue) or [`setup_queue`](Transport::setup_queue) for each
/// queue, then [`driver_ok`](Transport::driver_ok). Each sets FAILED in the device when it
/// fails and returns [`Error::Init`] naming the step.
#[derive(Debug)]
pub struct Transport<R> {
    regs: R,
    device_id: u32,
    features: u64,
}

impl<R: Regs> Transport<R> {
    /// Checks the window holds a virtio-mmio version 2 transport with a device behind it.
    pub fn new(regs: R) -> Result<Transport<R>, Error> {
        let magic = regs.read32(VIRTIO_MMIO_MAGIC_VALUE).map_err(Error::hw("reading MagicValue"))?;
        if magic != VIRTIO_MMIO_MAGIC {
            return Err(Error::NotVirtio { found: magic });
        }
        match regs.read32(VIRTIO_MMIO_VERSION).map_err(Error::hw("reading Version"))? {
            VIRTIO_MMIO_VERSION_MODERN => {}
            VIRTIO_MMIO_VERSION_LEGACY => return Err(Error::Legacy),
            v => return Err(Error::UnknownVersion(v)),
        }
        let device_id = regs.read32(VIRTIO_MMIO_DEVICE_ID).map_err(Error::hw("reading DeviceID"))?;
        if device_id == 0 {
            return Err(Error::NoDevice);
        }
        Ok(Transport { regs, device_id, features: 0 })
    }

    /// The virtio device id (see [`crate::device_id`]).
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The register window.
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The features negotiated by [`init`](Transport::init) (0 before).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Resets the device, then sets ACKNOWLEDGE and DRIVER, negotiates features and sets
    /// FEATURES_OK: the device's features are intersected with `wanted` plus
    /// [`VIRTIO_F_VERSION_1`], which the device must offer. Returns the negotiated features.
    pub fn init(&mut self, wanted: u64) -> Result<u64, Error> {
        self.reset().map_err(|e| self.failed(InitStep::Reset, e))?;
        self.add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE).map_err(|e| self.failed(InitStep::Acknowledge, e))?;
        self.add_status(VIRTIO_CONFIG_S_DRIVER).map_err(|e| self.failed(InitStep::Driver, e))?;
        let accepted = self.negotiate(wanted).map_err(|e| self.failed(InitStep::Features, e))?;
        self.features_ok(accepted).map_err(|e| self.failed(InitStep::FeaturesOk, e))?;
        self.features = accepted;
        Ok(accepted)
    }

    /// The largest size queue `queue` may have; [`Error::QueueUnavailable`] if the device has
    /// no such queue.
    pub fn queue_max_size(&self, queue: u16) -> Result<u16, Error> {
        self.regs.write32(VIRTIO_MMIO_QUEUE_SEL, queue.into()).map_err(Error::hw("writing QueueSel"))?;
        let max = self.regs.read32(VIRTIO_MMIO_QUEUE_NUM_MAX).map_err(Error::hw("reading QueueNumMax"))?;
        match u16::try_from(max.min(VRING_MAX_SIZE.into())) {
            Ok(0) | Err(_) => Err(Error::QueueUnavailable { queue }),
            Ok(max) => Ok(max),
        }
    }

    /// Creates queue `queue` with the largest power-of-two size up to `wanted` that the device
    /// allows, in memory from `allocate` (given the bytes the rings need), and makes it live.
    pub fn create_queue<M: Memory>(
        &self,
        queue: u16,
        wanted: u16,
        allocate: impl FnOnce(u32) -> Result<M, HwError>,
    ) -> Result<Virtqueue<M>, Error> {
        let step = InitStep::QueueSetup(queue);
        let max = self.queue_max_size(queue).map_err(|e| self.failed(step, e))?;
        let limit = wanted.clamp(1, max);
        // The largest power of two not above `limit` (split queues need a power of two).
        let size = 1u16 << (15 - limit.leading_zeros());
        let memory = allocate(Virtqueue::<M>::memory_size(size))
            .map_err(|e| self.failed(step, Error::hw("allocating the queue's memory")(e)))?;
        let vq = Virtqueue::new(queue, size, memory).map_err(|e| self.failed(step, e))?;
        self.setup_queue(&vq)?;
        Ok(vq)
    }

    /// Tells the device where `vq`'s rings are and makes it live.
    pub fn setup_queue<M: Memory>(&self, vq: &Virtqueue<M>) -> Result<(), Error> {
        let queue = vq.index();
        let run = || {
            let max = self.queue_max_size(queue)?; // also selects the queue
            if self.regs.read32(VIRTIO_MMIO_QUEUE_READY).map_err(Error::hw("reading QueueReady"))? != 0 {
                return Err(Error::QueueInUse { queue });
            }
            if vq.size() > max {
                return Err(Error::QueueTooLarge { queue, size: vq.size(), max });
            }
            self.regs.write32(VIRTIO_MMIO_QUEUE_NUM, vq.size().into()).map_err(Error::hw("writing QueueNum"))?;
            let halves = [
                (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, vq.descriptor_address()),
                (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, vq.driver_address()),
                (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, vq.device_address()),
            ];
            for (low, high, address) in halves {
                self.regs.write32(low, address as u32).map_err(Error::hw("writing a queue address"))?;
                self.regs.write32(high, (address >> 32) as u32).map_err(Error::hw("writing a queue address"))?;
            }
            self.regs.write32(VIRTIO_MMIO_QUEUE_READY, 1).map_err(Error::hw("writing QueueReady"))
        };
        run().map_err(|e| self.failed(InitStep::QueueSetup(queue), e))
    }

    /// Sets DRIVER_OK: the device is live. Fails if the device asks for a reset instead.
    pub fn driver_ok(&self) -> Result<(), Error> {
        let run = || {
            self.add_status(VIRTIO_CONFIG_S_DRIVER_OK)?;
            if self.status()? & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
                return Err(Error::NeedsReset);
            }
            Ok(())
        };
        run().map_err(|e| self.failed(InitStep::DriverOk, e))
    }

    /// Tells the device that queue `queue` has new buffers.
    pub fn notify(&self, queue: u16) -> Result<(), Error> {
        self.regs.write32(VIRTIO_MMIO_QUEUE_NOTIFY, queue.into()).map_err(Error::hw("writing QueueNotify"))
    }

    /// Sleeps until the device interrupts, at most `timeout` (`None`: as long as it takes).
    /// Returns at once if an interrupt came since the last wait, and `false` when the timeout
    /// passed. The kernel has acknowledged the interrupt in the device already; a device that
    /// says it needs a reset is an error. Callers look at their rings either way.
    pub fn wait_interrupt<I: Irq>(&self, irq: &I, timeout: Option<Duration>) -> Result<bool, Error> {
        let cause = match irq.wait(timeout) {
            Ok(cause) => cause,
            Err(e) if e.code == ErrorCode::TimedOut => return Ok(false),
            Err(e) => return Err(Error::hw("waiting for the interrupt")(e)),
        };
        if cause & VIRTIO_MMIO_INT_CONFIG != 0 && self.status()? & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            return Err(Error::NeedsReset);
        }
        Ok(true)
    }

    /// The device status register.
    pub fn status(&self) -> Result<u32, Error> {
        self.regs.read32(VIRTIO_MMIO_STATUS).map_err(Error::hw("reading Status"))
    }

    /// Resets the device (Status 0) and waits until it reads back 0: the device then no longer
    /// uses any queue.
    pub fn reset(&self) -> Result<(), Error> {
        self.regs.write32(VIRTIO_MMIO_STATUS, 0).map_err(Error::hw("writing Status"))?;
        let mut last = 0;
        for _ in 0..RESET_POLLS {
            last = self.status()?;
            if last == 0 {
                return Ok(());
            }
        }
        Err(Error::ResetStuck { status: last })
    }

    /// Sets FAILED: the driver gave up on the device. Best effort: a refused write changes
    /// nothing the caller could act on.
    pub fn fail(&self) {
        if let Ok(now) = self.status() {
            let _ = self.regs.write32(VIRTIO_MMIO_STATUS, now | VIRTIO_CONFIG_S_FAILED);
        }
    }

    /// Reads one byte of the device-specific configuration at `offset`.
    pub fn config_read8(&self, offset: u32) -> Result<u8, Error> {
        self.config_read(offset, 1).map(|v| v as u8)
    }

    /// Reads a 16-bit configuration field at `offset`.
    pub fn config_read16(&self, offset: u32) -> Result<u16, Error> {
        self.config_read(offset, 2).map(|v| v as u16)
    }

    /// Reads a 32-bit configuration field at `offset`.
    pub fn config_read32(&self, offset: u32) -> Result<u32, Error> {
        self.config_read(offset, 4).map(|v| v as u32)
    }

    /// Reads a 64-bit configuration field at `offset` as two 32-bit reads (as virtio-mmio
    /// requires), again until ConfigGeneration shows the device did not change it in between.
    pub fn config_read64(&self, offset: u32) -> Result<u64, Error> {
        loop {
            let before = self.generation()?;
            let low = self.config_read32(offset)?;
            let high = self.config_read32(offset + 4)?;
            if self.generation()? == before {
                return Ok(u64::from(high) << 32 | u64::from(low));
            }
        }
    }

    fn config_read(&self, offset: u32, width: u8) -> Result<u64, Error> {
        self.regs.read(VIRTIO_MMIO_CONFIG + offset, width).map_err(Error::hw("reading the device configuration"))
    }

    fn generation(&self) -> Result<u32, Error> {
        self.regs.read32(VIRTIO_MMIO_CONFIG_GENERATION).map_err(Error::hw("reading ConfigGeneration"))
    }

    fn add_status(&self, bits: u32) -> Result<(), Error> {
        let now = self.status()?;
        self.regs.write32(VIRTIO_MMIO_STATUS, now | bits).map_err(Error::hw("writing Status"))
    }

    fn negotiate(&self, wanted: u64) -> Result<u64, Error> {
        let mut offered = 0u64;
        for half in 0..2u32 {
            self.regs.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, half).map_err(Error::hw("writing DeviceFeaturesSel"))?;
            let bits = self.regs.read32(VIRTIO_MMIO_DEVICE_FEATURES).map_err(Error::hw("reading DeviceFeatures"))?;
            offered |= u64::from(bits) << (32 * half);
        }
        if offered & VERSION_1 == 0 {
            return Err(Error::NoVersion1 { offered });
        }
        let accepted = offered & (wanted | VERSION_1);
        for half in 0..2u32 {
            self.regs.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, half).map_err(Error::hw("writing DriverFeaturesSel"))?;
            let bits = (accepted >> (32 * half)) as u32;
            self.regs.write32(VIRTIO_MMIO_DRIVER_FEATURES, bits).map_err(Error::hw("writing DriverFeatures"))?;
        }
        Ok(accepted)
    }

    fn features_ok(&self, accepted: u64) -> Result<(), Error> {
        self.add_status(VIRTIO_CONFIG_S_FEATURES_OK)?;
        let now = self.status()?;
        if now & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            return Err(Error::FeaturesRejected { accepted, status: now });
        }
        Ok(())
    }

    /// Sets FAILED and wraps `error` with the step it happened in.
    fn failed(&self, step: InitStep, error: Error) -> Error {
        self.fail();
        Error::Init { step, source: Box::new(error) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeRegs, TestMemory};

    fn transport(regs: &FakeRegs) -> Transport<&FakeRegs> {
        Transport::new(regs).expect("a good fake device")
    }

    #[test]
    fn probe_checks_magic_version_and_device() {
        let regs = FakeRegs::new(4, VERSION_1);
        assert_eq!(transport(&regs).device_id(), 4);

        regs.set(VIRTIO_MMIO_MAGIC_VALUE, 0x1234);
        assert!(matches!(Transport::new(&regs), Err(Error::NotVirtio { found: 0x1234 })));
        regs.set(VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_MAGIC);

        regs.set(VIRTIO_MMIO_VERSION, 1);
        let legacy = Transport::new(&regs).expect_err("legacy refused");
        assert!(legacy.to_string().contains("-global virtio-mmio.force-legacy=false"), "{legacy}");
        regs.set(VIRTIO_MMIO_VERSION, 3);
        assert!(matches!(Transport::new(&regs), Err(Error::UnknownVersion(3))));
        regs.set(VIRTIO_MMIO_VERSION, 2);

        regs.set(VIRTIO_MMIO_DEVICE_ID, 0);
        assert!(matches!(Transport::new(&regs), Err(Error::NoDevice)));
    }

    #[test]
    fn init_walks_the_status_sequence_and_negotiates() {
        let regs = FakeRegs::new(2, VERSION_1 | 1 << 5 | 1 << 9 | 1 << 29);
        let mut t = transport(&regs);
        let negotiated = t.init(1 << 5 | 1 << 6).expect("init");
        assert_eq!(negotiated, VERSION_1 | 1 << 5);
        assert_eq!(t.features(), negotiated);
        assert_eq!(regs.driver_features(), negotiated);
        let vq = t.create_queue(0, 100, |n| Ok::<_, HwError>(TestMemory::new(0x8000_0000, n))).expect("queue");
        assert_eq!(vq.size(), 64, "the largest power of two up to 100");
        t.driver_ok().expect("driver ok");
        assert_eq!(
            regs.status_writes(),
            vec![
                0,
                VIRTIO_CONFIG_S_ACKNOWLEDGE,
                VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
                VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
                VIRTIO_CONFIG_S_ACKNOWLEDGE
                    | VIRTIO_CONFIG_S_DRIVER
                    | VIRTIO_CONFIG_S_FEATURES_OK
                    | VIRTIO_CONFIG_S_DRIVER_OK,
            ]
        );
        assert_eq!(regs.get(VIRTIO_MMIO_QUEUE_NUM), 64);
        assert_eq!(regs.get(VIRTIO_MMIO_QUEUE_READY), 1);
        assert_eq!(regs.get(VIRTIO_MMIO_QUEUE_DESC_LOW), 0x8000_0000);
        assert_eq!(regs.get(VIRTIO_MMIO_QUEUE_DESC_HIGH), 0);
        assert_eq!(u64::from(regs.get(VIRTIO_MMIO_QUEUE_AVAIL_LOW)), vq.driver_address() & 0xffff_ffff);
        assert_eq!(u64::from(regs.get(VIRTIO_MMIO_QUEUE_USED_LOW)), vq.device_address() & 0xffff_ffff);
    }

    #[test]
    fn missing_version_1_fails_the_feature_step() {
        let regs = FakeRegs::new(2, 1 << 5);
        let err = transport(&regs).init(0).expect_err("refused");
        assert!(
            matches!(&err, Error::Init { step: InitStep::Features, source } if matches!(**source, Error::NoVersion1 { .. }))
        );
        assert!(err.to_string().contains("feature negotiation"), "{err}");
        assert_ne!(regs.get(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FAILED, 0, "FAILED set");
    }

    #[test]
    fn features_ok_that_does_not_stick_fails() {
        let regs = FakeRegs::new(2, VERSION_1);
        regs.refuse_features_ok();
        let err = transport(&regs).init(0).expect_err("refused");
        assert!(matches!(err, Error::Init { step: InitStep::FeaturesOk, .. }), "{err}");
        assert_ne!(regs.get(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FAILED, 0, "FAILED set");
    }

    #[test]
    fn queue_setup_checks_the_device_limits() {
        let regs = FakeRegs::new(4, VERSION_1);
        let mut t = transport(&regs);
        t.init(0).expect("init");
        regs.set(VIRTIO_MMIO_QUEUE_NUM_MAX, 0);
        let err = t.create_queue(0, 8, |n| Ok::<_, HwError>(TestMemory::new(0, n))).expect_err("no queue");
        assert!(matches!(err, Error::Init { step: InitStep::QueueSetup(0), .. }), "{err}");
        assert!(err.to_string().contains("setup of queue 0"), "{err}");

        let regs = FakeRegs::new(4, VERSION_1);
        let t = transport(&regs);
        regs.set(VIRTIO_MMIO_QUEUE_NUM_MAX, 4);
        let big = Virtqueue::new(0, 8, TestMemory::new(0, Virtqueue::<TestMemory>::memory_size(8))).expect("vq");
        assert!(
            matches!(t.setup_queue(&big), Err(Error::Init { source, .. }) if matches!(*source, Error::QueueTooLarge { max: 4, .. }))
        );
        let vq = t.create_queue(0, 8, |n| Ok::<_, HwError>(TestMemory::new(0, n))).expect("clamped");
        assert_eq!(vq.size(), 4);
        let again = t.setup_queue(&vq).expect_err("already live");
        assert!(matches!(again, Error::Init { source, .. } if matches!(*source, Error::QueueInUse { queue: 0 })));
    }

    #[test]
    fn config_reads_retry_across_a_generation_change() {
        let regs = FakeRegs::new(2, VERSION_1);
        regs.set(VIRTIO_MMIO_CONFIG, 0x0000_2000);
        regs.set(VIRTIO_MMIO_CONFIG + 4, 0x1);
        regs.bump_generation_on_next_config_reads(1);
        assert_eq!(transport(&regs).config_read64(0).expect("capacity"), 0x1_0000_2000);
    }
}
