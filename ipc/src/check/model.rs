//! The model the property tests check the table against: per direction, one line of messages in
//! send order (queued ones first, then those still held by parked senders), the parked receivers
//! per end and the pending calls. Written for plainness, not speed.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::Harness;
use crate::*;

/// A message in a model line; `sender` is set while a parked sender still holds it.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    delivery: Delivery<u32>,
    pub(super) sender: Option<WaiterId>,
}

#[derive(Clone, Debug)]
pub(super) struct Call {
    id: CallId,
    caller: Side,
    waiter: WaiterId,
    delivered: bool,
}

/// What one channel should hold.
#[derive(Debug)]
pub(super) struct ModelChannel {
    pub(super) limits: Limits,
    open: [bool; 2],
    /// By sending side.
    pub(super) lines: [VecDeque<Entry>; 2],
    /// By receiving side.
    receivers: [VecDeque<WaiterId>; 2],
    calls: Vec<Call>,
    next_call: u64,
}

impl ModelChannel {
    pub(super) fn new(limits: Limits) -> ModelChannel {
        let lines = Default::default();
        ModelChannel { limits, open: [true; 2], lines, receivers: Default::default(), calls: Vec::new(), next_call: 1 }
    }

    pub(super) fn queued(&self, from: Side) -> usize {
        self.lines[from.index()].iter().filter(|e| e.sender.is_none()).count()
    }

    fn mark_delivered(&mut self, id: Option<CallId>) {
        for call in &mut self.calls {
            if Some(call.id) == id {
                call.delivered = true;
            }
        }
    }

    fn remove_call(&mut self, id: Option<CallId>) {
        self.calls.retain(|c| Some(c.id) != id);
    }
}

/// Where a routed message went, in the model.
enum Routed {
    Handed(Wake<u32>),
    Queued,
    Parked,
    Full(Delivery<u32>),
}

impl Harness {
    pub(super) fn busy(&self, mode: Mode) -> Option<WaiterId> {
        match mode {
            Mode::Blocking(w) if self.parked.contains_key(&w) => Some(w),
            _ => None,
        }
    }

    /// The error every operation on `end` checks first, if any.
    pub(super) fn end_error(&self, ch: usize, side: Side) -> Option<IpcError> {
        let end = self.ends[ch][side.index()];
        match &self.model[ch] {
            None => Some(IpcError::NoSuchChannel { channel: end.channel }),
            Some(c) if !c.open[side.index()] => Some(IpcError::EndClosed { end }),
            Some(_) => None,
        }
    }

    /// The message-limit and peer checks of send, call and reply.
    fn send_error(&self, ch: usize, side: Side, message: &Message<u32>) -> Option<IpcError> {
        let c = self.model[ch].as_ref()?;
        let end = self.ends[ch][side.index()];
        if message.bytes.len() > c.limits.max_bytes {
            return Some(IpcError::MessageTooLarge { bytes: message.bytes.len(), limit: c.limits.max_bytes });
        }
        if message.handles.len() > c.limits.max_handles {
            return Some(IpcError::TooManyHandles { handles: message.handles.len(), limit: c.limits.max_handles });
        }
        (!c.open[side.peer().index()]).then_some(IpcError::PeerClosed { end })
    }

    /// Routes `delivery` from `side` as send and call do.
    fn route(&mut self, ch: usize, side: Side, delivery: Delivery<u32>, park: Option<WaiterId>) -> Routed {
        let Some(c) = self.model[ch].as_mut() else { unreachable!() };
        if let Some(r) = c.receivers[side.peer().index()].pop_front() {
            self.parked.remove(&r);
            c.mark_delivered(delivery.call);
            return Routed::Handed(Wake { waiter: r, completion: Completion::Received(delivery) });
        }
        if c.queued(side) < c.limits.capacity {
            c.lines[side.index()].push_back(Entry { delivery, sender: None });
            return Routed::Queued;
        }
        match park {
            None => Routed::Full(delivery),
            Some(w) => {
                c.lines[side.index()].push_back(Entry { delivery, sender: Some(w) });
                self.parked.insert(w, ch);
                Routed::Parked
            }
        }
    }

