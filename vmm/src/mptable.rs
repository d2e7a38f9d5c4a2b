//! The Intel MultiProcessor Specification (1.4) table: how a guest without ACPI learns how many
//! CPUs it has, their local APIC ids, the I/O APIC and how the ISA interrupts reach it. Linux reads
//! it (`arch/x86/kernel/mpparse.c`) to bring up its application processors and to switch from the
//! 8259 PIC to the I/O APIC; the Mica kernel reads it for its CPU count when there is no fw_cfg.
//!
//! The floating pointer structure (16 bytes) sits at [`FLOATING_START`], the last KiB of base
//! memory, one of the places Linux searches for its `_MP_` signature (and where Firecracker puts
//! it); the configuration table it points at is below it, at [`TABLE_START`]. Both are in RAM
//! below 640 KiB, which a guest maps early; Linux reserves them when it finds them, Mica keeps the
//! whole first MiB to itself. The configuration table holds its header, then one processor entry per vCPU (local APIC id = vCPU
//!   index, the first one the bootstrap processor), one ISA bus, the I/O APIC (id = the number of
//!   vCPUs, at [`IOAPIC_ADDRESS`]), an I/O interrupt entry per ISA IRQ `i` to I/O APIC pin `i`
//!   (as KVM's default GSI routing has it), and the local interrupts: ExtINT on LINT0 and NMI on
//!   LINT1 of every CPU.
//!
//! Each part carries the checksum the specification requires: its bytes sum to zero.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};

/// Where the floating pointer structure goes.
pub const FLOATING_START: GuestAddress = GuestAddress(0x9_fc00);
/// Where the configuration table goes (room for [`MAX_CPUS`] processors below the floating pointer).
pub const TABLE_START: GuestAddress = GuestAddress(0x9_e000);
/// The most vCPUs the table describes (local APIC ids below the I/O APIC's, in 8 bits).
pub const MAX_CPUS: u8 = 254;
/// The local APIC's physical address.
pub const LAPIC_ADDRESS: u32 = 0xfee0_0000;
/// The I/O APIC's physical address.
pub const IOAPIC_ADDRESS: u32 = 0xfec0_0000;
/// The ISA interrupts described (KVM's I/O APIC has 24 pins; the ISA ones are 0 to 15).
pub const ISA_IRQS: u8 = 16;

/// The floating pointer's signature.
pub const FLOATING_SIGNATURE: &[u8; 4] = b"_MP_";
/// The configuration table's signature.
pub const TABLE_SIGNATURE: &[u8; 4] = b"PCMP";
/// The specification revision: 1.4.
const SPEC_REV: u8 = 4;
/// The floating pointer's size (its length field counts 16-byte units).
const FLOATING_SIZE: usize = 16;
/// The configuration table header's size.
const HEADER_SIZE: usize = 44;

/// Entry types.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types: a vectored interrupt, NMI, the 8259's external interrupt.
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// Processor flags: enabled, bootstrap processor.
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// A local APIC of the integrated kind (version 0x1X), and the I/O APIC's version.
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// The processor signature (family 6) and feature flags (FPU, APIC) the entries carry; Linux only
/// prints them.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 1 << 0 | 1 << 9;
/// Local interrupt destination: every local APIC.
const ALL_LAPICS: u8 = 0xff;

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)).wrapping_neg()
}

/// The floating pointer and the configuration table for `cpus` vCPUs, the table to be written at
/// `table_at`.
pub fn build(cpus: u8, table_at: GuestAddress) -> Result<(Vec<u8>, Vec<u8>)> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::VcpuCount { vcpus: u32::from(cpus), max: u32::from(MAX_CPUS) });
    }
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDRESS.to_le_bytes());
    count += 1;
    for irq in 0..ISA_IRQS {
        // Flags 0: polarity and trigger mode as the bus has them (ISA: active high, edge).
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_VECTORED, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    for (kind, lint) in [(INT_EXTINT, 0), (INT_NMI, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, ALL_LAPICS, lint]);
        count += 1;
    }

    let table_len = u16::try_from(HEADER_SIZE + entries.len()).expect("an MP table of at most 254 CPUs fits 64 KiB");
    let mut table = Vec::with_capacity(usize::from(table_len));
    table.extend_from_slice(TABLE_SIGNATURE);
    table.extend_from_slice(&table_len.to_le_bytes());
    table.extend_from_slice(&[SPEC_REV, 0]); // checksum below
    table.extend_from_slice(b"MICA    ");
    table.extend_from_slice(b"MICA-VMM    ");
    table.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDRESS.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // no extended table, its checksum, reserved
    debug_assert_eq!(table.len(), HEADER_SIZE);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_SIZE);
    floating.extend_from_slice(FLOATING_SIGNATURE);
    let table_address = u32::try_from(table_at.0).map_err(|_| Error::MpTable("placed above 4 GiB"))?;
    floating.extend_from_slice(&table_address.to_le_bytes());
    // Length in 16-byte units, revision, checksum (below), then feature bytes: 0 = the
    // configuration table is there, and no IMCR (virtual wire mode).
    floating.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    floating[10] = checksum(&floating);
    Ok((floating, table))
}

