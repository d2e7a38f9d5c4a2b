//! The PVH entry: a 32-bit stub that records the TSC, clears `.bss`, checks for long mode, builds
//! an identity map of the first 4 GiB with 2 MiB pages, enables PAE, long mode, NX (when the CPU
//! has it), write protection and SSE, and enters 64-bit Rust on the boot stack.
//!
//! QEMU (and any PVH loader) finds the entry through the `XEN_ELFNOTE_PHYS32_ENTRY` note and
//! enters it in 32-bit protected mode with paging off and `%ebx` pointing at `hvm_start_info`.

use core::sync::atomic::{AtomicU64, Ordering};

use super::stacks::{BOOT_STACK, BOOT_STACK_SIZE};

/// The TSC at the kernel's first instruction. Lives in `.data` (its initial value is not zero) so
/// that the stub can store it before clearing `.bss`.
#[unsafe(no_mangle)]
static BOOT_TSC: AtomicU64 = AtomicU64::new(u64::MAX);

/// The TSC value the stub read as the kernel's very first instruction.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// [`super::clock::counter`] at the kernel's very first instruction.
pub fn boot_counter() -> u64 {
    boot_tsc()
}

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                     /* namesz */
    .long 4                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .bss.boot_page_tables, "aw", @nobits
    .balign 4096
    .global mica_boot_pml4      /* the APs' trampoline uses this identity map too (smp.rs) */
mica_boot_pml4:
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4

    .section .rodata.boot, "a", @progbits
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 64-bit code, selector 0x08 */
    .quad 0x00cf92000000ffff    /* data, selector 0x10 */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
no_long_mode_msg:
    .asciz "mica: this CPU has no 64-bit long mode; Mica needs x86_64\n"

    .section .text.boot, "ax", @progbits
    .code32
    .global pvh_start
pvh_start:
    rdtsc                       /* first instruction: the boot benchmark counts from here */
    movl %eax, BOOT_TSC
    movl %edx, BOOT_TSC + 4
    movl %ebx, %esi             /* hvm_start_info */
    cld
    movl $__bss_start, %edi     /* both ends page-aligned (linker.ld): clear 4 bytes a time */
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb 90f
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx               /* LM */
    jnc 90f
    movl %edx, %ebp             /* bit 20: NX */

    movl $boot_pdpt + 3, %eax   /* PML4[0] -> PDPT, present + writable */
    movl %eax, boot_pml4
    movl $boot_pd + 3, %eax     /* PDPT[0..4] -> the four page directories */
    movl $boot_pdpt, %edi
    movl $4, %ecx
1:  movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b
    movl $0x83, %eax            /* 2 MiB pages: present + writable + huge */
    xorl %ecx, %ecx
2:  movl %eax, boot_pd(,%ecx,8)
    addl $0x200000, %eax
    incl %ecx
    cmpl $2048, %ecx
    jb 2b

    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax            /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $0xc0000080, %ecx      /* EFER */
    rdmsr
    orl $0x100, %eax            /* LME */
    btl $20, %ebp
    jnc 3f
    orl $0x800, %eax            /* NXE */
3:  wrmsr
    movl %cr0, %eax
    andl $0xfffffffb, %eax      /* clear EM */
    orl $0x80010003, %eax       /* PG | WP | MP | PE */
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $4f

90: movl $no_long_mode_msg, %esi
    movw $0x3f8, %dx
91: lodsb
    testb %al, %al
    jz 92f
    outb %al, %dx
    jmp 91b
92: movb ${failed}, %al
    outb %al, ${exit_port}
93: cli
    hlt
    jmp 93b

    .code64
4:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    leaq {stack} + {stack_size}(%rip), %rsp
    xorl %ebp, %ebp
    movl %esi, %edi             /* hvm_start_info, zero-extended: first argument */
    call {entry}
5:  cli
    hlt
    jmp 5b
"#,
    stack = sym BOOT_STACK,
    stack_size = const BOOT_STACK_SIZE + crate::mem::stacks::GUARD_SIZE,
    entry = sym kernel_entry,
    failed = const mica_exit::ExitCode::Failed.code(),
    exit_port = const mica_exit::ISA_DEBUG_EXIT_PORT,
    options(att_syntax)
);

/// The first Rust code: called by the stub on the boot stack with the PVH start info's address.
extern "C" fn kernel_entry(start_info: u64) -> ! {
    crate::kmain::start(start_info)
}
