//! Reading an Intel MultiProcessor Specification (1.4) table: the CPUs a machine without fw_cfg
//! (such as one `mica-vmm` runs) has, by their local APIC ids.
//!
//! The floating pointer structure (`_MP_`, 16 bytes, bytes summing to zero) is searched for on
//! 16-byte boundaries where the specification puts it and where VMMs write it: the last KiB of
//! base memory (`0x9fc00`) and the BIOS area `0xf0000..0x100000`. It points at the configuration
//! table (`PCMP`, also checksummed), whose processor entries list each CPU's local APIC id and
//! whether it is enabled. Plain logic over a byte slice, so it is tested on the host; the
//! architecture code hands it the low memory.

use alloc::vec::Vec;

/// Where the slice given to [`processors`] starts: it must cover the search areas.
pub const LOW_BASE: u64 = 0x9_0000;
/// Where it ends (exclusive): the first MiB.
pub const LOW_END: u64 = 0x10_0000;
/// The areas searched for the floating pointer: (start, end) physical.
const SEARCH: [(u64, u64); 2] = [(0x9_fc00, 0xa_0000), (0xf_0000, 0x10_0000)];
const FLOATING_SIZE: usize = 16;
const HEADER_SIZE: usize = 44;
const ENTRY_PROCESSOR: u8 = 0;
const CPU_ENABLED: u8 = 1;

/// Why no CPU list came out of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpError {
    /// No floating pointer in the search areas.
    NotFound,
    /// A default configuration (no table) or a table outside the low memory given.
    NoTable,
    /// The configuration table's signature, length or checksum is wrong.
    BadTable,
    /// An entry of unknown type or running past the table: the rest cannot be parsed.
    BadEntry,
}

impl core::fmt::Display for MpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            MpError::NotFound => "no MP floating pointer",
            MpError::NoTable => "the MP floating pointer has no configuration table in the first MiB",
            MpError::BadTable => "the MP configuration table's signature, length or checksum is wrong",
            MpError::BadEntry => "an MP table entry of unknown type or past the table's end",
        })
    }
}

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
}

