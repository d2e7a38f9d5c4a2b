//! Physical address ranges and a fixed-capacity set of them.
//!
//! The memory code runs before there is a heap, so the set lives in a fixed array. It keeps its
//! ranges sorted, non-overlapping and non-adjacent (touching ranges are merged).

use core::fmt;

/// The size of a small page and of a physical frame.
pub const PAGE_SIZE: u64 = 4096;
/// The size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// Rounds `value` up to a multiple of `align` (a power of two), saturating at the top.
pub const fn align_up(value: u64, align: u64) -> u64 {
    match value.checked_add(align - 1) {
        Some(v) => v & !(align - 1),
        None => align_down(u64::MAX, align),
    }
}

/// A half-open range of physical addresses, `start..end`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PhysRange {
    /// The first address in the range.
    pub start: u64,
    /// The first address after the range.
    pub end: u64,
}

impl PhysRange {
    /// The range `start..end`; an inverted range is empty.
    pub const fn new(start: u64, end: u64) -> Self {
        if end < start { PhysRange { start, end: start } } else { PhysRange { start, end } }
    }

    /// The range of `len` bytes at `start`, saturating at the top of the address space.
    pub const fn sized(start: u64, len: u64) -> Self {
        PhysRange::new(start, start.saturating_add(len))
    }

    /// Its length in bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds no address.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the two ranges share an address.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `addr` lies in the range.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The largest sub-range whose ends are multiples of `align`.
    pub const fn shrink_to(&self, align: u64) -> PhysRange {
        PhysRange::new(align_up(self.start, align), align_down(self.end, align))
    }

    /// The smallest super-range whose ends are multiples of `align`.
    pub const fn grow_to(&self, align: u64) -> PhysRange {
        PhysRange::new(align_down(self.start, align), align_up(self.end, align))
    }
}

impl fmt::Debug for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

/// The set is full: the memory map is more fragmented than the kernel can track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSetFull;

impl fmt::Display for RangeSetFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {RANGE_SET_CAPACITY} separate memory ranges")
    }
}

/// How many disjoint ranges a [`RangeSet`] holds.
pub const RANGE_SET_CAPACITY: usize = 64;

