//! A model check of the handle tables: operations on two tables (insert, get, rights, duplicate,
//! remove, take for transfer, transfer, drain), checked step by step against a plain model (a
//! map from live handle to object and rights, plus every handle ever issued). The property tests
//! draw the operations at random; the fuzzer (`fuzz/targets`, feature `check`) decodes them from
//! its bytes ([`run_bytes`]).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::{CapError, Handle, HandleTable, Rights};

/// How an operation names a handle.
#[derive(Clone, Debug)]
pub(crate) enum Pick {
    /// One the table issued at some point (live or stale), by position in the issue history.
    Issued(usize),
    /// An issued handle with one bit flipped: a forgery close to a real value.
    Near(usize, u32),
    /// Any value at all.
    Raw(u32),
}

/// One operation of a check.
#[derive(Clone, Debug)]
pub(crate) enum Op {
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
pub(crate) struct Model {
    capacity: usize,
    live: BTreeMap<Handle, (u64, Rights)>,
    pub(crate) issued: Vec<Handle>,
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

/// The two tables and their models, side by side.
pub(crate) struct Harness {
    pub(crate) tables: [HandleTable<u64>; 2],
    pub(crate) models: [Model; 2],
    /// The rights each object was first inserted with: no handle to it may ever have more.
    origin: BTreeMap<u64, Rights>,
    next_object: u64,
    /// Whether generations are cut short, so slots retire and a table can be full below capacity.
    retiring: bool,
}

impl Harness {
    pub(crate) fn new(capacities: (u16, u16), max_generation: Option<u32>) -> Harness {
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

    pub(crate) fn apply(&mut self, op: &Op) {
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
    pub(crate) fn check(&self) {
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

/// Runs a check whose table capacities and operations are decoded from `data`: a byte per
/// table's capacity (small ones mostly), a byte saying whether slots retire early (and after how
/// many generations), then a byte per operation's kind and its arguments from the bytes after
/// it (missing bytes read as 0). Panics when a table and its model disagree, or when an
/// invariant breaks.
pub fn run_bytes(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut capacity = || {
        let b = next().unwrap_or(0);
        if b & 0x80 == 0 { u16::from(b % 6) } else { 60 + u16::from(b % 10) }
    };
    let capacities = (capacity(), capacity());
    let retire = next().unwrap_or(0);
    let max_generation = (retire & 1 == 1).then_some(1 + u32::from(retire >> 1) % 3);
    let mut harness = Harness::new(capacities, max_generation);
    while let Some(kind) = next() {
        let table = usize::from(kind >> 7);
        let rights = Rights::from_bits_truncate(u32::from(next().unwrap_or(0)) % 8);
        let index = usize::from(next().unwrap_or(0));
        let pick = match next().unwrap_or(0) % 8 {
            0 => Pick::Near(index, u32::from(next().unwrap_or(0)) % 32),
            1 => Pick::Raw(u32::from_le_bytes([0; 4].map(|_| next().unwrap_or(0)))),
            _ => Pick::Issued(index),
        };
        let op = match kind % 16 {
            0..4 => Op::Insert { table, rights },
            4..7 => Op::Get { table, pick, required: rights },
            7 => Op::Rights { table, pick },
            8..10 => Op::Duplicate { table, pick, rights },
            10..12 => Op::Remove { table, pick },
            12 => Op::TakeForTransfer { table, pick },
            13..15 => Op::TransferTo { from: table, pick, rights },
            _ => Op::Drain { table },
        };
        harness.apply(&op);
        harness.check();
    }
}