/// The local APIC ids of the enabled processors in the MP table found in `low`, physical memory
/// from [`LOW_BASE`] (`low.len()` bytes, at most up to [`LOW_END`]), bootstrap processor first.
pub fn processors(low: &[u8]) -> Result<Vec<u8>, MpError> {
    let at = |phys: u64, len: usize| -> Option<&[u8]> {
        let start = usize::try_from(phys.checked_sub(LOW_BASE)?).ok()?;
        low.get(start..start.checked_add(len)?)
    };
    let floating = SEARCH
        .iter()
        .flat_map(|&(start, end)| (start..end).step_by(16))
        .filter_map(|phys| at(phys, FLOATING_SIZE))
        .find(|f| f.starts_with(b"_MP_") && f[8] == 1 && sums_to_zero(f))
        .ok_or(MpError::NotFound)?;
    let table_phys = u64::from(u32::from_le_bytes([floating[4], floating[5], floating[6], floating[7]]));
    if table_phys == 0 || floating[11] != 0 {
        return Err(MpError::NoTable);
    }
    let header = at(table_phys, HEADER_SIZE).ok_or(MpError::NoTable)?;
    let length = usize::from(u16::from_le_bytes([header[4], header[5]]));
    if !header.starts_with(b"PCMP") || length < HEADER_SIZE {
        return Err(MpError::BadTable);
    }
    let table = at(table_phys, length).ok_or(MpError::NoTable)?;
    if !sums_to_zero(table) {
        return Err(MpError::BadTable);
    }
    let count = u16::from_le_bytes([table[34], table[35]]);
    let mut entries = &table[HEADER_SIZE..];
    let mut cpus = Vec::new();
    for _ in 0..count {
        let len = match entries.first() {
            Some(&ENTRY_PROCESSOR) => 20,
            Some(1..=4) => 8,
            _ => return Err(MpError::BadEntry),
        };
        let entry = entries.get(..len).ok_or(MpError::BadEntry)?;
        if entry[0] == ENTRY_PROCESSOR && entry[3] & CPU_ENABLED != 0 {
            let bootstrap = entry[3] & 2 != 0;
            if bootstrap {
                cpus.insert(0, entry[1]);
            } else {
                cpus.push(entry[1]);
            }
        }
        entries = &entries[len..];
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table as mica-vmm writes one (floating pointer at `at`, table after it): `cpus` as
    /// (APIC id, flags), then a bus and an I/O APIC entry.
    fn table(at: u64, cpus: &[(u8, u8)]) -> Vec<u8> {
        let mut entries = Vec::new();
        for &(id, flags) in cpus {
            entries.extend_from_slice(&[0, id, 0x14, flags, 0, 6, 0, 0, 1, 2, 0, 0]);
            entries.extend_from_slice(&[0; 8]);
        }
        entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
        entries.extend_from_slice(&[2, 9, 0x11, 1, 0, 0, 0xc0, 0xfe]);
        let length = (HEADER_SIZE + entries.len()) as u16;
        let mut t = b"PCMP".to_vec();
        t.extend_from_slice(&length.to_le_bytes());
        t.extend_from_slice(&[4, 0]);
        t.extend_from_slice(b"MICA    MICA-VMM    ");
        t.extend_from_slice(&[0; 6]);
        t.extend_from_slice(&(cpus.len() as u16 + 2).to_le_bytes());
        t.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        t.extend_from_slice(&[0; 4]);
        t.extend_from_slice(&entries);
        t[7] = t.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
        let mut f = b"_MP_".to_vec();
        f.extend_from_slice(&((at + 16) as u32).to_le_bytes());
        f.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
        f[10] = f.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
        f.extend_from_slice(&t);
        f
    }

    fn low_with(at: u64, bytes: &[u8]) -> Vec<u8> {
        let mut low = vec![0u8; (LOW_END - LOW_BASE) as usize];
        let start = (at - LOW_BASE) as usize;
        low[start..start + bytes.len()].copy_from_slice(bytes);
        low
    }

    #[test]
    fn finds_the_cpus_bootstrap_first() {
        let low = low_with(0xf_0000, &table(0xf_0000, &[(1, 1), (0, 3), (2, 1), (3, 0)]));
        assert_eq!(processors(&low), Ok(vec![0, 1, 2]), "disabled CPU 3 left out");
        let low = low_with(0x9_fc00, &table(0x9_fc00, &[(0, 3), (1, 1)]));
        assert_eq!(processors(&low), Ok(vec![0, 1]), "in the last KiB of base memory");
    }

    #[test]
    fn damage_is_an_error_not_a_guess() {
        assert_eq!(processors(&low_with(0xf_0000, &[])), Err(MpError::NotFound));
        let good = table(0xf_0000, &[(0, 3), (1, 1)]);
        let mut bad_floating = good.clone();
        bad_floating[9] ^= 1;
        assert_eq!(processors(&low_with(0xf_0000, &bad_floating)), Err(MpError::NotFound), "checksum");
        let mut unaligned = vec![0u8; 8];
        unaligned.extend_from_slice(&table(0xf_0008, &[(0, 3)]));
        assert_eq!(processors(&low_with(0xf_0000, &unaligned)), Err(MpError::NotFound), "not on 16 bytes");
        let mut bad_table = good.clone();
        bad_table[16 + 50] ^= 0x40;
        assert_eq!(processors(&low_with(0xf_0000, &bad_table)), Err(MpError::BadTable));
        let mut outside = good.clone();
        outside[4..8].copy_from_slice(&0x20_0000u32.to_le_bytes());
        outside[10] = 0;
        outside[10] = outside[..16].iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
        assert_eq!(processors(&low_with(0xf_0000, &outside)), Err(MpError::NoTable));
        // An entry type the specification does not have: the table is not parsed further.
        let mut strange = table(0xf_0000, &[(0, 3)]);
        let bus = 16 + HEADER_SIZE + 20;
        strange[bus] = 9;
        let t = &mut strange[16..];
        t[7] = 0;
        t[7] = t.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
        assert_eq!(processors(&low_with(0xf_0000, &strange)), Err(MpError::BadEntry));
    }
}
