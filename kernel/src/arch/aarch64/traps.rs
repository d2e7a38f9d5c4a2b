//! Exceptions: the vector table, the IRQ path and the report.
//!
//! The kernel's threads run at EL1 on `SP_EL0` (`PSTATE.SPSel` = 0, set by the entry stub), and
//! every exception arrives on `SP_EL1`: this CPU's exception stack. A synchronous exception is
//! handled there, so that a thread that ran off its stack into the guard page is reported, not
//! faulted on again; an IRQ moves back to the interrupted thread's stack first, so that the
//! scheduler may switch threads from it. IRQs are acknowledged at the GIC and handled (the
//! timer's tick), and the interrupted code resumes with every register as it was, the FP/SIMD
//! ones included (the kernel is hard-float: any of its code may be using them). Every other
//! exception is fatal: the report names the kind, the syndrome (`ESR_EL1`, decoded), the
//! faulting address (`FAR_EL1`), the instruction (`ELR_EL1`) and the stack whose guard page
//! was hit, if one was, then the run ends "failed".

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use mica_exit::ExitCode;

/// The registers the entry code saves, in this order (816 bytes, a multiple of 16).
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
    /// `FPCR`.
    pub fpcr: u64,
    /// `FPSR`.
    pub fpsr: u64,
    /// q0..q31.
    pub q: [u128; 32],
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 816);

/// The vector of a synchronous exception taken from the kernel's threads, which run at EL1 on
/// `SP_EL0`.
const SYNC_FROM_KERNEL: u64 = 0;
/// The vector of an IRQ taken from the kernel's threads.
const IRQ_FROM_KERNEL: u64 = 1;

/// IRQs that were neither the timer's, a reschedule nor a routed device line's.
static STRAY_IRQS: AtomicU64 = AtomicU64::new(0);

