//! `mica:kernel/ipc`: channels between components. Each call is passed to the component's
//! [`IpcPort`](crate::ipc::IpcPort), which the kernel implements; this file only translates WIT
//! values. A component run without a port (hosted on Linux) gets a `not-permitted` error.

use alloc::string::String;
use alloc::vec::Vec;

use super::InstanceState;
use super::mica::kernel::ipc::{Arrival, Error, ErrorCode, Handle, Host, Message, Received, Rights, Span};
use crate::ipc::{self as port, IpcFailure, IpcPort};

/// What the span operations keep between calls, per instance: the message held for `collect`,
/// and the whole error of the last failed span operation (for `last-error`).
#[derive(Debug, Default)]
pub struct SpanState {
    held: Option<port::Received>,
    last_error: Option<IpcFailure>,
}

impl From<Span> for port::Span {
    fn from(s: Span) -> port::Span {
        port::Span { offset: s.offset, len: s.len }
    }
}

/// A length as the interface counts it (messages are far below 4 GiB).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Refuses a new receive or call while a message waits for `collect`: it would be lost otherwise.
fn nothing_held(held: &Option<port::Received>) -> Result<(), IpcFailure> {
    match held {
        None => Ok(()),
        Some(r) => Err(IpcFailure::new(
            port::ErrorCode::NotPermitted,
            alloc::format!(
                "a message of {} bytes and {} handles is held: `collect` it first",
                r.bytes.len(),
                r.handles.len()
            ),
        )),
    }
}

/// Writes `r` into `buffer` and `handles` (handle values as little-endian u32s). When it does
/// not fit, or a span is not the component's memory, nothing is lost: the message is held for
/// `collect`.
fn deliver(
    p: &dyn IpcPort,
    held: &mut Option<port::Received>,
    r: port::Received,
    buffer: port::Span,
    handles: port::Span,
) -> Result<Arrival, IpcFailure> {
    if let Some(len) = r.landed {
        // The kernel wrote it into `buffer` already. Only span operations land messages, and
        // they carry no handles.
        debug_assert!(r.handles.is_empty(), "a landed message carries handles");
        return Ok(Arrival { bytes: len, handles: 0, call: r.call });
    }
    let arrival = Arrival { bytes: count(r.bytes.len()), handles: count(r.handles.len()), call: r.call };
    let fits = r.bytes.len() <= buffer.len as usize && r.handles.len() * 4 <= handles.len as usize;
    if !fits {
        *held = Some(r);
        return Ok(arrival);
    }
    let written = p.write_span(buffer, &r.bytes).and_then(|()| {
        if r.handles.is_empty() {
            return Ok(());
        }
        let values: Vec<u8> = r.handles.iter().flat_map(|h| h.to_le_bytes()).collect();
        p.write_span(handles, &values)
    });
    match written {
        Ok(()) => Ok(arrival),
        Err(e) => {
            *held = Some(r);
            Err(e)
        }
    }
}

impl From<port::ErrorCode> for ErrorCode {
    fn from(code: port::ErrorCode) -> ErrorCode {
        use port::ErrorCode as C;
        match code {
            C::InvalidHandle => ErrorCode::InvalidHandle,
            C::MissingRights => ErrorCode::MissingRights,
            C::RightsEscalation => ErrorCode::RightsEscalation,
            C::PeerClosed => ErrorCode::PeerClosed,
            C::Full => ErrorCode::Full,
            C::Empty => ErrorCode::Empty,
            C::TimedOut => ErrorCode::TimedOut,
            C::MessageTooLarge => ErrorCode::MessageTooLarge,
            C::TooManyHandles => ErrorCode::TooManyHandles,
            C::DuplicateHandle => ErrorCode::DuplicateHandle,
            C::UnknownCall => ErrorCode::UnknownCall,
            C::TableFull => ErrorCode::TableFull,
            C::TooManyChannels => ErrorCode::TooManyChannels,
            C::NoSuchConnection => ErrorCode::NoSuchConnection,
            C::Unavailable => ErrorCode::Unavailable,
            C::NotPermitted => ErrorCode::NotPermitted,
            C::OutOfMemory => ErrorCode::OutOfMemory,
            C::InvalidSpan => ErrorCode::InvalidSpan,
        }
    }
}

impl From<IpcFailure> for Error {
    fn from(f: IpcFailure) -> Error {
        Error { code: f.code.into(), message: f.message, returned: f.returned }
    }
}

