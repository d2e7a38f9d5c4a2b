//! Threads waiting on several channel ends at once (`mica:kernel/ipc.wait`). Such a thread is
//! not parked in any channel: it is a watcher of each end it named, and after every IPC
//! operation the watchers whose ends became readable are woken. The wait is level-triggered:
//! nothing is taken for the watcher, which receives itself once it runs.

use alloc::vec::Vec;

use mica_ipc::{ChannelEnd, ChannelTable, WaiterId};

use super::space::Transfer;
use super::wakes::Wakes;

/// A thread waiting for any of its ends to become readable.
#[derive(Debug)]
struct Watcher {
    waiter: WaiterId,
    /// The ends, each with its position in the waiter's list of handles.
    ends: Vec<(u32, ChannelEnd)>,
    /// Already marked to be woken (once is enough until it looks again).
    woken: bool,
}

/// Every watching thread.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    list: Vec<Watcher>,
}

/// The positions of the readable ends among `ends`.
fn readable(table: &ChannelTable<Transfer>, ends: &[(u32, ChannelEnd)]) -> Vec<u32> {
    ends.iter().filter(|(_, end)| table.readable(*end)).map(|(i, _)| *i).collect()
}

impl Watchers {
    /// The positions of `ends` that are readable now. When there are none, `waiter` watches
    /// them from now on (replacing what it watched before), until [`forget`](Self::forget).
    pub(super) fn look(
        &mut self,
        table: &ChannelTable<Transfer>,
        waiter: WaiterId,
        ends: &[(u32, ChannelEnd)],
    ) -> Vec<u32> {
        let ready = readable(table, ends);
        self.forget(waiter);
        if ready.is_empty() && !ends.is_empty() {
            self.list.push(Watcher { waiter, ends: ends.to_vec(), woken: false });
        }
        ready
    }

    /// `waiter` watches nothing any more.
    pub(super) fn forget(&mut self, waiter: WaiterId) {
        self.list.retain(|w| w.waiter != waiter);
    }

    /// Marks to be woken every watcher one of whose ends is readable now. Costs one test while
    /// no thread watches (the common case: it runs after every IPC operation).
    #[inline]
    pub(super) fn wake_ready(&mut self, table: &ChannelTable<Transfer>, wakes: &mut Wakes) {
        if !self.list.is_empty() {
            self.wake_watching(table, wakes);
        }
    }

    #[inline(never)]
    fn wake_watching(&mut self, table: &ChannelTable<Transfer>, wakes: &mut Wakes) {
        for watcher in self.list.iter_mut().filter(|w| !w.woken) {
            if watcher.ends.iter().any(|(_, end)| table.readable(*end)) {
                watcher.woken = true;
                wakes.wake(watcher.waiter);
            }
        }
    }
}
