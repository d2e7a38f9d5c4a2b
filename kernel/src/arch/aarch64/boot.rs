//! The entry: a Linux arm64 `Image` header, then a stub that records the counter, leaves EL2 for
//! EL1 if entered there, enables FP/SIMD (the kernel is a hard-float target: its Rust code uses
//! the vector registers anywhere), clears `.bss`, turns the MMU on over an identity map of the
//! low 64 GiB (device memory below 1 GiB, normal cacheable memory above: `virt` puts RAM at
//! 1 GiB), and enters Rust on the boot stack (`SP_EL0`; exceptions arrive on `SP_EL1`, the
//! exception stack) with the device tree's address.
//!
//! The loader (QEMU's `-kernel`, or any boot loader that follows Linux's arm64 booting protocol)
//! enters at the first byte with the MMU off and `x0` holding the device tree's physical address.

use core::sync::atomic::{AtomicU64, Ordering};

/// The generic counter at the kernel's first instruction. In `.data` (its initial value is not
/// zero) so that the stub can store it before clearing `.bss`.
#[unsafe(no_mangle)]
static BOOT_COUNTER: AtomicU64 = AtomicU64::new(u64::MAX);

/// The exception level the loader entered the kernel at (1 or 2).
#[unsafe(no_mangle)]
static BOOT_EL: AtomicU64 = AtomicU64::new(u64::MAX);

/// The device tree's physical address, as the loader passed it in `x0`.
#[unsafe(no_mangle)]
static BOOT_DTB: AtomicU64 = AtomicU64::new(u64::MAX);

/// [`super::clock::counter`] at the kernel's very first instruction.
pub fn boot_counter() -> u64 {
    BOOT_COUNTER.load(Ordering::Relaxed)
}

/// The exception level the loader entered the kernel at (the kernel runs at EL1 either way).
pub fn entry_el() -> u64 {
    BOOT_EL.load(Ordering::Relaxed)
}

/// The device tree's physical address.
pub fn dtb_address() -> u64 {
    BOOT_DTB.load(Ordering::Relaxed)
}

