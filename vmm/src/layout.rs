//! The guest's physical memory layout: where the VMM puts the boot structures, and the memory map
//! (E820 types) it hands to the kernel.
//!
//! Guest RAM is one region from guest physical address 0 to the configured size. Everything the
//! VMM writes besides the kernel lives in the first 640 KiB, which a PVH kernel must treat as
//! reserved until it has read its start info (Mica reserves all of the first MiB):
//!
//! | guest physical        | what                                                              |
//! |-----------------------|-------------------------------------------------------------------|
//! | `0x0000..0x0500`      | unused (real-mode interrupt vectors and BIOS data on a PC)        |
//! | `0x0500..0x0520`      | GDT: null, flat 32-bit code (`0x08`), flat data (`0x10`), TSS (`0x18`) |
//! | `0x6000..0x6038`      | `hvm_start_info` (version 1), its address is passed in `%ebx`      |
//! | `0x6100..0x6120`      | module list: one `hvm_modlist_entry`, when there is an initrd      |
//! | `0x7000..0x8000`      | memory map: `hvm_memmap_table_entry` × N (at most 170)             |
//! | `0x8000..0x9000`      | Linux boot: the zero page (`boot_params`), its address in `%esi`   |
//! | `0x2_0000..0x2_1000`  | kernel command line, NUL-terminated (at most 4095 bytes + NUL)    |
//! | `0x9_e000..0x9_fc00`  | MP configuration table (the vCPUs, the I/O APIC, ISA interrupts)  |
//! | `0x9_fc00..0x9_fc10`  | MP floating pointer (`_MP_`), where Linux and Mica search for it  |
//! | `0xa_0000..0x10_0000` | reserved in the memory map (VGA hole and BIOS area on a PC)       |
//! | `0x10_0000..`         | the kernel's ELF segments, at their physical addresses (a bzImage: |
//! |                       | its protected-mode part, which decompresses itself in place)      |
//! | end of RAM, downwards | the initrd (boot module), if any, page-aligned, as QEMU places it  |
//!
//! Above guest RAM, in the 32-bit MMIO hole, the virtio-mmio devices: slot `i` at
//! [`VIRTIO_MMIO_START`]` + i * `[`VIRTIO_MMIO_SLOT_SIZE`] (a 0x200-byte register window), its
//! interrupt on GSI [`VIRTIO_MMIO_GSI_BASE`]` + i`.
//!
//! The memory map has three entries: RAM below 640 KiB, reserved 640 KiB to 1 MiB, and RAM from
//! 1 MiB to the end of guest memory. Guest memory stays below the 32-bit MMIO hole
//! ([`MAX_MEMORY`]) so that the local APIC (`0xfee0_0000`) and the I/O APIC (`0xfec0_0000`) are
//! never shadowed by RAM.

use linux_loader::loader::elf::start_info::hvm_memmap_table_entry;
use vm_memory::GuestAddress;

/// One KiB.
pub const KIB: u64 = 1024;
/// One MiB.
pub const MIB: u64 = 1024 * KIB;

/// Where the GDT is written.
pub const GDT_START: GuestAddress = GuestAddress(0x500);
/// Where `hvm_start_info` is written; its address is what the kernel gets in `%ebx`.
pub const START_INFO_START: GuestAddress = GuestAddress(0x6000);
/// Where the module list (the initrd's `hvm_modlist_entry`) is written.
pub const MODLIST_START: GuestAddress = GuestAddress(0x6100);
/// Where the memory map is written.
pub const MEMMAP_START: GuestAddress = GuestAddress(0x7000);
/// Room for the memory map (one page).
pub const MEMMAP_MAX_BYTES: u64 = 0x1000;
/// Where the zero page (`boot_params`) of a Linux bzImage boot goes.
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x8000);
/// Where the NUL-terminated kernel command line is written.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x2_0000);
/// The most bytes of command line, including the terminating NUL (Mica's own limit too).
pub const CMDLINE_MAX_SIZE: usize = 4096;

/// End of conventional memory: the first memory map entry ends here.
pub const LOW_RAM_END: u64 = 640 * KIB;
/// Start of high memory: the reserved entry ends and the second RAM entry starts here. A PVH
/// kernel is loaded at or above this address.
pub const HIGH_RAM_START: u64 = MIB;

