//! A small HTTP server on a TCP/IP stack inside the component (smoltcp), over the network
//! driver's `mica:device` net protocol on the manifest connection `net`.
//!
//! The interface has the static address 10.0.2.15/24 with the gateway 10.0.2.2, QEMU's user
//! networking defaults, so that a `hostfwd` port forward to guest port 80 reaches it. It answers
//! `GET /` with `hello from Mica over virtio-net`, `GET /stats` with the number of requests served
//! and every other path with 404 (HEAD too; other methods get 405), one request per connection.
//!
//! When the manifest gives it a connection `kv` to a key-value store (`kvstore`, or the
//! in-memory `kv`), it also serves `/kv/KEY`: `GET` the value, `PUT` it (the request body) and
//! `DELETE` it, each answered once the store has answered (see [`routes`] for the statuses). A
//! store that has gone is connected again once per request; when that fails too the request
//! gets 503.
//!
//! The loop: poll the interface at the monotonic clock's time, serve the sockets, then one
//! exchange with the driver that carries the frames to send and brings back the frames received,
//! waiting for one at most until smoltcp's next timer (at most 100 ms; not at all when there is
//! more to send).
//!
//! Usage: `httpd [MAX_REQUESTS]`. With a number it ends (exit code 0) once it has served that
//! many requests and their connections have closed; without one it serves forever. It prints
//! `httpd: key-value store on connection "kv"` when it has one, `httpd: listening on
//! 10.0.2.15:80` when the interface is up, a line per request, and `httpd: served N request(s)`
//! at the end. Failures print what went wrong and exit with code 1 (2 for bad arguments).

#![forbid(unsafe_code)]

use httpd::{kv, server};

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::exit;
use std::time::Duration;

use mica::ipc::{Channel, ErrorCode};
use mica_device::net::{self, Request, Response};
use smoltcp::time::Instant;
use smoltcp::wire::Ipv4Address;

use kv::CallError;
use server::{NetConfig, Server};

/// The interface's address (QEMU user networking's guest address).
const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// Its network's prefix length.
const PREFIX_LEN: u8 = 24;
/// The gateway (QEMU user networking's host side).
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Sockets listening on port 80: connections served at once.
const SOCKETS: usize = 8;
/// The longest an exchange waits for a frame.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// The manifest connection to the key-value store.
const KV_CONNECTION: &str = "kv";

/// The connection to the key-value store (`None` while it is gone).
struct KvLink {
    channel: Option<Channel>,
}

impl KvLink {
    /// Connects to the store: `Ok(None)` when the manifest gives no connection to one.
    fn connect() -> Result<Option<KvLink>, String> {
        match Channel::connect(KV_CONNECTION) {
            Ok(channel) => Ok(Some(KvLink { channel: Some(channel) })),
            Err(e) if e.code == ErrorCode::NoSuchConnection => Ok(None),
            Err(e) if e.code == ErrorCode::Unavailable => {
                // The store has already ended; the requests for it will say so.
                eprintln!("httpd: the key-value store (connection {KV_CONNECTION:?}) is not available: {e}");
                Ok(Some(KvLink { channel: None }))
            }
            Err(e) => Err(format!("cannot connect {KV_CONNECTION:?}: {e} ({:?})", e.code)),
        }
    }
}

impl kv::Store for KvLink {
    fn call(&mut self, request: &str) -> Result<String, CallError> {
        let Some(channel) = &self.channel else {
            return Err(CallError::Gone("not connected".into()));
        };
        match channel.call(request.as_bytes()) {
            Ok(reply) => Ok(String::from_utf8_lossy(&reply).into_owned()),
            Err(e) if e.code == ErrorCode::PeerClosed => {
                self.channel = None;
                Err(CallError::Gone(e.message))
            }
            Err(e) => Err(CallError::Failed(format!("{e} ({:?})", e.code))),
        }
    }

    fn reconnect(&mut self) -> Result<(), String> {
        self.channel = None;
        eprintln!("httpd: the key-value store has gone; connecting {KV_CONNECTION:?} again");
        let channel = Channel::connect(KV_CONNECTION).map_err(|e| format!("{e} ({:?})", e.code))?;
        self.channel = Some(channel);
        Ok(())
    }
}

