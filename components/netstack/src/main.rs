//! `netstack`: a TCP/IP stack (smoltcp) as a component. It reaches the network through the
//! network driver's connection `net` and serves the sockets protocol
//! ([`mica_device::sockets`]) on the manifest connection `sockets` to every component the
//! manifest connects to it.
//!
//! The interface has the static address 10.0.2.15/24 with the gateway 10.0.2.2, QEMU's user
//! networking defaults, so that a `hostfwd` port forward reaches it.
//!
//! One loop waits on everything at once (`mica:kernel/ipc.wait`): the manifest connection (a
//! client opening a session), the driver's connection (its `ready` when frames wait: the driver
//! was asked to tell, with `subscribe`), every session's channel, and smoltcp's next timer or the
//! earliest deadline of a held poll. Each round polls the interface, answers the polls that have
//! become ready, and hands the frames to send to the driver.
//!
//! It prints `netstack: 10.0.2.15/24 up on mac M` when the interface is up, a line per session
//! opened and closed, and ends (exit 0) when the driver and every client have gone. Failures
//! print what went wrong and exit with code 1.

#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::process::exit;
use std::time::{Duration, Instant};

use mica::ipc::{self, Channel, ErrorCode, Message};
use mica_device::net;
use mica_device::sockets::{self, Interest, Request, Response, SocketErrorCode, SocketId};
use netstack::stack::{NetConfig, SessionId, Stack};
use smoltcp::time::Instant as NetInstant;

/// The interface's address (QEMU user networking's guest address).
const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Its network's prefix length.
const PREFIX_LEN: u8 = 24;
/// The gateway (QEMU user networking's host side).
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The most sessions at once: a wait looks at 64 handles, two of them the manifest
/// connection and the driver.
const MAX_SESSIONS: usize = 62;

/// A poll whose answer is held until one of its sockets is ready or its deadline passes.
struct Held {
    session: SessionId,
    call: u64,
    interests: Vec<(SocketId, Interest)>,
    deadline: Option<Instant>,
}

/// The driver's connection.
struct Driver {
    channel: Channel,
}

impl Driver {
    fn call(&self, request: &net::Request, what: &str) -> Result<net::Response, String> {
        let reply = self.channel.call(&request.encode()).map_err(|e| format!("{what}: {e} ({:?})", e.code))?;
        match net::Response::decode(&reply) {
            Ok(net::Response::Error { code, message }) => {
                Err(format!("{what}: the driver answered {code:?}: {message}"))
            }
            Ok(response) => Ok(response),
            Err(e) => Err(format!("{what}: malformed answer from the driver: {e}")),
        }
    }

    /// Sends `tx` and takes the frames received, without waiting.
    fn exchange(&self, tx: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
        match self.call(&net::Request::Exchange { tx, wait_ns: 0 }, "exchanging frames with the driver")? {
            net::Response::Frames(frames) => Ok(frames),
            other => Err(format!("the driver answered an exchange with {other:?}")),
        }
    }
}

/// A seed for TCP initial sequence numbers and ephemeral ports, from the system's randomness.
fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x6e65_7473);
    hasher.finish()
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The service: the stack, its connections, its sessions and the polls it holds.
struct Service {
    stack: Stack,
    driver: Driver,
    manifest: Channel,
    /// Each session's channel end; the session's number is the end's handle.
    sessions: Vec<Channel>,
    held: Vec<Held>,
    start: Instant,
    /// The driver has gone (its connection closed): the stack ends with its clients.
    driver_gone: bool,
    /// Frames may wait at the driver: it said `ready`, or the last exchange brought some (there
    /// may be more). Without this or frames to send, a round asks the driver nothing.
    frames_waiting: bool,
}

