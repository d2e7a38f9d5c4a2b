//! PVH boot: loading the kernel ELF (linux-loader finds the entry in its `XEN_ELFNOTE_PHYS32_ENTRY`
//! note) and the optional initrd (one boot module, Mica's boot bundle), and writing the start-of-day
//! structures (`hvm_start_info`, the module list, the memory map and the command line) at the
//! addresses [`crate::layout`] fixes.

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{self, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};
use crate::layout::{
    self, CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_RAM_START, MEMMAP_START, MIB, MODLIST_START, START_INFO_START,
};

/// `hvm_start_info.magic`: "xEn3" with the high bit of each byte masked.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The `hvm_start_info` version written: 1, the first with a memory map.
pub const START_INFO_VERSION: u32 = 1;

/// Where the kernel landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The PVH 32-bit entry point, from the ELF note.
    pub entry: GuestAddress,
    /// The end of the highest segment (its memory size, `.bss` included).
    pub end: u64,
}

/// Loads the PVH ELF kernel at `path` into `memory` at its segments' physical addresses.
pub fn load_kernel(memory: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel> {
    let mut file = File::open(path).map_err(|source| Error::KernelUnreadable { path: path.to_owned(), source })?;
    let metadata = file.metadata().map_err(|source| Error::KernelUnreadable { path: path.to_owned(), source })?;
    if !metadata.is_file() {
        return Err(Error::KernelUnreadable {
            path: path.to_owned(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    let memory_mib = memory_size(memory) / MIB;
    // `highmem_start_address` makes the loader refuse an entry point below 1 MiB, where the boot
    // structures live.
    let loaded = Elf::load(memory, None, &mut file, Some(GuestAddress(HIGH_RAM_START)))
        .map_err(|e| load_error(path, memory_mib, e))?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            if entry.raw_value() < HIGH_RAM_START || entry.raw_value() >= loaded.kernel_end {
                return Err(Error::KernelLoad {
                    path: path.to_owned(),
                    memory_mib,
                    detail: format!(
                        "its PVH entry {:#x} is outside the loaded image ({:#x}..{:#x})",
                        entry.raw_value(),
                        HIGH_RAM_START,
                        loaded.kernel_end
                    ),
                });
            }
            Ok(LoadedKernel { entry, end: loaded.kernel_end })
        }
        PvhBootCapability::PvhEntryNotPresent | PvhBootCapability::PvhEntryIgnored => {
            Err(Error::NoPvhNote { path: path.to_owned() })
        }
    }
}

/// Turns a loader error into one that says what to do about it.
fn load_error(path: &Path, memory_mib: u64, e: loader::Error) -> Error {
    let not_elf = |detail: &str| Error::NotElf { path: path.to_owned(), detail: detail.to_owned() };
    let load = |detail: String| Error::KernelLoad { path: path.to_owned(), memory_mib, detail };
    match e {
        loader::Error::Elf(ElfError::InvalidElfMagicNumber) => not_elf("no ELF magic number"),
        loader::Error::Elf(ElfError::ReadElfHeader) => not_elf("shorter than an ELF header"),
        loader::Error::Elf(ElfError::BigEndianElfOnLittle) => not_elf("big-endian"),
        loader::Error::Elf(ElfError::InvalidProgramHeaderSize) => {
            not_elf("program header size is not that of ELF64: a 32-bit ELF?")
        }
        loader::Error::Elf(ElfError::InvalidEntryAddress) => {
            load(format!("its entry point is below {HIGH_RAM_START:#x}, where the VMM keeps the boot structures"))
        }
        loader::Error::Elf(ElfError::ReadKernelImage) => load(format!(
            "a segment does not fit in guest memory (or the file is truncated): try a larger --memory-mib than \
             {memory_mib}"
        )),
        other => load(other.to_string()),
    }
}

/// Loads the initrd at `path` page-aligned at the top of guest RAM, above `kernel_end`, and
/// returns its module list entry.
pub fn load_initrd(memory: &GuestMemoryMmap, path: &Path, kernel_end: u64) -> Result<hvm_modlist_entry> {
    let unreadable = |source| Error::InitrdUnreadable { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    let top = memory_size(memory);
    let start = top.checked_sub(size).map(|a| a & !0xfff).filter(|a| *a >= kernel_end.next_multiple_of(0x1000));
    let Some(start) = start else {
        return Err(Error::InitrdTooLarge { path: path.to_owned(), size, kernel_end, memory_mib: top / MIB });
    };
    memory
        .read_exact_volatile_from(GuestAddress(start), &mut file, size as usize)
        .map_err(|e| unreadable(std::io::Error::other(e.to_string())))?;
    Ok(hvm_modlist_entry { paddr: start, size, cmdline_paddr: 0, reserved: 0 })
}

pub(crate) fn memory_size(memory: &GuestMemoryMmap) -> u64 {
    use vm_memory::GuestMemoryBackend;
    memory.last_addr().raw_value() + 1
}

/// Checks a kernel command line: printable ASCII, short enough for [`CMDLINE_MAX_SIZE`] with its
/// terminating NUL.
pub fn check_cmdline(cmdline: &str) -> Result<()> {
    if let Some(c) = cmdline.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(Error::Cmdline(format!("character {c:?} is not printable ASCII")));
    }
    if cmdline.len() + 1 > CMDLINE_MAX_SIZE {
        return Err(Error::Cmdline(format!(
            "{} bytes long; at most {} fit (plus the terminating NUL)",
            cmdline.len(),
            CMDLINE_MAX_SIZE - 1
        )));
    }
    Ok(())
}

/// Checks `cmdline` and writes it, NUL-terminated, at [`CMDLINE_START`].
pub fn write_cmdline(memory: &GuestMemoryMmap, cmdline: &str) -> Result<()> {
    check_cmdline(cmdline)?;
    let mut line = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline(e.to_string()))?;
    if !cmdline.trim().is_empty() {
        line.insert_str(cmdline).map_err(|e| Error::Cmdline(e.to_string()))?;
    }
    loader::load_cmdline(memory, CMDLINE_START, &line).map_err(|e| Error::BootParams(e.to_string()))
}

/// The `hvm_start_info` for a guest with `memmap_entries` memory map entries, `modules` boot
/// modules and a command line.
pub fn start_info(memmap_entries: usize, modules: usize) -> hvm_start_info {
    hvm_start_info {
        magic: START_INFO_MAGIC,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: u32::try_from(modules).unwrap_or(u32::MAX),
        modlist_paddr: if modules == 0 { 0 } else { MODLIST_START.raw_value() },
        cmdline_paddr: CMDLINE_START.raw_value(),
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_START.raw_value(),
        memmap_entries: u32::try_from(memmap_entries).unwrap_or(u32::MAX),
        reserved: 0,
    }
}

/// Writes the command line, the memory map, the module list (`initrd`, if any) and
/// `hvm_start_info` into `memory`. Returns the address of `hvm_start_info`, which the vCPU gets in
/// `%ebx`.
pub fn write_boot_info(
    memory: &GuestMemoryMmap,
    cmdline: &str,
    initrd: Option<hvm_modlist_entry>,
) -> Result<GuestAddress> {
    write_cmdline(memory, cmdline)?;
    let map: Vec<hvm_memmap_table_entry> = layout::memory_map(memory_size(memory));
    let modules: Vec<hvm_modlist_entry> = initrd.into_iter().collect();
    let info = start_info(map.len(), modules.len());
    let mut params = BootParams::new::<hvm_start_info>(&info, START_INFO_START);
    params.set_sections::<hvm_memmap_table_entry>(&map, MEMMAP_START);
    if !modules.is_empty() {
        params.set_modules::<hvm_modlist_entry>(&modules, MODLIST_START);
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, memory)
        .map_err(|e| Error::BootParams(e.to_string()))?;
    Ok(START_INFO_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).expect("guest memory")
    }

    fn read(memory: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        memory.read_slice(&mut buf, GuestAddress(addr)).expect("read guest memory");
        buf
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn start_info_bytes_follow_the_pvh_layout() {
        let mem = memory(4 * MIB);
        let at = write_boot_info(&mem, "test=panic log=debug", None).expect("boot info");
        assert_eq!(at, START_INFO_START);
        let b = read(&mem, 0x6000, 56);
        assert_eq!(u32_at(&b, 0), 0x336e_c578, "magic");
        assert_eq!(u32_at(&b, 4), 1, "version");
        assert_eq!(u32_at(&b, 8), 0, "flags");
        assert_eq!(u32_at(&b, 12), 0, "nr_modules");
        assert_eq!(u64_at(&b, 16), 0, "modlist_paddr");
        assert_eq!(u64_at(&b, 24), 0x2_0000, "cmdline_paddr");
        assert_eq!(u64_at(&b, 32), 0, "rsdp_paddr");
        assert_eq!(u64_at(&b, 40), 0x7000, "memmap_paddr");
        assert_eq!(u32_at(&b, 48), 3, "memmap_entries");
    }

    #[test]
    fn memory_map_bytes_are_e820_entries() {
        let mem = memory(4 * MIB);
        write_boot_info(&mem, "", None).expect("boot info");
        let b = read(&mem, 0x7000, 3 * 24);
        let entry = |i: usize| (u64_at(&b, i * 24), u64_at(&b, i * 24 + 8), u32_at(&b, i * 24 + 16));
        assert_eq!(entry(0), (0, 640 * 1024, 1));
        assert_eq!(entry(1), (640 * 1024, 384 * 1024, 2));
        assert_eq!(entry(2), (MIB, 3 * MIB, 1));
    }

    #[test]
    fn initrd_goes_page_aligned_to_the_top_of_ram() {
        let dir = std::env::temp_dir().join(format!("mica-vmm-initrd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bundle");
        std::fs::write(&path, b"bundle!").expect("write");
        let mem = memory(4 * MIB);
        let module = load_initrd(&mem, &path, 0x18_0000).expect("initrd");
        assert_eq!((module.paddr, module.size), (4 * MIB - 0x1000, 7));
        assert_eq!(read(&mem, module.paddr, 7), b"bundle!");

        write_boot_info(&mem, "", Some(module)).expect("boot info");
        let b = read(&mem, 0x6000, 56);
        assert_eq!(u32_at(&b, 12), 1, "nr_modules");
        assert_eq!(u64_at(&b, 16), 0x6100, "modlist_paddr");
        let m = read(&mem, 0x6100, 32);
        assert_eq!((u64_at(&m, 0), u64_at(&m, 8), u64_at(&m, 16)), (4 * MIB - 0x1000, 7, 0));

        std::fs::write(&path, vec![0u8; 3 * MIB as usize]).expect("write");
        let e = load_initrd(&mem, &path, 0x18_0000).expect_err("too big");
        assert!(e.to_string().contains("does not fit"), "{e}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn cmdline_is_nul_terminated() {
        let mem = memory(4 * MIB);
        write_boot_info(&mem, "  test=panic  ", None).expect("boot info");
        assert_eq!(read(&mem, 0x2_0000, 11), b"test=panic\0");
        let mem = memory(4 * MIB);
        write_boot_info(&mem, "", None).expect("boot info");
        assert_eq!(read(&mem, 0x2_0000, 1), b"\0");
    }

    #[test]
    fn bad_cmdlines_are_refused() {
        assert!(check_cmdline(&"x".repeat(CMDLINE_MAX_SIZE - 1)).is_ok());
        let long = check_cmdline(&"x".repeat(CMDLINE_MAX_SIZE)).expect_err("too long");
        assert!(long.to_string().contains("at most 4095"), "{long}");
        let nul = check_cmdline("a\0b").expect_err("NUL");
        assert!(nul.to_string().contains("printable ASCII"), "{nul}");
        assert!(check_cmdline("é").is_err());
    }

    #[test]
    fn non_elf_files_are_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("mica-vmm-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mem = memory(4 * MIB);

        let missing = dir.join("missing");
        let e = load_kernel(&mem, &missing).expect_err("missing");
        assert!(matches!(e, Error::KernelUnreadable { .. }), "{e}");

        let e = load_kernel(&mem, &dir).expect_err("directory");
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let text = dir.join("text");
        std::fs::write(&text, b"#!/bin/sh\necho this is no kernel, but it is long enough for a header\n")
            .expect("write");
        let e = load_kernel(&mem, &text).expect_err("text");
        assert!(matches!(e, Error::NotElf { .. }), "{e}");

        let short = dir.join("short");
        std::fs::write(&short, b"\x7fELF").expect("write");
        let e = load_kernel(&mem, &short).expect_err("short");
        assert!(e.to_string().contains("shorter than an ELF header"), "{e}");

        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn pvh_note_is_found_or_its_absence_reported() {
        use crate::pvh_elf;
        let dir = std::env::temp_dir().join(format!("mica-vmm-pvh-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mem = memory(4 * MIB);

        let with_note = dir.join("pvh");
        std::fs::write(&with_note, pvh_elf::build(&[0xfa, 0xf4], true)).expect("write");
        let k = load_kernel(&mem, &with_note).expect("load");
        assert_eq!(k, LoadedKernel { entry: GuestAddress(0x10_0000), end: 0x10_0002 });
        assert_eq!(read(&mem, 0x10_0000, 2), [0xfa, 0xf4]);

        let without = dir.join("plain");
        std::fs::write(&without, pvh_elf::build(&[0xfa, 0xf4], false)).expect("write");
        let e = load_kernel(&mem, &without).expect_err("no note");
        assert!(matches!(e, Error::NoPvhNote { .. }), "{e}");
        assert!(e.to_string().contains("XEN_ELFNOTE_PHYS32_ENTRY"), "{e}");

        let too_small = memory(MIB);
        let e = load_kernel(&too_small, &with_note).expect_err("does not fit");
        assert!(e.to_string().contains("does not fit"), "{e}");

        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
