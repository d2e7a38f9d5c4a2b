//! The kernel's IPC objects as plain logic, and the operations of `mica:kernel/ipc` on them. The
//! parts, each in its own file: every component instance's handle table ([`space`](super::space)),
//! the channels and how many holders each channel end has ([`channels`](super::channels)), the
//! manifest's connections ([`registry`](super::registry)), the results parked threads wake up to
//! ([`wakes`](super::wakes)) and the error values ([`errors`](super::errors)). The bare-metal
//! side (`blocking.rs`) wraps this in a lock and turns "parked" and "wake" into scheduler calls;
//! everything here is deterministic and host-tested.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use mica_caps::{CapError, Handle, HandleTable, Rights};
use mica_ipc::{
    CallId, ChannelEnd, Completion, Delivery, IpcError, Message, Mode, RecvOk, SendError, SendOk, WaiterId, Wake,
};
use mica_runtime::ipc::{ErrorCode, IpcFailure, MAX_WAIT_HANDLES, Received, RightsBits};

use super::channels::Channels;
pub use super::channels::{CHANNEL_LIMITS, MAX_CHANNELS};
use super::errors::{INSTANCE_ENDED, LANDING_LOST, cap_error, fail, ipc_error};
pub use super::registry::Connection;
use super::registry::{Offer, Registry};
use super::space::Spaces;
pub use super::space::{DmaId, Object, SpaceId, Transfer};
use super::wakes::Wakes;
use super::watch::Watchers;

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

/// Bytes of a component's linear memory by their kernel address: a sender's message, or the
/// landing where a thread waiting in a span operation wants its message written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The kernel address of the first byte.
    pub addr: u64,
    /// How many bytes.
    pub len: u32,
}

/// A copy from the running thread's memory into a waiting thread's landing that an operation
/// asked for ([`IpcState::drain_copies`]): the caller makes it before it releases the lock, while
/// the waiting thread is still parked (so its memory stays as it was when it registered) and
/// before it can be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanCopy {
    /// Where the bytes are (the running thread's memory).
    pub from: u64,
    /// Where they go (the waiting thread's landing).
    pub to: u64,
    /// How many.
    pub len: u32,
}

/// A thread waiting in a span operation, where its message goes, and how much of one landed.
#[derive(Clone, Copy, Debug)]
struct Landing {
    waiter: WaiterId,
    region: Region,
    landed: Option<u32>,
}

/// The kernel's IPC objects. See the module documentation.
///
/// **One copy per message.** A thread that waits in a span operation (`receive-into`,
/// `call-into`) registers its landing, the span of its memory the message goes to. A span send,
/// call or reply that finds its receiver (or caller) waiting with a landing that fits asks for one
/// copy, from the sender's memory straight into that landing, and hands the receiver an empty
/// message marked as landed; nothing goes through a kernel buffer. Otherwise (nobody waiting, a
/// landing too small, handles to move) the bytes are copied out into the message as before.
#[derive(Debug)]
pub struct IpcState {
    channels: Channels,
    spaces: Spaces,
    registry: Registry,
    wakes: Wakes,
    landings: Vec<Landing>,
    copies: Vec<SpanCopy>,
    watchers: Watchers,
}

/// What one wait on several handles looks at ([`IpcState::waitables`]), each with its position
/// in the caller's list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waitables {
    /// Channel ends (each held with `read`).
    pub ends: Vec<(u32, ChannelEnd)>,
    /// Interrupt lines, by index into the device registry.
    pub lines: Vec<(u32, usize)>,
}

/// The refusal of `handle`, which names `object`, where a channel end is needed (for `what`).
fn not_an_end(handle: Handle, object: &Object, what: Option<&str>) -> IpcFailure {
    let mut message = format!("handle {handle} is {}, not a channel end", object.kind());
    if let Some(what) = what {
        message.push_str(": ");
        message.push_str(what);
    }
    fail(ErrorCode::InvalidHandle, message)
}

/// Rights as the runtime passes them, to the kernel's.
fn rights_from_bits(bits: RightsBits) -> Rights {
    Rights::from_bits_truncate(bits)
}

