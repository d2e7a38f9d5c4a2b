//! Why a handle-table operation was refused.

use core::fmt;

use crate::{Handle, Rights};

/// Why a handle-table operation was refused. A refused operation changes nothing.
///
/// When several things are wrong, the error is the first of: the handle is not valid, it lacks a
/// right the operation needs, more rights were asked for than it has, the receiving table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// The handle names no live entry of this table: it was never issued, or it has been closed,
    /// transferred away or revoked.
    InvalidHandle {
        /// The handle as it was passed in.
        handle: Handle,
    },
    /// The handle is valid but lacks a right the operation needs.
    MissingRights {
        /// The handle as it was passed in.
        handle: Handle,
        /// Every right the operation needs.
        required: Rights,
        /// The rights the handle has.
        has: Rights,
    },
    /// A copy or transfer asked for rights the handle does not have.
    RightsEscalation {
        /// The handle as it was passed in.
        handle: Handle,
        /// The rights the handle has.
        has: Rights,
        /// The rights that were asked for.
        requested: Rights,
    },
    /// The table already holds as many handles as it was created for.
    TableFull {
        /// The table's capacity, in handles.
        capacity: usize,
    },
    /// The kernel heap could not grow the table (it is below its capacity).
    OutOfMemory,
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CapError::InvalidHandle { handle } => {
                write!(f, "handle {handle} is not valid in this table (never issued or already closed)")
            }
            CapError::MissingRights { handle, required, has } => {
                let missing = required.difference(has);
                let plural = if missing.bits().count_ones() == 1 { "right" } else { "rights" };
                write!(f, "handle {handle} lacks the {missing} {plural} (has: {has})")
            }
            CapError::RightsEscalation { handle, has, requested } => write!(
                f,
                "cannot duplicate or transfer handle {handle} with more rights than the original \
                 (has: {has}; asked for: {requested})"
            ),
            CapError::TableFull { capacity } => write!(f, "handle table is full (capacity: {capacity} handles)"),
            CapError::OutOfMemory => f.write_str("out of memory while growing the handle table"),
        }
    }
}

impl core::error::Error for CapError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn messages_say_what_went_wrong() {
        let handle = Handle::from_bits(0x20003);
        assert_eq!(
            CapError::InvalidHandle { handle }.to_string(),
            "handle 0x20003 is not valid in this table (never issued or already closed)"
        );
        assert_eq!(
            CapError::MissingRights { handle, required: Rights::WRITE, has: Rights::READ }.to_string(),
            "handle 0x20003 lacks the write right (has: read)"
        );
        assert_eq!(
            CapError::MissingRights { handle, required: Rights::all(), has: Rights::READ }.to_string(),
            "handle 0x20003 lacks the write, grant rights (has: read)"
        );
        assert_eq!(
            CapError::RightsEscalation { handle, has: Rights::READ, requested: Rights::READ | Rights::WRITE }
                .to_string(),
            "cannot duplicate or transfer handle 0x20003 with more rights than the original \
             (has: read; asked for: read, write)"
        );
        assert_eq!(CapError::TableFull { capacity: 8 }.to_string(), "handle table is full (capacity: 8 handles)");
        assert_eq!(CapError::OutOfMemory.to_string(), "out of memory while growing the handle table");
    }
}