core::arch::global_asm!(
    r#"
    /* sp = the address of the GuardedStack `stack` + `top` (its guard page and size). */
    .macro STACK_TOP stack, top
    adrp    x1, \stack
    add     x1, x1, :lo12:\stack
    movz    x2, #(\top & 0xffff)
    movk    x2, #(\top >> 16), lsl #16
    add     x1, x1, x2
    mov     sp, x1
    .endm

    .section .text.boot, "ax"
    .global _start
_start:
    /* The Linux arm64 Image header (Documentation/arch/arm64/booting.rst). */
    b       1f                      /* code0: jump over the header */
    .long   0                       /* code1 */
    .quad   0x200000                /* text_offset: 2 MiB above the start of RAM */
    .quad   __kernel_size           /* image_size, .bss included */
    .quad   0x2                     /* flags: little-endian, 4 KiB pages, near the start of RAM */
    .quad   0                       /* res2 */
    .quad   0                       /* res3 */
    .quad   0                       /* res4 */
    .long   0x644d5241              /* magic: "ARM\x64" */
    .long   0                       /* res5 */

1:  mrs     x20, cntvct_el0
    mov     x19, x0

    /* Entered at EL2 (a machine with virtualization on): run the kernel at EL1, with the
       counters and timers its own. */
    mrs     x1, CurrentEL
    lsr     x21, x1, #2
    cmp     x21, #2
    b.ne    2f
    mov     x1, #0x80000000         /* HCR_EL2.RW: EL1 is AArch64 */
    msr     hcr_el2, x1
    mrs     x1, cnthctl_el2
    orr     x1, x1, #3              /* EL1PCTEN | EL1PCEN */
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    mov     x1, #0x3c5              /* EL1h, interrupts masked */
    msr     spsr_el2, x1
    adr     x1, 2f
    msr     elr_el2, x1
    eret
2:  mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #1
    b.ne    9f                      /* EL3 or EL0: not a place Mica can start from */

    /* FP/SIMD on: CPACR_EL1.FPEN = 0b11. */
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    /* No per-CPU data yet (its reset value is unknown): `percpu::index` reads 0 as CPU 0. */
    msr     tpidr_el1, xzr

    adrp    x1, BOOT_COUNTER
    str     x20, [x1, :lo12:BOOT_COUNTER]
    adrp    x1, BOOT_DTB
    str     x19, [x1, :lo12:BOOT_DTB]
    adrp    x1, BOOT_EL
    str     x21, [x1, :lo12:BOOT_EL]

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b

4:  /* MAIR: attribute 0 device nGnRE, attribute 1 normal write-back. */
    mov     x1, #0xff04
    msr     mair_el1, x1
    /* TCR: 48-bit TTBR0 space, 4 KiB granule, inner-shareable write-back walks, TTBR1 walks
       off; the physical address size is what the CPU has. */
    movz    x1, #0x3510
    movk    x1, #0x80, lsl #16
    mrs     x2, id_aa64mmfr0_el1
    and     x2, x2, #0xf
    bfi     x1, x2, #32, #3
    msr     tcr_el1, x1
    adrp    x1, boot_l0
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    /* SCTLR: MMU, data and instruction caches, stack alignment check; the RES1 bits. */
    movz    x1, #0x180d
    movk    x1, #0x30d0, lsl #16
    msr     sctlr_el1, x1
    isb

    adrp    x1, mica_vectors
    add     x1, x1, :lo12:mica_vectors
    msr     vbar_el1, x1
    /* The stacks, each above its guard page, which the kernel's own page tables leave
       unmapped: exceptions arrive on SP_EL1, this CPU's exception stack; the kernel runs on
       SP_EL0, from here on the boot stack (traps.rs). */
    msr     spsel, #1
    STACK_TOP {exception_stack}, {exception_top}
    msr     spsel, #0
    STACK_TOP {boot_stack}, {stack_top}
    isb
    mov     x0, x19
    bl      mica_aarch64_start
9:  wfe
    b       9b

    /* Another CPU, started by PSCI CPU_ON with its MMU off: the boot CPU's translation settings
       and the stacks it made, from MICA_AP_START (smp.rs); then Rust. */
    .global mica_aarch64_ap_entry
mica_aarch64_ap_entry:
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #2
    b.ne    5f
    mov     x1, #0x80000000
    msr     hcr_el2, x1
    mrs     x1, cnthctl_el2
    orr     x1, x1, #3
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    mov     x1, #0x3c5
    msr     spsr_el2, x1
    adr     x1, 5f
    msr     elr_el2, x1
    eret
5:  mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    msr     tpidr_el1, xzr
    adrp    x9, MICA_AP_START
    add     x9, x9, :lo12:MICA_AP_START
    ldr     x1, [x9, #0]
    msr     mair_el1, x1
    ldr     x1, [x9, #8]
    msr     tcr_el1, x1
    ldr     x1, [x9, #16]
    msr     ttbr0_el1, x1
    msr     ttbr1_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, [x9, #24]
    msr     sctlr_el1, x1
    isb
    adrp    x1, mica_vectors
    add     x1, x1, :lo12:mica_vectors
    msr     vbar_el1, x1
    msr     spsel, #1
    ldr     x1, [x9, #32]
    mov     sp, x1
    msr     spsel, #0
    ldr     x1, [x9, #40]
    mov     sp, x1
    ldr     x0, [x9, #48]
    isb
    bl      mica_aarch64_ap_start
6:  wfe
    b       6b

    /* The boot map: one level-0 entry for the low 512 GiB, 1 GiB blocks below it. */
    .section .data.boot_page_tables, "aw"
    .balign 4096
boot_l0:
    .quad   boot_l1 + 0x3           /* table */
    .fill   511, 8, 0
    .balign 4096
boot_l1:
    /* 0..1 GiB: devices (GIC, UART, virtio-mmio on virt): device memory, never executable. */
    .quad   0x0060000000000401
    .set    gib, 1
    .rept   63
    /* RAM: normal memory, inner shareable, accessed. */
    .quad   (gib << 30) | 0x705
    .set    gib, gib + 1
    .endr
    .fill   448, 8, 0
"#,
    boot_stack = sym super::stacks::BOOT_STACK,
    stack_top = const super::stacks::BOOT_STACK_SIZE + crate::mem::stacks::GUARD_SIZE,
    exception_stack = sym super::stacks::EXCEPTION_STACK,
    exception_top = const super::stacks::EXCEPTION_STACK_SIZE + crate::mem::stacks::GUARD_SIZE,
);

unsafe extern "C" {
    /// The entry of the other CPUs (above).
    fn mica_aarch64_ap_entry();
}

/// The physical address PSCI `CPU_ON` starts another CPU at (the kernel runs identity-mapped).
pub fn ap_entry_address() -> u64 {
    mica_aarch64_ap_entry as *const () as u64
}

/// The first Rust code, on the boot stack with the MMU on and interrupts masked.
#[unsafe(no_mangle)]
extern "C" fn mica_aarch64_start(dtb: u64) -> ! {
    crate::kmain::start(dtb)
}
