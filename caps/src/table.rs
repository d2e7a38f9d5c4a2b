//! A component's handle table: slots, generations, and the operations on handles.
//!
//! Handle layout: for a table of capacity `c`, the low `index_bits` bits of a handle are the slot
//! index, where `index_bits` is the fewest bits that hold `c - 1`, and the rest are the slot's
//! generation. Small tables therefore get long generations. Generations start at 1 (so 0 is never a
//! handle) and go up by one each time a slot is emptied; a slot whose generation cannot go up any
//! more is retired for good instead of wrapping, so no handle value is ever issued twice.
//!
//! The slot vector grows only when no empty slot is left. Empty slots are reused oldest-first (a
//! FIFO queue), which spreads generation use over every slot rather than wearing out one.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::{CapError, Handle, Rights};

/// The largest capacity a table can have.
pub const MAX_CAPACITY: usize = u16::MAX as usize;

/// One slot: its current generation and, when live, the object and the handle's rights.
#[derive(Debug)]
struct Slot<T> {
    /// For a live slot, the generation of the handle naming it; for an empty slot, the generation
    /// the next handle in this slot will have (or, if retired, the last one it had).
    generation: u32,
    entry: Option<(T, Rights)>,
}

/// The handles one component holds: each maps to an object of type `T` and the rights the holder
/// has on it.
///
/// The capacity is fixed at creation; memory for slots is taken from the heap as they are first
/// used, fallibly. Closing, transferring or duplicating never allocates.
#[derive(Debug)]
pub struct HandleTable<T> {
    slots: Vec<Slot<T>>,
    /// Empty, reusable slots, oldest first. Its allocation always covers `slots.len()` entries, so
    /// pushing onto it never allocates.
    free: VecDeque<u16>,
    capacity: u16,
    /// How many low bits of a handle are the slot index.
    index_bits: u32,
    /// The highest generation a slot may reach.
    max_generation: u32,
    /// Live entries.
    len: usize,
    /// Slots whose generations are used up; they stay empty for the table's life.
    retired: usize,
}

impl<T> HandleTable<T> {
    /// An empty table that can hold up to `capacity` handles at once. Allocates nothing yet.
    pub fn new(capacity: u16) -> HandleTable<T> {
        let index_bits = u32::BITS - u32::from(capacity.saturating_sub(1)).leading_zeros();
        HandleTable {
            slots: Vec::new(),
            free: VecDeque::new(),
            capacity,
            index_bits,
            max_generation: u32::MAX >> index_bits,
            len: 0,
            retired: 0,
        }
    }

