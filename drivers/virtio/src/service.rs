//! The request loop every driver runs: serve one IPC connection until all clients are gone.
//!
//! Requests land in one buffer kept for the driver's life, and each answer goes out together
//! with the wait for the next request, in one call to the kernel
//! ([`Channel::reply_span_and_recv_into`]). An answer's bytes may lie in a mapped DMA buffer
//! ([`Reply::Span`]): a block driver answers a read straight from the memory its device wrote.

use std::process::exit;

use mica::ipc::{Arrived, Channel, Error as IpcError, ErrorCode, MemorySpan};

/// The bytes of an answer.
#[derive(Debug)]
pub enum Reply {
    /// Bytes the driver built.
    Bytes(Vec<u8>),
    /// Bytes already in the driver's memory (a [`MappedDma::span`](mica::hw::MappedDma::span)),
    /// which stay there until the next request.
    Span(MemorySpan),
}

impl Reply {
    /// How many bytes it has.
    pub fn len(&self) -> usize {
        match self {
            Reply::Bytes(bytes) => bytes.len(),
            Reply::Span(span) => span.len as usize,
        }
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the driver makes of one request.
#[derive(Debug)]
pub struct Answer {
    /// The reply.
    pub reply: Reply,
    /// The device is in an unknown state: the driver ends after replying (exit code 1), so
    /// that the kernel resets the device and the supervisor may start a fresh instance.
    pub fatal: bool,
}

impl Answer {
    /// A reply after which the driver goes on.
    pub fn ok(reply: Vec<u8>) -> Answer {
        Answer { reply: Reply::Bytes(reply), fatal: false }
    }

    /// A reply after which the driver ends.
    pub fn fatal(reply: Vec<u8>) -> Answer {
        Answer { reply: Reply::Bytes(reply), fatal: true }
    }
}

/// Room for the largest message the kernel passes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

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
    let mut buffer = vec![0; MAX_MESSAGE_BYTES];
    let mut served = 0u64;
    let mut next = service.recv_into(&mut buffer, None);
    loop {
        let arrived = match received(driver, next) {
            Some(arrived) => arrived,
            None => return served,
        };
        let Some(call) = arrived.call else {
            next = service.recv_into(&mut buffer, None);
            continue;
        };
        served += 1;
        let answer = handle(served, &buffer[..arrived.len]);
        let span = match &answer.reply {
            Reply::Bytes(bytes) => MemorySpan::of(bytes),
            Reply::Span(span) => *span,
        };
        if answer.fatal {
            if let Err(e) = service.reply_span(call, span) {
                println!("{driver}: reply to call {call} not delivered: {e}");
            }
            eprintln!("{driver}: ending, so that the device is reset");
            exit(1);
        }
        let (replied, received) = service.reply_span_and_recv_into(call, span, &mut buffer, None);
        if let Err(e) = replied {
            println!("{driver}: reply to call {call} not delivered: {e}");
        }
        next = received;
    }
}

/// The request that arrived, or `None` once every client has gone; ends the program when
/// receiving failed.
fn received(driver: &str, next: Result<Arrived, IpcError>) -> Option<Arrived> {
    match next {
        Ok(arrived) => Some(arrived),
        Err(e) if e.code == ErrorCode::PeerClosed => None,
        Err(e) => {
            eprintln!("{driver}: receive failed: {e}");
            exit(1);
        }
    }
}