/// The connection to the network driver.
struct Link {
    channel: Channel,
}

impl Link {
    fn connect() -> Result<Link, String> {
        let channel = Channel::connect(net::CONNECTION)
            .map_err(|e| format!("cannot connect {:?}: {e} ({:?})", net::CONNECTION, e.code))?;
        Ok(Link { channel })
    }

    fn call(&self, request: &Request, what: &str) -> Result<Response, String> {
        let reply = self.channel.call(&request.encode()).map_err(|e| format!("{what}: {e} ({:?})", e.code))?;
        match Response::decode(&reply) {
            Ok(Response::Error { code, message }) => Err(format!("{what}: the driver answered {code:?}: {message}")),
            Ok(response) => Ok(response),
            Err(e) => Err(format!("{what}: malformed answer from the driver: {e}")),
        }
    }

    /// The card's MAC address.
    fn mac(&self) -> Result<[u8; 6], String> {
        match self.call(&Request::Info, "asking the driver for the card's address")? {
            Response::Info { mac, .. } => Ok(mac),
            other => Err(format!("the driver answered an info request with {other:?}")),
        }
    }

    /// Sends `tx`, returns the frames received, waiting up to `wait` for one.
    fn exchange(&self, tx: Vec<Vec<u8>>, wait: Duration) -> Result<Vec<Vec<u8>>, String> {
        let wait_ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        match self.call(&Request::Exchange { tx, wait_ns }, "exchanging frames with the driver")? {
            Response::Frames(frames) => Ok(frames),
            other => Err(format!("the driver answered an exchange with {other:?}")),
        }
    }
}

/// A seed for TCP initial sequence numbers, from the system's randomness.
fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x6d69_6361);
    hasher.finish()
}

fn run(max_requests: Option<u64>) -> Result<u64, String> {
    let link = Link::connect()?;
    let store = KvLink::connect()?;
    let mac = link.mac()?;
    let start = std::time::Instant::now();
    let clock = || Instant::from_micros(i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX));
    let config =
        NetConfig { mac, address: ADDRESS, prefix_len: PREFIX_LEN, gateway: GATEWAY, random_seed: random_seed() };
    let mut server = Server::new(config, SOCKETS, clock()).map_err(|e| format!("cannot set up the interface: {e}"))?;
    if let Some(store) = store {
        println!("httpd: key-value store on connection {KV_CONNECTION:?}");
        server = server.with_store(Box::new(store));
    }
    println!("httpd: listening on {ADDRESS}:{}", server::PORT);
    let mut accepting = true;
    loop {
        let now = clock();
        for served in server.poll(now) {
            let peer = served.peer.map_or_else(|| "?".to_string(), |p| p.to_string());
            println!("httpd: {peer} \"{}\" {}", served.request, served.status);
        }
        if let Some(max) = max_requests
            && server.served() >= max
        {
            if accepting {
                server.stop_accepting();
                accepting = false;
            }
            if server.is_quiet() {
                // The last acknowledgements go out before the end.
                while !server.device.tx.is_empty() {
                    link.exchange(server.device.take_batch("httpd"), Duration::ZERO)?;
                }
                return Ok(server.served());
            }
        }
        let tx = server.device.take_batch("httpd");
        let wait = if server.device.tx.is_empty() {
            server.poll_delay(now).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
        } else {
            Duration::ZERO
        };
        let rx = link.exchange(tx, wait)?;
        server.device.rx.extend(rx);
    }
}

fn main() {
    let max_requests = match std::env::args().nth(1) {
        None => None,
        Some(arg) => match arg.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                eprintln!("httpd: MAX_REQUESTS must be a positive number, not {arg:?} (usage: httpd [MAX_REQUESTS])");
                exit(2);
            }
        },
    };
    match run(max_requests) {
        Ok(served) => println!("httpd: served {served} request(s)"),
        Err(e) => {
            eprintln!("httpd: {e}");
            exit(1);
        }
    }
}
