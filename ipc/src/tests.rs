//! Unit tests: each behaviour of the channel API on small, hand-written scenarios.

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use crate::*;

type Table = ChannelTable<u32>;

fn limits(capacity: usize) -> Limits {
    Limits { capacity, max_bytes: 8, max_handles: 2 }
}

fn msg(byte: u8, handles: &[u32]) -> Message<u32> {
    Message::new(vec![byte], handles.to_vec())
}

fn plain(byte: u8, handles: &[u32]) -> Delivery<u32> {
    Delivery { message: msg(byte, handles), call: None }
}

const W1: WaiterId = WaiterId(1);
const W2: WaiterId = WaiterId(2);
const W3: WaiterId = WaiterId(3);

fn recv_now(t: &mut Table, end: ChannelEnd) -> (Delivery<u32>, Option<Wake<u32>>) {
    match t.recv(end, Mode::NonBlocking) {
        Ok(RecvOk::Received { delivery, wake }) => (delivery, wake),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn send_now(t: &mut Table, end: ChannelEnd, m: Message<u32>) -> Option<Wake<u32>> {
    match t.send(end, m, Mode::NonBlocking) {
        Ok(SendOk::Done { wake }) => wake,
        other => panic!("expected the send to go through, got {other:?}"),
    }
}

fn failed(waiter: WaiterId, error: IpcError, returned: Option<Message<u32>>) -> Wake<u32> {
    Wake { waiter, completion: Completion::Failed { error, returned } }
}

#[test]
fn messages_flow_both_ways_in_order() {
    let mut t = Table::new(4);
    let (a, b) = t.create(limits(3)).unwrap();
    assert_eq!((a.side, b.side, a.peer(), b.channel), (Side::A, Side::B, b, a.channel));
    for i in 0..3 {
        assert_eq!(send_now(&mut t, a, msg(i, &[u32::from(i)])), None);
    }
    assert_eq!(send_now(&mut t, b, msg(10, &[])), None);
    assert_eq!((t.queued(b), t.queued(a)), (Ok(3), Ok(1)));
    for i in 0..3 {
        assert_eq!(recv_now(&mut t, b), (plain(i, &[u32::from(i)]), None));
    }
    assert_eq!(recv_now(&mut t, a), (plain(10, &[]), None));
    assert_eq!(t.recv(b, Mode::NonBlocking), Err(IpcError::Empty { end: b }));
    assert_eq!(t.limits(a.channel), Ok(limits(3)));
}

#[test]
fn oversized_messages_are_refused_and_handed_back() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(1)).unwrap();
    let big = Message::new(vec![0; 9], vec![1]);
    let err = t.send(a, big.clone(), Mode::NonBlocking).unwrap_err();
    assert_eq!(err, SendError { error: IpcError::MessageTooLarge { bytes: 9, limit: 8 }, message: big.clone() });
    assert_eq!(err.to_string(), "message of 9 bytes exceeds the channel's limit of 8 bytes");
    let many = msg(0, &[1, 2, 3]);
    let err = t.call(a, many.clone(), W1).unwrap_err();
    assert_eq!(err, SendError { error: IpcError::TooManyHandles { handles: 3, limit: 2 }, message: many });
    // A refused call parks nobody and allocates no call id.
    assert_eq!(t.parked(), 0);
    let ok = t.call(a, msg(0, &[]), W1).unwrap();
    assert_eq!(ok.call, CallId::from_bits(1));
    let (request, _) = recv_now(&mut t, b);
    // Replies obey the same limits.
    let err = t.reply(b, ok.call, big.clone()).unwrap_err();
    assert_eq!(err.error, IpcError::MessageTooLarge { bytes: 9, limit: 8 });
    assert_eq!(request.call, Some(ok.call));
    assert!(t.reply(b, ok.call, msg(1, &[])).is_ok());
}

