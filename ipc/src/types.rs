//! The values the channel API speaks in: ids, ends, limits, messages and blocking modes.

use alloc::vec::Vec;
use core::fmt;

/// One of the two ends of a channel. The ends are symmetric: each can send, receive, call and
/// reply; the names only tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The first end [`ChannelTable::create`](crate::ChannelTable::create) returns.
    A,
    /// The second end [`ChannelTable::create`](crate::ChannelTable::create) returns.
    B,
}

impl Side {
    /// The other side.
    pub const fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// Index into per-side arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

/// Names a channel in its [`ChannelTable`](crate::ChannelTable): a slot index plus the slot's
/// generation, so the id of a channel that has gone away never names the channel that reuses its
/// slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl fmt::Display for ChannelId {
    /// `index.generation`, e.g. `3.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.index, self.generation)
    }
}

/// One end of one channel: the kernel object a component's handle names (store it, or an `Arc`
/// around it, as the object type of a `mica_caps::HandleTable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelEnd {
    /// The channel.
    pub channel: ChannelId,
    /// Which of its ends.
    pub side: Side,
}

impl ChannelEnd {
    /// The other end of the same channel.
    pub const fn peer(self) -> ChannelEnd {
        ChannelEnd { channel: self.channel, side: self.side.peer() }
    }
}

impl fmt::Display for ChannelEnd {
    /// `end A of channel 3.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "end {} of channel {}", self.side, self.channel)
    }
}

/// A token the kernel picks for a thread that may park in a channel operation (its thread id, say).
/// The channel hands it back in a [`Wake`](crate::Wake) when the operation completes. A waiter can
/// be parked in at most one operation at a time, across the whole table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

impl fmt::Display for WaiterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Names one request made with [`ChannelTable::call`](crate::ChannelTable::call). The server
/// gets it in the [`Delivery`] and passes it back to
/// [`ChannelTable::reply`](crate::ChannelTable::reply). Ids are unique within a channel (never
/// reused); guessing one does not help, since a reply is accepted only for a request this end has
/// received and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

impl CallId {
    /// The call id with this raw value, as a component passed it in.
    pub const fn from_bits(bits: u64) -> CallId {
        CallId(bits)
    }

    /// The raw value to hand to a component.
    pub const fn to_bits(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A channel's bounds, fixed when it is created and the same in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// How many messages may wait in each direction's queue. 0 makes a rendezvous channel: a
    /// message passes only straight to a parked receiver, or from a parked sender to a receiver.
    pub capacity: usize,
    /// The largest message, in bytes (requests and replies alike).
    pub max_bytes: usize,
    /// The most handles one message may carry.
    pub max_handles: usize,
}

/// What goes through a channel: bytes, plus handles moved from the sender to the receiver.
///
/// `H` is whatever the kernel moves: typically the `(object, rights)` pair that
/// `mica_caps::HandleTable::take_for_transfer` returns, which the kernel inserts into the
/// receiver's table on delivery (or closes, if the message is handed back to it undelivered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message<H> {
    /// The payload.
    pub bytes: Vec<u8>,
    /// The moved kernel objects.
    pub handles: Vec<H>,
}

impl<H> Message<H> {
    /// A message of `bytes` carrying `handles`.
    pub fn new(bytes: Vec<u8>, handles: Vec<H>) -> Message<H> {
        Message { bytes, handles }
    }
}

/// A message as a receiver gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<H> {
    /// The message.
    pub message: Message<H>,
    /// `Some` if the message is a request made with [`call`](crate::ChannelTable::call): answer it
    /// with [`reply`](crate::ChannelTable::reply) and this id.
    pub call: Option<CallId>,
}

/// What an operation does when it cannot complete at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fail at once: `Full` for a send, `Empty` for a receive.
    NonBlocking,
    /// Park: the operation is recorded under this waiter, the call returns `Parked`, and the
    /// kernel parks the thread until a [`Wake`](crate::Wake) for the waiter comes out of a later
    /// operation (or it gives up with [`cancel_wait`](crate::ChannelTable::cancel_wait)).
    Blocking(WaiterId),
}
