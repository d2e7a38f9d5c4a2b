//! The kernel's IPC objects as plain logic: every component instance's handle table (its
//! *space*), the channels, how many holders each channel end has, the manifest's connections,
//! and the results parked threads wake up to. The bare-metal side (`blocking.rs`) wraps this in a
//! lock and turns "parked" and "wake" into scheduler calls; everything here is deterministic and
//! host-tested.
//!
//! **Holders.** A channel end stays open while something holds it: a handle in a space, a message
//! in flight that carries it, or the connection registry (which holds the ends a connection
//! hands out through `connect`). When the last holder lets go, the end is closed, and the threads
//! parked on the channel wake with `peer-closed`.
//!
//! **Connections.** A manifest connection `{ from, to, name }` is a *service* `(to, name)`: one
//! channel whose end A every client (`from`) gets and whose end B the server (`to`) gets. The
//! registry holds end A while any client may still run, and end B until the server connects.
//! When a server instance ends and will be restarted, the service gets a new channel at once
//! (requests made meanwhile wait in its queue for the new instance); when it ends for good,
//! `connect` says it is unavailable. When every client has ended for good, the registry lets go
//! of end A, so the server's `receive` sees `peer-closed` once the clients' handles are gone too:
//! a server can end when it has no one left to serve.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use mica_caps::{CapError, Handle, HandleTable, Rights};
use mica_ipc::{
    CallId, ChannelEnd, ChannelTable, Completion, Delivery, IpcError, Limits, Message, Mode, RecvOk, SendError, SendOk,
    WaiterId, Wake,
};
use mica_runtime::ipc::{ErrorCode, IpcFailure, Received, RightsBits};

/// The bounds of every channel: 16 queued messages each way, of at most 64 KiB and 16 handles.
pub const CHANNEL_LIMITS: Limits = Limits { capacity: 16, max_bytes: 64 * 1024, max_handles: 16 };

/// The most channels that exist at once, system-wide.
pub const MAX_CHANNELS: usize = 4096;

/// A kernel object a handle can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// One end of a channel.
    End(ChannelEnd),
}

/// An object with rights, as it travels in a message.
pub type Transfer = (Object, Rights);

/// Names one component instance's space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpaceId(u64);

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

/// One component instance's handles.
#[derive(Debug)]
struct Space {
    component: usize,
    table: HandleTable<Object>,
    may_create: bool,
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

/// What a blocking operation that did not complete at once is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A send into a full queue.
    Send,
    /// A receive on an empty queue.
    Receive,
    /// A call, for its reply.
    Call,
}

/// The result of an operation that may block: done, or parked until a wake (or its deadline).
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Done, with this result.
    Done(Result<T, IpcFailure>),
    /// The thread is recorded as a waiter: park it, then call [`IpcState::finish`].
    Parked(Pending),
}

/// What a completed blocking operation gives back.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// A send went through.
    Sent,
    /// A message (or a reply) arrived.
    Received(Received),
}

