//! Host tests of the kernel's IPC objects: connections, holders, restarts and bad input.

use alloc::string::ToString;
use alloc::vec;

use super::*;

const CLIENT: usize = 0;
const SERVER: usize = 1;
const OTHER: usize = 2;

fn system() -> IpcState {
    let names = vec!["client".to_string(), "kv".to_string(), "other".to_string()];
    let connections = [Connection { name: "kv".into(), from: CLIENT, to: SERVER }];
    IpcState::new(names, &connections).expect("state")
}

fn done<T: core::fmt::Debug>(step: Step<T>) -> Result<T, IpcFailure> {
    match step {
        Step::Done(r) => r,
        Step::Parked(p) => panic!("parked in {p:?}"),
    }
}

fn received(finished: Option<Result<Finished, IpcFailure>>) -> Received {
    match finished {
        Some(Ok(Finished::Received(r))) => r,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A system whose client and server instances have both connected to "kv": the state, the
/// client's and the server's spaces, and their handles.
fn connected(client_handles: u16, may_create: bool) -> (IpcState, SpaceId, SpaceId, u32, u32) {
    let mut st = system();
    let c = st.open_space(CLIENT, client_handles, may_create);
    let s = st.open_space(SERVER, 16, false);
    let ch = st.connect(c, "kv").expect("client end");
    let sh = st.connect(s, "kv").expect("server end");
    (st, c, s, ch, sh)
}

#[test]
fn call_and_reply_over_a_manifest_connection() {
    let (mut st, c, s, ch, sh) = connected(16, false);
    // The server waits first; the call wakes it with the request.
    assert_eq!(st.receive(s, WaiterId(2), sh, true), Step::Parked(Pending::Receive));
    assert_eq!(st.call(c, WaiterId(1), ch, b"get a".to_vec(), vec![]), Step::Parked(Pending::Call));
    assert_eq!(st.take_wakes(), [WaiterId(2)]);
    let request = received(st.finish(s, WaiterId(2), Pending::Receive, false));
    assert_eq!(request.bytes, b"get a");
    let call = request.call.expect("a call id");
    assert_eq!(st.finish(c, WaiterId(1), Pending::Call, false), None, "no reply yet");
    st.reply(s, sh, call, b"1".to_vec(), vec![]).expect("reply");
    assert_eq!(st.take_wakes(), [WaiterId(1)]);
    assert_eq!(received(st.finish(c, WaiterId(1), Pending::Call, false)).bytes, b"1");
    // A second reply to the same call is refused, clearly.
    let e = st.reply(s, sh, call, b"again".to_vec(), vec![]).expect_err("answered");
    assert_eq!(e.code, ErrorCode::UnknownCall);
}

#[test]
fn a_server_restart_fails_the_pending_call_and_clients_reconnect() {
    let (mut st, c, s1, ch, sh) = connected(16, false);
    assert_eq!(st.call(c, WaiterId(1), ch, b"put".to_vec(), vec![]), Step::Parked(Pending::Call));
    let _request = done(st.receive(s1, WaiterId(2), sh, false)).expect("request");
    // The server dies mid-request and will be restarted.
    st.close_space(s1, true);
    assert_eq!(st.take_wakes(), [WaiterId(1)]);
    let e = st.finish(c, WaiterId(1), Pending::Call, false).expect("done").expect_err("peer died");
    assert_eq!(e.code, ErrorCode::PeerClosed, "{e:?}");
    // The old handle stays dead; a new connect reaches the new channel, whose requests wait for
    // the next instance.
    assert_eq!(
        done(st.send(c, WaiterId(1), ch, b"x".to_vec(), vec![], false)).expect_err("old").code,
        ErrorCode::PeerClosed
    );
    st.close(c, ch).expect("close the old handle");
    let ch2 = st.connect(c, "kv").expect("reconnect");
    assert_ne!(ch2, ch);
    assert_eq!(st.call(c, WaiterId(1), ch2, b"put again".to_vec(), vec![]), Step::Parked(Pending::Call));
    let s2 = st.open_space(SERVER, 16, false);
    let sh2 = st.connect(s2, "kv").expect("server end, again");
    let request = done(st.receive(s2, WaiterId(3), sh2, false)).expect("queued request");
    assert_eq!(request.bytes, b"put again");
    st.reply(s2, sh2, request.call.expect("call"), b"ok".to_vec(), vec![]).expect("reply");
    assert_eq!(received(st.finish(c, WaiterId(1), Pending::Call, false)).bytes, b"ok");
    // Only the live channel is left.
    assert_eq!(st.channel_count(), 1);
}

#[test]
fn a_server_that_ends_for_good_is_unavailable_and_clients_leaving_end_the_server() {
    let (mut st, c, s, ch, sh) = connected(16, false);
    assert_eq!(st.receive(s, WaiterId(2), sh, true), Step::Parked(Pending::Receive));
    // The only client ends for good: once its handle is gone the server's receive fails.
    let _ = ch;
    st.close_space(c, false);
    assert_eq!(st.take_wakes(), [WaiterId(2)]);
    let e = st.finish(s, WaiterId(2), Pending::Receive, false).expect("done").expect_err("no clients");
    assert_eq!(e.code, ErrorCode::PeerClosed);
    st.close_space(s, false);
    assert_eq!(st.channel_count(), 0, "nothing left behind");
    let late = st.open_space(CLIENT, 4, false);
    let e = st.connect(late, "kv").expect_err("server gone");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert_eq!(e.message, "connection \"kv\": component kv has ended and will not be started again");
}

#[test]
fn bad_handles_rights_and_sizes_are_errors_for_the_caller_only() {
    let (mut st, c, s, ch, sh) = connected(4, false);
    // Forged.
    let e = done(st.send(c, WaiterId(1), ch ^ 0x40, vec![], vec![], false)).expect_err("forged");
    assert_eq!(e.code, ErrorCode::InvalidHandle);
    // Another component's handle value means nothing here.
    let o = st.open_space(OTHER, 4, false);
    assert_eq!(
        done(st.send(o, WaiterId(3), ch, vec![], vec![], false)).expect_err("not its").code,
        ErrorCode::InvalidHandle
    );
    // Read-only duplicate cannot send, and cannot be widened.
    let ro = st.duplicate(c, ch, 1).expect("read-only copy");
    let e = done(st.send(c, WaiterId(1), ro, vec![], vec![], false)).expect_err("read-only");
    assert_eq!((e.code, e.message.contains("lacks the write right")), (ErrorCode::MissingRights, true), "{e:?}");
    assert_eq!(st.duplicate(c, ro, 3).expect_err("widen").code, ErrorCode::RightsEscalation);
    assert_eq!(st.rights(c, ro), Ok(1));
    // Oversized.
    let e = done(st.send(c, WaiterId(1), ch, vec![0; CHANNEL_LIMITS.max_bytes + 1], vec![], false)).expect_err("big");
    assert_eq!(e.code, ErrorCode::MessageTooLarge);
    assert_eq!(e.message, "message of 65537 bytes exceeds the channel's limit of 65536 bytes");
    // Flooding: the queue fills and the sender is told; the server is untouched.
    for _ in 0..CHANNEL_LIMITS.capacity {
        done(st.send(c, WaiterId(1), ch, b"spam".to_vec(), vec![], false)).expect("room");
    }
    let e = done(st.send(c, WaiterId(1), ch, b"spam".to_vec(), vec![], false)).expect_err("full");
    assert_eq!(e.code, ErrorCode::Full);
    assert_eq!(done(st.receive(s, WaiterId(2), sh, false)).expect("server reads").bytes, b"spam");
    // Table exhaustion: capacity 4 holds ch, ro and two more.
    let _h3 = st.connect(c, "kv").expect("third");
    let _h4 = st.connect(c, "kv").expect("fourth");
    let e = st.connect(c, "kv").expect_err("full table");
    assert_eq!(e.code, ErrorCode::TableFull);
    assert_eq!(e.message, "the handle table of component client is full (4 handles; the manifest's `handles` sets it)");
    // Unknown connection names say which ones exist.
    let e = st.connect(c, "db").expect_err("no such");
    assert_eq!(e.message, "no connection named \"db\" in the manifest for this component (its connections: kv)");
    // Creating channels needs the manifest's permission.
    assert_eq!(st.create_channel(c).expect_err("not allowed").code, ErrorCode::NotPermitted);
}

#[test]
fn handles_move_through_messages_and_come_back_when_refused() {
    let (mut st, c, s, ch, sh) = connected(16, true);
    let (mine, theirs) = st.create_channel(c).expect("new channel");
    // Passing the same handle twice is refused and nothing moves.
    let e = done(st.send(c, WaiterId(1), ch, vec![], vec![theirs, theirs], false)).expect_err("twice");
    assert_eq!(e.code, ErrorCode::DuplicateHandle);
    assert_eq!(st.rights(c, theirs), Ok(7));
    // Without grant it cannot be passed on.
    let no_grant = st.duplicate(c, theirs, 3).expect("copy without grant");
    let e = done(st.send(c, WaiterId(1), ch, vec![], vec![no_grant], false)).expect_err("no grant");
    assert_eq!(e.code, ErrorCode::MissingRights);
    st.close(c, no_grant).expect("close copy");
    done(st.send(c, WaiterId(1), ch, b"here".to_vec(), vec![theirs], false)).expect("sent");
    assert_eq!(st.rights(c, theirs).expect_err("moved").code, ErrorCode::InvalidHandle);
    let got = done(st.receive(s, WaiterId(2), sh, false)).expect("received");
    assert_eq!(got.handles.len(), 1);
    // The server talks on the moved end.
    done(st.send(s, WaiterId(2), got.handles[0], b"hi".to_vec(), vec![], false)).expect("send on moved end");
    assert_eq!(done(st.receive(c, WaiterId(1), mine, false)).expect("reply").bytes, b"hi");
    // A send refused by a closed peer hands its handles back.
    let (x, y) = st.create_channel(c).expect("another");
    st.close(s, got.handles[0]).expect("server lets go");
    let e = done(st.send(c, WaiterId(1), mine, vec![], vec![x], false)).expect_err("peer closed");
    assert_eq!(e.code, ErrorCode::PeerClosed);
    assert_eq!(e.returned.len(), 1);
    assert_eq!(st.rights(c, e.returned[0]), Ok(7), "the handle is back and usable");
    let _ = y;
    st.close_space(c, false);
    st.close_space(s, false);
    assert_eq!(st.channel_count(), 0, "every channel closed with its last holder");
}

#[test]
fn a_wait_that_times_out_is_cancelled_and_a_blocked_send_gets_its_handles_back() {
    let (mut st, c, s, ch, sh) = connected(8, true);
    assert_eq!(st.receive(s, WaiterId(2), sh, true), Step::Parked(Pending::Receive));
    assert_eq!(st.finish(s, WaiterId(2), Pending::Receive, false), None);
    let e = st.finish(s, WaiterId(2), Pending::Receive, true).expect("expired").expect_err("timed out");
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::TimedOut, "timed out: no message arrived"));
    for _ in 0..CHANNEL_LIMITS.capacity {
        done(st.send(c, WaiterId(1), ch, vec![], vec![], false)).expect("room");
    }
    let (x, _y) = st.create_channel(c).expect("channel");
    assert_eq!(st.send(c, WaiterId(1), ch, vec![], vec![x], true), Step::Parked(Pending::Send));
    let e = st.finish(c, WaiterId(1), Pending::Send, true).expect("expired").expect_err("timed out");
    assert_eq!(e.code, ErrorCode::TimedOut);
    assert_eq!(e.returned.len(), 1);
    assert_eq!(st.rights(c, e.returned[0]), Ok(7));
    // Nothing was left parked: the server's next receive is served from the queue.
    assert_eq!(done(st.receive(s, WaiterId(2), sh, false)).expect("queued").bytes, b"");
}