#[test]
fn a_full_queue_is_full_or_parks_the_sender_without_growing() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(2)).unwrap();
    send_now(&mut t, a, msg(0, &[]));
    send_now(&mut t, a, msg(1, &[]));
    let err = t.send(a, msg(2, &[5]), Mode::NonBlocking).unwrap_err();
    assert_eq!(err, SendError { error: IpcError::Full { end: a, capacity: 2 }, message: msg(2, &[5]) });
    // Flooding with parked senders: each holds its own message, the queue stays at capacity.
    assert_eq!(t.send(a, msg(2, &[]), Mode::Blocking(W1)), Ok(SendOk::Parked));
    assert_eq!(t.send(a, msg(3, &[]), Mode::Blocking(W2)), Ok(SendOk::Parked));
    assert_eq!(t.queued(b), Ok(2));
    // A parked waiter cannot start another operation, and a non-blocking send still sees Full.
    assert_eq!(t.send(a, msg(9, &[]), Mode::Blocking(W1)).unwrap_err().error, IpcError::WaiterBusy { waiter: W1 });
    assert_eq!(t.recv(a, Mode::Blocking(W2)), Err(IpcError::WaiterBusy { waiter: W2 }));
    assert_eq!(t.send(a, msg(9, &[]), Mode::NonBlocking).unwrap_err().error, IpcError::Full { end: a, capacity: 2 });
    // Each receive lets the oldest parked sender in and completes it.
    assert_eq!(recv_now(&mut t, b), (plain(0, &[]), Some(Wake { waiter: W1, completion: Completion::Sent })));
    assert_eq!(t.queued(b), Ok(2));
    assert_eq!(recv_now(&mut t, b), (plain(1, &[]), Some(Wake { waiter: W2, completion: Completion::Sent })));
    assert_eq!(recv_now(&mut t, b), (plain(2, &[]), None));
    assert_eq!(recv_now(&mut t, b), (plain(3, &[]), None));
    assert_eq!(t.parked(), 0);
}

#[test]
fn a_parked_receiver_gets_its_message_in_the_wake() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(1)).unwrap();
    assert_eq!(t.receiver_waiting(a), Ok(None));
    assert_eq!(t.recv(b, Mode::Blocking(W1)), Ok(RecvOk::Parked));
    assert_eq!(t.recv(b, Mode::Blocking(W2)), Ok(RecvOk::Parked));
    // Oldest receiver first; the message bypasses the queue. The kernel can see which one.
    assert_eq!(t.receiver_waiting(a), Ok(Some(W1)));
    assert_eq!(t.receiver_waiting(b), Ok(None), "nobody waits for messages from b");
    let wake = send_now(&mut t, a, msg(7, &[70]));
    assert_eq!(wake, Some(Wake { waiter: W1, completion: Completion::Received(plain(7, &[70])) }));
    assert_eq!(t.queued(b), Ok(0));
    assert_eq!(t.receiver_waiting(a), Ok(Some(W2)));
    let wake = send_now(&mut t, a, msg(8, &[]));
    assert_eq!(wake, Some(Wake { waiter: W2, completion: Completion::Received(plain(8, &[])) }));
    assert_eq!(t.parked(), 0);
    assert_eq!(t.receiver_waiting(a), Ok(None));
    // The woken waiters are free again.
    assert_eq!(t.recv(b, Mode::Blocking(W1)), Ok(RecvOk::Parked));
}

#[test]
fn capacity_zero_is_a_rendezvous() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(0)).unwrap();
    assert_eq!(t.send(a, msg(0, &[]), Mode::NonBlocking).unwrap_err().error, IpcError::Full { end: a, capacity: 0 });
    assert_eq!(t.send(a, msg(1, &[]), Mode::Blocking(W1)), Ok(SendOk::Parked));
    assert_eq!(t.send(a, msg(2, &[]), Mode::Blocking(W2)), Ok(SendOk::Parked));
    assert_eq!(t.queued(b), Ok(0));
    assert!(t.readable(b), "nothing is queued, but a receive finds a parked sender's message");
    assert_eq!(recv_now(&mut t, b), (plain(1, &[]), Some(Wake { waiter: W1, completion: Completion::Sent })));
    assert_eq!(recv_now(&mut t, b), (plain(2, &[]), Some(Wake { waiter: W2, completion: Completion::Sent })));
    assert_eq!(t.recv(b, Mode::Blocking(W3)), Ok(RecvOk::Parked));
    let wake = send_now(&mut t, a, msg(3, &[]));
    assert_eq!(wake, Some(Wake { waiter: W3, completion: Completion::Received(plain(3, &[])) }));
}

