//! The virtio-mmio registers and device ids the kernel reads, and what the manifest calls the
//! devices: plain logic, tested on the host. (Where the transports are is the platform's:
//! `arch::irq::platform_virtio_mmio`.)
//!
//! The virtio values come from `mica-virtio-spec`, the one place Mica writes virtio constants
//! (shared with `mica-vmm` and the drivers, and checked there against `virtio-bindings`, which
//! needs `std` and so does not build for the kernel); this module gives the kernel's short names.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// "virt" in little endian: the magic value at offset 0 of every virtio-mmio transport.
pub const VIRTIO_MAGIC: u32 = mica_virtio_spec::extra::VIRTIO_MMIO_MAGIC;

/// The virtio-mmio registers the kernel reads or writes (byte offsets into the window).
pub mod mmio {
    pub use mica_virtio_spec::virtio_mmio::{
        VIRTIO_MMIO_DEVICE_ID as DEVICE_ID, VIRTIO_MMIO_INTERRUPT_ACK as INTERRUPT_ACK,
        VIRTIO_MMIO_INTERRUPT_STATUS as INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC_VALUE as MAGIC_VALUE,
        VIRTIO_MMIO_STATUS as STATUS, VIRTIO_MMIO_VERSION as VERSION,
    };
}

/// Virtio device ids (virtio 1.2, section 5) the kernel names.
pub mod ids {
    pub use mica_virtio_spec::virtio_ids::{
        VIRTIO_ID_9P as NINE_P, VIRTIO_ID_BALLOON as BALLOON, VIRTIO_ID_BLOCK as BLOCK, VIRTIO_ID_CONSOLE as CONSOLE,
        VIRTIO_ID_FS as FS, VIRTIO_ID_GPU as GPU, VIRTIO_ID_INPUT as INPUT, VIRTIO_ID_NET as NET, VIRTIO_ID_RNG as RNG,
        VIRTIO_ID_VSOCK as VSOCK,
    };
}

/// The kind name of virtio device id `id` (virtio 1.2, section 5), as manifests use it.
pub fn kind(id: u32) -> String {
    let known = match id {
        ids::NET => "virtio-net",
        ids::BLOCK => "virtio-blk",
        ids::CONSOLE => "virtio-console",
        ids::RNG => "virtio-rng",
        ids::BALLOON => "virtio-balloon",
        ids::NINE_P => "virtio-9p",
        ids::GPU => "virtio-gpu",
        ids::INPUT => "virtio-input",
        ids::VSOCK => "virtio-vsock",
        ids::FS => "virtio-fs",
        _ => return format!("virtio-{id}"),
    };
    String::from(known)
}

/// Names the devices found, given as device ids in the order the machine presents them (the
/// order QEMU fills the transports with the command line's devices), as the manifest does
/// ([`mica_bundle::device_names`]): each gets its kind and its index among devices of that kind,
/// `virtio-blk.0`, `virtio-blk.1`, ...
pub fn name_devices(found: &[u32]) -> Vec<String> {
    let kinds: Vec<String> = found.iter().map(|&id| kind(id)).collect();
    mica_bundle::device_names(kinds.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_by_kind_and_order() {
        let found = [4, 2, 2, 1, 77];
        assert_eq!(
            name_devices(&found),
            ["virtio-rng.0", "virtio-blk.0", "virtio-blk.1", "virtio-net.0", "virtio-77.0"]
        );
        assert!(name_devices(&[]).is_empty());
    }

    #[test]
    fn the_magic_is_virt() {
        assert_eq!(VIRTIO_MAGIC.to_le_bytes(), *b"virt");
    }
}
