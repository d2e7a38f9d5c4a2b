//! `tcp-echo PORT N`: a TCP echo server on the network stack component, spoken to through the
//! sockets protocol ([`mica_device::sockets`]) on the manifest connection `sockets`, as the
//! runtime's `wasi:sockets` will speak it for unmodified programs.
//!
//! It opens a session, listens on `PORT`, and serves `N` connections one after another: each
//! gets back every byte it sends, until it shuts its sending down; then the connection is
//! closed. It waits with held polls, never by polling in a loop. Prints `tcp-echo: listening on
//! port PORT`, then `tcp-echo: connection I from ADDRESS` and `tcp-echo: connection I echoed B
//! bytes` for each.
//!
//! `tcp-ask PORT`: the other side, from inside the machine: a connection to another component's
//! listener through the stack's own address (`localhost`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use mica::ipc::{Channel, Message};
use mica_device::sockets::{self, Family, Interest, Request, Response, SocketErrorCode, SocketId};

use crate::context;

/// A session with the network stack.
struct Session {
    channel: Channel,
}

impl Session {
    fn open() -> Result<Session, String> {
        let manifest = Channel::connect(sockets::CONNECTION).map_err(context("connect sockets"))?;
        let reply =
            manifest.call_message(Message::bytes(Request::Open.encode()), None).map_err(context("open a session"))?;
        match (Response::decode(&reply.bytes), <[Channel; 1]>::try_from(reply.handles)) {
            (Ok(Response::Session), Ok([channel])) => Ok(Session { channel }),
            (answer, handles) => Err(format!(
                "opening a session was answered {answer:?} with {} handle(s)",
                handles.map_or_else(|h| h.len(), |_| 1)
            )),
        }
    }

    /// The stack's answer to `request`; an error answer is `Err` with its code and message.
    fn ask(&self, request: &Request) -> Result<Response, (SocketErrorCode, String)> {
        let reply = self
            .channel
            .call(&request.encode())
            .map_err(|e| (SocketErrorCode::Unknown, format!("the call failed: {e}")))?;
        match Response::decode(&reply) {
            Ok(Response::Error { code, message }) => Err((code, message)),
            Ok(response) => Ok(response),
            Err(e) => Err((SocketErrorCode::Unknown, format!("a malformed answer: {e}"))),
        }
    }

    /// Waits until `socket` is ready for `interest`.
    fn wait(&self, socket: SocketId, interest: Interest) -> Result<(), String> {
        match self.ask(&Request::Poll { interests: vec![(socket, interest)], timeout_ns: None }) {
            Ok(Response::Ready(_)) => Ok(()),
            other => Err(format!("a poll was answered {other:?}")),
        }
    }
}

fn failed(what: &str) -> impl FnOnce((SocketErrorCode, String)) -> String + '_ {
    move |(code, message)| format!("{what}: {code:?}: {message}")
}

pub fn echo(port: u16, connections: u64) -> Result<(), String> {
    let session = Session::open()?;
    let listener = match session.ask(&Request::Tcp(Family::V4)).map_err(failed("make a socket"))? {
        Response::Socket(id) => id,
        other => return Err(format!("making a socket was answered {other:?}")),
    };
    let address = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    session.ask(&Request::Bind { socket: listener, address }).map_err(failed("bind"))?;
    session.ask(&Request::Listen { socket: listener, backlog: 4 }).map_err(failed("listen"))?;
    println!("tcp-echo: listening on port {port}");
    for n in 1..=connections {
        let (connection, remote) = loop {
            match session.ask(&Request::Accept { socket: listener }) {
                Ok(Response::Accepted { socket, remote, .. }) => break (socket, remote),
                Err((SocketErrorCode::WouldBlock, _)) => session.wait(listener, Interest::Readable)?,
                other => return Err(format!("accept was answered {other:?}")),
            }
        };
        println!("tcp-echo: connection {n} from {remote}");
        let mut echoed = 0usize;
        loop {
            match session.ask(&Request::Receive { socket: connection, max: 65536 }) {
                Ok(Response::Data(data)) => {
                    let mut sent = 0;
                    while sent < data.len() {
                        match session.ask(&Request::Send { socket: connection, data: data[sent..].to_vec() }) {
                            Ok(Response::Sent(count)) => sent += count as usize,
                            Err((SocketErrorCode::WouldBlock, _)) => session.wait(connection, Interest::Writable)?,
                            other => return Err(format!("send was answered {other:?}")),
                        }
                    }
                    echoed += sent;
                }
                Err((SocketErrorCode::Closed, _)) => break,
                Err((SocketErrorCode::WouldBlock, _)) => session.wait(connection, Interest::Readable)?,
                other => return Err(format!("receive was answered {other:?}")),
            }
        }
        session.ask(&Request::Close { socket: connection }).map_err(failed("close"))?;
        println!("tcp-echo: connection {n} echoed {echoed} bytes");
    }
    Ok(())
}

