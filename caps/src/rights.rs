//! What the holder of a handle may do with the object it names.

use core::fmt;

bitflags::bitflags! {
    /// The rights a handle carries. A handle's rights are fixed when it is issued; copies and
    /// transfers may carry fewer rights, never more.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Rights: u32 {
        /// Read from the object (receive on a channel end, read an MMIO window or buffer).
        const READ = 1 << 0;
        /// Write to the object (send on a channel end, write an MMIO window or buffer).
        const WRITE = 1 << 1;
        /// Move the handle out of its table into another component's (by IPC or directly).
        const GRANT = 1 << 2;
    }
}

impl fmt::Display for Rights {
    /// Lower-case names joined by `", "` (`read, write`), `none` for no rights, and any bits this
    /// version does not know as one hex number at the end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { ", " };
            first = false;
            f.write_str(s)
        };
        for (name, _) in self.iter_names() {
            sep(f)?;
            match name {
                "READ" => f.write_str("read")?,
                "WRITE" => f.write_str("write")?,
                "GRANT" => f.write_str("grant")?,
                other => f.write_str(other)?,
            }
        }
        let unknown = self.bits() & !Rights::all().bits();
        if unknown != 0 {
            sep(f)?;
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn display_names_rights() {
        assert_eq!(Rights::empty().to_string(), "none");
        assert_eq!(Rights::READ.to_string(), "read");
        assert_eq!((Rights::READ | Rights::WRITE).to_string(), "read, write");
        assert_eq!(Rights::all().to_string(), "read, write, grant");
        assert_eq!(Rights::from_bits_retain(0x30 | 1).to_string(), "read, 0x30");
        assert_eq!(Rights::from_bits_retain(0x8).to_string(), "0x8");
    }
}
