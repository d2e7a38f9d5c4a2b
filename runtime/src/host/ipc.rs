//! `mica:kernel/ipc`: channels between components. Each call is passed to the component's
//! [`IpcPort`](crate::ipc::IpcPort), which the kernel implements; this file only translates WIT
//! values. A component run without a port (hosted on Linux) gets a `not-permitted` error.

use alloc::string::String;
use alloc::vec::Vec;

use super::InstanceState;
use super::mica::kernel::ipc::{Error, ErrorCode, Handle, Host, Message, Received, Rights};
use crate::ipc::{self as port, IpcFailure, IpcPort};

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

impl Host for InstanceState {
    fn connect(&mut self, name: String) -> wasmtime::Result<Result<Handle, Error>> {
        Ok(self.port().and_then(|p| p.connect(&name).map_err(Error::from)))
    }

    fn create_channel(&mut self) -> wasmtime::Result<Result<(Handle, Handle), Error>> {
        Ok(self.port().and_then(|p| p.create_channel().map_err(Error::from)))
    }

    fn send(&mut self, end: Handle, message: Message, timeout_ns: Option<u64>) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.port().and_then(|p| p.send(end, message.bytes, message.handles, timeout_ns).map_err(Error::from)))
    }

    fn receive(&mut self, end: Handle, timeout_ns: Option<u64>) -> wasmtime::Result<Result<Received, Error>> {
        Ok(self.port().and_then(|p| p.receive(end, timeout_ns).map(received).map_err(Error::from)))
    }

    fn call(
        &mut self,
        end: Handle,
        request: Message,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<Result<Message, Error>> {
        Ok(self.port().and_then(|p| {
            p.call(end, request.bytes, request.handles, timeout_ns)
                .map(|r| Message { bytes: r.bytes, handles: r.handles })
                .map_err(Error::from)
        }))
    }

    fn reply(&mut self, end: Handle, call: u64, message: Message) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.port().and_then(|p| p.reply(end, call, message.bytes, message.handles).map_err(Error::from)))
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

    #[test]
    fn rights_round_trip_through_bits() {
        for bits in 0..8 {
            assert_eq!(rights_to_bits(rights_from_bits(bits)), bits);
        }
        assert_eq!(rights_to_bits(Rights::READ | Rights::GRANT), 5);
        assert_eq!(rights_from_bits(0xf8), Rights::empty());
    }
}
