//! Property tests: random sequences of operations on two tables, checked step by step against a
//! plain model (a map from live handle to object and rights, plus every handle ever issued).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use proptest::prelude::*;

use crate::{CapError, Handle, HandleTable, Rights};

/// How an operation names a handle.
#[derive(Clone, Debug)]
enum Pick {
    /// One the table issued at some point (live or stale), by position in the issue history.
    Issued(usize),
    /// An issued handle with one bit flipped: a forgery close to a real value.
    Near(usize, u32),
    /// Any value at all.
    Raw(u32),
}

#[derive(Clone, Debug)]
enum Op {
    Insert { table: usize, rights: Rights },
    Get { table: usize, pick: Pick, required: Rights },
    Rights { table: usize, pick: Pick },
    Duplicate { table: usize, pick: Pick, rights: Rights },
    Remove { table: usize, pick: Pick },
    TakeForTransfer { table: usize, pick: Pick },
    TransferTo { from: usize, pick: Pick, rights: Rights },
    Drain { table: usize },
}

/// What one table should hold.
#[derive(Debug, Default)]
struct Model {
    capacity: usize,
    live: BTreeMap<Handle, (u64, Rights)>,
    issued: Vec<Handle>,
    issued_set: BTreeSet<Handle>,
}

impl Model {
    fn pick(&self, pick: &Pick) -> Handle {
        let issued = |i: usize| self.issued.get(i % self.issued.len().max(1)).map_or(0, |h| h.to_bits());
        match *pick {
            Pick::Issued(i) => Handle::from_bits(issued(i)),
            Pick::Near(i, bit) => Handle::from_bits(issued(i) ^ (1 << bit)),
            Pick::Raw(bits) => Handle::from_bits(bits),
        }
    }

    fn resolve(&self, handle: Handle) -> Result<(u64, Rights), CapError> {
        self.live.get(&handle).copied().ok_or(CapError::InvalidHandle { handle })
    }

    fn room(&self) -> Result<(), CapError> {
        if self.live.len() < self.capacity { Ok(()) } else { Err(CapError::TableFull { capacity: self.capacity }) }
    }

    /// Records a newly issued handle, which must never have been issued before.
    fn issue(&mut self, handle: Handle, object: u64, rights: Rights) {
        assert_ne!(handle.to_bits(), 0, "handle 0 issued");
        assert!(self.issued_set.insert(handle), "{handle} issued twice");
        self.issued.push(handle);
        self.live.insert(handle, (object, rights));
    }
}

struct Harness {
    tables: [HandleTable<u64>; 2],
    models: [Model; 2],
    /// The rights each object was first inserted with: no handle to it may ever have more.
    origin: BTreeMap<u64, Rights>,
    next_object: u64,
    /// Whether generations are cut short, so slots retire and a table can be full below capacity.
    retiring: bool,
}

impl Harness {
    fn new(capacities: (u16, u16), max_generation: Option<u32>) -> Harness {
        let table = |capacity| match max_generation {
            Some(max) => HandleTable::with_max_generation(capacity, max),
            None => HandleTable::new(capacity),
        };
        let model = |capacity: u16| Model { capacity: usize::from(capacity), ..Model::default() };
        Harness {
            tables: [table(capacities.0), table(capacities.1)],
            models: [model(capacities.0), model(capacities.1)],
            origin: BTreeMap::new(),
            next_object: 0,
            retiring: max_generation.is_some(),
        }
    }

