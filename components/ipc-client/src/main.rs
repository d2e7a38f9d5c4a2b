//! IPC clients, chosen by the first argument:
//!
//! - `echo N`: N calls of growing size on connection `echo`, each reply checked; then a channel
//!   of its own sent through the echo server and back, to show handles moving. Any error fails.
//! - `kv N`: N rounds of `put key-I value-I` then `get key-I` on connection `kv`. When the server
//!   dies mid-round (`peer-closed`), it reconnects and redoes the round; it prints how many times.
//! - `kv-fill`, `kv-check`: the crash test of the persistent `kvstore` (see [`kvfill`]): puts
//!   `key-0`, `key-1`, ... printing `kv-fill: acked key-N` after each, until killed; after a
//!   reboot, checks that the keys are `key-0..key-{M-1}`, each with the right value.
//! - `files`, `files-again`: a client of the file system service `fs` (see [`files`]).
//! - `misbehave`: every kind of bad input, each of which must come back as the right error value
//!   (and nothing else must happen); prints `check NAME: ok (MESSAGE)` per check.
//! - `wait`, `poke`: the wait on several handles at once, between two components (see [`waits`]).
//! - `tcp-echo PORT N`, `tcp-ask PORT`: a TCP echo server on the network stack component, and a
//!   client of it from inside the machine (see [`tcp`]).
//! - `bench N`: for `cargo xtask bench ipc`: N calls to the echo server with 64-byte and with
//!   4096-byte payloads, N one-way 64-byte messages, and N of the cheapest IPC host call
//!   (`rights-of`, a handle lookup); prints one `ipc-bench` line per
//!   measurement with the monotonic nanoseconds it took (guest instructions under `-icount
//!   shift=0`, where the clock advances one nanosecond per instruction).

mod files;
mod kvfill;
mod misbehave;
mod tcp;
mod waits;

use std::process::exit;
use std::time::Duration;

use mica::ipc::{Channel, Error, ErrorCode, Message};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(10);
    let result = match args.first().map(String::as_str) {
        Some("echo") => echo(count(1)),
        Some("kv") => kv(count(1)),
        Some("kv-fill") => kvfill::fill(),
        Some("kv-check") => kvfill::check(),
        Some("files") => files::run(),
        Some("files-again") => files::again(),
        Some("misbehave") => misbehave::run(),
        Some("bench") => bench(count(1)),
        Some("wait") => waits::wait(),
        Some("tcp-echo") => tcp::echo(count(1) as u16, count(2)),
        Some("tcp-ask") => tcp::ask(count(1) as u16),
        Some("poke") => waits::poke(),
        other => {
            eprintln!(
                "unknown mode {other:?}: expected echo, kv, kv-fill, kv-check, files, files-again, misbehave, wait, poke, tcp-echo, tcp-ask or bench"
            );
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("failed: {e}");
        exit(1);
    }
}

/// A failure of this program, with what it was doing.
fn context(what: impl std::fmt::Display) -> impl FnOnce(Error) -> String {
    move |e| format!("{what}: {e} ({:?})", e.code)
}

fn echo(rounds: u64) -> Result<(), String> {
    let echo = Channel::connect("echo").map_err(context("connect echo"))?;
    for i in 0..rounds {
        let request: Vec<u8> = (0..(i * 97) % 4096).map(|b| (b ^ i) as u8).collect();
        let reply = echo.call(&request).map_err(context(format!("call {i}")))?;
        if reply != request {
            return Err(format!(
                "call {i}: the reply differs from the request ({} vs {} bytes)",
                reply.len(),
                request.len()
            ));
        }
    }
    println!("{rounds} echo calls answered correctly");
    // Longer than the server's receive buffer (4 KiB) and than this reply buffer: both grow,
    // through the messages the kernel holds for them.
    let long: Vec<u8> = (0..5000u32).map(|b| (b % 251) as u8).collect();
    let mut reply = vec![0u8; 16];
    let got = echo.call_into(&long, &mut reply, None).map_err(context("long call"))?;
    if got.len != long.len() || reply[..got.len] != long[..] {
        return Err(format!("long call: {} bytes came back, or other bytes than were sent", got.len));
    }
    println!("a {}-byte call answered through buffers that grew", got.len);
    // A private channel, one end sent to the echo server and echoed back: it still works.
    let (mine, theirs) = Channel::pair().map_err(context("create a channel"))?;
    let back = echo
        .call_message(
            Message { bytes: b"a channel for you".to_vec(), handles: vec![theirs] },
            Some(Duration::from_secs(10)),
        )
        .map_err(context("call with a handle"))?;
    let [theirs] =
        <[Channel; 1]>::try_from(back.handles).map_err(|h| format!("{} handles came back, not 1", h.len()))?;
    theirs.send(b"through the moved end").map_err(context("send on the moved end"))?;
    let got = mine.recv().map_err(context("receive on the kept end"))?;
    if got.message.bytes != b"through the moved end" {
        return Err("the moved end delivered other bytes".into());
    }
    println!("a channel end went to the echo server and back, and still works");
    Ok(())
}