    /// A table whose generations stop at `max_generation`, so tests can reach slot retirement.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn with_max_generation(capacity: u16, max_generation: u32) -> HandleTable<T> {
        let mut table = HandleTable::new(capacity);
        table.max_generation = table.max_generation.min(max_generation.max(1));
        table
    }

    /// How many slots have used up their generations.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn retired(&self) -> usize {
        self.retired
    }

    /// How many handles the table can hold at once.
    pub fn capacity(&self) -> usize {
        usize::from(self.capacity)
    }

    /// How many handles are live.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no handle is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `object` with `rights` and returns the new handle naming it.
    pub fn insert(&mut self, object: T, rights: Rights) -> Result<Handle, CapError> {
        let index = self.vacant()?;
        Ok(self.fill(index, object, rights))
    }

    /// The object `handle` names, if the handle is valid and has every right in `required`.
    pub fn get(&self, handle: Handle, required: Rights) -> Result<&T, CapError> {
        let (_, object, has) = self.lookup(handle)?;
        check_rights(handle, has, required)?;
        Ok(object)
    }

    /// The rights `handle` carries.
    pub fn rights(&self, handle: Handle) -> Result<Rights, CapError> {
        Ok(self.lookup(handle)?.2)
    }

    /// A second handle to the same object (cloned) with `rights`, which must be a subset of the
    /// original's; asking for a right the original lacks is [`CapError::RightsEscalation`]. No
    /// right is needed on the original: the copy stays in this table.
    pub fn duplicate(&mut self, handle: Handle, rights: Rights) -> Result<Handle, CapError>
    where
        T: Clone,
    {
        let (_, _, has) = self.lookup(handle)?;
        check_subset(handle, has, rights)?;
        let vacant = self.vacant()?;
        // `vacant` touched only empty slots, so the original is still there.
        let object = self.lookup(handle)?.1.clone();
        Ok(self.fill(vacant, object, rights))
    }

    /// Closes `handle` and gives back its object and rights. Needs no right: a holder may always
    /// let go.
    pub fn remove(&mut self, handle: Handle) -> Result<(T, Rights), CapError> {
        let (index, _, _) = self.lookup(handle)?;
        self.take(index).ok_or(CapError::InvalidHandle { handle })
    }

    /// Takes `handle` out of this table so the kernel can move it elsewhere (for instance into a
    /// message in flight). Needs [`Rights::GRANT`]. The kernel may then insert the object into the
    /// receiving table with the returned rights or fewer.
    pub fn take_for_transfer(&mut self, handle: Handle) -> Result<(T, Rights), CapError> {
        let (index, _, has) = self.lookup(handle)?;
        check_rights(handle, has, Rights::GRANT)?;
        self.take(index).ok_or(CapError::InvalidHandle { handle })
    }

    /// Moves `handle` from this table into `dest` with `rights`, which must be a subset of the
    /// handle's own (leave out [`Rights::GRANT`] to stop the receiver passing it on). Needs
    /// [`Rights::GRANT`]. All or nothing: if `dest` is full, the handle stays where it was.
    pub fn transfer_to(
        &mut self,
        handle: Handle,
        dest: &mut HandleTable<T>,
        rights: Rights,
    ) -> Result<Handle, CapError> {
        let (index, _, has) = self.lookup(handle)?;
        check_rights(handle, has, Rights::GRANT)?;
        check_subset(handle, has, rights)?;
        let vacant = dest.vacant()?;
        let (object, _) = self.take(index).ok_or(CapError::InvalidHandle { handle })?;
        Ok(dest.fill(vacant, object, rights))
    }

    /// Revokes every handle and yields each one's old value, object and rights, so the kernel can
    /// close the objects when the owning component ends. Every old handle is stale afterwards;
    /// the table stays usable. Entries the iterator has not reached when it is dropped are removed
    /// and dropped then.
    pub fn drain(&mut self) -> Drain<'_, T> {
        Drain { table: self, next: 0 }
    }

    /// The slot index, object and rights of the live entry `handle` names.
    fn lookup(&self, handle: Handle) -> Result<(usize, &T, Rights), CapError> {
        let bits = handle.to_bits();
        let index = (bits & ((1 << self.index_bits) - 1)) as usize;
        let generation = bits >> self.index_bits;
        match self.slots.get(index) {
            Some(Slot { generation: g, entry: Some((object, rights)) }) if *g == generation => {
                Ok((index, object, *rights))
            }
            _ => Err(CapError::InvalidHandle { handle }),
        }
    }

    /// The handle naming slot `index` at its current generation.
    fn handle_for(&self, index: usize) -> Handle {
        let generation = self.slots.get(index).map_or(0, |slot| slot.generation);
        Handle::from_bits((generation << self.index_bits) | index as u32)
    }

    /// An empty slot ready for [`fill`](Self::fill): the oldest free one, or a new one if the
    /// table is below its capacity. Changes nothing a caller can observe.
    fn vacant(&mut self) -> Result<usize, CapError> {
        if let Some(&index) = self.free.front() {
            return Ok(usize::from(index));
        }
        let index = self.slots.len();
        if index >= self.capacity() {
            return Err(CapError::TableFull { capacity: self.capacity() });
        }
        // Reserve room in both vectors before changing either, so a failure leaves no trace and
        // `free` can later take every slot without allocating (here `free` is empty).
        self.slots.try_reserve(1).map_err(|_| CapError::OutOfMemory)?;
        self.free.try_reserve(index + 1).map_err(|_| CapError::OutOfMemory)?;
        self.slots.push(Slot { generation: 1, entry: None });
        // `index < capacity <= u16::MAX`, so it fits.
        self.free.push_back(index as u16);
        Ok(index)
    }

    /// Puts an entry into the slot [`vacant`](Self::vacant) just returned.
    fn fill(&mut self, index: usize, object: T, rights: Rights) -> Handle {
        let popped = self.free.pop_front();
        debug_assert_eq!(popped.map(usize::from), Some(index));
        if let Some(slot) = self.slots.get_mut(index) {
            debug_assert!(slot.entry.is_none());
            slot.entry = Some((object, rights));
            self.len += 1;
        }
        self.handle_for(index)
    }

    /// Empties slot `index` if it is live, moving it to a new generation and to the back of the
    /// free queue, or retiring it when its generations are used up.
    fn take(&mut self, index: usize) -> Option<(T, Rights)> {
        let slot = self.slots.get_mut(index)?;
        let entry = slot.entry.take()?;
        self.len -= 1;
        if slot.generation < self.max_generation {
            slot.generation += 1;
            // `index` came from a slot, so it fits in u16; `free` has room (see `vacant`).
            self.free.push_back(index as u16);
        } else {
            self.retired += 1;
        }
        Some(entry)
    }
}

