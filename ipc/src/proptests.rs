//! Property tests: random operations through the model check ([`crate::check`]).

use proptest::prelude::*;

use crate::check::{CHANNELS, Harness, Op, WAITERS};
use crate::*;

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B)]
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS;
    let len = 8usize..13;
    let handles = 0usize..4;
    let waiter = 0..WAITERS;
    prop_oneof![
        8 => (ch.clone(), side(), len.clone(), handles.clone(), prop::option::of(waiter.clone()))
            .prop_map(|(ch, side, len, handles, waiter)| Op::Send { ch, side, len, handles, waiter }),
        8 => (ch.clone(), side(), prop::option::of(waiter.clone()))
            .prop_map(|(ch, side, waiter)| Op::Recv { ch, side, waiter }),
        4 => (ch.clone(), side(), len.clone(), handles.clone(), waiter.clone())
            .prop_map(|(ch, side, len, handles, waiter)| Op::Call { ch, side, len, handles, waiter }),
        4 => (ch.clone(), side(), any::<usize>(), len, handles)
            .prop_map(|(ch, side, pick, len, handles)| Op::Reply { ch, side, pick, len, handles }),
        2 => waiter.prop_map(|waiter| Op::Cancel { waiter }),
        1 => (ch, side()).prop_map(|(ch, side)| Op::Close { ch, side }),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (0usize..4, 8usize..12, 0usize..3).prop_map(|(capacity, max_bytes, max_handles)| Limits {
        capacity,
        max_bytes,
        max_handles,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn channels_agree_with_the_model(
        limits in prop::collection::vec(limits(), CHANNELS),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut harness = Harness::new(&limits);
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        harness.finish();
    }
}