#[test]
fn hardware_handles_share_the_space_and_are_refused_as_channels() {
    let (mut st, c, _s, ch, _sh) = connected(16, false);
    let rw = Rights::READ | Rights::WRITE;
    let window = st.with_table(c, |t| t.insert(Object::Window(0), rw)).expect("open").expect("room").to_bits();
    let buffer = st.with_table(c, |t| t.insert(Object::Dma(DmaId(1)), rw)).expect("open").expect("room").to_bits();
    // One namespace: the instance's handles are all distinct, whichever interface gave them.
    assert_eq!(st.handle_count(c), 3);
    assert!(window != ch && buffer != ch && window != buffer);

    let e = done(st.send(c, WaiterId(1), window, b"x".to_vec(), vec![], false)).expect_err("not a channel");
    assert_eq!(e.code, ErrorCode::InvalidHandle, "{e:?}");
    assert!(e.message.contains("is a register window, not a channel end"), "{e:?}");
    let e = done(st.receive(c, WaiterId(1), buffer, false)).expect_err("not a channel");
    assert_eq!(e.code, ErrorCode::InvalidHandle, "{e:?}");
    assert!(e.message.contains("is a DMA buffer, not a channel end"), "{e:?}");
    let e = done(st.call(c, WaiterId(1), window, b"x".to_vec(), vec![])).expect_err("not a channel");
    assert_eq!(e.code, ErrorCode::InvalidHandle, "{e:?}");
    let e = st.reply(c, buffer, 1, b"x".to_vec(), vec![]).expect_err("not a channel");
    assert_eq!(e.code, ErrorCode::InvalidHandle, "{e:?}");

    // A hardware handle does not travel in a message; nothing is taken.
    let e = done(st.send(c, WaiterId(1), ch, b"x".to_vec(), vec![window], false)).expect_err("stays");
    assert_eq!(e.code, ErrorCode::InvalidHandle, "{e:?}");
    assert!(e.message.contains("only channel ends travel in messages"), "{e:?}");
    assert_eq!(e.returned, [window]);
    // Nor is it duplicated or closed through IPC; its rights can be read.
    assert_eq!(st.duplicate(c, window, Rights::READ.bits()).expect_err("dup").code, ErrorCode::InvalidHandle);
    assert_eq!(st.close(c, buffer).expect_err("close").code, ErrorCode::InvalidHandle);
    assert_eq!(st.rights(c, window), Ok(rw.bits()));
    assert_eq!(st.handle_count(c), 3);

    // The channel end still works, and the instance's end closes everything it holds.
    done(st.send(c, WaiterId(1), ch, b"ok".to_vec(), vec![], false)).expect("sent");
    st.close_space(c, false);
    assert_eq!(st.handle_count(c), 0);
}

