//! The PL031 real-time clock the device tree names: read once at boot to give the wall clock its
//! epoch (its data register counts seconds since the Unix epoch).

use crate::mem::mmio::Window;

/// Seconds since the Unix epoch, or `None` when the device tree names no PL031, its registers
/// cannot be mapped, or it reads zero (never set).
pub fn unix_time() -> Option<u64> {
    let regs = super::boot_info::platform()?.rtc?;
    let window = Window::map(regs.start, u32::try_from(regs.len()).ok()?).ok()?;
    // RTCDR, the data register, at offset 0.
    window.read(0, 4).filter(|&secs| secs != 0)
}