/// Checks that a handle with rights `has` may do something that needs `required`.
fn check_rights(handle: Handle, has: Rights, required: Rights) -> Result<(), CapError> {
    if has.contains(required) { Ok(()) } else { Err(CapError::MissingRights { handle, required, has }) }
}

/// Checks that `requested` asks for no right beyond `has`.
fn check_subset(handle: Handle, has: Rights, requested: Rights) -> Result<(), CapError> {
    if has.contains(requested) { Ok(()) } else { Err(CapError::RightsEscalation { handle, has, requested }) }
}

/// The iterator [`HandleTable::drain`] returns: every live entry as `(old handle, object, rights)`,
/// in slot order. Each entry leaves the table as it is yielded; dropping the iterator removes the
/// rest.
#[derive(Debug)]
pub struct Drain<'a, T> {
    table: &'a mut HandleTable<T>,
    next: usize,
}

impl<T> Iterator for Drain<'_, T> {
    type Item = (Handle, T, Rights);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.table.slots.len() {
            let index = self.next;
            self.next += 1;
            let handle = self.table.handle_for(index);
            if let Some((object, rights)) = self.table.take(index) {
                return Some((handle, object, rights));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.table.len, Some(self.table.len))
    }
}

impl<T> ExactSizeIterator for Drain<'_, T> {}