/// The regions of a pretend client and server memory.
const CLIENT_REQUEST: Region = Region { addr: 0x1000, len: 5 };
const CLIENT_LANDING: Region = Region { addr: 0x2000, len: 64 };
const SERVER_LANDING: Region = Region { addr: 0x9000, len: 64 };
const SERVER_REPLY: Region = Region { addr: 0xa000, len: 2 };

fn never_read() -> Result<Vec<u8>, IpcFailure> {
    panic!("the bytes were copied out although the receiver waited with room")
}

#[test]
fn span_messages_to_a_waiting_receiver_are_copied_once_straight_into_its_landing() {
    let (mut st, c, s, ch, sh) = connected(16, false);
    // The server waits with its landing; the call's request goes straight there.
    assert_eq!(st.receive_span(s, WaiterId(2), sh, SERVER_LANDING, true), Step::Parked(Pending::Receive));
    assert_eq!(
        st.call_span(c, WaiterId(1), ch, CLIENT_REQUEST, CLIENT_LANDING, never_read),
        Step::Parked(Pending::Call)
    );
    assert_eq!(st.drain_copies().collect::<Vec<_>>(), [SpanCopy { from: 0x1000, to: 0x9000, len: 5 }]);
    assert_eq!(st.take_wakes(), [WaiterId(2)]);
    let request = received(st.finish(s, WaiterId(2), Pending::Receive, false));
    assert_eq!((request.bytes.len(), request.landed), (0, Some(5)));
    let call = request.call.expect("a call id");
    // The reply goes straight into the caller's landing.
    st.reply_span(s, sh, call, SERVER_REPLY, never_read).expect("reply");
    assert_eq!(st.drain_copies().collect::<Vec<_>>(), [SpanCopy { from: 0xa000, to: 0x2000, len: 2 }]);
    assert_eq!(st.take_wakes(), [WaiterId(1)]);
    let reply = received(st.finish(c, WaiterId(1), Pending::Call, false));
    assert_eq!((reply.bytes.len(), reply.landed, reply.call), (0, Some(2), None));
    // A one-way span message lands the same way, and the landing is used once.
    assert_eq!(st.receive_span(s, WaiterId(2), sh, SERVER_LANDING, true), Step::Parked(Pending::Receive));
    assert_eq!(done(st.send_span(c, WaiterId(1), ch, CLIENT_REQUEST, never_read, true)), Ok(()));
    assert_eq!(st.drain_copies().count(), 1);
    assert_eq!(received(st.finish(s, WaiterId(2), Pending::Receive, false)).landed, Some(5));
    assert!(st.landings.is_empty(), "every landing is forgotten once its waiter took its message");
}

