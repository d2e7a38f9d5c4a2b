//! How a run ended, and what it produced: the guest's verdict on the exit port, or the reason the
//! VMM stopped it (timeout, a halt it can never wake from, a triple fault, an instruction KVM could
//! not emulate, ...), plus the serial output and the wall time.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use mica_exit::ExitCode;

use crate::devices::decode_exit;

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote this byte to the exit port (QEMU's `isa-debug-exit` protocol).
    ExitPort(u8),
    /// The host-side timeout passed before the guest wrote the exit port.
    Timeout(Duration),
    /// The vCPU executed `hlt` with interrupts disabled: nothing can ever wake it.
    HaltedWithInterruptsOff {
        /// Where it halted (the instruction after the `hlt`).
        rip: u64,
    },
    /// KVM reported a shutdown: a triple fault (an exception with no usable handler).
    TripleFault {
        /// The instruction pointer KVM left.
        rip: u64,
    },
    /// KVM could not emulate an instruction (`KVM_INTERNAL_ERROR_EMULATION`).
    EmulationFailure {
        /// The instruction's address.
        rip: u64,
        /// Its first bytes, as far as they could be read.
        bytes: Vec<u8>,
    },
    /// Another `KVM_EXIT_INTERNAL_ERROR`.
    InternalError {
        /// The suberror (`KVM_INTERNAL_ERROR_*`).
        suberror: u32,
        /// The instruction pointer.
        rip: u64,
    },
    /// The hardware refused to enter the guest (`KVM_EXIT_FAIL_ENTRY`).
    EntryFailure {
        /// The hardware's reason code.
        reason: u64,
    },
    /// The guest asked for a shutdown, reset or crash (`KVM_EXIT_SYSTEM_EVENT`).
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        kind: u32,
    },
    /// Any other exit the VMM does not handle.
    Unexpected(String),
}

/// A guess at the instruction behind `bytes`, for the handful that software KVMs are known not to
/// emulate.
fn instruction_name(bytes: &[u8]) -> Option<&'static str> {
    let b = bytes.strip_prefix(&[0x66]).unwrap_or(bytes);
    let b = b.strip_prefix(&[0xf0]).unwrap_or(b);
    let rex = b.first().is_some_and(|x| (0x40..=0x4f).contains(x));
    let b = if rex { &b[1..] } else { b };
    match b {
        [0x0f, 0x01, 0xd0, ..] => Some("xgetbv"),
        [0x0f, 0x01, 0xd1, ..] => Some("xsetbv"),
        [0x0f, 0xc7, modrm, ..] if (modrm >> 3) & 7 == 1 => Some("cmpxchg8b/cmpxchg16b"),
        [0x0f, 0xae, modrm, ..] if *modrm < 0xc0 && (4..=5).contains(&((modrm >> 3) & 7)) => Some("xsave/xrstor"),
        [0x0f, 0xc7, modrm, ..] if (modrm >> 3) & 7 == 3 => Some("xrstors"),
        _ => None,
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::ExitPort(byte) => match decode_exit(*byte) {
                Some(code) => write!(f, "the guest wrote {byte:#04x} ({}) to the exit port", code.name()),
                None => write!(f, "the guest wrote {byte:#04x} to the exit port, which is not a Mica exit code"),
            },
            Ending::Timeout(t) => write!(f, "timed out: no verdict on the exit port within {:.1} s", t.as_secs_f64()),
            Ending::HaltedWithInterruptsOff { rip } => write!(
                f,
                "the guest halted with interrupts disabled at rip {rip:#x} and can never wake up \
                 (it stopped without writing the exit port)"
            ),
            Ending::TripleFault { rip } => {
                write!(f, "the guest triple-faulted (KVM shutdown exit) at rip {rip:#x}")
            }
            Ending::EmulationFailure { rip, bytes } => {
                write!(f, "KVM emulation failure at rip {rip:#x}: instruction bytes {bytes:02x?}")?;
                if let Some(name) = instruction_name(bytes) {
                    write!(f, " ({name})")?;
                }
                write!(f, "; this KVM cannot run that instruction for the guest")
            }
            Ending::InternalError { suberror, rip } => {
                write!(f, "KVM internal error (suberror {suberror}) at rip {rip:#x}")
            }
            Ending::EntryFailure { reason } => {
                write!(f, "KVM could not enter the guest (hardware entry failure reason {reason:#x})")
            }
            Ending::SystemEvent { kind } => {
                let what = match *kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => "shutdown",
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => "reset",
                    kvm_bindings::KVM_SYSTEM_EVENT_CRASH => "crash",
                    _ => "system event",
                };
                write!(f, "the guest requested a {what} (KVM system event {kind}) without a verdict")
            }
            Ending::Unexpected(what) => write!(f, "unexpected vCPU exit: {what}"),
        }
    }
}

impl std::error::Error for Ending {}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Why it ended.
    pub ending: Ending,
    /// Everything the guest wrote to COM1.
    pub serial_output: Vec<u8>,
    /// Wall time from entering the guest to the end of the run.
    pub duration: Duration,
}

impl Outcome {
    /// The guest's verdict: the exit code it wrote to the exit port, if it wrote a known one.
    pub fn exit(&self) -> Option<ExitCode> {
        match self.ending {
            Ending::ExitPort(byte) => decode_exit(byte),
            _ => None,
        }
    }

    /// The verdict, or why there is none (the ending, as an error).
    pub fn verdict(&self) -> Result<ExitCode, Ending> {
        self.exit().ok_or_else(|| self.ending.clone())
    }

    /// The serial output as text (invalid UTF-8 replaced).
    pub fn serial_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.serial_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ending: Ending) -> Outcome {
        Outcome { ending, serial_output: b"mica: ready\n".to_vec(), duration: Duration::from_millis(5) }
    }

    #[test]
    fn exit_port_bytes_become_verdicts() {
        assert_eq!(outcome(Ending::ExitPort(0x10)).exit(), Some(ExitCode::Success));
        assert_eq!(outcome(Ending::ExitPort(0x11)).verdict(), Ok(ExitCode::Failed));
        assert_eq!(outcome(Ending::ExitPort(0x42)).exit(), None);
        assert_eq!(outcome(Ending::Timeout(Duration::from_secs(1))).exit(), None);
        assert_eq!(outcome(Ending::ExitPort(0x10)).serial_text(), "mica: ready\n");
    }

    #[test]
    fn endings_say_what_happened() {
        let text = |e: Ending| e.to_string();
        assert_eq!(text(Ending::ExitPort(0x10)), "the guest wrote 0x10 (success) to the exit port");
        assert!(text(Ending::ExitPort(0x42)).contains("not a Mica exit code"));
        assert!(text(Ending::Timeout(Duration::from_millis(1500))).contains("1.5 s"));
        assert!(
            text(Ending::HaltedWithInterruptsOff { rip: 0x10_0040 }).contains("interrupts disabled at rip 0x100040")
        );
        let xgetbv = text(Ending::EmulationFailure { rip: 0x10_0000, bytes: vec![0x0f, 0x01, 0xd0, 0x90] });
        assert!(xgetbv.contains("(xgetbv)"), "{xgetbv}");
        let cx16 = text(Ending::EmulationFailure { rip: 0, bytes: vec![0xf0, 0x48, 0x0f, 0xc7, 0x0e] });
        assert!(cx16.contains("cmpxchg16b"), "{cx16}");
        assert!(text(Ending::TripleFault { rip: 0 }).contains("triple-fault"));
    }
}
