//! A model check of the channel table: operations (send, receive, call, reply, cancel and close
//! on two channels, from both ends, by several waiters) applied to the table and to a plain
//! model, step by step. The property tests draw the operations at random; the fuzzer
//! (`fuzz/targets`, feature `check`) decodes them from its bytes ([`run_bytes`]).
//!
//! The model keeps, per direction, one line of messages in the order they were sent (queued ones
//! first, then those still held by parked senders), the parked receivers per end and the pending
//! calls; every result of the table must equal the model's prediction. On top of that the harness
//! checks, from the table's results alone: each direction delivers in send order, no handle comes
//! out twice or is lost (all are back once everything is closed), no queue exceeds its capacity,
//! and every waiter that parked is woken or cancelled exactly once.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::*;

mod model;

use model::ModelChannel;

/// One operation of a check.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Send { ch: usize, side: Side, len: usize, handles: usize, waiter: Option<u64> },
    Recv { ch: usize, side: Side, waiter: Option<u64> },
    Call { ch: usize, side: Side, len: usize, handles: usize, waiter: u64 },
    Reply { ch: usize, side: Side, pick: usize, len: usize, handles: usize },
    Cancel { waiter: u64 },
    Close { ch: usize, side: Side },
}

/// The table and its model, side by side.
pub(crate) struct Harness {
    table: ChannelTable<u32>,
    ends: Vec<[ChannelEnd; 2]>,
    /// `None` once both ends are closed.
    model: Vec<Option<ModelChannel>>,
    /// The model's parked waiters, and on which channel.
    parked: BTreeMap<WaiterId, usize>,
    /// Parked waiters as seen from the table's results alone, with the end they parked on.
    outstanding: BTreeMap<WaiterId, ChannelEnd>,
    /// Handles inside the table: given to it and not yet back out.
    in_flight: BTreeSet<u32>,
    next_handle: u32,
    next_serial: u64,
    /// The last serial delivered per direction (channel, sending side).
    last_delivered: BTreeMap<(ChannelId, Side), u64>,
    /// Every call id some end has received: (channel index, receiving side, id).
    served: Vec<(usize, Side, CallId)>,
}

fn serial(message: &Message<u32>) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&message.bytes[..8]);
    u64::from_le_bytes(bytes)
}

impl Harness {
    pub(crate) fn new(limits: &[Limits]) -> Harness {
        let mut table = ChannelTable::new(limits.len());
        let mut ends = Vec::new();
        let mut model = Vec::new();
        for &l in limits {
            let (a, b) = table.create(l).expect("a table with room for the check's channels");
            ends.push([a, b]);
            model.push(Some(ModelChannel::new(l)));
        }
        Harness {
            table,
            ends,
            model,
            parked: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            next_handle: 1,
            next_serial: 1,
            last_delivered: BTreeMap::new(),
            served: Vec::new(),
        }
    }

    fn message(&mut self, len: usize, handles: usize) -> Message<u32> {
        let mut bytes = self.next_serial.to_le_bytes().to_vec();
        self.next_serial += 1;
        bytes.resize(len.max(8), 0);
        let handles: Vec<u32> = (0..handles).map(|i| self.next_handle + i as u32).collect();
        self.next_handle += handles.len() as u32;
        self.in_flight.extend(handles.iter().copied());
        Message::new(bytes, handles)
    }

    // ---- the table's results, checked without the model ----

    /// `message` left the table: each of its handles must have been inside, and only once.
    fn out(&mut self, handles: &[u32]) {
        for h in handles {
            assert!(self.in_flight.remove(h), "handle {h} came out twice or was never sent");
        }
    }

    /// `delivery` reached `to`: in send order for its direction.
    fn delivered(&mut self, to: ChannelEnd, delivery: &Delivery<u32>) {
        self.out(&delivery.message.handles);
        let serial = serial(&delivery.message);
        let last = self.last_delivered.entry((to.channel, to.side.peer())).or_insert(0);
        assert!(serial > *last, "message {serial} delivered to {to} after message {last}");
        *last = serial;
        if let Some(call) = delivery.call {
            let ch = self.ends.iter().position(|e| e[0].channel == to.channel).expect("a channel of this check");
            self.served.push((ch, to.side, call));
        }
    }