/// Writes the MP table for `cpus` vCPUs: the floating pointer at [`FLOATING_START`], the
/// configuration table at [`TABLE_START`].
pub fn write(memory: &GuestMemoryMmap, cpus: u8) -> Result<()> {
    let (floating, table) = build(cpus, TABLE_START)?;
    debug_assert!(TABLE_START.0 + table.len() as u64 <= FLOATING_START.0);
    memory.write_slice(&table, TABLE_START).map_err(|_| Error::MpTable("outside guest memory"))?;
    memory.write_slice(&floating, FLOATING_START).map_err(|_| Error::MpTable("outside guest memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's entries, type byte first, split by their sizes.
    fn entries(table: &[u8]) -> Vec<&[u8]> {
        let mut rest = &table[HEADER_SIZE..];
        let mut out = Vec::new();
        while let Some(&kind) = rest.first() {
            let len = if kind == ENTRY_PROCESSOR { 20 } else { 8 };
            out.push(&rest[..len]);
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn floating_pointer_and_table_check_out() {
        let (floating, table) = build(4, TABLE_START).expect("table");
        assert_eq!(floating.len(), 16);
        assert_eq!(&floating[..4], b"_MP_");
        assert_eq!(u32::from_le_bytes(floating[4..8].try_into().unwrap()), 0x9_e000, "where the table goes");
        assert_eq!((floating[8], floating[9]), (1, 4), "16 bytes, revision 1.4");
        assert_eq!(floating.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0, "floating pointer checksum");
        assert_eq!(floating[11], 0, "a configuration table, not a default configuration");
        assert_eq!(&table[..4], b"PCMP");
        assert_eq!(usize::from(u16::from_le_bytes([table[4], table[5]])), table.len());
        assert_eq!(table.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0, "table checksum");
        assert_eq!(u32::from_le_bytes(table[36..40].try_into().unwrap()), LAPIC_ADDRESS);
        let entries = entries(&table);
        assert_eq!(usize::from(u16::from_le_bytes([table[34], table[35]])), entries.len());
        assert_eq!(entries.len(), 4 + 1 + 1 + 16 + 2);
    }

    #[test]
    fn one_processor_per_vcpu_the_first_one_bootstraps() {
        let (_, table) = build(3, TABLE_START).expect("table");
        let table = &table[..];
        let cpus: Vec<(u8, u8)> = entries(table).iter().filter(|e| e[0] == 0).map(|e| (e[1], e[3])).collect();
        assert_eq!(cpus, [(0, 3), (1, 1), (2, 1)], "(APIC id, flags)");
        let ioapic = entries(table).into_iter().find(|e| e[0] == 2).expect("an I/O APIC");
        assert_eq!(ioapic[1], 3, "its id follows the CPUs'");
        assert_eq!(u32::from_le_bytes(ioapic[4..8].try_into().unwrap()), IOAPIC_ADDRESS);
        let routes: Vec<(u8, u8)> = entries(table).iter().filter(|e| e[0] == 3).map(|e| (e[5], e[7])).collect();
        assert_eq!(routes, (0..16).map(|i| (i, i)).collect::<Vec<_>>(), "ISA IRQ i on pin i");
        assert!(entries(table).iter().filter(|e| e[0] == 3).all(|e| e[6] == 3), "to the I/O APIC");
        let locals: Vec<(u8, u8)> = entries(table).iter().filter(|e| e[0] == 4).map(|e| (e[1], e[7])).collect();
        assert_eq!(locals, [(3, 0), (1, 1)], "ExtINT on LINT0, NMI on LINT1");
    }

    #[test]
    fn counts_beyond_the_table_are_refused() {
        for bad in [0, 255] {
            let e = build(bad, TABLE_START).expect_err("bad count");
            assert!(e.to_string().contains("1 to 254"), "{e}");
        }
        let (_, largest) = build(254, TABLE_START).expect("254 CPUs");
        assert!(TABLE_START.0 + largest.len() as u64 <= FLOATING_START.0, "the table stays below the pointer");
    }

    #[test]
    fn written_into_guest_memory() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("memory");
        write(&memory, 2).expect("write");
        let mut signature = [0u8; 4];
        memory.read_slice(&mut signature, FLOATING_START).expect("read");
        assert_eq!(&signature, b"_MP_");
        memory.read_slice(&mut signature, TABLE_START).expect("read");
        assert_eq!(&signature, b"PCMP");
        let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8_0000)]).expect("memory");
        assert!(write(&small, 1).is_err(), "no room below 1 MiB");
    }
}