/// The kernel's IPC objects. See the module documentation.
#[derive(Debug)]
pub struct IpcState {
    channels: ChannelTable<Transfer>,
    holders: BTreeMap<ChannelEnd, usize>,
    spaces: BTreeMap<SpaceId, Space>,
    next_space: u64,
    services: Vec<Service>,
    names: Vec<String>,
    /// Results for parked threads, waiting for them to run (a few at a time: a list, whose
    /// memory is kept, beats a map that allocates a node per entry).
    completions: Vec<(WaiterId, Completion<Transfer>)>,
    /// Threads to unpark ([`drain_wakes`](Self::drain_wakes); the memory is kept).
    to_wake: Vec<WaiterId>,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> IpcFailure {
    IpcFailure::new(code, message)
}

/// Rights as the runtime passes them, to the kernel's.
fn rights_from_bits(bits: RightsBits) -> Rights {
    Rights::from_bits_truncate(bits)
}

impl IpcState {
    /// The state for a system of components named `names` (indexed as in the manifest) and its
    /// manifest connections; every service gets its channel now.
    pub fn new(names: Vec<String>, connections: &[Connection]) -> Result<IpcState, IpcFailure> {
        let mut state = IpcState {
            channels: ChannelTable::new(MAX_CHANNELS),
            holders: BTreeMap::new(),
            spaces: BTreeMap::new(),
            next_space: 1,
            services: Vec::new(),
            names,
            completions: Vec::new(),
            to_wake: Vec::new(),
        };
        for c in connections {
            match state.services.iter_mut().find(|s| s.server == c.to && s.name == c.name) {
                Some(service) => {
                    service.clients.push(c.from);
                    service.clients_left.push(c.from);
                }
                None => state.services.push(Service {
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
        for i in 0..state.services.len() {
            state.renew(i)?;
        }
        Ok(state)
    }

    /// Gives service `i` a new channel, held by the registry on both ends, after letting go of
    /// the registry's hold on the old one.
    fn renew(&mut self, i: usize) -> Result<(), IpcFailure> {
        self.release_registry(i);
        let (a, b) = self.channels.create(CHANNEL_LIMITS).map_err(|e| self.ipc_error(e, None))?;
        self.holders.insert(a, 1);
        self.holders.insert(b, 1);
        let service = &mut self.services[i];
        service.channel = Some((a, b));
        service.holds_a = true;
        service.holds_b = true;
        Ok(())
    }

    /// Lets go of whatever the registry holds of service `i`'s channel.
    fn release_registry(&mut self, i: usize) {
        let service = &mut self.services[i];
        let Some((a, b)) = service.channel else { return };
        let (holds_a, holds_b) = (service.holds_a, service.holds_b);
        service.holds_a = false;
        service.holds_b = false;
        if holds_a {
            self.release(Object::End(a));
        }
        if holds_b {
            self.release(Object::End(b));
        }
    }

    /// A new, empty handle table for an instance of component `component`.
    pub fn open_space(&mut self, component: usize, capacity: u16, may_create: bool) -> SpaceId {
        let id = SpaceId(self.next_space);
        self.next_space += 1;
        self.spaces.insert(id, Space { component, table: HandleTable::new(capacity), may_create });
        id
    }

    /// The instance behind `space` has ended: every handle it holds is closed. `restart` says
    /// whether its component will run again; its services are renewed for the next instance, or
    /// (when it will not) ended, and the services it is a client of let go of it.
    pub fn close_space(&mut self, space: SpaceId, restart: bool) {
        let Some(mut closed) = self.spaces.remove(&space) else { return };
        let objects: Vec<Object> = closed.table.drain().map(|(_, object, _)| object).collect();
        for object in objects {
            self.release(object);
        }
        let component = closed.component;
        if !restart {
            self.component_ended(component);
            return;
        }
        for i in 0..self.services.len() {
            // A server that never connected leaves its reserved end for the next instance.
            if self.services[i].server == component && !self.services[i].holds_b && self.renew(i).is_err() {
                self.services[i].server_gone = true;
                self.release_registry(i);
            }
        }
    }

    /// Component `component` will not run again (it ended for good, or was refused before it
    /// ran): its services end, and the services it is a client of let go of it. Idempotent.
    pub fn component_ended(&mut self, component: usize) {
        for i in 0..self.services.len() {
            if self.services[i].server == component {
                self.services[i].server_gone = true;
                self.release_registry(i);
            } else if self.services[i].clients.contains(&component) {
                self.services[i].clients_left.retain(|&c| c != component);
                if self.services[i].clients_left.is_empty() && self.services[i].holds_a {
                    self.services[i].holds_a = false;
                    if let Some((a, _)) = self.services[i].channel {
                        self.release(Object::End(a));
                    }
                }
            }
        }
    }

    /// The threads to unpark, now that results for them are stored.
    pub fn drain_wakes(&mut self) -> impl Iterator<Item = WaiterId> + '_ {
        self.to_wake.drain(..)
    }

    /// The threads to unpark, as a list (tests).
    #[cfg(test)]
    pub fn take_wakes(&mut self) -> Vec<WaiterId> {
        self.drain_wakes().collect()
    }

    /// How many channels exist (tests and reports).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// How many handles `space` holds.
    pub fn handle_count(&self, space: SpaceId) -> usize {
        self.spaces.get(&space).map_or(0, |s| s.table.len())
    }

    fn space(&mut self, space: SpaceId) -> Result<&mut Space, IpcFailure> {
        self.spaces.get_mut(&space).ok_or_else(|| fail(ErrorCode::InvalidHandle, "this component instance has ended"))
    }

    /// One holder fewer for `object`; closes it when none is left, and so on for the handles in
    /// its undelivered messages.
    fn release(&mut self, object: Object) {
        let mut work = Vec::from([object]);
        while let Some(Object::End(end)) = work.pop() {
            let Some(count) = self.holders.get_mut(&end) else { continue };
            *count -= 1;
            if *count > 0 {
                continue;
            }
            self.holders.remove(&end);
            if let Ok(closed) = self.channels.close(end) {
                work.extend(closed.handles.into_iter().map(|(object, _)| object));
                for wake in closed.wakes {
                    self.store_wake(wake);
                }
            }
        }
    }

    fn hold(&mut self, object: Object) {
        let Object::End(end) = object;
        *self.holders.entry(end).or_insert(0) += 1;
    }

    fn store_wake(&mut self, wake: Wake<Transfer>) {
        // A waiter is parked in one operation at a time, so it has at most one result waiting.
        self.completions.push((wake.waiter, wake.completion));
        self.to_wake.push(wake.waiter);
    }

    fn cap_error(&self, space: SpaceId, e: CapError) -> IpcFailure {
        match e {
            CapError::InvalidHandle { handle } => fail(
                ErrorCode::InvalidHandle,
                format!("handle {handle} is not a handle of this component (never issued to it, or closed)"),
            ),
            CapError::MissingRights { .. } => fail(ErrorCode::MissingRights, format!("{e}")),
            CapError::RightsEscalation { .. } => fail(ErrorCode::RightsEscalation, format!("{e}")),
            CapError::TableFull { capacity } => {
                let name = self.spaces.get(&space).and_then(|s| self.names.get(s.component));
                fail(
                    ErrorCode::TableFull,
                    format!(
                        "the handle table of component {} is full ({capacity} handles; the manifest's `handles` sets it)",
                        name.map_or("?", String::as_str)
                    ),
                )
            }
            CapError::OutOfMemory => fail(ErrorCode::OutOfMemory, format!("{e}")),
        }
    }

    fn ipc_error(&self, e: IpcError, handle: Option<Handle>) -> IpcFailure {
        let on = |what: &str| match handle {
            Some(h) => format!("{what} of handle {h}"),
            None => String::from(what),
        };
        match e {
            IpcError::PeerClosed { .. } => fail(
                ErrorCode::PeerClosed,
                format!("{} is closed: its component ended or let go of it", on("the peer")),
            ),
            IpcError::Full { capacity, .. } => {
                fail(ErrorCode::Full, format!("{} is full ({capacity} messages)", on("the queue")))
            }
            IpcError::Empty { .. } => fail(ErrorCode::Empty, format!("no message is waiting on {}", on("the end"))),
            IpcError::MessageTooLarge { .. } => fail(ErrorCode::MessageTooLarge, format!("{e}")),
            IpcError::TooManyHandles { .. } => fail(ErrorCode::TooManyHandles, format!("{e}")),
            IpcError::UnknownCall { call, .. } => fail(
                ErrorCode::UnknownCall,
                format!(
                    "call {call} awaits no reply on {} (never received there, already answered, or its caller gave up)",
                    on("the end")
                ),
            ),
            IpcError::TableFull { capacity } => {
                fail(ErrorCode::TooManyChannels, format!("the kernel holds as many channels as it can ({capacity})"))
            }
            IpcError::OutOfMemory => fail(ErrorCode::OutOfMemory, format!("{e}")),
            IpcError::NoSuchChannel { .. }
            | IpcError::EndClosed { .. }
            | IpcError::UnknownWaiter { .. }
            | IpcError::WaiterBusy { .. } => fail(ErrorCode::InvalidHandle, format!("{}: {e}", on("the end"))),
        }
    }

    /// The channel end `handle` names in `space`, if it has `rights`.
    fn end(&mut self, space: SpaceId, handle: u32, rights: Rights) -> Result<ChannelEnd, IpcFailure> {
        let handle = Handle::from_bits(handle);
        let found = self.space(space)?.table.get(handle, rights).copied();
        match found {
            Ok(Object::End(end)) => Ok(end),
            Err(e) => Err(self.cap_error(space, e)),
        }
    }

    /// Puts `object` into `space` as a new handle with `rights` (one more holder).
    fn insert_new(&mut self, space: SpaceId, object: Object, rights: Rights) -> Result<u32, IpcFailure> {
        let inserted = self.space(space)?.table.insert(object, rights);
        match inserted {
            Ok(h) => {
                self.hold(object);
                Ok(h.to_bits())
            }
            Err(e) => Err(self.cap_error(space, e)),
        }
    }

    /// Takes the handles of an outgoing message out of `space` (each needs `grant`; none twice).
    /// All or nothing: if one is refused, none is taken.
    fn take_handles(&mut self, space: SpaceId, handles: &[u32]) -> Result<Vec<Transfer>, IpcFailure> {
        for (i, h) in handles.iter().enumerate() {
            if handles[..i].contains(h) {
                return Err(fail(
                    ErrorCode::DuplicateHandle,
                    format!("handle {} appears twice in the message", Handle::from_bits(*h)),
                ));
            }
        }
        for &h in handles {
            let checked = self.space(space)?.table.get(Handle::from_bits(h), Rights::GRANT).map(|_| ());
            checked.map_err(|e| self.cap_error(space, e))?;
        }
        let table = &mut self.space(space)?.table;
        Ok(handles.iter().filter_map(|&h| table.take_for_transfer(Handle::from_bits(h)).ok()).collect())
    }

    /// Gives the handles of an undelivered message back to `space` (closing any that no longer
    /// fit); returns their handle values.
    fn give_back(&mut self, space: SpaceId, transfers: Vec<Transfer>) -> Vec<u32> {
        let mut returned = Vec::with_capacity(transfers.len());
        for (object, rights) in transfers {
            let inserted = self.spaces.get_mut(&space).map(|s| s.table.insert(object, rights));
            match inserted {
                Some(Ok(h)) => returned.push(h.to_bits()),
                _ => self.release(object),
            }
        }
        returned
    }

    /// A refused message: its handles go back to the sender, listed in the failure.
    fn refused(&mut self, space: SpaceId, e: SendError<Transfer>, handle: Handle) -> IpcFailure {
        let mut failure = self.ipc_error(e.error, Some(handle));
        failure.returned = self.give_back(space, e.message.handles);
        failure
    }

    /// A message arriving in `space`: its handles join the table. If they do not all fit, the
    /// message is dropped (its handles closed) and the receiver gets `table-full`.
    fn accept(
        &mut self,
        space: SpaceId,
        message: Message<Transfer>,
        call: Option<CallId>,
    ) -> Result<Received, IpcFailure> {
        let count = message.handles.len();
        let mut handles = Vec::with_capacity(count);
        let mut rest = message.handles.into_iter();
        for (object, rights) in rest.by_ref() {
            let inserted = self.spaces.get_mut(&space).map(|s| s.table.insert(object, rights));
            match inserted {
                Some(Ok(h)) => handles.push(h),
                Some(Err(e)) => {
                    // Undo: the message is dropped whole.
                    self.release(object);
                    for h in handles.drain(..) {
                        if let Some(Ok((object, _))) = self.spaces.get_mut(&space).map(|s| s.table.remove(h)) {
                            self.release(object);
                        }
                    }
                    for (object, _) in rest {
                        self.release(object);
                    }
                    let mut failure = self.cap_error(space, e);
                    failure.message = format!(
                        "a message arrived carrying {count} handles, which do not fit: {}; the message was dropped and its handles closed",
                        failure.message
                    );
                    return Err(failure);
                }
                None => {
                    self.release(object);
                    for (object, _) in rest {
                        self.release(object);
                    }
                    return Err(fail(ErrorCode::InvalidHandle, "this component instance has ended"));
                }
            }
        }
        Ok(Received {
            bytes: message.bytes,
            handles: handles.into_iter().map(Handle::to_bits).collect(),
            call: call.map(CallId::to_bits),
        })
    }

    /// `connect`: a new handle to this instance's end of connection `name`.
    pub fn connect(&mut self, space: SpaceId, name: &str) -> Result<u32, IpcFailure> {
        let component = self.space(space)?.component;
        let Some(i) = self
            .services
            .iter()
            .position(|s| s.name == name && (s.server == component || s.clients.contains(&component)))
        else {
            let mine: Vec<&str> = self
                .services
                .iter()
                .filter(|s| s.server == component || s.clients.contains(&component))
                .map(|s| s.name.as_str())
                .collect();
            return Err(fail(
                ErrorCode::NoSuchConnection,
                format!(
                    "no connection named {name:?} in the manifest for this component (its connections: {})",
                    if mine.is_empty() { String::from("none") } else { mine.join(", ") }
                ),
            ));
        };
        let server_name = self.names.get(self.services[i].server).cloned().unwrap_or_default();
        let service = &self.services[i];
        let (Some((a, b)), false) = (service.channel, service.server_gone) else {
            return Err(fail(
                ErrorCode::Unavailable,
                format!("connection {name:?}: component {server_name} has ended and will not be started again"),
            ));
        };
        let rights = Rights::all();
        if service.server == component {
            if service.holds_b {
                // The registry's hold moves into the server's table.
                let inserted = self.space(space)?.table.insert(Object::End(b), rights);
                return match inserted {
                    Ok(h) => {
                        self.services[i].holds_b = false;
                        Ok(h.to_bits())
                    }
                    Err(e) => Err(self.cap_error(space, e)),
                };
            }
            if !self.holders.contains_key(&b) {
                return Err(fail(ErrorCode::Unavailable, format!("connection {name:?}: this instance closed its end")));
            }
            self.insert_new(space, Object::End(b), rights)
        } else {
            if !self.holders.contains_key(&a) {
                return Err(fail(ErrorCode::Unavailable, format!("connection {name:?} is closed")));
            }
            self.insert_new(space, Object::End(a), rights)
        }
    }

    /// `create-channel`: both ends of a new channel, with every right.
    pub fn create_channel(&mut self, space: SpaceId) -> Result<(u32, u32), IpcFailure> {
        if !self.space(space)?.may_create {
            return Err(fail(
                ErrorCode::NotPermitted,
                "this component may not create channels (its manifest entry does not set `create_channels = true`)",
            ));
        }
        let table = &self.space(space)?.table;
        if table.capacity() - table.len() < 2 {
            let capacity = table.capacity();
            return Err(self.cap_error(space, CapError::TableFull { capacity }));
        }
        let (a, b) = self.channels.create(CHANNEL_LIMITS).map_err(|e| self.ipc_error(e, None))?;
        let ha = self.insert_new(space, Object::End(a), Rights::all());
        let hb = self.insert_new(space, Object::End(b), Rights::all());
        match (ha, hb) {
            (Ok(ha), Ok(hb)) => Ok((ha, hb)),
            (ha, hb) => {
                // Only out of memory gets here (room was checked): undo.
                for h in [ha.ok(), hb.ok()].into_iter().flatten() {
                    let _ = self.close(space, h);
                }
                for end in [a, b] {
                    if !self.holders.contains_key(&end) {
                        let _ = self.channels.close(end);
                    }
                }
                Err(fail(ErrorCode::OutOfMemory, "out of memory for the new channel's handles"))
            }
        }
    }

    /// Checks a message's size against the channel before any handle is taken out of the table.
    fn check_size(&self, end: ChannelEnd, bytes: usize, handles: usize) -> Result<(), IpcFailure> {
        let limits = self.channels.limits(end.channel).map_err(|e| self.ipc_error(e, None))?;
        if bytes > limits.max_bytes {
            return Err(self.ipc_error(IpcError::MessageTooLarge { bytes, limit: limits.max_bytes }, None));
        }
        if handles > limits.max_handles {
            return Err(self.ipc_error(IpcError::TooManyHandles { handles, limit: limits.max_handles }, None));
        }
        Ok(())
    }

    /// The first steps of sending on `handle`: its end (with `write`), the size check, and the
    /// message's handles taken out of the table. A failure here hands every handle back as it
    /// was: they are still in the table.
    fn outgoing(
        &mut self,
        space: SpaceId,
        handle: u32,
        bytes: usize,
        handles: &[u32],
    ) -> Result<(ChannelEnd, Vec<Transfer>), IpcFailure> {
        let taken = self
            .end(space, handle, Rights::WRITE)
            .and_then(|end| self.check_size(end, bytes, handles.len()).map(|()| end))
            .and_then(|end| self.take_handles(space, handles).map(|t| (end, t)));
        taken.map_err(|mut failure| {
            failure.returned = handles.to_vec();
            failure
        })
    }

    /// `send`: parks when the queue is full, unless `wait` is false.
    pub fn send(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        bytes: Vec<u8>,
        handles: Vec<u32>,
        wait: bool,
    ) -> Step<()> {
        let (end, transfers) = match self.outgoing(space, handle, bytes.len(), &handles) {
            Ok(t) => t,
            Err(e) => return Step::Done(Err(e)),
        };
        let mode = if wait { Mode::Blocking(waiter) } else { Mode::NonBlocking };
        match self.channels.send(end, Message::new(bytes, transfers), mode) {
            Ok(SendOk::Done { wake }) => {
                if let Some(wake) = wake {
                    self.store_wake(wake);
                }
                Step::Done(Ok(()))
            }
            Ok(SendOk::Parked) => Step::Parked(Pending::Send),
            Err(e) => Step::Done(Err(self.refused(space, e, Handle::from_bits(handle)))),
        }
    }

    /// `receive`: parks when nothing is waiting, unless `wait` is false.
    pub fn receive(&mut self, space: SpaceId, waiter: WaiterId, handle: u32, wait: bool) -> Step<Received> {
        let end = match self.end(space, handle, Rights::READ) {
            Ok(end) => end,
            Err(e) => return Step::Done(Err(e)),
        };
        let mode = if wait { Mode::Blocking(waiter) } else { Mode::NonBlocking };
        match self.channels.recv(end, mode) {
            Ok(RecvOk::Received { delivery: Delivery { message, call }, wake }) => {
                if let Some(wake) = wake {
                    self.store_wake(wake);
                }
                Step::Done(self.accept(space, message, call))
            }
            Ok(RecvOk::Parked) => Step::Parked(Pending::Receive),
            Err(e) => Step::Done(Err(self.ipc_error(e, Some(Handle::from_bits(handle))))),
        }
    }

    /// `call`: sends the request and parks for the reply.
    pub fn call(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        bytes: Vec<u8>,
        handles: Vec<u32>,
    ) -> Step<Received> {
        let (end, transfers) = match self.outgoing(space, handle, bytes.len(), &handles) {
            Ok(t) => t,
            Err(e) => return Step::Done(Err(e)),
        };
        match self.channels.call(end, Message::new(bytes, transfers), waiter) {
            Ok(ok) => {
                if let Some(wake) = ok.wake {
                    self.store_wake(wake);
                }
                Step::Parked(Pending::Call)
            }
            Err(e) => Step::Done(Err(self.refused(space, e, Handle::from_bits(handle)))),
        }
    }

    /// `reply`: answers request `call` received on `handle`.
    pub fn reply(
        &mut self,
        space: SpaceId,
        handle: u32,
        call: u64,
        bytes: Vec<u8>,
        handles: Vec<u32>,
    ) -> Result<(), IpcFailure> {
        let (end, transfers) = self.outgoing(space, handle, bytes.len(), &handles)?;
        match self.channels.reply(end, CallId::from_bits(call), Message::new(bytes, transfers)) {
            Ok(wake) => {
                self.store_wake(wake);
                Ok(())
            }
            Err(e) => Err(self.refused(space, e, Handle::from_bits(handle))),
        }
    }

    /// Completes a parked operation: its result if a wake stored one, else (when `expired`) the
    /// wait is cancelled and it fails with `timed-out`, else `None` (park again).
    pub fn finish(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        pending: Pending,
        expired: bool,
    ) -> Option<Result<Finished, IpcFailure>> {
        let stored = self.completions.iter().position(|(w, _)| *w == waiter);
        if let Some((_, completion)) = stored.map(|i| self.completions.swap_remove(i)) {
            return Some(match completion {
                Completion::Sent => Ok(Finished::Sent),
                Completion::Received(Delivery { message, call }) => {
                    self.accept(space, message, call).map(Finished::Received)
                }
                Completion::Replied(message) => self.accept(space, message, None).map(Finished::Received),
                Completion::Failed { error, returned } => {
                    let mut failure = self.ipc_error(error, None);
                    if let Some(message) = returned {
                        failure.returned = self.give_back(space, message.handles);
                    }
                    Err(failure)
                }
            });
        }
        if !expired {
            return None;
        }
        let returned = match self.channels.cancel_wait(waiter) {
            Ok(Some(message)) => self.give_back(space, message.handles),
            _ => Vec::new(),
        };
        let what = match pending {
            Pending::Send => "the queue had no room",
            Pending::Receive => "no message arrived",
            Pending::Call => "no reply arrived",
        };
        Some(Err(IpcFailure { code: ErrorCode::TimedOut, message: format!("timed out: {what}"), returned }))
    }

    /// `duplicate`: a second handle to the same object with `rights` (no more than it has).
    pub fn duplicate(&mut self, space: SpaceId, handle: u32, rights: RightsBits) -> Result<u32, IpcFailure> {
        let duplicated = self.space(space)?.table.duplicate(Handle::from_bits(handle), rights_from_bits(rights));
        match duplicated {
            Ok(h) => {
                let object = *self
                    .space(space)?
                    .table
                    .get(h, Rights::empty())
                    .map_err(|e| fail(ErrorCode::InvalidHandle, format!("{e}")))?;
                self.hold(object);
                Ok(h.to_bits())
            }
            Err(e) => Err(self.cap_error(space, e)),
        }
    }

    /// `rights-of`.
    pub fn rights(&mut self, space: SpaceId, handle: u32) -> Result<RightsBits, IpcFailure> {
        let rights = self.space(space)?.table.rights(Handle::from_bits(handle));
        rights.map(|r| r.bits()).map_err(|e| self.cap_error(space, e))
    }

    /// `close`.
    pub fn close(&mut self, space: SpaceId, handle: u32) -> Result<(), IpcFailure> {
        let removed = self.space(space)?.table.remove(Handle::from_bits(handle));
        match removed {
            Ok((object, _)) => {
                self.release(object);
                Ok(())
            }
            Err(e) => Err(self.cap_error(space, e)),
        }
    }
}

#[cfg(test)]
mod tests;
