//! The console: the serial port, a `log` backend writing to it, and an emergency writer for
//! panics and exceptions that must print even when the console lock is held.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch;

static UART: crate::irq_lock::IrqMutex<Option<arch::serial::Uart>> = crate::irq_lock::IrqMutex::new(None);
static PRESENT: AtomicBool = AtomicBool::new(false);

/// Initializes the serial port. Returns whether a UART answered.
pub fn init() -> bool {
    let uart = arch::serial::init();
    let present = uart.is_some();
    *UART.lock() = uart;
    PRESENT.store(present, Ordering::Relaxed);
    present
}

/// Prints to the console. Interrupts are disabled while the lock is held, so an interrupt handler
/// that prints cannot deadlock against the code it interrupted.
pub fn print(args: fmt::Arguments<'_>) {
    arch::without_interrupts(|| {
        if let Some(uart) = UART.lock().as_mut() {
            let _ = uart.write_fmt(args);
        }
    });
}

/// Prints even if the console lock is held (by the code that just faulted or panicked).
pub fn emergency_print(args: fmt::Arguments<'_>) {
    let _ = EmergencyWriter::new().write_fmt(args);
}

/// A writer for the last words of a failing kernel.
#[derive(Debug)]
pub struct EmergencyWriter(());

impl EmergencyWriter {
    /// Stops every other CPU, then takes the console, breaking its lock if the failing code
    /// held it. Only for the way to ending the run.
    pub fn new() -> Self {
        arch::disable_interrupts();
        match crate::panic::stop_other_cpus() {
            crate::panic::Stopped::All { stopped } => {
                if UART.is_locked() {
                    // SAFETY: every other CPU has stopped for good and this one runs with
                    // interrupts off, so whoever holds the lock (this CPU's failing code, or a
                    // stopped CPU) never runs again: nothing else uses the UART.
                    unsafe { UART.force_unlock() };
                    // Its holder may have stopped mid-line.
                    let _ = EmergencyWriter(()).write_str("\n");
                }
                if stopped > 0 {
                    let _ = writeln!(EmergencyWriter(()), "mica: stopped {stopped} other CPU(s)");
                }
            }
            crate::panic::Stopped::NotAll { running } => {
                // The lock stays: a CPU that did not stop may hold it, and releases it when done.
                let _ = writeln!(EmergencyWriter(()), "mica: {running} other CPU(s) did not stop");
            }
        }
        EmergencyWriter(())
    }
}

impl Default for EmergencyWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// How long the emergency writer waits for a console lock that a CPU which did not stop holds.
const LOCK_WAIT_SPINS: u32 = 50_000_000;

impl Write for EmergencyWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut guard = None;
        for _ in 0..LOCK_WAIT_SPINS {
            guard = UART.try_lock();
            if guard.is_some() {
                break;
            }
            core::hint::spin_loop();
        }
        let mut guard = match guard {
            Some(guard) => guard,
            None => {
                // The run is ending, and no CPU gave the lock back in all that time: its holder
                // is this CPU's own failing code or a CPU that stopped without taking the stop
                // signal. A hang would lose the report; at worst the bytes of two writers
                // interleave on the port (the UART holds no memory of ours but its registers'
                // addresses).
                // SAFETY: as said above: the holder never gives the lock back.
                unsafe { UART.force_unlock() };
                UART.lock()
            }
        };
        match guard.as_mut() {
            Some(uart) => uart.write_str(s),
            None => Ok(()),
        }
    }
}

/// Prints to the console, like `print!`.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the console, like `println!`.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target().strip_prefix("mica_kernel::").unwrap_or(record.target());
        match arch::clock::monotonic_ns() {
            Some(ns) => print(format_args!(
                "[{:>4}.{:06}] {:<5} {target}: {}\n",
                ns / 1_000_000_000,
                ns % 1_000_000_000 / 1000,
                record.level(),
                record.args()
            )),
            None => print(format_args!("[   ?.??????] {:<5} {target}: {}\n", record.level(), record.args())),
        }
    }

    fn flush(&self) {}
}

/// Routes the `log` crate to the console at `level`.
pub fn init_logger(level: log::LevelFilter) {
    // A second call (there is none) would keep the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
