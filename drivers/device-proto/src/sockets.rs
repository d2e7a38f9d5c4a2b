//! The sockets protocol (connection [`CONNECTION`]): TCP and UDP sockets served by a network
//! stack component (`components/netstack`) to the components the manifest lets reach it.
//!
//! A client first calls [`Request::Open`] on the manifest connection; the answer,
//! [`Response::Session`], carries one handle: the client's end of a channel of its own, on which
//! it makes every other request. Sockets are numbers in that session ([`SocketId`]); a client
//! cannot name another's, and when the client's end closes (its component ended) the stack
//! closes every socket of the session.
//!
//! Operations never wait in the stack: one that cannot go on now answers
//! [`SocketErrorCode::WouldBlock`], as `wasi:sockets` has it. The one exception is
//! [`Request::Poll`], whose answer the stack holds until one of the sockets it names is ready
//! for what was asked, or its timeout passes.
//!
//! | message | bytes |
//! |---|---|
//! | [`Request::Open`] | `01` |
//! | [`Request::Tcp`] | `02`, family: u8 (4 or 6) |
//! | [`Request::Udp`] | `03`, family: u8 |
//! | [`Request::Bind`] | `04`, socket: u32, address |
//! | [`Request::Listen`] | `05`, socket: u32, backlog: u32 |
//! | [`Request::Accept`] | `06`, socket: u32 |
//! | [`Request::Connect`] | `07`, socket: u32, address |
//! | [`Request::Connected`] | `08`, socket: u32 |
//! | [`Request::Send`] | `09`, socket: u32, length: u32, bytes |
//! | [`Request::Receive`] | `0a`, socket: u32, max: u32 |
//! | [`Request::SendTo`] | `0b`, socket: u32, address, length: u32, bytes |
//! | [`Request::ReceiveFrom`] | `0c`, socket: u32 |
//! | [`Request::Shutdown`] | `0d`, socket: u32, how: u8 (1 receive, 2 send, 3 both) |
//! | [`Request::Close`] | `0e`, socket: u32 |
//! | [`Request::Addresses`] | `0f`, socket: u32 |
//! | [`Request::Poll`] | `10`, timeout: u64 (ns; `u64::MAX`: none), count: u32, count x (socket: u32, interest: u8) |
//! | [`Request::Resolve`] | `11`, length: u32, UTF-8 name |
//! | [`Response::Session`] | `81` (and the session's handle) |
//! | [`Response::Socket`] | `82`, socket: u32 |
//! | [`Response::Done`] | `83` |
//! | [`Response::Accepted`] | `84`, socket: u32, local address, remote address |
//! | [`Response::Sent`] | `85`, count: u32 |
//! | [`Response::Data`] | `86`, length: u32, bytes |
//! | [`Response::Datagram`] | `87`, address, length: u32, bytes |
//! | [`Response::Endpoints`] | `88`, local: optional address, remote: optional address |
//! | [`Response::Ready`] | `89`, count: u32, count x position: u32 |
//! | [`Response::Resolved`] | `8a`, count: u32, count x IP address |
//! | [`Response::Error`] | `8f`, code: u8 ([`SocketErrorCode`]), length: u32, UTF-8 message |
//!
//! An address is a family byte (4 or 6), the IP address (4 or 16 bytes), the port (u16); an
//! IPv6 address then has its flow info and scope id (u32 each). An optional address is a byte
//! 0 (none) or 1 followed by the address. An IP address alone is the family byte and the
//! address. Integers are little-endian.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::wire::{Reader, error_message, put_bytes};
use crate::{DecodeError, MAX_MESSAGE_BYTES};

/// The manifest connection a network stack serves.
pub const CONNECTION: &str = "sockets";

/// The most bytes one [`Request::Send`], [`Request::SendTo`], [`Response::Data`] or
/// [`Response::Datagram`] carries: what is left of a message after its other fields.
pub const MAX_DATA_BYTES: usize = MAX_MESSAGE_BYTES - 64;