/// The bytes `tcp-ask` sends.
const ASK: &[u8] = b"from another component of this machine";

/// `tcp-ask PORT`: connects to `localhost:PORT` through the stack (another component's
/// listener), sends a line, ends its sending, and checks that the same bytes come back before
/// the server closes. A refused connect (the server not listening yet) is tried again, every
/// 50 ms for 10 s. Prints `tcp-ask: echoed back whole from ADDRESS`.
pub fn ask(port: u16) -> Result<(), String> {
    let session = Session::open()?;
    let localhost = match session.ask(&Request::Resolve { name: "localhost".into() }).map_err(failed("resolve"))? {
        Response::Resolved(ips) if !ips.is_empty() => ips[0],
        other => return Err(format!("localhost resolved to {other:?}")),
    };
    let address = SocketAddr::new(localhost, port);
    let mut tries = 0;
    let socket = loop {
        let socket = match session.ask(&Request::Tcp(Family::V4)).map_err(failed("make a socket"))? {
            Response::Socket(id) => id,
            other => return Err(format!("making a socket was answered {other:?}")),
        };
        session.ask(&Request::Connect { socket, address }).map_err(failed("connect"))?;
        let outcome = loop {
            match session.ask(&Request::Connected { socket }) {
                Err((SocketErrorCode::WouldBlock, _)) => session.wait(socket, Interest::Writable)?,
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(_) => break socket,
            Err((SocketErrorCode::ConnectionRefused, _)) if tries < 200 => {
                tries += 1;
                session.ask(&Request::Close { socket }).map_err(failed("close"))?;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(failed("connect")(e)),
        }
    };
    let mut sent = 0;
    while sent < ASK.len() {
        match session.ask(&Request::Send { socket, data: ASK[sent..].to_vec() }) {
            Ok(Response::Sent(count)) => sent += count as usize,
            Err((SocketErrorCode::WouldBlock, _)) => session.wait(socket, Interest::Writable)?,
            other => return Err(format!("send was answered {other:?}")),
        }
    }
    session.ask(&Request::Shutdown { socket, how: sockets::Shutdown::Send }).map_err(failed("shutdown"))?;
    let mut back = Vec::new();
    loop {
        match session.ask(&Request::Receive { socket, max: 65536 }) {
            Ok(Response::Data(data)) => back.extend(data),
            Err((SocketErrorCode::Closed, _)) => break,
            Err((SocketErrorCode::WouldBlock, _)) => session.wait(socket, Interest::Readable)?,
            other => return Err(format!("receive was answered {other:?}")),
        }
    }
    if back != ASK {
        return Err(format!("{:?} came back for {:?}", String::from_utf8_lossy(&back), String::from_utf8_lossy(ASK)));
    }
    session.ask(&Request::Close { socket }).map_err(failed("close"))?;
    println!("tcp-ask: echoed back whole from {address}");
    Ok(())
}
