//! The network stack: one smoltcp interface over a [`FrameDevice`], and the TCP sockets of
//! every client session, answering the sockets protocol ([`mica_device::sockets`]). Nothing here
//! talks IPC: the caller moves frames and requests, so the whole stack runs in host tests.
//!
//! A connection to the stack's own address (or to `127.0.0.0/8`, or `localhost`, which stand for
//! it) is one between two of its clients: the frames it sends itself go straight back in
//! ([`Stack::poll`]), never to the driver.
//!
//! UDP sockets (`udp.rs`) are smoltcp UDP sockets, bound to a port at their first bind or send.
//!
//! A listener is a few smoltcp sockets listening on its port (its backlog, at most
//! [`MAX_BACKLOG`]): smoltcp connects a listening socket itself when a SYN comes, so `accept`
//! takes one that has connected and puts a fresh listening socket in its place. A closed
//! connection's socket stays in the interface until its FIN has gone out and been answered
//! (or the close times out), then goes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use mica_device::sockets::{
    Family, Interest, MAX_DATA_BYTES, Request, Response, Shutdown, SocketErrorCode as Code, SocketId,
};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as NetDuration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::device::{FrameDevice, interface};

mod udp;
pub use crate::device::{NetConfig, SetupError};
use udp::Udp;

/// A listener's connections waiting to be accepted, at most.
pub const MAX_BACKLOG: u32 = 8;

/// The most smoltcp sockets the stack holds (listeners count their backlog).
pub const MAX_SOCKETS: usize = 256;

/// Each TCP socket's receive and transmit buffer.
const BUFFER_BYTES: usize = 16 * 1024;

/// The ports `bind` to port 0 and `connect` without a bind take from (IANA's dynamic range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Rounds of frames the stack sends itself that one [`Stack::poll`] carries at most.
const MAX_LOOPBACK_ROUNDS: usize = 8;

/// The EtherType of ARP.
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// How long an unanswered connection or close may take before smoltcp gives up on it.
const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// A session: one client's sockets. Its number is the caller's to choose (the stack's handle
/// of the session's channel end).
pub type SessionId = u32;

/// A TCP socket of a session, by what it has become.
#[derive(Debug)]
enum Tcp {
    /// Made, nothing else.
    Fresh,
    /// Bound to a local port; `any` when bound to the unspecified address (`0.0.0.0`), which
    /// its local address then says, as a POSIX `getsockname` does.
    Bound { port: u16, any: bool },
    /// Listening on `port`, with its backlog of smoltcp sockets.
    Listening { port: u16, any: bool, backlog: Vec<SocketHandle> },
    /// Connecting from `port`.
    Connecting { port: u16, handle: SocketHandle },
    /// A connection (made here or accepted); `receive_shut` after a shutdown of receiving.
    Connected { port: Option<u16>, handle: SocketHandle, receive_shut: bool },
    /// A connect that failed: nothing more to do with it.
    Failed,
}

/// One client's sockets.
#[derive(Debug, Default)]
struct Session {
    sockets: BTreeMap<SocketId, Tcp>,
    udp: BTreeMap<SocketId, Udp>,
    next: SocketId,
}

impl Session {
    /// A number for a new socket of either kind.
    fn take_id(&mut self) -> SocketId {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// The stack. See the module documentation.
pub struct Stack {
    /// The frames in and out.
    pub device: FrameDevice,
    iface: Interface,
    set: SocketSet<'static>,
    address: Ipv4Addr,
    mac: [u8; 6],
    sessions: BTreeMap<SessionId, Session>,
    /// Local TCP ports taken by a bind, a listener or a connection.
    ports: BTreeSet<u16>,
    /// Local UDP ports taken.
    udp_ports: BTreeSet<u16>,
    next_ephemeral: u16,
    /// Sockets closed by their session, kept until their connection has ended.
    closing: Vec<SocketHandle>,
}

fn error(code: Code, message: impl Into<String>) -> Response {
    Response::error(code, message)
}

fn net_duration(d: Duration) -> NetDuration {
    NetDuration::from_micros(d.as_micros().try_into().unwrap_or(u64::MAX))
}

fn std_address(endpoint: IpEndpoint) -> SocketAddr {
    match endpoint.addr {
        IpAddress::Ipv4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, endpoint.port)),
    }
}

/// Whether a smoltcp socket has a connection for `accept` to take.
fn has_connected(socket: &tcp::Socket) -> bool {
    !matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived)
}