/// The WIT flags as bits: read 1, write 2, grant 4.
fn rights_to_bits(rights: Rights) -> u32 {
    [(Rights::READ, 1), (Rights::WRITE, 2), (Rights::GRANT, 4)]
        .into_iter()
        .filter(|(flag, _)| rights.contains(*flag))
        .fold(0, |bits, (_, bit)| bits | bit)
}

/// Bits back to the WIT flags (unknown bits are dropped).
fn rights_from_bits(bits: u32) -> Rights {
    [(Rights::READ, 1), (Rights::WRITE, 2), (Rights::GRANT, 4)]
        .into_iter()
        .filter(|(_, bit)| bits & bit != 0)
        .fold(Rights::empty(), |rights, (flag, _)| rights | flag)
}

fn received(r: port::Received) -> Received {
    Received { message: Message { bytes: r.bytes, handles: r.handles }, call: r.call }
}

impl InstanceState {
    /// The port, or the error a component without one gets.
    fn port(&self) -> Result<&dyn IpcPort, Error> {
        self.ipc.as_deref().ok_or_else(|| Error {
            code: ErrorCode::NotPermitted,
            message: String::from("IPC is not available here: this component runs without the Mica kernel"),
            returned: Vec::new(),
        })
    }
}

impl InstanceState {
    /// Runs a span operation on the port; a failure is kept whole for `last-error` and reported
    /// by its code.
    fn span_op<T>(
        &mut self,
        f: impl FnOnce(&dyn IpcPort, &mut Option<port::Received>) -> Result<T, IpcFailure>,
    ) -> wasmtime::Result<Result<T, ErrorCode>> {
        let result = match self.ipc.as_deref() {
            Some(p) => f(p, &mut self.spans.held),
            None => Err(IpcFailure::new(
                port::ErrorCode::NotPermitted,
                "IPC is not available here: this component runs without the Mica kernel",
            )),
        };
        self.check_killed()?;
        Ok(result.map_err(|failure| {
            let code = failure.code.into();
            self.spans.last_error = Some(failure);
            code
        }))
    }
}

impl InstanceState {
    /// A span operation that receives (`get`, refused while a message is held) and writes what
    /// arrived into `buffer` and `handles`.
    fn arrival_op(
        &mut self,
        buffer: Span,
        handles: Span,
        get: impl FnOnce(&dyn IpcPort) -> Result<port::Received, IpcFailure>,
    ) -> wasmtime::Result<Result<Arrival, ErrorCode>> {
        self.span_op(|p, held| {
            nothing_held(held)?;
            let r = get(p)?;
            deliver(p, held, r, buffer.into(), handles.into())
        })
    }
}

impl Host for InstanceState {
    fn send_span(
        &mut self,
        end: Handle,
        message: Span,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.span_op(|p, _| p.send_span(end, message.into(), timeout_ns))
    }

