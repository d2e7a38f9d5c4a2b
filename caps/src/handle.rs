//! The value a component holds to name a capability.

use core::fmt;

/// A component's name for one entry of its [`HandleTable`](crate::HandleTable).
///
/// It is a plain `u32` as it crosses the WIT boundary: the low bits are a slot index, the high bits
/// the slot's generation (how the two are split depends on the table's capacity). Any value can be
/// turned into a `Handle`; only the table that issued it can say whether it is valid, and a
/// made-up or stale value is an error there, never access. The value 0 is never issued.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(u32);

impl Handle {
    /// The handle with this raw value, as a component passed it in. Never fails: validity is a
    /// question for the table.
    pub const fn from_bits(bits: u32) -> Handle {
        Handle(bits)
    }

    /// The raw value to hand to a component.
    pub const fn to_bits(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({:#x})", self.0)
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn bits_round_trip_and_format_as_hex() {
        for bits in [0, 1, 0x1_0002, u32::MAX] {
            assert_eq!(Handle::from_bits(bits).to_bits(), bits);
        }
        assert_eq!(format!("{}", Handle::from_bits(0x1_0002)), "0x10002");
        assert_eq!(format!("{:?}", Handle::from_bits(0x1_0002)), "Handle(0x10002)");
    }
}
