//! `wasi:cli/terminal-*`: a component's standard streams are never a terminal (they are the
//! console, line by line, or empty), so every `get-terminal-*` answers none and no terminal
//! handle ever exists. `std` programs built as libraries (`cdylib`, such as the compiler
//! component) import these interfaces.

use wasmtime::component::Resource;

use super::InstanceState;
use super::wasi::cli::{terminal_input, terminal_output, terminal_stderr, terminal_stdin, terminal_stdout};

/// The input side of a terminal: never made.
#[derive(Debug)]
pub enum TerminalInput {}

/// The output side of a terminal: never made.
#[derive(Debug)]
pub enum TerminalOutput {}

impl terminal_input::Host for InstanceState {}

impl terminal_input::HostTerminalInput for InstanceState {
    fn drop(&mut self, handle: Resource<TerminalInput>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl terminal_output::Host for InstanceState {}

impl terminal_output::HostTerminalOutput for InstanceState {
    fn drop(&mut self, handle: Resource<TerminalOutput>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl terminal_stdin::Host for InstanceState {
    fn get_terminal_stdin(&mut self) -> wasmtime::Result<Option<Resource<TerminalInput>>> {
        Ok(None)
    }
}

impl terminal_stdout::Host for InstanceState {
    fn get_terminal_stdout(&mut self) -> wasmtime::Result<Option<Resource<TerminalOutput>>> {
        Ok(None)
    }
}

impl terminal_stderr::Host for InstanceState {
    fn get_terminal_stderr(&mut self) -> wasmtime::Result<Option<Resource<TerminalOutput>>> {
        Ok(None)
    }
}
