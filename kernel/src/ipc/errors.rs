//! The error values IPC operations return: what `mica-caps` and `mica-ipc` report, as the
//! `mica:kernel/ipc` error codes, with a message that says what happened in the component's terms.

use alloc::format;
use alloc::string::String;

use mica_caps::{CapError, Handle};
use mica_ipc::IpcError;
use mica_runtime::ipc::{ErrorCode, IpcFailure};

/// What an operation on a space whose instance has ended gets.
pub(super) const INSTANCE_ENDED: &str = "this component instance has ended";

/// A message meant for a waiting receiver's landing found no receiver: a kernel bug, reported
/// rather than hidden.
pub(super) const LANDING_LOST: &str = "kernel error: a message for a waiting receiver did not reach it";

/// A failure with `code` and `message`.
pub(super) fn fail(code: ErrorCode, message: impl Into<String>) -> IpcFailure {
    IpcFailure::new(code, message)
}

/// A handle table's refusal, for an instance of the component named `component`.
pub(super) fn cap_error(e: CapError, component: Option<&str>) -> IpcFailure {
    match e {
        CapError::InvalidHandle { handle } => fail(
            ErrorCode::InvalidHandle,
            format!("handle {handle} is not a handle of this component (never issued to it, or closed)"),
        ),
        CapError::MissingRights { .. } => fail(ErrorCode::MissingRights, format!("{e}")),
        CapError::RightsEscalation { .. } => fail(ErrorCode::RightsEscalation, format!("{e}")),
        CapError::TableFull { capacity } => fail(
            ErrorCode::TableFull,
            format!(
                "the handle table of component {} is full ({capacity} handles; the manifest's `handles` sets it)",
                component.unwrap_or("?")
            ),
        ),
        CapError::OutOfMemory => fail(ErrorCode::OutOfMemory, format!("{e}")),
    }
}

/// A channel table's refusal, on the end `handle` names (if the caller named one).
pub(super) fn ipc_error(e: IpcError, handle: Option<Handle>) -> IpcFailure {
    let on = |what: &str| match handle {
        Some(h) => format!("{what} of handle {h}"),
        None => String::from(what),
    };
    match e {
        IpcError::PeerClosed { .. } => {
            fail(ErrorCode::PeerClosed, format!("{} is closed: its component ended or let go of it", on("the peer")))
        }
        IpcError::Full { capacity, .. } => {
            fail(ErrorCode::Full, format!("{} is full ({capacity} messages)", on("the queue")))
        }
        IpcError::Empty { .. } => fail(ErrorCode::Empty, format!("no message is waiting on {}", on("the end"))),
        IpcError::MessageTooLarge { .. } => fail(ErrorCode::MessageTooLarge, format!("{e}")),
        IpcError::TooManyHandles { .. } => fail(ErrorCode::TooManyHandles, format!("{e}")),
        IpcError::UnknownCall { call, .. } => fail(
            ErrorCode::UnknownCall,
            format!(
                "call {call} awaits no reply on {} (never received there, already answered, or its caller gave up)",
                on("the end")
            ),
        ),
        IpcError::TableFull { capacity } => {
            fail(ErrorCode::TooManyChannels, format!("the kernel holds as many channels as it can ({capacity})"))
        }
        IpcError::OutOfMemory => fail(ErrorCode::OutOfMemory, format!("{e}")),
        IpcError::NoSuchChannel { .. }
        | IpcError::EndClosed { .. }
        | IpcError::UnknownWaiter { .. }
        | IpcError::WaiterBusy { .. } => fail(ErrorCode::InvalidHandle, format!("{}: {e}", on("the end"))),
    }
}
