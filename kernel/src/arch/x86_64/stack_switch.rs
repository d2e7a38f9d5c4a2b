//! Running a closure on another kernel stack (components get a large stack of their own; the
//! boot stack is small).

use super::stacks::KernelStack;

extern "C" fn trampoline(f: *mut &mut dyn FnMut()) {
    // SAFETY: `run_on` passes a pointer to a live `&mut dyn FnMut()` on its own frame, which
    // outlives this call.
    let f = unsafe { &mut *f };
    f();
}

/// Runs `f` on `stack`, then returns to the current stack.
pub fn run_on(stack: &KernelStack, mut f: impl FnMut()) {
    let mut f: &mut dyn FnMut() = &mut f;
    let top = stack.top() & !0xf;
    // SAFETY: `top` is the aligned top of a mapped, unused stack that outlives the call; the old
    // rsp is saved on it and restored after; the trampoline is C ABI, caller-saved regs clobbered.
    unsafe {
        core::arch::asm!(
            "mov rax, rsp",
            "mov rsp, {top}",
            "push rax",
            "sub rsp, 8",
            "call {trampoline}",
            "add rsp, 8",
            "pop rsp",
            top = in(reg) top,
            out("rax") _,
            trampoline = sym trampoline,
            in("rdi") &raw mut f,
            clobber_abi("C"),
        );
    }
}