    pub(super) fn model_send(
        &mut self,
        ch: usize,
        side: Side,
        message: Message<u32>,
        mode: Mode,
    ) -> Result<SendOk<u32>, SendError<u32>> {
        let end = self.ends[ch][side.index()];
        let error = self.end_error(ch, side).or_else(|| self.busy(mode).map(|waiter| IpcError::WaiterBusy { waiter }));
        if let Some(error) = error.or_else(|| self.send_error(ch, side, &message)) {
            return Err(SendError { error, message });
        }
        let park = match mode {
            Mode::Blocking(w) => Some(w),
            Mode::NonBlocking => None,
        };
        match self.route(ch, side, Delivery { message, call: None }, park) {
            Routed::Handed(wake) => Ok(SendOk::Done { wake: Some(wake) }),
            Routed::Queued => Ok(SendOk::Done { wake: None }),
            Routed::Parked => Ok(SendOk::Parked),
            Routed::Full(delivery) => {
                let capacity = self.model[ch].as_ref().map_or(0, |c| c.limits.capacity);
                Err(SendError { error: IpcError::Full { end, capacity }, message: delivery.message })
            }
        }
    }

    pub(super) fn model_recv(&mut self, ch: usize, side: Side, mode: Mode) -> Result<RecvOk<u32>, IpcError> {
        let end = self.ends[ch][side.index()];
        if let Some(error) =
            self.end_error(ch, side).or_else(|| self.busy(mode).map(|waiter| IpcError::WaiterBusy { waiter }))
        {
            return Err(error);
        }
        let Some(c) = self.model[ch].as_mut() else { unreachable!() };
        let line = &mut c.lines[side.peer().index()];
        if let Some(front) = line.pop_front() {
            // The sender whose message now counts as sent: the front's own (rendezvous), or the
            // first one parked behind the queue, which moves in.
            let sender = match front.sender {
                Some(w) => Some((w, front.delivery.call)),
                None => line
                    .iter_mut()
                    .find(|e| e.sender.is_some())
                    .and_then(|e| e.sender.take().map(|w| (w, e.delivery.call))),
            };
            let wake = match sender {
                Some((w, None)) => {
                    self.parked.remove(&w);
                    Some(Wake { waiter: w, completion: Completion::Sent })
                }
                _ => None,
            };
            c.mark_delivered(front.delivery.call);
            return Ok(RecvOk::Received { delivery: front.delivery, wake });
        }
        if !c.open[side.peer().index()] {
            return Err(IpcError::PeerClosed { end });
        }
        match mode {
            Mode::NonBlocking => Err(IpcError::Empty { end }),
            Mode::Blocking(w) => {
                c.receivers[side.index()].push_back(w);
                self.parked.insert(w, ch);
                Ok(RecvOk::Parked)
            }
        }
    }

    pub(super) fn model_call(
        &mut self,
        ch: usize,
        side: Side,
        message: Message<u32>,
        w: WaiterId,
    ) -> Result<CallOk<u32>, SendError<u32>> {
        let error = self
            .end_error(ch, side)
            .or_else(|| self.busy(Mode::Blocking(w)).map(|waiter| IpcError::WaiterBusy { waiter }));
        if let Some(error) = error.or_else(|| self.send_error(ch, side, &message)) {
            return Err(SendError { error, message });
        }
        let Some(c) = self.model[ch].as_mut() else { unreachable!() };
        let id = CallId::from_bits(c.next_call);
        c.next_call += 1;
        c.calls.push(Call { id, caller: side, waiter: w, delivered: false });
        self.parked.insert(w, ch);
        let wake = match self.route(ch, side, Delivery { message, call: Some(id) }, Some(w)) {
            Routed::Handed(wake) => Some(wake),
            _ => None,
        };
        Ok(CallOk { call: id, wake })
    }

