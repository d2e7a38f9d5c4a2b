//! The switch between kernel threads (`crate::context` holds the rest of a context).
//!
//! A thread that is not running is its stack pointer (the callee-saved registers `rbx`, `rbp`,
//! `r12`–`r15` and the return address are on its stack) plus its vector state: x87/SSE with
//! `fxsave64`, or, when the kernel enabled AVX state (`cpu::enable_avx_state`), x87/SSE/AVX with
//! `xsave64` (standard format) into the same 64-byte-aligned area. Everything caller-saved is
//! saved by the compiler around the call to [`Saved::switch`], as around any call.
//!
//! A new thread starts in [`thread_start`] with its entry function in `r12` and its argument in
//! `r13`, on a [`KernelStack`] it owns.

use alloc::boxed::Box;

use super::cpu;
use crate::mem::stacks::KernelStack;

/// The `fxsave64` area (x87, MMX and SSE registers, MXCSR; 512 bytes), or the `xsave64` area
/// (that, a 64-byte header, and the upper halves of the YMM registers).
#[repr(C, align(64))]
struct FpuArea([u8; cpu::XSAVE_AREA_BYTES]);

impl FpuArea {
    /// The power-on state: x87 control word 0x37f, MXCSR 0x1f80 (all exceptions masked),
    /// registers zero; for `xrstor64`, an XSAVE header of zeros (every component in its initial
    /// state, standard format).
    fn initial() -> Box<FpuArea> {
        let mut area = Box::new(FpuArea([0; cpu::XSAVE_AREA_BYTES]));
        area.0[0..2].copy_from_slice(&0x037f_u16.to_le_bytes());
        area.0[24..28].copy_from_slice(&0x1f80_u32.to_le_bytes());
        // MXCSR_MASK: zero means the default mask 0xffbf.
        area
    }
}

/// What a thread that is not running keeps: its stack pointer (callee-saved registers and the
/// return address are on its stack) and its vector state.
pub struct Saved {
    rsp: u64,
    fpu: Box<FpuArea>,
}

impl core::fmt::Debug for Saved {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "rsp={:#x}", self.rsp)
    }
}

impl Saved {
    /// The state of the code running now: filled in when it is switched away from.
    pub fn current() -> Saved {
        Saved { rsp: 0, fpu: FpuArea::initial() }
    }

    /// A new thread on `stack` that calls `entry(arg)` when first switched to.
    pub fn new(stack: &KernelStack, entry: extern "C" fn(usize) -> !, arg: usize) -> Saved {
        // The initial frame, popped by the tail of `switch_stacks`: r15, r14, r13, r12, rbx, rbp,
        // then the return address. It sits so that `rsp` is 16-byte aligned after the `ret`, as
        // `thread_start` expects before its call.
        let top = stack.top() & !0xf;
        let frame: [u64; 7] =
            [0, 0, arg as u64, entry as usize as u64, 0, 0, thread_start as *const () as usize as u64];
        let rsp = top - size_of_val(&frame) as u64;
        let words = rsp as *mut u64;
        for (i, word) in frame.iter().enumerate() {
            // SAFETY: `rsp..top` lies in the mapped, writable stack the new thread will own and no
            // one else uses; the slots are 8-byte aligned.
            unsafe { words.add(i).write(*word) };
        }
        Saved { rsp, fpu: FpuArea::initial() }
    }

    /// Saves the running thread's state into `from` and resumes `to`.
    ///
    /// # Safety
    /// `from` belongs to the running thread; `to` was made by [`Saved::new`] or saved by this
    /// function, and its stack is alive.
    pub unsafe fn switch(from: &mut Saved, to: &Saved) {
        // Both FPU areas are 64-byte aligned boxes of `XSAVE_AREA_BYTES`, enough for the
        // `xsave64` image of the state XCR0 enables (checked by `enable_avx_state`), and hold
        // valid images (the initial one, or one saved by the same instruction, since the XSAVE
        // choice is made once before any thread exists).
        // SAFETY: as above and as the caller promises; the switch is a plain call that preserves
        // the callee-saved registers.
        unsafe {
            let (save, load) = (from.fpu.0.as_mut_ptr(), to.fpu.0.as_ptr());
            switch_stacks(&raw mut from.rsp, to.rsp, save, load, u64::from(cpu::avx_state_enabled()));
        }
    }
}

/// Saves callee-saved registers and vector state, stores `rsp` into `*save_rsp`, loads `load_rsp`
/// and the vector state at `load_fpu`, and returns into the thread that owns that stack. The
/// vector state goes with `fxsave64`/`fxrstor64`, or, when `xsave` is non-zero, with
/// `xsave64`/`xrstor64` of every component XCR0 enables (x87, SSE, AVX).
///
/// # Safety
/// `save_rsp` and `save_fpu` must be writable; `load_rsp` must be a stack prepared by
/// [`Context::new`] or saved by this function, and `load_fpu` a valid image for the chosen
/// instruction (64-byte aligned and large enough for XSAVE's).
#[unsafe(naked)]
unsafe extern "C" fn switch_stacks(
    save_rsp: *mut u64,
    load_rsp: u64,
    save_fpu: *mut u8,
    load_fpu: *const u8,
    xsave: u64,
) {
    core::arch::naked_asm!(
        // XSAVE takes its component mask in edx:eax, so the save area moves to r9 first. r8 (the
        // `xsave` flag) and r9 are caller-saved and untouched by the stack switch.
        "mov r9, rdx",
        "test r8, r8",
        "jz 2f",
        "mov eax, -1",
        "mov edx, -1",
        "xsave64 [r9]",
        "jmp 3f",
        "2:",
        "fxsave64 [r9]",
        "3:",
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "test r8, r8",
        "jz 4f",
        "mov eax, -1",
        "mov edx, -1",
        "xrstor64 [rcx]",
        "jmp 5f",
        "4:",
        "fxrstor64 [rcx]",
        "5:",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    );
}

/// Where a new thread begins: calls its entry (`r12`) with its argument (`r13`); the entry never
/// returns.
#[unsafe(naked)]
extern "C" fn thread_start() -> ! {
    core::arch::naked_asm!("mov rdi, r13", "call r12", "ud2");
}
