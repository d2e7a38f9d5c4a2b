//! `wasi:io/streams`: the input stream (stdin, always at end of file) and the output streams
//! (stdout and stderr, always ready, unbounded: every write is printed).

use alloc::vec::Vec;

use wasmtime::component::Resource;

use super::InstanceState;
use super::poll::Pollable;
use super::wasi::io::streams::{Host, HostInputStream, HostOutputStream, StreamError};
use crate::platform::OutputKind;

/// An input stream.
#[derive(Debug)]
pub enum InputStream {
    /// A stream with nothing in it (stdin).
    Empty,
}

/// An output stream.
#[derive(Debug)]
pub enum OutputStream {
    /// The component's stdout.
    Stdout,
    /// The component's stderr.
    Stderr,
}

impl OutputStream {
    fn kind(&self) -> OutputKind {
        match self {
            OutputStream::Stdout => OutputKind::Stdout,
            OutputStream::Stderr => OutputKind::Stderr,
        }
    }
}

/// How much a single write may carry (what `check-write` promises).
const WRITE_BUDGET: u64 = 64 * 1024;

type StreamResult<T> = wasmtime::Result<Result<T, StreamError>>;

impl Host for InstanceState {}

impl InstanceState {
    fn write_to(&mut self, s: &Resource<OutputStream>, bytes: &[u8]) -> StreamResult<()> {
        let kind = self.table.get(s)?.kind();
        self.write_output(kind, bytes);
        Ok(Ok(()))
    }
}

impl HostOutputStream for InstanceState {
    fn check_write(&mut self, s: Resource<OutputStream>) -> StreamResult<u64> {
        self.table.get(&s)?;
        Ok(Ok(WRITE_BUDGET))
    }

    fn write(&mut self, s: Resource<OutputStream>, contents: Vec<u8>) -> StreamResult<()> {
        if contents.len() as u64 > WRITE_BUDGET {
            return Err(wasmtime::format_err!(
                "write of {} bytes exceeds check-write's {WRITE_BUDGET}",
                contents.len()
            ));
        }
        self.write_to(&s, &contents)
    }

    fn blocking_write_and_flush(&mut self, s: Resource<OutputStream>, contents: Vec<u8>) -> StreamResult<()> {
        self.write_to(&s, &contents)
    }

    fn flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        self.table.get(&s)?;
        Ok(Ok(()))
    }

    fn blocking_flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        self.table.get(&s)?;
        Ok(Ok(()))
    }

    fn subscribe(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Resource<Pollable>> {
        self.table.get(&s)?;
        Ok(self.table.push(Pollable::Ready)?)
    }

    fn write_zeroes(&mut self, s: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        let zeroes = alloc::vec![0u8; len.min(WRITE_BUDGET) as usize];
        self.write_to(&s, &zeroes)
    }

    fn blocking_write_zeroes_and_flush(&mut self, s: Resource<OutputStream>, len: u64) -> StreamResult<()> {
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
        self.table.delete(s)?;
        Ok(())
    }
}

impl HostInputStream for InstanceState {
    fn read(&mut self, s: Resource<InputStream>, _len: u64) -> StreamResult<Vec<u8>> {
        match self.table.get(&s)? {
            InputStream::Empty => Ok(Err(StreamError::Closed)),
        }
    }

    fn blocking_read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        self.read(s, len)
    }

    fn skip(&mut self, s: Resource<InputStream>, _len: u64) -> StreamResult<u64> {
        match self.table.get(&s)? {
            InputStream::Empty => Ok(Err(StreamError::Closed)),
        }
    }

    fn blocking_skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        self.skip(s, len)
    }

    fn subscribe(&mut self, s: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        self.table.get(&s)?;
        Ok(self.table.push(Pollable::Ready)?)
    }

    fn drop(&mut self, s: Resource<InputStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}
