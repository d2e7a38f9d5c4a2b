//! The switch between kernel threads (`crate::context` holds the rest of a context).
//!
//! A thread that is not running is its stack pointer (`SP_EL0`, where threads run): the
//! callee-saved registers of the AAPCS64 (`x19`-`x28`, the frame pointer `x29`, the link register
//! `x30`, the low halves `d8`-`d15` of `v8`-`v15`) and the FP control and status registers (a
//! thread's rounding mode is its own) are on its stack. Everything caller-saved is saved by the
//! compiler around the call to [`Saved::switch`], as around any call; a thread preempted by an
//! IRQ has the rest of its registers in the exception frame below (`traps.rs`).
//!
//! A new thread starts in [`thread_start`] with its entry function in `x20` and its argument in
//! `x19`, on a [`KernelStack`] it owns.

use crate::mem::stacks::KernelStack;

/// Bytes [`switch_stacks`] keeps on a stack: twelve general registers, eight FP registers, FPCR
/// and FPSR (a multiple of 16, as `sp` must stay).
const SWITCH_FRAME: usize = 176;

/// What a thread that is not running keeps: its stack pointer (the rest is on its stack).
pub struct Saved {
    sp: u64,
}

impl core::fmt::Debug for Saved {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "sp={:#x}", self.sp)
    }
}

impl Saved {
    /// The state of the code running now: filled in when it is switched away from.
    pub fn current() -> Saved {
        Saved { sp: 0 }
    }

    /// A new thread on `stack` that calls `entry(arg)` when first switched to.
    pub fn new(stack: &KernelStack, entry: extern "C" fn(usize) -> !, arg: usize) -> Saved {
        // The initial frame, loaded by the tail of `switch_stacks`: x19 = the argument, x20 = the
        // entry, x30 = `thread_start` (where its `ret` goes), the rest zero (x29 ends the frame
        // chain; FPCR zero is round-to-nearest with no traps).
        let top = stack.top() & !0xf;
        let sp = top - SWITCH_FRAME as u64;
        let mut frame = [0u64; SWITCH_FRAME / 8];
        frame[0] = arg as u64;
        frame[1] = entry as usize as u64;
        frame[11] = thread_start as *const () as usize as u64;
        let words = sp as *mut u64;
        for (i, word) in frame.iter().enumerate() {
            // SAFETY: `sp..top` lies in the mapped, writable stack the new thread will own and no
            // one else uses; the slots are 8-byte aligned.
            unsafe { words.add(i).write(*word) };
        }
        Saved { sp }
    }

    /// Saves the running thread's state into `from` and resumes `to`.
    ///
    /// # Safety
    /// `from` belongs to the running thread; `to` was made by [`Saved::new`] or saved by this
    /// function, and its stack is alive.
    pub unsafe fn switch(from: &mut Saved, to: &Saved) {
        // SAFETY: as the caller promises; the switch is a plain call that preserves the
        // callee-saved registers.
        unsafe { switch_stacks(&raw mut from.sp, to.sp) };
    }
}

/// Saves the callee-saved registers, FPCR and FPSR on the stack, stores `sp` into `*save_sp`,
/// loads `load_sp`, restores what that stack holds and returns into the thread that owns it.
///
/// # Safety
/// `save_sp` must be writable; `load_sp` must be a stack prepared by [`Context::new`] or saved by
/// this function.
#[unsafe(naked)]
unsafe extern "C" fn switch_stacks(save_sp: *mut u64, load_sp: u64) {
    core::arch::naked_asm!(
        "sub sp, sp, #176",
        "stp x19, x20, [sp, #0]",
        "stp x21, x22, [sp, #16]",
        "stp x23, x24, [sp, #32]",
        "stp x25, x26, [sp, #48]",
        "stp x27, x28, [sp, #64]",
        "stp x29, x30, [sp, #80]",
        "stp d8, d9, [sp, #96]",
        "stp d10, d11, [sp, #112]",
        "stp d12, d13, [sp, #128]",
        "stp d14, d15, [sp, #144]",
        "mrs x9, fpcr",
        "mrs x10, fpsr",
        "stp x9, x10, [sp, #160]",
        "mov x9, sp",
        "str x9, [x0]",
        "mov sp, x1",
        "ldp x9, x10, [sp, #160]",
        "msr fpcr, x9",
        "msr fpsr, x10",
        "ldp d14, d15, [sp, #144]",
        "ldp d12, d13, [sp, #128]",
        "ldp d10, d11, [sp, #112]",
        "ldp d8, d9, [sp, #96]",
        "ldp x29, x30, [sp, #80]",
        "ldp x27, x28, [sp, #64]",
        "ldp x25, x26, [sp, #48]",
        "ldp x23, x24, [sp, #32]",
        "ldp x21, x22, [sp, #16]",
        "ldp x19, x20, [sp, #0]",
        "add sp, sp, #176",
        "ret",
    );
}

/// Where a new thread begins: calls its entry (`x20`) with its argument (`x19`); the entry never
/// returns.
#[unsafe(naked)]
extern "C" fn thread_start() -> ! {
    core::arch::naked_asm!("mov x0, x19", "blr x20", "udf #0");
}
