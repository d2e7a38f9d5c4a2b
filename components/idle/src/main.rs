//! An idle component: it makes a channel (its manifest entry sets `create_channels = true`),
//! keeps both ends, and waits in `receive` on one of them for the number of milliseconds its first
//! argument gives (default 1000). Nothing is ever sent, so it stays parked in the kernel, costing
//! only what an idle component costs, then ends successfully when the wait times out.
//! `cargo xtask bench density` starts many of these.

use std::time::Duration;

use mica::ipc::{Channel, ErrorCode};

fn main() {
    let ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let (waiting, _other) = match Channel::pair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("cannot make a channel: {e}");
            std::process::exit(1);
        }
    };
    let mut buffer = Vec::new();
    match waiting.recv_into(&mut buffer, Some(Duration::from_millis(ms))) {
        Err(e) if e.code == ErrorCode::TimedOut => {}
        Ok(_) => {
            eprintln!("a message arrived on a channel nobody else holds");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("receive failed: {e}");
            std::process::exit(1);
        }
    }
}
