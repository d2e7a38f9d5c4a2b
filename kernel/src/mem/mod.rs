//! Memory: physical ranges and frames (plain logic, host-tested), and on bare metal the kernel's
//! page tables (the policy here, the entry format in `arch::paging`), heap, stacks, DMA memory
//! and device register windows.

pub mod frames;
#[cfg(target_os = "none")]
pub mod image;
pub mod range;
pub mod vspace;

#[cfg(target_os = "none")]
pub mod dma;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod mmio;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod phys;
#[cfg(target_os = "none")]
pub mod stacks;

/// The kernel's virtual address layout.
///
/// Physical memory is identity-mapped in the lower half (`virt == phys`), which keeps the PVH
/// boot structures, the frame bitmap and page tables directly addressable. Everything the kernel
/// allocates virtually lives in the upper half, far from any RAM address.
pub mod layout {
    /// Base of the kernel heap's virtual region.
    pub const HEAP_BASE: u64 = 0xffff_9000_0000_0000;
    /// Largest size the heap may grow to.
    pub const HEAP_MAX: u64 = 64 << 30;
    /// Base of the region where kernel stacks (each above an unmapped guard page) are mapped.
    pub const STACKS_BASE: u64 = 0xffff_a000_0000_0000;
    /// Size of one stack slot in that region (guard page included).
    pub const STACK_SLOT: u64 = 1 << 20;
    /// Number of stack slots.
    pub const STACK_SLOTS: u64 = 4096;
    /// A region the boot tests map and unmap pages in.
    pub const SCRATCH_BASE: u64 = 0xffff_f000_0000_0000;
    /// Base of the region Wasmtime's reservations come from: linear memories (each 4 GiB plus
    /// its guards), compiled code and its other mappings. It lies in the lower half, above any
    /// RAM the identity map covers, so that thousands of 4 GiB memories fit; nothing else is
    /// mapped there, so a fault at an instruction inside it is a fault in wasm code.
    pub const WASM_BASE: u64 = 0x0000_4000_0000_0000;
    /// Size of that region (64 TiB).
    pub const WASM_SIZE: u64 = 0x0000_4000_0000_0000;
}

/// Access rights of a mapping. The kernel enforces W^X: no mapping is both writable and
/// executable, so [`Protection::check`] refuses `WRITE | EXEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protection(u8);

impl Protection {
    /// Readable (every mapping is).
    pub const READ: Protection = Protection(1);
    /// Writable.
    pub const WRITE: Protection = Protection(2);
    /// Executable.
    pub const EXEC: Protection = Protection(4);
    /// Device memory: uncached.
    pub const UNCACHED: Protection = Protection(8);

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Protection) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` less the rights in `other`.
    pub const fn without(self, other: Protection) -> Protection {
        Protection(self.0 & !other.0)
    }

    /// `self` if it respects W^X.
    pub const fn check(self) -> Result<Protection, WxViolation> {
        if self.contains(Protection::WRITE) && self.contains(Protection::EXEC) { Err(WxViolation) } else { Ok(self) }
    }
}

impl core::ops::BitOr for Protection {
    type Output = Protection;
    fn bitor(self, rhs: Protection) -> Protection {
        Protection(self.0 | rhs.0)
    }
}

/// A mapping was asked to be writable and executable at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WxViolation;

impl core::fmt::Display for WxViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "W^X: a page may be writable or executable, never both")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wx_is_refused() {
        assert_eq!((Protection::READ | Protection::WRITE | Protection::EXEC).check(), Err(WxViolation));
        assert!((Protection::READ | Protection::EXEC).check().is_ok());
        assert!((Protection::READ | Protection::WRITE | Protection::UNCACHED).check().is_ok());
        assert!((Protection::READ | Protection::WRITE).contains(Protection::WRITE));
        assert!(!Protection::READ.contains(Protection::WRITE));
        assert_eq!((Protection::READ | Protection::WRITE).without(Protection::WRITE), Protection::READ);
    }
}
