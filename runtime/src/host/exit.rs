//! `wasi:cli/exit`: ends the component with a status by unwinding out of it.

use core::fmt;

use super::InstanceState;
use super::wasi::cli::exit::Host;

/// The error a component's call ends with when it called `exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exited(pub u8);

impl fmt::Display for Exited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "component exited with status {}", self.0)
    }
}

impl core::error::Error for Exited {}

impl Host for InstanceState {
    fn exit(&mut self, status: Result<(), ()>) -> wasmtime::Result<()> {
        let code = if status.is_ok() { 0 } else { 1 };
        self.exit_status = Some(code);
        Err(wasmtime::Error::new(Exited(code)))
    }

    fn exit_with_code(&mut self, status_code: u8) -> wasmtime::Result<()> {
        self.exit_status = Some(status_code);
        Err(wasmtime::Error::new(Exited(status_code)))
    }
}
