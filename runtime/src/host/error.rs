//! `wasi:io/error`: the error resource of a failed stream operation.

use alloc::string::String;

use wasmtime::component::Resource;

use super::InstanceState;
use super::wasi::io::error::{Host, HostError};

/// A stream error's description, and the `wasi:filesystem` (a file stream's) or `wasi:sockets`
/// (a connection's) error behind it.
#[derive(Debug)]
pub struct IoError(
    pub String,
    pub Option<super::wasi::filesystem::types::ErrorCode>,
    pub Option<super::wasi::sockets::network::ErrorCode>,
);

impl Host for InstanceState {}

impl HostError for InstanceState {
    fn to_debug_string(&mut self, e: Resource<IoError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.0.clone())
    }

    fn drop(&mut self, e: Resource<IoError>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}
