//! QEMU's `microvm` machine: where its virtio-mmio transports are. The machine publishes no
//! table of them that the kernel reads (no device tree, and the kernel reads no ACPI), so the
//! kernel probes its fixed slots.

use alloc::vec::Vec;

use crate::cmdline::MmioDevice;

/// The first virtio-mmio transport.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// Bytes per transport (its register window).
pub const VIRTIO_MMIO_SIZE: u32 = 0x200;
/// How many transports there are.
pub const VIRTIO_MMIO_SLOTS: usize = 24;
/// The GSI of transport 0 (on the second I/O APIC; transport `i` has GSI 24 + i).
pub const VIRTIO_MMIO_GSI_BASE: u32 = 24;

/// The transports, in the order QEMU fills them with the command line's devices: the last slot
/// first.
pub fn virtio_transports() -> Vec<MmioDevice> {
    (0..VIRTIO_MMIO_SLOTS)
        .rev()
        .map(|slot| MmioDevice {
            base: VIRTIO_MMIO_BASE + slot as u64 * u64::from(VIRTIO_MMIO_SIZE),
            size: VIRTIO_MMIO_SIZE,
            gsi: VIRTIO_MMIO_GSI_BASE + slot as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_are_listed_last_slot_first() {
        let transports = virtio_transports();
        assert_eq!(transports.len(), 24);
        assert_eq!((transports[0].base, transports[0].size, transports[0].gsi), (0xfeb0_2e00, 0x200, 47));
        assert_eq!((transports[23].base, transports[23].gsi), (VIRTIO_MMIO_BASE, 24));
    }
}
