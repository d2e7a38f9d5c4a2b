//! What can go wrong talking to a virtio device, and the initialization step it went wrong in.

use std::fmt;
use std::time::Duration;

use mica::hw::HwError;

/// The steps of device initialization (virtio 1.2, section 3.1.1), to say which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitStep {
    /// Writing 0 to Status and waiting until it reads 0.
    Reset,
    /// Setting ACKNOWLEDGE: the driver noticed the device.
    Acknowledge,
    /// Setting DRIVER: the driver knows how to drive it.
    Driver,
    /// Reading the device's features and writing the driver's.
    Features,
    /// Setting FEATURES_OK and reading it back.
    FeaturesOk,
    /// Setting up virtqueue `n`.
    QueueSetup(u16),
    /// Setting DRIVER_OK: the device is live.
    DriverOk,
}

impl fmt::Display for InitStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitStep::Reset => f.write_str("reset"),
            InitStep::Acknowledge => f.write_str("ACKNOWLEDGE"),
            InitStep::Driver => f.write_str("DRIVER"),
            InitStep::Features => f.write_str("feature negotiation"),
            InitStep::FeaturesOk => f.write_str("FEATURES_OK"),
            InitStep::QueueSetup(n) => write!(f, "setup of queue {n}"),
            InitStep::DriverOk => f.write_str("DRIVER_OK"),
        }
    }
}

/// A failure of the transport, a virtqueue or the device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `mica:hw` call was refused (`what` says which access).
    #[error("{what}: {source}")]
    Hw {
        /// The access, in words.
        what: &'static str,
        /// The kernel's refusal.
        source: HwError,
    },
    /// The manifest grants this component no present device of this virtio device id.
    #[error("no granted device has virtio device id {device_id} (granted: {granted})")]
    NotGranted {
        /// The device id looked for.
        device_id: u32,
        /// The granted devices, for the message.
        granted: String,
    },
    /// The window does not hold a virtio-mmio transport.
    #[error("not a virtio-mmio device: the magic value is {found:#010x}, not 0x74726976 (\"virt\")")]
    NotVirtio {
        /// The value at offset 0.
        found: u32,
    },
    /// The transport is the legacy (virtio 0.9) register layout.
    #[error(
        "the machine presents a legacy virtio-mmio device (version 1), and Mica drives only virtio 1.x \
         (version 2): QEMU needs `-global virtio-mmio.force-legacy=false`"
    )]
    Legacy,
    /// A transport version this crate does not know.
    #[error("unknown virtio-mmio version {0} (expected 2)")]
    UnknownVersion(u32),
    /// The transport has no device behind it (device id 0).
    #[error("the virtio-mmio transport has no device behind it (device id 0)")]
    NoDevice,
    /// The device is of another kind than the driver drives.
    #[error("the device has virtio device id {found}, this driver needs {expected}")]
    WrongDevice {
        /// The id the driver needs.
        expected: u32,
        /// The device's id.
        found: u32,
    },
    /// Status did not read 0 after a reset.
    #[error("the device did not complete its reset: status still reads {status:#x}")]
    ResetStuck {
        /// The last status read.
        status: u32,
    },
    /// The device lacks VIRTIO_F_VERSION_1, which every virtio 1.x device offers.
    #[error("the device does not offer VIRTIO_F_VERSION_1 (bit 32); it offers {offered:#x}")]
    NoVersion1 {
        /// The device's features.
        offered: u64,
    },
    /// FEATURES_OK did not stick: the device refuses this subset of its features.
    #[error("the device refused the features {accepted:#x}: FEATURES_OK did not stay set (status {status:#x})")]
    FeaturesRejected {
        /// The features the driver wrote.
        accepted: u64,
        /// The status read back.
        status: u32,
    },
    /// A virtqueue the device does not have.
    #[error("the device has no queue {queue} (its QueueNumMax is 0)")]
    QueueUnavailable {
        /// The queue index.
        queue: u16,
    },
    /// A virtqueue that is already live.
    #[error("queue {queue} is already in use (QueueReady reads 1)")]
    QueueInUse {
        /// The queue index.
        queue: u16,
    },
    /// A virtqueue size that is 0, over 32768 or not a power of two.
    #[error("virtqueue size {size} is not a power of two from 1 to 32768")]
    BadQueueSize {
        /// The size asked for.
        size: u16,
    },
    /// A virtqueue larger than the device allows.
    #[error("queue {queue}: size {size} is larger than the device's maximum {max}")]
    QueueTooLarge {
        /// The queue index.
        queue: u16,
        /// The size asked for.
        size: u16,
        /// The device's QueueNumMax.
        max: u16,
    },
    /// The memory given to a virtqueue cannot hold its rings.
    #[error("the virtqueue's memory has {size} bytes, its rings need {needed}")]
    QueueMemoryTooSmall {
        /// Bytes given.
        size: u32,
        /// Bytes needed.
        needed: u32,
    },
    /// The memory given to a virtqueue is not 16-byte aligned for the device.
    #[error("the virtqueue's memory starts at bus address {address:#x}, which is not 16-byte aligned")]
    QueueMemoryMisaligned {
        /// Its bus address.
        address: u64,
    },
    /// Initialization failed at `step`; the device has been told (status FAILED).
    #[error("virtio initialization failed at {step}: {source}")]
    Init {
        /// The failed step.
        step: InitStep,
        /// Why.
        source: Box<Error>,
    },
    /// A descriptor chain of no buffers.
    #[error("a descriptor chain needs at least one buffer")]
    EmptyChain,
    /// Not enough free descriptors for a chain.
    #[error("the chain needs {needed} descriptors, the queue has {free} free")]
    QueueFull {
        /// Descriptors the chain needs.
        needed: usize,
        /// Free descriptors.
        free: u16,
    },
    /// The device put something in the used ring that is not the head of a chain in flight.
    #[error("the device returned descriptor {id} (used ring entry {index}), which heads no chain in flight")]
    BadUsedEntry {
        /// The id the device wrote.
        id: u32,
        /// The used ring index of the entry.
        index: u16,
    },
    /// The device's used index ran ahead of the driver by more than the queue holds.
    #[error(
        "the device's used index {used} is {ahead} entries past the driver's {seen}, more than the queue size {size}"
    )]
    UsedIndexAhead {
        /// The device's used index.
        used: u16,
        /// The driver's last seen used index.
        seen: u16,
        /// The difference.
        ahead: u16,
        /// The queue size.
        size: u16,
    },
    /// The device set DEVICE_NEEDS_RESET: it cannot go on until it is reset.
    #[error("the device needs a reset (DEVICE_NEEDS_RESET is set in its status)")]
    NeedsReset,
    /// No buffer came back within the timeout.
    #[error("the device returned no buffer within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// A `mica:hw` refusal during `what`.
    pub(crate) fn hw(what: &'static str) -> impl FnOnce(HwError) -> Error {
        move |source| Error::Hw { what, source }
    }
}
