//! `wasi:io/streams`: the input stream (stdin, always at end of file) and the output streams
//! (stdout and stderr, always ready, unbounded: every write is printed), the streams of files
//! (`filesystem.rs`), whose reads and writes are requests to the file system service, and the
//! streams of TCP connections (`sockets.rs`), requests to the network stack.

use alloc::vec::Vec;

use wasmtime::component::Resource;

use mica_device::files::{APPEND, MAX_DATA_BYTES};

use super::InstanceState;
use super::filesystem::stream_error;
use super::poll::Pollable;
use super::sockets::{Connection, StreamEnd, WRITE_BUDGET as SOCKET_WRITE_BUDGET};
use super::wasi::io::streams::{Host, HostInputStream, HostOutputStream, StreamError};
use crate::platform::OutputKind;

/// An input stream.
#[derive(Debug)]
pub enum InputStream {
    /// A stream with nothing in it (stdin).
    Empty,
    /// A file's bytes from `offset` on.
    File {
        /// The grant it was opened through.
        grant: usize,
        /// The file's handle at its service.
        handle: u64,
        /// Where the next read starts.
        offset: u64,
    },
    /// What a TCP connection receives.
    Socket(Connection),
}

/// An output stream.
#[derive(Debug)]
pub enum OutputStream {
    /// The component's stdout.
    Stdout,
    /// The component's stderr.
    Stderr,
    /// A file, written from `offset` on ([`APPEND`]: at its end).
    File {
        /// The grant it was opened through.
        grant: usize,
        /// The file's handle at its service.
        handle: u64,
        /// Where the next write goes.
        offset: u64,
    },
    /// What a TCP connection sends (what the stack has not taken yet waits in the
    /// instance's `NetState`, where a shutdown finds it too).
    Socket(Connection),
}

/// How much a single write to the console may carry (what `check-write` promises).
const WRITE_BUDGET: u64 = 64 * 1024;

/// How much a single write to a file may carry: one request of the files protocol.
const FILE_WRITE_BUDGET: u64 = MAX_DATA_BYTES as u64;

type StreamResult<T> = wasmtime::Result<Result<T, StreamError>>;

impl Host for InstanceState {}

impl InstanceState {
    fn write_to(&mut self, s: &Resource<OutputStream>, bytes: &[u8]) -> StreamResult<()> {
        let kind = match *self.table.get(s)? {
            OutputStream::Stdout => OutputKind::Stdout,
            OutputStream::Stderr => OutputKind::Stderr,
            OutputStream::File { grant, handle, offset } => {
                return self.write_to_file(s, (grant, handle, offset), bytes);
            }
            OutputStream::Socket(c) => return self.write_to_socket(c, bytes, false),
        };
        self.write_output(kind, bytes);
        Ok(Ok(()))
    }

    /// Adds `bytes` to what connection `c` has to send and sends what the stack takes now
    /// (`wait`: all of it).
    fn write_to_socket(&mut self, c: Connection, bytes: &[u8], wait: bool) -> StreamResult<()> {
        let sent = self.socket_send(c, bytes, wait)?;
        self.stream_result(sent)
    }

    /// A socket stream's outcome as the stream interface reports it.
    fn stream_result<T>(&mut self, r: Result<T, StreamEnd>) -> StreamResult<T> {
        Ok(match r {
            Ok(v) => Ok(v),
            Err(StreamEnd::Closed) => Err(StreamError::Closed),
            Err(StreamEnd::Failed(code, why)) => {
                Err(StreamError::LastOperationFailed(self.table.push(StreamEnd::io_error(code, why))?))
            }
        })
    }

    /// Writes `bytes` to the file stream `s`, which writes `(grant, handle, offset)`.
    fn write_to_file(&mut self, s: &Resource<OutputStream>, at: (usize, u64, u64), bytes: &[u8]) -> StreamResult<()> {
        let (grant, handle, offset) = at;
        match self.write_file(grant, handle, offset, bytes)? {
            Ok(written) => {
                if let OutputStream::File { offset, .. } = self.table.get_mut(s)?
                    && *offset != APPEND
                {
                    *offset += written;
                }
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(StreamError::LastOperationFailed(self.table.push(stream_error(e))?))),
        }
    }

    fn budget(&self, s: &Resource<OutputStream>) -> wasmtime::Result<u64> {
        Ok(match self.table.get(s)? {
            OutputStream::File { .. } => FILE_WRITE_BUDGET,
            OutputStream::Socket(c) => SOCKET_WRITE_BUDGET.saturating_sub(self.socket_pending(*c)) as u64,
            _ => WRITE_BUDGET,
        })
    }

