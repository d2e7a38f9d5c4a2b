//! The connection registry: the manifest's connections as *services*, and the channel ends the
//! registry holds for them.
//!
//! A manifest connection `{ from, to, name }` is a service `(to, name)`: one channel whose end A
//! every client (`from`) gets and whose end B the server (`to`) gets. The registry holds end A
//! while any client may still run, and end B until the server connects. When a server instance
//! ends and will be restarted, the service gets a new channel at once (requests made meanwhile
//! wait in its queue for the new instance); when it ends for good, `connect` says it is
//! unavailable. When every client has ended for good, the registry lets go of end A, so the
//! server's `receive` sees `peer-closed` once the clients' handles are gone too: a server can end
//! when it has no one left to serve.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use mica_ipc::ChannelEnd;
use mica_runtime::ipc::{ErrorCode, IpcFailure};

use super::channels::Channels;
use super::errors::{fail, ipc_error};
use super::space::Object;
use super::wakes::Wakes;

/// A manifest connection, by component index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The name both sides `connect` with.
    pub name: String,
    /// The client.
    pub from: usize,
    /// The server.
    pub to: usize,
}

/// A service: the channel that connects the clients of `(server, name)` to the server.
#[derive(Debug)]
struct Service {
    name: String,
    server: usize,
    clients: Vec<usize>,
    /// Clients that have not ended for good.
    clients_left: Vec<usize>,
    /// The current channel: (client end, server end).
    channel: Option<(ChannelEnd, ChannelEnd)>,
    /// Whether the registry holds the current client end.
    holds_a: bool,
    /// Whether the registry holds the current server end (the server has not connected yet).
    holds_b: bool,
    /// The server has ended for good.
    server_gone: bool,
}

impl Service {
    fn involves(&self, component: usize) -> bool {
        self.server == component || self.clients.contains(&component)
    }
}

/// What `connect` gives a component instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// The server end the registry holds for service `service`: the hold moves into the
    /// server's table ([`Registry::moved`] once it is there).
    Reserved {
        /// The service.
        service: usize,
        /// The end.
        end: ChannelEnd,
    },
    /// A new holder of this end.
    Shared(ChannelEnd),
}

/// The services and the components' names.
#[derive(Debug)]
pub(super) struct Registry {
    services: Vec<Service>,
    names: Vec<String>,
}

impl Registry {
    /// The services of a system of components named `names` (indexed as in the manifest) with
    /// these manifest connections, each with a new channel made in `channels`.
    pub(super) fn new(
        names: Vec<String>,
        connections: &[Connection],
        channels: &mut Channels,
        wakes: &mut Wakes,
    ) -> Result<Registry, IpcFailure> {
        let mut registry = Registry { services: Vec::new(), names };
        for c in connections {
            match registry.services.iter_mut().find(|s| s.server == c.to && s.name == c.name) {
                Some(service) => {
                    service.clients.push(c.from);
                    service.clients_left.push(c.from);
                }
                None => registry.services.push(Service {
                    name: c.name.clone(),
                    server: c.to,
                    clients: Vec::from([c.from]),
                    clients_left: Vec::from([c.from]),
                    channel: None,
                    holds_a: false,
                    holds_b: false,
                    server_gone: false,
                }),
            }
        }
        for i in 0..registry.services.len() {
            registry.renew(i, channels, wakes)?;
        }
        Ok(registry)
    }

    /// The name of component `component`.
    pub(super) fn name(&self, component: usize) -> Option<&str> {
        self.names.get(component).map(String::as_str)
    }

    /// Gives service `i` a new channel, held by the registry on both ends, after letting go of
    /// the registry's hold on the old one.
    fn renew(&mut self, i: usize, channels: &mut Channels, wakes: &mut Wakes) -> Result<(), IpcFailure> {
        self.release(i, channels, wakes);
        let (a, b) = channels.create().map_err(|e| ipc_error(e, None))?;
        channels.hold(Object::End(a));
        channels.hold(Object::End(b));
        let service = &mut self.services[i];
        service.channel = Some((a, b));
        service.holds_a = true;
        service.holds_b = true;
        Ok(())
    }

    /// Lets go of whatever the registry holds of service `i`'s channel.
    fn release(&mut self, i: usize, channels: &mut Channels, wakes: &mut Wakes) {
        let service = &mut self.services[i];
        let Some((a, b)) = service.channel else { return };
        let (holds_a, holds_b) = (service.holds_a, service.holds_b);
        service.holds_a = false;
        service.holds_b = false;
        if holds_a {
            channels.release(Object::End(a), wakes);
        }
        if holds_b {
            channels.release(Object::End(b), wakes);
        }
    }

    /// An instance of component `component` has ended and its component will run again: its
    /// services are renewed for the next instance (or, if that fails, ended).
    pub(super) fn instance_ended(&mut self, component: usize, channels: &mut Channels, wakes: &mut Wakes) {
        for i in 0..self.services.len() {
            // A server that never connected leaves its reserved end for the next instance.
            if self.services[i].server == component
                && !self.services[i].holds_b
                && self.renew(i, channels, wakes).is_err()
            {
                self.services[i].server_gone = true;
                self.release(i, channels, wakes);
            }
        }
    }

    /// Component `component` will not run again: its services end, and the services it is a
    /// client of let go of it. Idempotent.
    pub(super) fn component_ended(&mut self, component: usize, channels: &mut Channels, wakes: &mut Wakes) {
        for i in 0..self.services.len() {
            if self.services[i].server == component {
                self.services[i].server_gone = true;
                self.release(i, channels, wakes);
            } else if self.services[i].clients.contains(&component) {
                self.services[i].clients_left.retain(|&c| c != component);
                if self.services[i].clients_left.is_empty() && self.services[i].holds_a {
                    self.services[i].holds_a = false;
                    if let Some((a, _)) = self.services[i].channel {
                        channels.release(Object::End(a), wakes);
                    }
                }
            }
        }
    }

    /// What `connect(name)` from an instance of `component` gets: its end of the connection.
    pub(super) fn offer(&self, component: usize, name: &str, channels: &Channels) -> Result<Offer, IpcFailure> {
        let Some(i) = self.services.iter().position(|s| s.name == name && s.involves(component)) else {
            let mine: Vec<&str> =
                self.services.iter().filter(|s| s.involves(component)).map(|s| s.name.as_str()).collect();
            return Err(fail(
                ErrorCode::NoSuchConnection,
                format!(
                    "no connection named {name:?} in the manifest for this component (its connections: {})",
                    if mine.is_empty() { String::from("none") } else { mine.join(", ") }
                ),
            ));
        };
        let service = &self.services[i];
        let (Some((a, b)), false) = (service.channel, service.server_gone) else {
            let server_name = self.name(service.server).unwrap_or_default();
            return Err(fail(
                ErrorCode::Unavailable,
                format!("connection {name:?}: component {server_name} has ended and will not be started again"),
            ));
        };
        if service.server == component {
            if service.holds_b {
                return Ok(Offer::Reserved { service: i, end: b });
            }
            if !channels.is_held(b) {
                return Err(fail(ErrorCode::Unavailable, format!("connection {name:?}: this instance closed its end")));
            }
            Ok(Offer::Shared(b))
        } else {
            if !channels.is_held(a) {
                return Err(fail(ErrorCode::Unavailable, format!("connection {name:?} is closed")));
            }
            Ok(Offer::Shared(a))
        }
    }

    /// The reserved server end of service `service` ([`Offer::Reserved`]) is now in the server's
    /// table, with the registry's hold.
    pub(super) fn moved(&mut self, service: usize) {
        self.services[service].holds_b = false;
    }
}