impl IpcState {
    /// The state for a system of components named `names` (indexed as in the manifest) and its
    /// manifest connections; every service gets its channel now.
    pub fn new(names: Vec<String>, connections: &[Connection]) -> Result<IpcState, IpcFailure> {
        let mut channels = Channels::new();
        let mut wakes = Wakes::default();
        let registry = Registry::new(names, connections, &mut channels, &mut wakes)?;
        Ok(IpcState {
            channels,
            spaces: Spaces::new(),
            registry,
            wakes,
            landings: Vec::new(),
            copies: Vec::new(),
            watchers: Watchers::default(),
        })
    }

    /// A new, empty handle table for an instance of component `component`.
    pub fn open_space(&mut self, component: usize, capacity: u16, may_create: bool) -> SpaceId {
        self.spaces.open(component, capacity, may_create)
    }

    /// The instance behind `space` has ended: every handle it holds is closed. `restart` says
    /// whether its component will run again; its services are renewed for the next instance, or
    /// (when it will not) ended, and the services it is a client of let go of it.
    pub fn close_space(&mut self, space: SpaceId, restart: bool) {
        let Some(mut closed) = self.spaces.close(space) else { return };
        let objects: Vec<Object> = closed.table.drain().map(|(_, object, _)| object).collect();
        for object in objects {
            self.channels.release(object, &mut self.wakes);
        }
        // Ends it left in cycles of messages nobody can receive.
        self.channels.collect(&mut self.wakes);
        if restart {
            self.registry.instance_ended(closed.component, &mut self.channels, &mut self.wakes);
        } else {
            self.component_ended(closed.component);
        }
    }

    /// Component `component` will not run again (it ended for good, or was refused before it
    /// ran): its services end, and the services it is a client of let go of it. Idempotent.
    pub fn component_ended(&mut self, component: usize) {
        self.registry.component_ended(component, &mut self.channels, &mut self.wakes);
    }

