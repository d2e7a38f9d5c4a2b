//! Every virtio constant Mica writes down, in one place: for the kernel (`x86_64-unknown-none`),
//! `mica-vmm` (Linux) and the driver components (`wasm32-wasip2`) alike.
//!
//! The standard ones come from Linux's uapi headers, which the `virtio-bindings` crate carries
//! as Rust; that crate needs `std` and has no bindings for wasm32, so neither the kernel nor the
//! drivers can use it. The modules below repeat the names Mica uses, with the same module paths,
//! names, types and values; `mica-vmm`, on Linux, takes the rest from `virtio-bindings` itself.
//! Each module's test compares every value with `virtio-bindings` on the host, so a constant
//! cannot be added here without that check.
//!
//! Feature constants are bit numbers, as in `virtio-bindings`; [`feature`] makes the mask that
//! a driver's transport takes. What `virtio-bindings` has no constant for
//! (the MMIO magic value, ring and header sizes, configuration offsets, queue indexes) is in
//! [`extra`], with the layouts checked against `virtio-bindings`' structs.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

/// The mask of feature bit `bit` (a `VIRTIO_*_F_*` constant).
pub const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// Declares modules of `u32` constants that mirror `virtio-bindings`' modules of the same names,
/// each with a test that every value is the one `virtio-bindings` has.
macro_rules! mirror {
    ($($(#[$module_doc:meta])* pub mod $module:ident { $($(#[$doc:meta])* $name:ident = $value:expr;)* })*) => {
        $(
            $(#[$module_doc])*
            pub mod $module {
                $($(#[$doc])* pub const $name: u32 = $value;)*

                #[cfg(test)]
                #[test]
                fn every_value_is_the_one_virtio_bindings_has() {
                    $(assert_eq!($name, virtio_bindings::$module::$name, stringify!($name));)*
                }
            }
        )*
    };
}

mirror! {
    /// Device status bits and device-independent feature bits (virtio 1.2, sections 2.1 and 6).
    pub mod virtio_config {
        /// The driver noticed the device.
        VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
        /// The driver knows how to drive it.
        VIRTIO_CONFIG_S_DRIVER = 2;
        /// The device is live.
        VIRTIO_CONFIG_S_DRIVER_OK = 4;
        /// Feature negotiation is complete.
        VIRTIO_CONFIG_S_FEATURES_OK = 8;
        /// The device hit an error it cannot recover from without a reset.
        VIRTIO_CONFIG_S_NEEDS_RESET = 64;
        /// The driver gave up on the device.
        VIRTIO_CONFIG_S_FAILED = 128;
        /// Feature: the device is virtio 1.x (required by this crate).
        VIRTIO_F_VERSION_1 = 32;
    }

    /// Device ids (virtio 1.2, section 5).
    pub mod virtio_ids {
        /// A network card.
        VIRTIO_ID_NET = 1;
        /// A block device.
        VIRTIO_ID_BLOCK = 2;
        /// A console.
        VIRTIO_ID_CONSOLE = 3;
        /// An entropy source.
        VIRTIO_ID_RNG = 4;
        /// A memory balloon (the traditional one).
        VIRTIO_ID_BALLOON = 5;
        /// A 9P transport.
        VIRTIO_ID_9P = 9;
        /// A GPU.
        VIRTIO_ID_GPU = 16;
        /// An input device.
        VIRTIO_ID_INPUT = 18;
        /// A socket device.
        VIRTIO_ID_VSOCK = 19;
        /// A file system device.
        VIRTIO_ID_FS = 26;
    }

    /// Register offsets in the virtio-mmio window, and the interrupt status bits (virtio 1.2,
    /// section 4.2.2).
    pub mod virtio_mmio {
        /// "virt" ([`super::extra::VIRTIO_MMIO_MAGIC`]).
        VIRTIO_MMIO_MAGIC_VALUE = 0x000;
        /// 2 for virtio 1.x; 1 for the legacy layout.
        VIRTIO_MMIO_VERSION = 0x004;
        /// The virtio device id; 0 means no device.
        VIRTIO_MMIO_DEVICE_ID = 0x008;
        /// The subsystem vendor id.
        VIRTIO_MMIO_VENDOR_ID = 0x00c;
        /// 32 feature bits of the device, the half chosen by [`VIRTIO_MMIO_DEVICE_FEATURES_SEL`].
        VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
        /// Selects bits 0..32 (0) or 32..64 (1) for [`VIRTIO_MMIO_DEVICE_FEATURES`].
        VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
        /// 32 feature bits the driver accepts, the half chosen by [`VIRTIO_MMIO_DRIVER_FEATURES_SEL`].
        VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
        /// Selects the half for [`VIRTIO_MMIO_DRIVER_FEATURES`].
        VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
        /// Selects the queue the queue registers apply to.
        VIRTIO_MMIO_QUEUE_SEL = 0x030;
        /// The largest size the selected queue may have; 0 if there is no such queue.
        VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
        /// The size the driver chose for the selected queue.
        VIRTIO_MMIO_QUEUE_NUM = 0x038;
        /// 1 once the selected queue is live.
        VIRTIO_MMIO_QUEUE_READY = 0x044;
        /// Written with a queue index: new buffers in it.
        VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
        /// Why the device interrupted ([`VIRTIO_MMIO_INT_VRING`], [`VIRTIO_MMIO_INT_CONFIG`]).
        VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
        /// Written with the handled [`VIRTIO_MMIO_INTERRUPT_STATUS`] bits.
        VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
        /// The device status (see [`super::virtio_config`]); writing 0 resets the device.
        VIRTIO_MMIO_STATUS = 0x070;
        /// The selected queue's descriptor table address, low half.
        VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
        /// High half.
        VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
        /// The selected queue's available ring ("driver area") address, low half.
        VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090;
        /// High half.
        VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094;
        /// The selected queue's used ring ("device area") address, low half.
        VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0;
        /// High half.
        VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4;
        /// Changes whenever the device changes its configuration space.
        VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
        /// The device-specific configuration space starts here.
        VIRTIO_MMIO_CONFIG = 0x100;
        /// Interrupt status bit: the device used buffers.
        VIRTIO_MMIO_INT_VRING = 1;
        /// Interrupt status bit: the device's configuration changed (it may need a reset).
        VIRTIO_MMIO_INT_CONFIG = 2;
    }

    /// Split virtqueue descriptor flags and alignments (virtio 1.2, section 2.7).
    pub mod virtio_ring {
        /// Descriptor flag: the chain goes on at `next`.
        VRING_DESC_F_NEXT = 1;
        /// Descriptor flag: the device writes this buffer (else it reads it).
        VRING_DESC_F_WRITE = 2;
        /// The descriptor table's alignment in bytes.
        VRING_DESC_ALIGN_SIZE = 16;
        /// The used ring's alignment in bytes.
        VRING_USED_ALIGN_SIZE = 4;
    }

    /// The block device (virtio 1.2, section 5.2).
    pub mod virtio_blk {
        /// Feature: the disk is read-only.
        VIRTIO_BLK_F_RO = 5;
        /// Feature: the device has a write cache and takes flush requests.
        VIRTIO_BLK_F_FLUSH = 9;
        /// Request type: read.
        VIRTIO_BLK_T_IN = 0;
        /// Request type: write.
        VIRTIO_BLK_T_OUT = 1;
        /// Request type: flush the write cache.
        VIRTIO_BLK_T_FLUSH = 4;
        /// Request status: done.
        VIRTIO_BLK_S_OK = 0;
        /// Request status: the device failed it.
        VIRTIO_BLK_S_IOERR = 1;
        /// Request status: the device does not take this request type.
        VIRTIO_BLK_S_UNSUPP = 2;
    }

    /// The network card (virtio 1.2, section 5.1).
    pub mod virtio_net {
        /// Feature: the device has a MAC address in its configuration space.
        VIRTIO_NET_F_MAC = 5;
    }
}

/// Virtio facts that `virtio-bindings` has no constant for, from the virtio 1.2 specification
/// (sizes and offsets are checked against `virtio-bindings`' structs).
pub mod extra {
    /// The value of [`VIRTIO_MMIO_MAGIC_VALUE`](super::virtio_mmio::VIRTIO_MMIO_MAGIC_VALUE):
    /// "virt" in little-endian.
    pub const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976;
    /// [`VIRTIO_MMIO_VERSION`](super::virtio_mmio::VIRTIO_MMIO_VERSION) of a virtio 1.x device.
    pub const VIRTIO_MMIO_VERSION_MODERN: u32 = 2;
    /// [`VIRTIO_MMIO_VERSION`](super::virtio_mmio::VIRTIO_MMIO_VERSION) of a legacy device.
    pub const VIRTIO_MMIO_VERSION_LEGACY: u32 = 1;
    /// The largest split virtqueue (section 2.7).
    pub const VRING_MAX_SIZE: u16 = 32768;
    /// Bytes per descriptor (`struct vring_desc`).
    pub const VRING_DESC_SIZE: u32 = 16;
    /// Bytes per used ring entry (`struct vring_used_elem`).
    pub const VRING_USED_ELEM_SIZE: u32 = 8;
    /// Bytes of a block request's header (`struct virtio_blk_outhdr`: type, reserved, sector).
    pub const VIRTIO_BLK_OUTHDR_SIZE: u32 = 16;
    /// Where the capacity in 512-byte sectors lies in a block device's configuration space.
    pub const VIRTIO_BLK_CONFIG_CAPACITY: u32 = 0;
    /// The block device's request queue.
    pub const VIRTIO_BLK_REQUESTQ: u16 = 0;
    /// Bytes of the header before each frame (`struct virtio_net_hdr_v1`).
    pub const VIRTIO_NET_HDR_V1_SIZE: u32 = 12;
    /// Where the six bytes of the MAC address lie in a network card's configuration space.
    pub const VIRTIO_NET_CONFIG_MAC: u32 = 0;
    /// The network card's first receive queue.
    pub const VIRTIO_NET_RECEIVEQ: u16 = 0;
    /// The network card's first transmit queue.
    pub const VIRTIO_NET_TRANSMITQ: u16 = 1;
    /// The console's receive queue of port 0.
    pub const VIRTIO_CONSOLE_RECEIVEQ: u16 = 0;
    /// The console's transmit queue of port 0.
    pub const VIRTIO_CONSOLE_TRANSMITQ: u16 = 1;
    /// The entropy device's request queue.
    pub const VIRTIO_RNG_REQUESTQ: u16 = 0;

    #[cfg(test)]
    mod tests {
        use std::mem::{offset_of, size_of};

        use virtio_bindings::{virtio_blk, virtio_net, virtio_ring};

        use super::*;

        fn bytes(size: usize) -> u32 {
            u32::try_from(size).expect("a small struct")
        }

        #[test]
        fn sizes_and_offsets_match_virtio_bindings_structs() {
            assert_eq!(VRING_DESC_SIZE, bytes(size_of::<virtio_ring::vring_desc>()));
            assert_eq!(VRING_USED_ELEM_SIZE, bytes(size_of::<virtio_ring::vring_used_elem>()));
            assert_eq!(VIRTIO_BLK_OUTHDR_SIZE, bytes(size_of::<virtio_blk::virtio_blk_outhdr>()));
            assert_eq!(VIRTIO_BLK_CONFIG_CAPACITY, bytes(offset_of!(virtio_blk::virtio_blk_config, capacity)));
            assert_eq!(VIRTIO_NET_HDR_V1_SIZE, bytes(size_of::<virtio_net::virtio_net_hdr_v1>()));
            assert_eq!(VIRTIO_NET_CONFIG_MAC, bytes(offset_of!(virtio_net::virtio_net_config, mac)));
        }

        #[test]
        fn the_magic_value_reads_virt() {
            assert_eq!(&VIRTIO_MMIO_MAGIC.to_le_bytes(), b"virt");
        }
    }
}
