//! One channel's state: a bounded queue per direction, the threads parked on it, and its calls.
//!
//! Invariants, per direction (from one side to its peer):
//!
//! - the queue never holds more than `limits.capacity` messages, and its memory for that many is
//!   reserved when the channel is made, so queueing never allocates;
//! - parked senders exist only while the queue is full (for capacity 0: always, since it is);
//! - parked receivers exist only while the queue is empty and no sender is parked;
//! - every parked sender and receiver, and every pending call, has its waiter in the
//!   [`Registry`], and the registry has nothing else for this channel.
//!
//! Messages leave a direction in the order they entered it, counting a parked sender's message
//! as entering when the sender parked.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::registry::{ParkKind, Parked, Registry};
use crate::{CallId, ChannelEnd, Closed, Completion, Delivery, IpcError, Limits, Message, Side, WaiterId, Wake};

/// A sender parked until the queue has room, with the message it holds.
#[derive(Debug)]
struct ParkedSend<H> {
    waiter: WaiterId,
    delivery: Delivery<H>,
}

/// One direction: messages from one side to the other.
#[derive(Debug)]
struct Direction<H> {
    queue: VecDeque<Delivery<H>>,
    /// Senders on the sending side waiting for room, oldest first.
    senders: VecDeque<ParkedSend<H>>,
    /// Receivers on the receiving side waiting for a message, oldest first.
    receivers: VecDeque<WaiterId>,
}

/// A request whose caller is parked for the reply.
#[derive(Clone, Copy, Debug)]
struct PendingCall {
    id: CallId,
    caller: Side,
    waiter: WaiterId,
    /// Whether the server has received the request; only then may it reply.
    delivered: bool,
}

/// Where [`Channel::route`] put a message.
#[derive(Debug)]
pub(crate) enum Routed<H> {
    /// Straight to a parked receiver, which this wakes.
    Handed(Wake<H>),
    /// Into the queue.
    Queued,
    /// The sender parks holding it.
    Parked,
}

/// A channel: two ends, two directions.
#[derive(Debug)]
pub(crate) struct Channel<H> {
    limits: Limits,
    open: [bool; 2],
    /// Indexed by the sending side.
    dirs: [Direction<H>; 2],
    /// Sorted by id (ids only grow).
    calls: Vec<PendingCall>,
    next_call: u64,
}

