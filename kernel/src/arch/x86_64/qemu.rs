//! Ending a run: QEMU's `isa-debug-exit` device turns a byte written to its port into QEMU's exit
//! status, which is how the host learns the verdict.

use mica_exit::{ExitCode, ISA_DEBUG_EXIT_PORT};
use x86_64::instructions::port::Port;

/// Ends the run with `code`. Without an exit device (another VMM, real hardware) the CPU halts.
pub fn exit(code: ExitCode) -> ! {
    super::disable_interrupts();
    let mut port = Port::<u8>::new(ISA_DEBUG_EXIT_PORT);
    // SAFETY: writing a byte to the debug-exit port has no effect on memory; on QEMU it ends the
    // VM, elsewhere the write goes to an unclaimed port.
    unsafe { port.write(code.code()) };
    crate::console::emergency_print(format_args!(
        "mica: no isa-debug-exit device at port {ISA_DEBUG_EXIT_PORT:#x}; halting ({})\n",
        code.name()
    ));
    super::halt_forever()
}
