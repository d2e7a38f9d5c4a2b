//! The COM1 16550 UART, the kernel's console.

use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

/// The console UART's I/O port base.
pub const COM1: u16 = 0x3f8;

/// The console UART.
pub type Uart = Uart16550Tty<PioBackend>;

/// Initializes COM1 at 115200 8N1. `None` when no UART answers at the port.
pub fn init() -> Option<Uart> {
    // SAFETY: COM1's eight I/O ports belong to the UART; the console module is the only user.
    unsafe { Uart16550Tty::new_port(COM1, Config::default()) }.ok()
}
