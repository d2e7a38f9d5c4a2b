//! The end of a run: the verdict to QEMU through semihosting `SYS_EXIT`, whose exit status is
//! the same as x86_64's `isa-debug-exit` gives (`ExitCode::qemu_status`), so the host reads both
//! alike. Without semihosting, the machine powers off through PSCI and the verdict is lost; the
//! console has it.

use core::sync::atomic::{AtomicBool, Ordering};

use mica_exit::ExitCode;

/// Semihosting's `SYS_EXIT`.
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: `SYS_EXIT`'s reason for a program's own exit with a status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;
/// PSCI 0.2 `SYSTEM_OFF`.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

static EXITING: AtomicBool = AtomicBool::new(false);

/// Whether the run is ending (an exception now is the semihosting call QEMU did not answer).
pub fn exiting() -> bool {
    EXITING.load(Ordering::SeqCst)
}

/// Ends the run with `code`.
pub fn exit(code: ExitCode) -> ! {
    super::disable_interrupts();
    if !EXITING.swap(true, Ordering::SeqCst) {
        let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code.qemu_status() as u64];
        // SAFETY: the semihosting call reads the two-word block, which lives across it; QEMU
        // with semihosting ends the run here. Without it, `hlt` is an undefined instruction: the
        // exception handler reports it and calls `exit` again, which then powers off below.
        unsafe {
            core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack, readonly));
        }
    }
    // SAFETY: PSCI SYSTEM_OFF through the hypervisor call QEMU's `virt` answers (no EL2 in the
    // guest's view); it does not return when PSCI is there.
    unsafe { core::arch::asm!("hvc #0", inout("x0") PSCI_SYSTEM_OFF => _, options(nomem, nostack)) };
    super::halt_forever()
}
