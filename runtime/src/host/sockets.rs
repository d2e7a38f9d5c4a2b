//! `wasi:sockets` (TCP, UDP, name lookup), forwarded to a network stack component over the
//! sockets protocol ([`mica_device::sockets`]).
//!
//! A component reaches the network only through its manifest's `network` grant
//! ([`NetworkGrant`]): the connection to the stack, and the ports it may listen on (TCP) or bind
//! a UDP socket to (port 0, an ephemeral port, is always allowed for UDP). Without a grant every
//! socket operation answers `access-denied`. There is no network code here: the
//! first socket opens a session with the stack, and every operation becomes a request on it.
//!
//! What WASI splits into `start-` and `finish-` is one request here, made by `start-`; `finish-`
//! reports it (`finish-connect` asks whether the connection is made). The stack never waits;
//! waiting is `wasi:io/poll`, which becomes one held `poll` request naming every socket a
//! program waits on, with the earliest clock deadline among its pollables as its timeout.
//!
//! A connection's output stream keeps what a program wrote and the stack could not take yet
//! (at most one request's worth, [`WRITE_BUDGET`]); it is sent as the stack takes it, and
//! dropping the stream or shutting down sending first sends all of it: a write that returned
//! is not lost. If the stack restarts, the sockets of its old session fail (`invalid-state`,
//! streams closed) and new sockets open a new session.
//!
//! Options the stack does not have (keep-alive, hop limit, buffer sizes) are kept and reported
//! back, without effect.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use mica_device::sockets::{
    self as proto, Family, Interest, MAX_DATA_BYTES, Request, Response, SocketErrorCode, SocketId,
};
use wasmtime::component::Resource;

use super::InstanceState;
use super::error::IoError;
use super::poll::Pollable;
use super::streams::{InputStream, OutputStream};
use super::wasi::sockets::instance_network;
use super::wasi::sockets::ip_name_lookup::{self, HostResolveAddressStream};
use super::wasi::sockets::network::{
    self, ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use super::wasi::sockets::tcp::{self, HostTcpSocket, ShutdownType};
use super::wasi::sockets::tcp_create_socket;
use super::wasi::sockets::udp::{
    self, HostIncomingDatagramStream, HostOutgoingDatagramStream, HostUdpSocket, IncomingDatagram, OutgoingDatagram,
};
use super::wasi::sockets::udp_create_socket;
use crate::ipc::{ErrorCode as IpcCode, Handle};

/// A component's access to the network, from its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkGrant {
    /// Its connection to the network stack.
    pub connection: String,
    /// The ports it may listen on (and bind UDP sockets to).
    pub listen: Vec<u16>,
    /// Names `ip-name-lookup` answers from the manifest (lowercase), before asking the stack.
    pub hosts: Vec<(String, IpAddr)>,
}

/// What an instance's socket imports keep: its grant and its session with the stack.
#[derive(Debug, Default)]
pub struct NetState {
    /// The grant (none: no network).
    grant: Option<NetworkGrant>,
    /// The manifest connection's end, once connected (kept: it is how the stack knows a client
    /// is still there).
    manifest: Option<Handle>,
    /// The session's channel end, once opened.
    session: Option<Handle>,
    /// Counts the sessions opened: a socket of an earlier one is gone.
    generation: u32,
    /// What a program wrote to a connection of this session and the stack has not taken yet
    /// (by socket; at most [`WRITE_BUDGET`] each).
    pending: BTreeMap<SocketId, Vec<u8>>,
    /// The sockets of this session the program still holds (closed when it ends).
    open: BTreeSet<SocketId>,
}

impl NetState {
    /// The state for `grant`.
    pub fn new(grant: Option<NetworkGrant>) -> NetState {
        NetState {
            grant,
            manifest: None,
            session: None,
            generation: 0,
            pending: BTreeMap::new(),
            open: BTreeSet::new(),
        }
    }
}

/// `wasi:sockets/network.network`: the one network, the stack's.
#[derive(Debug)]
pub struct Network;

/// Addresses a lookup found, handed out one by one.
#[derive(Debug)]
pub struct ResolveAddressStream {
    addresses: VecDeque<IpAddress>,
}

/// Where a TCP socket is in WASI's state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpState {
    /// Made, not bound.
    Fresh,
    /// `start-bind` done (to this port; 0: an ephemeral one), `finish-bind` not yet.
    BindStarted(u16),
    /// Bound to this port (0: an ephemeral one).
    Bound(u16),
    /// `start-listen` done, `finish-listen` not yet.
    ListenStarted,
    /// Listening.
    Listening,
    /// `start-connect` done: the connection is being made.
    Connecting,
    /// Connected: its streams were handed out.
    Connected,
    /// A connect failed: nothing more can be done with it.
    Failed,
}

/// A TCP socket: its number in the session it was made in.
#[derive(Debug)]
pub struct TcpSocket {
    generation: u32,
    id: SocketId,
    family: IpAddressFamily,
    state: TcpState,
    backlog: u32,
    options: Options,
}

/// Options kept and reported back without effect.
#[derive(Clone, Copy, Debug)]
struct Options {
    keep_alive: bool,
    keep_alive_idle_ns: u64,
    keep_alive_interval_ns: u64,
    keep_alive_count: u32,
    hop_limit: u8,
    receive_buffer: u64,
    send_buffer: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keep_alive: false,
            keep_alive_idle_ns: 7_200_000_000_000,
            keep_alive_interval_ns: 75_000_000_000,
            keep_alive_count: 9,
            hop_limit: 64,
            receive_buffer: 65_536,
            send_buffer: 65_536,
        }
    }
}

/// A connection's end, as its streams name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    generation: u32,
    id: SocketId,
}

/// A UDP socket: its number in the session it was made in.
#[derive(Debug)]
pub struct UdpSocket {
    generation: u32,
    id: SocketId,
    family: IpAddressFamily,
    /// `start-bind` done (`Some(false)`), or `finish-bind` too (`Some(true)`).
    bound: Option<bool>,
    /// The remote address its last `stream` fixed.
    remote: Option<SocketAddr>,
    options: Options,
}