#[test]
fn span_messages_without_a_landing_that_fits_travel_as_copies() {
    let (mut st, c, s, ch, sh) = connected(16, false);
    let read = || Ok(b"hello".to_vec());
    // Nobody waits: the request is copied out and queued.
    assert_eq!(st.call_span(c, WaiterId(1), ch, CLIENT_REQUEST, CLIENT_LANDING, read), Step::Parked(Pending::Call));
    assert_eq!(st.drain_copies().count(), 0);
    let request = done(st.receive_span(s, WaiterId(2), sh, SERVER_LANDING, true)).expect("queued request");
    assert_eq!((request.bytes.as_slice(), request.landed), (&b"hello"[..], None));
    // A landing too small for the reply: the reply is copied out, for the receiver to hold.
    let small = Region { addr: 0x3000, len: 1 };
    let call = request.call.expect("a call id");
    let timed_out = st.finish(c, WaiterId(1), Pending::Call, true).expect("finished");
    assert_eq!(timed_out.expect_err("the first call times out").code, ErrorCode::TimedOut);
    assert_eq!(st.call_span(c, WaiterId(1), ch, CLIENT_REQUEST, small, read), Step::Parked(Pending::Call));
    let second = done(st.receive_span(s, WaiterId(2), sh, SERVER_LANDING, true)).expect("second request");
    let e = st.reply_span(s, sh, call, SERVER_REPLY, || Ok(b"late".to_vec())).expect_err("its caller gave up");
    assert_eq!(e.code, ErrorCode::UnknownCall);
    st.reply_span(s, sh, second.call.expect("id"), SERVER_REPLY, || Ok(b"ok".to_vec())).expect("reply");
    assert_eq!(st.drain_copies().count(), 0);
    let reply = received(st.finish(c, WaiterId(1), Pending::Call, false));
    assert_eq!((reply.bytes.as_slice(), reply.landed), (&b"ok"[..], None));
    assert!(st.landings.is_empty());
}