fn kv(rounds: u64) -> Result<(), String> {
    let mut kv = Channel::connect("kv").map_err(context("connect kv"))?;
    let mut reconnects = 0;
    let mut i = 0;
    while i < rounds {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        let round = (|| {
            let put = kv.call(format!("put {key} {value}").as_bytes())?;
            let get = kv.call(format!("get {key}").as_bytes())?;
            Ok::<_, Error>((put, get))
        })();
        match round {
            Ok((put, get)) => {
                if put != b"ok" || get != format!("value {value}").as_bytes() {
                    return Err(format!(
                        "round {i}: put said {:?}, get said {:?}",
                        String::from_utf8_lossy(&put),
                        String::from_utf8_lossy(&get)
                    ));
                }
                i += 1;
            }
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("round {i}: the server went away ({e}); reconnecting");
                reconnects += 1;
                kv = Channel::connect("kv").map_err(context("reconnect kv"))?;
            }
            Err(e) => return Err(context(format!("round {i}"))(e)),
        }
    }
    println!("{rounds} put/get rounds correct, {reconnects} reconnect(s)");
    Ok(())
}

/// Nanoseconds `work` took on the monotonic clock.
fn timed(work: impl FnOnce() -> Result<(), String>) -> Result<u128, String> {
    let start = std::time::Instant::now();
    work()?;
    Ok(start.elapsed().as_nanos())
}

fn bench(n: u64) -> Result<(), String> {
    let echo = Channel::connect("echo").map_err(context("connect echo"))?;
    // One warm-up call: the first touches memory and code for the first time.
    echo.call(b"warm-up").map_err(context("warm-up call"))?;
    for size in [64usize, 4096] {
        let request = vec![0xa5u8; size];
        // The reply lands in one buffer, kept from call to call, as a server's requests do.
        let mut reply = vec![0u8; 4096];
        // Errors are formatted only when they happen: the loops measure IPC, not `format!`.
        let ns = timed(|| {
            for i in 0..n {
                let got = echo.call_into(&request, &mut reply, None).map_err(|e| context(format!("call {i}"))(e))?;
                if got.len != size {
                    return Err(format!("call {i}: {} bytes came back, not {size}", got.len));
                }
            }
            Ok(())
        })?;
        if reply[..size] != request[..] {
            return Err(format!("the last {size}-byte reply differs from its request"));
        }
        println!("ipc-bench op=round-trip bytes={size} n={n} ns={ns}");
    }
    // The cheapest IPC host call: the rights of a handle (one table lookup under the IPC lock).
    let ns = timed(|| {
        for i in 0..n {
            echo.rights().map_err(|e| context(format!("rights {i}"))(e))?;
        }
        Ok(())
    })?;
    println!("ipc-bench op=host-call bytes=0 n={n} ns={ns}");
    // One-way: n messages, then a call that the server answers only after it took them all
    // (one queue, in order).
    let message = [0x5au8; 64];
    let ns = timed(|| {
        for i in 0..n {
            echo.send(&message).map_err(|e| context(format!("send {i}"))(e))?;
        }
        echo.call(b"sync").map_err(context("sync call"))?;
        Ok(())
    })?;
    println!("ipc-bench op=one-way bytes=64 n={n} ns={ns}");
    Ok(())
}