/// The most sockets one [`Request::Poll`] names.
pub const MAX_POLL: usize = 1024;

/// The most addresses one [`Response::Resolved`] carries.
pub const MAX_RESOLVED: usize = 64;

/// The longest name [`Request::Resolve`] takes (as DNS has it).
pub const MAX_NAME_BYTES: usize = 253;

/// The longest error message, in bytes (longer ones are cut on a character boundary).
pub use crate::wire::MAX_ERROR_MESSAGE_BYTES;

/// A socket of a session.
pub type SocketId = u32;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Which half of a connection a shutdown ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// No more receiving.
    Receive = 1,
    /// No more sending: the peer sees the end of the stream.
    Send = 2,
    /// Both.
    Both = 3,
}

/// What a [`Request::Poll`] waits for on one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// A receive (or accept, on a listener) would not answer `would-block`: data, the end of
    /// the stream, a connection to accept, or a failure.
    Readable = 1,
    /// A send would not answer `would-block`, or a connect has finished (or failed).
    Writable = 2,
}

/// Why a request failed: `wasi:sockets`' error codes, and the protocol's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SocketErrorCode {
    /// Something else went wrong; the message says what.
    Unknown = 1,
    /// The manifest does not allow it (a port not granted, for instance).
    AccessDenied = 2,
    /// Not supported by this stack.
    NotSupported = 3,
    /// An argument is not valid for this socket (an address of the other family, ...).
    InvalidArgument = 4,
    /// The stack is out of memory.
    OutOfMemory = 5,
    /// A connect or lookup took too long.
    Timeout = 6,
    /// Nothing to finish: no connect in progress.
    NotInProgress = 8,
    /// Not now: try again once a poll says the socket is ready.
    WouldBlock = 9,
    /// Not in this socket's state (listen before bind, send before connect, ...).
    InvalidState = 10,
    /// The stack holds as many sockets as it can.
    NewSocketLimit = 11,
    /// The address is not one of this machine's.
    AddressNotBindable = 12,
    /// Another socket has the address.
    AddressInUse = 13,
    /// No route to the remote address.
    RemoteUnreachable = 14,
    /// The remote end refused the connection.
    ConnectionRefused = 15,
    /// The remote end reset the connection.
    ConnectionReset = 16,
    /// The connection was aborted here.
    ConnectionAborted = 17,
    /// A datagram larger than the stack sends.
    DatagramTooLarge = 18,
    /// The name is not one the stack knows.
    NameUnresolvable = 19,
    /// The end of the stream: the peer sent everything it will (a receive's answer).
    Closed = 32,
    /// The request was malformed or broke a limit of the protocol.
    BadRequest = 33,
    /// No socket of this session has that number.
    BadSocket = 34,
}

