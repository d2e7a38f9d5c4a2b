//! What a component's `mica:kernel/ipc` imports need from the kernel: one [`IpcPort`] per running
//! component instance, which owns that instance's handle table and acts on the kernel's channels.
//! The runtime's host functions (`host/ipc.rs`) only translate between WIT values and this trait,
//! so the runtime never reaches into the kernel.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A handle value as a component sees it.
pub type Handle = u32;

/// Rights as bits: read 1, write 2, grant 4 (the WIT `rights` flags in order).
pub type RightsBits = u32;

/// The kind of a failure; the WIT `error-code`, case for case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Never issued, or closed.
    InvalidHandle,
    /// A right the operation needs is missing.
    MissingRights,
    /// A duplicate asked for more rights than the original has.
    RightsEscalation,
    /// The other end is closed.
    PeerClosed,
    /// The queue is full (zero timeout).
    Full,
    /// No message waits (zero timeout).
    Empty,
    /// The timeout passed.
    TimedOut,
    /// The message is over the byte limit.
    MessageTooLarge,
    /// The message is over the handle limit.
    TooManyHandles,
    /// A handle appears twice in one message.
    DuplicateHandle,
    /// A reply to no outstanding request.
    UnknownCall,
    /// The component's handle table is full.
    TableFull,
    /// The kernel's channel table is full.
    TooManyChannels,
    /// `connect` names no connection of this component.
    NoSuchConnection,
    /// `connect`: the peer ended for good.
    Unavailable,
    /// The manifest does not allow it.
    NotPermitted,
    /// The kernel is out of memory.
    OutOfMemory,
    /// A span does not lie inside the component's linear memory.
    InvalidSpan,
}

/// A refused or failed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcFailure {
    /// Its kind.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// Handles of an undelivered message, back in the caller's table.
    pub returned: Vec<Handle>,
}

impl IpcFailure {
    /// A failure that hands nothing back.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> IpcFailure {
        IpcFailure { code, message: message.into(), returned: Vec::new() }
    }
}

impl fmt::Display for IpcFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How long an operation may wait: `None` as long as it takes, `Some(0)` not at all.
pub type Timeout = Option<u64>;

/// The most handles one [`IpcPort::wait`] looks at.
pub const MAX_WAIT_HANDLES: usize = 64;

/// A received message: its bytes, its handles (now in the receiver's table) and, for a request
/// made with `call`, the id to reply to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The payload (empty when it [`landed`](Received::landed) already).
    pub bytes: Vec<u8>,
    /// For a span operation that waited: the payload was written straight from the sender's
    /// memory into the landing span the operation named, this many bytes of it, and `bytes` is
    /// empty (the message's one copy).
    pub landed: Option<u32>,
    /// The moved handles, as the receiver's handles.
    pub handles: Vec<Handle>,
    /// The call id, for a request.
    pub call: Option<u64>,
}

/// Part of the calling instance's own linear memory: `len` bytes from byte `offset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// The first byte, as an offset into the memory (a wasm32 pointer).
    pub offset: u32,
    /// How many bytes.
    pub len: u32,
}

