//! Capability handle tables for the Mica microkernel.
//!
//! A [`Handle`] in a [`HandleTable`] is the only way a component instance can name a kernel
//! object, and each handle carries [`Rights`] that say what the holder may do with the object.
//! Each component instance has one such table, its capability space, holding every kernel object
//! it may name: IPC channel ends and hardware objects (register windows, interrupt lines, DMA
//! buffers) alike.
//!
//! The guarantees, all checked by the table and never by trusting the component:
//!
//! - **Unforgeable.** A handle is a slot index plus a generation packed into a `u32`. Any `u32` a
//!   component makes up is accepted by [`Handle::from_bits`] but resolves only if it names a live
//!   entry; a closed handle's slot gets a new generation before it is reused, so a stale handle never
//!   resolves to the object that replaced it. A handle value is never issued twice by one table.
//! - **Rights only shrink.** [`HandleTable::duplicate`] and [`HandleTable::transfer_to`] accept equal
//!   or fewer rights, never more; moving a handle out of a table needs [`Rights::GRANT`].
//! - **Bounded.** The capacity is fixed when the table is made; running out is
//!   [`CapError::TableFull`], never a panic. Memory for slots is reserved fallibly.
//! - **Revocable.** [`HandleTable::drain`] empties the table when its owner ends and hands every
//!   object back so the kernel can close it.
//!
//! The table is generic over the object type, so this crate knows nothing of the kernel or of the
//! objects it holds.
//!
//! ```
//! use mica_caps::{CapError, Handle, HandleTable, Rights};
//!
//! let mut sender: HandleTable<&str> = HandleTable::new(16);
//! let mut receiver = HandleTable::new(16);
//! let chan = sender.insert("channel end", Rights::all())?;
//!
//! // A read-only copy cannot be widened again.
//! let ro = sender.duplicate(chan, Rights::READ)?;
//! assert!(matches!(sender.get(ro, Rights::WRITE), Err(CapError::MissingRights { .. })));
//! assert!(matches!(sender.duplicate(ro, Rights::all()), Err(CapError::RightsEscalation { .. })));
//!
//! // Moving needs GRANT; the receiver gets only what the sender passes on.
//! let theirs = sender.transfer_to(chan, &mut receiver, Rights::READ | Rights::WRITE)?;
//! assert_eq!(receiver.get(theirs, Rights::WRITE), Ok(&"channel end"));
//! assert!(matches!(sender.get(chan, Rights::READ), Err(CapError::InvalidHandle { .. })));
//!
//! // What crosses WIT is a plain u32; a made-up one is refused.
//! let forged = Handle::from_bits(theirs.to_bits() ^ 0x100);
//! assert!(receiver.get(forged, Rights::empty()).is_err());
//!
//! // When the receiver ends, every handle is revoked and its object handed back.
//! let closed: Vec<_> = receiver.drain().map(|(_, object, _)| object).collect();
//! assert_eq!(closed, ["channel end"]);
//! # Ok::<(), CapError>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod error;
mod handle;
mod rights;
mod table;

#[cfg(any(test, feature = "check"))]
pub mod check;
#[cfg(test)]
mod proptests;

pub use error::CapError;
pub use handle::Handle;
pub use rights::Rights;
pub use table::{Drain, HandleTable, MAX_CAPACITY};
