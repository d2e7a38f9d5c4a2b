//! The panic handler: the message and its location on the console, then the run ends "failed".

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use mica_exit::ExitCode;

use crate::arch;

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::disable_interrupts();
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: end now, without printing again.
        arch::exit(ExitCode::Failed);
    }
    let mut out = crate::console::EmergencyWriter::new();
    match info.location() {
        Some(l) => {
            let _ = writeln!(out, "KERNEL PANIC at {}:{}:{}: {}", l.file(), l.line(), l.column(), info.message());
        }
        None => {
            let _ = writeln!(out, "KERNEL PANIC at an unknown location: {}", info.message());
        }
    }
    arch::exit(ExitCode::Failed)
}