impl Service {
    fn now(&self) -> NetInstant {
        NetInstant::from_micros(i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    fn reply(channel: &Channel, call: u64, response: &Response) {
        if let Err(e) = channel.reply(call, &response.encode()) {
            println!("netstack: reply to call {call} not delivered: {e}");
        }
    }

    /// Answers every held poll that is ready or past its deadline.
    fn answer_polls(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            let held = &self.held[i];
            let ready = self.stack.ready(held.session, &held.interests);
            if ready.is_empty() && held.deadline.is_none_or(|d| now < d) {
                i += 1;
                continue;
            }
            let held = self.held.swap_remove(i);
            if let Some(channel) = self.sessions.iter().find(|c| c.raw() == held.session) {
                Self::reply(channel, held.call, &Response::Ready(ready));
            }
        }
    }

    /// A client opens a session: a channel of its own, whose end goes back with the answer.
    fn open(&mut self, call: u64, bytes: &[u8]) {
        let refuse = |code: SocketErrorCode, message: String| Response::error(code, message).encode();
        let answer = match sockets::Request::decode(bytes) {
            Ok(Request::Open) if self.sessions.len() >= MAX_SESSIONS => Message::bytes(refuse(
                SocketErrorCode::NewSocketLimit,
                format!("{MAX_SESSIONS} sessions are open, the most"),
            )),
            Ok(Request::Open) => match Channel::pair() {
                Ok((mine, theirs)) => {
                    let session = mine.raw();
                    self.stack.open_session(session);
                    self.sessions.push(mine);
                    println!("netstack: session {session} opened ({} open)", self.sessions.len());
                    Message { bytes: Response::Session.encode(), handles: vec![theirs] }
                }
                Err(e) => Message::bytes(refuse(
                    SocketErrorCode::OutOfMemory,
                    format!("cannot make a session's channel: {e}"),
                )),
            },
            Ok(other) => Message::bytes(refuse(
                SocketErrorCode::BadRequest,
                format!("{other:?} is made in a session: open one first"),
            )),
            Err(e) => Message::bytes(refuse(SocketErrorCode::BadRequest, format!("a malformed request: {e}"))),
        };
        if let Err(e) = self.manifest.reply_message(call, answer) {
            println!("netstack: the answer to an open was not delivered: {e}");
        }
    }

    /// Serves one request of session `index`.
    fn serve(&mut self, index: usize, call: u64, bytes: &[u8]) {
        let session = self.sessions[index].raw();
        let response = match Request::decode(bytes) {
            Ok(Request::Poll { interests, timeout_ns }) => {
                let deadline = timeout_ns.and_then(|ns| Instant::now().checked_add(Duration::from_nanos(ns)));
                self.held.push(Held { session, call, interests, deadline });
                return;
            }
            Ok(request) => self.stack.handle(session, request),
            Err(e) => Response::error(SocketErrorCode::BadRequest, format!("a malformed request: {e}")),
        };
        Self::reply(&self.sessions[index], call, &response);
    }

    /// Session `index` has ended: its sockets go, and its held polls.
    fn close(&mut self, index: usize) {
        let channel = self.sessions.swap_remove(index);
        let session = channel.raw();
        self.stack.close_session(session);
        self.held.retain(|h| h.session != session);
        println!("netstack: session {session} closed ({} open)", self.sessions.len());
    }

    /// Sends what the stack has queued and takes what the driver has received; asks the driver
    /// nothing when there is nothing to send and it has not said frames wait (it says so once
    /// after each exchange, when frames come). Whether frames came.
    fn exchange(&mut self) -> Result<bool, String> {
        let mut came = false;
        while self.frames_waiting || !self.stack.device.tx.is_empty() {
            let tx = self.stack.device.take_batch("netstack");
            let rx = self.driver.exchange(tx)?;
            // Some came: more may wait behind them.
            self.frames_waiting = !rx.is_empty();
            if !rx.is_empty() {
                came = true;
                self.stack.device.rx.extend(rx);
                self.stack.poll(self.now());
            }
        }
        Ok(came)
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            self.stack.poll(self.now());
            self.answer_polls();
            if !self.driver_gone && self.exchange()? {
                self.answer_polls();
            }
            if self.driver_gone && self.sessions.is_empty() {
                return Ok(());
            }
            let mut handles = vec![self.manifest.raw()];
            if !self.driver_gone {
                handles.push(self.driver.channel.raw());
            }
            let first_session = handles.len();
            handles.extend(self.sessions.iter().map(Channel::raw));
            let now = Instant::now();
            let timer = self.stack.poll_delay(self.now());
            let poll_deadline =
                self.held.iter().filter_map(|h| h.deadline).min().map(|d| d.saturating_duration_since(now));
            let timeout = match (timer, poll_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let ready = ipc::wait(&handles, timeout).map_err(|e| format!("waiting failed: {e}"))?;
            // Sessions from the last, so that closing one keeps the others' positions.
            for &position in ready.iter().rev() {
                if position >= first_session {
                    self.session_ready(position - first_session);
                } else if position == 0 {
                    self.manifest_ready()?;
                } else {
                    self.driver_ready()?;
                }
            }
        }
    }

    fn session_ready(&mut self, index: usize) {
        match self.sessions[index].try_recv() {
            Ok(received) => match received.call {
                Some(call) => self.serve(index, call, &received.message.bytes),
                None => {
                    println!("netstack: session {} sent a message that is not a request", self.sessions[index].raw())
                }
            },
            Err(e) if e.code == ErrorCode::Empty => {}
            Err(e) if e.code == ErrorCode::PeerClosed => self.close(index),
            Err(e) => {
                println!("netstack: session {}: receive failed ({e}); closing it", self.sessions[index].raw());
                self.close(index);
            }
        }
    }

    fn manifest_ready(&mut self) -> Result<(), String> {
        match self.manifest.try_recv() {
            Ok(received) => {
                if let Some(call) = received.call {
                    self.open(call, &received.message.bytes);
                }
                Ok(())
            }
            Err(e) if e.code == ErrorCode::Empty => Ok(()),
            // No client holds the connection: those with sessions go on.
            Err(e) if e.code == ErrorCode::PeerClosed => {
                if self.sessions.is_empty() {
                    println!("netstack: all clients gone");
                    exit(0);
                }
                Ok(())
            }
            Err(e) => Err(format!("receiving on {:?} failed: {e}", sockets::CONNECTION)),
        }
    }

    fn driver_ready(&mut self) -> Result<(), String> {
        match self.driver.channel.try_recv() {
            // `ready`: the next round's exchange takes the frames.
            Ok(_) => {
                self.frames_waiting = true;
                Ok(())
            }
            Err(e) if e.code == ErrorCode::Empty => Ok(()),
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("netstack: the network driver has gone");
                self.driver_gone = true;
                Ok(())
            }
            Err(e) => Err(format!("receiving from the driver failed: {e}")),
        }
    }
}