    pub(super) fn model_reply(
        &mut self,
        ch: usize,
        side: Side,
        id: CallId,
        message: Message<u32>,
    ) -> Result<Wake<u32>, SendError<u32>> {
        let end = self.ends[ch][side.index()];
        if let Some(error) = self.end_error(ch, side).or_else(|| self.send_error(ch, side, &message)) {
            return Err(SendError { error, message });
        }
        let Some(c) = self.model[ch].as_mut() else { unreachable!() };
        let Some(at) = c.calls.iter().position(|k| k.id == id && k.caller == side.peer() && k.delivered) else {
            return Err(SendError { error: IpcError::UnknownCall { end, call: id }, message });
        };
        let waiter = c.calls.remove(at).waiter;
        self.parked.remove(&waiter);
        Ok(Wake { waiter, completion: Completion::Replied(message) })
    }

    pub(super) fn model_cancel(&mut self, w: WaiterId) -> Result<Option<Message<u32>>, IpcError> {
        let ch = self.parked.remove(&w).ok_or(IpcError::UnknownWaiter { waiter: w })?;
        let Some(c) = self.model[ch].as_mut() else { unreachable!() };
        for receivers in &mut c.receivers {
            receivers.retain(|&r| r != w);
        }
        c.calls.retain(|k| k.waiter != w);
        for line in &mut c.lines {
            if let Some(at) = line.iter().position(|e| e.sender == Some(w)) {
                return Ok(line.remove(at).map(|e| e.delivery.message));
            }
        }
        Ok(None)
    }

    pub(super) fn model_close(&mut self, ch: usize, side: Side) -> Result<Closed<u32>, IpcError> {
        if let Some(error) = self.end_error(ch, side) {
            return Err(error);
        }
        let end = self.ends[ch][side.index()];
        let peer = end.peer();
        let Some(c) = self.model[ch].as_mut() else { unreachable!() };
        c.open[side.index()] = false;
        let mut handles = Vec::new();
        let mut wakes = Vec::new();
        let mut fail = |w: WaiterId, error, returned| {
            self.parked.remove(&w);
            wakes.push(Wake { waiter: w, completion: Completion::Failed { error, returned } });
        };
        for e in core::mem::take(&mut c.lines[peer.side.index()]) {
            match e.sender {
                Some(w) => {
                    c.calls.retain(|k| Some(k.id) != e.delivery.call);
                    fail(w, IpcError::PeerClosed { end: peer }, Some(e.delivery.message));
                }
                None => handles.extend(e.delivery.message.handles),
            }
        }
        for w in core::mem::take(&mut c.receivers[side.index()]) {
            fail(w, IpcError::EndClosed { end }, None);
        }
        let outbound = core::mem::take(&mut c.lines[side.index()]);
        for e in outbound {
            match e.sender {
                Some(w) => {
                    c.remove_call(e.delivery.call);
                    fail(w, IpcError::EndClosed { end }, Some(e.delivery.message));
                }
                None => c.lines[side.index()].push_back(e),
            }
        }
        for w in core::mem::take(&mut c.receivers[peer.side.index()]) {
            fail(w, IpcError::PeerClosed { end: peer }, None);
        }
        for k in core::mem::take(&mut c.calls) {
            let error = if k.caller == side { IpcError::EndClosed { end } } else { IpcError::PeerClosed { end: peer } };
            fail(k.waiter, error, None);
        }
        if c.open == [false; 2] {
            assert!(c.lines.iter().all(VecDeque::is_empty), "a dead channel still holds messages");
            self.model[ch] = None;
        }
        handles.sort_unstable();
        wakes.sort_by_key(|w| w.waiter);
        Ok(Closed { handles, wakes })
    }
}