#[test]
fn ends_held_only_by_messages_nobody_can_receive_are_closed() {
    // A client's end of a connection, carried by a message in a cycle: the client sends the
    // far end of a channel of its own through that channel (so it sits in its own queue),
    // together with a second handle to the connection. Once the client lets go of its handles
    // (here: it ends), nothing can ever receive that message; the server must see its client
    // gone all the same, and every channel must go.
    let (mut st, c, s, ch, sh) = connected(16, true);
    let (near, far) = st.create_channel(c).expect("a channel of its own");
    let spare = st.duplicate(c, ch, 7).expect("a second handle to the connection");
    done(st.send(c, WaiterId(1), near, b"cycle".to_vec(), vec![far, spare], false)).expect("sent into its own queue");
    st.close(c, ch).expect("lets go of its first handle to the connection");
    st.close(c, near).expect("lets go of the near end");
    // The far end sits in its own queue, with the connection's spare handle: garbage.
    assert_eq!(st.channel_count(), 1, "only the connection is left");
    // The registry keeps the connection while the client may connect again ...
    let e = done(st.receive(s, WaiterId(2), sh, false)).expect_err("nothing sent");
    assert_eq!(e.code, ErrorCode::Empty);
    // ... and once it ends, nothing holds the client's end: the server sees it gone. (Before the
    // collector, the spare handle in the cycle held it open, and the server waited for ever.)
    st.close_space(c, false);
    let e = done(st.receive(s, WaiterId(2), sh, false)).expect_err("the client is gone");
    assert_eq!(e.code, ErrorCode::PeerClosed);
    // The same cycle left when the instance ends.
    let c2 = st.open_space(CLIENT, 16, true);
    let (near, far) = st.create_channel(c2).expect("another channel");
    done(st.send(c2, WaiterId(3), near, vec![], vec![far], false)).expect("sent into its own queue");
    st.close_space(c2, false);
    st.close_space(s, false);
    assert_eq!(st.channel_count(), 0, "every channel closed");
}

