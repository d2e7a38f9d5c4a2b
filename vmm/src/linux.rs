//! Linux boot: an unmodified bzImage (Debian's kernel, say) through the 32-bit boot protocol
//! (Documentation/arch/x86/boot.rst).
//!
//! linux-loader copies the protected-mode part of the bzImage to `code32_start` (1 MiB); the
//! VMM fills the zero page (`boot_params`: the image's own setup header, patched with the loader
//! type, the command line, the initramfs and the E820 memory map) at
//! [`ZERO_PAGE_START`](crate::layout::ZERO_PAGE_START), and enters at `code32_start` in flat
//! 32-bit protected mode without paging, `%esi` pointing at the zero page: the same CPU state
//! as a PVH entry, so [`crate::regs::pvh_sregs`] serves both.
//!
//! The initramfs goes at the top of RAM (below the kernel's `initrd_addr_max`), and must end up
//! above the area the kernel decompresses itself into (`init_size` bytes from its load address).

use std::fs::File;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use vm_memory::{Address, GuestAddress, GuestMemoryMmap};

use crate::boot::{self, LoadedKernel};
use crate::error::{Error, Result};
use crate::layout::{self, CMDLINE_START, HIGH_RAM_START, MIB, ZERO_PAGE_START};

/// The boot protocol's signature, "HdrS", at offset 0x202 of a bzImage.
const HDRS: [u8; 4] = *b"HdrS";
/// `type_of_loader` for a boot loader without an assigned id.
const LOADER_UNDEFINED: u8 = 0xff;
/// The `boot_flag` every valid setup header carries.
const BOOT_FLAG: u16 = 0xaa55;

/// Whether the file at `path` is a Linux bzImage (it has the boot protocol's header).
pub fn is_bzimage(path: &Path) -> Result<bool> {
    let mut header = [0u8; 0x206];
    let mut file = File::open(path).map_err(|source| Error::KernelUnreadable { path: path.to_owned(), source })?;
    match std::io::Read::read_exact(&mut file, &mut header) {
        Ok(()) => Ok(header[0x202..0x206] == HDRS),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(Error::KernelUnreadable { path: path.to_owned(), source }),
    }
}

