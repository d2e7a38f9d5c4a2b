//! The results parked threads wake up to: stored when an operation completes a waiter, taken by
//! that waiter when it runs again, and the list of threads to unpark meanwhile.

use alloc::vec::Vec;

use mica_ipc::{Completion, WaiterId, Wake};

use super::space::Transfer;

/// Completed waits, not yet picked up.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    /// Results for parked threads, waiting for them to run (a few at a time: a list, whose
    /// memory is kept, beats a map that allocates a node per entry).
    completions: Vec<(WaiterId, Completion<Transfer>)>,
    /// Threads to unpark ([`drain`](Self::drain); the memory is kept).
    to_wake: Vec<WaiterId>,
}

impl Wakes {
    /// Stores `wake`'s result for its waiter and marks the waiter to be unparked.
    pub(super) fn store(&mut self, wake: Wake<Transfer>) {
        // A waiter is parked in one operation at a time, so it has at most one result waiting.
        self.completions.push((wake.waiter, wake.completion));
        self.to_wake.push(wake.waiter);
    }

    /// Marks `waiter` to be unparked with no result: it waits on several ends at once and
    /// looks for itself once it runs.
    pub(super) fn wake(&mut self, waiter: WaiterId) {
        self.to_wake.push(waiter);
    }

    /// The result stored for `waiter`, if any (taken).
    pub(super) fn take(&mut self, waiter: WaiterId) -> Option<Completion<Transfer>> {
        let stored = self.completions.iter().position(|(w, _)| *w == waiter);
        stored.map(|i| self.completions.swap_remove(i).1)
    }

    /// The threads to unpark, now that results for them are stored.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = WaiterId> + '_ {
        self.to_wake.drain(..)
    }
}
