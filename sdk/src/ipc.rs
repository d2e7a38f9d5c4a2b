//! Channels between components (`mica:kernel/ipc`), as owned handles.

use std::fmt;
use std::time::Duration;

use crate::bindings::mica::kernel::ipc as raw;

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
        self.send_message(Message::bytes(bytes), None)
    }

    /// Sends `bytes` if the queue has room now; else fails with [`ErrorCode::Full`].
    pub fn try_send(&self, bytes: &[u8]) -> Result<(), Error> {
        self.send_message(Message::bytes(bytes), Some(Duration::ZERO))
    }

    /// Sends a message with handles, waiting at most `timeout` for room (`None`: as long as it
    /// takes).
    pub fn send_message(&self, message: Message, timeout: Option<Duration>) -> Result<(), Error> {
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
        let r = raw::receive(self.handle, nanos(timeout))?;
        Ok(Received { message: Message::from_raw(r.message), call: r.call })
    }

    /// Sends a request and waits for its reply's bytes.
    pub fn call(&self, request: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.call_message(Message::bytes(request), None)?.bytes)
    }

    /// Sends a request with handles and waits at most `timeout` for the reply.
    pub fn call_message(&self, request: Message, timeout: Option<Duration>) -> Result<Message, Error> {
        Ok(Message::from_raw(raw::call(self.handle, &request.into_raw(), nanos(timeout))?))
    }

    /// Answers request `call` with `bytes`.
    pub fn reply(&self, call: u64, bytes: &[u8]) -> Result<(), Error> {
        self.reply_message(call, Message::bytes(bytes))
    }

    /// Answers request `call` with a message that may carry handles.
    pub fn reply_message(&self, call: u64, message: Message) -> Result<(), Error> {
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