    fn parks(&mut self, waiter: WaiterId, end: ChannelEnd) {
        assert!(self.outstanding.insert(waiter, end).is_none(), "waiter {waiter} parked twice");
    }

    fn wake(&mut self, wake: &Wake<u32>) {
        let end = self.outstanding.remove(&wake.waiter);
        let Some(end) = end else { panic!("woke waiter {} that was not parked", wake.waiter) };
        match &wake.completion {
            Completion::Sent => {}
            Completion::Received(delivery) => self.delivered(end, delivery),
            Completion::Replied(message) => self.out(&message.handles),
            Completion::Failed { returned, .. } => self.out(returned.as_ref().map_or(&[][..], |m| &m.handles)),
        }
    }

    // ---- applying an operation to both ----

    pub(crate) fn apply(&mut self, op: &Op) {
        match *op {
            Op::Send { ch, side, len, handles, waiter } => {
                let end = self.ends[ch][side.index()];
                let message = self.message(len, handles);
                let mode = waiter.map_or(Mode::NonBlocking, |w| Mode::Blocking(WaiterId(w)));
                let want = self.model_send(ch, side, message.clone(), mode);
                let got = self.table.send(end, message, mode);
                assert_eq!(got, want);
                match got {
                    Ok(SendOk::Done { wake }) => wake.iter().for_each(|w| self.wake(w)),
                    Ok(SendOk::Parked) => {
                        let Mode::Blocking(w) = mode else { panic!("parked without a waiter") };
                        self.parks(w, end);
                    }
                    Err(e) => self.out(&e.message.handles),
                }
            }
            Op::Recv { ch, side, waiter } => {
                let end = self.ends[ch][side.index()];
                let mode = waiter.map_or(Mode::NonBlocking, |w| Mode::Blocking(WaiterId(w)));
                let want = self.model_recv(ch, side, mode);
                let got = self.table.recv(end, mode);
                assert_eq!(got, want);
                match got {
                    Ok(RecvOk::Received { delivery, wake }) => {
                        self.delivered(end, &delivery);
                        wake.iter().for_each(|w| self.wake(w));
                    }
                    Ok(RecvOk::Parked) => {
                        let Mode::Blocking(w) = mode else { panic!("parked without a waiter") };
                        self.parks(w, end);
                    }
                    Err(_) => {}
                }
            }
            Op::Call { ch, side, len, handles, waiter } => {
                let end = self.ends[ch][side.index()];
                let message = self.message(len, handles);
                let w = WaiterId(waiter);
                let want = self.model_call(ch, side, message.clone(), w);
                let got = self.table.call(end, message, w);
                assert_eq!(got, want);
                match got {
                    Ok(ok) => {
                        self.parks(w, end);
                        ok.wake.iter().for_each(|w| self.wake(w));
                    }
                    Err(e) => self.out(&e.message.handles),
                }
            }
            Op::Reply { ch, side, pick, len, handles } => {
                let end = self.ends[ch][side.index()];
                // Mostly ids some end of this channel received (maybe the other end, maybe already
                // answered); else a guess, which may name a call not yet received, or none at all.
                let known: Vec<CallId> = self.served.iter().filter(|s| s.0 == ch).map(|s| s.2).collect();
                let guess = CallId::from_bits(1 + (pick / 4 % 8) as u64);
                let id =
                    if pick % 4 == 0 { guess } else { known.get(pick % known.len().max(1)).copied().unwrap_or(guess) };
                let message = self.message(len, handles);
                let want = self.model_reply(ch, side, id, message.clone());
                let got = self.table.reply(end, id, message);
                assert_eq!(got, want);
                match got {
                    Ok(wake) => self.wake(&wake),
                    Err(e) => self.out(&e.message.handles),
                }
            }
            Op::Cancel { waiter } => {
                let w = WaiterId(waiter);
                let want = self.model_cancel(w);
                let got = self.table.cancel_wait(w);
                assert_eq!(got, want);
                if let Ok(returned) = got {
                    assert!(self.outstanding.remove(&w).is_some(), "cancelled waiter {w} was not parked");
                    self.out(returned.as_ref().map_or(&[][..], |m| &m.handles));
                }
            }
            Op::Close { ch, side } => {
                let end = self.ends[ch][side.index()];
                let want = self.model_close(ch, side);
                let got = self.table.close(end).map(|mut closed| {
                    closed.handles.sort_unstable();
                    closed.wakes.sort_by_key(|w| w.waiter);
                    closed
                });
                assert_eq!(got, want);
                if let Ok(closed) = got {
                    self.out(&closed.handles);
                    closed.wakes.iter().for_each(|w| self.wake(w));
                }
            }
        }
    }