/// A sorted set of disjoint, non-adjacent physical ranges.
#[derive(Clone)]
pub struct RangeSet {
    ranges: [PhysRange; RANGE_SET_CAPACITY],
    len: usize,
}

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl RangeSet {
    /// An empty set.
    pub const fn new() -> Self {
        RangeSet { ranges: [PhysRange { start: 0, end: 0 }; RANGE_SET_CAPACITY], len: 0 }
    }

    /// The ranges, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.ranges[..self.len].iter().copied()
    }

    /// How many disjoint ranges there are.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no address.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of bytes covered.
    pub fn total(&self) -> u64 {
        self.iter().map(|r| r.len()).sum()
    }

    /// Whether any range overlaps `range`.
    pub fn overlaps(&self, range: &PhysRange) -> bool {
        self.iter().any(|r| r.overlaps(range))
    }

    /// Adds `range`, merging it with the ranges it overlaps or touches.
    pub fn insert(&mut self, range: PhysRange) -> Result<(), RangeSetFull> {
        if range.is_empty() {
            return Ok(());
        }
        let mut merged = range;
        let mut out = [PhysRange::default(); RANGE_SET_CAPACITY];
        let mut n = 0;
        let mut placed = false;
        for r in self.iter() {
            if r.end < merged.start {
                out[n] = r;
                n += 1;
            } else if merged.end < r.start {
                if !placed {
                    if n == RANGE_SET_CAPACITY {
                        return Err(RangeSetFull);
                    }
                    out[n] = merged;
                    n += 1;
                    placed = true;
                }
                if n == RANGE_SET_CAPACITY {
                    return Err(RangeSetFull);
                }
                out[n] = r;
                n += 1;
            } else {
                merged = PhysRange::new(merged.start.min(r.start), merged.end.max(r.end));
            }
        }
        if !placed {
            if n == RANGE_SET_CAPACITY {
                return Err(RangeSetFull);
            }
            out[n] = merged;
            n += 1;
        }
        self.ranges = out;
        self.len = n;
        Ok(())
    }

    /// Removes every address of `range`, splitting a range that contains it.
    pub fn remove(&mut self, range: PhysRange) -> Result<(), RangeSetFull> {
        if range.is_empty() {
            return Ok(());
        }
        let mut out = [PhysRange::default(); RANGE_SET_CAPACITY];
        let mut n = 0;
        for r in self.iter() {
            for piece in
                [PhysRange::new(r.start, range.start.min(r.end)), PhysRange::new(range.end.max(r.start), r.end)]
            {
                if !piece.is_empty() {
                    if n == RANGE_SET_CAPACITY {
                        return Err(RangeSetFull);
                    }
                    out[n] = piece;
                    n += 1;
                }
            }
        }
        self.ranges = out;
        self.len = n;
        Ok(())
    }

    /// Keeps only the whole `align`-sized blocks of each range.
    pub fn shrink_each_to(&mut self, align: u64) {
        let mut n = 0;
        for i in 0..self.len {
            let r = self.ranges[i].shrink_to(align);
            if !r.is_empty() {
                self.ranges[n] = r;
                n += 1;
            }
        }
        self.len = n;
    }

    /// The first `align`-aligned block of `len` bytes that lies wholly inside one range.
    pub fn find_space(&self, len: u64, align: u64) -> Option<PhysRange> {
        self.iter().find_map(|r| {
            let start = align_up(r.start, align);
            let end = start.checked_add(len)?;
            (end <= r.end).then_some(PhysRange::new(start, end))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in ranges {
            s.insert(PhysRange::new(a, b)).expect("capacity");
        }
        s
    }

    fn pairs(s: &RangeSet) -> Vec<(u64, u64)> {
        s.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn insert_sorts_and_merges() {
        let s = set(&[(50, 60), (10, 20), (20, 30), (55, 70), (100, 110)]);
        assert_eq!(pairs(&s), vec![(10, 30), (50, 70), (100, 110)]);
        assert_eq!(s.total(), 20 + 20 + 10);
    }

    #[test]
    fn remove_splits() {
        let mut s = set(&[(0, 100)]);
        s.remove(PhysRange::new(10, 20)).expect("capacity");
        s.remove(PhysRange::new(90, 200)).expect("capacity");
        s.remove(PhysRange::new(0, 1)).expect("capacity");
        assert_eq!(pairs(&s), vec![(1, 10), (20, 90)]);
    }

    #[test]
    fn shrink_and_find_space() {
        let mut s = set(&[(0x1001, 0x5000), (0x10000, 0x30000)]);
        s.shrink_each_to(PAGE_SIZE);
        assert_eq!(pairs(&s), vec![(0x2000, 0x5000), (0x10000, 0x30000)]);
        assert_eq!(s.find_space(0x4000, PAGE_SIZE), Some(PhysRange::new(0x10000, 0x14000)));
        assert_eq!(s.find_space(0x1000, 0x10000), Some(PhysRange::new(0x10000, 0x11000)));
        assert_eq!(s.find_space(0x100000, PAGE_SIZE), None);
    }

    #[test]
    fn full_set_reports_error() {
        let mut s = RangeSet::new();
        for i in 0..RANGE_SET_CAPACITY as u64 {
            s.insert(PhysRange::new(i * 10, i * 10 + 5)).expect("fits");
        }
        assert_eq!(s.insert(PhysRange::new(10_000, 10_001)), Err(RangeSetFull));
        // Merging into an existing range still works when full.
        assert_eq!(s.insert(PhysRange::new(0, 6)), Ok(()));
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_up(1, 4096), 4096);
        assert_eq!(align_up(4096, 4096), 4096);
        assert_eq!(align_down(4097, 4096), 4096);
        assert_eq!(align_up(u64::MAX, 4096), !4095);
        assert!(PhysRange::new(5, 3).is_empty());
    }
}
