//! Kernel-thread contexts and the switch between them.
//!
//! A thread that is not running is its stack pointer (`SP_EL0`, where threads run): the
//! callee-saved registers of the AAPCS64 (`x19`-`x28`, the frame pointer `x29`, the link register
//! `x30`, the low halves `d8`-`d15` of `v8`-`v15`) and the FP control and status registers (a
//! thread's rounding mode is its own) are on its stack. Everything caller-saved is saved by the
//! compiler around the call to [`Context::switch`], as around any call; a thread preempted by an
//! IRQ has the rest of its registers in the exception frame below (`traps.rs`).
//!
//! A new thread starts in [`thread_start`] with its entry function in `x20` and its argument in
//! `x19`, on a [`KernelStack`] it owns.

use crate::mem::stacks::KernelStack;

/// Bytes [`switch_stacks`] keeps on a stack: twelve general registers, eight FP registers, FPCR
/// and FPSR (a multiple of 16, as `sp` must stay).
const SWITCH_FRAME: usize = 176;

/// A kernel thread's saved CPU state, and the stack it runs on.
pub struct Context {
    /// The saved stack pointer; meaningful only while the thread is not running.
    sp: u64,
    /// The thread's own stack (`None` for the boot thread, which runs on the boot stack).
    stack: Option<KernelStack>,
    /// Whether this context is the one the CPU is executing.
    running: bool,
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Context").field("sp", &format_args!("{:#x}", self.sp)).field("running", &self.running).finish()
    }
}

/// What [`Context::switch`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchError {
    /// The context switched away from is not the running one.
    FromNotRunning,
    /// The context switched to is already running.
    ToRunning,
}

impl Context {
    /// The context of the code running now (the boot thread): filled in when it is switched
    /// away from.
    pub fn current() -> Context {
        Context { sp: 0, stack: None, running: true }
    }

    /// The stack this context runs on (none for the boot context).
    pub fn stack(&self) -> Option<&KernelStack> {
        self.stack.as_ref()
    }

    /// A new thread on `stack` that will call `entry(arg)` when first switched to. `entry` must
    /// never return (it ends the thread through the scheduler).
    pub fn new(stack: KernelStack, entry: extern "C" fn(usize) -> !, arg: usize) -> Context {
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
            // SAFETY: `sp..top` lies in the mapped, writable stack this context now owns and no
            // one else uses; the slots are 8-byte aligned.
            unsafe { words.add(i).write(*word) };
        }
        Context { sp, stack: Some(stack), running: false }
    }

    /// Saves the running thread's state into `self` and resumes `to`. Returns when some other
    /// thread switches back to `self`.
    pub fn switch(&mut self, to: &mut Context) -> Result<(), SwitchError> {
        if !self.running {
            return Err(SwitchError::FromNotRunning);
        }
        if to.running {
            return Err(SwitchError::ToRunning);
        }
        self.running = false;
        to.running = true;
        // SAFETY: `self` is the running context, so saving into it is right; `to` is not running,
        // so its `sp` was either built by `Context::new` on a stack it owns or saved by an earlier
        // switch away from it, and its stack is alive (owned by `to`, or the boot stack).
        // Interrupts are the caller's business; the switch is a plain call that preserves the
        // callee-saved registers.
        unsafe { switch_stacks(&raw mut self.sp, to.sp) };
        Ok(())
    }

    /// The lowest address of the thread's own stack, if it has one (for reports).
    pub fn stack_bottom(&self) -> Option<u64> {
        self.stack.as_ref().map(KernelStack::bottom)
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
