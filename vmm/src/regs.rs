//! The vCPU's state at the PVH 32-bit entry: protected mode, paging off, flat 32-bit code and data
//! segments from a small GDT in guest memory, `%ebx` pointing at `hvm_start_info`, `%eip` at the
//! entry from the ELF note (the PVH ABI, as Xen's `pvh.pandoc` describes it).

use kvm_bindings::{kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};
use crate::layout::GDT_START;

/// The GDT the vCPU starts with: null, flat 32-bit code (selector `0x08`), flat data (`0x10`),
/// and a busy 32-bit TSS (`0x18`) with base 0 and the minimum limit, which VMX requires of TR.
pub const GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff, // code: base 0, limit 4 GiB, execute/read, accessed, 32-bit, present
    0x00cf_9300_0000_ffff, // data: base 0, limit 4 GiB, read/write, accessed, 32-bit, present
    0x0000_8b00_0000_0067, // TSS: base 0, limit 0x67, 32-bit busy TSS, present
];

/// Selector of the code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segments.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the task register.
pub const TSS_SELECTOR: u16 = 0x18;

/// CR0.PE: protected mode.
const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type, hardwired to 1 on every CPU since the 486.
const CR0_ET: u64 = 1 << 4;
/// RFLAGS bit 1 is reserved and always set; IF and everything else clear.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// The local APIC's LVT LINT0 and LINT1 registers (offsets in its register page).
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
/// LVT delivery modes (bits 8-10): NMI and ExtINT.
const APIC_MODE_MASK: u32 = 0x700;
const APIC_MODE_NMI: u32 = 0x400;
const APIC_MODE_EXTINT: u32 = 0x700;

/// Sets a local APIC's LINT0 to ExtINT (the 8259's interrupts) and LINT1 to NMI: the "virtual
/// wire" wiring a PC's firmware leaves and the MP table describes.
pub fn set_lint_virtual_wire(lapic: &mut kvm_lapic_state) {
    for (offset, mode) in [(APIC_LVT_LINT0, APIC_MODE_EXTINT), (APIC_LVT_LINT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !APIC_MODE_MASK) | mode;
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            lapic.regs[offset + i] = byte as _;
        }
    }
}

/// Decodes a GDT descriptor into the segment register state KVM loads.
pub fn segment_from_descriptor(selector: u16, descriptor: u64) -> kvm_segment {
    let bits = |shift: u32, len: u32| (descriptor >> shift) & ((1 << len) - 1);
    let base = bits(16, 24) | (bits(56, 8) << 24);
    let raw_limit = (bits(0, 16) | (bits(48, 4) << 16)) as u32;
    let granular = bits(55, 1) == 1;
    kvm_segment {
        base,
        // With G set the limit counts 4 KiB pages; KVM wants it in bytes.
        limit: if granular { (raw_limit << 12) | 0xfff } else { raw_limit },
        selector,
        type_: bits(40, 4) as u8,
        s: bits(44, 1) as u8,
        dpl: bits(45, 2) as u8,
        present: bits(47, 1) as u8,
        avl: bits(52, 1) as u8,
        l: bits(53, 1) as u8,
        db: bits(54, 1) as u8,
        g: granular as u8,
        unusable: (bits(47, 1) == 0) as u8,
        padding: 0,
    }
}

/// Writes [`GDT`] at [`GDT_START`].
pub fn write_gdt(memory: &GuestMemoryMmap) -> Result<()> {
    for (i, d) in GDT.iter().enumerate() {
        memory
            .write_obj(*d, GuestAddress(GDT_START.0 + 8 * i as u64))
            .map_err(|e| Error::BootParams(format!("GDT: {e}")))?;
    }
    Ok(())
}

/// Changes `sregs` (as KVM created the vCPU) to the PVH entry state.
pub fn pvh_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_descriptor(CODE_SELECTOR, GDT[1]);
    let data = segment_from_descriptor(DATA_SELECTOR, GDT[2]);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_descriptor(TSS_SELECTOR, GDT[3]);
    sregs.ldt = kvm_segment { unusable: 1, ..Default::default() };
    sregs.gdt.base = GDT_START.0;
    sregs.gdt.limit = (size_of_val(&GDT) - 1) as u16;
    // No IDT: an exception before the kernel loads its own one is a triple fault, which the VMM
    // reports as a shutdown.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// The general registers at the PVH entry.
pub fn pvh_regs(entry: GuestAddress, start_info: GuestAddress) -> kvm_regs {
    kvm_regs { rip: entry.0, rbx: start_info.0, rflags: RFLAGS_RESERVED, ..Default::default() }
}

/// The general registers at a Linux 32-bit boot protocol entry: `%esi` at the zero page, `%ebx`,
/// `%ebp` and `%edi` zero.
pub fn linux_regs(entry: GuestAddress, zero_page: GuestAddress) -> kvm_regs {
    kvm_regs { rip: entry.0, rsi: zero_page.0, rflags: RFLAGS_RESERVED, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments_decode() {
        let cs = segment_from_descriptor(CODE_SELECTOR, GDT[1]);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 0x08));
        assert_eq!((cs.type_, cs.s, cs.dpl, cs.present, cs.db, cs.l, cs.g), (0xb, 1, 0, 1, 1, 0, 1));
        assert_eq!(cs.unusable, 0);
        let ds = segment_from_descriptor(DATA_SELECTOR, GDT[2]);
        assert_eq!((ds.limit, ds.type_, ds.db), (0xffff_ffff, 0x3, 1));
        let tr = segment_from_descriptor(TSS_SELECTOR, GDT[3]);
        assert_eq!((tr.base, tr.limit, tr.type_, tr.s, tr.present, tr.g), (0, 0x67, 0xb, 0, 1, 0));
        let null = segment_from_descriptor(0, GDT[0]);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn entry_state_is_protected_mode_without_paging() {
        let sregs = pvh_sregs(kvm_sregs { cr0: 0x6000_0010, ..Default::default() });
        assert_eq!(sregs.cr0, 0x11, "PE and ET only: caches on, paging off");
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 31));
        assert_eq!(sregs.cs.selector, 0x08);
        assert_eq!(sregs.ss.selector, 0x10);
        let regs = pvh_regs(GuestAddress(0x10_0000), GuestAddress(0x6000));
        assert_eq!((regs.rip, regs.rbx, regs.rflags), (0x10_0000, 0x6000, 2));
        let regs = linux_regs(GuestAddress(0x10_0000), GuestAddress(0x8000));
        assert_eq!((regs.rip, regs.rsi, regs.rbx, regs.rbp, regs.rdi), (0x10_0000, 0x8000, 0, 0, 0));
    }

    #[test]
    fn gdt_lands_in_guest_memory() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
        write_gdt(&memory).expect("gdt");
        let code: u64 = memory.read_obj(GuestAddress(0x508)).expect("read");
        assert_eq!(code, GDT[1]);
    }

    #[test]
    fn lint0_is_extint_and_lint1_nmi() {
        let mut lapic = kvm_lapic_state::default();
        // Masked, as after reset, with a vector in LINT1 that must stay.
        lapic.regs[0x352] = 1;
        lapic.regs[0x360] = 0x22;
        lapic.regs[0x361] = 0x07;
        set_lint_virtual_wire(&mut lapic);
        let read = |offset: usize| u32::from_le_bytes(std::array::from_fn(|i| lapic.regs[offset + i] as u8));
        assert_eq!(read(0x350), 0x1_0700, "ExtINT, mask bit kept");
        assert_eq!(read(0x360), 0x0422, "NMI, vector kept");
    }
}