/// A UDP socket's incoming datagrams (from `remote` only, when its `stream` fixed one).
#[derive(Debug)]
pub struct IncomingDatagramStream {
    socket: Connection,
    remote: Option<SocketAddr>,
}

/// A UDP socket's outgoing datagrams (to `remote` when its `stream` fixed one).
#[derive(Debug)]
pub struct OutgoingDatagramStream {
    socket: Connection,
    remote: Option<SocketAddr>,
}

/// How many datagrams `check-send` lets a program send at once.
const SEND_PERMIT: u64 = 16;

/// How much an output stream keeps that the stack has not taken: one request's worth.
pub const WRITE_BUDGET: usize = MAX_DATA_BYTES;

/// How long an ended instance's written data may take to reach the stack: 10 s.
const LINGER_NS: u64 = 10_000_000_000;

/// A backlog when the program sets none.
const DEFAULT_BACKLOG: u32 = 8;

type NetResult<T> = wasmtime::Result<Result<T, ErrorCode>>;

/// A socket's local and remote addresses, where it has them.
type Endpoints = (Option<SocketAddr>, Option<SocketAddr>);

/// The `wasi:sockets` error for a protocol error.
fn code(c: SocketErrorCode) -> ErrorCode {
    use SocketErrorCode as C;
    match c {
        C::Unknown | C::BadRequest => ErrorCode::Unknown,
        C::AccessDenied => ErrorCode::AccessDenied,
        C::NotSupported => ErrorCode::NotSupported,
        C::InvalidArgument => ErrorCode::InvalidArgument,
        C::OutOfMemory => ErrorCode::OutOfMemory,
        C::Timeout => ErrorCode::Timeout,
        C::NotInProgress => ErrorCode::NotInProgress,
        C::WouldBlock => ErrorCode::WouldBlock,
        C::InvalidState | C::Closed | C::BadSocket => ErrorCode::InvalidState,
        C::NewSocketLimit => ErrorCode::NewSocketLimit,
        C::AddressNotBindable => ErrorCode::AddressNotBindable,
        C::AddressInUse => ErrorCode::AddressInUse,
        C::RemoteUnreachable => ErrorCode::RemoteUnreachable,
        C::ConnectionRefused => ErrorCode::ConnectionRefused,
        C::ConnectionReset => ErrorCode::ConnectionReset,
        C::ConnectionAborted => ErrorCode::ConnectionAborted,
        C::DatagramTooLarge => ErrorCode::DatagramTooLarge,
        C::NameUnresolvable => ErrorCode::NameUnresolvable,
    }
}

/// A WASI socket address as Rust's.
pub fn socket_addr(a: IpSocketAddress) -> SocketAddr {
    match a {
        IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (a, b, c, d) }) => {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
        }
        IpSocketAddress::Ipv6(Ipv6SocketAddress { port, flow_info, address: (a, b, c, d, e, f, g, h), scope_id }) => {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), port, flow_info, scope_id))
        }
    }
}

/// Rust's socket address as WASI's.
pub fn wasi_addr(a: SocketAddr) -> IpSocketAddress {
    match a {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: v4.port(), address: (a, b, c, d) })
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: v6.scope_id(),
            })
        }
    }
}

fn wasi_ip(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

fn family_of(a: &SocketAddr) -> IpAddressFamily {
    if a.is_ipv4() { IpAddressFamily::Ipv4 } else { IpAddressFamily::Ipv6 }
}

/// What a pollable over sockets stands for when a poll begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready now.
    Now,
    /// Ready once the monotonic clock reaches this many nanoseconds.
    At(u64),
    /// Ready when the stack says the socket is ready for this.
    Socket(SocketId, Interest),
}

impl InstanceState {
    /// The session with the stack, opened at first use; `access-denied` without a grant.
    fn session(&mut self) -> wasmtime::Result<Result<Handle, ErrorCode>> {
        if let Some(session) = self.net.session {
            return Ok(Ok(session));
        }
        let Some(grant) = self.net.grant.clone() else { return Ok(Err(ErrorCode::AccessDenied)) };
        let Some(port) = self.ipc.clone() else { return Ok(Err(ErrorCode::NotSupported)) };
        let manifest = match self.net.manifest {
            Some(end) => end,
            None => match port.connect(&grant.connection) {
                Ok(end) => {
                    self.net.manifest = Some(end);
                    end
                }
                Err(e) => {
                    log::warn!("{}: connecting to the network stack {:?}: {e}", self.name, grant.connection);
                    return Ok(Err(ErrorCode::Unknown));
                }
            },
        };
        let answered = port.call(manifest, Request::Open.encode(), Vec::new(), None);
        self.check_killed()?;
        let reply = match answered {
            Ok(reply) => reply,
            Err(e) => {
                // A stack that restarted is connected to afresh next time.
                if e.code == IpcCode::PeerClosed {
                    let _ = port.close(manifest);
                    self.net.manifest = None;
                }
                log::warn!("{}: opening a session with the network stack {:?}: {e}", self.name, grant.connection);
                return Ok(Err(ErrorCode::Unknown));
            }
        };
        match (Response::decode(&reply.bytes), reply.handles.as_slice()) {
            (Ok(Response::Session), &[session]) => {
                self.net.session = Some(session);
                self.net.generation = self.net.generation.wrapping_add(1);
                self.net.pending.clear();
                self.net.open.clear();
                Ok(Ok(session))
            }
            (answer, handles) => {
                for &h in handles {
                    let _ = port.close(h);
                }
                log::warn!(
                    "{}: the network stack {:?} answered an open with {answer:?} and {} handle(s)",
                    self.name,
                    grant.connection,
                    handles.len()
                );
                Ok(Err(ErrorCode::Unknown))
            }
        }
    }

