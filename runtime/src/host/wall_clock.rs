//! `wasi:clocks/wall-clock`: the platform's wall clock.

use super::InstanceState;
use super::wasi::clocks::wall_clock::{Datetime, Host};

impl Host for InstanceState {
    fn now(&mut self) -> wasmtime::Result<Datetime> {
        let (seconds, nanoseconds) = self.platform.wall_clock();
        Ok(Datetime { seconds, nanoseconds })
    }

    fn resolution(&mut self) -> wasmtime::Result<Datetime> {
        Ok(Datetime { seconds: 0, nanoseconds: 1 })
    }
}