impl SocketErrorCode {
    fn from_u8(code: u8) -> Option<SocketErrorCode> {
        use SocketErrorCode as C;
        Some(match code {
            1 => C::Unknown,
            2 => C::AccessDenied,
            3 => C::NotSupported,
            4 => C::InvalidArgument,
            5 => C::OutOfMemory,
            6 => C::Timeout,
            8 => C::NotInProgress,
            9 => C::WouldBlock,
            10 => C::InvalidState,
            11 => C::NewSocketLimit,
            12 => C::AddressNotBindable,
            13 => C::AddressInUse,
            14 => C::RemoteUnreachable,
            15 => C::ConnectionRefused,
            16 => C::ConnectionReset,
            17 => C::ConnectionAborted,
            18 => C::DatagramTooLarge,
            19 => C::NameUnresolvable,
            32 => C::Closed,
            33 => C::BadRequest,
            34 => C::BadSocket,
            _ => return None,
        })
    }
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A session (on the manifest connection): answered with [`Response::Session`].
    Open,
    /// A new TCP socket: [`Response::Socket`].
    Tcp(Family),
    /// A new UDP socket: [`Response::Socket`].
    Udp(Family),
    /// Binds the socket to a local address (port 0: any free port): [`Response::Done`].
    Bind { socket: SocketId, address: SocketAddr },
    /// Listens on a bound TCP socket: [`Response::Done`].
    Listen { socket: SocketId, backlog: u32 },
    /// A connection accepted on a listener, as a new socket: [`Response::Accepted`].
    Accept { socket: SocketId },
    /// Starts connecting a TCP socket: [`Response::Done`]; then [`Request::Connected`].
    Connect { socket: SocketId, address: SocketAddr },
    /// Whether the connect has finished: [`Response::Endpoints`], `would-block` while it goes
    /// on, or why it failed.
    Connected { socket: SocketId },
    /// Sends on a connected TCP socket: [`Response::Sent`], as many bytes as it took.
    Send { socket: SocketId, data: Vec<u8> },
    /// Receives at most `max` bytes: [`Response::Data`]; `closed` at the end of the stream.
    Receive { socket: SocketId, max: u32 },
    /// Sends one datagram: [`Response::Sent`].
    SendTo { socket: SocketId, address: SocketAddr, data: Vec<u8> },
    /// Receives one datagram: [`Response::Datagram`].
    ReceiveFrom { socket: SocketId },
    /// Ends one or both halves of a connection: [`Response::Done`].
    Shutdown { socket: SocketId, how: Shutdown },
    /// Closes the socket: [`Response::Done`].
    Close { socket: SocketId },
    /// The socket's local and remote addresses: [`Response::Endpoints`].
    Addresses { socket: SocketId },
    /// Waits until one of the sockets is ready for its interest or `timeout_ns` passes (`None`:
    /// as long as it takes): [`Response::Ready`] with the positions of those ready.
    Poll { interests: Vec<(SocketId, Interest)>, timeout_ns: Option<u64> },
    /// The addresses of a name: [`Response::Resolved`].
    Resolve { name: String },
}

/// The stack's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A session is open; its handle comes with the message.
    Session,
    /// A socket was made.
    Socket(SocketId),
    /// Done.
    Done,
    /// A connection accepted.
    Accepted { socket: SocketId, local: SocketAddr, remote: SocketAddr },
    /// Bytes taken to send.
    Sent(u32),
    /// Bytes received (at least one).
    Data(Vec<u8>),
    /// A datagram received, and who sent it.
    Datagram { address: SocketAddr, data: Vec<u8> },
    /// A socket's addresses.
    Endpoints { local: Option<SocketAddr>, remote: Option<SocketAddr> },
    /// The positions, in the poll's list, of the sockets that are ready (none: the timeout).
    Ready(Vec<u32>),
    /// A name's addresses.
    Resolved(Vec<IpAddr>),
    /// The request failed.
    Error {
        /// What kind of failure.
        code: SocketErrorCode,
        /// What happened, in words.
        message: String,
    },
}

impl Response {
    /// An [`Error`](Response::Error) response.
    pub fn error(code: SocketErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }
}

const TAG_OPEN: u8 = 0x01;
const TAG_TCP: u8 = 0x02;
const TAG_UDP: u8 = 0x03;
const TAG_BIND: u8 = 0x04;
const TAG_LISTEN: u8 = 0x05;
const TAG_ACCEPT: u8 = 0x06;
const TAG_CONNECT: u8 = 0x07;
const TAG_CONNECTED: u8 = 0x08;
const TAG_SEND: u8 = 0x09;
const TAG_RECEIVE: u8 = 0x0a;
const TAG_SEND_TO: u8 = 0x0b;
const TAG_RECEIVE_FROM: u8 = 0x0c;
const TAG_SHUTDOWN: u8 = 0x0d;
const TAG_CLOSE: u8 = 0x0e;
const TAG_ADDRESSES: u8 = 0x0f;
const TAG_POLL: u8 = 0x10;
const TAG_RESOLVE: u8 = 0x11;

