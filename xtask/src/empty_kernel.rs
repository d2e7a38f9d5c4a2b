//! The empty kernel: the smallest kernel QEMU boots, which exits at its first instruction.
//!
//! Booting it measures what QEMU itself costs (process start, machine setup, firmware, loading)
//! so that the boot benchmark can subtract it from Mica's numbers. One per architecture:
//!
//! - aarch64 ([`arm64_image`]): a Linux arm64 `Image` (the 64-byte header, then three
//!   instructions) that ends the run through semihosting `SYS_EXIT` with the success status, as
//!   Mica's aarch64 kernel does.
//! - x86_64 ([`elf`]): a PVH ELF, written byte by byte: an ELF64 header, one `PT_LOAD` segment
//!   at 1 MiB with the code, and one `PT_NOTE` segment with the Xen note
//!   `XEN_ELFNOTE_PHYS32_ENTRY` that QEMU's PVH loader looks for. QEMU enters the code in 32-bit
//!   protected mode; it writes [`ExitCode::Success`] to the `isa-debug-exit` port, so QEMU exits
//!   with status 33.

use mica_exit::{ExitCode, ISA_DEBUG_EXIT_PORT};

/// Physical (and virtual) address of the code: 1 MiB, where PVH kernels conventionally load. The
/// PVH entry is a 32-bit address.
pub const LOAD_ADDR: u32 = 0x10_0000;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note type whose descriptor is the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PHDR_COUNT: usize = 2;
const NOTE_OFFSET: usize = EHDR_SIZE + PHDR_SIZE * PHDR_COUNT;
const NOTE_NAME: &[u8; 4] = b"Xen\0";
const NOTE_SIZE: usize = 12 + NOTE_NAME.len() + 4;
/// File offset of the code; 16-aligned, as is [`LOAD_ADDR`], so offset and address agree modulo
/// the segment's alignment.
const CODE_OFFSET: usize = (NOTE_OFFSET + NOTE_SIZE).next_multiple_of(CODE_ALIGN);
const CODE_ALIGN: usize = 16;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_R: u32 = 4;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;

// `out imm8, al` reaches ports 0..=255 only.
const _: () = assert!(ISA_DEBUG_EXIT_PORT <= 0xff);

/// The 32-bit entry code: `mov al, 0x10; out 0xf4, al; hlt; jmp $`.
pub fn code() -> [u8; 7] {
    [
        0xb0,
        ExitCode::Success.code(), // mov al, imm8
        0xe6,
        ISA_DEBUG_EXIT_PORT as u8, // out imm8, al
        0xf4,                      // hlt
        0xeb,
        0xfe, // jmp $ (should the exit device be missing)
    ]
}

/// The whole ELF file of the empty kernel.
pub fn elf() -> Vec<u8> {
    pvh_elf(&code())
}

