//! What every boot protocol hands over, copied out of the loader's structures so that nothing
//! later depends on where the loader put them: the memory ranges, the boot modules and the
//! command line. Each architecture's `BootInfo` (PVH on x86_64, the device tree on aarch64) fills
//! one.

use core::fmt;

use crate::mem::range::{PhysRange, RangeSet, RangeSetFull};

/// The most memory ranges kept.
pub const MAX_MEMMAP: usize = 128;
/// The most boot modules kept.
pub const MAX_MODULES: usize = 16;
/// The longest command line accepted, in bytes.
pub const MAX_CMDLINE: usize = 4096;

/// A memory range as a boot protocol describes it.
pub trait MemoryRange: Copy {
    /// Where it is.
    fn range(&self) -> PhysRange;
    /// Whether it is RAM the kernel may use.
    fn is_ram(&self) -> bool;
    /// Whether it is taken out of the RAM other entries describe (a device tree's reservations;
    /// a PVH memory map's non-RAM entries are simply not RAM).
    fn is_reservation(&self) -> bool {
        false
    }
}

/// A boot module: bytes the loader placed in memory (Mica's boot bundle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Physical address of its first byte.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// What does not fit in a [`BootRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// More entries than Mica keeps.
    TooMany {
        /// Of what.
        what: &'static str,
        /// How many are kept.
        max: usize,
    },
    /// The command line is longer than [`MAX_CMDLINE`].
    CmdlineTooLong,
    /// The command line is not UTF-8.
    CmdlineNotUtf8,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooMany { what, max } => write!(f, "more than {max} {what}: Mica keeps at most {max}"),
            RecordError::CmdlineTooLong => write!(f, "kernel command line longer than {MAX_CMDLINE} bytes"),
            RecordError::CmdlineNotUtf8 => write!(f, "kernel command line is not UTF-8"),
        }
    }
}

/// The copied boot information.
#[derive(Debug)]
pub struct BootRecord<E> {
    memmap: [Option<E>; MAX_MEMMAP],
    modules: [Option<Module>; MAX_MODULES],
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
}

impl<E: MemoryRange> BootRecord<E> {
    /// An empty record.
    pub const fn new() -> Self {
        BootRecord {
            memmap: [None; MAX_MEMMAP],
            modules: [None; MAX_MODULES],
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
        }
    }

    /// Adds a memory range.
    pub fn push_memory(&mut self, entry: E) -> Result<(), RecordError> {
        let slot = self.memmap.iter_mut().find(|s| s.is_none());
        *slot.ok_or(RecordError::TooMany { what: "memory ranges", max: MAX_MEMMAP })? = Some(entry);
        Ok(())
    }

    /// Adds a boot module.
    pub fn push_module(&mut self, module: Module) -> Result<(), RecordError> {
        let slot = self.modules.iter_mut().find(|s| s.is_none());
        *slot.ok_or(RecordError::TooMany { what: "boot modules", max: MAX_MODULES })? = Some(module);
        Ok(())
    }

    /// Sets the command line.
    pub fn set_cmdline(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let to = self.cmdline.get_mut(..bytes.len()).ok_or(RecordError::CmdlineTooLong)?;
        core::str::from_utf8(bytes).map_err(|_| RecordError::CmdlineNotUtf8)?;
        to.copy_from_slice(bytes);
        self.cmdline_len = bytes.len();
        Ok(())
    }

    /// The command line.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The memory ranges (without empty ones, which some loaders append).
    pub fn memory_map(&self) -> impl Iterator<Item = E> + '_ {
        self.memmap.iter().flatten().copied().filter(|e| !e.range().is_empty())
    }

    /// The boot modules.
    pub fn modules(&self) -> impl Iterator<Item = Module> + '_ {
        self.modules.iter().flatten().copied()
    }

    /// Every RAM range, less the reservations.
    pub fn ram(&self) -> Result<RangeSet, RangeSetFull> {
        let mut ram = RangeSet::new();
        for e in self.memory_map().filter(MemoryRange::is_ram) {
            ram.insert(e.range())?;
        }
        for e in self.memory_map().filter(MemoryRange::is_reservation) {
            ram.remove(e.range())?;
        }
        Ok(ram)
    }
}

impl<E: MemoryRange> Default for BootRecord<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    struct Entry(u64, u64, bool);

    impl MemoryRange for Entry {
        fn range(&self) -> PhysRange {
            PhysRange::sized(self.0, self.1)
        }
        fn is_ram(&self) -> bool {
            self.2
        }
        fn is_reservation(&self) -> bool {
            !self.2
        }
    }

    #[test]
    fn ram_is_the_ram_less_the_reservations() {
        let mut r = BootRecord::new();
        r.push_memory(Entry(0x1000, 0x10000, true)).expect("room");
        r.push_memory(Entry(0x4000, 0x1000, false)).expect("room");
        r.push_memory(Entry(0x9_0000, 0, true)).expect("room");
        assert_eq!(r.memory_map().count(), 2, "empty ranges are left out");
        let ram: Vec<_> = r.ram().expect("ranges").iter().collect();
        assert_eq!(ram, [PhysRange::new(0x1000, 0x4000), PhysRange::new(0x5000, 0x11000)]);
    }

    #[test]
    fn limits_are_errors_by_name() {
        let mut r: BootRecord<Entry> = BootRecord::new();
        assert_eq!(r.set_cmdline(&[b'x'; MAX_CMDLINE + 1]), Err(RecordError::CmdlineTooLong));
        assert_eq!(r.set_cmdline(&[0xff, 0xfe]), Err(RecordError::CmdlineNotUtf8));
        r.set_cmdline(b"log=debug").expect("fits");
        assert_eq!(r.cmdline(), "log=debug");
        for i in 0..MAX_MODULES as u64 {
            r.push_module(Module { paddr: i << 20, size: 1 }).expect("room");
        }
        let err = r.push_module(Module { paddr: 0, size: 1 }).expect_err("full");
        assert_eq!(err.to_string(), "more than 16 boot modules: Mica keeps at most 16");
    }
}
