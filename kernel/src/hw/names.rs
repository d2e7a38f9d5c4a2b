//! Where devices are on QEMU's `microvm` machine, the virtio-mmio registers and device ids the
//! kernel reads, and what the manifest calls the devices: plain logic, tested on the host.
//!
//! The virtio values come from `mica-virtio-spec`, the one place Mica writes virtio constants
//! (shared with `mica-vmm` and the drivers, and checked there against `virtio-bindings`, which
//! needs `std` and so does not build for the kernel); this module gives the kernel's short names.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The first virtio-mmio transport on `microvm`.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// Bytes per transport (its register window).
pub const VIRTIO_MMIO_SIZE: u32 = 0x200;
/// How many transports `microvm` has.
pub const VIRTIO_MMIO_SLOTS: usize = 24;
/// The GSI of transport 0 (on `microvm`'s second I/O APIC; transport `i` has GSI 24 + i).
pub const VIRTIO_MMIO_GSI_BASE: u32 = 24;
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

/// The physical address of transport `slot`.
pub fn slot_base(slot: usize) -> u64 {
    VIRTIO_MMIO_BASE + slot as u64 * u64::from(VIRTIO_MMIO_SIZE)
}

/// The GSI of transport `slot`.
pub fn slot_gsi(slot: usize) -> u32 {
    VIRTIO_MMIO_GSI_BASE + slot as u32
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

/// Names the devices found, given as (slot, device id) in the order the machine presents them
/// (QEMU fills `microvm`'s transports from the last one down, in command-line order), as the
/// manifest does ([`mica_bundle::device_names`]): each gets its kind and its index among devices
/// of that kind, `virtio-blk.0`, `virtio-blk.1`, ...
pub fn name_devices(found: &[(usize, u32)]) -> Vec<String> {
    let kinds: Vec<String> = found.iter().map(|&(_, id)| kind(id)).collect();
    mica_bundle::device_names(kinds.iter().map(String::as_str))
}

/// The order to probe transports in: the order QEMU fills them (last slot first).
pub fn probe_order() -> impl Iterator<Item = usize> {
    (0..VIRTIO_MMIO_SLOTS).rev()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_by_kind_and_order() {
        let found = [(23, 4), (22, 2), (21, 2), (20, 1), (19, 77)];
        assert_eq!(
            name_devices(&found),
            ["virtio-rng.0", "virtio-blk.0", "virtio-blk.1", "virtio-net.0", "virtio-77.0"]
        );
        assert!(name_devices(&[]).is_empty());
    }

    #[test]
    fn microvm_layout() {
        assert_eq!(slot_base(23), 0xfeb0_2e00);
        assert_eq!(slot_gsi(23), 47);
        assert_eq!(probe_order().next(), Some(23));
        assert_eq!(probe_order().count(), 24);
        assert_eq!(VIRTIO_MAGIC.to_le_bytes(), *b"virt");
    }
}