    fn receive_into(
        &mut self,
        end: Handle,
        buffer: Span,
        handles: Span,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<Result<Arrival, ErrorCode>> {
        self.arrival_op(buffer, handles, |p| p.receive_span(end, buffer.into(), timeout_ns))
    }

    fn call_into(
        &mut self,
        end: Handle,
        request: Span,
        buffer: Span,
        handles: Span,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<Result<Arrival, ErrorCode>> {
        self.arrival_op(buffer, handles, |p| p.call_span(end, request.into(), buffer.into(), timeout_ns))
    }

    fn reply_span(&mut self, end: Handle, call: u64, message: Span) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.span_op(|p, _| p.reply_span(end, call, message.into()))
    }

    fn reply_receive(
        &mut self,
        end: Handle,
        call: u64,
        message: Span,
        buffer: Span,
        handles: Span,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<(Result<(), ErrorCode>, Result<Arrival, ErrorCode>)> {
        if self.spans.held.is_some() {
            // The reply goes out; the receive is refused until the held message is collected.
            let replied = self.reply_span(end, call, message)?;
            let received = self.receive_into(end, buffer, handles, timeout_ns)?;
            return Ok((replied, received));
        }
        let mut replied = Ok(());
        let received = self.arrival_op(buffer, handles, |p| {
            let (r, received) = p.reply_receive_span(end, call, message.into(), buffer.into(), timeout_ns);
            replied = r;
            received
        })?;
        let replied = replied.map_err(|failure| {
            let code = failure.code.into();
            // The receive's error, if it failed too, is the newer one for `last-error`.
            if received.is_ok() {
                self.spans.last_error = Some(failure);
            }
            code
        });
        Ok((replied, received))
    }

    fn collect(&mut self, buffer: Span, handles: Span) -> wasmtime::Result<Result<Arrival, ErrorCode>> {
        self.span_op(|p, held| {
            let r = held
                .take()
                .ok_or_else(|| IpcFailure::new(port::ErrorCode::Empty, "no message is held for `collect`"))?;
            deliver(p, held, r, buffer.into(), handles.into())
        })
    }

    fn last_error(&mut self) -> wasmtime::Result<Option<Error>> {
        Ok(self.spans.last_error.clone().map(Error::from))
    }

    fn connect(&mut self, name: String) -> wasmtime::Result<Result<Handle, Error>> {
        Ok(self.port().and_then(|p| p.connect(&name).map_err(Error::from)))
    }

    fn create_channel(&mut self) -> wasmtime::Result<Result<(Handle, Handle), Error>> {
        Ok(self.port().and_then(|p| p.create_channel().map_err(Error::from)))
    }

    fn send(&mut self, end: Handle, message: Message, timeout_ns: Option<u64>) -> wasmtime::Result<Result<(), Error>> {
        let sent =
            self.port().and_then(|p| p.send(end, message.bytes, message.handles, timeout_ns).map_err(Error::from));
        self.check_killed()?;
        Ok(sent)
    }

    fn receive(&mut self, end: Handle, timeout_ns: Option<u64>) -> wasmtime::Result<Result<Received, Error>> {
        let got = self.port().and_then(|p| p.receive(end, timeout_ns).map(received).map_err(Error::from));
        self.check_killed()?;
        Ok(got)
    }

    fn call(
        &mut self,
        end: Handle,
        request: Message,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<Result<Message, Error>> {
        let answered = self.port().and_then(|p| {
            p.call(end, request.bytes, request.handles, timeout_ns)
                .map(|r| Message { bytes: r.bytes, handles: r.handles })
                .map_err(Error::from)
        });
        self.check_killed()?;
        Ok(answered)
    }

    fn reply(&mut self, end: Handle, call: u64, message: Message) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.port().and_then(|p| p.reply(end, call, message.bytes, message.handles).map_err(Error::from)))
    }

    fn wait(&mut self, handles: Vec<Handle>, timeout_ns: Option<u64>) -> wasmtime::Result<Result<Vec<u32>, Error>> {
        let ready = self.port().and_then(|p| p.wait(&handles, timeout_ns).map_err(Error::from));
        self.check_killed()?;
        Ok(ready)
    }

    fn reply_wait(
        &mut self,
        end: Handle,
        call: u64,
        message: Vec<u8>,
        handles: Vec<Handle>,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<(Result<(), Error>, Result<Vec<u32>, Error>)> {
        let outcome = match self.port() {
            Ok(p) => {
                let (replied, ready) = p.reply_wait(end, call, message, &handles, timeout_ns);
                (replied.map_err(Error::from), ready.map_err(Error::from))
            }
            Err(e) => (Err(e.clone()), Err(e)),
        };
        self.check_killed()?;
        Ok(outcome)
    }

    fn duplicate(&mut self, h: Handle, rights: Rights) -> wasmtime::Result<Result<Handle, Error>> {
        Ok(self.port().and_then(|p| p.duplicate(h, rights_to_bits(rights)).map_err(Error::from)))
    }

    fn rights_of(&mut self, h: Handle) -> wasmtime::Result<Result<Rights, Error>> {
        Ok(self.port().and_then(|p| p.rights(h).map(rights_from_bits).map_err(Error::from)))
    }

    fn close(&mut self, h: Handle) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.port().and_then(|p| p.close(h).map_err(Error::from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A port whose only ability is a memory of 64 bytes.
    struct Memory(Mutex<[u8; 64]>);

    fn refused<T>() -> Result<T, IpcFailure> {
        Err(IpcFailure::new(port::ErrorCode::NotPermitted, "not in this test"))
    }

    impl IpcPort for Memory {
        fn connect(&self, _: &str) -> Result<Handle, IpcFailure> {
            refused()
        }
        fn create_channel(&self) -> Result<(Handle, Handle), IpcFailure> {
            refused()
        }
        fn send(&self, _: Handle, _: Vec<u8>, _: Vec<Handle>, _: port::Timeout) -> Result<(), IpcFailure> {
            refused()
        }
        fn receive(&self, _: Handle, _: port::Timeout) -> Result<port::Received, IpcFailure> {
            refused()
        }
        fn call(&self, _: Handle, _: Vec<u8>, _: Vec<Handle>, _: port::Timeout) -> Result<port::Received, IpcFailure> {
            refused()
        }
        fn reply(&self, _: Handle, _: u64, _: Vec<u8>, _: Vec<Handle>) -> Result<(), IpcFailure> {
            refused()
        }
        fn duplicate(&self, _: Handle, _: u32) -> Result<Handle, IpcFailure> {
            refused()
        }
        fn rights(&self, _: Handle) -> Result<u32, IpcFailure> {
            refused()
        }
        fn close(&self, _: Handle) -> Result<(), IpcFailure> {
            refused()
        }
        fn wait(&self, _: &[Handle], _: port::Timeout) -> Result<Vec<u32>, IpcFailure> {
            refused()
        }
        fn read_span(&self, span: port::Span) -> Result<Vec<u8>, IpcFailure> {
            let (start, end) = (span.offset as usize, span.offset as usize + span.len as usize);
            let memory = self.0.lock().unwrap();
            memory
                .get(start..end)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| IpcFailure::new(port::ErrorCode::InvalidSpan, "out"))
        }
        fn write_span(&self, span: port::Span, bytes: &[u8]) -> Result<(), IpcFailure> {
            let start = span.offset as usize;
            let mut memory = self.0.lock().unwrap();
            match memory.get_mut(start..start + span.len as usize) {
                Some(target) if bytes.len() <= target.len() => {
                    target[..bytes.len()].copy_from_slice(bytes);
                    Ok(())
                }
                _ => Err(IpcFailure::new(port::ErrorCode::InvalidSpan, "out")),
            }
        }
    }

    fn message(bytes: &[u8], handles: &[u32]) -> port::Received {
        port::Received { bytes: bytes.to_vec(), handles: handles.to_vec(), call: Some(7), landed: None }
    }

    #[test]
    fn a_message_that_fits_is_written_with_its_handles() {
        let p = Memory(Mutex::new([0; 64]));
        let mut held = None;
        let buffer = port::Span { offset: 0, len: 8 };
        let handles = port::Span { offset: 16, len: 8 };
        let a = deliver(&p, &mut held, message(b"abc", &[0x0102_0304, 9]), buffer, handles).unwrap();
        assert_eq!((a.bytes, a.handles, a.call), (3, 2, Some(7)));
        let memory = *p.0.lock().unwrap();
        assert_eq!(&memory[..4], b"abc\0");
        assert_eq!(&memory[16..24], &[4, 3, 2, 1, 9, 0, 0, 0]);
        assert!(held.is_none());
    }

    #[test]
    fn a_message_that_does_not_fit_or_cannot_be_written_is_held() {
        let p = Memory(Mutex::new([0; 64]));
        let mut held = None;
        let small = port::Span { offset: 0, len: 2 };
        let a = deliver(&p, &mut held, message(b"abc", &[]), small, port::Span::default()).unwrap();
        assert_eq!(a.bytes, 3, "the arrival says how much room it needs");
        assert_eq!(*p.0.lock().unwrap(), [0; 64], "nothing written");
        assert!(nothing_held(&held).is_err(), "a second receive is refused while one is held");
        let r = held.take().unwrap();
        let outside = port::Span { offset: 60, len: 8 };
        let e = deliver(&p, &mut held, r, outside, port::Span::default()).unwrap_err();
        assert_eq!(e.code, port::ErrorCode::InvalidSpan);
        assert_eq!(held.as_ref().map(|r| r.bytes.as_slice()), Some(&b"abc"[..]), "kept for collect");
        let too_many_handles = deliver(&p, &mut None, message(b"", &[1, 2]), small, port::Span { offset: 8, len: 4 });
        assert_eq!(too_many_handles.unwrap().handles, 2);
    }

    #[test]
    fn rights_round_trip_through_bits() {
        for bits in 0..8 {
            assert_eq!(rights_to_bits(rights_from_bits(bits)), bits);
        }
        assert_eq!(rights_to_bits(Rights::READ | Rights::GRANT), 5);
        assert_eq!(rights_from_bits(0xf8), Rights::empty());
    }
}