    /// The threads to unpark, now that results for them are stored.
    pub fn drain_wakes(&mut self) -> impl Iterator<Item = WaiterId> + '_ {
        self.watchers.wake_ready(&self.channels.table, &mut self.wakes);
        self.wakes.drain()
    }

    /// The copies the last operations asked for, to be made before the lock is released.
    pub fn drain_copies(&mut self) -> impl Iterator<Item = SpanCopy> + '_ {
        self.copies.drain(..)
    }

    /// Records where `waiter`, about to park, wants its message.
    fn await_in(&mut self, waiter: WaiterId, region: Region) {
        self.forget_landing(waiter);
        self.landings.push(Landing { waiter, region, landed: None });
    }

    /// Forgets `waiter`'s landing; how many bytes landed there, if a message did.
    fn forget_landing(&mut self, waiter: WaiterId) -> Option<u32> {
        let at = self.landings.iter().position(|l| l.waiter == waiter)?;
        self.landings.swap_remove(at).landed
    }

    /// Whether `waiter` waits with an empty landing of at least `len` bytes.
    fn fits(&self, waiter: WaiterId, len: u32) -> bool {
        self.landings.iter().any(|l| l.waiter == waiter && l.landed.is_none() && l.region.len >= len)
    }

    /// Asks for `from` to be copied into `waiter`'s landing (which [`fits`](Self::fits)).
    fn land(&mut self, waiter: WaiterId, from: Region) {
        if let Some(l) = self.landings.iter_mut().find(|l| l.waiter == waiter) {
            self.copies.push(SpanCopy { from: from.addr, to: l.region.addr, len: from.len });
            l.landed = Some(from.len);
        }
    }

    /// For a span send on `handle`: its end, once the size is checked, and the receiver a
    /// message would reach now if that receiver waits with a landing it fits.
    fn direct(&mut self, space: SpaceId, handle: u32, len: u32) -> Result<(ChannelEnd, Option<WaiterId>), IpcFailure> {
        let end = self.end(space, handle, Rights::WRITE)?;
        self.check_size(end, len as usize, 0)?;
        let receiver = self.channels.table.receiver_waiting(end).ok().flatten();
        Ok((end, receiver.filter(|&r| self.fits(r, len))))
    }

    /// Hands an empty message, landed from `from`, to `wake`'s waiter.
    fn hand_landed(&mut self, wake: Wake<Transfer>, from: Region) {
        self.land(wake.waiter, from);
        self.wakes.store(wake);
    }

    /// `send-span`: the bytes in `message` (the sender's memory) go straight into a waiting
    /// receiver's landing when one fits them; otherwise `read` copies them out and they travel
    /// as a [`send`](Self::send) does.
    pub fn send_span(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        message: Region,
        read: impl FnOnce() -> Result<Vec<u8>, IpcFailure>,
        wait: bool,
    ) -> Step<()> {
        let end = match self.direct(space, handle, message.len) {
            Ok((end, Some(_))) => {
                return match self.channels.table.send(end, Message::new(Vec::new(), Vec::new()), Mode::NonBlocking) {
                    Ok(SendOk::Done { wake: Some(wake) }) => {
                        self.hand_landed(wake, message);
                        Step::Done(Ok(()))
                    }
                    Ok(_) => Step::Done(Err(fail(ErrorCode::InvalidHandle, LANDING_LOST))),
                    Err(e) => Step::Done(Err(self.refused(space, e, Handle::from_bits(handle)))),
                };
            }
            Ok((end, None)) => end,
            Err(e) => return Step::Done(Err(e)),
        };
        match read() {
            Ok(bytes) => self.send_on(space, waiter, handle, end, Message::new(bytes, Vec::new()), wait),
            Err(e) => Step::Done(Err(e)),
        }
    }

    /// `receive-into`: a [`receive`](Self::receive) that, when it waits, has a message that
    /// comes meanwhile written straight into `landing` if it fits.
    pub fn receive_span(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        landing: Region,
        wait: bool,
    ) -> Step<Received> {
        let step = self.receive(space, waiter, handle, wait);
        self.landing_if_parked(step, waiter, landing)
    }

    /// `step`, after registering `landing` for `waiter` if the step parked it.
    fn landing_if_parked<T>(&mut self, step: Step<T>, waiter: WaiterId, landing: Region) -> Step<T> {
        if let Step::Parked(_) = step {
            self.await_in(waiter, landing);
        }
        step
    }

    /// `call-into`: the request in `request` goes straight into a waiting server's landing when
    /// one fits it (otherwise `read` copies it out and it travels as a [`call`](Self::call)
    /// does), and the reply may land in `landing`.
    pub fn call_span(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        request: Region,
        landing: Region,
        read: impl FnOnce() -> Result<Vec<u8>, IpcFailure>,
    ) -> Step<Received> {
        let step = match self.direct(space, handle, request.len) {
            Ok((end, Some(_))) => match self.channels.table.call(end, Message::new(Vec::new(), Vec::new()), waiter) {
                Ok(ok) => match ok.wake {
                    Some(wake) => {
                        self.hand_landed(wake, request);
                        Step::Parked(Pending::Call)
                    }
                    None => {
                        // Cannot happen (the receiver was waiting); undone and reported if it does.
                        let _ = self.channels.table.cancel_wait(waiter);
                        Step::Done(Err(fail(ErrorCode::InvalidHandle, LANDING_LOST)))
                    }
                },
                Err(e) => Step::Done(Err(self.refused(space, e, Handle::from_bits(handle)))),
            },
            Ok((end, None)) => match read() {
                Ok(bytes) => self.call_on(space, waiter, handle, end, Message::new(bytes, Vec::new())),
                Err(e) => Step::Done(Err(e)),
            },
            Err(e) => Step::Done(Err(e)),
        };
        self.landing_if_parked(step, waiter, landing)
    }

    /// `reply-span`: the reply in `message` goes straight into the caller's landing when it
    /// fits; otherwise `read` copies it out and it travels as a [`reply`](Self::reply) does.
    pub fn reply_span(
        &mut self,
        space: SpaceId,
        handle: u32,
        call: u64,
        message: Region,
        read: impl FnOnce() -> Result<Vec<u8>, IpcFailure>,
    ) -> Result<(), IpcFailure> {
        let end = self.end(space, handle, Rights::WRITE)?;
        self.check_size(end, message.len as usize, 0)?;
        let id = CallId::from_bits(call);
        let caller = self.channels.table.caller_waiting(end, id).ok().flatten();
        if caller.is_some_and(|c| self.fits(c, message.len)) {
            return match self.channels.table.reply(end, id, Message::new(Vec::new(), Vec::new())) {
                Ok(wake) => {
                    self.hand_landed(wake, message);
                    Ok(())
                }
                Err(e) => Err(self.refused(space, e, Handle::from_bits(handle))),
            };
        }
        self.reply(space, handle, call, read()?, Vec::new())
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
        self.spaces.handle_count(space)
    }

    /// A handle table's refusal in `space`.
    fn cap_error(&self, space: SpaceId, e: CapError) -> IpcFailure {
        cap_error(e, self.spaces.component(space).and_then(|c| self.registry.name(c)))
    }

    /// What `handles` of `space` name, for a wait on them all: channel ends (each needs
    /// `read`) and interrupt lines. Refuses more than [`MAX_WAIT_HANDLES`] and every other kind
    /// of handle.
    pub fn waitables(&mut self, space: SpaceId, handles: &[u32]) -> Result<Waitables, IpcFailure> {
        if handles.len() > MAX_WAIT_HANDLES {
            return Err(fail(
                ErrorCode::TooManyHandles,
                format!("a wait looks at {MAX_WAIT_HANDLES} handles at most, not {}", handles.len()),
            ));
        }
        let mut waitables = Waitables::default();
        for (position, &bits) in (0u32..).zip(handles) {
            let handle = Handle::from_bits(bits);
            let found = self.spaces.get(space)?.table.get(handle, Rights::empty()).copied();
            match found {
                Ok(Object::End(_)) => waitables.ends.push((position, self.end(space, bits, Rights::READ)?)),
                Ok(Object::Irq(line)) => waitables.lines.push((position, line)),
                Ok(other) => {
                    return Err(fail(
                        ErrorCode::InvalidHandle,
                        format!("handle {handle} is {}: a wait takes channel ends and interrupt lines", other.kind()),
                    ));
                }
                Err(e) => return Err(self.cap_error(space, e)),
            }
        }
        Ok(waitables)
    }

    /// The positions of `ends` that are readable now; when none is, `waiter` is woken by the
    /// first operation that makes one readable, until [`unwatch`](Self::unwatch).
    pub fn watch(&mut self, waiter: WaiterId, ends: &[(u32, ChannelEnd)]) -> Vec<u32> {
        self.watchers.look(&self.channels.table, waiter, ends)
    }

    /// `waiter` is no longer woken for the ends it watched.
    pub fn unwatch(&mut self, waiter: WaiterId) {
        self.watchers.forget(waiter);
    }

    /// The channel end `handle` names in `space`, if it has `rights`.
    fn end(&mut self, space: SpaceId, handle: u32, rights: Rights) -> Result<ChannelEnd, IpcFailure> {
        let handle = Handle::from_bits(handle);
        let found = self.spaces.get(space)?.table.get(handle, rights).copied();
        match found {
            Ok(Object::End(end)) => Ok(end),
            Ok(other) => Err(not_an_end(handle, &other, None)),
            Err(e) => Err(self.cap_error(space, e)),
        }
    }

    /// Refuses `handle` for an operation (`what`) that only channel ends support, unless it
    /// names one.
    fn only_ends(&mut self, space: SpaceId, handle: Handle, what: &str) -> Result<(), IpcFailure> {
        let found = self.spaces.get(space)?.table.get(handle, Rights::empty()).copied();
        match found {
            Ok(Object::End(_)) => Ok(()),
            Ok(other) => Err(not_an_end(handle, &other, Some(what))),
            Err(e) => Err(self.cap_error(space, e)),
        }
    }

    /// Runs `f` on the capability space `space` (`None` if its instance has ended): how the
    /// hardware side (`mica:hw`) puts its objects into the instance's one table, finds and
    /// removes them. `f` must neither insert nor remove channel ends (they count holders here).
    pub fn with_table<T>(&mut self, space: SpaceId, f: impl FnOnce(&mut HandleTable<Object>) -> T) -> Option<T> {
        self.spaces.find(space).map(|s| f(&mut s.table))
    }

    /// Puts `object` into `space` as a new handle with `rights` (one more holder).
    fn insert_new(&mut self, space: SpaceId, object: Object, rights: Rights) -> Result<u32, IpcFailure> {
        let inserted = self.spaces.get(space)?.table.insert(object, rights);
        match inserted {
            Ok(h) => {
                self.channels.hold(object);
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
            let h = Handle::from_bits(h);
            // What it names first (a hardware handle is refused as such), then the right.
            let found = self.spaces.get(space)?.table.get(h, Rights::empty()).copied();
            if let Ok(other @ (Object::Window(_) | Object::Irq(_) | Object::Dma(_))) = found {
                return Err(not_an_end(h, &other, Some("only channel ends travel in messages")));
            }
            let checked = self.spaces.get(space)?.table.get(h, Rights::GRANT).map(|_| ());
            checked.map_err(|e| self.cap_error(space, e))?;
        }
        let table = &mut self.spaces.get(space)?.table;
        Ok(handles.iter().filter_map(|&h| table.take_for_transfer(Handle::from_bits(h)).ok()).collect())
    }

    /// Gives the handles of an undelivered message back to `space` (closing any that no longer
    /// fit); returns their handle values.
    fn give_back(&mut self, space: SpaceId, transfers: Vec<Transfer>) -> Vec<u32> {
        let mut returned = Vec::with_capacity(transfers.len());
        for (object, rights) in transfers {
            let inserted = self.spaces.find(space).map(|s| s.table.insert(object, rights));
            match inserted {
                Some(Ok(h)) => returned.push(h.to_bits()),
                _ => self.channels.release(object, &mut self.wakes),
            }
        }
        returned
    }

    /// A refused message: its handles go back to the sender, listed in the failure.
    fn refused(&mut self, space: SpaceId, e: SendError<Transfer>, handle: Handle) -> IpcFailure {
        let mut failure = ipc_error(e.error, Some(handle));
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
            let inserted = self.spaces.find(space).map(|s| s.table.insert(object, rights));
            match inserted {
                Some(Ok(h)) => handles.push(h),
                Some(Err(e)) => {
                    // Undo: the message is dropped whole.
                    self.channels.release(object, &mut self.wakes);
                    for h in handles.drain(..) {
                        if let Some(Ok((object, _))) = self.spaces.find(space).map(|s| s.table.remove(h)) {
                            self.channels.release(object, &mut self.wakes);
                        }
                    }
                    for (object, _) in rest {
                        self.channels.release(object, &mut self.wakes);
                    }
                    let mut failure = self.cap_error(space, e);
                    failure.message = format!(
                        "a message arrived carrying {count} handles, which do not fit: {}; the message was dropped and its handles closed",
                        failure.message
                    );
                    return Err(failure);
                }
                None => {
                    self.channels.release(object, &mut self.wakes);
                    for (object, _) in rest {
                        self.channels.release(object, &mut self.wakes);
                    }
                    return Err(fail(ErrorCode::InvalidHandle, INSTANCE_ENDED));
                }
            }
        }
        Ok(Received {
            bytes: message.bytes,
            handles: handles.into_iter().map(Handle::to_bits).collect(),
            call: call.map(CallId::to_bits),
            landed: None,
        })
    }

    /// `connect`: a new handle to this instance's end of connection `name`.
    pub fn connect(&mut self, space: SpaceId, name: &str) -> Result<u32, IpcFailure> {
        let component = self.spaces.get(space)?.component;
        match self.registry.offer(component, name, &self.channels)? {
            Offer::Reserved { service, end } => {
                // The registry's hold moves into the server's table.
                let inserted = self.spaces.get(space)?.table.insert(Object::End(end), Rights::all());
                match inserted {
                    Ok(h) => {
                        self.registry.moved(service);
                        Ok(h.to_bits())
                    }
                    Err(e) => Err(self.cap_error(space, e)),
                }
            }
            Offer::Shared(end) => self.insert_new(space, Object::End(end), Rights::all()),
        }
    }

    /// `create-channel`: both ends of a new channel, with every right.
    pub fn create_channel(&mut self, space: SpaceId) -> Result<(u32, u32), IpcFailure> {
        if !self.spaces.get(space)?.may_create {
            return Err(fail(
                ErrorCode::NotPermitted,
                "this component may not create channels (its manifest entry does not set `create_channels = true`)",
            ));
        }
        let table = &self.spaces.get(space)?.table;
        if table.capacity() - table.len() < 2 {
            let capacity = table.capacity();
            return Err(self.cap_error(space, CapError::TableFull { capacity }));
        }
        let (a, b) = self.channels.create().map_err(|e| ipc_error(e, None))?;
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
                    self.channels.close_unheld(end);
                }
                Err(fail(ErrorCode::OutOfMemory, "out of memory for the new channel's handles"))
            }
        }
    }

    /// Checks a message's size against the channel before any handle is taken out of the table.
    fn check_size(&self, end: ChannelEnd, bytes: usize, handles: usize) -> Result<(), IpcFailure> {
        let limits = self.channels.table.limits(end.channel).map_err(|e| ipc_error(e, None))?;
        if bytes > limits.max_bytes {
            return Err(ipc_error(IpcError::MessageTooLarge { bytes, limit: limits.max_bytes }, None));
        }
        if handles > limits.max_handles {
            return Err(ipc_error(IpcError::TooManyHandles { handles, limit: limits.max_handles }, None));
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
        self.send_on(space, waiter, handle, end, Message::new(bytes, transfers), wait)
    }

    /// The rest of [`send`](Self::send), once `handle`'s end is found and checked.
    fn send_on(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        end: ChannelEnd,
        message: Message<Transfer>,
        wait: bool,
    ) -> Step<()> {
        let mode = if wait { Mode::Blocking(waiter) } else { Mode::NonBlocking };
        match self.channels.table.send(end, message, mode) {
            Ok(SendOk::Done { wake }) => {
                if let Some(wake) = wake {
                    self.wakes.store(wake);
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
        match self.channels.table.recv(end, mode) {
            Ok(RecvOk::Received { delivery: Delivery { message, call }, wake }) => {
                if let Some(wake) = wake {
                    self.wakes.store(wake);
                }
                Step::Done(self.accept(space, message, call))
            }
            Ok(RecvOk::Parked) => Step::Parked(Pending::Receive),
            Err(e) => Step::Done(Err(ipc_error(e, Some(Handle::from_bits(handle))))),
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
        self.call_on(space, waiter, handle, end, Message::new(bytes, transfers))
    }

    /// The rest of [`call`](Self::call), once `handle`'s end is found and checked.
    fn call_on(
        &mut self,
        space: SpaceId,
        waiter: WaiterId,
        handle: u32,
        end: ChannelEnd,
        message: Message<Transfer>,
    ) -> Step<Received> {
        match self.channels.table.call(end, message, waiter) {
            Ok(ok) => {
                if let Some(wake) = ok.wake {
                    self.wakes.store(wake);
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
        match self.channels.table.reply(end, CallId::from_bits(call), Message::new(bytes, transfers)) {
            Ok(wake) => {
                self.wakes.store(wake);
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
        if let Some(completion) = self.wakes.take(waiter) {
            let landed = self.forget_landing(waiter);
            let with_landed = |r: Received| Finished::Received(Received { landed, ..r });
            return Some(match completion {
                Completion::Sent => Ok(Finished::Sent),
                Completion::Received(Delivery { message, call }) => self.accept(space, message, call).map(with_landed),
                Completion::Replied(message) => self.accept(space, message, None).map(with_landed),
                Completion::Failed { error, returned } => {
                    let mut failure = ipc_error(error, None);
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
        self.forget_landing(waiter);
        let returned = match self.channels.table.cancel_wait(waiter) {
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
        self.only_ends(space, Handle::from_bits(handle), "only channel ends can be duplicated")?;
        let duplicated = self.spaces.get(space)?.table.duplicate(Handle::from_bits(handle), rights_from_bits(rights));
        match duplicated {
            Ok(h) => {
                let object = *self
                    .spaces
                    .get(space)?
                    .table
                    .get(h, Rights::empty())
                    .map_err(|e| fail(ErrorCode::InvalidHandle, format!("{e}")))?;
                self.channels.hold(object);
                Ok(h.to_bits())
            }
            Err(e) => Err(self.cap_error(space, e)),
        }
    }

    /// `rights-of`.
    pub fn rights(&mut self, space: SpaceId, handle: u32) -> Result<RightsBits, IpcFailure> {
        let rights = self.spaces.get(space)?.table.rights(Handle::from_bits(handle));
        rights.map(|r| r.bits()).map_err(|e| self.cap_error(space, e))
    }

    /// `close`.
    pub fn close(&mut self, space: SpaceId, handle: u32) -> Result<(), IpcFailure> {
        self.only_ends(
            space,
            Handle::from_bits(handle),
            "hardware handles are released through mica:hw (dma.free) or when the instance ends",
        )?;
        let removed = self.spaces.get(space)?.table.remove(Handle::from_bits(handle));
        match removed {
            Ok((object, _)) => {
                let still_held = matches!(object, Object::End(end) if self.channels.is_held(end));
                self.channels.release(object, &mut self.wakes);
                // An end something else still holds may now be held only by messages nobody can
                // receive (sent through its own channel, say).
                if still_held
                    && let Object::End(end) = object
                    && self.channels.is_held(end)
                {
                    self.channels.collect(&mut self.wakes);
                }
                Ok(())
            }
            Err(e) => Err(self.cap_error(space, e)),
        }
    }
}

#[cfg(test)]
mod tests;