impl Stack {
    /// An interface with `config`, no sockets yet.
    pub fn new(config: NetConfig, now: Instant) -> Result<Stack, SetupError> {
        let mut device = FrameDevice::default();
        let iface = interface(&config, &mut device, now)?;
        let first = EPHEMERAL.start() + (config.random_seed % 4096) as u16;
        Ok(Stack {
            device,
            iface,
            set: SocketSet::new(Vec::new()),
            address: config.address,
            mac: config.mac,
            sessions: BTreeMap::new(),
            ports: BTreeSet::new(),
            udp_ports: BTreeSet::new(),
            next_ephemeral: first,
            closing: Vec::new(),
        })
    }

    /// The interface's address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Processes the frames in `device.rx`, moves every connection on, and queues what is to be
    /// sent in `device.tx`; lets go of closed connections whose socket was closed.
    pub fn poll(&mut self, now: Instant) {
        // What the stack sends itself goes round again at once, a few times at most per call
        // (each round answers the last: ARP, then SYN, SYN-ACK, ACK and data).
        for _ in 0..MAX_LOOPBACK_ROUNDS {
            self.iface.poll(now, &mut self.device, &mut self.set);
            if !self.loop_back() {
                break;
            }
        }
        let set = &mut self.set;
        self.closing.retain(|&handle| {
            let done = matches!(set.get::<tcp::Socket>(handle).state(), tcp::State::Closed | tcp::State::TimeWait);
            if done {
                set.remove(handle);
            }
            !done
        });
    }

    /// Moves the frames the stack sent to itself from `device.tx` to `device.rx`: those sent to
    /// its own MAC address, and its own ARP requests for its own IP address (smoltcp answers
    /// those itself, which teaches it its own MAC address). Whether it moved any.
    fn loop_back(&mut self) -> bool {
        let (mac, ip) = (self.mac, self.address.octets());
        let mut moved = false;
        let mut out = std::collections::VecDeque::with_capacity(self.device.tx.len());
        for frame in self.device.tx.drain(..) {
            let to_me = frame.len() >= 14 && frame[0..6] == mac;
            let arp_for_me =
                frame.len() >= 42 && frame[12..14] == ETHERTYPE_ARP && frame[6..12] == mac && frame[38..42] == ip;
            if to_me || arp_for_me {
                self.device.rx.push_back(frame);
                moved = true;
            } else {
                out.push_back(frame);
            }
        }
        self.device.tx = out;
        moved
    }