impl<H> Channel<H> {
    /// A channel with both ends open and the queues' memory reserved.
    pub(crate) fn new(limits: Limits) -> Result<Channel<H>, IpcError> {
        let direction = || -> Result<Direction<H>, IpcError> {
            let mut queue = VecDeque::new();
            queue.try_reserve_exact(limits.capacity).map_err(|_| IpcError::OutOfMemory)?;
            Ok(Direction { queue, senders: VecDeque::new(), receivers: VecDeque::new() })
        };
        Ok(Channel { limits, open: [true; 2], dirs: [direction()?, direction()?], calls: Vec::new(), next_call: 1 })
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn is_open(&self, side: Side) -> bool {
        self.open[side.index()]
    }

    /// Whether both ends are closed, so the channel can go.
    pub(crate) fn is_dead(&self) -> bool {
        self.open == [false; 2]
    }

    /// The handles in the messages queued for `side` to receive (not those parked senders hold).
    pub(crate) fn queued_handles_for(&self, side: Side) -> impl Iterator<Item = &H> {
        self.dirs[side.peer().index()].queue.iter().flat_map(|delivery| delivery.message.handles.iter())
    }

    /// How many messages are queued for `side` to receive.
    pub(crate) fn queued_for(&self, side: Side) -> usize {
        self.dirs[side.peer().index()].queue.len()
    }

    /// Whether a receive on `side` would find a message: one queued for it, or (on a
    /// rendezvous channel) a sender parked with one.
    pub(crate) fn has_incoming(&self, side: Side) -> bool {
        let dir = &self.dirs[side.peer().index()];
        !dir.queue.is_empty() || !dir.senders.is_empty()
    }

    /// The oldest receiver parked for messages from `side`, if any.
    pub(crate) fn receiver_waiting(&self, side: Side) -> Option<WaiterId> {
        self.dirs[side.index()].receivers.front().copied()
    }

    /// Refuses a message beyond the channel's limits.
    pub(crate) fn check_message(&self, message: &Message<H>) -> Result<(), IpcError> {
        let Limits { max_bytes, max_handles, .. } = self.limits;
        if message.bytes.len() > max_bytes {
            return Err(IpcError::MessageTooLarge { bytes: message.bytes.len(), limit: max_bytes });
        }
        if message.handles.len() > max_handles {
            return Err(IpcError::TooManyHandles { handles: message.handles.len(), limit: max_handles });
        }
        Ok(())
    }

    /// Refuses to send from `end` if its peer is closed.
    pub(crate) fn check_peer_open(&self, end: ChannelEnd) -> Result<(), IpcError> {
        if self.is_open(end.side.peer()) { Ok(()) } else { Err(IpcError::PeerClosed { end }) }
    }

    /// Sends `delivery` from `end`: to the oldest parked receiver, else into the queue, else (if
    /// `park` names a waiter) parks it with the message. Registers nothing: parking callers record
    /// their waiter themselves. On failure the delivery comes back.
    pub(crate) fn route(
        &mut self,
        end: ChannelEnd,
        delivery: Delivery<H>,
        park: Option<WaiterId>,
        registry: &mut Registry,
    ) -> Result<Routed<H>, (IpcError, Delivery<H>)> {
        let capacity = self.limits.capacity;
        let dir = &mut self.dirs[end.side.index()];
        if let Some(receiver) = dir.receivers.pop_front() {
            registry.remove(receiver);
            if let Some(id) = delivery.call {
                self.mark_delivered(id);
            }
            return Ok(Routed::Handed(Wake { waiter: receiver, completion: Completion::Received(delivery) }));
        }
        if dir.queue.len() < capacity {
            dir.queue.push_back(delivery);
            return Ok(Routed::Queued);
        }
        let Some(waiter) = park else {
            return Err((IpcError::Full { end, capacity }, delivery));
        };
        if dir.senders.try_reserve(1).is_err() {
            return Err((IpcError::OutOfMemory, delivery));
        }
        dir.senders.push_back(ParkedSend { waiter, delivery });
        Ok(Routed::Parked)
    }

    /// Parks `waiter` as a receiver on `end`. The caller has checked that nothing is waiting.
    pub(crate) fn park_receiver(&mut self, end: ChannelEnd, waiter: WaiterId) -> Result<(), IpcError> {
        let receivers = &mut self.dirs[end.side.peer().index()].receivers;
        receivers.try_reserve(1).map_err(|_| IpcError::OutOfMemory)?;
        receivers.push_back(waiter);
        Ok(())
    }

    /// Takes the next message for `side` to receive, if any, moving the oldest parked sender's
    /// message into the room this makes; the wake completes that sender (a parked call's request
    /// moving up completes nothing: its caller waits on for the reply).
    pub(crate) fn take(&mut self, side: Side, registry: &mut Registry) -> Option<(Delivery<H>, Option<Wake<H>>)> {
        let dir = &mut self.dirs[side.peer().index()];
        let (delivery, sender) = match dir.queue.pop_front() {
            Some(delivery) => {
                let moved = dir.senders.pop_front().map(|ParkedSend { waiter, delivery }| {
                    let call = delivery.call;
                    dir.queue.push_back(delivery);
                    (waiter, call)
                });
                (delivery, moved)
            }
            // Only a rendezvous channel has parked senders and an empty queue.
            None => {
                let ParkedSend { waiter, delivery } = dir.senders.pop_front()?;
                let call = delivery.call;
                (delivery, Some((waiter, call)))
            }
        };
        let wake = match sender {
            Some((waiter, None)) => {
                registry.remove(waiter);
                Some(Wake { waiter, completion: Completion::Sent })
            }
            Some((_, Some(_))) | None => None,
        };
        if let Some(id) = delivery.call {
            self.mark_delivered(id);
        }
        Some((delivery, wake))
    }

    /// Reserves room to record one more call.
    pub(crate) fn reserve_call(&mut self) -> Result<(), IpcError> {
        self.calls.try_reserve(1).map_err(|_| IpcError::OutOfMemory)
    }

    /// Records a call from `caller` whose thread parks as `waiter`, after
    /// [`reserve_call`](Self::reserve_call); returns its fresh id.
    pub(crate) fn begin_call(&mut self, caller: Side, waiter: WaiterId) -> CallId {
        let id = CallId::from_bits(self.next_call);
        // 2^64 calls on one channel cannot happen; wrapping keeps this panic-free regardless.
        self.next_call = self.next_call.wrapping_add(1);
        self.calls.push(PendingCall { id, caller, waiter, delivered: false });
        id
    }

    /// Forgets call `id` (its request could not be routed, or it was cancelled).
    pub(crate) fn drop_call(&mut self, id: CallId) -> Option<WaiterId> {
        let at = self.calls.binary_search_by_key(&id, |c| c.id).ok()?;
        Some(self.calls.remove(at).waiter)
    }

    /// Ends call `id`, which `replier` must have received and not answered: returns the caller's
    /// waiter.
    pub(crate) fn finish_call(&mut self, replier: Side, id: CallId) -> Option<WaiterId> {
        let at = self.calls.binary_search_by_key(&id, |c| c.id).ok()?;
        let call = self.calls.get(at)?;
        if call.caller != replier.peer() || !call.delivered {
            return None;
        }
        Some(self.calls.remove(at).waiter)
    }

    /// The caller of call `id` if `replier` may answer it now (see [`finish_call`](Self::finish_call)).
    pub(crate) fn caller_waiting(&self, replier: Side, id: CallId) -> Option<WaiterId> {
        let at = self.calls.binary_search_by_key(&id, |c| c.id).ok()?;
        let call = self.calls.get(at)?;
        (call.caller == replier.peer() && call.delivered).then_some(call.waiter)
    }

    fn mark_delivered(&mut self, id: CallId) {
        // A cancelled call's request is still delivered; it just has no caller to answer.
        if let Ok(at) = self.calls.binary_search_by_key(&id, |c| c.id)
            && let Some(call) = self.calls.get_mut(at)
        {
            call.delivered = true;
        }
    }

    /// Undoes a parked operation that [`cancel_wait`](crate::ChannelTable::cancel_wait) found in
    /// the registry (already removed there); returns a parked send's or call's unqueued message.
    pub(crate) fn cancel(&mut self, waiter: WaiterId, parked: Parked) -> Option<Message<H>> {
        let side = parked.end.side;
        match parked.kind {
            ParkKind::Recv => {
                self.dirs[side.peer().index()].receivers.retain(|&w| w != waiter);
                None
            }
            ParkKind::Send => self.unpark_sender(side, waiter),
            ParkKind::Call(id) => {
                self.drop_call(id);
                self.unpark_sender(side, waiter)
            }
        }
    }

    fn unpark_sender(&mut self, side: Side, waiter: WaiterId) -> Option<Message<H>> {
        let senders = &mut self.dirs[side.index()].senders;
        let at = senders.iter().position(|s| s.waiter == waiter)?;
        senders.remove(at).map(|s| s.delivery.message)
    }

    /// Closes `end`: marks it closed, fails everything parked that can no longer complete, and
    /// hands back the handles queued for `end`. The caller has checked that `end` was open.
    pub(crate) fn close(&mut self, end: ChannelEnd, registry: &mut Registry) -> Closed<H> {
        let me = end.side;
        let peer = end.peer();
        self.open[me.index()] = false;
        let mut handles = Vec::new();
        let mut wakes = Vec::new();
        let mut fail = |waiter: WaiterId, error: IpcError, returned: Option<Message<H>>| {
            registry.remove(waiter);
            wakes.push(Wake { waiter, completion: Completion::Failed { error, returned } });
        };
        let mut dropped_calls = Vec::new();

        // Towards `end`: nobody will receive any of it.
        let inbound = &mut self.dirs[peer.side.index()];
        for delivery in inbound.queue.drain(..) {
            handles.extend(delivery.message.handles);
        }
        for ParkedSend { waiter, delivery } in inbound.senders.drain(..) {
            dropped_calls.extend(delivery.call);
            fail(waiter, IpcError::PeerClosed { end: peer }, Some(delivery.message));
        }
        for waiter in inbound.receivers.drain(..) {
            fail(waiter, IpcError::EndClosed { end }, None);
        }

        // From `end`: what is queued stays for the peer; nothing more will come.
        let outbound = &mut self.dirs[me.index()];
        for ParkedSend { waiter, delivery } in outbound.senders.drain(..) {
            dropped_calls.extend(delivery.call);
            fail(waiter, IpcError::EndClosed { end }, Some(delivery.message));
        }
        for waiter in outbound.receivers.drain(..) {
            fail(waiter, IpcError::PeerClosed { end: peer }, None);
        }

        // Calls either way can no longer be answered (parked requests were failed above).
        for call in self.calls.drain(..) {
            if dropped_calls.contains(&call.id) {
                continue;
            }
            let error =
                if call.caller == me { IpcError::EndClosed { end } } else { IpcError::PeerClosed { end: peer } };
            fail(call.waiter, error, None);
        }
        Closed { handles, wakes }
    }
}