#[test]
fn ends_in_a_queue_a_live_end_can_drain_stay_open() {
    // A handle queued for the server to receive is not garbage, even once the client lets go.
    let (mut st, c, s, ch, sh) = connected(16, true);
    let (near, far) = st.create_channel(c).expect("a channel");
    done(st.send(c, WaiterId(1), ch, vec![], vec![far], false)).expect("sent to the server");
    st.close(c, near).expect("lets go of the near end");
    let got = done(st.receive(s, WaiterId(2), sh, false)).expect("the server still gets it");
    assert_eq!(got.handles.len(), 1);
    let e = done(st.receive(s, WaiterId(2), got.handles[0], false)).expect_err("its peer is closed");
    assert_eq!(e.code, ErrorCode::PeerClosed);
}

#[test]
fn a_thread_watching_several_ends_is_woken_once_one_becomes_readable() {
    let (mut st, c, s, ch, sh) = connected(16, true);
    let (x, y) = st.create_channel(c).expect("channel");
    let w = st.waitables(c, &[ch, x]).expect("two ends");
    assert_eq!(w.lines, []);
    let watcher = WaiterId(7);
    assert_eq!(st.watch(watcher, &w.ends), Vec::<u32>::new(), "nothing to receive yet");
    assert_eq!(st.take_wakes(), [], "nothing happened");

    // The server sends to the client's end: the watcher wakes, and sees position 0 ready.
    done(st.send(s, WaiterId(2), sh, b"hi".to_vec(), vec![], false)).expect("send");
    assert_eq!(st.take_wakes(), [watcher]);
    assert_eq!(st.watch(watcher, &w.ends), [0]);
    // It receives; nothing is taken on its behalf.
    assert_eq!(done(st.receive(c, watcher, ch, false)).expect("the message").bytes, b"hi");

    // Watching again, a send on its own channel makes the other end ready; a second send does
    // not wake it twice.
    assert_eq!(st.watch(watcher, &w.ends), Vec::<u32>::new());
    done(st.send(c, WaiterId(2), y, b"1".to_vec(), vec![], false)).expect("send");
    done(st.send(c, WaiterId(2), y, b"2".to_vec(), vec![], false)).expect("send");
    assert_eq!(st.take_wakes(), [watcher]);
    assert_eq!(st.watch(watcher, &w.ends), [1]);
    done(st.receive(c, watcher, x, false)).expect("1");
    done(st.receive(c, watcher, x, false)).expect("2");

    // After unwatch nothing wakes it; a closed peer makes an end ready (its receive fails).
    assert_eq!(st.watch(watcher, &w.ends), Vec::<u32>::new());
    st.unwatch(watcher);
    done(st.send(c, WaiterId(2), y, b"3".to_vec(), vec![], false)).expect("send");
    assert_eq!(st.take_wakes(), []);
    done(st.receive(c, watcher, x, false)).expect("3");
    assert_eq!(st.watch(watcher, &w.ends), Vec::<u32>::new());
    st.close(c, y).expect("close");
    assert_eq!(st.take_wakes(), [watcher]);
    assert_eq!(st.watch(watcher, &w.ends), [1]);
    let e = done(st.receive(c, watcher, x, false)).expect_err("peer closed");
    assert_eq!(e.code, ErrorCode::PeerClosed);
}

#[test]
fn a_wait_refuses_what_it_cannot_wait_on() {
    let (mut st, c, _s, ch, _sh) = connected(16, false);
    let e = st.waitables(c, &[ch, 999]).expect_err("a made-up handle");
    assert_eq!(e.code, ErrorCode::InvalidHandle);
    let many = vec![ch; MAX_WAIT_HANDLES + 1];
    let e = st.waitables(c, &many).expect_err("too many");
    assert_eq!(e.code, ErrorCode::TooManyHandles);
    assert!(e.message.contains("64"), "{}", e.message);
    let write_only = st.duplicate(c, ch, Rights::WRITE.bits()).expect("write only");
    let e = st.waitables(c, &[write_only]).expect_err("no read right");
    assert_eq!(e.code, ErrorCode::MissingRights);
    assert_eq!(st.waitables(c, &[]).expect("no handles"), Waitables::default());
}