    /// Invariants between any two operations.
    pub(crate) fn check(&self) {
        assert_eq!(self.table.parked(), self.parked.len());
        assert_eq!(self.outstanding.len(), self.parked.len());
        assert_eq!(self.table.len(), self.model.iter().flatten().count());
        for (ends, model) in self.ends.iter().zip(&self.model) {
            let Some(c) = model else {
                assert_eq!(self.table.queued(ends[0]), Err(IpcError::NoSuchChannel { channel: ends[0].channel }));
                continue;
            };
            for end in ends {
                let queued = self.table.queued(*end).expect("an open channel's end");
                assert!(
                    queued <= c.limits.capacity,
                    "{queued} messages queued for {end}, capacity {}",
                    c.limits.capacity
                );
                assert_eq!(queued, c.queued(end.side.peer()));
                let line = &c.lines[end.side.peer().index()];
                if line.iter().any(|e| e.sender.is_some()) {
                    assert_eq!(queued, c.limits.capacity, "a sender is parked while there is room");
                }
            }
        }
    }

    /// Closes every end still open; then nothing may be parked and every handle must be back.
    pub(crate) fn finish(&mut self) {
        for ch in 0..self.ends.len() {
            for side in [Side::A, Side::B] {
                if self.end_error(ch, side).is_none() {
                    self.apply(&Op::Close { ch, side });
                    self.check();
                }
            }
        }
        assert!(self.table.is_empty());
        assert!(self.parked.is_empty() && self.outstanding.is_empty(), "waiters left parked: {:?}", self.outstanding);
        for w in 0..WAITERS {
            assert_eq!(self.table.cancel_wait(WaiterId(w)), Err(IpcError::UnknownWaiter { waiter: WaiterId(w) }));
        }
        assert!(self.in_flight.is_empty(), "handles never returned: {:?}", self.in_flight);
    }
}
/// Waiters the operations name.
pub(crate) const WAITERS: u64 = 6;
/// Channels a check makes.
pub(crate) const CHANNELS: usize = 2;

/// Runs a check whose channel limits and operations are decoded from `data`: a byte per
/// channel's limits, then a byte per operation's kind and its arguments from the bytes after it
/// (missing bytes read as 0). Panics when the table and the model disagree, or when an invariant
/// breaks.
pub fn run_bytes(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut limits = Vec::new();
    for _ in 0..CHANNELS {
        let b = next().unwrap_or(0);
        limits.push(Limits {
            capacity: usize::from(b % 4),
            max_bytes: 8 + usize::from(b / 4 % 4),
            max_handles: usize::from(b / 16 % 3),
        });
    }
    let mut harness = Harness::new(&limits);
    while let Some(kind) = next() {
        let p = next().unwrap_or(0);
        let ch = usize::from(p & 1) % CHANNELS;
        let side = if p & 2 == 0 { Side::A } else { Side::B };
        let len = 8 + usize::from(p >> 2) % 5;
        let handles = usize::from(p >> 5) % 4;
        let w = u64::from(next().unwrap_or(0));
        let waiter = (w % (WAITERS + 1) < WAITERS).then_some(w % (WAITERS + 1));
        let op = match kind % 27 {
            0..8 => Op::Send { ch, side, len, handles, waiter },
            8..16 => Op::Recv { ch, side, waiter },
            16..20 => Op::Call { ch, side, len, handles, waiter: w % WAITERS },
            20..24 => Op::Reply { ch, side, pick: usize::from(next().unwrap_or(0)), len, handles },
            24..26 => Op::Cancel { waiter: w % WAITERS },
            _ => Op::Close { ch, side },
        };
        harness.apply(&op);
        harness.check();
    }
    harness.finish();
}
