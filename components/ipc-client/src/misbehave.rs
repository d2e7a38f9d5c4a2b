//! Bad input, each kind of it, from a component that means no harm to check the answers: every
//! check expects one error code and prints the kernel's message. The kernel and the other
//! components must not notice (the boot test runs a well-behaved pair beside it).

use std::time::Duration;

use mica::ipc::interface::{self as raw, Span};
use mica::ipc::{Channel, ErrorCode, Message, Rights};

/// Expects `result` to fail with `code`; prints the check and its message.
fn expect<T: std::fmt::Debug>(name: &str, result: Result<T, mica::ipc::Error>, code: ErrorCode) -> Result<(), String> {
    match result {
        Err(e) if e.code == code => {
            println!("check {name}: ok ({e})");
            Ok(())
        }
        Err(e) => Err(format!("check {name}: expected {code:?}, got {:?}: {e}", e.code)),
        Ok(v) => Err(format!("check {name}: expected {code:?}, but it succeeded: {v:?}")),
    }
}

pub fn run() -> Result<(), String> {
    let echo = Channel::connect("echo").map_err(|e| format!("connect echo: {e}"))?;

    // A made-up handle, and a closed one.
    let forged = Channel::from_raw(0x0bad_cafe);
    expect("forged-handle", forged.try_send(b"x"), ErrorCode::InvalidHandle)?;
    let closed = echo.duplicate(Rights::all()).map_err(|e| e.to_string())?;
    let raw = closed.raw();
    drop(closed);
    expect("closed-handle", Channel::from_raw(raw).try_send(b"x"), ErrorCode::InvalidHandle)?;

    // Rights: a read-only copy cannot send and cannot be widened again.
    let read_only = echo.duplicate(Rights::READ).map_err(|e| e.to_string())?;
    expect("wrong-rights", read_only.call(b"x"), ErrorCode::MissingRights)?;
    expect("rights-escalation", read_only.duplicate(Rights::READ | Rights::WRITE), ErrorCode::RightsEscalation)?;
    let no_grant = echo.duplicate(Rights::READ | Rights::WRITE).map_err(|e| e.to_string())?;
    let refused = echo.send_message(Message { bytes: Vec::new(), handles: vec![no_grant] }, Some(Duration::ZERO));
    let back = match &refused {
        Err(e) => e.returned.len(),
        Ok(()) => 0,
    };
    expect("transfer-without-grant", refused, ErrorCode::MissingRights)?;
    if back != 1 {
        return Err(format!("check transfer-without-grant: {back} handles came back, not 1"));
    }

    // Oversized messages, and too many handles.
    expect("oversized", echo.try_send(&vec![0; 64 * 1024 + 1]), ErrorCode::MessageTooLarge)?;
    let many: Vec<Channel> = (0..9).flat_map(|_| Channel::pair().map(|(a, b)| [a, b])).flatten().collect();
    let count = many.len();
    let refused = echo.send_message(Message { bytes: Vec::new(), handles: many }, Some(Duration::ZERO));
    expect("too-many-handles", refused, ErrorCode::TooManyHandles)?;
    println!("({count} handles offered)");

    // A closed peer.
    let (a, b) = Channel::pair().map_err(|e| e.to_string())?;
    drop(b);
    expect("closed-peer", a.try_send(b"anyone?"), ErrorCode::PeerClosed)?;
    expect("closed-peer-receive", a.recv(), ErrorCode::PeerClosed)?;

    spans()?;

    // Flooding: nobody reads this channel; the sender is told when it is full.
    let (sink, _unread) = Channel::pair().map_err(|e| e.to_string())?;
    let mut sent = 0;
    let flood = loop {
        match sink.try_send(b"flood") {
            Ok(()) => sent += 1,
            Err(e) => break Err::<(), _>(e),
        }
        if sent > 1000 {
            break Ok(());
        }
    };
    expect("flood", flood, ErrorCode::Full)?;
    println!("(the queue took {sent} messages)");
    expect(
        "flood-wait-times-out",
        sink.send_message(Message::bytes("more"), Some(Duration::from_millis(30))),
        ErrorCode::TimedOut,
    )?;

    // Waiting with a timeout, replying to nothing, connecting to nothing.
    expect("receive-timeout", sink.recv_timeout(Some(Duration::from_millis(30))), ErrorCode::TimedOut)?;
    expect("unknown-call", echo.reply(0xdead_beef, b"x"), ErrorCode::UnknownCall)?;
    expect("no-such-connection", Channel::connect("nonexistent"), ErrorCode::NoSuchConnection)?;

    // Handle-table exhaustion: connect until the table is full.
    let mut hoard = Vec::new();
    let full = loop {
        match Channel::connect("echo") {
            Ok(c) => hoard.push(c),
            Err(e) => break Err::<(), _>(e),
        }
        if hoard.len() > 5000 {
            break Ok(());
        }
    };
    expect("table-full", full, ErrorCode::TableFull)?;
    println!("(the table took {} more handles)", hoard.len());
    drop(hoard);
    // And it recovers: handles closed, room again.
    echo.call(b"still fine").map_err(|e| format!("the echo service after all that: {e}"))?;
    println!("all bad-input checks passed; the echo service still answers");
    Ok(())
}

