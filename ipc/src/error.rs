//! Why a channel operation was refused.

use core::fmt;

use crate::{CallId, ChannelEnd, ChannelId, Message, WaiterId};

/// Why a channel operation failed. A refused operation changes nothing.
///
/// When several things are wrong, the error is the first of: the channel does not exist, the end
/// is closed, the waiter is already parked, the message is too large, it carries too many handles,
/// the peer is closed; then what the operation itself found (`Full`, `Empty`, `UnknownCall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// The id names no live channel: never created, or both ends are closed.
    NoSuchChannel {
        /// The id as it was passed in.
        channel: ChannelId,
    },
    /// This end has been closed; nothing more can be done with it.
    EndClosed {
        /// The closed end.
        end: ChannelEnd,
    },
    /// The other end is closed: nothing sent can be received any more, and (once the queue is
    /// drained) nothing more will arrive.
    PeerClosed {
        /// The end that was used, whose peer is closed.
        end: ChannelEnd,
    },
    /// A non-blocking send found the queue towards the peer full.
    Full {
        /// The sending end.
        end: ChannelEnd,
        /// The queue's capacity, in messages.
        capacity: usize,
    },
    /// A non-blocking receive found no message waiting.
    Empty {
        /// The receiving end.
        end: ChannelEnd,
    },
    /// The message has more bytes than the channel allows.
    MessageTooLarge {
        /// The message's size.
        bytes: usize,
        /// The channel's [`max_bytes`](crate::Limits::max_bytes).
        limit: usize,
    },
    /// The message carries more handles than the channel allows.
    TooManyHandles {
        /// How many the message carries.
        handles: usize,
        /// The channel's [`max_handles`](crate::Limits::max_handles).
        limit: usize,
    },
    /// A reply names no call this end has received and not yet answered (made up, already
    /// answered, or its caller gave up).
    UnknownCall {
        /// The replying end.
        end: ChannelEnd,
        /// The call id as it was passed in.
        call: CallId,
    },
    /// [`cancel_wait`](crate::ChannelTable::cancel_wait) for a waiter that is not parked (never
    /// was, or was already woken or cancelled).
    UnknownWaiter {
        /// The waiter as it was passed in.
        waiter: WaiterId,
    },
    /// A blocking operation named a waiter that is already parked in another operation.
    WaiterBusy {
        /// The waiter as it was passed in.
        waiter: WaiterId,
    },
    /// The channel table already holds as many channels as it was created for.
    TableFull {
        /// The table's capacity, in channels.
        capacity: usize,
    },
    /// The kernel heap could not provide memory for a new channel's queues or to record a waiter.
    OutOfMemory,
}

/// `"1 byte"`, `"2 bytes"`.
struct Count(usize, &'static str);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.0, self.1)
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpcError::NoSuchChannel { channel } => {
                write!(f, "channel {channel} does not exist (never created, or both ends are closed)")
            }
            IpcError::EndClosed { end } => write!(f, "{end} is closed"),
            IpcError::PeerClosed { end } => write!(f, "the peer of {end} is closed"),
            IpcError::Full { end, capacity } => {
                write!(f, "the queue from {end} to its peer is full (capacity: {})", Count(capacity, "message"))
            }
            IpcError::Empty { end } => write!(f, "no message is waiting for {end}"),
            IpcError::MessageTooLarge { bytes, limit } => {
                write!(f, "message of {} exceeds the channel's limit of {}", Count(bytes, "byte"), Count(limit, "byte"))
            }
            IpcError::TooManyHandles { handles, limit } => write!(
                f,
                "message carries {}, more than the channel's limit of {}",
                Count(handles, "handle"),
                Count(limit, "handle")
            ),
            IpcError::UnknownCall { end, call } => write!(
                f,
                "call {call} awaits no reply from {end} (never received there, already answered, \
                 or its caller gave up)"
            ),
            IpcError::UnknownWaiter { waiter } => {
                write!(f, "waiter {waiter} is not parked on any channel (never parked, or already woken or cancelled)")
            }
            IpcError::WaiterBusy { waiter } => {
                write!(f, "waiter {waiter} is already parked in another channel operation")
            }
            IpcError::TableFull { capacity } => {
                write!(f, "channel table is full (capacity: {})", Count(capacity, "channel"))
            }
            IpcError::OutOfMemory => f.write_str("out of memory for a channel's queues or its waiter records"),
        }
    }
}

impl core::error::Error for IpcError {}

/// A refused send, call or reply: why, and the message handed back untouched, so the kernel can
/// return its handles to the sender's table (or close them). A message is never dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendError<H> {
    /// Why.
    pub error: IpcError,
    /// The message that was not sent.
    pub message: Message<H>,
}

impl<H> fmt::Display for SendError<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<H: fmt::Debug> core::error::Error for SendError<H> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Side;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn messages_say_what_went_wrong() {
        let channel = ChannelId { index: 3, generation: 1 };
        let end = ChannelEnd { channel, side: Side::A };
        let cases = [
            (
                IpcError::NoSuchChannel { channel },
                "channel 3.1 does not exist (never created, or both ends are closed)",
            ),
            (IpcError::EndClosed { end }, "end A of channel 3.1 is closed"),
            (IpcError::PeerClosed { end: end.peer() }, "the peer of end B of channel 3.1 is closed"),
            (
                IpcError::Full { end, capacity: 8 },
                "the queue from end A of channel 3.1 to its peer is full (capacity: 8 messages)",
            ),
            (
                IpcError::Full { end, capacity: 1 },
                "the queue from end A of channel 3.1 to its peer is full (capacity: 1 message)",
            ),
            (IpcError::Empty { end }, "no message is waiting for end A of channel 3.1"),
            (
                IpcError::MessageTooLarge { bytes: 5000, limit: 4096 },
                "message of 5000 bytes exceeds the channel's limit of 4096 bytes",
            ),
            (
                IpcError::TooManyHandles { handles: 1, limit: 0 },
                "message carries 1 handle, more than the channel's limit of 0 handles",
            ),
            (
                IpcError::UnknownCall { end, call: CallId::from_bits(7) },
                "call 7 awaits no reply from end A of channel 3.1 (never received there, already answered, \
                 or its caller gave up)",
            ),
            (
                IpcError::UnknownWaiter { waiter: WaiterId(9) },
                "waiter 9 is not parked on any channel (never parked, or already woken or cancelled)",
            ),
            (IpcError::WaiterBusy { waiter: WaiterId(9) }, "waiter 9 is already parked in another channel operation"),
            (IpcError::TableFull { capacity: 2 }, "channel table is full (capacity: 2 channels)"),
            (IpcError::OutOfMemory, "out of memory for a channel's queues or its waiter records"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn send_error_shows_the_reason_and_keeps_the_message() {
        let error = SendError {
            error: IpcError::MessageTooLarge { bytes: 3, limit: 2 },
            message: Message::new(vec![1, 2, 3], vec!['h']),
        };
        assert_eq!(error.to_string(), "message of 3 bytes exceeds the channel's limit of 2 bytes");
        assert_eq!(error.message.handles, ['h']);
        let source = core::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("message of 3 bytes exceeds the channel's limit of 2 bytes"));
    }
}