#[test]
fn concurrent_callers_each_get_their_own_reply() {
    let mut t = Table::new(1);
    let (client, server) = t.create(limits(4)).unwrap();
    let c1 = t.call(client, msg(1, &[]), W1).unwrap();
    let c2 = t.call(client, msg(2, &[]), W2).unwrap();
    assert_ne!(c1.call, c2.call);
    assert_eq!((c1.wake, c2.wake), (None, None));
    assert_eq!(t.caller_waiting(server, c1.call), Ok(None), "not received yet");
    let (r1, _) = recv_now(&mut t, server);
    let (r2, _) = recv_now(&mut t, server);
    assert_eq!(r1, Delivery { message: msg(1, &[]), call: Some(c1.call) });
    assert_eq!(r2.call, Some(c2.call));
    // The kernel can see who a reply would reach, before replying.
    assert_eq!(t.caller_waiting(server, c1.call), Ok(Some(W1)));
    assert_eq!(t.caller_waiting(server, c2.call), Ok(Some(W2)));
    assert_eq!(t.caller_waiting(client, c1.call), Ok(None), "callers do not answer their own calls");
    // Answer out of order: each reply reaches its own caller.
    assert_eq!(
        t.reply(server, c2.call, msg(20, &[])),
        Ok(Wake { waiter: W2, completion: Completion::Replied(msg(20, &[])) })
    );
    assert_eq!(
        t.reply(server, c1.call, msg(10, &[])),
        Ok(Wake { waiter: W1, completion: Completion::Replied(msg(10, &[])) })
    );
    assert_eq!(t.caller_waiting(server, c1.call), Ok(None), "answered");
    // A second reply, a made-up id, or a reply from the calling side is refused.
    let unknown = |call| IpcError::UnknownCall { end: server, call };
    assert_eq!(t.reply(server, c1.call, msg(0, &[])).unwrap_err().error, unknown(c1.call));
    assert_eq!(t.reply(server, CallId::from_bits(99), msg(0, &[])).unwrap_err().error, unknown(CallId::from_bits(99)));
    let c3 = t.call(client, msg(3, &[]), W1).unwrap();
    assert_eq!(
        t.reply(client, c3.call, msg(0, &[])).unwrap_err().error,
        IpcError::UnknownCall { end: client, call: c3.call }
    );
    // Not yet received by the server: no reply yet either (ids are guessable, deliveries are not).
    assert_eq!(t.reply(server, c3.call, msg(0, &[])).unwrap_err().error, unknown(c3.call));
    let (r3, _) = recv_now(&mut t, server);
    assert_eq!(r3.call, Some(c3.call));
    assert!(t.reply(server, c3.call, msg(0, &[])).is_ok());
    assert_eq!(t.parked(), 0);
}

#[test]
fn a_call_on_a_full_queue_parks_its_request_until_there_is_room() {
    let mut t = Table::new(1);
    let (client, server) = t.create(limits(1)).unwrap();
    send_now(&mut t, client, msg(0, &[]));
    let call = t.call(client, msg(1, &[]), W1).unwrap();
    assert_eq!(t.queued(server), Ok(1));
    // Taking the plain message moves the request in, but wakes nobody: the caller wants the reply.
    assert_eq!(recv_now(&mut t, server), (plain(0, &[]), None));
    let (request, wake) = recv_now(&mut t, server);
    assert_eq!((request.call, wake), (Some(call.call), None));
    assert_eq!(t.reply(server, call.call, msg(2, &[])).map(|w| w.waiter), Ok(W1));
}