/// One component instance's view of the kernel's IPC: its handle table and what it may do.
/// Every method acts for the calling instance only; blocking methods block its thread.
pub trait IpcPort: Send + Sync {
    /// A new handle to this instance's end of the manifest connection `name`.
    fn connect(&self, name: &str) -> Result<Handle, IpcFailure>;
    /// A new channel; both ends.
    fn create_channel(&self) -> Result<(Handle, Handle), IpcFailure>;
    /// Sends bytes plus handles on `end`.
    fn send(&self, end: Handle, bytes: Vec<u8>, handles: Vec<Handle>, timeout: Timeout) -> Result<(), IpcFailure>;
    /// Receives on `end`.
    fn receive(&self, end: Handle, timeout: Timeout) -> Result<Received, IpcFailure>;
    /// Sends a request on `end` and waits for its reply.
    fn call(&self, end: Handle, bytes: Vec<u8>, handles: Vec<Handle>, timeout: Timeout)
    -> Result<Received, IpcFailure>;
    /// Answers request `call` received on `end`.
    fn reply(&self, end: Handle, call: u64, bytes: Vec<u8>, handles: Vec<Handle>) -> Result<(), IpcFailure>;
    /// A second handle to the same object with `rights`.
    fn duplicate(&self, handle: Handle, rights: RightsBits) -> Result<Handle, IpcFailure>;
    /// The rights of `handle`.
    fn rights(&self, handle: Handle) -> Result<RightsBits, IpcFailure>;
    /// Closes `handle`.
    fn close(&self, handle: Handle) -> Result<(), IpcFailure>;
    /// Waits until one of `handles` (channel ends, interrupt lines) is ready or `timeout`
    /// passes; the positions of those ready, in order (empty: the timeout passed). See
    /// `mica:kernel/ipc.wait`.
    fn wait(&self, handles: &[Handle], timeout: Timeout) -> Result<Vec<u32>, IpcFailure>;
    /// A server's step over several handles: [`reply`](IpcPort::reply) with `bytes`, then
    /// [`wait`](IpcPort::wait) whatever the reply's outcome. A kernel that can hands the CPU
    /// straight to the caller it answered when the wait parks; this default does not.
    fn reply_wait(
        &self,
        end: Handle,
        call: u64,
        bytes: Vec<u8>,
        handles: &[Handle],
        timeout: Timeout,
    ) -> (Result<(), IpcFailure>, Result<Vec<u32>, IpcFailure>) {
        (self.reply(end, call, bytes, Vec::new()), self.wait(handles, timeout))
    }
    /// The bytes of `span` in the calling instance's linear memory, copied out.
    fn read_span(&self, span: Span) -> Result<Vec<u8>, IpcFailure>;
    /// Writes `bytes` at the start of `span` in the calling instance's linear memory (they
    /// must fit).
    fn write_span(&self, span: Span, bytes: &[u8]) -> Result<(), IpcFailure>;

    /// Sends the bytes of `message`, a span of the calling instance's memory, on `end`. A kernel
    /// that can copies them straight into a waiting receiver's landing span; this default copies
    /// them out first ([`read_span`](IpcPort::read_span)).
    fn send_span(&self, end: Handle, message: Span, timeout: Timeout) -> Result<(), IpcFailure> {
        self.send(end, self.read_span(message)?, Vec::new(), timeout)
    }

    /// Receives on `end`; a message that comes while the caller waits may be written straight
    /// into `landing` ([`Received::landed`]). This default never does.
    fn receive_span(&self, end: Handle, landing: Span, timeout: Timeout) -> Result<Received, IpcFailure> {
        let _ = landing;
        self.receive(end, timeout)
    }

    /// Sends the request in span `request` on `end` and waits for its reply, which may be
    /// written straight into `landing` ([`Received::landed`]). This default copies the request
    /// out first and never lands the reply.
    fn call_span(&self, end: Handle, request: Span, landing: Span, timeout: Timeout) -> Result<Received, IpcFailure> {
        let _ = landing;
        self.call(end, self.read_span(request)?, Vec::new(), timeout)
    }

    /// Answers request `call` received on `end` with the bytes of span `message`, which a
    /// kernel that can copies straight into the caller's landing; this default copies them out.
    fn reply_span(&self, end: Handle, call: u64, message: Span) -> Result<(), IpcFailure> {
        self.reply(end, call, self.read_span(message)?, Vec::new())
    }

    /// A server's step: [`reply_span`](IpcPort::reply_span), then
    /// [`receive_span`](IpcPort::receive_span) whatever the reply's outcome. A kernel that can
    /// does both in one pass and hands the CPU straight to the caller it answered when the
    /// receive waits.
    fn reply_receive_span(
        &self,
        end: Handle,
        call: u64,
        message: Span,
        landing: Span,
        timeout: Timeout,
    ) -> (Result<(), IpcFailure>, Result<Received, IpcFailure>) {
        (self.reply_span(end, call, message), self.receive_span(end, landing, timeout))
    }
}
