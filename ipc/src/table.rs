//! The arena that owns every channel, and the operations the kernel calls on channel ends.

use alloc::vec::Vec;

use crate::channel::{Channel, Routed};
use crate::registry::{ParkKind, Parked, Registry};
use crate::{
    CallId, CallOk, ChannelEnd, ChannelId, Closed, Completion, Delivery, IpcError, Limits, Message, Mode, RecvOk,
    SendError, SendOk, Side, WaiterId, Wake,
};

/// One slot of the arena.
#[derive(Debug)]
struct Slot<H> {
    /// For a live slot, the generation of the id naming it; for an empty one, the generation the
    /// next channel in it will have (or, if retired, the last one it had).
    generation: u32,
    channel: Option<Channel<H>>,
}

/// Every channel of the kernel, addressed by [`ChannelId`], and every thread parked on them,
/// addressed by [`WaiterId`].
///
/// `H` is the type of the handles messages carry (see [`Message`]). All operations are plain
/// function calls that never block and never panic: where the kernel would block a thread they
/// return `Parked`, and the operations that complete parked threads return [`Wake`]s.
#[derive(Debug)]
pub struct ChannelTable<H> {
    slots: Vec<Slot<H>>,
    /// Empty, reusable slot indices. Its allocation always covers every slot, so pushing never
    /// allocates.
    free: Vec<u32>,
    capacity: usize,
    len: usize,
    registry: Registry,
}

/// The channel `id` names, if it is live.
fn lookup_ref<H>(slots: &[Slot<H>], id: ChannelId) -> Result<&Channel<H>, IpcError> {
    match slots.get(id.index as usize) {
        Some(Slot { generation, channel: Some(channel) }) if *generation == id.generation => Ok(channel),
        _ => Err(IpcError::NoSuchChannel { channel: id }),
    }
}

/// The channel `id` names, if it is live.
fn lookup<H>(slots: &mut [Slot<H>], id: ChannelId) -> Result<&mut Channel<H>, IpcError> {
    match slots.get_mut(id.index as usize) {
        Some(Slot { generation, channel: Some(channel) }) if *generation == id.generation => Ok(channel),
        _ => Err(IpcError::NoSuchChannel { channel: id }),
    }
}

/// The channel of `end`, if it is live and `end` is open.
fn lookup_open<H>(slots: &mut [Slot<H>], end: ChannelEnd) -> Result<&mut Channel<H>, IpcError> {
    let channel = lookup(slots, end.channel)?;
    if channel.is_open(end.side) { Ok(channel) } else { Err(IpcError::EndClosed { end }) }
}

impl<H> ChannelTable<H> {
    /// An empty table for up to `capacity` live channels. Allocates nothing yet.
    pub fn new(capacity: usize) -> ChannelTable<H> {
        ChannelTable { slots: Vec::new(), free: Vec::new(), capacity, len: 0, registry: Registry::default() }
    }

