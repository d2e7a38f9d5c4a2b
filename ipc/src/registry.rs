//! The table-wide record of parked waiters: which operation on which end each one is parked in.
//!
//! It lets [`cancel_wait`](crate::ChannelTable::cancel_wait) find a waiter from its id alone and
//! refuses to park one waiter twice. A sorted vector, grown fallibly before anything changes, so
//! parking never aborts on a full heap.

use alloc::vec::Vec;

use crate::{CallId, ChannelEnd, IpcError, WaiterId};

/// Where a waiter is parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parked {
    /// The end whose operation parked.
    pub(crate) end: ChannelEnd,
    /// Which operation.
    pub(crate) kind: ParkKind,
}

/// The operation a waiter is parked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParkKind {
    /// A send waiting for room; the message is in the direction's parked senders.
    Send,
    /// A receive waiting for a message.
    Recv,
    /// A call waiting for its reply (its request may still be among the parked senders).
    Call(CallId),
}

/// Every parked waiter, sorted by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Vec<(WaiterId, Parked)>,
}

impl Registry {
    /// Refuses a waiter that is already parked.
    pub(crate) fn check_free(&self, waiter: WaiterId) -> Result<(), IpcError> {
        match self.position(waiter) {
            Ok(_) => Err(IpcError::WaiterBusy { waiter }),
            Err(_) => Ok(()),
        }
    }

    /// Makes room so the next [`insert`](Self::insert) does not allocate.
    pub(crate) fn reserve(&mut self) -> Result<(), IpcError> {
        self.entries.try_reserve(1).map_err(|_| IpcError::OutOfMemory)
    }

    /// Records `waiter` as parked. The caller has checked it is free and reserved room.
    pub(crate) fn insert(&mut self, waiter: WaiterId, parked: Parked) {
        match self.position(waiter) {
            Err(at) => self.entries.insert(at, (waiter, parked)),
            Ok(_) => debug_assert!(false, "waiter {waiter} parked twice"),
        }
    }

    /// Forgets `waiter`, returning where it was parked.
    pub(crate) fn remove(&mut self, waiter: WaiterId) -> Option<Parked> {
        let at = self.position(waiter).ok()?;
        Some(self.entries.remove(at).1)
    }

    /// How many waiters are parked.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn position(&self, waiter: WaiterId) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&waiter, |&(w, _)| w)
    }
}
