//! Exit codes shared by the Mica kernel and the host tools.
//!
//! On x86_64 the kernel ends a QEMU run by writing one byte to the `isa-debug-exit` device
//! (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`). QEMU then exits with status
//! `(code << 1) | 1`, so a guest can never produce status 0 by itself: the host maps the
//! codes below back to its own exit status. Codes avoid 0 and 1 so that a QEMU that dies
//! for its own reasons (status 1) is never mistaken for a kernel verdict.
#![no_std]
#![forbid(unsafe_code)]

/// The I/O port of QEMU's `isa-debug-exit` device, as the host configures it.
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;
/// The size of the `isa-debug-exit` I/O window, as the host configures it.
pub const ISA_DEBUG_EXIT_SIZE: u16 = 4;

/// The verdict a kernel run ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything that was asked of the kernel succeeded; the system powered off cleanly.
    Success = 0x10,
    /// The kernel failed: a panic, an unexpected exception, a failed self-test.
    Failed = 0x11,
}

impl ExitCode {
    /// Every code, for tables and tests.
    pub const ALL: [ExitCode; 2] = [ExitCode::Success, ExitCode::Failed];

    /// The byte the guest writes to the exit port.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exit status QEMU reports to the host for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// The code behind a QEMU exit status, or `None` when QEMU exited for another reason
    /// (killed, a QEMU error, the guest reset or powered off without a verdict).
    pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.qemu_status() == status)
    }

    /// A short lowercase name: `success` or `failed`.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_status_round_trips() {
        for code in ExitCode::ALL {
            assert_eq!(ExitCode::from_qemu_status(code.qemu_status()), Some(code));
        }
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        assert_eq!(ExitCode::Failed.qemu_status(), 35);
    }

    #[test]
    fn qemu_own_statuses_are_not_verdicts() {
        for status in [0, 1, 2, -1, 37, 137] {
            assert_eq!(ExitCode::from_qemu_status(status), None, "status {status}");
        }
    }
}
