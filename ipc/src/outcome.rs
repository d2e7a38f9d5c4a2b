//! What the operations return: their own results and the parked threads they complete.

use alloc::vec::Vec;

use crate::{CallId, Delivery, IpcError, Message, WaiterId};

/// A parked operation that has completed: the kernel wakes the thread behind `waiter` and gives it
/// `completion` as the result of the operation it parked in. The thread does not retry anything:
/// a parked receiver gets its message here, a parked sender learns its message went through.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a parked thread stays parked unless the kernel wakes it"]
pub struct Wake<H> {
    /// Which parked operation.
    pub waiter: WaiterId,
    /// Its result.
    pub completion: Completion<H>,
}

/// The result of a parked operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion<H> {
    /// A parked send: the message is now in the queue (or with a receiver).
    Sent,
    /// A parked receive: this message arrived.
    Received(Delivery<H>),
    /// A call: the server answered with this message.
    Replied(Message<H>),
    /// The operation failed: the end was closed under it ([`IpcError::EndClosed`]) or its peer
    /// closed ([`IpcError::PeerClosed`]). A send or call whose message had not yet entered the
    /// queue gets it back in `returned`; a message that was already queued is not returned here
    /// (see [`Closed::handles`]).
    Failed {
        /// Why.
        error: IpcError,
        /// The undelivered message of a parked send or call, handed back.
        returned: Option<Message<H>>,
    },
}

/// A send that was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a send may complete a parked receiver, or park the sender"]
pub enum SendOk<H> {
    /// The message is queued, or handed straight to a parked receiver, which `wake` then
    /// completes.
    Done {
        /// The parked receiver that got the message, if one was waiting.
        wake: Option<Wake<H>>,
    },
    /// The queue was full and the mode was [`Mode::Blocking`](crate::Mode::Blocking): the channel
    /// holds the message and the kernel parks the sender until a [`Wake`] for its waiter.
    Parked,
}

/// A receive that was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a receive may complete a parked sender, or park the receiver"]
pub enum RecvOk<H> {
    /// The next message. Taking it made room, so a parked sender's message moved into the queue
    /// and `wake` completes that sender.
    Received {
        /// The message.
        delivery: Delivery<H>,
        /// The parked sender whose message moved into the queue, if one was waiting.
        wake: Option<Wake<H>>,
    },
    /// Nothing was waiting and the mode was [`Mode::Blocking`](crate::Mode::Blocking): the kernel
    /// parks the receiver until a [`Wake`] carrying its message (or an error).
    Parked,
}

/// A call that was accepted. The caller always parks: its [`Wake`] carries the reply
/// ([`Completion::Replied`]) or the failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a call may complete a parked receiver, and always parks the caller"]
pub struct CallOk<H> {
    /// The id the server will reply to.
    pub call: CallId,
    /// The parked receiver on the server's end that got the request, if one was waiting.
    pub wake: Option<Wake<H>>,
}

/// What closing an end hands back to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "closing wakes parked threads and hands back handles the kernel must close"]
pub struct Closed<H> {
    /// Every handle in messages that were queued for the closed end and never received. The
    /// kernel closes them. (Messages queued the other way stay for the peer to receive; they come
    /// back when the peer closes, if it never receives them.)
    pub handles: Vec<H>,
    /// Every operation parked on this channel that the close ends: on this end with
    /// [`IpcError::EndClosed`], on the peer with [`IpcError::PeerClosed`], including calls in
    /// either direction.
    pub wakes: Vec<Wake<H>>,
}