/// The least guest memory accepted: the boot structures, the 1 MiB hole and 1 MiB of room for a
/// kernel. A kernel that does not fit is reported when it is loaded.
pub const MIN_MEMORY: u64 = 2 * MIB;
/// The most guest memory accepted: 3 GiB, below the 32-bit MMIO hole (one RAM region, no
/// memory above 4 GiB yet).
pub const MAX_MEMORY: u64 = 3 * 1024 * MIB;
/// The default guest memory size.
pub const DEFAULT_MEMORY: u64 = 128 * MIB;

/// Where the first virtio-mmio device's register window is (above [`MAX_MEMORY`], below the
/// I/O APIC).
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// The distance between two virtio-mmio devices' windows.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x1000;
/// The most virtio-mmio devices.
pub const VIRTIO_MMIO_SLOTS: u64 = 8;
/// The first virtio-mmio device's interrupt (GSI); the next ones follow. 5 is the first ISA
/// interrupt line after COM1's 4 that no device here uses.
pub const VIRTIO_MMIO_GSI_BASE: u32 = 5;

// The virtio-mmio slots sit between guest RAM and the I/O APIC (0xfec0_0000; the local APIC is
// above it), each holds a register window, and their interrupts stay on ISA lines (below 16) that
// the PIT (0) and COM1 (4) do not use.
const _: () = {
    assert!(VIRTIO_MMIO_START >= MAX_MEMORY);
    assert!(VIRTIO_MMIO_START + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_SLOT_SIZE <= 0xfec0_0000);
    assert!(VIRTIO_MMIO_SLOT_SIZE >= crate::virtio::mmio::MMIO_WINDOW_SIZE);
    assert!(VIRTIO_MMIO_GSI_BASE > crate::devices::COM1_GSI);
    assert!(VIRTIO_MMIO_GSI_BASE + VIRTIO_MMIO_SLOTS as u32 <= 16);
};

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The memory map for `mem_size` bytes of guest RAM starting at address 0. `mem_size` must be at
/// least [`HIGH_RAM_START`] (the VMM accepts only [`MIN_MEMORY`] and more).
pub fn memory_map(mem_size: u64) -> Vec<hvm_memmap_table_entry> {
    let entry = |addr, size, type_| hvm_memmap_table_entry { addr, size, type_, reserved: 0 };
    let mut map =
        vec![entry(0, LOW_RAM_END, E820_RAM), entry(LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, E820_RESERVED)];
    if mem_size > HIGH_RAM_START {
        map.push(entry(HIGH_RAM_START, mem_size - HIGH_RAM_START, E820_RAM));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_has_low_ram_hole_and_high_ram() {
        let map = memory_map(128 * MIB);
        let got: Vec<_> = map.iter().map(|e| (e.addr, e.size, e.type_)).collect();
        assert_eq!(
            got,
            [(0, 0xa_0000, E820_RAM), (0xa_0000, 0x6_0000, E820_RESERVED), (0x10_0000, 127 * MIB, E820_RAM)]
        );
    }

    #[test]
    fn boot_structures_fit_below_640k_without_overlap() {
        let regions = [
            (GDT_START.0, 4 * 8),
            (START_INFO_START.0, 56),
            (MODLIST_START.0, 32),
            (MEMMAP_START.0, MEMMAP_MAX_BYTES),
            (CMDLINE_START.0, CMDLINE_MAX_SIZE as u64),
            (ZERO_PAGE_START.0, 4096),
        ];
        for (i, (a, alen)) in regions.iter().enumerate() {
            assert!(a + alen <= LOW_RAM_END, "region {i} crosses 640 KiB");
            for (b, blen) in &regions[i + 1..] {
                assert!(a + alen <= *b || b + blen <= *a, "{a:#x} overlaps {b:#x}");
            }
        }
        assert!(
            MEMMAP_MAX_BYTES as usize / std::mem::size_of::<hvm_memmap_table_entry>() >= memory_map(MAX_MEMORY).len()
        );
    }
}