    /// Sends `request` in the current session (opening it if need be); an error answer is its
    /// protocol code. A stack that ended ends the session: its sockets are gone.
    fn ask(&mut self, request: &Request) -> wasmtime::Result<Result<Response, SocketErrorCode>> {
        let session = match self.session()? {
            Ok(session) => session,
            Err(ErrorCode::AccessDenied) => return Ok(Err(SocketErrorCode::AccessDenied)),
            Err(_) => return Ok(Err(SocketErrorCode::Unknown)),
        };
        let Some(port) = self.ipc.clone() else { return Ok(Err(SocketErrorCode::NotSupported)) };
        let answered = port.call(session, request.encode(), Vec::new(), None);
        self.check_killed()?;
        match answered {
            Ok(reply) => Ok(match Response::decode(&reply.bytes) {
                Ok(Response::Error { code, .. }) => Err(code),
                Ok(response) => Ok(response),
                Err(e) => {
                    log::warn!("{}: a malformed answer from the network stack: {e}", self.name);
                    Err(SocketErrorCode::Unknown)
                }
            }),
            Err(e) => {
                if e.code == IpcCode::PeerClosed {
                    log::warn!("{}: the network stack ended; its sockets are gone", self.name);
                } else {
                    log::warn!("{}: the network stack: {e}", self.name);
                }
                let _ = port.close(session);
                self.net.session = None;
                Ok(Err(SocketErrorCode::ConnectionReset))
            }
        }
    }

    /// Asks about `socket` of session `generation`: a socket of an ended session is gone.
    fn ask_about(&mut self, generation: u32, request: &Request) -> wasmtime::Result<Result<Response, SocketErrorCode>> {
        if self.net.session.is_none() || generation != self.net.generation {
            return Ok(Err(SocketErrorCode::BadSocket));
        }
        self.ask(request)
    }

    /// Waits until `socket` is ready for `interest` (a held poll without a timeout).
    fn wait_for(&mut self, c: Connection, interest: Interest) -> wasmtime::Result<()> {
        let request = Request::Poll { interests: alloc::vec![(c.id, interest)], timeout_ns: None };
        self.ask_about(c.generation, &request)?.ok();
        Ok(())
    }

    /// Reads up to `len` bytes of connection `c`: empty when none are there yet.
    pub(super) fn socket_read(&mut self, c: Connection, len: u64) -> wasmtime::Result<Result<Vec<u8>, StreamEnd>> {
        let max = u32::try_from(len.min(MAX_DATA_BYTES as u64)).unwrap_or(0);
        Ok(match self.ask_about(c.generation, &Request::Receive { socket: c.id, max })? {
            Ok(Response::Data(data)) => Ok(data),
            Ok(other) => Err(StreamEnd::Failed(unexpected(&other), format!("sockets: a receive answered {other:?}"))),
            Err(SocketErrorCode::WouldBlock) => Ok(Vec::new()),
            Err(SocketErrorCode::Closed | SocketErrorCode::BadSocket) => Err(StreamEnd::Closed),
            Err(e) => Err(StreamEnd::failed(e)),
        })
    }

