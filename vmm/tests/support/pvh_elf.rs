//! Builds tiny PVH ELF kernels for tests: one loadable segment of 32-bit code at 1 MiB, entered
//! through a `XEN_ELFNOTE_PHYS32_ENTRY` note (or without the note, to test that it is required).

#![allow(dead_code)]

/// Where the code is loaded and entered.
pub const LOAD_ADDR: u64 = 0x10_0000;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn phdr(out: &mut Vec<u8>, kind: u32, flags: u32, offset: u64, addr: u64, size: u64, align: u64) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    for v in [offset, addr, addr, size, size, align] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An x86_64 ELF executable whose only code is `code`, loaded at [`LOAD_ADDR`]; with `pvh_note`
/// it carries the PVH entry note pointing at the code's first byte.
pub fn build(code: &[u8], pvh_note: bool) -> Vec<u8> {
    let phnum: u16 = if pvh_note { 2 } else { 1 };
    let note_offset = EHDR_SIZE + PHDR_SIZE * usize::from(phnum);
    let mut note = Vec::new();
    if pvh_note {
        note.extend_from_slice(&4u32.to_le_bytes()); // namesz
        note.extend_from_slice(&4u32.to_le_bytes()); // descsz
        note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(LOAD_ADDR as u32).to_le_bytes());
    }
    let code_offset = (note_offset + note.len()).next_multiple_of(16);

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    elf.extend_from_slice(&phnum.to_le_bytes());
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    phdr(&mut elf, PT_LOAD, 7, code_offset as u64, LOAD_ADDR, code.len() as u64, 0x1000);
    if pvh_note {
        phdr(&mut elf, PT_NOTE, 4, note_offset as u64, 0, note.len() as u64, 4);
    }
    elf.extend_from_slice(&note);
    elf.resize(code_offset, 0);
    elf.extend_from_slice(code);
    elf
}

/// 32-bit code: checks `hvm_start_info`'s magic at `[ebx]`, prints `text` on COM1, then writes
/// `exit` to port 0xf4 (or 0x11 if the magic is wrong) and halts.
pub fn hello(text: &str, exit: u8) -> Vec<u8> {
    let mut code = vec![0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33]; // cmp dword [ebx], 0x336ec578
    let mut body = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in text.bytes() {
        body.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    body.extend_from_slice(&[0xb0, exit, 0xe6, 0xf4, 0xfa, 0xf4]); // mov al, exit; out 0xf4, al; cli; hlt
    let jne = u8::try_from(body.len()).expect("short text");
    code.extend_from_slice(&[0x75, jne]); // jne bad
    code.extend_from_slice(&body);
    code.extend_from_slice(&[0xb0, 0x11, 0xe6, 0xf4, 0xfa, 0xf4]); // bad: mov al, 0x11; out 0xf4, al; cli; hlt
    code
}
