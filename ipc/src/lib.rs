//! IPC channels for the Mica microkernel, as pure kernel-object logic.
//!
//! A channel has two ends ([`ChannelEnd`], side [`Side::A`] or [`Side::B`]); components hold them
//! as capabilities (the kernel stores a `ChannelEnd` as the object of a `mica_caps::HandleTable`
//! entry). A [`Message`] is bytes plus handles; the handle type `H` is the kernel's (typically the
//! `(object, rights)` pair `HandleTable::take_for_transfer` gives back), so moving a capability
//! through a channel is moving a value. [`ChannelTable`] owns every channel.
//!
//! This crate never blocks, sleeps or touches a scheduler: it is deterministic and host-tested.
//! Blocking is a return value the kernel acts on:
//!
//! - An operation that must wait takes [`Mode::Blocking`] with a [`WaiterId`] the kernel chose,
//!   records the waiter and returns `Parked` ([`SendOk::Parked`], [`RecvOk::Parked`]; a
//!   [`call`](ChannelTable::call) always parks). The kernel parks the thread.
//! - A later operation that completes it returns a [`Wake`]: the waiter and its [`Completion`].
//!   The kernel unparks the thread with that completion as its result. **The wake carries the
//!   result**: a parked receiver's wake holds its message, a parked caller's holds the reply, a
//!   parked sender's says its message went in. A woken thread never retries, so wakes are never
//!   spurious and nothing can overtake a thread between its wake and its retry.
//! - A timeout or a killed thread is the kernel's business: it calls
//!   [`cancel_wait`](ChannelTable::cancel_wait), which hands back any message the waiter held.
//!
//! Bounds: each direction queues at most [`Limits::capacity`] messages, each at most
//! [`Limits::max_bytes`] bytes and [`Limits::max_handles`] handles. A sender facing a full queue
//! gets [`IpcError::Full`] or parks; either way the queue does not grow, so a component flooding a
//! channel only stalls itself. A parked sender's message stays with it (one message per parked
//! thread) and enters the queue in order when room appears. Memory for the queues is reserved when
//! a channel is made; recording a parked waiter grows its list fallibly
//! ([`IpcError::OutOfMemory`], never an abort).
//!
//! Nothing is lost: a refused send, call or reply hands its message back ([`SendError`]); a closed
//! end's undelivered messages give their handles back ([`Closed::handles`]); a parked send that
//! can no longer complete gets its message back in its wake or from `cancel_wait`.
//!
//! ```
//! use mica_ipc::{ChannelTable, Completion, IpcError, Limits, Message, Mode, RecvOk, SendOk, WaiterId};
//!
//! let mut table: ChannelTable<u32> = ChannelTable::new(16);
//! let (client, server) = table.create(Limits { capacity: 4, max_bytes: 64, max_handles: 2 })?;
//!
//! // A server thread parks waiting for a request.
//! assert!(matches!(table.recv(server, Mode::Blocking(WaiterId(1))), Ok(RecvOk::Parked)));
//!
//! // A client thread calls; the request goes straight to the parked server thread.
//! let call = table.call(client, Message::new(b"ping".to_vec(), vec![7]), WaiterId(2)).map_err(|e| e.error)?;
//! let wake = call.wake.expect("the server was parked");
//! assert_eq!(wake.waiter, WaiterId(1));
//! let Completion::Received(request) = wake.completion else { panic!("not a delivery") };
//! assert_eq!((request.message.bytes.as_slice(), request.call), (&b"ping"[..], Some(call.call)));
//!
//! // The reply wakes exactly that caller.
//! let wake = table.reply(server, call.call, Message::new(b"pong".to_vec(), vec![])).map_err(|e| e.error)?;
//! assert_eq!(wake.waiter, WaiterId(2));
//! assert_eq!(wake.completion, Completion::Replied(Message::new(b"pong".to_vec(), vec![])));
//!
//! // A message over the limit is refused and handed back.
//! let refused = table.send(client, Message::new(vec![0; 65], vec![8]), Mode::NonBlocking).unwrap_err();
//! assert_eq!(refused.to_string(), "message of 65 bytes exceeds the channel's limit of 64 bytes");
//! assert_eq!(refused.message.handles, [8]);
//!
//! // The client sends one more message and ends: the server still drains it, then sees the close.
//! assert!(matches!(table.send(client, Message::new(b"bye".to_vec(), vec![9]), Mode::NonBlocking), Ok(SendOk::Done { .. })));
//! let closed = table.close(client)?;
//! assert!(closed.handles.is_empty() && closed.wakes.is_empty());
//! assert!(matches!(table.recv(server, Mode::NonBlocking), Ok(RecvOk::Received { .. })));
//! assert_eq!(table.recv(server, Mode::NonBlocking), Err(IpcError::PeerClosed { end: server }));
//! let _ = table.close(server)?;
//! assert!(table.is_empty());
//! # Ok::<(), IpcError>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod channel;
mod error;
mod outcome;
mod registry;
mod table;
mod types;

#[cfg(any(test, feature = "check"))]
pub mod check;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::{IpcError, SendError};
pub use outcome::{CallOk, Closed, Completion, RecvOk, SendOk, Wake};
pub use table::ChannelTable;
pub use types::{CallId, ChannelEnd, ChannelId, Delivery, Limits, Message, Mode, Side, WaiterId};