    /// The connection of `s`, if it is a socket stream.
    fn socket(&self, s: &Resource<OutputStream>) -> wasmtime::Result<Option<Connection>> {
        Ok(match self.table.get(s)? {
            OutputStream::Socket(c) => Some(*c),
            _ => None,
        })
    }
}

impl HostOutputStream for InstanceState {
    fn check_write(&mut self, s: Resource<OutputStream>) -> StreamResult<u64> {
        if let Some(c) = self.socket(&s)? {
            // What the stack takes now makes room.
            if let Err(e) = self.write_to_socket(c, &[], false)? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(self.budget(&s)?))
    }

    fn write(&mut self, s: Resource<OutputStream>, contents: Vec<u8>) -> StreamResult<()> {
        let budget = self.budget(&s)?;
        if contents.len() as u64 > budget {
            return Err(wasmtime::format_err!("write of {} bytes exceeds check-write's {budget}", contents.len()));
        }
        self.write_to(&s, &contents)
    }

    fn blocking_write_and_flush(&mut self, s: Resource<OutputStream>, contents: Vec<u8>) -> StreamResult<()> {
        if let Some(c) = self.socket(&s)? {
            return self.write_to_socket(c, &contents, true);
        }
        self.write_to(&s, &contents)
    }

    fn flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        if let Some(c) = self.socket(&s)? {
            return self.write_to_socket(c, &[], false);
        }
        Ok(Ok(()))
    }

    fn blocking_flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        if let Some(c) = self.socket(&s)? {
            return self.write_to_socket(c, &[], true);
        }
        Ok(Ok(()))
    }

    fn subscribe(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Resource<Pollable>> {
        if let Some(c) = self.socket(&s)? {
            return Ok(self.table.push_child(Pollable::Output(c), &s)?);
        }
        Ok(self.table.push(Pollable::Ready)?)
    }

    fn write_zeroes(&mut self, s: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        let zeroes = alloc::vec![0u8; len.min(self.budget(&s)?) as usize];
        self.write_to(&s, &zeroes)
    }

    fn blocking_write_zeroes_and_flush(&mut self, s: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        if let Some(c) = self.socket(&s)? {
            let zeroes = alloc::vec![0u8; len.min(SOCKET_WRITE_BUDGET as u64) as usize];
            return self.write_to_socket(c, &zeroes, true);
        }
        self.write_zeroes(s, len)
    }

    fn splice(&mut self, s: Resource<OutputStream>, src: Resource<InputStream>, _len: u64) -> StreamResult<u64> {
        self.table.get(&s)?;
        self.table.get(&src)?;
        Ok(Err(StreamError::Closed))
    }

    fn blocking_splice(
        &mut self,
        s: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        self.splice(s, src, len)
    }

    fn drop(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<()> {
        // What a program wrote to a connection is sent before its stream goes.
        if let Some(c) = self.socket(&s)? {
            let _ = self.write_to_socket(c, &[], true)?;
        }
        self.table.delete(s)?;
        Ok(())
    }
}

impl HostInputStream for InstanceState {
    fn read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        let (grant, handle, offset) = match *self.table.get(&s)? {
            InputStream::Empty => return Ok(Err(StreamError::Closed)),
            InputStream::File { grant, handle, offset } => (grant, handle, offset),
            InputStream::Socket(c) => {
                let r = self.socket_read(c, len)?;
                return self.stream_result(r);
            }
        };
        match self.read_file(grant, handle, offset, len)? {
            // The end of the file ends the stream.
            Ok(data) if data.is_empty() && len > 0 => Ok(Err(StreamError::Closed)),
            Ok(data) => {
                if let InputStream::File { offset, .. } = self.table.get_mut(&s)? {
                    *offset += data.len() as u64;
                }
                Ok(Ok(data))
            }
            Err(e) => Ok(Err(StreamError::LastOperationFailed(self.table.push(stream_error(e))?))),
        }
    }

    fn blocking_read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        if let InputStream::Socket(c) = *self.table.get(&s)? {
            let r = self.socket_blocking_read(c, len)?;
            return self.stream_result(r);
        }
        self.read(s, len)
    }

    fn skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        Ok(self.read(s, len)?.map(|data| data.len() as u64))
    }

    fn blocking_skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        Ok(self.blocking_read(s, len)?.map(|data| data.len() as u64))
    }

    fn subscribe(&mut self, s: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        if let InputStream::Socket(c) = *self.table.get(&s)? {
            return Ok(self.table.push_child(Pollable::Input(c), &s)?);
        }
        Ok(self.table.push(Pollable::Ready)?)
    }

    fn drop(&mut self, s: Resource<InputStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}