/// Loads the bzImage at `path`, the initramfs at `initrd` (if any) and the command line, and
/// writes the zero page. Returns where the kernel landed (its entry is `code32_start`); the vCPU
/// gets [`ZERO_PAGE_START`] in `%esi`.
pub fn load(memory: &GuestMemoryMmap, path: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<LoadedKernel> {
    let memory_mib = boot::memory_size(memory) / MIB;
    let load_error = |detail: String| Error::KernelLoad { path: path.to_owned(), memory_mib, detail };
    let mut file = File::open(path).map_err(|source| Error::KernelUnreadable { path: path.to_owned(), source })?;
    let loaded = BzImage::load(memory, None, &mut file, Some(GuestAddress(HIGH_RAM_START)))
        .map_err(|e| load_error(format!("not a loadable bzImage: {e}")))?;
    let header = loaded.setup_header.ok_or_else(|| load_error("no setup header".into()))?;
    // The kernel decompresses itself into `init_size` bytes from where it was loaded.
    let claimed = loaded.kernel_load.raw_value() + u64::from(header.init_size);
    let kernel = LoadedKernel { entry: loaded.kernel_load, end: claimed.max(loaded.kernel_end) };
    if kernel.end > boot::memory_size(memory) {
        return Err(load_error(format!(
            "it needs {} MiB from {:#x} to decompress itself",
            u64::from(header.init_size).div_ceil(MIB),
            loaded.kernel_load.raw_value()
        )));
    }
    boot::write_cmdline(memory, cmdline)?;
    let ramdisk = initrd.map(|initrd| boot::load_initrd(memory, initrd, kernel.end)).transpose()?;
    if let Some(ramdisk) = &ramdisk
        && ramdisk.paddr + ramdisk.size > u64::from(header.initrd_addr_max) + 1
    {
        return Err(Error::BootParams(format!(
            "the initramfs would end at {:#x}, above the kernel's limit {:#x}: use less guest memory",
            ramdisk.paddr + ramdisk.size,
            { header.initrd_addr_max }
        )));
    }

    let mut params = boot_params { hdr: header, ..Default::default() };
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.cmd_line_ptr = u32::try_from(CMDLINE_START.raw_value()).expect("the command line is below 4 GiB");
    if let Some(ramdisk) = ramdisk {
        // Guest memory stays below 4 GiB (layout::MAX_MEMORY), so both fit.
        params.hdr.ramdisk_image = u32::try_from(ramdisk.paddr).expect("guest RAM is below 4 GiB");
        params.hdr.ramdisk_size = u32::try_from(ramdisk.size).expect("guest RAM is below 4 GiB");
    }
    let map = layout::memory_map(boot::memory_size(memory));
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.type_ };
    }
    params.e820_entries = u8::try_from(map.len()).expect("three memory map entries");
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&BootParams::new(&params, ZERO_PAGE_START), memory)
        .map_err(|e| Error::BootParams(e.to_string()))?;
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vm_memory::Bytes;

    use super::*;
    use crate::layout::E820_RAM;

    /// A minimal bzImage: 4 setup sectors plus the boot sector, a boot protocol 2.15 header that
    /// loads high at 1 MiB, and `payload` as its protected-mode part.
    fn bzimage(init_size: u32, payload: &[u8]) -> tempfile::NamedTempFile {
        let mut image = vec![0u8; 5 * 512];
        image[0x1f1] = 4; // setup_sects
        image[0x1fe..0x200].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        image[0x202..0x206].copy_from_slice(&HDRS);
        image[0x206..0x208].copy_from_slice(&0x020f_u16.to_le_bytes()); // version
        image[0x211] = 0x01; // loadflags: LOADED_HIGH
        image[0x214..0x218].copy_from_slice(&0x10_0000_u32.to_le_bytes()); // code32_start
        image[0x22c..0x230].copy_from_slice(&0x7fff_ffff_u32.to_le_bytes()); // initrd_addr_max
        image[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        image.extend_from_slice(payload);
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&image).expect("write image");
        file
    }

    fn memory(mib: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (mib * MIB) as usize)]).expect("guest memory")
    }

    #[test]
    fn bzimages_are_told_from_elf_files() {
        assert!(is_bzimage(bzimage(0, b"x").path()).expect("readable"));
        let mut elf = tempfile::NamedTempFile::new().expect("temp file");
        elf.write_all(b"\x7fELF short").expect("write");
        assert!(!is_bzimage(elf.path()).expect("readable"));
    }

    #[test]
    fn zero_page_has_the_header_command_line_initramfs_and_memory_map() {
        let memory = memory(64);
        let kernel = bzimage(8 * MIB as u32, b"\x90\x90kernel");
        let mut initrd = tempfile::NamedTempFile::new().expect("temp file");
        initrd.write_all(&[0x5a; 10_000]).expect("write initrd");
        let loaded = load(&memory, kernel.path(), Some(initrd.path()), "console=ttyS0 quiet").expect("loads");
        assert_eq!(loaded.entry, GuestAddress(0x10_0000));
        assert_eq!(loaded.end, 0x10_0000 + 8 * MIB, "the decompression area is the kernel's");

        let params: boot_params = memory.read_obj(ZERO_PAGE_START).expect("zero page");
        let hdr = params.hdr;
        assert_eq!((hdr.header, hdr.boot_flag, hdr.type_of_loader), (0x5372_6448, BOOT_FLAG, LOADER_UNDEFINED));
        assert_eq!({ hdr.code32_start }, 0x10_0000);
        assert_eq!(u64::from(hdr.cmd_line_ptr), CMDLINE_START.raw_value());
        let mut line = [0u8; 20];
        memory.read_slice(&mut line, CMDLINE_START).expect("command line");
        assert_eq!(&line, b"console=ttyS0 quiet\0");
        // The initramfs is page-aligned at the top of RAM.
        assert_eq!({ hdr.ramdisk_size }, 10_000);
        assert_eq!(u64::from(hdr.ramdisk_image), (64 * MIB - 10_000) & !0xfff);
        let first: u8 = memory.read_obj(GuestAddress(u64::from(hdr.ramdisk_image))).expect("initrd byte");
        assert_eq!(first, 0x5a);
        let e820: Vec<(u64, u64, u32)> =
            params.e820_table[..usize::from(params.e820_entries)].iter().map(|e| (e.addr, e.size, e.r#type)).collect();
        assert_eq!(e820.len(), 3);
        assert_eq!(e820[2], (MIB, 63 * MIB, E820_RAM));
        let code: [u8; 2] = memory.read_obj(GuestAddress(0x10_0000)).expect("kernel bytes");
        assert_eq!(code, [0x90, 0x90]);
    }

    #[test]
    fn an_initramfs_that_would_overlap_the_decompressed_kernel_is_refused() {
        let memory = memory(16);
        let kernel = bzimage(12 * MIB as u32, b"k");
        let mut initrd = tempfile::NamedTempFile::new().expect("temp file");
        initrd.write_all(&vec![0; 4 * MIB as usize]).expect("write initrd");
        let error = load(&memory, kernel.path(), Some(initrd.path()), "").expect_err("no room");
        assert!(matches!(error, Error::InitrdTooLarge { .. }), "{error}");
        let error = load(&memory, bzimage(20 * MIB as u32, b"k").path(), None, "").expect_err("no room");
        assert!(error.to_string().contains("needs 20 MiB from 0x100000 to decompress itself"), "{error}");
    }
}