    /// Like [`socket_read`](Self::socket_read), waiting for at least one byte or the end.
    pub(super) fn socket_blocking_read(
        &mut self,
        c: Connection,
        len: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, StreamEnd>> {
        loop {
            match self.socket_read(c, len)? {
                Ok(data) if data.is_empty() && len > 0 => self.wait_for(c, Interest::Readable)?,
                other => return Ok(other),
            }
        }
    }

    /// How many bytes written to `c` the stack has not taken yet.
    pub(super) fn socket_pending(&self, c: Connection) -> usize {
        if c.generation != self.net.generation {
            return 0;
        }
        self.net.pending.get(&c.id).map_or(0, Vec::len)
    }

    /// Adds `bytes` to what `c` has to send, then sends as much as the stack takes now (`wait`:
    /// all of it, waiting for the stack as long as it takes). What is not taken is kept.
    pub(super) fn socket_send(
        &mut self,
        c: Connection,
        bytes: &[u8],
        wait: bool,
    ) -> wasmtime::Result<Result<(), StreamEnd>> {
        if c.generation != self.net.generation || self.net.session.is_none() {
            return Ok(Err(StreamEnd::Closed));
        }
        let mut pending = self.net.pending.remove(&c.id).unwrap_or_default();
        pending.extend_from_slice(bytes);
        let r = self.socket_flush(c, &mut pending, wait)?;
        if !pending.is_empty() && c.generation == self.net.generation {
            self.net.pending.insert(c.id, pending);
        }
        Ok(r)
    }

    /// Sends what `pending` holds as far as the stack takes it now (`wait`: all of it, waiting
    /// for the stack as long as it takes).
    fn socket_flush(
        &mut self,
        c: Connection,
        pending: &mut Vec<u8>,
        wait: bool,
    ) -> wasmtime::Result<Result<(), StreamEnd>> {
        while !pending.is_empty() {
            let chunk = pending.len().min(MAX_DATA_BYTES);
            let request = Request::Send { socket: c.id, data: pending[..chunk].to_vec() };
            match self.ask_about(c.generation, &request)? {
                Ok(Response::Sent(n)) => {
                    let n = (n as usize).min(chunk);
                    pending.drain(..n);
                    if n < chunk && !wait {
                        break;
                    }
                }
                Ok(other) => {
                    pending.clear();
                    return Ok(Err(StreamEnd::Failed(
                        unexpected(&other),
                        format!("sockets: a send answered {other:?}"),
                    )));
                }
                Err(SocketErrorCode::WouldBlock) if wait => self.wait_for(c, Interest::Writable)?,
                Err(SocketErrorCode::WouldBlock) => break,
                Err(e) => {
                    pending.clear();
                    return Ok(Err(match e {
                        SocketErrorCode::BadSocket => StreamEnd::Closed,
                        e => StreamEnd::failed(e),
                    }));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The instance has ended: what it wrote and the stack has not taken is sent (for at most
    /// [`LINGER_NS`]), then every socket it still held is closed gracefully, as a process's
    /// sockets are at its exit; a connection then ends with its data sent, not reset.
    pub fn close_sockets(&mut self) -> wasmtime::Result<()> {
        if self.net.session.is_none() {
            return Ok(());
        }
        let generation = self.net.generation;
        let deadline = self.platform.monotonic_ns().saturating_add(LINGER_NS);
        let waiting: Vec<SocketId> = self.net.pending.keys().copied().collect();
        for id in waiting {
            let c = Connection { generation, id };
            while self.socket_pending(c) > 0 && self.net.session.is_some() {
                let now = self.platform.monotonic_ns();
                if now >= deadline {
                    log::warn!(
                        "{}: ended with {} bytes for socket {id} the network stack did not take in time",
                        self.name,
                        self.socket_pending(c)
                    );
                    break;
                }
                if let Err(e) = self.socket_send(c, &[], false)? {
                    log::warn!("{}: sending what was written before the end: {e:?}", self.name);
                    break;
                }
                if self.socket_pending(c) > 0 {
                    let timeout = Some(deadline - now);
                    let _ = self.poll_sockets(alloc::vec![(id, Interest::Writable)], timeout)?;
                }
            }
        }
        for id in core::mem::take(&mut self.net.open) {
            let _ = self.ask_about(generation, &Request::Close { socket: id })?;
        }
        self.net.pending.clear();
        Ok(())
    }

    /// What socket pollable `p` waits for now.
    pub(super) fn readiness(&self, p: &Pollable) -> wasmtime::Result<Readiness> {
        let current = |generation: u32| self.net.session.is_some() && generation == self.net.generation;
        Ok(match *p {
            Pollable::Ready => Readiness::Now,
            Pollable::Deadline(ns) => Readiness::At(ns),
            Pollable::Input(c) if current(c.generation) => Readiness::Socket(c.id, Interest::Readable),
            Pollable::Output(c) if current(c.generation) && self.socket_pending(c) >= WRITE_BUDGET => {
                Readiness::Socket(c.id, Interest::Writable)
            }
            Pollable::Output(_) => Readiness::Now,
            Pollable::Tcp(rep) => {
                let s = self.table.get(&Resource::<TcpSocket>::new_borrow(rep))?;
                match s.state {
                    TcpState::Listening if current(s.generation) => Readiness::Socket(s.id, Interest::Readable),
                    TcpState::Connecting if current(s.generation) => Readiness::Socket(s.id, Interest::Writable),
                    _ => Readiness::Now,
                }
            }
            Pollable::Datagrams(c, interest) if current(c.generation) => Readiness::Socket(c.id, interest),
            Pollable::Input(_) | Pollable::Datagrams(..) => Readiness::Now,
        })
    }

    /// Asks the stack which of `interests` are ready, holding the question until one is or
    /// `timeout_ns` passes (`None`: as long as it takes). Positions into `interests`.
    pub(super) fn poll_sockets(
        &mut self,
        interests: Vec<(SocketId, Interest)>,
        timeout_ns: Option<u64>,
    ) -> wasmtime::Result<Vec<u32>> {
        let generation = self.net.generation;
        let count = u32::try_from(interests.len()).unwrap_or(u32::MAX);
        Ok(match self.ask_about(generation, &Request::Poll { interests, timeout_ns })? {
            Ok(Response::Ready(positions)) => positions,
            // The stack ended or refused: every socket is reported ready, so that the program
            // tries its operations and learns what happened from them.
            Ok(_) | Err(_) => (0..count).collect(),
        })
    }

    fn socket_of(&self, s: &Resource<TcpSocket>) -> wasmtime::Result<(u32, SocketId, TcpState)> {
        let s = self.table.get(s)?;
        Ok((s.generation, s.id, s.state))
    }

    fn set_state(&mut self, s: &Resource<TcpSocket>, state: TcpState) -> wasmtime::Result<()> {
        self.table.get_mut(s)?.state = state;
        Ok(())
    }

    /// The streams of a connected socket.
    fn streams(&mut self, c: Connection) -> wasmtime::Result<(Resource<InputStream>, Resource<OutputStream>)> {
        let input = self.table.push(InputStream::Socket(c))?;
        let output = self.table.push(OutputStream::Socket(c))?;
        Ok((input, output))
    }
}

/// How a socket stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The peer sent everything (or the socket is gone).
    Closed,
    /// It failed: its code and what happened.
    Failed(ErrorCode, String),
}

impl StreamEnd {
    fn failed(e: SocketErrorCode) -> StreamEnd {
        StreamEnd::Failed(code(e), format!("sockets: {:?}", code(e)))
    }

    /// The error a failed stream operation reports.
    pub fn io_error(code: ErrorCode, message: String) -> IoError {
        IoError(message, None, Some(code))
    }
}

impl network::Host for InstanceState {
    fn network_error_code(&mut self, e: Resource<IoError>) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(self.table.get(&e)?.2)
    }
}

impl network::HostNetwork for InstanceState {
    fn drop(&mut self, n: Resource<Network>) -> wasmtime::Result<()> {
        self.table.delete(n)?;
        Ok(())
    }
}

impl instance_network::Host for InstanceState {
    fn instance_network(&mut self) -> wasmtime::Result<Resource<Network>> {
        Ok(self.table.push(Network)?)
    }
}

impl tcp_create_socket::Host for InstanceState {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> NetResult<Resource<TcpSocket>> {
        let f = match family {
            IpAddressFamily::Ipv4 => Family::V4,
            IpAddressFamily::Ipv6 => Family::V6,
        };
        let id = match self.ask(&Request::Tcp(f))? {
            Ok(Response::Socket(id)) => id,
            Ok(other) => return Ok(Err(unexpected(&other))),
            Err(e) => return Ok(Err(code(e))),
        };
        self.net.open.insert(id);
        let socket = TcpSocket {
            generation: self.net.generation,
            id,
            family,
            state: TcpState::Fresh,
            backlog: DEFAULT_BACKLOG,
            options: Options::default(),
        };
        Ok(Ok(self.table.push(socket)?))
    }
}

fn unexpected(r: &Response) -> ErrorCode {
    log::warn!("sockets: an unexpected answer from the network stack: {r:?}");
    ErrorCode::Unknown
}

/// `Done` as `Ok`, an error as its code.
fn done(r: Result<Response, SocketErrorCode>) -> Result<(), ErrorCode> {
    match r {
        Ok(Response::Done) => Ok(()),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(code(e)),
    }
}

impl tcp::Host for InstanceState {}

impl HostTcpSocket for InstanceState {
    fn start_bind(
        &mut self,
        s: Resource<TcpSocket>,
        network: Resource<Network>,
        local: IpSocketAddress,
    ) -> NetResult<()> {
        self.table.get(&network)?;
        let (generation, id, state) = self.socket_of(&s)?;
        if state != TcpState::Fresh {
            return Ok(Err(ErrorCode::InvalidState));
        }
        let address = socket_addr(local);
        if family_of(&address) != self.table.get(&s)?.family {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        let r = done(self.ask_about(generation, &Request::Bind { socket: id, address })?);
        if r.is_ok() {
            self.set_state(&s, TcpState::BindStarted(address.port()))?;
        }
        Ok(r)
    }

    fn finish_bind(&mut self, s: Resource<TcpSocket>) -> NetResult<()> {
        match self.socket_of(&s)?.2 {
            TcpState::BindStarted(port) => {
                self.set_state(&s, TcpState::Bound(port))?;
                Ok(Ok(()))
            }
            _ => Ok(Err(ErrorCode::NotInProgress)),
        }
    }

    fn start_connect(
        &mut self,
        s: Resource<TcpSocket>,
        network: Resource<Network>,
        remote: IpSocketAddress,
    ) -> NetResult<()> {
        self.table.get(&network)?;
        let (generation, id, state) = self.socket_of(&s)?;
        match state {
            TcpState::Fresh | TcpState::Bound(_) => {}
            TcpState::BindStarted(_) | TcpState::ListenStarted | TcpState::Connecting => {
                return Ok(Err(ErrorCode::ConcurrencyConflict));
            }
            _ => return Ok(Err(ErrorCode::InvalidState)),
        }
        let address = socket_addr(remote);
        if family_of(&address) != self.table.get(&s)?.family {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        let r = done(self.ask_about(generation, &Request::Connect { socket: id, address })?);
        if r.is_ok() {
            self.set_state(&s, TcpState::Connecting)?;
        }
        Ok(r)
    }

    fn finish_connect(&mut self, s: Resource<TcpSocket>) -> NetResult<(Resource<InputStream>, Resource<OutputStream>)> {
        let (generation, id, state) = self.socket_of(&s)?;
        if state != TcpState::Connecting {
            return Ok(Err(ErrorCode::NotInProgress));
        }
        match self.ask_about(generation, &Request::Connected { socket: id })? {
            Ok(Response::Endpoints { .. }) => {
                self.set_state(&s, TcpState::Connected)?;
                Ok(Ok(self.streams(Connection { generation, id })?))
            }
            Ok(other) => Ok(Err(unexpected(&other))),
            Err(SocketErrorCode::WouldBlock) => Ok(Err(ErrorCode::WouldBlock)),
            Err(e) => {
                self.set_state(&s, TcpState::Failed)?;
                Ok(Err(code(e)))
            }
        }
    }

    fn start_listen(&mut self, s: Resource<TcpSocket>) -> NetResult<()> {
        let (generation, id, state) = self.socket_of(&s)?;
        let port = match state {
            TcpState::Bound(port) => port,
            TcpState::BindStarted(_) | TcpState::ListenStarted | TcpState::Connecting => {
                return Ok(Err(ErrorCode::ConcurrencyConflict));
            }
            _ => return Ok(Err(ErrorCode::InvalidState)),
        };
        let granted = self.net.grant.as_ref().is_some_and(|g| port != 0 && g.listen.contains(&port));
        if !granted {
            log::warn!("{}: listening on port {port} is not granted (the manifest's network.listen)", self.name);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        let backlog = self.table.get(&s)?.backlog;
        let r = done(self.ask_about(generation, &Request::Listen { socket: id, backlog })?);
        if r.is_ok() {
            self.set_state(&s, TcpState::ListenStarted)?;
        }
        Ok(r)
    }

    fn finish_listen(&mut self, s: Resource<TcpSocket>) -> NetResult<()> {
        match self.socket_of(&s)?.2 {
            TcpState::ListenStarted => {
                self.set_state(&s, TcpState::Listening)?;
                Ok(Ok(()))
            }
            _ => Ok(Err(ErrorCode::NotInProgress)),
        }
    }

    fn accept(
        &mut self,
        s: Resource<TcpSocket>,
    ) -> NetResult<(Resource<TcpSocket>, Resource<InputStream>, Resource<OutputStream>)> {
        let (generation, id, state) = self.socket_of(&s)?;
        if state != TcpState::Listening {
            return Ok(Err(ErrorCode::InvalidState));
        }
        match self.ask_about(generation, &Request::Accept { socket: id })? {
            Ok(Response::Accepted { socket, .. }) => {
                self.net.open.insert(socket);
                let listener = self.table.get(&s)?;
                let accepted = TcpSocket {
                    generation,
                    id: socket,
                    family: listener.family,
                    state: TcpState::Connected,
                    backlog: DEFAULT_BACKLOG,
                    options: listener.options,
                };
                let accepted = self.table.push(accepted)?;
                let (input, output) = self.streams(Connection { generation, id: socket })?;
                Ok(Ok((accepted, input, output)))
            }
            Ok(other) => Ok(Err(unexpected(&other))),
            Err(e) => Ok(Err(code(e))),
        }
    }

    fn local_address(&mut self, s: Resource<TcpSocket>) -> NetResult<IpSocketAddress> {
        Ok(self.endpoints(&s)?.and_then(|(local, _)| local.map(wasi_addr).ok_or(ErrorCode::InvalidState)))
    }

    fn remote_address(&mut self, s: Resource<TcpSocket>) -> NetResult<IpSocketAddress> {
        Ok(self.endpoints(&s)?.and_then(|(_, remote)| remote.map(wasi_addr).ok_or(ErrorCode::InvalidState)))
    }

    fn is_listening(&mut self, s: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        Ok(self.socket_of(&s)?.2 == TcpState::Listening)
    }

    fn address_family(&mut self, s: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(self.table.get(&s)?.family)
    }

    fn set_listen_backlog_size(&mut self, s: Resource<TcpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        let socket = self.table.get_mut(&s)?;
        Ok(match socket.state {
            // The stack sets a listener's backlog once, when it starts listening.
            TcpState::Listening | TcpState::ListenStarted => Err(ErrorCode::NotSupported),
            TcpState::Connecting | TcpState::Connected => Err(ErrorCode::InvalidState),
            _ => {
                socket.backlog = u32::try_from(value).unwrap_or(u32::MAX);
                Ok(())
            }
        })
    }

    fn keep_alive_enabled(&mut self, s: Resource<TcpSocket>) -> NetResult<bool> {
        Ok(Ok(self.table.get(&s)?.options.keep_alive))
    }

    fn set_keep_alive_enabled(&mut self, s: Resource<TcpSocket>, value: bool) -> NetResult<()> {
        self.table.get_mut(&s)?.options.keep_alive = value;
        Ok(Ok(()))
    }

    fn keep_alive_idle_time(&mut self, s: Resource<TcpSocket>) -> NetResult<u64> {
        Ok(Ok(self.table.get(&s)?.options.keep_alive_idle_ns))
    }

    fn set_keep_alive_idle_time(&mut self, s: Resource<TcpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.keep_alive_idle_ns = value;
        Ok(Ok(()))
    }

    fn keep_alive_interval(&mut self, s: Resource<TcpSocket>) -> NetResult<u64> {
        Ok(Ok(self.table.get(&s)?.options.keep_alive_interval_ns))
    }

    fn set_keep_alive_interval(&mut self, s: Resource<TcpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.keep_alive_interval_ns = value;
        Ok(Ok(()))
    }

    fn keep_alive_count(&mut self, s: Resource<TcpSocket>) -> NetResult<u32> {
        Ok(Ok(self.table.get(&s)?.options.keep_alive_count))
    }

    fn set_keep_alive_count(&mut self, s: Resource<TcpSocket>, value: u32) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.keep_alive_count = value;
        Ok(Ok(()))
    }

    fn hop_limit(&mut self, s: Resource<TcpSocket>) -> NetResult<u8> {
        Ok(Ok(self.table.get(&s)?.options.hop_limit))
    }

    fn set_hop_limit(&mut self, s: Resource<TcpSocket>, value: u8) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.hop_limit = value;
        Ok(Ok(()))
    }

    fn receive_buffer_size(&mut self, s: Resource<TcpSocket>) -> NetResult<u64> {
        Ok(Ok(self.table.get(&s)?.options.receive_buffer))
    }

    fn set_receive_buffer_size(&mut self, s: Resource<TcpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.receive_buffer = value;
        Ok(Ok(()))
    }

    fn send_buffer_size(&mut self, s: Resource<TcpSocket>) -> NetResult<u64> {
        Ok(Ok(self.table.get(&s)?.options.send_buffer))
    }

    fn set_send_buffer_size(&mut self, s: Resource<TcpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.send_buffer = value;
        Ok(Ok(()))
    }

    fn subscribe(&mut self, s: Resource<TcpSocket>) -> wasmtime::Result<Resource<Pollable>> {
        Ok(self.table.push_child(Pollable::Tcp(s.rep()), &s)?)
    }

    fn shutdown(&mut self, s: Resource<TcpSocket>, how: ShutdownType) -> NetResult<()> {
        let (generation, id, state) = self.socket_of(&s)?;
        if state != TcpState::Connected {
            return Ok(Err(ErrorCode::InvalidState));
        }
        // What was written goes out before the end of the stream does.
        if matches!(how, ShutdownType::Send | ShutdownType::Both) {
            let c = Connection { generation, id };
            if self.socket_pending(c) > 0
                && let Err(e) = self.socket_send(c, &[], true)?
            {
                log::warn!("{}: sending what was written before a shutdown: {e:?}", self.name);
            }
        }
        let how = match how {
            ShutdownType::Receive => proto::Shutdown::Receive,
            ShutdownType::Send => proto::Shutdown::Send,
            ShutdownType::Both => proto::Shutdown::Both,
        };
        Ok(done(self.ask_about(generation, &Request::Shutdown { socket: id, how })?))
    }

    fn drop(&mut self, s: Resource<TcpSocket>) -> wasmtime::Result<()> {
        let socket = self.table.delete(s)?;
        // What was written and not yet taken goes out before the connection closes.
        let c = Connection { generation: socket.generation, id: socket.id };
        if self.socket_pending(c) > 0 {
            let _ = self.socket_send(c, &[], true)?;
        }
        if socket.generation == self.net.generation {
            self.net.pending.remove(&socket.id);
            self.net.open.remove(&socket.id);
        }
        // The stack lets go of it (a connection closes); a socket of an ended session is gone.
        let _ = self.ask_about(socket.generation, &Request::Close { socket: socket.id })?;
        Ok(())
    }
}

impl InstanceState {
    fn endpoints(&mut self, s: &Resource<TcpSocket>) -> NetResult<Endpoints> {
        let (generation, id, _) = self.socket_of(s)?;
        Ok(match self.ask_about(generation, &Request::Addresses { socket: id })? {
            Ok(Response::Endpoints { local, remote }) => Ok((local, remote)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(code(e)),
        })
    }
}

impl ip_name_lookup::Host for InstanceState {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> NetResult<Resource<ResolveAddressStream>> {
        self.table.get(&network)?;
        if name.is_empty() || name.len() > proto::MAX_NAME_BYTES {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        let Some(grant) = &self.net.grant else { return Ok(Err(ErrorCode::AccessDenied)) };
        // The manifest's names first; then the stack's (`localhost`, IP literals).
        let wanted = name.trim_end_matches('.');
        if let Some((_, ip)) = grant.hosts.iter().find(|(n, _)| n.eq_ignore_ascii_case(wanted)) {
            let addresses = [wasi_ip(*ip)].into_iter().collect();
            return Ok(Ok(self.table.push(ResolveAddressStream { addresses })?));
        }
        match self.ask(&Request::Resolve { name })? {
            Ok(Response::Resolved(ips)) => {
                let addresses = ips.into_iter().map(wasi_ip).collect();
                Ok(Ok(self.table.push(ResolveAddressStream { addresses })?))
            }
            Ok(other) => Ok(Err(unexpected(&other))),
            Err(e) => Ok(Err(code(e))),
        }
    }
}

impl HostResolveAddressStream for InstanceState {
    fn resolve_next_address(&mut self, s: Resource<ResolveAddressStream>) -> NetResult<Option<IpAddress>> {
        Ok(Ok(self.table.get_mut(&s)?.addresses.pop_front()))
    }

    fn subscribe(&mut self, s: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<Pollable>> {
        Ok(self.table.push_child(Pollable::Ready, &s)?)
    }

    fn drop(&mut self, s: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl udp_create_socket::Host for InstanceState {
    fn create_udp_socket(&mut self, family: IpAddressFamily) -> NetResult<Resource<UdpSocket>> {
        let f = match family {
            IpAddressFamily::Ipv4 => Family::V4,
            IpAddressFamily::Ipv6 => Family::V6,
        };
        let id = match self.ask(&Request::Udp(f))? {
            Ok(Response::Socket(id)) => id,
            Ok(other) => return Ok(Err(unexpected(&other))),
            Err(e) => return Ok(Err(code(e))),
        };
        self.net.open.insert(id);
        let socket = UdpSocket {
            generation: self.net.generation,
            id,
            family,
            bound: None,
            remote: None,
            options: Options::default(),
        };
        Ok(Ok(self.table.push(socket)?))
    }
}

impl udp::Host for InstanceState {}

impl InstanceState {
    fn udp(&self, s: &Resource<UdpSocket>) -> wasmtime::Result<Connection> {
        let s = self.table.get(s)?;
        Ok(Connection { generation: s.generation, id: s.id })
    }

    /// Sends one datagram on `c` to `to`: whether it went (`false`: the stack's queue is full).
    fn send_datagram(&mut self, c: Connection, to: SocketAddr, data: Vec<u8>) -> NetResult<bool> {
        Ok(match self.ask_about(c.generation, &Request::SendTo { socket: c.id, address: to, data })? {
            Ok(Response::Sent(_)) => Ok(true),
            Ok(other) => Err(unexpected(&other)),
            Err(SocketErrorCode::WouldBlock) => Ok(false),
            Err(e) => Err(code(e)),
        })
    }
}

impl HostUdpSocket for InstanceState {
    fn start_bind(
        &mut self,
        s: Resource<UdpSocket>,
        network: Resource<Network>,
        local: IpSocketAddress,
    ) -> NetResult<()> {
        self.table.get(&network)?;
        let (c, socket) = (self.udp(&s)?, self.table.get(&s)?);
        if socket.bound.is_some() {
            return Ok(Err(ErrorCode::InvalidState));
        }
        let address = socket_addr(local);
        if family_of(&address) != socket.family {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        // A fixed port is a service's: it must be granted, as a TCP listener's port is.
        let port = address.port();
        if port != 0 && !self.net.grant.as_ref().is_some_and(|g| g.listen.contains(&port)) {
            log::warn!("{}: binding UDP port {port} is not granted (the manifest's network.listen)", self.name);
            return Ok(Err(ErrorCode::AccessDenied));
        }
        let r = done(self.ask_about(c.generation, &Request::Bind { socket: c.id, address })?);
        if r.is_ok() {
            self.table.get_mut(&s)?.bound = Some(false);
        }
        Ok(r)
    }

    fn finish_bind(&mut self, s: Resource<UdpSocket>) -> NetResult<()> {
        let socket = self.table.get_mut(&s)?;
        Ok(match socket.bound {
            Some(false) => {
                socket.bound = Some(true);
                Ok(())
            }
            _ => Err(ErrorCode::NotInProgress),
        })
    }

    fn stream(
        &mut self,
        s: Resource<UdpSocket>,
        remote: Option<IpSocketAddress>,
    ) -> NetResult<(Resource<IncomingDatagramStream>, Resource<OutgoingDatagramStream>)> {
        let c = self.udp(&s)?;
        let socket = self.table.get_mut(&s)?;
        if socket.bound != Some(true) {
            return Ok(Err(ErrorCode::InvalidState));
        }
        let remote = remote.map(socket_addr);
        if let Some(r) = remote
            && (family_of(&r) != socket.family || r.port() == 0 || r.ip().is_unspecified())
        {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        socket.remote = remote;
        let incoming = self.table.push(IncomingDatagramStream { socket: c, remote })?;
        let outgoing = self.table.push(OutgoingDatagramStream { socket: c, remote })?;
        Ok(Ok((incoming, outgoing)))
    }

    fn local_address(&mut self, s: Resource<UdpSocket>) -> NetResult<IpSocketAddress> {
        let c = self.udp(&s)?;
        Ok(match self.ask_about(c.generation, &Request::Addresses { socket: c.id })? {
            Ok(Response::Endpoints { local: Some(local), .. }) => Ok(wasi_addr(local)),
            Ok(Response::Endpoints { local: None, .. }) => Err(ErrorCode::InvalidState),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(code(e)),
        })
    }

    fn remote_address(&mut self, s: Resource<UdpSocket>) -> NetResult<IpSocketAddress> {
        Ok(self.table.get(&s)?.remote.map(wasi_addr).ok_or(ErrorCode::InvalidState))
    }

    fn address_family(&mut self, s: Resource<UdpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(self.table.get(&s)?.family)
    }

    fn unicast_hop_limit(&mut self, s: Resource<UdpSocket>) -> NetResult<u8> {
        Ok(Ok(self.table.get(&s)?.options.hop_limit))
    }

    fn set_unicast_hop_limit(&mut self, s: Resource<UdpSocket>, value: u8) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.hop_limit = value;
        Ok(Ok(()))
    }

    fn receive_buffer_size(&mut self, s: Resource<UdpSocket>) -> NetResult<u64> {
        Ok(Ok(self.table.get(&s)?.options.receive_buffer))
    }

    fn set_receive_buffer_size(&mut self, s: Resource<UdpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.receive_buffer = value;
        Ok(Ok(()))
    }

    fn send_buffer_size(&mut self, s: Resource<UdpSocket>) -> NetResult<u64> {
        Ok(Ok(self.table.get(&s)?.options.send_buffer))
    }

    fn set_send_buffer_size(&mut self, s: Resource<UdpSocket>, value: u64) -> NetResult<()> {
        if value == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table.get_mut(&s)?.options.send_buffer = value;
        Ok(Ok(()))
    }

    fn subscribe(&mut self, s: Resource<UdpSocket>) -> wasmtime::Result<Resource<Pollable>> {
        // Its binds finish at once.
        Ok(self.table.push_child(Pollable::Ready, &s)?)
    }

    fn drop(&mut self, s: Resource<UdpSocket>) -> wasmtime::Result<()> {
        let socket = self.table.delete(s)?;
        if socket.generation == self.net.generation {
            self.net.open.remove(&socket.id);
        }
        let _ = self.ask_about(socket.generation, &Request::Close { socket: socket.id })?;
        Ok(())
    }
}

impl HostIncomingDatagramStream for InstanceState {
    fn receive(&mut self, s: Resource<IncomingDatagramStream>, max: u64) -> NetResult<Vec<IncomingDatagram>> {
        let (c, only) = {
            let s = self.table.get(&s)?;
            (s.socket, s.remote)
        };
        let mut datagrams = Vec::new();
        while (datagrams.len() as u64) < max {
            match self.ask_about(c.generation, &Request::ReceiveFrom { socket: c.id })? {
                // A connected stream drops what comes from elsewhere, as a connected socket does.
                Ok(Response::Datagram { address, .. }) if only.is_some_and(|r| r != address) => {}
                Ok(Response::Datagram { address, data }) => {
                    datagrams.push(IncomingDatagram { data, remote_address: wasi_addr(address) });
                }
                Ok(other) => return Ok(Err(unexpected(&other))),
                Err(SocketErrorCode::WouldBlock) => break,
                Err(e) if datagrams.is_empty() => return Ok(Err(code(e))),
                Err(_) => break,
            }
        }
        Ok(Ok(datagrams))
    }

    fn subscribe(&mut self, s: Resource<IncomingDatagramStream>) -> wasmtime::Result<Resource<Pollable>> {
        let c = self.table.get(&s)?.socket;
        Ok(self.table.push_child(Pollable::Datagrams(c, Interest::Readable), &s)?)
    }

    fn drop(&mut self, s: Resource<IncomingDatagramStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl HostOutgoingDatagramStream for InstanceState {
    fn check_send(&mut self, s: Resource<OutgoingDatagramStream>) -> NetResult<u64> {
        self.table.get(&s)?;
        Ok(Ok(SEND_PERMIT))
    }

    fn send(&mut self, s: Resource<OutgoingDatagramStream>, datagrams: Vec<OutgoingDatagram>) -> NetResult<u64> {
        let (c, fixed) = {
            let s = self.table.get(&s)?;
            (s.socket, s.remote)
        };
        if datagrams.len() as u64 > SEND_PERMIT {
            return Err(wasmtime::format_err!(
                "send of {} datagrams exceeds check-send's {SEND_PERMIT}",
                datagrams.len()
            ));
        }
        let mut sent = 0u64;
        for d in datagrams {
            let to = match (d.remote_address.map(socket_addr), fixed) {
                (Some(to), Some(fixed)) if to != fixed => Err(ErrorCode::InvalidArgument),
                (Some(to), _) | (None, Some(to)) => Ok(to),
                (None, None) => Err(ErrorCode::InvalidArgument),
            };
            let went = match to {
                Ok(to) => self.send_datagram(c, to, d.data)?,
                Err(e) => Err(e),
            };
            match went {
                Ok(true) => sent += 1,
                Ok(false) => break,
                Err(e) if sent == 0 => return Ok(Err(e)),
                Err(_) => break,
            }
        }
        Ok(Ok(sent))
    }

    fn subscribe(&mut self, s: Resource<OutgoingDatagramStream>) -> wasmtime::Result<Resource<Pollable>> {
        let c = self.table.get(&s)?.socket;
        Ok(self.table.push_child(Pollable::Datagrams(c, Interest::Writable), &s)?)
    }

    fn drop(&mut self, s: Resource<OutgoingDatagramStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_convert_both_ways() {
        for a in [
            "10.0.2.15:7".parse::<SocketAddr>().expect("v4"),
            "0.0.0.0:0".parse().expect("v4 any"),
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4), 8080, 5, 6)),
        ] {
            assert_eq!(socket_addr(wasi_addr(a)), a);
        }
        assert!(matches!(wasi_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))), IpAddress::Ipv4((127, 0, 0, 1))));
        let v6 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        assert!(matches!(wasi_ip(IpAddr::V6(v6)), IpAddress::Ipv6((0xfe80, 0, 0, 0, 0, 0, 0, 1))));
    }

    #[test]
    fn every_protocol_error_has_a_wasi_code() {
        assert_eq!(code(SocketErrorCode::WouldBlock), ErrorCode::WouldBlock);
        assert_eq!(code(SocketErrorCode::AccessDenied), ErrorCode::AccessDenied);
        assert_eq!(code(SocketErrorCode::ConnectionRefused), ErrorCode::ConnectionRefused);
        assert_eq!(code(SocketErrorCode::BadSocket), ErrorCode::InvalidState);
        assert_eq!(code(SocketErrorCode::BadRequest), ErrorCode::Unknown);
    }
}
