//! The PVH boot protocol's start-of-day structures (Xen's `hvm_start_info`), as QEMU, Firecracker
//! and `mica-vmm` pass them in `%ebx` at the 32-bit entry.
//!
//! Parsing is plain logic over byte slices so that it is tested on the host; the arch code reads
//! the bytes out of physical memory.

use core::fmt;

/// `hvm_start_info.magic`: "xEn3" with the high bit of each byte masked.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` version 1 (which adds the memory map fields).
pub const START_INFO_SIZE: usize = 56;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// Size of one `hvm_modlist_entry`.
pub const MODULE_ENTRY_SIZE: usize = 32;

/// What the boot information said wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// The structure is shorter than its fixed part.
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// `magic` is not [`START_INFO_MAGIC`]: this was not a PVH boot.
    BadMagic(u32),
    /// Version 0 has no memory map, and Mica needs one.
    NoMemoryMap {
        /// The version the loader gave.
        version: u32,
    },
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::Truncated { what, need, got } => {
                write!(f, "PVH {what} truncated: {got} bytes, need {need}")
            }
            PvhError::BadMagic(m) => {
                write!(f, "PVH start info has magic {m:#010x}, expected {START_INFO_MAGIC:#010x}")
            }
            PvhError::NoMemoryMap { version } => {
                write!(f, "PVH start info version {version} carries no memory map (need version 1 or later)")
            }
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

fn need(what: &'static str, b: &[u8], len: usize) -> Result<(), PvhError> {
    if b.len() < len { Err(PvhError::Truncated { what, need: len, got: b.len() }) } else { Ok(()) }
}

/// The fields of `hvm_start_info` that Mica uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// Structure version (1 or later).
    pub version: u32,
    /// Number of entries in the module list.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map.
    pub memmap_paddr: u64,
    /// Number of memory map entries.
    pub memmap_entries: u32,
}

impl StartInfo {
    /// Parses the start info from its bytes.
    pub fn parse(b: &[u8]) -> Result<StartInfo, PvhError> {
        need("start info", b, 8)?;
        let magic = u32_at(b, 0);
        if magic != START_INFO_MAGIC {
            return Err(PvhError::BadMagic(magic));
        }
        let version = u32_at(b, 4);
        if version < 1 {
            return Err(PvhError::NoMemoryMap { version });
        }
        need("start info", b, START_INFO_SIZE)?;
        Ok(StartInfo {
            version,
            nr_modules: u32_at(b, 12),
            modlist_paddr: u64_at(b, 16),
            cmdline_paddr: u64_at(b, 24),
            rsdp_paddr: u64_at(b, 32),
            memmap_paddr: u64_at(b, 40),
            memmap_entries: u32_at(b, 48),
        })
    }
}

/// The type of a memory map entry (the E820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM.
    Ram,
    /// Reserved by the platform.
    Reserved,
    /// ACPI tables, reclaimable after they are read.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Unusable,
    /// Any other type number.
    Other(u32),
}

impl MemoryKind {
    fn from_raw(t: u32) -> Self {
        match t {
            1 => MemoryKind::Ram,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Unusable,
            t => MemoryKind::Other(t),
        }
    }
}

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEntry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: MemoryKind,
}

impl MemoryEntry {
    /// Parses one `hvm_memmap_table_entry`.
    pub fn parse(b: &[u8]) -> Result<MemoryEntry, PvhError> {
        need("memory map entry", b, MEMMAP_ENTRY_SIZE)?;
        Ok(MemoryEntry { addr: u64_at(b, 0), size: u64_at(b, 8), kind: MemoryKind::from_raw(u32_at(b, 16)) })
    }
}

/// One boot module (QEMU's `-initrd`, later Mica's boot bundle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Physical address of its first byte.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Physical address of its command line (0: none).
    pub cmdline_paddr: u64,
}

impl Module {
    /// Parses one `hvm_modlist_entry`.
    pub fn parse(b: &[u8]) -> Result<Module, PvhError> {
        need("module entry", b, MODULE_ENTRY_SIZE)?;
        Ok(Module { paddr: u64_at(b, 0), size: u64_at(b, 8), cmdline_paddr: u64_at(b, 16) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_info(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; START_INFO_SIZE];
        b[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&0x7000u64.to_le_bytes());
        b[24..32].copy_from_slice(&0x8000u64.to_le_bytes());
        b[40..48].copy_from_slice(&0x9000u64.to_le_bytes());
        b[48..52].copy_from_slice(&3u32.to_le_bytes());
        b
    }

    #[test]
    fn parses_start_info() {
        let si = StartInfo::parse(&start_info(1)).expect("parse");
        assert_eq!(si.nr_modules, 1);
        assert_eq!(si.modlist_paddr, 0x7000);
        assert_eq!(si.cmdline_paddr, 0x8000);
        assert_eq!(si.memmap_paddr, 0x9000);
        assert_eq!(si.memmap_entries, 3);
    }

    #[test]
    fn rejects_bad_start_info() {
        let mut b = start_info(1);
        b[0] ^= 1;
        assert!(matches!(StartInfo::parse(&b), Err(PvhError::BadMagic(_))));
        assert_eq!(StartInfo::parse(&start_info(0)), Err(PvhError::NoMemoryMap { version: 0 }));
        assert_eq!(
            StartInfo::parse(&start_info(1)[..40]),
            Err(PvhError::Truncated { what: "start info", need: START_INFO_SIZE, got: 40 })
        );
        assert!(StartInfo::parse(&[]).is_err());
    }

    #[test]
    fn parses_entries() {
        let mut e = [0u8; MEMMAP_ENTRY_SIZE];
        e[0..8].copy_from_slice(&0x10_0000u64.to_le_bytes());
        e[8..16].copy_from_slice(&0x700_0000u64.to_le_bytes());
        e[16..20].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            MemoryEntry::parse(&e),
            Ok(MemoryEntry { addr: 0x10_0000, size: 0x700_0000, kind: MemoryKind::Ram })
        );
        e[16] = 9;
        assert_eq!(MemoryEntry::parse(&e).map(|m| m.kind), Ok(MemoryKind::Other(9)));
        let mut m = [0u8; MODULE_ENTRY_SIZE];
        m[0..8].copy_from_slice(&0x20_0000u64.to_le_bytes());
        m[8..16].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(Module::parse(&m), Ok(Module { paddr: 0x20_0000, size: 4096, cmdline_paddr: 0 }));
        assert!(Module::parse(&m[..8]).is_err());
    }
}
