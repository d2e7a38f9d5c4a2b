//! What the boot loader handed over, read out of physical memory while the stub's 4 GiB identity
//! map is still active: the memory map, the boot modules and the command line (copied, so that
//! nothing below depends on where the loader put it).

use core::fmt;

use super::pvh::{self, MemoryEntry, MemoryKind, PvhError, StartInfo};
use crate::boot_record::{BootRecord, MAX_CMDLINE, MAX_MEMMAP, MAX_MODULES, MemoryRange, Module, RecordError};
use crate::mem::range::PhysRange;

impl MemoryRange for MemoryEntry {
    fn range(&self) -> PhysRange {
        PhysRange::sized(self.addr, self.size)
    }

    fn is_ram(&self) -> bool {
        self.kind == MemoryKind::Ram
    }
}

/// Why the boot information cannot be used.
#[derive(Clone, Copy, Debug)]
pub enum BootInfoError {
    /// A PVH structure is malformed.
    Pvh(PvhError),
    /// More entries than Mica keeps.
    TooMany {
        /// Of what.
        what: &'static str,
        /// How many there were.
        count: u32,
        /// How many are kept.
        max: usize,
    },
    /// The command line has no NUL within [`MAX_CMDLINE`] bytes.
    CmdlineTooLong,
    /// What does not fit in the boot record.
    Record(RecordError),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::Pvh(e) => write!(f, "{e}"),
            BootInfoError::TooMany { what, count, max } => write!(f, "{count} {what}, Mica keeps at most {max}"),
            BootInfoError::CmdlineTooLong => write!(f, "kernel command line longer than {MAX_CMDLINE} bytes"),
            BootInfoError::Record(e) => write!(f, "{e}"),
        }
    }
}

impl From<RecordError> for BootInfoError {
    fn from(e: RecordError) -> Self {
        BootInfoError::Record(e)
    }
}

impl From<PvhError> for BootInfoError {
    fn from(e: PvhError) -> Self {
        BootInfoError::Pvh(e)
    }
}

/// The boot information, copied out of the loader's structures.
#[derive(Debug)]
pub struct BootInfo {
    /// Where the start info itself was.
    pub start_info: PhysRange,
    /// Where the memory map was.
    pub memmap_location: PhysRange,
    /// Where the module list was.
    pub modlist_location: PhysRange,
    /// ACPI RSDP, if given.
    pub rsdp: Option<u64>,
    /// The memory map, the boot modules and the command line.
    record: BootRecord<MemoryEntry>,
}

/// Reads `len` bytes of physical memory.
///
/// # Safety
/// `addr..addr + len` must be mapped (the boot stub identity-maps the first 4 GiB) and not
/// written while the slice lives.
unsafe fn phys_bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

fn below_4g(addr: u64, len: usize) -> Result<(), BootInfoError> {
    if addr.saturating_add(len as u64) > 1 << 32 {
        return Err(BootInfoError::Pvh(PvhError::Truncated { what: "boot structure above 4 GiB", need: len, got: 0 }));
    }
    Ok(())
}

impl BootInfo {
    /// Reads the PVH start info at `addr` and everything it points to.
    ///
    /// # Safety
    /// Must run while the boot stub's identity map of the first 4 GiB is active, with `addr` the
    /// value the loader passed in `%ebx`.
    pub unsafe fn read(addr: u64) -> Result<BootInfo, BootInfoError> {
        below_4g(addr, pvh::START_INFO_SIZE)?;
        // SAFETY: below 4 GiB, identity-mapped; the loader's structures are not written again.
        let si = StartInfo::parse(unsafe { phys_bytes(addr, pvh::START_INFO_SIZE) })?;
        let mut info = BootInfo {
            start_info: PhysRange::sized(addr, pvh::START_INFO_SIZE as u64),
            memmap_location: PhysRange::sized(
                si.memmap_paddr,
                u64::from(si.memmap_entries) * pvh::MEMMAP_ENTRY_SIZE as u64,
            ),
            modlist_location: PhysRange::sized(
                si.modlist_paddr,
                u64::from(si.nr_modules) * pvh::MODULE_ENTRY_SIZE as u64,
            ),
            rsdp: (si.rsdp_paddr != 0).then_some(si.rsdp_paddr),
            record: BootRecord::new(),
        };
        if si.memmap_entries as usize > MAX_MEMMAP {
            return Err(BootInfoError::TooMany {
                what: "memory map entries",
                count: si.memmap_entries,
                max: MAX_MEMMAP,
            });
        }
        if si.nr_modules as usize > MAX_MODULES {
            return Err(BootInfoError::TooMany { what: "boot modules", count: si.nr_modules, max: MAX_MODULES });
        }
        for i in 0..si.memmap_entries as usize {
            let at = si.memmap_paddr + (i * pvh::MEMMAP_ENTRY_SIZE) as u64;
            below_4g(at, pvh::MEMMAP_ENTRY_SIZE)?;
            // SAFETY: as above.
            info.record.push_memory(MemoryEntry::parse(unsafe { phys_bytes(at, pvh::MEMMAP_ENTRY_SIZE) })?)?;
        }
        for i in 0..si.nr_modules as usize {
            let at = si.modlist_paddr + (i * pvh::MODULE_ENTRY_SIZE) as u64;
            below_4g(at, pvh::MODULE_ENTRY_SIZE)?;
            // SAFETY: as above.
            let module = pvh::Module::parse(unsafe { phys_bytes(at, pvh::MODULE_ENTRY_SIZE) })?;
            info.record.push_module(Module { paddr: module.paddr, size: module.size })?;
        }
        if si.cmdline_paddr != 0 {
            let mut len = 0;
            loop {
                if len == MAX_CMDLINE {
                    return Err(BootInfoError::CmdlineTooLong);
                }
                below_4g(si.cmdline_paddr + len as u64, 1)?;
                // SAFETY: as above.
                let b = unsafe { phys_bytes(si.cmdline_paddr + len as u64, 1) }[0];
                if b == 0 {
                    break;
                }
                len += 1;
            }
            // SAFETY: as above; the `len` bytes before the NUL were just read one by one.
            info.record.set_cmdline(unsafe { phys_bytes(si.cmdline_paddr, len) })?;
        }
        Ok(info)
    }

    /// What the start info says about the machine, for the boot log.
    pub fn summary(&self) -> impl fmt::Display + '_ {
        struct Summary<'a>(&'a BootInfo);
        impl fmt::Display for Summary<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let info = self.0;
                write!(
                    f,
                    "PVH start info at {:#x}: {} memory map entries, {} boot modules",
                    info.start_info.start,
                    info.record.memory_map().count(),
                    info.record.modules().count()
                )?;
                match info.rsdp {
                    Some(rsdp) => write!(f, ", ACPI RSDP {rsdp:#x}"),
                    None => write!(f, ", no ACPI"),
                }
            }
        }
        Summary(self)
    }

    /// Where the loader's own structures lie (the start info, the memory map, the module list):
    /// memory the frame allocator must not hand out while they are read.
    pub fn boot_structures(&self) -> [PhysRange; 3] {
        [self.start_info, self.memmap_location, self.modlist_location]
    }

    /// The memory map, the boot modules and the command line.
    pub fn record(&self) -> &BootRecord<MemoryEntry> {
        &self.record
    }
}