/// A PVH ELF whose 32-bit entry, at [`LOAD_ADDR`], is `code`.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(CODE_OFFSET + code.len());

    // ELF header.
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V ABI
    f.extend_from_slice(&[0; 8]); // ABI version and padding
    f.extend_from_slice(&ET_EXEC.to_le_bytes());
    f.extend_from_slice(&EM_X86_64.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&u64::from(LOAD_ADDR).to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    f.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    f.extend_from_slice(&(PHDR_COUNT as u16).to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(f.len(), EHDR_SIZE);

    let code_len = code.len() as u64;
    push_phdr(&mut f, PT_LOAD, PF_R | PF_X, CODE_OFFSET, LOAD_ADDR.into(), code_len, CODE_ALIGN as u64);
    push_phdr(&mut f, PT_NOTE, PF_R, NOTE_OFFSET, 0, NOTE_SIZE as u64, 4);
    debug_assert_eq!(f.len(), NOTE_OFFSET);

    // The note: namesz, descsz, type, name (4-aligned), descriptor.
    f.extend_from_slice(&(NOTE_NAME.len() as u32).to_le_bytes());
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    f.extend_from_slice(NOTE_NAME);
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    debug_assert_eq!(f.len(), NOTE_OFFSET + NOTE_SIZE);

    f.resize(CODE_OFFSET, 0);
    f.extend_from_slice(code);
    f
}

/// The arm64 `Image` header's magic, `ARM\x64`.
const ARM64_MAGIC: u32 = 0x644d_5241;
/// Where the `Image` asks to be loaded above a 2 MiB-aligned base.
const ARM64_TEXT_OFFSET: u64 = 0x8_0000;
/// Semihosting's `SYS_EXIT` operation.
const SYS_EXIT: u32 = 0x18;
/// `SYS_EXIT`'s reason for a program's own exit with a status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// The aarch64 empty kernel: a Linux arm64 `Image` whose code calls semihosting `SYS_EXIT` with
/// [`ExitCode::Success`]'s status.
pub fn arm64_image() -> Vec<u8> {
    // After the 64-byte header: `movz x0, #SYS_EXIT; adr x1, block; hlt #0xf000; b .`, then the
    // parameter block (reason, status) at offset 80, 8-aligned.
    let code: [u32; 4] = [
        0xd280_0000 | (SYS_EXIT << 5), // movz x0, #0x18
        0x1000_0000 | (3 << 5) | 1,    // adr x1, .+12 (immhi = 12 >> 2, immlo = 0)
        0xd440_0000 | (0xf000 << 5),   // hlt #0xf000: the semihosting call
        0x1400_0000,                   // b . (should QEMU not end the run)
    ];
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(&(0x1400_0000u32 | (64 / 4)).to_le_bytes()); // code0: b +64, over the header
    f.extend_from_slice(&0u32.to_le_bytes()); // code1
    f.extend_from_slice(&ARM64_TEXT_OFFSET.to_le_bytes());
    f.extend_from_slice(&96u64.to_le_bytes()); // image_size
    f.extend_from_slice(&0u64.to_le_bytes()); // flags: little-endian, 4 KiB pages unspecified
    f.extend_from_slice(&[0; 24]); // res2..res4
    f.extend_from_slice(&ARM64_MAGIC.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes()); // res5: no PE header
    for word in code {
        f.extend_from_slice(&word.to_le_bytes());
    }
    f.extend_from_slice(&ADP_STOPPED_APPLICATION_EXIT.to_le_bytes());
    f.extend_from_slice(&(ExitCode::Success.qemu_status() as u64).to_le_bytes());
    debug_assert_eq!(f.len(), 96);
    f
}

/// The empty kernel for `arch`, as bytes of the file QEMU's `-kernel` takes.
pub fn for_arch(arch: mica_launch::GuestArch) -> Vec<u8> {
    match arch {
        mica_launch::GuestArch::X86_64 => elf(),
        mica_launch::GuestArch::Aarch64 => arm64_image(),
    }
}

fn push_phdr(f: &mut Vec<u8>, kind: u32, flags: u32, offset: usize, addr: u64, size: u64, align: u64) {
    f.extend_from_slice(&kind.to_le_bytes());
    f.extend_from_slice(&flags.to_le_bytes());
    f.extend_from_slice(&(offset as u64).to_le_bytes());
    f.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    f.extend_from_slice(&size.to_le_bytes()); // p_filesz
    f.extend_from_slice(&size.to_le_bytes()); // p_memsz
    f.extend_from_slice(&align.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use object::Endianness;
    use object::elf::{self, FileHeader64};
    use object::read::elf::{FileHeader, ProgramHeader};

    use super::*;

    #[test]
    fn parses_back_as_a_pvh_elf() {
        let data = elf();
        let header = FileHeader64::<Endianness>::parse(data.as_slice()).expect("ELF header");
        let endian = header.endian().expect("endianness");
        assert_eq!(endian, Endianness::Little);
        assert!(header.is_type_64());
        assert_eq!(header.e_machine(endian), elf::EM_X86_64);
        assert_eq!(header.e_type(endian), elf::ET_EXEC);
        let load_addr = u64::from(LOAD_ADDR);
        assert_eq!(header.e_entry(endian), load_addr);

        let phdrs = header.program_headers(endian, data.as_slice()).expect("program headers");
        assert_eq!(phdrs.len(), 2);

        let load = phdrs.iter().find(|p| p.p_type(endian) == elf::PT_LOAD).expect("PT_LOAD");
        assert_eq!(load.p_paddr(endian), load_addr);
        assert_eq!(load.p_vaddr(endian), load_addr);
        assert_eq!(load.p_offset(endian) % load.p_align(endian), load_addr % load.p_align(endian));
        assert_eq!(load.p_flags(endian), elf::PF_R | elf::PF_X);
        assert_eq!(load.data(endian, data.as_slice()).expect("code"), code());

        let note = phdrs.iter().find(|p| p.p_type(endian) == elf::PT_NOTE).expect("PT_NOTE");
        let mut notes = note.notes(endian, data.as_slice()).expect("notes").expect("a note");
        let xen = notes.next().expect("parses").expect("one note");
        assert_eq!(xen.name(), b"Xen");
        assert_eq!(xen.n_type(endian), XEN_ELFNOTE_PHYS32_ENTRY);
        let desc: [u8; 4] = xen.desc().try_into().expect("a 32-bit descriptor");
        assert_eq!(u32::from_le_bytes(desc), LOAD_ADDR);
        assert!(notes.next().expect("parses").is_none(), "one note only");
    }

    #[test]
    fn code_writes_success_to_the_exit_port() {
        assert_eq!(code(), [0xb0, 0x10, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe]);
    }

    /// Boots `elf` under TCG through the launcher (QEMU is required: `cargo xtask setup`).
    fn boot(elf: &[u8]) -> mica_launch::Outcome {
        boot_on(mica_launch::GuestArch::X86_64, elf)
    }

    /// Boots `kernel` on `arch`'s machine under TCG through the launcher.
    fn boot_on(arch: mica_launch::GuestArch, kernel_bytes: &[u8]) -> mica_launch::Outcome {
        use mica_launch::{Accel, OutputMode, QemuCommand, RunOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, kernel_bytes).expect("write kernel");
        let qemu = mica_launch::find_qemu_for(arch).unwrap_or_else(|e| panic!("{e}"));
        let cmd = QemuCommand::new(qemu, &kernel, Accel::Tcg).arch(arch).cmdline("log=off");
        let options =
            RunOptions { timeout: std::time::Duration::from_secs(30), output: OutputMode::Capture { echo: false } };
        mica_launch::run::run(&cmd, &options).expect("QEMU runs")
    }

    #[test]
    fn empty_kernel_exits_with_success_under_qemu() {
        let outcome = boot(&elf());
        assert_eq!(outcome.status(), Some(33), "{}\n{}", outcome.describe(), outcome.transcript());
        assert_eq!(outcome.verdict, Some(ExitCode::Success));
    }

    #[test]
    fn arm64_empty_kernel_is_an_image_that_exits_with_success() {
        let image = arm64_image();
        assert_eq!(u32::from_le_bytes(image[56..60].try_into().unwrap()), ARM64_MAGIC);
        assert_eq!(u64::from_le_bytes(image[16..24].try_into().unwrap()), image.len() as u64);
        let outcome = boot_on(mica_launch::GuestArch::Aarch64, &image);
        assert_eq!(outcome.status(), Some(33), "{}\n{}", outcome.describe(), outcome.transcript());
        assert_eq!(outcome.verdict, Some(ExitCode::Success));
    }

    /// `-nodefaults` must leave microvm's ISA serial port on `-serial stdio`.
    #[test]
    fn serial_output_reaches_the_host() {
        // mov dx, 0x3f8; then per byte: mov al, BYTE; out dx, al; then exit like the empty kernel.
        let mut code = vec![0x66, 0xba, 0xf8, 0x03];
        for b in b"serial ok\n" {
            code.extend_from_slice(&[0xb0, *b, 0xee]);
        }
        code.extend_from_slice(&super::code());
        let outcome = boot(&pvh_elf(&code));
        assert_eq!(outcome.verdict, Some(ExitCode::Success), "{}", outcome.transcript());
        assert_eq!(outcome.serial, "serial ok\n");
    }
}