    /// Whether `got` is the table being full from retired slots where the model expected `want`.
    fn full_from_retirement<V, W>(&self, table: usize, want: &Result<V, CapError>, got: &Result<W, CapError>) -> bool {
        let t = &self.tables[table];
        let full = matches!(got, Err(CapError::TableFull { capacity }) if *capacity == t.capacity());
        let retired_fill = t.len() + t.retired() == t.capacity() && t.retired() > 0;
        self.retiring && want.is_ok() && full && retired_fill
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Insert { table, rights } => {
                let object = self.next_object;
                self.next_object += 1;
                let want = self.models[table].room();
                let got = self.tables[table].insert(object, rights);
                if self.full_from_retirement(table, &want, &got) {
                    return;
                }
                match (want, got) {
                    (Ok(()), Ok(h)) => {
                        self.models[table].issue(h, object, rights);
                        self.origin.insert(object, rights);
                    }
                    (want, got) => assert_eq!(want.map(|()| Handle::from_bits(0)), got),
                }
            }
            Op::Get { table, ref pick, required } => {
                let h = self.models[table].pick(pick);
                let want = self.models[table].resolve(h).and_then(|(object, has)| {
                    if has.contains(required) {
                        Ok(object)
                    } else {
                        Err(CapError::MissingRights { handle: h, required, has })
                    }
                });
                assert_eq!(self.tables[table].get(h, required).copied(), want);
            }
            Op::Rights { table, ref pick } => {
                let h = self.models[table].pick(pick);
                assert_eq!(self.tables[table].rights(h), self.models[table].resolve(h).map(|(_, r)| r));
            }
            Op::Duplicate { table, ref pick, rights } => {
                let model = &self.models[table];
                let h = model.pick(pick);
                let want = model.resolve(h).and_then(|(object, has)| {
                    if !has.contains(rights) {
                        return Err(CapError::RightsEscalation { handle: h, has, requested: rights });
                    }
                    model.room().map(|()| object)
                });
                let got = self.tables[table].duplicate(h, rights);
                if self.full_from_retirement(table, &want, &got) {
                    return;
                }
                match (want, got) {
                    (Ok(object), Ok(new)) => self.models[table].issue(new, object, rights),
                    (want, got) => assert_eq!(want.map(|_| Handle::from_bits(0)), got),
                }
            }
            Op::Remove { table, ref pick } => {
                let h = self.models[table].pick(pick);
                let want = self.models[table].resolve(h);
                assert_eq!(self.tables[table].remove(h), want);
                self.models[table].live.remove(&h);
            }
            Op::TakeForTransfer { table, ref pick } => {
                let h = self.models[table].pick(pick);
                let want = self.models[table].resolve(h).and_then(|(object, has)| {
                    if has.contains(Rights::GRANT) {
                        Ok((object, has))
                    } else {
                        Err(CapError::MissingRights { handle: h, required: Rights::GRANT, has })
                    }
                });
                assert_eq!(self.tables[table].take_for_transfer(h), want);
                if want.is_ok() {
                    self.models[table].live.remove(&h);
                }
            }
            Op::TransferTo { from, ref pick, rights } => {
                let to = 1 - from;
                let h = self.models[from].pick(pick);
                let want = self.models[from].resolve(h).and_then(|(object, has)| {
                    if !has.contains(Rights::GRANT) {
                        return Err(CapError::MissingRights { handle: h, required: Rights::GRANT, has });
                    }
                    if !has.contains(rights) {
                        return Err(CapError::RightsEscalation { handle: h, has, requested: rights });
                    }
                    self.models[to].room().map(|()| object)
                });
                let [a, b] = &mut self.tables;
                let (src, dst) = if from == 0 { (a, b) } else { (b, a) };
                let got = src.transfer_to(h, dst, rights);
                if self.full_from_retirement(to, &want, &got) {
                    return;
                }
                match (want, got) {
                    (Ok(object), Ok(new)) => {
                        self.models[from].live.remove(&h);
                        self.models[to].issue(new, object, rights);
                    }
                    (want, got) => assert_eq!(want.map(|_| Handle::from_bits(0)), got),
                }
            }
            Op::Drain { table } => {
                let mut got: Vec<_> = self.tables[table].drain().collect();
                got.sort();
                let want: Vec<_> = self.models[table].live.iter().map(|(&h, &(o, r))| (h, o, r)).collect();
                assert_eq!(got, want);
                self.models[table].live.clear();
            }
        }
    }

    /// Invariants that hold between any two operations.
    fn check(&self) {
        for (table, model) in self.tables.iter().zip(&self.models) {
            assert_eq!(table.len(), model.live.len());
            assert!(table.len() + table.retired() <= table.capacity());
            for &h in &model.issued {
                match model.live.get(&h) {
                    Some(&(object, rights)) => {
                        assert_eq!(table.get(h, rights), Ok(&object));
                        assert_eq!(table.rights(h), Ok(rights));
                        assert!(
                            self.origin[&object].contains(rights),
                            "{h} has more rights than its object started with"
                        );
                    }
                    None => assert_eq!(table.get(h, Rights::empty()), Err(CapError::InvalidHandle { handle: h })),
                }
            }
        }
    }
}

fn rights() -> impl Strategy<Value = Rights> {
    (0u32..8).prop_map(Rights::from_bits_truncate)
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<usize>().prop_map(Pick::Issued),
        1 => (any::<usize>(), 0u32..32).prop_map(|(i, bit)| Pick::Near(i, bit)),
        1 => any::<u32>().prop_map(Pick::Raw),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let table = 0usize..2;
    prop_oneof![
        4 => (table.clone(), rights()).prop_map(|(table, rights)| Op::Insert { table, rights }),
        3 => (table.clone(), pick(), rights()).prop_map(|(table, pick, required)| Op::Get { table, pick, required }),
        1 => (table.clone(), pick()).prop_map(|(table, pick)| Op::Rights { table, pick }),
        2 => (table.clone(), pick(), rights()).prop_map(|(table, pick, rights)| Op::Duplicate { table, pick, rights }),
        2 => (table.clone(), pick()).prop_map(|(table, pick)| Op::Remove { table, pick }),
        1 => (table.clone(), pick()).prop_map(|(table, pick)| Op::TakeForTransfer { table, pick }),
        2 => (table.clone(), pick(), rights()).prop_map(|(from, pick, rights)| Op::TransferTo { from, pick, rights }),
        1 => table.prop_map(|table| Op::Drain { table }),
    ]
}

fn capacity() -> impl Strategy<Value = u16> {
    prop_oneof![3 => 0u16..6, 1 => 60u16..70]
}

proptest! {
    #[test]
    fn tables_agree_with_the_model(
        capacities in (capacity(), capacity()),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut harness = Harness::new(capacities, None);
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
    }

    #[test]
    fn retiring_slots_never_reissue_a_handle(
        capacities in (1u16..5, 1u16..5),
        max_generation in 1u32..4,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut harness = Harness::new(capacities, Some(max_generation));
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        for (table, model) in harness.tables.iter().zip(&harness.models) {
            // Every slot hands out at most `max_generation` handles.
            prop_assert!(model.issued.len() <= table.capacity() * max_generation as usize);
        }
    }
}