    /// How many channels can be live at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many channels are live (at least one end open).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no channel is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes a channel with `limits` and returns its two ends. Memory for both queues is reserved
    /// here, so a send never allocates for the queue.
    pub fn create(&mut self, limits: Limits) -> Result<(ChannelEnd, ChannelEnd), IpcError> {
        if self.len >= self.capacity {
            return Err(IpcError::TableFull { capacity: self.capacity });
        }
        let channel = Channel::new(limits)?;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index =
                    u32::try_from(self.slots.len()).map_err(|_| IpcError::TableFull { capacity: self.capacity })?;
                self.slots.try_reserve(1).map_err(|_| IpcError::OutOfMemory)?;
                self.free.try_reserve(self.slots.len() + 1).map_err(|_| IpcError::OutOfMemory)?;
                self.slots.push(Slot { generation: 1, channel: None });
                index
            }
        };
        // The index came from `free` or was just pushed, so the slot exists.
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Err(IpcError::OutOfMemory);
        };
        slot.channel = Some(channel);
        self.len += 1;
        let id = ChannelId { index, generation: slot.generation };
        Ok((ChannelEnd { channel: id, side: Side::A }, ChannelEnd { channel: id, side: Side::B }))
    }

    /// The limits `channel` was created with.
    pub fn limits(&self, channel: ChannelId) -> Result<Limits, IpcError> {
        Ok(lookup_ref(&self.slots, channel)?.limits())
    }

    /// How many messages are queued for `end` to receive (not counting parked senders' messages).
    pub fn queued(&self, end: ChannelEnd) -> Result<usize, IpcError> {
        Ok(lookup_ref(&self.slots, end.channel)?.queued_for(end.side))
    }

    /// Whether a receive on `end` would end at once rather than wait: a message is queued for
    /// it (or a sender waits with one), or its peer is closed (the receive then fails with [`IpcError::PeerClosed`]), or `end`
    /// itself is closed or gone (it fails too). What a wait on several ends looks at.
    pub fn readable(&self, end: ChannelEnd) -> bool {
        match lookup_ref(&self.slots, end.channel) {
            Ok(channel) => {
                channel.has_incoming(end.side) || !channel.is_open(end.side) || !channel.is_open(end.side.peer())
            }
            Err(_) => true,
        }
    }

    /// The parked receiver a message sent from `end` would go to now (the oldest), if one is
    /// waiting: the kernel may then write the message straight into that receiver's buffer.
    pub fn receiver_waiting(&self, end: ChannelEnd) -> Result<Option<WaiterId>, IpcError> {
        Ok(lookup_ref(&self.slots, end.channel)?.receiver_waiting(end.side))
    }

    /// Sends `message` from `end` to its peer.
    ///
    /// The message goes to the peer's oldest parked receiver if one is waiting (the returned
    /// [`Wake`] completes it with the message), else into the queue. If the queue is full,
    /// [`Mode::NonBlocking`] fails with [`IpcError::Full`] and [`Mode::Blocking`] parks the sender
    /// ([`SendOk::Parked`]) with its message: the message enters the queue, in order, as room
    /// appears, and the sender is then woken with [`Completion::Sent`].
    ///
    /// On any error the message comes back in the [`SendError`].
    pub fn send(&mut self, end: ChannelEnd, message: Message<H>, mode: Mode) -> Result<SendOk<H>, SendError<H>> {
        let Self { slots, registry, .. } = self;
        let waiter = match mode {
            Mode::NonBlocking => None,
            Mode::Blocking(waiter) => Some(waiter),
        };
        let checked = lookup_open(slots, end).and_then(|channel| {
            if let Some(waiter) = waiter {
                registry.check_free(waiter)?;
            }
            channel.check_message(&message)?;
            channel.check_peer_open(end)?;
            if waiter.is_some() {
                registry.reserve()?;
            }
            Ok(channel)
        });
        let channel = match checked {
            Ok(channel) => channel,
            Err(error) => return Err(SendError { error, message }),
        };
        match channel.route(end, Delivery { message, call: None }, waiter, registry) {
            Ok(Routed::Handed(wake)) => Ok(SendOk::Done { wake: Some(wake) }),
            Ok(Routed::Queued) => Ok(SendOk::Done { wake: None }),
            Ok(Routed::Parked) => {
                if let Some(waiter) = waiter {
                    registry.insert(waiter, Parked { end, kind: ParkKind::Send });
                }
                Ok(SendOk::Parked)
            }
            Err((error, delivery)) => Err(SendError { error, message: delivery.message }),
        }
    }

    /// Receives the next message for `end`.
    ///
    /// Taking a message from a full queue lets the oldest parked sender's message in; the
    /// returned [`Wake`] completes that sender. With nothing waiting: [`IpcError::PeerClosed`] if
    /// the peer is closed (so a receiver drains everything sent before the close first), else
    /// [`IpcError::Empty`] for [`Mode::NonBlocking`], or for [`Mode::Blocking`] the receiver
    /// parks ([`RecvOk::Parked`]) and its [`Wake`] will carry the message
    /// ([`Completion::Received`]); the woken thread does not receive again.
    ///
    /// A timed-out receive is the kernel's to end, with [`cancel_wait`](Self::cancel_wait).
    pub fn recv(&mut self, end: ChannelEnd, mode: Mode) -> Result<RecvOk<H>, IpcError> {
        let Self { slots, registry, .. } = self;
        let channel = lookup_open(slots, end)?;
        if let Mode::Blocking(waiter) = mode {
            registry.check_free(waiter)?;
        }
        if let Some((delivery, wake)) = channel.take(end.side, registry) {
            return Ok(RecvOk::Received { delivery, wake });
        }
        channel.check_peer_open(end)?;
        match mode {
            Mode::NonBlocking => Err(IpcError::Empty { end }),
            Mode::Blocking(waiter) => {
                registry.reserve()?;
                channel.park_receiver(end, waiter)?;
                registry.insert(waiter, Parked { end, kind: ParkKind::Recv });
                Ok(RecvOk::Parked)
            }
        }
    }

    /// Sends `message` as a request from `end` and parks the caller as `waiter` until the reply.
    ///
    /// The request travels like a blocking [`send`](Self::send) (to a parked receiver, into the
    /// queue, or parked with the caller while the queue is full) and reaches the server tagged
    /// with the returned [`CallId`]. The caller is always parked: its [`Wake`] carries the reply
    /// ([`Completion::Replied`]) that the server sends with [`reply`](Self::reply), and only this
    /// caller gets it, however many calls are pending on the channel. If either end closes first
    /// the wake is [`Completion::Failed`].
    pub fn call(&mut self, end: ChannelEnd, message: Message<H>, waiter: WaiterId) -> Result<CallOk<H>, SendError<H>> {
        let Self { slots, registry, .. } = self;
        let checked = lookup_open(slots, end).and_then(|channel| {
            registry.check_free(waiter)?;
            channel.check_message(&message)?;
            channel.check_peer_open(end)?;
            registry.reserve()?;
            channel.reserve_call()?;
            Ok(channel)
        });
        let channel = match checked {
            Ok(channel) => channel,
            Err(error) => return Err(SendError { error, message }),
        };
        let call = channel.begin_call(end.side, waiter);
        let wake = match channel.route(end, Delivery { message, call: Some(call) }, Some(waiter), registry) {
            Ok(Routed::Handed(wake)) => Some(wake),
            Ok(Routed::Queued | Routed::Parked) => None,
            Err((error, delivery)) => {
                channel.drop_call(call);
                return Err(SendError { error, message: delivery.message });
            }
        };
        registry.insert(waiter, Parked { end, kind: ParkKind::Call(call) });
        Ok(CallOk { call, wake })
    }

    /// The parked caller a reply from `end` to call `call` would go to now, if [`reply`](Self::reply)
    /// would accept it: the kernel may then write the reply straight into that caller's buffer.
    pub fn caller_waiting(&self, end: ChannelEnd, call: CallId) -> Result<Option<WaiterId>, IpcError> {
        let channel = lookup_ref(&self.slots, end.channel)?;
        if !channel.is_open(end.side) || !channel.is_open(end.side.peer()) {
            return Ok(None);
        }
        Ok(channel.caller_waiting(end.side, call))
    }

    /// Answers call `call`, which `end` must have received (in a [`Delivery`]) and not yet
    /// answered. The reply goes straight to the parked caller, not through the queue; the returned
    /// [`Wake`] completes it with [`Completion::Replied`].
    ///
    /// Errors: [`IpcError::PeerClosed`] if the caller's end is closed, [`IpcError::UnknownCall`]
    /// for a call id this end has no unanswered request for (including one whose caller gave up
    /// with [`cancel_wait`](Self::cancel_wait)). The message comes back in the [`SendError`].
    pub fn reply(&mut self, end: ChannelEnd, call: CallId, message: Message<H>) -> Result<Wake<H>, SendError<H>> {
        let Self { slots, registry, .. } = self;
        let finished = lookup_open(slots, end).and_then(|channel| {
            channel.check_message(&message)?;
            channel.check_peer_open(end)?;
            channel.finish_call(end.side, call).ok_or(IpcError::UnknownCall { end, call })
        });
        match finished {
            Ok(waiter) => {
                registry.remove(waiter);
                Ok(Wake { waiter, completion: Completion::Replied(message) })
            }
            Err(error) => Err(SendError { error, message }),
        }
    }

    /// Gives up on `waiter`'s parked operation (the kernel's timeout, or the thread being killed):
    /// it will get no [`Wake`]. A parked send's message, or a call's request that had not yet
    /// entered the queue, comes back; a request that did enter the queue stays there, and its
    /// reply will fail with [`IpcError::UnknownCall`].
    ///
    /// [`IpcError::UnknownWaiter`] if the waiter is not parked, e.g. because a wake for it came
    /// out of an earlier operation: that wake, not the cancellation, is its result.
    pub fn cancel_wait(&mut self, waiter: WaiterId) -> Result<Option<Message<H>>, IpcError> {
        let parked = self.registry.remove(waiter).ok_or(IpcError::UnknownWaiter { waiter })?;
        match lookup(&mut self.slots, parked.end.channel) {
            Ok(channel) => Ok(channel.cancel(waiter, parked)),
            // The registry holds only waiters of live channels.
            Err(_) => Ok(None),
        }
    }

    /// Closes `end`, for good: its owner ended or dropped its last handle to it.
    ///
    /// The peer then gets [`IpcError::PeerClosed`] from sends, calls and replies, and from
    /// receives once it has drained what `end` sent before closing. Every operation parked on the
    /// channel that can no longer complete is woken with [`Completion::Failed`] (see
    /// [`Closed::wakes`]), and the handles in messages queued for `end` come back in
    /// [`Closed::handles`] for the kernel to close. When both ends are closed the channel goes and
    /// its id stops resolving.
    pub fn close(&mut self, end: ChannelEnd) -> Result<Closed<H>, IpcError> {
        let channel = lookup_open(&mut self.slots, end)?;
        let closed = channel.close(end, &mut self.registry);
        if channel.is_dead() {
            self.remove(end.channel);
        }
        Ok(closed)
    }

    /// The handles in the messages queued for `end` to receive (not those its parked senders
    /// still hold): what only `end`'s holder can ever take out. Nothing for an end not open.
    pub fn queued_handles(&self, end: ChannelEnd) -> impl Iterator<Item = &H> {
        self.slots
            .get(end.channel.index as usize)
            .and_then(|slot| slot.channel.as_ref().filter(|_| slot.generation == end.channel.generation))
            .filter(|channel| channel.is_open(end.side))
            .into_iter()
            .flat_map(move |channel| channel.queued_handles_for(end.side))
    }

    /// Frees the slot of a channel whose ends are both closed.
    fn remove(&mut self, id: ChannelId) {
        if let Some(slot) = self.slots.get_mut(id.index as usize) {
            slot.channel = None;
            self.len -= 1;
            if slot.generation < u32::MAX {
                slot.generation += 1;
                // `free` has room for every slot (see `create`).
                self.free.push(id.index);
            }
            // Else the slot is retired: its ids are used up, and reusing it would reissue one.
        }
    }

    /// How many waiters are parked, table-wide.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn parked(&self) -> usize {
        self.registry.len()
    }
}
