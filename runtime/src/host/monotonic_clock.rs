//! `wasi:clocks/monotonic-clock`: the kernel's monotonic clock, and pollables on it.

use wasmtime::component::Resource;

use super::InstanceState;
use super::poll::Pollable;
use super::wasi::clocks::monotonic_clock::{Duration, Host, Instant};

impl Host for InstanceState {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        Ok(self.platform.monotonic_ns())
    }

    fn resolution(&mut self) -> wasmtime::Result<Duration> {
        Ok(self.platform.monotonic_resolution_ns())
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<Pollable>> {
        Ok(self.table.push(Pollable::Deadline(when))?)
    }

    fn subscribe_duration(&mut self, when: Duration) -> wasmtime::Result<Resource<Pollable>> {
        let at = self.platform.monotonic_ns().saturating_add(when);
        Ok(self.table.push(Pollable::Deadline(at))?)
    }
}
