//! A region of virtual address space handed out in page-aligned reservations: where Wasmtime's
//! mappings (linear memories with their guard regions, compiled code) are placed.
//!
//! A reservation is only address space; what is mapped inside it is the page tables' business.
//! Reservations are made first-fit from the lowest free address, so a reservation released and
//! made again reuses the same addresses (and the page tables already built for them).

use alloc::collections::BTreeMap;
use core::fmt;

use super::range::{PAGE_SIZE, align_up};

/// Why a reservation could not be made or released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError {
    /// No free stretch of the region is long enough.
    Exhausted {
        /// The bytes asked for.
        asked: u64,
        /// The largest free stretch.
        largest: u64,
    },
    /// A zero-length reservation was asked for.
    Empty,
    /// `start..start + len` is not one whole reservation.
    NotReserved {
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
    },
}

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::Exhausted { asked, largest } => write!(
                f,
                "no {asked:#x} bytes of virtual address space left for wasm mappings (largest free stretch {largest:#x})"
            ),
            SpaceError::Empty => write!(f, "a reservation of zero bytes"),
            SpaceError::NotReserved { start, len } => {
                write!(f, "{start:#x}+{len:#x} is not a reservation made in the wasm region")
            }
        }
    }
}

/// The reservations in one region, and the free stretches between them.
#[derive(Debug)]
pub struct VirtualSpace {
    start: u64,
    end: u64,
    /// Reservations: start -> length.
    used: BTreeMap<u64, u64>,
    /// Free stretches: start -> length; never two adjacent.
    free: BTreeMap<u64, u64>,
}

impl VirtualSpace {
    /// The region `start..start + size` (both page-aligned), all of it free.
    pub fn new(start: u64, size: u64) -> VirtualSpace {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(start, size);
        }
        VirtualSpace { start, end: start + size, used: BTreeMap::new(), free }
    }

    /// Reserves `len` bytes (rounded up to whole pages) at the lowest free address that fits.
    pub fn reserve(&mut self, len: u64) -> Result<u64, SpaceError> {
        if len == 0 {
            return Err(SpaceError::Empty);
        }
        let len = align_up(len, PAGE_SIZE);
        let Some((&at, &free_len)) = self.free.iter().find(|&(_, &l)| l >= len) else {
            return Err(SpaceError::Exhausted { asked: len, largest: self.free.values().copied().max().unwrap_or(0) });
        };
        self.free.remove(&at);
        if free_len > len {
            self.free.insert(at + len, free_len - len);
        }
        self.used.insert(at, len);
        Ok(at)
    }

    /// Releases the reservation that starts at `start` and is `len` bytes long (rounded up to
    /// whole pages, as when it was made).
    pub fn release(&mut self, start: u64, len: u64) -> Result<(), SpaceError> {
        let len = align_up(len, PAGE_SIZE);
        if self.used.get(&start) != Some(&len) {
            return Err(SpaceError::NotReserved { start, len });
        }
        self.used.remove(&start);
        let (mut at, mut size) = (start, len);
        if let Some((&before, &before_len)) = self.free.range(..start).next_back()
            && before + before_len == start
        {
            self.free.remove(&before);
            at = before;
            size += before_len;
        }
        if let Some(after_len) = self.free.remove(&(start + len)) {
            size += after_len;
        }
        self.free.insert(at, size);
        Ok(())
    }

    /// The reservation `start..end` lies wholly inside, if any: its start and length.
    pub fn reservation_of(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        let (&at, &len) = self.used.range(..=start).next_back()?;
        (end <= at + len && start < end).then_some((at, len))
    }

    /// Whether `addr` lies in the region (reserved or not).
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> u64 {
        self.used.values().sum()
    }

    /// Reservations held now.
    pub fn reservations(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BASE: u64 = 0x4000_0000_0000;

    #[test]
    fn first_fit_and_reuse() {
        let mut s = VirtualSpace::new(BASE, 1 << 40);
        let a = s.reserve(5000).expect("a");
        assert_eq!(a, BASE);
        let b = s.reserve((1 << 32) + (64 << 20)).expect("b");
        assert_eq!(b, BASE + 8192, "rounded up to two pages");
        let c = s.reserve(4096).expect("c");
        assert_eq!(s.reservations(), 3);
        s.release(b, (1 << 32) + (64 << 20)).expect("release b");
        // The same addresses come back for the same size.
        assert_eq!(s.reserve((1 << 32) + (64 << 20)).expect("b again"), b);
        assert_eq!(s.reservation_of(b + 10, b + 20), Some((b, (1 << 32) + (64 << 20))));
        assert_eq!(s.reservation_of(c, c + 8192), None, "runs past the end of c");
        assert!(s.contains(BASE) && !s.contains(BASE + (1 << 40)));
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        let mut s = VirtualSpace::new(BASE, 1 << 20);
        assert_eq!(s.reserve(0), Err(SpaceError::Empty));
        let a = s.reserve(1 << 19).expect("half");
        let e = s.reserve(1 << 20).expect_err("too big");
        assert_eq!(e, SpaceError::Exhausted { asked: 1 << 20, largest: 1 << 19 });
        assert!(e.to_string().contains("no 0x100000 bytes of virtual address space left"));
        assert_eq!(s.release(a + 4096, 4096), Err(SpaceError::NotReserved { start: a + 4096, len: 4096 }));
        assert_eq!(s.release(a, 4096), Err(SpaceError::NotReserved { start: a, len: 4096 }), "only whole reservations");
        s.release(a, 1 << 19).expect("whole");
        assert_eq!(s.release(a, 1 << 19), Err(SpaceError::NotReserved { start: a, len: 1 << 19 }), "twice");
    }

    proptest! {
        /// Any sequence of reservations and releases keeps reservations disjoint and inside the
        /// region, and releasing everything leaves one free stretch: the whole region.
        #[test]
        fn reservations_stay_disjoint(ops in proptest::collection::vec((1u64..64, any::<bool>()), 1..200)) {
            let size = 1u64 << 30;
            let mut s = VirtualSpace::new(BASE, size);
            let mut held: Vec<(u64, u64)> = Vec::new();
            for (pages, release) in ops {
                if release && !held.is_empty() {
                    let (a, l) = held.remove(pages as usize % held.len());
                    s.release(a, l).expect("held reservations release");
                } else if let Ok(a) = s.reserve(pages * PAGE_SIZE) {
                    held.push((a, pages * PAGE_SIZE));
                }
                let mut sorted = held.clone();
                sorted.sort();
                for w in sorted.windows(2) {
                    prop_assert!(w[0].0 + w[0].1 <= w[1].0);
                }
                for &(a, l) in &held {
                    prop_assert!(a >= BASE && a + l <= BASE + size);
                }
                prop_assert_eq!(s.reserved(), held.iter().map(|h| h.1).sum::<u64>());
            }
            for (a, l) in held {
                s.release(a, l).expect("release");
            }
            prop_assert_eq!(s.free.len(), 1);
            prop_assert_eq!(s.free.get(&BASE), Some(&size));
        }
    }
}
