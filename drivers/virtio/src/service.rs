//! The request loop every driver runs: serve one IPC connection until all clients are gone.

use std::process::exit;

use mica::ipc::{Channel, ErrorCode};

/// What the driver makes of one request.
#[derive(Debug)]
pub struct Answer {
    /// The reply's bytes.
    pub reply: Vec<u8>,
    /// The device is in an unknown state: the driver ends after replying (exit code 1), so
    /// that the kernel resets the device and the supervisor may start a fresh instance.
    pub fatal: bool,
}

impl Answer {
    /// A reply after which the driver goes on.
    pub fn ok(reply: Vec<u8>) -> Answer {
        Answer { reply, fatal: false }
    }

    /// A reply after which the driver ends.
    pub fn fatal(reply: Vec<u8>) -> Answer {
        Answer { reply, fatal: true }
    }
}

/// Connects to `connection` as its server and answers each request (a `call`) with
/// `handle(number, bytes)`, numbering requests from 1. Returns the number of requests served
/// once every client has gone; ends the program with exit code 1 when the connection cannot be
/// made, receiving fails, or an answer is fatal. `driver` prefixes its messages.
pub fn serve(driver: &str, connection: &str, mut handle: impl FnMut(u64, &[u8]) -> Answer) -> u64 {
    let service = match Channel::connect(connection) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{driver}: cannot connect {connection:?}: {e}");
            exit(1);
        }
    };
    let mut served = 0u64;
    loop {
        let received = match service.recv() {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::PeerClosed => return served,
            Err(e) => {
                eprintln!("{driver}: receive failed: {e}");
                exit(1);
            }
        };
        let Some(call) = received.call else { continue };
        served += 1;
        let answer = handle(served, &received.message.bytes);
        if let Err(e) = service.reply(call, &answer.reply) {
            println!("{driver}: reply to call {call} not delivered: {e}");
        }
        if answer.fatal {
            eprintln!("{driver}: ending, so that the device is reset");
            exit(1);
        }
    }
}