#[test]
fn cancel_hands_back_what_the_waiter_held() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(1)).unwrap();
    assert_eq!(t.recv(a, Mode::Blocking(W1)), Ok(RecvOk::Parked));
    assert_eq!(t.cancel_wait(W1), Ok(None));
    assert_eq!(t.cancel_wait(W1), Err(IpcError::UnknownWaiter { waiter: W1 }));
    // A cancelled receiver is no longer first in line.
    assert_eq!(send_now(&mut t, b, msg(0, &[])), None);
    assert_eq!(t.send(b, msg(1, &[11]), Mode::Blocking(W2)), Ok(SendOk::Parked));
    assert_eq!(t.call(b, msg(2, &[22]), W3).map(|c| c.wake), Ok(None));
    assert_eq!(t.cancel_wait(W2), Ok(Some(msg(1, &[11]))));
    assert_eq!(t.cancel_wait(W3), Ok(Some(msg(2, &[22]))));
    assert_eq!(recv_now(&mut t, a), (plain(0, &[]), None));
    assert_eq!(t.recv(a, Mode::NonBlocking), Err(IpcError::Empty { end: a }));
    // A caller whose request was already queued gives up: the server still gets the request, but
    // its reply finds no caller.
    let call = t.call(b, msg(3, &[]), W3).unwrap();
    assert_eq!(t.cancel_wait(W3), Ok(None));
    let (request, _) = recv_now(&mut t, a);
    assert_eq!(request.call, Some(call.call));
    assert_eq!(
        t.reply(a, call.call, msg(4, &[])).unwrap_err().error,
        IpcError::UnknownCall { end: a, call: call.call }
    );
    assert_eq!(t.parked(), 0);
}

#[test]
fn the_peer_drains_what_was_sent_before_a_close() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(2)).unwrap();
    send_now(&mut t, a, msg(0, &[1]));
    let closed = t.close(a).unwrap();
    assert_eq!(closed, Closed { handles: vec![], wakes: vec![] });
    assert_eq!(t.send(b, msg(1, &[2]), Mode::NonBlocking).unwrap_err().error, IpcError::PeerClosed { end: b });
    assert_eq!(t.call(b, msg(1, &[2]), W1).unwrap_err().error, IpcError::PeerClosed { end: b });
    assert_eq!(recv_now(&mut t, b), (plain(0, &[1]), None));
    assert_eq!(t.recv(b, Mode::NonBlocking), Err(IpcError::PeerClosed { end: b }));
    assert_eq!(t.recv(b, Mode::Blocking(W1)), Err(IpcError::PeerClosed { end: b }));
    // The closed end is unusable; closing it again is an error.
    assert_eq!(t.recv(a, Mode::NonBlocking), Err(IpcError::EndClosed { end: a }));
    assert_eq!(t.close(a), Err(IpcError::EndClosed { end: a }));
    assert_eq!(t.len(), 1);
    assert_eq!(t.close(b).map(|c| c.handles), Ok(vec![]));
    assert!(t.is_empty());
    assert_eq!(t.close(b), Err(IpcError::NoSuchChannel { channel: b.channel }));
}

#[test]
fn close_wakes_everyone_parked_and_returns_undelivered_handles() {
    let mut t = Table::new(1);
    let (a, b) = t.create(limits(1)).unwrap();
    // b → a: one queued message for `a` (handles 1, 2) and a parked sender on `b`.
    send_now(&mut t, b, msg(0, &[1, 2]));
    assert_eq!(t.send(b, msg(1, &[3]), Mode::Blocking(WaiterId(10))), Ok(SendOk::Parked));
    // a → b: a queued request from `a` and one parked behind it, both awaiting replies.
    let first = t.call(a, msg(2, &[4]), WaiterId(11)).unwrap();
    let _ = t.call(a, msg(3, &[5]), WaiterId(12)).unwrap();
    // `b` called `a` too, and `b`'s request is parked (the b → a queue is full).
    let _ = t.call(b, msg(4, &[6]), WaiterId(13)).unwrap();
    let mut closed = t.close(a).unwrap();
    closed.wakes.sort_by_key(|w| w.waiter);
    let gone = IpcError::EndClosed { end: a };
    let peer_gone = IpcError::PeerClosed { end: b };
    assert_eq!(closed.handles, [1, 2]);
    assert_eq!(
        closed.wakes,
        [
            failed(WaiterId(10), peer_gone, Some(msg(1, &[3]))),
            failed(WaiterId(11), gone, None),
            failed(WaiterId(12), gone, Some(msg(3, &[5]))),
            failed(WaiterId(13), peer_gone, Some(msg(4, &[6]))),
        ]
    );
    assert_eq!(t.parked(), 0);
    // `b` still receives `a`'s queued request; answering it finds `a` gone.
    let (request, _) = recv_now(&mut t, b);
    assert_eq!(request, Delivery { message: msg(2, &[4]), call: Some(first.call) });
    assert_eq!(
        t.reply(b, first.call, msg(0, &[7])).unwrap_err(),
        SendError { error: peer_gone, message: msg(0, &[7]) }
    );
}

