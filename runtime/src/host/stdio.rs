//! `wasi:cli/stdin`, `wasi:cli/stdout`, `wasi:cli/stderr`: stdin is at end of file; stdout and
//! stderr go to the console, line by line, prefixed with the component's name.

use wasmtime::component::Resource;

use super::InstanceState;
use super::streams::{InputStream, OutputStream};
use super::wasi::cli::{stderr, stdin, stdout};

impl stdin::Host for InstanceState {
    fn get_stdin(&mut self) -> wasmtime::Result<Resource<InputStream>> {
        Ok(self.table.push(InputStream::Empty)?)
    }
}

impl stdout::Host for InstanceState {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<OutputStream>> {
        Ok(self.table.push(OutputStream::Stdout)?)
    }
}

impl stderr::Host for InstanceState {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<OutputStream>> {
        Ok(self.table.push(OutputStream::Stderr)?)
    }
}
