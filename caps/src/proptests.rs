//! Property tests: random operations through the model check ([`crate::check`]).

use proptest::prelude::*;

use crate::Rights;
use crate::check::{Harness, Op, Pick};

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