#[test]
fn close_fails_receivers_and_calls_being_served() {
    let mut t = Table::new(1);
    let (client, server) = t.create(limits(2)).unwrap();
    let call = t.call(client, msg(0, &[]), W1).unwrap();
    let (request, _) = recv_now(&mut t, server);
    assert_eq!(request.call, Some(call.call));
    let _ = t.call(client, msg(1, &[9]), W2).unwrap();
    assert_eq!(t.recv(client, Mode::Blocking(W3)), Ok(RecvOk::Parked));
    let mut closed = t.close(server).unwrap();
    closed.wakes.sort_by_key(|w| w.waiter);
    let peer_gone = IpcError::PeerClosed { end: client };
    // The second request was still queued: its handle comes back from close, not to the caller.
    assert_eq!(closed.handles, [9]);
    assert_eq!(closed.wakes, [failed(W1, peer_gone, None), failed(W2, peer_gone, None), failed(W3, peer_gone, None)]);
    assert_eq!(t.parked(), 0);
    let closed = t.close(client).unwrap();
    assert!(closed.wakes.is_empty() && closed.handles.is_empty());
}

#[test]
fn closing_an_end_fails_its_own_parked_receivers() {
    let mut t = Table::new(1);
    let (a, _b) = t.create(limits(1)).unwrap();
    assert_eq!(t.recv(a, Mode::Blocking(W1)), Ok(RecvOk::Parked));
    let closed = t.close(a).unwrap();
    assert_eq!(closed.wakes, [failed(W1, IpcError::EndClosed { end: a }, None)]);
    assert_eq!(t.cancel_wait(W1), Err(IpcError::UnknownWaiter { waiter: W1 }));
}

#[test]
fn stale_ids_never_reach_a_new_channel() {
    let mut t = Table::new(2);
    let (a, b) = t.create(limits(1)).unwrap();
    let _ = t.close(a).unwrap();
    let _ = t.close(b).unwrap();
    let (c, _) = t.create(limits(1)).unwrap();
    assert_eq!(c.channel.index, a.channel.index);
    assert_ne!(c.channel, a.channel);
    let err = t.send(a, msg(0, &[1]), Mode::NonBlocking).unwrap_err();
    assert_eq!(err, SendError { error: IpcError::NoSuchChannel { channel: a.channel }, message: msg(0, &[1]) });
    assert_eq!(t.queued(a), Err(IpcError::NoSuchChannel { channel: a.channel }));
    assert_eq!(t.limits(b.channel), Err(IpcError::NoSuchChannel { channel: b.channel }));
    assert!(t.create(limits(1)).is_ok());
    assert_eq!(t.create(limits(1)), Err(IpcError::TableFull { capacity: 2 }));
    assert_eq!(t.len(), 2);
}

#[test]
fn a_waiter_parks_once_across_channels() {
    let mut t = Table::new(2);
    let (a, _) = t.create(limits(1)).unwrap();
    let (c, _) = t.create(limits(1)).unwrap();
    assert_eq!(t.recv(a, Mode::Blocking(W1)), Ok(RecvOk::Parked));
    assert_eq!(t.recv(c, Mode::Blocking(W1)), Err(IpcError::WaiterBusy { waiter: W1 }));
    assert_eq!(t.call(c, msg(0, &[]), W1).unwrap_err().error, IpcError::WaiterBusy { waiter: W1 });
    assert_eq!(t.cancel_wait(W1), Ok(None));
    assert_eq!(t.recv(c, Mode::Blocking(W1)), Ok(RecvOk::Parked));
}

