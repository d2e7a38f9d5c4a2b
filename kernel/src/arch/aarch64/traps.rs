//! Exceptions: the vector table and the report. Every exception is fatal today (interrupts come
//! with the GIC and the timer, step 6 of `docs/aarch64-plan.md`): the report names the kind, the
//! syndrome (`ESR_EL1`, decoded), the faulting address (`FAR_EL1`) and the instruction
//! (`ELR_EL1`), then the run ends "failed".

use core::fmt::{self, Write};

use mica_exit::ExitCode;

/// The registers the entry code saves, in this order.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The interrupted stack pointer.
    pub sp: u64,
    /// `ELR_EL1`: the instruction that faulted (or the one to return to).
    pub elr: u64,
    /// `SPSR_EL1`: the interrupted state.
    pub spsr: u64,
    /// `ESR_EL1`: the syndrome.
    pub esr: u64,
    /// `FAR_EL1`: the faulting address, for aborts.
    pub far: u64,
}

/// Checks that the stub installed the vectors (`VBAR_EL1`).
pub fn init() {
    let vbar: u64;
    // SAFETY: reads a register into a local.
    unsafe { core::arch::asm!("mrs {}, vbar_el1", out(reg) vbar, options(nomem, nostack, preserves_flags)) };
    log::debug!("traps: vectors at {vbar:#x}");
}

core::arch::global_asm!(
    r#"
    .macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #(36 * 8)
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       mica_exception_entry
    .endm

    .section .text.vectors, "ax"
    .balign 2048
    .global mica_vectors
mica_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

mica_exception_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    add     x1, sp, #(36 * 8)
    stp     x30, x1, [sp, #240]
    mrs     x1, elr_el1
    mrs     x2, spsr_el1
    stp     x1, x2, [sp, #256]
    mrs     x1, esr_el1
    mrs     x2, far_el1
    stp     x1, x2, [sp, #272]
    mov     x1, sp
    bl      mica_exception
1:  wfe
    b       1b
"#
);

/// Which of the sixteen vectors: where the exception came from, and its type.
fn kind(vector: u64) -> (&'static str, &'static str) {
    let from = match vector / 4 {
        0 => "EL1 on SP_EL0",
        1 => "EL1",
        2 => "EL0 (AArch64)",
        _ => "EL0 (AArch32)",
    };
    let what = match vector % 4 {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    };
    (what, from)
}

/// The syndrome's exception class, decoded.
struct Syndrome(u64);

impl fmt::Display for Syndrome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esr = self.0;
        let class = (esr >> 26) & 0x3f;
        let fault = esr & 0x3f;
        let abort = |f: &mut fmt::Formatter<'_>, what: &str| -> fmt::Result {
            let level = fault & 3;
            match fault >> 2 {
                0b0001 => write!(f, "{what} (translation fault, level {level})"),
                0b0010 => write!(f, "{what} (access flag fault, level {level})"),
                0b0011 => write!(f, "{what} (permission fault, level {level})"),
                0b0000 => write!(f, "{what} (address size fault, level {level})"),
                _ if fault == 0x21 => write!(f, "{what} (alignment fault)"),
                _ => write!(f, "{what} (fault status {fault:#x})"),
            }
        };
        match class {
            0x00 => write!(f, "undefined instruction"),
            0x01 => write!(f, "WFI/WFE trapped"),
            0x07 => write!(f, "FP/SIMD access trapped"),
            0x0e => write!(f, "illegal execution state"),
            0x15 => write!(f, "SVC"),
            0x16 => write!(f, "HVC"),
            0x18 => write!(f, "system register access trapped"),
            0x20 | 0x21 => abort(f, "instruction abort"),
            0x22 => write!(f, "PC alignment fault"),
            0x24 | 0x25 => abort(f, if esr & (1 << 6) != 0 { "data abort on a write" } else { "data abort on a read" }),
            0x26 => write!(f, "SP alignment fault"),
            0x2c => write!(f, "floating-point exception"),
            0x2f => write!(f, "SError"),
            0x3c => write!(f, "BRK instruction"),
            other => write!(f, "exception class {other:#x}"),
        }
    }
}

/// Reports an exception and ends the run.
#[unsafe(no_mangle)]
extern "C" fn mica_exception(vector: u64, frame: &TrapFrame) -> ! {
    let mut out = crate::console::EmergencyWriter::new();
    if super::qemu::exiting() {
        let _ = writeln!(out, "mica: no semihosting to carry the verdict: powering off without one (PSCI)");
        super::exit(ExitCode::Failed);
    }
    let (what, from) = kind(vector);
    let _ = writeln!(
        out,
        "EXCEPTION {what} from {from}: {} ESR={:#x} FAR={:#x} ELR={:#x} SPSR={:#x} SP={:#x}",
        Syndrome(frame.esr),
        frame.esr,
        frame.far,
        frame.elr,
        frame.spsr,
        frame.sp
    );
    for (row, regs) in frame.x.chunks(4).enumerate() {
        let _ = write!(out, " ");
        for (i, r) in regs.iter().enumerate() {
            let _ = write!(out, " x{:<2}={r:#018x}", row * 4 + i);
        }
        let _ = writeln!(out);
    }
    super::exit(ExitCode::Failed)
}