/// Expects a span operation to fail with `code`; prints the check and the whole error.
fn expect_span<T: std::fmt::Debug>(name: &str, result: Result<T, ErrorCode>, code: ErrorCode) -> Result<(), String> {
    let whole = raw::last_error().map(|e| e.message).unwrap_or_default();
    match result {
        Err(c) if c == code => {
            println!("check {name}: ok ({whole})");
            Ok(())
        }
        Err(c) => Err(format!("check {name}: expected {code:?}, got {c:?}: {whole}")),
        Ok(v) => Err(format!("check {name}: expected {code:?}, but it succeeded: {v:?}")),
    }
}

/// The span interface with spans the kernel must refuse, and buffers too small: nothing read
/// outside this component's memory, nothing written there, no message lost.
fn spans() -> Result<(), String> {
    let (a, b) = Channel::pair().map_err(|e| e.to_string())?;
    let nowhere = Span { offset: u32::MAX - 15, len: 64 };
    let none = Span { offset: 0, len: 0 };
    expect_span("send-span-outside", raw::send_span(a.raw(), nowhere, Some(0)), ErrorCode::InvalidSpan)?;

    // A message received into a buffer outside memory is held, not lost.
    a.send(b"held, not lost").map_err(|e| e.to_string())?;
    expect_span("receive-into-outside", raw::receive_into(b.raw(), nowhere, none, Some(0)), ErrorCode::InvalidSpan)?;
    expect_span("receive-while-held", raw::receive_into(b.raw(), none, none, Some(0)), ErrorCode::NotPermitted)?;
    let mut buffer = [0u8; 32];
    let got = collect(&mut buffer)?;
    if got != b"held, not lost" {
        return Err(format!("check collect: got {got:?}"));
    }
    println!("check collect-after-invalid-span: ok ({} bytes back)", got.len());
    expect_span("collect-nothing", raw::collect(none, none), ErrorCode::Empty)?;

    // A buffer too small: the arrival says how big, and collect takes it.
    a.send(b"0123456789").map_err(|e| e.to_string())?;
    let mut small = [0u8; 4];
    let small_span = Span { offset: small.as_mut_ptr() as usize as u32, len: small.len() as u32 };
    let arrival = raw::receive_into(b.raw(), small_span, none, Some(0)).map_err(|c| format!("receive-into: {c:?}"))?;
    if arrival.bytes != 10 || small != [0; 4] {
        return Err(format!("check too-small: arrival {arrival:?}, buffer {small:?}"));
    }
    let got = collect(&mut buffer)?;
    if got != b"0123456789" {
        return Err(format!("check too-small: collected {got:?}"));
    }
    println!("check too-small-buffer: ok (arrival of {} bytes, collected whole)", arrival.bytes);
    Ok(())
}

/// `collect` into `buffer`; the bytes it wrote.
fn collect(buffer: &mut [u8]) -> Result<Vec<u8>, String> {
    let span = Span { offset: buffer.as_mut_ptr() as usize as u32, len: buffer.len() as u32 };
    let arrival = raw::collect(span, Span { offset: 0, len: 0 }).map_err(|c| format!("collect: {c:?}"))?;
    Ok(buffer[..arrival.bytes as usize].to_vec())
}
