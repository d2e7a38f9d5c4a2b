//! `wasi:io/poll`: pollables are ready now (the console streams), at a monotonic deadline (clock
//! subscriptions), or when the network stack says a socket is ready (`sockets.rs`). Blocking
//! waits on the platform's clock or in one held request to the stack, never spins.

use alloc::vec::Vec;

use wasmtime::component::Resource;

use super::InstanceState;
use super::sockets::{Connection, Readiness};
use super::wasi::io::poll::{Host, HostPollable};

/// What a pollable waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pollable {
    /// Always ready.
    Ready,
    /// Ready once the monotonic clock reaches this many nanoseconds.
    Deadline(u64),
    /// A connection's input stream: ready when a read would not come back empty.
    Input(Connection),
    /// A connection's output stream: ready when `check-write` would not say 0.
    Output(Connection),
    /// The TCP socket with this table index: ready when its connect finished or a connection
    /// waits to be accepted.
    Tcp(u32),
    /// A UDP socket's datagram stream: ready when a datagram waits (readable) or the stack
    /// would queue one (writable).
    Datagrams(Connection, mica_device::sockets::Interest),
}

impl Host for InstanceState {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        if pollables.is_empty() {
            return Err(wasmtime::format_err!("wasi:io/poll.poll called with an empty list"));
        }
        let states: Vec<Readiness> = pollables
            .iter()
            .map(|p| {
                let p = *self.table.get(p)?;
                self.readiness(&p)
            })
            .collect::<wasmtime::Result<_>>()?;
        self.wait_ready(&states)
    }
}

impl InstanceState {
    /// Waits until at least one of `states` is ready; their positions.
    fn wait_ready(&mut self, states: &[Readiness]) -> wasmtime::Result<Vec<u32>> {
        let now = self.platform.monotonic_ns();
        let due = |r: &Readiness, now: u64| match *r {
            Readiness::Now => true,
            Readiness::At(ns) => ns <= now,
            Readiness::Socket(..) => false,
        };
        let earliest = states
            .iter()
            .filter_map(|r| match *r {
                Readiness::Now => Some(0),
                Readiness::At(ns) => Some(ns),
                Readiness::Socket(..) => None,
            })
            .min();
        let sockets: Vec<(u32, (u32, mica_device::sockets::Interest))> = (0u32..)
            .zip(states)
            .filter_map(|(i, r)| match *r {
                Readiness::Socket(id, interest) => Some((i, (id, interest))),
                _ => None,
            })
            .collect();
        let mut ready_sockets = Vec::new();
        if sockets.is_empty() {
            if let Some(at) = earliest
                && at > now
            {
                self.platform.sleep_until(at);
                self.check_killed()?;
            }
        } else {
            // One held question to the stack, for as long as the earliest deadline allows.
            let timeout = earliest.map(|at| at.saturating_sub(now));
            let interests = sockets.iter().map(|(_, s)| *s).collect();
            for position in self.poll_sockets(interests, timeout)? {
                if let Some((i, _)) = sockets.get(position as usize) {
                    ready_sockets.push(*i);
                }
            }
        }
        let now = self.platform.monotonic_ns();
        Ok((0u32..).zip(states).filter(|(i, r)| due(r, now) || ready_sockets.contains(i)).map(|(i, _)| i).collect())
    }
}

impl HostPollable for InstanceState {
    fn ready(&mut self, p: Resource<Pollable>) -> wasmtime::Result<bool> {
        let p = *self.table.get(&p)?;
        Ok(match self.readiness(&p)? {
            Readiness::Now => true,
            Readiness::At(ns) => ns <= self.platform.monotonic_ns(),
            Readiness::Socket(id, interest) => !self.poll_sockets(alloc::vec![(id, interest)], Some(0))?.is_empty(),
        })
    }

    fn block(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        let p = *self.table.get(&p)?;
        let state = self.readiness(&p)?;
        self.wait_ready(&[state])?;
        Ok(())
    }

    fn drop(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        self.table.delete(p)?;
        Ok(())
    }
}