impl<T> Drop for Drain<'_, T> {
    fn drop(&mut self) {
        self.for_each(drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const RW: Rights = Rights::READ.union(Rights::WRITE);

    #[test]
    fn insert_get_and_rights() {
        let mut t = HandleTable::new(4);
        let h = t.insert("chan", RW).unwrap();
        assert_ne!(h.to_bits(), 0);
        assert_eq!(t.get(h, Rights::READ), Ok(&"chan"));
        assert_eq!(t.get(h, Rights::empty()), Ok(&"chan"));
        assert_eq!(t.rights(h), Ok(RW));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.get(h, Rights::GRANT | Rights::READ),
            Err(CapError::MissingRights { handle: h, required: Rights::GRANT | Rights::READ, has: RW })
        );
    }

    #[test]
    fn made_up_handles_are_errors() {
        let mut t = HandleTable::new(4);
        let h = t.insert(1, RW).unwrap();
        for bits in [0, h.to_bits() + 1, h.to_bits() ^ 0x100, 3, u32::MAX] {
            let bogus = Handle::from_bits(bits);
            assert_eq!(t.get(bogus, Rights::empty()), Err(CapError::InvalidHandle { handle: bogus }));
            assert_eq!(t.rights(bogus), Err(CapError::InvalidHandle { handle: bogus }));
        }
        let empty: HandleTable<u8> = HandleTable::new(0);
        assert_eq!(empty.rights(Handle::from_bits(1)), Err(CapError::InvalidHandle { handle: Handle::from_bits(1) }));
    }

    #[test]
    fn closed_handles_stay_stale_after_slot_reuse() {
        let mut t = HandleTable::new(1);
        let old = t.insert(1, RW).unwrap();
        assert_eq!(t.remove(old), Ok((1, RW)));
        assert_eq!(t.remove(old), Err(CapError::InvalidHandle { handle: old }));
        let new = t.insert(2, RW).unwrap();
        assert_ne!(old, new);
        assert_eq!(t.get(old, Rights::empty()), Err(CapError::InvalidHandle { handle: old }));
        assert_eq!(t.get(new, Rights::empty()), Ok(&2));
    }

    #[test]
    fn full_table_is_an_error_and_frees_up() {
        let mut t = HandleTable::new(2);
        let a = t.insert('a', RW).unwrap();
        t.insert('b', RW).unwrap();
        assert_eq!(t.insert('c', RW), Err(CapError::TableFull { capacity: 2 }));
        assert_eq!(t.duplicate(a, Rights::READ), Err(CapError::TableFull { capacity: 2 }));
        t.remove(a).unwrap();
        assert!(t.insert('c', RW).is_ok());
        assert_eq!(t.len(), 2);

        let mut none: HandleTable<char> = HandleTable::new(0);
        assert_eq!(none.insert('x', RW), Err(CapError::TableFull { capacity: 0 }));
    }

    #[test]
    fn duplicate_never_adds_rights() {
        let mut t = HandleTable::new(4);
        let h = t.insert(7, RW).unwrap();
        let ro = t.duplicate(h, Rights::READ).unwrap();
        assert_eq!(t.get(ro, Rights::READ), Ok(&7));
        assert_eq!(t.rights(ro), Ok(Rights::READ));
        assert_eq!(
            t.duplicate(ro, RW),
            Err(CapError::RightsEscalation { handle: ro, has: Rights::READ, requested: RW })
        );
        assert_eq!(
            t.duplicate(h, Rights::GRANT),
            Err(CapError::RightsEscalation { handle: h, has: RW, requested: Rights::GRANT })
        );
        let same = t.duplicate(h, RW).unwrap();
        assert_eq!(t.rights(same), Ok(RW));
        assert_eq!(t.len(), 3);
        // Closing one copy leaves the others.
        t.remove(h).unwrap();
        assert_eq!(t.get(ro, Rights::READ), Ok(&7));
    }

    #[test]
    fn transfer_needs_grant() {
        let mut t = HandleTable::new(4);
        let h = t.insert(5, RW).unwrap();
        assert_eq!(
            t.take_for_transfer(h),
            Err(CapError::MissingRights { handle: h, required: Rights::GRANT, has: RW })
        );
        assert_eq!(t.len(), 1);
        let g = t.insert(6, Rights::all()).unwrap();
        assert_eq!(t.take_for_transfer(g), Ok((6, Rights::all())));
        assert_eq!(t.get(g, Rights::empty()), Err(CapError::InvalidHandle { handle: g }));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn transfer_to_moves_with_equal_or_fewer_rights() {
        let mut a = HandleTable::new(4);
        let mut b = HandleTable::new(1);
        let h = a.insert(9, Rights::READ | Rights::GRANT).unwrap();
        assert_eq!(
            a.transfer_to(h, &mut b, Rights::READ | Rights::WRITE),
            Err(CapError::RightsEscalation {
                handle: h,
                has: Rights::READ | Rights::GRANT,
                requested: Rights::READ | Rights::WRITE
            })
        );
        let moved = a.transfer_to(h, &mut b, Rights::READ).unwrap();
        assert_eq!(b.get(moved, Rights::READ), Ok(&9));
        assert_eq!(b.rights(moved), Ok(Rights::READ));
        assert_eq!(a.get(h, Rights::empty()), Err(CapError::InvalidHandle { handle: h }));
        assert!(a.is_empty());
        // The receiver got no grant right, so it cannot pass the handle on.
        let mut c = HandleTable::new(1);
        assert_eq!(
            b.transfer_to(moved, &mut c, Rights::READ),
            Err(CapError::MissingRights { handle: moved, required: Rights::GRANT, has: Rights::READ })
        );
    }

    #[test]
    fn transfer_to_a_full_table_changes_nothing() {
        let mut a = HandleTable::new(2);
        let mut b = HandleTable::new(1);
        b.insert(0, RW).unwrap();
        let h = a.insert(1, Rights::all()).unwrap();
        assert_eq!(a.transfer_to(h, &mut b, Rights::READ), Err(CapError::TableFull { capacity: 1 }));
        assert_eq!(a.get(h, Rights::all()), Ok(&1));
        assert_eq!((a.len(), b.len()), (1, 1));
    }

    #[test]
    fn errors_come_in_a_fixed_order() {
        let mut a = HandleTable::new(1);
        let mut full = HandleTable::new(0);
        let h = a.insert(1, Rights::READ).unwrap();
        // Lacks grant and asks for more rights and the target is full: the missing right wins.
        assert!(matches!(a.transfer_to(h, &mut full, RW), Err(CapError::MissingRights { .. })));
        // A stale handle is invalid before anything else.
        a.remove(h).unwrap();
        assert_eq!(a.transfer_to(h, &mut full, RW), Err(CapError::InvalidHandle { handle: h }));
        assert_eq!(a.duplicate(h, RW), Err(CapError::InvalidHandle { handle: h }));
    }

    #[test]
    fn drain_returns_every_live_object_and_revokes() {
        let mut t = HandleTable::new(8);
        let a = t.insert('a', RW).unwrap();
        let b = t.insert('b', Rights::READ).unwrap();
        let c = t.insert('c', Rights::all()).unwrap();
        t.remove(b).unwrap();
        let d = t.duplicate(c, Rights::WRITE).unwrap();
        let drained: Vec<_> = t.drain().collect();
        // Slot order: `d` reused `b`'s slot.
        assert_eq!(drained, vec![(a, 'a', RW), (d, 'c', Rights::WRITE), (c, 'c', Rights::all())]);
        assert!(t.is_empty());
        for h in [a, b, c, d] {
            assert_eq!(t.get(h, Rights::empty()), Err(CapError::InvalidHandle { handle: h }));
        }
        // Still usable, and old values are not reissued.
        let e = t.insert('e', RW).unwrap();
        assert!(![a, b, c, d].contains(&e));
    }

    #[test]
    fn dropping_a_partial_drain_empties_the_table() {
        let mut t = HandleTable::new(4);
        for i in 0..4 {
            t.insert(i, RW).unwrap();
        }
        let mut drain = t.drain();
        assert_eq!(drain.len(), 4);
        assert!(drain.next().is_some());
        assert_eq!(drain.len(), 3);
        drop(drain);
        assert!(t.is_empty());
        assert_eq!(t.drain().count(), 0);
    }

    #[test]
    fn freed_slots_are_reused_oldest_first() {
        let mut t = HandleTable::new(3);
        let hs: Vec<_> = (0..3).map(|i| t.insert(i, RW).unwrap()).collect();
        t.remove(hs[1]).unwrap();
        t.remove(hs[0]).unwrap();
        let first = t.insert(10, RW).unwrap();
        let second = t.insert(11, RW).unwrap();
        // Slot 1 was freed first, so it is reused first.
        assert_eq!(first.to_bits() & 0b11, hs[1].to_bits() & 0b11);
        assert_eq!(second.to_bits() & 0b11, hs[0].to_bits() & 0b11);
    }

    #[test]
    fn handle_layout_gives_small_tables_long_generations() {
        let t: HandleTable<()> = HandleTable::new(1);
        assert_eq!((t.index_bits, t.max_generation), (0, u32::MAX));
        let t: HandleTable<()> = HandleTable::new(64);
        assert_eq!((t.index_bits, t.max_generation), (6, u32::MAX >> 6));
        let t: HandleTable<()> = HandleTable::new(65);
        assert_eq!(t.index_bits, 7);
        let t: HandleTable<()> = HandleTable::new(u16::MAX);
        assert_eq!((t.index_bits, t.max_generation), (16, 0xffff));
        assert_eq!(t.capacity(), MAX_CAPACITY);
    }

    #[test]
    fn largest_table_uses_its_top_slot() {
        let mut t = HandleTable::new(u16::MAX);
        let mut last = None;
        for i in 0..MAX_CAPACITY {
            last = Some(t.insert(i, Rights::READ).unwrap());
        }
        assert_eq!(t.insert(0, Rights::READ), Err(CapError::TableFull { capacity: MAX_CAPACITY }));
        let last = last.unwrap();
        assert_eq!(last.to_bits(), (1 << 16) | 0xfffe);
        assert_eq!(t.get(last, Rights::READ), Ok(&(MAX_CAPACITY - 1)));
    }

    #[test]
    fn used_up_slots_retire_instead_of_wrapping() {
        let mut t = HandleTable::with_max_generation(2, 3);
        let mut seen = Vec::new();
        loop {
            match t.insert((), RW) {
                Ok(h) => {
                    assert!(!seen.contains(&h), "{h} issued twice");
                    seen.push(h);
                    t.remove(h).unwrap();
                }
                Err(e) => {
                    assert_eq!(e, CapError::TableFull { capacity: 2 });
                    break;
                }
            }
        }
        // Two slots, three generations each.
        assert_eq!(seen.len(), 6);
        assert_eq!(t.retired, 2);
        for h in seen {
            assert_eq!(t.get(h, Rights::empty()), Err(CapError::InvalidHandle { handle: h }));
        }
    }
}
