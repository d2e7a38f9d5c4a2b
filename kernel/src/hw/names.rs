//! Where devices are on QEMU's `microvm` machine and what the manifest calls them: plain logic,
//! tested on the host.

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
        1 => "virtio-net",
        2 => "virtio-blk",
        3 => "virtio-console",
        4 => "virtio-rng",
        5 => "virtio-balloon",
        9 => "virtio-9p",
        16 => "virtio-gpu",
        18 => "virtio-input",
        19 => "virtio-vsock",
        26 => "virtio-fs",
        _ => return format!("virtio-{id}"),
    };
    String::from(known)
}

/// Names the devices found, given as (slot, device id) in the order the machine presents them
/// (QEMU fills `microvm`'s transports from the last one down, in command-line order): each gets
/// its kind and its index among devices of that kind, `virtio-blk.0`, `virtio-blk.1`, ...
pub fn name_devices(found: &[(usize, u32)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(found.len());
    for (i, &(_, id)) in found.iter().enumerate() {
        let ordinal = found[..i].iter().filter(|&&(_, other)| other == id).count();
        names.push(format!("{}.{ordinal}", kind(id)));
    }
    names
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