#[test]
fn huge_capacity_is_out_of_memory_not_an_abort() {
    let mut t = Table::new(1);
    assert_eq!(t.create(Limits { capacity: usize::MAX / 2, max_bytes: 0, max_handles: 0 }), Err(IpcError::OutOfMemory));
    assert!(t.is_empty());
    assert!(t.create(limits(1)).is_ok());
}

/// The kernel's flow with real capability tables: channel ends as handle-table objects, message
/// handles moved out of the sender's table and into the receiver's.
#[test]
fn moves_capabilities_between_handle_tables() {
    use mica_caps::{HandleTable, Rights};

    #[derive(Clone, Debug, PartialEq)]
    enum Object {
        End(ChannelEnd),
        Buffer(u32),
    }

    let mut channels: ChannelTable<(Object, Rights)> = ChannelTable::new(4);
    let mut alice: HandleTable<Object> = HandleTable::new(8);
    let mut bob: HandleTable<Object> = HandleTable::new(8);
    let (ea, eb) = channels.create(limits(2)).unwrap();
    let ha = alice.insert(Object::End(ea), Rights::READ | Rights::WRITE).unwrap();
    let hb = bob.insert(Object::End(eb), Rights::READ | Rights::WRITE).unwrap();
    let buffer = alice.insert(Object::Buffer(42), Rights::all()).unwrap();

    // Alice sends the buffer: the kernel checks WRITE on her end and takes the buffer out.
    let Ok(&Object::End(end)) = alice.get(ha, Rights::WRITE) else { panic!("not a channel end") };
    let moved = alice.take_for_transfer(buffer).unwrap();
    assert!(matches!(
        channels.send(end, Message::new(vec![1], vec![moved]), Mode::NonBlocking),
        Ok(SendOk::Done { .. })
    ));
    assert!(alice.get(buffer, Rights::empty()).is_err());

    // Bob receives: the kernel inserts each moved object into his table.
    let Ok(&Object::End(end)) = bob.get(hb, Rights::READ) else { panic!("not a channel end") };
    let Ok(RecvOk::Received { delivery, .. }) = channels.recv(end, Mode::NonBlocking) else { panic!("no message") };
    let handles: Vec<_> = delivery.message.handles.into_iter().map(|(o, r)| bob.insert(o, r).unwrap()).collect();
    assert_eq!(bob.get(handles[0], Rights::READ), Ok(&Object::Buffer(42)));

    // Bob ends: draining his table closes his end; Alice's next send sees the close.
    for (_, object, _) in bob.drain() {
        if let Object::End(end) = object {
            let closed = channels.close(end).unwrap();
            assert!(closed.handles.is_empty());
        }
    }
    let err = channels.send(ea, Message::new(vec![], vec![]), Mode::NonBlocking).unwrap_err();
    assert_eq!(err.error, IpcError::PeerClosed { end: ea });
}

#[test]
fn an_end_is_readable_while_a_message_waits_for_it_or_its_peer_is_closed() {
    let mut t = Table::new(4);
    let (a, b) = t.create(limits(2)).unwrap();
    assert!(!t.readable(a) && !t.readable(b), "a new channel has nothing to receive");
    send_now(&mut t, a, msg(1, &[]));
    assert!(t.readable(b) && !t.readable(a), "only the side the message is for");
    recv_now(&mut t, b);
    assert!(!t.readable(b), "the queue is empty again");
    // A receiver parked on the end takes the next message straight away: nothing is queued.
    assert!(matches!(t.recv(b, Mode::Blocking(W1)), Ok(RecvOk::Parked)));
    send_now(&mut t, a, msg(2, &[]));
    assert!(!t.readable(b));
    let _closed = t.close(a).unwrap();
    assert!(t.readable(b), "a receive would fail at once with peer-closed");
    let _closed = t.close(b).unwrap();
    assert!(t.readable(b), "a closed channel's receive fails at once too");
}
