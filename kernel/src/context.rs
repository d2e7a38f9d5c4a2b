//! Kernel-thread contexts: a thread's saved CPU state (`arch::context::Saved`: what the
//! architecture's switch keeps), the stack it runs on, and whether it is the one running.

use crate::arch::context::Saved;
use crate::mem::stacks::KernelStack;

/// A kernel thread's saved CPU state, and the stack it runs on.
pub struct Context {
    saved: Saved,
    /// The thread's own stack (`None` for the boot thread, which runs on the boot stack).
    stack: Option<KernelStack>,
    /// Whether this context is the one the CPU is executing.
    running: bool,
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Context").field("saved", &self.saved).field("running", &self.running).finish()
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
        Context { saved: Saved::current(), stack: None, running: true }
    }

    /// A new thread on `stack` that will call `entry(arg)` when first switched to. `entry` must
    /// never return (it ends the thread through the scheduler).
    pub fn new(stack: KernelStack, entry: extern "C" fn(usize) -> !, arg: usize) -> Context {
        let saved = Saved::new(&stack, entry, arg);
        Context { saved, stack: Some(stack), running: false }
    }

    /// The stack this context runs on (none for the boot context).
    pub fn stack(&self) -> Option<&KernelStack> {
        self.stack.as_ref()
    }

    /// The lowest address of the thread's own stack, if it has one (for reports).
    pub fn stack_bottom(&self) -> Option<u64> {
        self.stack.as_ref().map(KernelStack::bottom)
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
        // Interrupts are the caller's business.
        // SAFETY: `self` is the running context (saving into it is right); `to` is not running:
        // its state was made by `Saved::new` or saved by an earlier switch, on a live stack.
        unsafe { Saved::switch(&mut self.saved, &to.saved) };
        Ok(())
    }
}
