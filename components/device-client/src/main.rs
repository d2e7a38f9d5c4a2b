//! Clients of Mica's driver components, and a component that misuses `mica:hw` on purpose; the
//! first argument picks the mode:
//!
//! - `entropy`: two requests of 64 bytes on connection `entropy`; both must be 64 bytes, not all
//!   zero, and differ. Then one of the most bytes a request may ask for, four malformed requests
//!   that must each be answered with no bytes, and one more good request. Prints
//!   `entropy: 2 x 64 bytes, distinct; 4096 bytes in one request; 4 malformed requests answered
//!   with no bytes`.
//! - `block ROUNDS`: on connection `block`: the disk's size, ROUNDS patterned 4 KiB writes spread
//!   over the disk, each read back and compared, a flush, and a read past the end that must be
//!   refused as out-of-range. Prints `block: ROUNDS writes verified, capacity N sectors`.
//! - `block-reconnect ROUNDS`: ROUNDS rounds of a 4 KiB write and its read-back; when the driver
//!   goes away mid-request (`peer-closed`), it reconnects and redoes the request. Prints
//!   `block: ROUNDS rounds verified after K reconnect(s)`.
//! - `block-bench`: the block workload of `cargo xtask bench io` (see `bench.rs`).
//! - `console TEXT...`: on connection `console`: writes TEXT (the words joined by spaces) as one
//!   line, then `console: N bytes written through the virtio-console driver` (N: the first line's
//!   bytes), each answered once the device has taken it. Prints `console: wrote 2 lines`.
//! - `hw-misbehave NAME`: claims granted device NAME itself and checks that each kind of bad
//!   `mica:hw` call is refused with the right error code, then that the device still answers.
//!   Prints `hw-misbehave: 12 refusals, device still answers`.
//!
//! Any failure prints what went wrong and exits with code 1 (2 for bad arguments).

#![forbid(unsafe_code)]

mod bench;
mod block;
mod console;
mod misbehave;

use std::process::exit;

use mica::ipc::{Channel, Error};
use mica_device::entropy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = || match args.get(1).map(|a| a.parse::<u64>()) {
        None => Ok(8),
        Some(Ok(n)) if n > 0 => Ok(n),
        Some(_) => Err(format!("ROUNDS must be a positive number, not {:?}", args[1])),
    };
    let result = match args.first().map(String::as_str) {
        Some("entropy") => entropy(),
        Some("block") => rounds().and_then(block::verify),
        Some("block-reconnect") => rounds().and_then(block::reconnecting),
        Some("block-bench") => bench::run(),
        Some("console") => console::run(&args[1..]),
        Some("hw-misbehave") => match args.get(1) {
            Some(name) => misbehave::run(name),
            None => Err("hw-misbehave needs the name of a granted device, e.g. virtio-rng.0".into()),
        },
        other => {
            eprintln!(
                "unknown mode {other:?}: expected entropy, block ROUNDS, block-reconnect ROUNDS, block-bench, console TEXT... or hw-misbehave NAME"
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

fn entropy() -> Result<(), String> {
    let rng = Channel::connect(entropy::CONNECTION).map_err(context("connect entropy"))?;
    let mut answers = Vec::new();
    for i in 0..2 {
        let bytes = rng.call(&entropy::encode_request(64)).map_err(context(format!("request {i}")))?;
        if bytes.len() != 64 {
            return Err(format!("request {i}: {} bytes came back, not 64", bytes.len()));
        }
        if bytes.iter().all(|&b| b == 0) {
            return Err(format!("request {i}: 64 zero bytes"));
        }
        answers.push(bytes);
    }
    if answers[0] == answers[1] {
        return Err("both requests returned the same 64 bytes".into());
    }
    let most = rng.call(&entropy::encode_request(entropy::MAX_BYTES)).map_err(context("the largest request"))?;
    if most.len() != entropy::MAX_BYTES as usize || most.iter().all(|&b| b == 0) {
        return Err(format!("a request of {} bytes: {} bytes came back", entropy::MAX_BYTES, most.len()));
    }
    // Malformed requests: no count, a short count, 0 bytes, over the limit. Each is answered
    // with no bytes, and the driver goes on serving.
    let malformed: [&[u8]; 4] =
        [&[], &[1, 0, 0], &entropy::encode_request(0), &entropy::encode_request(entropy::MAX_BYTES + 1)];
    for request in malformed {
        let answer = rng.call(request).map_err(context(format!("malformed request {request:?}")))?;
        if !answer.is_empty() {
            return Err(format!("malformed request {request:?} was answered with {} bytes", answer.len()));
        }
    }
    let after = rng.call(&entropy::encode_request(16)).map_err(context("a request after the malformed ones"))?;
    if after.len() != 16 {
        return Err(format!("after the malformed requests, 16 bytes asked for and {} came back", after.len()));
    }
    println!(
        "entropy: 2 x 64 bytes, distinct; {} bytes in one request; {} malformed requests answered with no bytes",
        entropy::MAX_BYTES,
        malformed.len()
    );
    Ok(())
}
