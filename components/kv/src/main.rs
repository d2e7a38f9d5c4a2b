//! An in-memory key-value server on the manifest connection `kv`.
//!
//! Requests are `call`s whose bytes are one command: `put KEY VALUE`, `get KEY`, `del KEY`,
//! `len`. Replies: `ok`, `value VALUE`, `missing`, `len N`, or `error WHAT` for a malformed
//! request. It ends when every client has gone.
//!
//! Fault injection for the supervision test: with `CRASH_AFTER=N` in its environment, the first
//! instance (`MICA_RESTARTS=0`, which the kernel sets) traps on its N-th request, before
//! answering it, as a server with a bug would; the instances after a restart do not.

use std::collections::BTreeMap;

use mica::ipc::{Channel, ErrorCode};

/// The reply to one command.
fn answer(store: &mut BTreeMap<String, String>, request: &str) -> String {
    let mut words = request.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("put"), Some(key), Some(value)) => {
            store.insert(key.to_string(), value.to_string());
            "ok".into()
        }
        (Some("get"), Some(key), None) => match store.get(key) {
            Some(value) => format!("value {value}"),
            None => "missing".into(),
        },
        (Some("del"), Some(key), None) => match store.remove(key) {
            Some(_) => "ok".into(),
            None => "missing".into(),
        },
        (Some("len"), None, None) => format!("len {}", store.len()),
        _ => format!("error malformed request {request:?}"),
    }
}

fn main() {
    // A component that is never restarted has no `MICA_RESTARTS`: its one instance is the first.
    let first_instance = std::env::var("MICA_RESTARTS").map_or(true, |n| n == "0");
    let crash_after: Option<u64> =
        std::env::var("CRASH_AFTER").ok().and_then(|v| v.parse().ok()).filter(|_| first_instance);
    let service = match Channel::connect("kv") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect: {e}");
            std::process::exit(1);
        }
    };
    println!("serving");
    let mut store = BTreeMap::new();
    let mut served = 0u64;
    loop {
        let received = match service.recv() {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("all clients gone after {served} requests; {} keys", store.len());
                return;
            }
            Err(e) => {
                eprintln!("receive failed: {e}");
                std::process::exit(1);
            }
        };
        let Some(call) = received.call else { continue };
        served += 1;
        if crash_after == Some(served) {
            println!("request {served}: crashing on purpose (CRASH_AFTER={served}) before answering");
            std::process::abort();
        }
        let reply = answer(&mut store, &String::from_utf8_lossy(&received.message.bytes));
        if let Err(e) = service.reply(call, reply.as_bytes()) {
            println!("reply to call {call} not delivered: {e}");
        }
    }
}