const TAG_SESSION: u8 = 0x81;
const TAG_SOCKET: u8 = 0x82;
const TAG_DONE: u8 = 0x83;
const TAG_ACCEPTED: u8 = 0x84;
const TAG_SENT: u8 = 0x85;
const TAG_DATA: u8 = 0x86;
const TAG_DATAGRAM: u8 = 0x87;
const TAG_ENDPOINTS: u8 = 0x88;
const TAG_READY: u8 = 0x89;
const TAG_RESOLVED: u8 = 0x8a;
const TAG_ERROR: u8 = 0x8f;

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn put_address(out: &mut Vec<u8>, address: SocketAddr) {
    put_ip(out, address.ip());
    out.extend_from_slice(&address.port().to_le_bytes());
    if let SocketAddr::V6(v6) = address {
        put_u32(out, v6.flowinfo());
        put_u32(out, v6.scope_id());
    }
}

fn put_optional(out: &mut Vec<u8>, address: Option<SocketAddr>) {
    match address {
        None => out.push(0),
        Some(address) => {
            out.push(1);
            put_address(out, address);
        }
    }
}

fn family_byte(family: Family) -> u8 {
    match family {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

impl Reader<'_> {
    fn family(&mut self) -> Result<Family, DecodeError> {
        match self.u8("family")? {
            4 => Ok(Family::V4),
            6 => Ok(Family::V6),
            other => {
                Err(DecodeError::Invalid { field: "family", reason: alloc::format!("{other} is neither 4 nor 6") })
            }
        }
    }

    fn ip(&mut self) -> Result<IpAddr, DecodeError> {
        Ok(match self.family()? {
            Family::V4 => {
                let mut octets = [0; 4];
                octets.copy_from_slice(self.take("IPv4 address", 4)?);
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            Family::V6 => {
                let mut octets = [0; 16];
                octets.copy_from_slice(self.take("IPv6 address", 16)?);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        })
    }

    fn address(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = self.ip()?;
        let mut port = [0; 2];
        port.copy_from_slice(self.take("port", 2)?);
        let port = u16::from_le_bytes(port);
        Ok(match ip {
            IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            IpAddr::V6(v6) => {
                let (flowinfo, scope) = (self.u32("flow info")?, self.u32("scope id")?);
                SocketAddr::V6(SocketAddrV6::new(v6, port, flowinfo, scope))
            }
        })
    }

    fn optional_address(&mut self) -> Result<Option<SocketAddr>, DecodeError> {
        match self.u8("address present")? {
            0 => Ok(None),
            1 => Ok(Some(self.address()?)),
            other => Err(DecodeError::Invalid {
                field: "address present",
                reason: alloc::format!("{other} is neither 0 nor 1"),
            }),
        }
    }

    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > max {
            return Err(DecodeError::Oversized { field, len: count as u64, max: max as u64 });
        }
        Ok(count)
    }
}

impl Request {
    /// The request as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let socket_only = |out: &mut Vec<u8>, tag: u8, socket: SocketId| {
            out.push(tag);
            put_u32(out, socket);
        };
        match self {
            Request::Open => out.push(TAG_OPEN),
            Request::Tcp(family) => out.extend_from_slice(&[TAG_TCP, family_byte(*family)]),
            Request::Udp(family) => out.extend_from_slice(&[TAG_UDP, family_byte(*family)]),
            Request::Bind { socket, address } => {
                socket_only(&mut out, TAG_BIND, *socket);
                put_address(&mut out, *address);
            }
            Request::Listen { socket, backlog } => {
                socket_only(&mut out, TAG_LISTEN, *socket);
                put_u32(&mut out, *backlog);
            }
            Request::Accept { socket } => socket_only(&mut out, TAG_ACCEPT, *socket),
            Request::Connect { socket, address } => {
                socket_only(&mut out, TAG_CONNECT, *socket);
                put_address(&mut out, *address);
            }
            Request::Connected { socket } => socket_only(&mut out, TAG_CONNECTED, *socket),
            Request::Send { socket, data } => {
                socket_only(&mut out, TAG_SEND, *socket);
                put_bytes(&mut out, data);
            }
            Request::Receive { socket, max } => {
                socket_only(&mut out, TAG_RECEIVE, *socket);
                put_u32(&mut out, *max);
            }
            Request::SendTo { socket, address, data } => {
                socket_only(&mut out, TAG_SEND_TO, *socket);
                put_address(&mut out, *address);
                put_bytes(&mut out, data);
            }
            Request::ReceiveFrom { socket } => socket_only(&mut out, TAG_RECEIVE_FROM, *socket),
            Request::Shutdown { socket, how } => {
                socket_only(&mut out, TAG_SHUTDOWN, *socket);
                out.push(*how as u8);
            }
            Request::Close { socket } => socket_only(&mut out, TAG_CLOSE, *socket),
            Request::Addresses { socket } => socket_only(&mut out, TAG_ADDRESSES, *socket),
            Request::Poll { interests, timeout_ns } => {
                out.push(TAG_POLL);
                out.extend_from_slice(&timeout_ns.unwrap_or(u64::MAX).to_le_bytes());
                put_u32(&mut out, interests.len() as u32);
                for (socket, interest) in interests {
                    put_u32(&mut out, *socket);
                    out.push(*interest as u8);
                }
            }
            Request::Resolve { name } => {
                out.push(TAG_RESOLVE);
                put_bytes(&mut out, name.as_bytes());
            }
        }
        out
    }

    /// Decodes and checks a request: known tag, every field present and valid, no bytes left
    /// over, data within [`MAX_DATA_BYTES`], at most [`MAX_POLL`] sockets in a poll, a name of
    /// UTF-8 within [`MAX_NAME_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = match r.tag()? {
            TAG_OPEN => Request::Open,
            TAG_TCP => Request::Tcp(r.family()?),
            TAG_UDP => Request::Udp(r.family()?),
            TAG_BIND => Request::Bind { socket: r.u32("socket")?, address: r.address()? },
            TAG_LISTEN => Request::Listen { socket: r.u32("socket")?, backlog: r.u32("backlog")? },
            TAG_ACCEPT => Request::Accept { socket: r.u32("socket")? },
            TAG_CONNECT => Request::Connect { socket: r.u32("socket")?, address: r.address()? },
            TAG_CONNECTED => Request::Connected { socket: r.u32("socket")? },
            TAG_SEND => Request::Send { socket: r.u32("socket")?, data: r.bytes("data", MAX_DATA_BYTES)?.to_vec() },
            TAG_RECEIVE => Request::Receive { socket: r.u32("socket")?, max: r.u32("max")? },
            TAG_SEND_TO => Request::SendTo {
                socket: r.u32("socket")?,
                address: r.address()?,
                data: r.bytes("data", MAX_DATA_BYTES)?.to_vec(),
            },
            TAG_RECEIVE_FROM => Request::ReceiveFrom { socket: r.u32("socket")? },
            TAG_SHUTDOWN => {
                let socket = r.u32("socket")?;
                let how = match r.u8("shutdown")? {
                    1 => Shutdown::Receive,
                    2 => Shutdown::Send,
                    3 => Shutdown::Both,
                    other => {
                        return Err(DecodeError::Invalid {
                            field: "shutdown",
                            reason: alloc::format!("{other} is not 1, 2 or 3"),
                        });
                    }
                };
                Request::Shutdown { socket, how }
            }
            TAG_CLOSE => Request::Close { socket: r.u32("socket")? },
            TAG_ADDRESSES => Request::Addresses { socket: r.u32("socket")? },
            TAG_POLL => {
                let timeout = r.u64("timeout")?;
                let count = r.count("poll count", MAX_POLL)?;
                let mut interests = Vec::with_capacity(count);
                for _ in 0..count {
                    let socket = r.u32("socket")?;
                    let interest = match r.u8("interest")? {
                        1 => Interest::Readable,
                        2 => Interest::Writable,
                        other => {
                            return Err(DecodeError::Invalid {
                                field: "interest",
                                reason: alloc::format!("{other} is neither 1 nor 2"),
                            });
                        }
                    };
                    interests.push((socket, interest));
                }
                Request::Poll { interests, timeout_ns: (timeout != u64::MAX).then_some(timeout) }
            }
            TAG_RESOLVE => {
                let name = r.bytes("name", MAX_NAME_BYTES)?;
                let name = core::str::from_utf8(name)
                    .map_err(|e| DecodeError::Invalid { field: "name", reason: alloc::format!("not UTF-8: {e}") })?;
                Request::Resolve { name: name.into() }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "sockets request", tag }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The response as bytes. An error message longer than [`MAX_ERROR_MESSAGE_BYTES`] is cut
    /// short (at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Session => out.push(TAG_SESSION),
            Response::Socket(socket) => {
                out.push(TAG_SOCKET);
                put_u32(&mut out, *socket);
            }
            Response::Done => out.push(TAG_DONE),
            Response::Accepted { socket, local, remote } => {
                out.push(TAG_ACCEPTED);
                put_u32(&mut out, *socket);
                put_address(&mut out, *local);
                put_address(&mut out, *remote);
            }
            Response::Sent(count) => {
                out.push(TAG_SENT);
                put_u32(&mut out, *count);
            }
            Response::Data(data) => {
                out.push(TAG_DATA);
                put_bytes(&mut out, data);
            }
            Response::Datagram { address, data } => {
                out.push(TAG_DATAGRAM);
                put_address(&mut out, *address);
                put_bytes(&mut out, data);
            }
            Response::Endpoints { local, remote } => {
                out.push(TAG_ENDPOINTS);
                put_optional(&mut out, *local);
                put_optional(&mut out, *remote);
            }
            Response::Ready(positions) => {
                out.push(TAG_READY);
                put_u32(&mut out, positions.len() as u32);
                for position in positions {
                    put_u32(&mut out, *position);
                }
            }
            Response::Resolved(ips) => {
                out.push(TAG_RESOLVED);
                put_u32(&mut out, ips.len() as u32);
                for ip in ips {
                    put_ip(&mut out, *ip);
                }
            }
            Response::Error { code, message } => return error_message(TAG_ERROR, *code as u8, message),
        }
        out
    }

    /// Decodes and checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let response = match r.tag()? {
            TAG_SESSION => Response::Session,
            TAG_SOCKET => Response::Socket(r.u32("socket")?),
            TAG_DONE => Response::Done,
            TAG_ACCEPTED => Response::Accepted { socket: r.u32("socket")?, local: r.address()?, remote: r.address()? },
            TAG_SENT => Response::Sent(r.u32("count")?),
            TAG_DATA => Response::Data(r.bytes("data", MAX_DATA_BYTES)?.to_vec()),
            TAG_DATAGRAM => {
                Response::Datagram { address: r.address()?, data: r.bytes("data", MAX_DATA_BYTES)?.to_vec() }
            }
            TAG_ENDPOINTS => Response::Endpoints { local: r.optional_address()?, remote: r.optional_address()? },
            TAG_READY => {
                let count = r.count("ready count", MAX_POLL)?;
                let mut positions = vec![0; count];
                for position in &mut positions {
                    *position = r.u32("position")?;
                }
                Response::Ready(positions)
            }
            TAG_RESOLVED => {
                let count = r.count("address count", MAX_RESOLVED)?;
                let mut ips = Vec::with_capacity(count);
                for _ in 0..count {
                    ips.push(r.ip()?);
                }
                Response::Resolved(ips)
            }
            TAG_ERROR => {
                let (code, message) = r.error("sockets", SocketErrorCode::from_u8)?;
                Response::Error { code, message }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "sockets response", tag }),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
    }

    fn v6(port: u16) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 7, 3))
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Open,
            Request::Tcp(Family::V4),
            Request::Udp(Family::V6),
            Request::Bind { socket: 1, address: v4([0, 0, 0, 0], 8080) },
            Request::Bind { socket: 2, address: v6(0) },
            Request::Listen { socket: 1, backlog: 128 },
            Request::Accept { socket: 1 },
            Request::Connect { socket: 3, address: v4([10, 0, 2, 2], 80) },
            Request::Connected { socket: 3 },
            Request::Send { socket: 3, data: b"GET / HTTP/1.0\r\n\r\n".to_vec() },
            Request::Send { socket: 3, data: vec![7; MAX_DATA_BYTES] },
            Request::Receive { socket: 3, max: 65536 },
            Request::SendTo { socket: 4, address: v6(53), data: vec![1, 2, 3] },
            Request::ReceiveFrom { socket: 4 },
            Request::Shutdown { socket: 3, how: Shutdown::Send },
            Request::Close { socket: 3 },
            Request::Addresses { socket: 1 },
            Request::Poll { interests: vec![(1, Interest::Readable), (3, Interest::Writable)], timeout_ns: None },
            Request::Poll { interests: vec![], timeout_ns: Some(0) },
            Request::Resolve { name: "localhost".to_string() },
        ];
        for request in requests {
            let bytes = request.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
            assert_eq!(Request::decode(&bytes), Ok(request));
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            Response::Session,
            Response::Socket(9),
            Response::Done,
            Response::Accepted { socket: 5, local: v4([10, 0, 2, 15], 80), remote: v4([10, 0, 2, 2], 40000) },
            Response::Sent(1400),
            Response::Data(vec![9; MAX_DATA_BYTES]),
            Response::Datagram { address: v6(5353), data: vec![] },
            Response::Endpoints { local: Some(v4([10, 0, 2, 15], 80)), remote: None },
            Response::Endpoints { local: None, remote: Some(v6(1)) },
            Response::Ready(vec![0, 2]),
            Response::Resolved(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]),
            Response::error(SocketErrorCode::WouldBlock, "no connection to accept yet"),
            Response::error(SocketErrorCode::Closed, ""),
        ];
        for response in responses {
            let bytes = response.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
            assert_eq!(Response::decode(&bytes), Ok(response));
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_what_was_wrong() {
        let invalid = |bytes: &[u8]| Request::decode(bytes).expect_err("refused").to_string();
        assert_eq!(invalid(&[]), "empty message");
        assert_eq!(invalid(&[0x7f]), "unknown sockets request tag 0x7f");
        assert_eq!(invalid(&[TAG_TCP, 5]), "invalid family: 5 is neither 4 nor 6");
        assert!(invalid(&[TAG_BIND, 1, 0, 0, 0, 4, 10, 0]).starts_with("truncated message: IPv4 address"));
        assert_eq!(invalid(&[TAG_SHUTDOWN, 1, 0, 0, 0, 4]), "invalid shutdown: 4 is not 1, 2 or 3");
        let mut poll = vec![TAG_POLL];
        poll.extend_from_slice(&0u64.to_le_bytes());
        poll.extend_from_slice(&(MAX_POLL as u32 + 1).to_le_bytes());
        assert_eq!(invalid(&poll), "poll count is 1025, over the limit of 1024");
        let mut name = vec![TAG_RESOLVE];
        put_bytes(&mut name, &[0xff, 0xfe]);
        assert!(invalid(&name).starts_with("invalid name: not UTF-8"));
        let mut long = Request::Close { socket: 1 }.encode();
        long.push(0);
        assert_eq!(invalid(&long), "1 bytes after the end of the message");
        let too_much = Request::Send { socket: 1, data: vec![0; MAX_DATA_BYTES + 1] }.encode();
        assert!(invalid(&too_much).starts_with("data is 65473"), "{}", invalid(&too_much));
        assert_eq!(
            Response::decode(&[TAG_ERROR, 200, 0, 0, 0, 0]).expect_err("refused").to_string(),
            "invalid error code: 200 names no sockets error"
        );
    }
}
