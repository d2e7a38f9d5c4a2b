//! Channels between components (`mica:kernel/ipc`), as owned handles.

use std::fmt;
use std::time::Duration;

use crate::bindings::mica::kernel::ipc as raw;

/// The interface itself (`mica:kernel/ipc` as wit-bindgen makes it), for programs that place
/// messages in spans of their own memory themselves; [`Channel`] does it for everyone else.
pub mod interface {
    pub use crate::bindings::mica::kernel::ipc::*;
}

pub use raw::{ErrorCode, Rights};

/// A raw handle value.
pub type Handle = u32;

/// A refused or failed operation: what kind, what happened, and the handles of an undelivered
/// message (back in this component's table, now owned by this value).
#[derive(Debug)]
pub struct Error {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened, in words.
    pub message: String,
    /// The handles of a message that was not delivered.
    pub returned: Vec<Channel>,
}

impl From<raw::Error> for Error {
    fn from(e: raw::Error) -> Error {
        Error { code: e.code, message: e.message, returned: e.returned.into_iter().map(Channel::from_raw).collect() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The span of `bytes` in this component's memory (in wasm32 a pointer is the offset).
fn span(bytes: &[u8]) -> raw::Span {
    MemorySpan::of(bytes).into()
}

/// Bytes of this component's own linear memory, as the kernel's IPC spans name them: an offset
/// into the memory and a length. The kernel checks every span against the memory's current
/// size, so a wrong one is refused with `invalid-span`, never a fault. Made from a slice
/// ([`MemorySpan::of`]) or from a mapped DMA buffer ([`MappedDma::span`](crate::hw::MappedDma::span)),
/// so that a driver answers straight from the memory its device wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySpan {
    /// The offset of the first byte in the linear memory.
    pub offset: u32,
    /// How many bytes.
    pub len: u32,
}

impl MemorySpan {
    /// Where `bytes` lie (in wasm32 a pointer is the offset).
    pub fn of(bytes: &[u8]) -> MemorySpan {
        MemorySpan { offset: bytes.as_ptr() as usize as u32, len: bytes.len() as u32 }
    }
}

impl From<MemorySpan> for raw::Span {
    fn from(s: MemorySpan) -> raw::Span {
        raw::Span { offset: s.offset, len: s.len }
    }
}

/// The most handles a message carries (the kernel's limit).
const MAX_HANDLES: usize = 16;

/// Where received messages land before they are handed out: room for the largest message the
/// kernel sends (64 KiB), made once (pages never touched cost the kernel nothing). A bigger
/// message would be held by the kernel and collected into a buffer of its size.
struct Landing {
    bytes: Vec<u8>,
    handles: [u8; MAX_HANDLES * 4],
}

thread_local! {
    static LANDING: std::cell::RefCell<Landing> =
        std::cell::RefCell::new(Landing { bytes: vec![0; 64 * 1024], handles: [0; MAX_HANDLES * 4] });
}

/// The error of the span operation that just failed with `code`.
fn span_error(code: ErrorCode) -> Error {
    match raw::last_error() {
        Some(e) => Error::from(e),
        None => Error { code, message: format!("{code:?}"), returned: Vec::new() },
    }
}

/// The span of `bytes`, for the kernel to write into.
fn span_mut(bytes: &mut [u8]) -> raw::Span {
    raw::Span { offset: bytes.as_mut_ptr() as usize as u32, len: bytes.len() as u32 }
}

/// Receives through the landing buffer: `op` is `receive-into` or `call-into` given the landing
/// spans; a message bigger than the landing is collected into buffers of its own size.
fn land(op: impl FnOnce(raw::Span, raw::Span) -> Result<raw::Arrival, ErrorCode>) -> Result<Received, Error> {
    LANDING.with_borrow_mut(|landing| {
        let arrival = op(span_mut(&mut landing.bytes), span_mut(&mut landing.handles)).map_err(span_error)?;
        let (n, h) = (arrival.bytes as usize, arrival.handles as usize * 4);
        let (bytes, handles) = if n <= landing.bytes.len() && h <= landing.handles.len() {
            (landing.bytes[..n].to_vec(), landing.handles[..h].to_vec())
        } else {
            // The kernel held it: collect it into buffers of its size.
            let (mut bytes, mut handles) = (vec![0u8; n], vec![0u8; h]);
            raw::collect(span_mut(&mut bytes), span_mut(&mut handles)).map_err(span_error)?;
            (bytes, handles)
        };
        Ok(Received { message: Message { bytes, handles: channels(&handles) }, call: arrival.call })
    })
}

/// Handle values as the kernel writes them (little-endian u32s), as owned channels.
fn channels(bytes: &[u8]) -> Vec<Channel> {
    bytes.chunks_exact(4).map(|c| Channel::from_raw(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
}

/// What arrived in a caller's buffer ([`Channel::recv_into`], [`Channel::call_into`]): the
/// message is `buffer[..len]`.
#[derive(Debug)]
pub struct Arrived {
    /// How many bytes of the buffer are the message.
    pub len: usize,
    /// The handles it carried.
    pub handles: Vec<Channel>,
    /// The request's call id (for [`Channel::recv_into`]).
    pub call: Option<u64>,
}

/// Receives into `buffer` (its whole length is room): `op` is `receive-into` or `call-into`
/// given the spans. A message longer than `buffer` was held by the kernel: `buffer` grows to
/// its length and it is collected there.
fn arrive(
    buffer: &mut Vec<u8>,
    op: impl FnOnce(raw::Span, raw::Span) -> Result<raw::Arrival, ErrorCode>,
) -> Result<Arrived, Error> {
    let mut handles = [0u8; MAX_HANDLES * 4];
    let arrival = op(span_mut(buffer), span_mut(&mut handles)).map_err(span_error)?;
    let (len, h) = (arrival.bytes as usize, arrival.handles as usize * 4);
    if len > buffer.len() || h > handles.len() {
        buffer.resize(len.max(buffer.len()), 0);
        let mut all = vec![0u8; h];
        raw::collect(span_mut(buffer), span_mut(&mut all)).map_err(span_error)?;
        return Ok(Arrived { len, handles: channels(&all), call: arrival.call });
    }
    Ok(Arrived { len, handles: channels(&handles[..h]), call: arrival.call })
}

/// How long to wait, as the interface wants it.
fn nanos(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A message: bytes plus channel ends that move with it.
#[derive(Debug, Default)]
pub struct Message {
    /// The payload.
    pub bytes: Vec<u8>,
    /// The handles it carries (each needs the grant right to be sent).
    pub handles: Vec<Channel>,
}

impl Message {
    /// A message of bytes only.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Message {
        Message { bytes: bytes.into(), handles: Vec::new() }
    }

    fn into_raw(self) -> raw::Message {
        raw::Message { bytes: self.bytes, handles: self.handles.into_iter().map(Channel::into_raw).collect() }
    }

    fn from_raw(m: raw::Message) -> Message {
        Message { bytes: m.bytes, handles: m.handles.into_iter().map(Channel::from_raw).collect() }
    }
}

/// A received message; `call` is set for a request made with [`Channel::call`]: answer it with
/// [`Channel::reply`].
#[derive(Debug)]
pub struct Received {
    /// The message.
    pub message: Message,
    /// The request's call id.
    pub call: Option<u64>,
}

/// Waits until one of `handles` is ready, at most `timeout` (`None`: as long as it takes; zero:
/// only looks), and returns the positions in `handles` of those ready, in order; empty when the
/// timeout passed first. A channel end ([`Channel::raw`]) is ready when a receive on it would
/// not wait (a message is queued, or its peer is closed); an interrupt line
/// ([`IrqLine::handle`](crate::hw::IrqLine::handle)) when an interrupt came that
/// [`IrqLine::wait`](crate::hw::IrqLine::wait) has not taken. Nothing is taken: receive (or
/// wait on the line with a zero timeout) afterwards. At most 64 handles.
pub fn wait(handles: &[Handle], timeout: Option<Duration>) -> Result<Vec<usize>, Error> {
    let ready = raw::wait(handles, nanos(timeout))?;
    Ok(ready.into_iter().map(|i| i as usize).collect())
}

/// One channel end, owned: dropping it closes the handle.
#[derive(Debug)]
pub struct Channel {
    handle: Handle,
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Closing a handle the kernel already considers closed is harmless.
        let _ = raw::close(self.handle);
    }
}

impl Channel {
    /// This component's end of the manifest connection `name`.
    pub fn connect(name: &str) -> Result<Channel, Error> {
        Ok(Channel::from_raw(raw::connect(name)?))
    }

    /// A new channel (needs `create_channels = true` in the manifest).
    pub fn pair() -> Result<(Channel, Channel), Error> {
        let (a, b) = raw::create_channel()?;
        Ok((Channel::from_raw(a), Channel::from_raw(b)))
    }

    /// Takes ownership of a raw handle.
    pub fn from_raw(handle: Handle) -> Channel {
        Channel { handle }
    }

    /// Gives up ownership: the handle stays open.
    pub fn into_raw(self) -> Handle {
        let handle = self.handle;
        std::mem::forget(self);
        handle
    }

    /// The raw handle value.
    pub fn raw(&self) -> Handle {
        self.handle
    }

    /// Sends `bytes`, waiting for room in the queue as long as it takes.
    pub fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        self.send_span(bytes, None)
    }

    /// Sends `bytes` if the queue has room now; else fails with [`ErrorCode::Full`].
    pub fn try_send(&self, bytes: &[u8]) -> Result<(), Error> {
        self.send_span(bytes, Some(Duration::ZERO))
    }

    /// Sends bytes only: the kernel reads them straight from this component's memory.
    fn send_span(&self, bytes: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        raw::send_span(self.handle, span(bytes), nanos(timeout)).map_err(span_error)
    }

    /// Sends a message with handles, waiting at most `timeout` for room (`None`: as long as it
    /// takes).
    pub fn send_message(&self, message: Message, timeout: Option<Duration>) -> Result<(), Error> {
        if message.handles.is_empty() {
            return self.send_span(&message.bytes, timeout);
        }
        Ok(raw::send(self.handle, &message.into_raw(), nanos(timeout))?)
    }

    /// Receives the next message, waiting as long as it takes.
    pub fn recv(&self) -> Result<Received, Error> {
        self.recv_timeout(None)
    }

    /// Receives a message if one is waiting; else fails with [`ErrorCode::Empty`].
    pub fn try_recv(&self) -> Result<Received, Error> {
        self.recv_timeout(Some(Duration::ZERO))
    }

    /// Receives the next message, waiting at most `timeout` (`None`: as long as it takes).
    pub fn recv_timeout(&self, timeout: Option<Duration>) -> Result<Received, Error> {
        land(|bytes, handles| raw::receive_into(self.handle, bytes, handles, nanos(timeout)))
    }

    /// Receives the next message into `buffer`, whose whole length is room for it, waiting at
    /// most `timeout` (`None`: as long as it takes). The message is `buffer[..len]`; a longer one
    /// makes `buffer` grow to fit. Keep the buffer for the next message: in the steady state
    /// nothing is allocated and the kernel writes straight into it.
    pub fn recv_into(&self, buffer: &mut Vec<u8>, timeout: Option<Duration>) -> Result<Arrived, Error> {
        arrive(buffer, |bytes, handles| raw::receive_into(self.handle, bytes, handles, nanos(timeout)))
    }

    /// A server's step: answers request `call` with `buffer[..len]`, then receives the next
    /// message into `buffer` as [`Channel::recv_into`] does, in one call to the kernel. The
    /// reply's outcome comes first; a failed reply (its caller gave up or ended) does not stop the
    /// receive.
    pub fn reply_and_recv_into(
        &self,
        call: u64,
        len: usize,
        buffer: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> (Result<(), Error>, Result<Arrived, Error>) {
        let reply = MemorySpan::of(&buffer[..len.min(buffer.len())]);
        self.reply_span_and_recv_into(call, reply, buffer, timeout)
    }

    /// [`Channel::reply_and_recv_into`] with the reply's bytes anywhere in this component's
    /// memory, for example in a mapped DMA buffer the device just wrote
    /// ([`MappedDma::span`](crate::hw::MappedDma::span)): the kernel copies them straight to the
    /// caller. Whatever holds them must live until this returns.
    pub fn reply_span_and_recv_into(
        &self,
        call: u64,
        reply: MemorySpan,
        buffer: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> (Result<(), Error>, Result<Arrived, Error>) {
        let reply = raw::Span::from(reply);
        let mut replied = Ok(());
        let received = arrive(buffer, |bytes, handles| {
            let (r, received) = raw::reply_receive(self.handle, call, reply, bytes, handles, nanos(timeout));
            // The reply's error record, before the receive can replace it.
            replied = r.map_err(span_error);
            received
        });
        (replied, received)
    }

    /// Sends a request and receives its reply into `reply`, as [`Channel::recv_into`] does.
    pub fn call_into(&self, request: &[u8], reply: &mut Vec<u8>, timeout: Option<Duration>) -> Result<Arrived, Error> {
        let request = span(request);
        arrive(reply, |bytes, handles| raw::call_into(self.handle, request, bytes, handles, nanos(timeout)))
    }

    /// Sends a request and waits for its reply's bytes.
    pub fn call(&self, request: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.call_span(request, None)?.bytes)
    }

    /// `call` of bytes only: the kernel reads the request from this component's memory and
    /// writes the reply into it.
    fn call_span(&self, request: &[u8], timeout: Option<Duration>) -> Result<Message, Error> {
        let request = span(request);
        Ok(land(|bytes, handles| raw::call_into(self.handle, request, bytes, handles, nanos(timeout)))?.message)
    }

    /// Sends a request with handles and waits at most `timeout` for the reply.
    pub fn call_message(&self, request: Message, timeout: Option<Duration>) -> Result<Message, Error> {
        if request.handles.is_empty() {
            return self.call_span(&request.bytes, timeout);
        }
        Ok(Message::from_raw(raw::call(self.handle, &request.into_raw(), nanos(timeout))?))
    }

    /// A server's step over several handles: answers request `call` with `bytes`, then
    /// [`wait`]s on `handles` (this end among them, usually). When the wait parks, the caller
    /// just answered runs at once. Each has its own result.
    pub fn reply_and_wait(
        &self,
        call: u64,
        bytes: &[u8],
        handles: &[Handle],
        timeout: Option<Duration>,
    ) -> (Result<(), Error>, Result<Vec<usize>, Error>) {
        let (replied, ready) = raw::reply_wait(self.handle, call, bytes, handles, nanos(timeout));
        let ready = ready.map(|r| r.into_iter().map(|i| i as usize).collect());
        (replied.map_err(Error::from), ready.map_err(Error::from))
    }

    /// Answers request `call` with `bytes`.
    pub fn reply(&self, call: u64, bytes: &[u8]) -> Result<(), Error> {
        self.reply_span(call, MemorySpan::of(bytes))
    }

    /// Answers request `call` with bytes anywhere in this component's memory (see
    /// [`MemorySpan`]).
    pub fn reply_span(&self, call: u64, bytes: MemorySpan) -> Result<(), Error> {
        raw::reply_span(self.handle, call, bytes.into()).map_err(span_error)
    }

    /// Answers request `call` with a message that may carry handles.
    pub fn reply_message(&self, call: u64, message: Message) -> Result<(), Error> {
        if message.handles.is_empty() {
            return self.reply(call, &message.bytes);
        }
        Ok(raw::reply(self.handle, call, &message.into_raw())?)
    }

    /// A second handle to this end, with `rights` (no more than this one has).
    pub fn duplicate(&self, rights: Rights) -> Result<Channel, Error> {
        Ok(Channel::from_raw(raw::duplicate(self.handle, rights)?))
    }

    /// The rights this handle carries.
    pub fn rights(&self) -> Result<Rights, Error> {
        Ok(raw::rights_of(self.handle)?)
    }
}