    /// How long until the interface needs polling again if no frame comes (`None`: no timer).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface.poll_delay(now, &self.set).map(|d| Duration::from_micros(d.total_micros()))
    }

    /// A new session, with no sockets.
    pub fn open_session(&mut self, session: SessionId) {
        self.sessions.insert(session, Session::default());
    }

    /// The session has ended (its client has gone): its connections are reset and its ports
    /// freed.
    pub fn close_session(&mut self, session: SessionId) {
        let Some(gone) = self.sessions.remove(&session) else { return };
        for (_, tcp) in gone.sockets {
            self.release(tcp, true);
        }
        for (_, udp) in gone.udp {
            self.release_udp(udp);
        }
    }

    /// How many sessions are open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Lets go of a socket: its port, and its smoltcp sockets (a connection is closed
    /// gracefully, or reset when `abort`).
    fn release(&mut self, tcp: Tcp, abort: bool) {
        match tcp {
            Tcp::Fresh | Tcp::Failed => {}
            Tcp::Bound { port, .. } => {
                self.ports.remove(&port);
            }
            Tcp::Listening { port, backlog, .. } => {
                self.ports.remove(&port);
                for handle in backlog {
                    self.set.get_mut::<tcp::Socket>(handle).abort();
                    self.closing.push(handle);
                }
            }
            Tcp::Connecting { port, handle } | Tcp::Connected { port: Some(port), handle, .. } => {
                self.ports.remove(&port);
                self.end_connection(handle, abort);
            }
            Tcp::Connected { port: None, handle, .. } => self.end_connection(handle, abort),
        }
    }

    fn end_connection(&mut self, handle: SocketHandle, abort: bool) {
        let socket = self.set.get_mut::<tcp::Socket>(handle);
        if abort {
            socket.abort();
        } else {
            socket.close();
        }
        self.closing.push(handle);
    }

    /// A free ephemeral port.
    fn ephemeral(&mut self) -> Option<u16> {
        let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let port = self.next_ephemeral;
            self.next_ephemeral = if port == *EPHEMERAL.end() { *EPHEMERAL.start() } else { port + 1 };
            if !self.ports.contains(&port) && !self.udp_ports.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    /// A new smoltcp TCP socket, if the stack may hold one more.
    fn new_socket(&mut self) -> Result<SocketHandle, Response> {
        if self.set.iter().count() >= MAX_SOCKETS {
            return Err(error(Code::NewSocketLimit, format!("the stack holds {MAX_SOCKETS} sockets, its most")));
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; BUFFER_BYTES]),
        );
        socket.set_timeout(Some(net_duration(TCP_TIMEOUT)));
        socket.set_nagle_enabled(false);
        Ok(self.set.add(socket))
    }

    /// A socket listening on `port`.
    fn listening_socket(&mut self, port: u16) -> Result<SocketHandle, Response> {
        let handle = self.new_socket()?;
        if let Err(e) = self.set.get_mut::<tcp::Socket>(handle).listen(port) {
            self.set.remove(handle);
            return Err(error(Code::Unknown, format!("smoltcp refused to listen on port {port}: {e}")));
        }
        Ok(handle)
    }

    /// Answers `request` from `session`. A [`Request::Poll`] is not answered here: the caller
    /// holds it and asks [`ready`](Self::ready) after each round.
    pub fn handle(&mut self, session: SessionId, request: Request) -> Response {
        if !self.sessions.contains_key(&session) {
            return error(Code::BadRequest, format!("session {session} is not open"));
        }
        match request {
            Request::Open => {
                error(Code::BadRequest, "a session is opened on the manifest connection, not in a session")
            }
            Request::Tcp(Family::V4) => {
                let Some(s) = self.sessions.get_mut(&session) else { return error(Code::BadRequest, "no session") };
                let id = s.take_id();
                s.sockets.insert(id, Tcp::Fresh);
                Response::Socket(id)
            }
            Request::Udp(Family::V4) => {
                let Some(s) = self.sessions.get_mut(&session) else { return error(Code::BadRequest, "no session") };
                let id = s.take_id();
                s.udp.insert(id, Udp::Fresh);
                Response::Socket(id)
            }
            Request::Tcp(Family::V6) | Request::Udp(Family::V6) => {
                error(Code::NotSupported, "this network stack has IPv4 only")
            }
            Request::Bind { socket, address } if self.is_udp(session, socket) => {
                self.udp_bind(session, socket, address)
            }
            Request::Close { socket } if self.is_udp(session, socket) => self.udp_close(session, socket),
            Request::Addresses { socket } if self.is_udp(session, socket) => self.udp_addresses(session, socket),
            Request::SendTo { socket, address, data } => self.send_to(session, socket, address, &data),
            Request::ReceiveFrom { socket } => self.receive_from(session, socket),
            Request::Poll { .. } => error(Code::BadRequest, "a poll is held by the caller, not handled"),
            Request::Resolve { name } if name.eq_ignore_ascii_case("localhost") => {
                Response::Resolved(vec![IpAddr::V4(self.address)])
            }
            Request::Resolve { name } => match name.parse::<IpAddr>() {
                Ok(ip) => Response::Resolved(vec![ip]),
                Err(_) => error(
                    Code::NameUnresolvable,
                    format!("{name:?} is not an IP address, and this stack knows no names yet"),
                ),
            },
            Request::Bind { socket, address } => self.bind(session, socket, address),
            Request::Listen { socket, backlog } => self.listen(session, socket, backlog),
            Request::Accept { socket } => self.accept(session, socket),
            Request::Connect { socket, address } => self.connect(session, socket, address),
            Request::Connected { socket } => self.connected(session, socket),
            Request::Send { socket, data } => self.send(session, socket, &data),
            Request::Receive { socket, max } => self.receive(session, socket, max),
            Request::Shutdown { socket, how } => self.shutdown(session, socket, how),
            Request::Close { socket } => {
                let Some(tcp) = self.sessions.get_mut(&session).and_then(|s| s.sockets.remove(&socket)) else {
                    return bad_socket(socket);
                };
                self.release(tcp, false);
                Response::Done
            }
            Request::Addresses { socket } => self.addresses(session, socket),
        }
    }

    fn socket(&mut self, session: SessionId, socket: SocketId) -> Result<&mut Tcp, Response> {
        if self.is_udp(session, socket) {
            return Err(error(Code::InvalidState, format!("socket {socket} is a UDP socket")));
        }
        self.sessions.get_mut(&session).and_then(|s| s.sockets.get_mut(&socket)).ok_or_else(|| bad_socket(socket))
    }

    fn bind(&mut self, session: SessionId, socket: SocketId, address: SocketAddr) -> Response {
        match self.socket(session, socket) {
            Ok(Tcp::Fresh) => {}
            Ok(_) => return error(Code::InvalidState, format!("socket {socket} is bound already")),
            Err(e) => return e,
        }
        let v4 = match self.bindable(address) {
            Ok(v4) => v4,
            Err(e) => return e,
        };
        let port = match v4.port() {
            0 => match self.ephemeral() {
                Some(port) => port,
                None => return error(Code::AddressInUse, "every ephemeral port is taken"),
            },
            port if self.ports.contains(&port) => {
                return error(Code::AddressInUse, format!("port {port} is taken by another socket"));
            }
            port => port,
        };
        self.ports.insert(port);
        if let Ok(tcp) = self.socket(session, socket) {
            *tcp = Tcp::Bound { port, any: v4.ip().is_unspecified() };
        }
        Response::Done
    }

    /// `address` if a socket may bind to it: IPv4, and this machine's address or the
    /// unspecified one.
    fn bindable(&self, address: SocketAddr) -> Result<SocketAddrV4, Response> {
        let SocketAddr::V4(v4) = address else {
            return Err(error(Code::InvalidArgument, format!("{address} is not an IPv4 address (the socket is IPv4)")));
        };
        if !v4.ip().is_unspecified() && *v4.ip() != self.address {
            return Err(error(
                Code::AddressNotBindable,
                format!("{} is not this machine's address ({} is)", v4.ip(), self.address),
            ));
        }
        Ok(v4)
    }

    fn listen(&mut self, session: SessionId, socket: SocketId, backlog: u32) -> Response {
        let (port, any) = match self.socket(session, socket) {
            Ok(Tcp::Bound { port, any }) => (*port, *any),
            Ok(Tcp::Fresh) => return error(Code::InvalidState, format!("socket {socket} is not bound: bind it first")),
            Ok(_) => return error(Code::InvalidState, format!("socket {socket} cannot listen now")),
            Err(e) => return e,
        };
        let mut sockets = Vec::new();
        for _ in 0..backlog.clamp(1, MAX_BACKLOG) {
            match self.listening_socket(port) {
                Ok(handle) => sockets.push(handle),
                Err(e) => {
                    for handle in sockets {
                        self.set.remove(handle);
                    }
                    return e;
                }
            }
        }
        if let Ok(tcp) = self.socket(session, socket) {
            *tcp = Tcp::Listening { port, any, backlog: sockets };
        }
        Response::Done
    }

    fn accept(&mut self, session: SessionId, socket: SocketId) -> Response {
        let Some(s) = self.sessions.get_mut(&session) else { return error(Code::BadRequest, "no session") };
        let (port, taken) = match s.sockets.get_mut(&socket) {
            Some(Tcp::Listening { port, backlog, .. }) => {
                let set = &self.set;
                let Some(i) = backlog.iter().position(|&h| has_connected(set.get::<tcp::Socket>(h))) else {
                    return error(Code::WouldBlock, "no connection to accept yet");
                };
                (*port, backlog.swap_remove(i))
            }
            Some(_) => return error(Code::InvalidState, format!("socket {socket} is not listening")),
            None => return bad_socket(socket),
        };
        // A fresh socket takes the accepted one's place in the backlog (if the stack can hold
        // it; else the backlog is one shorter until a later accept).
        if let Ok(fresh) = self.listening_socket(port)
            && let Ok(Tcp::Listening { backlog, .. }) = self.socket(session, socket)
        {
            backlog.push(fresh);
        }
        let connection = self.set.get::<tcp::Socket>(taken);
        let local = connection.local_endpoint().map(std_address);
        let remote = connection.remote_endpoint().map(std_address);
        let Some(s) = self.sessions.get_mut(&session) else { return error(Code::BadRequest, "no session") };
        let id = s.take_id();
        s.sockets.insert(id, Tcp::Connected { port: None, handle: taken, receive_shut: false });
        match (local, remote) {
            (Some(local), Some(remote)) => Response::Accepted { socket: id, local, remote },
            // Reset between its connect and the accept: accepted all the same, and its first
            // receive says so.
            _ => {
                let unspecified = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                Response::Accepted { socket: id, local: local.unwrap_or(unspecified), remote: unspecified }
            }
        }
    }

    fn connect(&mut self, session: SessionId, socket: SocketId, address: SocketAddr) -> Response {
        let bound = match self.socket(session, socket) {
            Ok(Tcp::Fresh) => None,
            Ok(Tcp::Bound { port, .. }) => Some(*port),
            Ok(_) => return error(Code::InvalidState, format!("socket {socket} cannot connect now")),
            Err(e) => return e,
        };
        let SocketAddr::V4(v4) = address else {
            return error(Code::InvalidArgument, format!("{address} is not an IPv4 address (the socket is IPv4)"));
        };
        // The loopback network is this machine: its own address.
        let ip = if v4.ip().is_loopback() { self.address } else { *v4.ip() };
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || v4.port() == 0 {
            return error(Code::InvalidArgument, format!("{address} is not an address to connect to"));
        }
        let port = match bound.or_else(|| self.ephemeral()) {
            Some(port) => port,
            None => return error(Code::AddressInUse, "every ephemeral port is taken"),
        };
        let handle = match self.new_socket() {
            Ok(handle) => handle,
            Err(e) => return e,
        };
        let remote = IpEndpoint::new(IpAddress::Ipv4(ip), v4.port());
        if let Err(e) = self.set.get_mut::<tcp::Socket>(handle).connect(self.iface.context(), remote, port) {
            self.set.remove(handle);
            return error(Code::RemoteUnreachable, format!("cannot connect to {address}: {e}"));
        }
        self.ports.insert(port);
        if let Ok(tcp) = self.socket(session, socket) {
            *tcp = Tcp::Connecting { port, handle };
        }
        Response::Done
    }

    fn connected(&mut self, session: SessionId, socket: SocketId) -> Response {
        let (port, handle) = match self.socket(session, socket) {
            Ok(Tcp::Connecting { port, handle }) => (*port, *handle),
            Ok(_) => return error(Code::NotInProgress, format!("socket {socket} is not connecting")),
            Err(e) => return e,
        };
        let connection = self.set.get::<tcp::Socket>(handle);
        match connection.state() {
            tcp::State::SynSent | tcp::State::SynReceived => error(Code::WouldBlock, "the connection is being made"),
            tcp::State::Closed => {
                self.set.remove(handle);
                self.ports.remove(&port);
                if let Ok(tcp) = self.socket(session, socket) {
                    *tcp = Tcp::Failed;
                }
                error(Code::ConnectionRefused, "the remote end refused the connection (or did not answer)")
            }
            _ => {
                let local = connection.local_endpoint().map(std_address);
                let remote = connection.remote_endpoint().map(std_address);
                if let Ok(tcp) = self.socket(session, socket) {
                    *tcp = Tcp::Connected { port: Some(port), handle, receive_shut: false };
                }
                Response::Endpoints { local, remote }
            }
        }
    }

    /// The connection behind `socket`, and whether its receiving was shut down.
    fn connection(&mut self, session: SessionId, socket: SocketId) -> Result<(SocketHandle, bool), Response> {
        match self.socket(session, socket)? {
            Tcp::Connected { handle, receive_shut, .. } => Ok((*handle, *receive_shut)),
            _ => Err(error(Code::InvalidState, format!("socket {socket} is not connected"))),
        }
    }

    fn send(&mut self, session: SessionId, socket: SocketId, data: &[u8]) -> Response {
        let handle = match self.connection(session, socket) {
            Ok((handle, _)) => handle,
            Err(e) => return e,
        };
        let connection = self.set.get_mut::<tcp::Socket>(handle);
        if connection.state() == tcp::State::Closed {
            return error(Code::ConnectionReset, "the connection has ended");
        }
        if !connection.may_send() {
            return error(Code::InvalidState, "sending was shut down on this connection");
        }
        match connection.send_slice(data) {
            Ok(0) if !data.is_empty() => error(Code::WouldBlock, "the send buffer is full"),
            Ok(sent) => Response::Sent(sent as u32),
            Err(e) => error(Code::InvalidState, format!("cannot send: {e}")),
        }
    }

    fn receive(&mut self, session: SessionId, socket: SocketId, max: u32) -> Response {
        let (handle, receive_shut) = match self.connection(session, socket) {
            Ok(found) => found,
            Err(e) => return e,
        };
        if receive_shut {
            return error(Code::Closed, "receiving was shut down on this connection");
        }
        let connection = self.set.get_mut::<tcp::Socket>(handle);
        let max = (max as usize).min(MAX_DATA_BYTES);
        if connection.can_recv() && max > 0 {
            let mut data = vec![0; max];
            return match connection.recv_slice(&mut data) {
                Ok(n) => {
                    data.truncate(n);
                    Response::Data(data)
                }
                Err(e) => error(Code::ConnectionReset, format!("cannot receive: {e}")),
            };
        }
        if !connection.may_recv() {
            return error(Code::Closed, "the peer has sent everything it will");
        }
        error(Code::WouldBlock, "no data yet")
    }

    fn shutdown(&mut self, session: SessionId, socket: SocketId, how: Shutdown) -> Response {
        let handle = match self.connection(session, socket) {
            Ok((handle, _)) => handle,
            Err(e) => return e,
        };
        if matches!(how, Shutdown::Send | Shutdown::Both) {
            self.set.get_mut::<tcp::Socket>(handle).close();
        }
        if matches!(how, Shutdown::Receive | Shutdown::Both)
            && let Ok(Tcp::Connected { receive_shut, .. }) = self.socket(session, socket)
        {
            *receive_shut = true;
        }
        Response::Done
    }

    fn addresses(&mut self, session: SessionId, socket: SocketId) -> Response {
        let address = self.address;
        let local = |port: u16| Some(SocketAddr::V4(SocketAddrV4::new(address, port)));
        let (port, handle) = match self.socket(session, socket) {
            Ok(Tcp::Fresh | Tcp::Failed) => return Response::Endpoints { local: None, remote: None },
            Ok(Tcp::Bound { port, any: true } | Tcp::Listening { port, any: true, .. }) => {
                let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, *port));
                return Response::Endpoints { local: Some(local), remote: None };
            }
            Ok(Tcp::Bound { port, .. } | Tcp::Listening { port, .. }) => (Some(*port), None),
            Ok(Tcp::Connecting { port, handle }) => (Some(*port), Some(*handle)),
            Ok(Tcp::Connected { port, handle, .. }) => (*port, Some(*handle)),
            Err(e) => return e,
        };
        let connection = handle.map(|h| self.set.get::<tcp::Socket>(h));
        let remote = connection.and_then(|c| c.remote_endpoint()).map(std_address);
        let local = connection.and_then(|c| c.local_endpoint()).map(std_address).or_else(|| port.and_then(local));
        Response::Endpoints { local, remote }
    }

    /// The positions in `interests` of the sockets of `session` that are ready for what is
    /// asked: an operation on them would not answer `would-block`. A socket the session does
    /// not have is ready (its operation fails at once).
    pub fn ready(&self, session: SessionId, interests: &[(SocketId, Interest)]) -> Vec<u32> {
        let sockets = self.sessions.get(&session).map(|s| &s.sockets);
        let mut ready = Vec::new();
        let udp = self.sessions.get(&session).map(|s| &s.udp);
        for (position, &(socket, interest)) in (0u32..).zip(interests) {
            if let Some(u) = udp.and_then(|u| u.get(&socket)) {
                if self.udp_ready(u, interest) {
                    ready.push(position);
                }
                continue;
            }
            let is_ready = match sockets.and_then(|s| s.get(&socket)) {
                None | Some(Tcp::Fresh | Tcp::Bound { .. } | Tcp::Failed) => true,
                Some(Tcp::Listening { backlog, .. }) => {
                    interest == Interest::Writable
                        || backlog.iter().any(|&h| has_connected(self.set.get::<tcp::Socket>(h)))
                }
                Some(Tcp::Connecting { handle, .. }) => !matches!(
                    self.set.get::<tcp::Socket>(*handle).state(),
                    tcp::State::SynSent | tcp::State::SynReceived
                ),
                Some(Tcp::Connected { handle, receive_shut, .. }) => {
                    let c = self.set.get::<tcp::Socket>(*handle);
                    match interest {
                        Interest::Readable => *receive_shut || c.can_recv() || !c.may_recv(),
                        Interest::Writable => c.can_send() || !c.may_send(),
                    }
                }
            };
            if is_ready {
                ready.push(position);
            }
        }
        ready
    }
}

fn bad_socket(socket: SocketId) -> Response {
    error(Code::BadSocket, format!("this session has no socket {socket}"))
}
