//! `wasi:io/poll`: pollables are either ready now (the console streams) or ready at a monotonic
//! deadline (clock subscriptions). Blocking waits on the platform's clock, never spins.

use alloc::vec::Vec;

use wasmtime::component::Resource;

use super::InstanceState;
use super::wasi::io::poll::{Host, HostPollable};

/// What a pollable waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pollable {
    /// Always ready.
    Ready,
    /// Ready once the monotonic clock reaches this many nanoseconds.
    Deadline(u64),
}

impl Pollable {
    fn ready_at(self) -> u64 {
        match self {
            Pollable::Ready => 0,
            Pollable::Deadline(ns) => ns,
        }
    }
}

impl Host for InstanceState {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        if pollables.is_empty() {
            return Err(wasmtime::format_err!("wasi:io/poll.poll called with an empty list"));
        }
        let at: Vec<u64> =
            pollables.iter().map(|p| Ok(self.table.get(p)?.ready_at())).collect::<wasmtime::Result<_>>()?;
        let earliest = at.iter().copied().min().unwrap_or(0);
        if earliest > self.platform.monotonic_ns() {
            self.platform.sleep_until(earliest);
            self.check_killed()?;
        }
        let now = self.platform.monotonic_ns();
        Ok(at.iter().enumerate().filter(|(_, t)| **t <= now).map(|(i, _)| i as u32).collect())
    }
}

impl HostPollable for InstanceState {
    fn ready(&mut self, p: Resource<Pollable>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&p)?.ready_at() <= self.platform.monotonic_ns())
    }

    fn block(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        let at = self.table.get(&p)?.ready_at();
        if at > self.platform.monotonic_ns() {
            self.platform.sleep_until(at);
            self.check_killed()?;
        }
        Ok(())
    }

    fn drop(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        self.table.delete(p)?;
        Ok(())
    }
}
