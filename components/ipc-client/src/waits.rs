//! `wait` and `poke`: the wait on several handles at once (`mica:kernel/ipc.wait`), between two
//! components on the manifest connection `pair` (`wait` is its client, `poke` its server).
//!
//! `wait` checks, printing `wait: CHECK: ok` for each: nothing ready with a zero timeout; an
//! empty answer once a timeout passes, no sooner; its own channel's message found; a message
//! from `poke` waking it while it is parked (`poke` sends it 50 ms after being asked); a closed
//! peer reported ready; a made-up handle and too many handles refused; a call answered by
//! `poke` through `reply-wait`. `poke` waits on its end with `wait`, answers `poke me` with
//! `poked` and a call `ping` with `pong` (the reply going out with its next wait), and ends on
//! `bye`.

use std::time::{Duration, Instant};

use mica::ipc::{self, Channel, ErrorCode};

use crate::context;

/// How long `poke` lets the waiter park before it answers.
const POKE_DELAY: Duration = Duration::from_millis(50);

/// Fails unless `got` is `want`.
fn expect_ready(check: &str, got: Vec<usize>, want: &[usize]) -> Result<(), String> {
    if got == want {
        println!("wait: {check}: ok ({got:?} ready)");
        Ok(())
    } else {
        Err(format!("{check}: {got:?} ready, expected {want:?}"))
    }
}

/// The receive that follows a wait: the bytes must be `want`.
fn expect_message(channel: &Channel, want: &[u8]) -> Result<(), String> {
    let got = channel.try_recv().map_err(context("receive after the wait"))?;
    if got.message.bytes == want {
        Ok(())
    } else {
        Err(format!("received {:?}, expected {:?}", String::from_utf8_lossy(&got.message.bytes), want))
    }
}

pub fn wait() -> Result<(), String> {
    let pair = Channel::connect("pair").map_err(context("connect pair"))?;
    let (mine, theirs) = Channel::pair().map_err(context("create a channel"))?;
    let handles = [pair.raw(), mine.raw()];

    expect_ready("nothing-ready", ipc::wait(&handles, Some(Duration::ZERO)).map_err(context("look"))?, &[])?;

    let timeout = Duration::from_millis(30);
    let start = Instant::now();
    let got = ipc::wait(&handles, Some(timeout)).map_err(context("wait with a timeout"))?;
    let waited = start.elapsed();
    if waited < timeout {
        return Err(format!("the wait returned after {waited:?}, before its timeout of {timeout:?}"));
    }
    expect_ready("timeout", got, &[])?;

    theirs.send(b"to myself").map_err(context("send on the own channel"))?;
    expect_ready("own-channel", ipc::wait(&handles, None).map_err(context("wait"))?, &[1])?;
    expect_message(&mine, b"to myself")?;

    // Parked with nothing ready; the other component's message wakes it.
    pair.send(b"poke me").map_err(context("ask for a poke"))?;
    let start = Instant::now();
    let got = ipc::wait(&handles, None).map_err(context("wait for the poke"))?;
    let waited = start.elapsed();
    expect_ready("woken-by-another-component", got, &[0])?;
    println!("wait: (parked {} ms for the poke)", waited.as_millis());
    expect_message(&pair, b"poked")?;

    let pong = pair.call(b"ping").map_err(context("call ping"))?;
    if pong != b"pong" {
        return Err(format!("ping was answered {:?}", String::from_utf8_lossy(&pong)));
    }
    println!("wait: reply-and-wait: ok (pong)");

    pair.send(b"bye").map_err(context("say bye"))?;
    expect_ready("closed-peer", ipc::wait(&handles, None).map_err(context("wait for the close"))?, &[0])?;
    match pair.try_recv() {
        Err(e) if e.code == ErrorCode::PeerClosed => {}
        other => return Err(format!("after the peer closed, a receive gave {other:?}")),
    }

    match ipc::wait(&[pair.raw(), 0x0bad_cafe], Some(Duration::ZERO)) {
        Err(e) if e.code == ErrorCode::InvalidHandle => println!("wait: made-up-handle: ok ({})", e.message),
        other => return Err(format!("a wait on a made-up handle gave {other:?}")),
    }
    match ipc::wait(&[mine.raw(); 65], Some(Duration::ZERO)) {
        Err(e) if e.code == ErrorCode::TooManyHandles => println!("wait: too-many-handles: ok ({})", e.message),
        other => return Err(format!("a wait on 65 handles gave {other:?}")),
    }
    println!("wait: all checks passed");
    Ok(())
}

pub fn poke() -> Result<(), String> {
    let pair = Channel::connect("pair").map_err(context("connect pair"))?;
    let handles = [pair.raw()];
    let mut answer = None;
    loop {
        let ready = match answer.take() {
            Some(call) => {
                let (replied, ready) = pair.reply_and_wait(call, b"pong", &handles, None);
                replied.map_err(context("reply pong"))?;
                ready.map_err(context("wait after the reply"))?
            }
            None => ipc::wait(&handles, None).map_err(context("wait"))?,
        };
        if ready != [0] {
            return Err(format!("the wait without a timeout gave {ready:?}"));
        }
        let got = pair.try_recv().map_err(context("receive"))?;
        match (got.message.bytes.as_slice(), got.call) {
            (b"ping", Some(call)) => answer = Some(call),
            (b"poke me", None) => {
                std::thread::sleep(POKE_DELAY);
                pair.send(b"poked").map_err(context("poke"))?;
            }
            (b"bye", None) => return Ok(()),
            (other, _) => return Err(format!("unexpected message {:?}", String::from_utf8_lossy(other))),
        }
    }
}
