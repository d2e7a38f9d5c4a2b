//! Where devices are on QEMU's `microvm` machine, the virtio-mmio registers and device ids the
//! kernel reads, and what the manifest calls the devices: plain logic, tested on the host.
//!
//! The virtio values are the virtio 1.2 specification's. They would come from the
//! `virtio-bindings` crate, but it needs `std` (its generated bindings name `::std`), so it does
//! not build for the kernel's `x86_64-unknown-none`: they are named once here, and the host tests
//! check each against `virtio-bindings`.

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
pub const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// The virtio-mmio registers the kernel reads or writes (byte offsets into the window).
pub mod mmio {
    /// The magic value ([`VIRTIO_MAGIC`](super::VIRTIO_MAGIC)).
    pub const MAGIC_VALUE: u32 = 0x000;
    /// The transport's version (1: legacy, 2: virtio 1.x).
    pub const VERSION: u32 = 0x004;
    /// The virtio device id (0: nothing plugged in).
    pub const DEVICE_ID: u32 = 0x008;
    /// The device status; writing 0 resets the device.
    pub const STATUS: u32 = 0x070;
}

/// Virtio device ids (virtio 1.2, section 5) the kernel names.
pub mod ids {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Memory balloon (traditional).
    pub const BALLOON: u32 = 5;
    /// 9P transport.
    pub const NINE_P: u32 = 9;
    /// GPU.
    pub const GPU: u32 = 16;
    /// Input device.
    pub const INPUT: u32 = 18;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device.
    pub const FS: u32 = 26;
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

    #[test]
    fn virtio_values_are_the_specs() {
        use virtio_bindings::virtio_ids as vb_ids;
        use virtio_bindings::virtio_mmio as vb_mmio;
        assert_eq!(mmio::MAGIC_VALUE, vb_mmio::VIRTIO_MMIO_MAGIC_VALUE);
        assert_eq!(mmio::VERSION, vb_mmio::VIRTIO_MMIO_VERSION);
        assert_eq!(mmio::DEVICE_ID, vb_mmio::VIRTIO_MMIO_DEVICE_ID);
        assert_eq!(mmio::STATUS, vb_mmio::VIRTIO_MMIO_STATUS);
        let pairs = [
            (ids::NET, vb_ids::VIRTIO_ID_NET),
            (ids::BLOCK, vb_ids::VIRTIO_ID_BLOCK),
            (ids::CONSOLE, vb_ids::VIRTIO_ID_CONSOLE),
            (ids::RNG, vb_ids::VIRTIO_ID_RNG),
            (ids::BALLOON, vb_ids::VIRTIO_ID_BALLOON),
            (ids::NINE_P, vb_ids::VIRTIO_ID_9P),
            (ids::GPU, vb_ids::VIRTIO_ID_GPU),
            (ids::INPUT, vb_ids::VIRTIO_ID_INPUT),
            (ids::VSOCK, vb_ids::VIRTIO_ID_VSOCK),
            (ids::FS, vb_ids::VIRTIO_ID_FS),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs);
        }
    }
}