/// IRQs the GIC delivered that no handler wanted (a spurious acknowledge counts too).
pub fn stray_irqs() -> u64 {
    STRAY_IRQS.load(Ordering::Relaxed)
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
    .if \kind == 1
    /* An IRQ from the kernel's threads: handled on the interrupted thread's stack (SP_EL0), so
       that the scheduler may switch threads from it. That stack is committed on demand: the
       frame's first store may fault on a page the thread has not touched yet, and the fault
       (taken on this CPU's exception stack, SP_EL1) overwrites ELR_EL1 and SPSR_EL1. So both are
       read first, with x0 and x1 kept on the exception stack meanwhile, below which the fault's
       own frame goes; a fault on the frame's stores then returns here with x0 and x1 intact. */
    sub     sp, sp, #16
    stp     x0, x1, [sp]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    msr     spsel, #0
    sub     sp, sp, #816
    stp     x0, x1, [sp, #256]
    msr     spsel, #1
    ldp     x0, x1, [sp]
    add     sp, sp, #16
    msr     spsel, #0
    .else
    sub     sp, sp, #816
    .endif
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
    /* The interrupted stack pointer: above this frame, unless the exception switched stacks
       (from a thread on SP_EL0 to this CPU's exception stack: every vector from SP_EL0 but the
       IRQ's). */
    add     x1, sp, #816
    cmp     x0, #1
    b.eq    1f
    cmp     x0, #4
    b.hs    1f
    mrs     x1, sp_el0
1:  stp     x30, x1, [sp, #240]
    /* An IRQ from a thread saved its return state in the vector already (see VECTOR). */
    cmp     x0, #1
    b.eq    2f
    mrs     x1, elr_el1
    mrs     x2, spsr_el1
    stp     x1, x2, [sp, #256]
2:  mrs     x1, esr_el1
    mrs     x2, far_el1
    stp     x1, x2, [sp, #272]
    mrs     x1, fpcr
    mrs     x2, fpsr
    stp     x1, x2, [sp, #288]
    add     x1, sp, #304
    stp     q0, q1, [x1, #0]
    stp     q2, q3, [x1, #32]
    stp     q4, q5, [x1, #64]
    stp     q6, q7, [x1, #96]
    stp     q8, q9, [x1, #128]
    stp     q10, q11, [x1, #160]
    stp     q12, q13, [x1, #192]
    stp     q14, q15, [x1, #224]
    stp     q16, q17, [x1, #256]
    stp     q18, q19, [x1, #288]
    stp     q20, q21, [x1, #320]
    stp     q22, q23, [x1, #352]
    stp     q24, q25, [x1, #384]
    stp     q26, q27, [x1, #416]
    stp     q28, q29, [x1, #448]
    stp     q30, q31, [x1, #480]
    mov     x1, sp
    bl      mica_exception
    add     x1, sp, #304
    ldp     q0, q1, [x1, #0]
    ldp     q2, q3, [x1, #32]
    ldp     q4, q5, [x1, #64]
    ldp     q6, q7, [x1, #96]
    ldp     q8, q9, [x1, #128]
    ldp     q10, q11, [x1, #160]
    ldp     q12, q13, [x1, #192]
    ldp     q14, q15, [x1, #224]
    ldp     q16, q17, [x1, #256]
    ldp     q18, q19, [x1, #288]
    ldp     q20, q21, [x1, #320]
    ldp     q22, q23, [x1, #352]
    ldp     q24, q25, [x1, #384]
    ldp     q26, q27, [x1, #416]
    ldp     q28, q29, [x1, #448]
    ldp     q30, q31, [x1, #480]
    ldp     x1, x2, [sp, #288]
    msr     fpcr, x1
    msr     fpsr, x2
    ldp     x1, x2, [sp, #256]
    msr     elr_el1, x1
    msr     spsr_el1, x2
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #816
    eret
"#
);

/// An IRQ: each pending interrupt acknowledged and handed to the kernel's policy
/// (`interrupts.rs`), which ends it at the GIC (through the closure) before it may switch threads.
fn irq() {
    while let Some(acknowledged) = super::gic::acknowledge() {
        // A GICv2 SGI's acknowledge value carries the sending CPU in bits 10 to 12, which the
        // end of the interrupt must name again; the INTID is bits 0 to 9.
        let end = move || super::gic::end(acknowledged);
        let intid = acknowledged & 0x3ff;
        if Some(intid) == super::timer_intid() {
            super::clock::rearm();
            crate::interrupts::on_timer(end);
        } else if intid == super::gic::RESCHEDULE_SGI {
            crate::interrupts::on_reschedule(end);
        } else if intid == super::gic::STOP_SGI {
            end();
            if crate::panic::stopping() {
                crate::panic::park_this_cpu();
            }
        } else if let Some(slot) = super::irq::slot_of(intid) {
            crate::interrupts::on_device(slot, end);
        } else {
            STRAY_IRQS.fetch_add(1, Ordering::Relaxed);
            end();
        }
    }
}

/// A synchronous exception from a kernel thread the kernel may resolve: a page fault its policy
/// serves (`interrupts::resolve_page_fault`: a committed page's first touch, copy-on-write), after
/// which the access runs again; or a fault in wasm code, which goes on, on the faulting thread's
/// stack, in `wasm::traps::on_fault` (Wasmtime unwinds the call from there). Returns whether it
/// did either.
fn resolve(frame: &mut TrapFrame) -> bool {
    let class = (frame.esr >> 26) & 0x3f;
    let abort = matches!(class, 0x20 | 0x21 | 0x24 | 0x25);
    if abort {
        let status = frame.esr & 0x3f;
        // Translation faults: not mapped; permission faults: mapped, but not for this access.
        let present = status >> 2 == 0b0011;
        let write = matches!(class, 0x24 | 0x25) && frame.esr & (1 << 6) != 0;
        if (status >> 2 == 0b0001 || present) && crate::interrupts::resolve_page_fault(frame.far, present, write) {
            return true;
        }
    }
    // A data or instruction abort, an undefined instruction (Cranelift's traps are `udf`) or a
    // `brk`, at an instruction Wasmtime compiled.
    if (abort || matches!(class, 0x00 | 0x3c)) && crate::wasm::traps::is_wasm_code(frame.elr) {
        let addr = if matches!(class, 0x24 | 0x25) { frame.far } else { u64::MAX };
        let fault: extern "C" fn(u64, u64, u64, u64) -> ! = crate::wasm::traps::on_fault;
        frame.x[0] = frame.elr;
        frame.x[1] = frame.x[29];
        frame.x[2] = addr;
        frame.x[3] = class;
        frame.x[30] = frame.elr;
        frame.elr = fault as usize as u64;
        return true;
    }
    false
}

/// Which of the sixteen vectors: where the exception came from, and its type.
fn kind(vector: u64) -> (&'static str, &'static str) {
    let from = match vector / 4 {
        0 => "EL1",
        1 => "EL1 on the exception stack",
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

/// Handles an IRQ from a kernel thread, or a synchronous exception the kernel resolves, and
/// returns to it; reports any other exception and ends the run.
#[unsafe(no_mangle)]
extern "C" fn mica_exception(vector: u64, frame: &mut TrapFrame) {
    if vector == IRQ_FROM_KERNEL {
        irq();
        return;
    }
    if vector == SYNC_FROM_KERNEL && resolve(frame) {
        return;
    }
    fatal(vector, frame)
}

/// Reports an exception and ends the run.
fn fatal(vector: u64, frame: &TrapFrame) -> ! {
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
    let class = (frame.esr >> 26) & 0x3f;
    if matches!(class, 0x24 | 0x25)
        && let Some(stack) = crate::mem::stacks::guard_page_owner(frame.far)
    {
        let _ = writeln!(out, "  kernel stack overflow: hit the guard page below the '{stack}' stack");
    }
    for (row, regs) in frame.x.chunks(4).enumerate() {
        let _ = write!(out, " ");
        for (i, r) in regs.iter().enumerate() {
            let _ = write!(out, " x{:<2}={r:#018x}", row * 4 + i);
        }
        let _ = writeln!(out);
    }
    super::exit(ExitCode::Failed)
}
