//! The channels, and how many holders each channel end has.
//!
//! A channel end stays open while something holds it: a handle in a space, a message in flight
//! that carries it, or the connection registry. When the last holder lets go, the end is closed,
//! its undelivered messages let go of the ends they carry, and the threads parked on the channel
//! wake with `peer-closed`.
//!
//! Messages can hold ends in a cycle: an end sent through its own channel sits in its own queue,
//! and so on through several channels. Once no space and nothing else outside the queues holds
//! any end of such a cycle, nothing can ever receive those messages, yet every end in it still
//! has a holder. [`Channels::collect`] finds and closes them: an end is live when something other
//! than a queued message holds it, or when it sits in a message queued for a live end (whose
//! holder may receive it); every other end is garbage.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use mica_ipc::{ChannelEnd, ChannelTable, IpcError, Limits};

use super::space::{Object, Transfer};
use super::wakes::Wakes;

/// The bounds of every channel: 16 queued messages each way, of at most 64 KiB and 16 handles.
pub const CHANNEL_LIMITS: Limits = Limits { capacity: 16, max_bytes: 64 * 1024, max_handles: 16 };

/// The most channels that exist at once, system-wide.
pub const MAX_CHANNELS: usize = 4096;

/// The channels and their ends' holder counts.
#[derive(Debug)]
pub(super) struct Channels {
    /// The channels themselves (queues, waiters, calls).
    pub(super) table: ChannelTable<Transfer>,
    holders: BTreeMap<ChannelEnd, usize>,
}

impl Channels {
    /// No channels yet; at most [`MAX_CHANNELS`].
    pub(super) fn new() -> Channels {
        Channels { table: ChannelTable::new(MAX_CHANNELS), holders: BTreeMap::new() }
    }

    /// A new channel with [`CHANNEL_LIMITS`]; its ends have no holder yet.
    pub(super) fn create(&mut self) -> Result<(ChannelEnd, ChannelEnd), IpcError> {
        self.table.create(CHANNEL_LIMITS)
    }

    /// Whether `end` has a holder (so it is open).
    pub(super) fn is_held(&self, end: ChannelEnd) -> bool {
        self.holders.contains_key(&end)
    }

    /// Closes `end` of a channel just made, if it never got a holder.
    pub(super) fn close_unheld(&mut self, end: ChannelEnd) {
        if !self.is_held(end) {
            let _ = self.table.close(end);
        }
    }

    /// One holder more for `object` (only channel ends count holders).
    pub(super) fn hold(&mut self, object: Object) {
        if let Object::End(end) = object {
            *self.holders.entry(end).or_insert(0) += 1;
        }
    }

    /// Closes every end that only messages nobody can receive hold (see the module's docs), and
    /// lets go of what their queues carried. Returns how many ends it closed. Costs a walk over
    /// every queued message.
    pub(super) fn collect(&mut self, wakes: &mut Wakes) -> usize {
        // How many of each end's holders are queued messages.
        let mut queued: BTreeMap<ChannelEnd, usize> = BTreeMap::new();
        for &end in self.holders.keys() {
            for (object, _) in self.table.queued_handles(end) {
                if let Object::End(carried) = object {
                    *queued.entry(*carried).or_insert(0) += 1;
                }
            }
        }
        // Live: held from outside the queues, or queued for a live end.
        let mut live: BTreeSet<ChannelEnd> = BTreeSet::new();
        let mut work: Vec<ChannelEnd> = Vec::new();
        for (&end, &count) in &self.holders {
            if count > queued.get(&end).copied().unwrap_or(0) {
                live.insert(end);
                work.push(end);
            }
        }
        while let Some(end) = work.pop() {
            for (object, _) in self.table.queued_handles(end) {
                if let Object::End(carried) = object
                    && live.insert(*carried)
                {
                    work.push(*carried);
                }
            }
        }
        let garbage: Vec<ChannelEnd> = self.holders.keys().filter(|end| !live.contains(end)).copied().collect();
        // Forgotten first, so that releasing what their queues carried skips them.
        for end in &garbage {
            self.holders.remove(end);
        }
        for &end in &garbage {
            if let Ok(closed) = self.table.close(end) {
                for wake in closed.wakes {
                    wakes.store(wake);
                }
                for (object, _) in closed.handles {
                    self.release(object, wakes);
                }
            }
        }
        garbage.len()
    }

    /// One holder fewer for `object`; closes it when none is left, and so on for the handles in
    /// its undelivered messages. The threads this wakes go to `wakes`. Hardware objects are not
    /// the channels' to release: their instance releases them when it ends.
    pub(super) fn release(&mut self, object: Object, wakes: &mut Wakes) {
        let mut work = Vec::from([object]);
        while let Some(object) = work.pop() {
            let Object::End(end) = object else { continue };
            let Some(count) = self.holders.get_mut(&end) else { continue };
            *count -= 1;
            if *count > 0 {
                continue;
            }
            self.holders.remove(&end);
            if let Ok(closed) = self.table.close(end) {
                work.extend(closed.handles.into_iter().map(|(object, _)| object));
                for wake in closed.wakes {
                    wakes.store(wake);
                }
            }
        }
    }

    /// How many channels exist.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}
