//! The kernel's side of Wasmtime's trap interface (`custom-native-signals`).
//!
//! With guard regions, wasm code has no explicit bounds checks: a load or store past the end of
//! its memory faults (a page fault, a data abort), a trapping instruction raises an undefined
//! instruction exception (`ud2`, `udf`), and on x86 an integer division by zero raises #DE. The
//! exception path (`arch::traps`) sees that the faulting instruction lies in the
//! wasm region and, instead of reporting a kernel fault, returns from the exception into
//! [`on_fault`] on the faulting thread's own stack, with its interrupt state restored. There
//! Wasmtime's handler, registered through [`wasmtime_init_traps`], finds the trap and unwinds to
//! the call's entry; it never returns for a wasm trap. Faults anywhere else, the kernel's own
//! among them, never come here and are reported as kernel faults.

use core::sync::atomic::{AtomicUsize, Ordering};

use mica_exit::ExitCode;

/// Wasmtime's trap handler: `handler(pc, fp, has_faulting_addr, faulting_addr)`.
pub type TrapHandler = extern "C" fn(usize, usize, bool, usize);

/// The handler Wasmtime registered (0: none yet).
static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Registers Wasmtime's trap handler (`wasmtime_init_traps` in `wasmtime-platform.h`).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_init_traps(handler: TrapHandler) -> i32 {
    HANDLER.store(handler as usize, Ordering::Release);
    0
}

/// Whether a fault at instruction `pc` is one for Wasmtime: code in the wasm region is code it
/// compiled, and nothing else is there.
pub fn is_wasm_code(pc: u64) -> bool {
    super::vmem::in_wasm_region(pc) && HANDLER.load(Ordering::Acquire) != 0
}

/// Runs on the faulting thread's stack after a fault at `pc` in wasm code (frame pointer `fp`;
/// `addr` the faulting address for a page fault, else `u64::MAX`; `vector` the exception: x86's
/// vector, aarch64's exception class).
/// Wasmtime's handler unwinds to the wasm call's entry and does not return; if it does, the
/// fault was not one it expects there (no wasm call on this thread, or an instruction with no
/// trap recorded), and it is reported as a kernel fault.
pub extern "C" fn on_fault(pc: u64, fp: u64, addr: u64, vector: u64) -> ! {
    let handler = HANDLER.load(Ordering::Acquire);
    if handler != 0 {
        // SAFETY: `handler` was stored from a `TrapHandler` by `wasmtime_init_traps`, and a
        // function pointer is never 0.
        let handler: TrapHandler = unsafe { core::mem::transmute::<usize, TrapHandler>(handler) };
        handler(pc as usize, fp as usize, addr != u64::MAX, addr as usize);
    }
    crate::kprintln!(
        "EXCEPTION {vector} at {pc:#x} in the wasm region (fault address {addr:#x}), \
         but Wasmtime does not take it as a trap of a running wasm call"
    );
    crate::arch::exit(ExitCode::Failed)
}
