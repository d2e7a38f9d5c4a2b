//! The console: the PL011 UART the device tree's `/chosen` `stdout-path` names (on `virt`,
//! `/pl011@9000000`), through the `arm-pl011-uart` driver.

use core::ptr::NonNull;

use arm_pl011_uart::{PL011Registers, UniqueMmioPointer};

/// The console UART.
pub type Uart = arm_pl011_uart::Uart<'static>;

/// The console UART, or `None` when the device tree names no PL011 for stdout.
pub fn init() -> Option<Uart> {
    let base = super::boot_info::stdout_pl011(super::boot::dtb_address())?;
    let registers = NonNull::new(base as *mut PL011Registers)?;
    // SAFETY: the device tree says a PL011's registers are at `base`; the boot map maps the low
    // 1 GiB as device memory; the console module is its only user.
    Some(arm_pl011_uart::Uart::new(unsafe { UniqueMmioPointer::new(registers) }))
}