fn start() -> Result<Service, String> {
    let channel = Channel::connect(net::CONNECTION)
        .map_err(|e| format!("cannot connect {:?}: {e} ({:?})", net::CONNECTION, e.code))?;
    let driver = Driver { channel };
    let mac = match driver.call(&net::Request::Info, "asking the driver for the card's address")? {
        net::Response::Info { mac, .. } => mac,
        other => return Err(format!("the driver answered an info request with {other:?}")),
    };
    driver.call(&net::Request::Subscribe, "subscribing to the driver's frames")?;
    let manifest = Channel::connect(sockets::CONNECTION)
        .map_err(|e| format!("cannot connect {:?}: {e} ({:?})", sockets::CONNECTION, e.code))?;
    let config =
        NetConfig { mac, address: ADDRESS, prefix_len: PREFIX_LEN, gateway: GATEWAY, random_seed: random_seed() };
    let start = Instant::now();
    let stack =
        Stack::new(config, NetInstant::from_micros(0)).map_err(|e| format!("cannot set up the interface: {e}"))?;
    println!("netstack: {ADDRESS}/{PREFIX_LEN} up on mac {}", format_mac(&mac));
    Ok(Service {
        stack,
        driver,
        manifest,
        sessions: Vec::new(),
        held: Vec::new(),
        start,
        driver_gone: false,
        frames_waiting: true,
    })
}

fn main() {
    let result = start().and_then(|mut service| service.run());
    if let Err(e) = result {
        eprintln!("netstack: {e}");
        exit(1);
    }
}
