//! `wasi:cli/environment`: the arguments and variables from the manifest; no working directory.

use alloc::string::String;
use alloc::vec::Vec;

use super::InstanceState;
use super::wasi::cli::environment::Host;

impl Host for InstanceState {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.env.clone())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.args.clone())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}
