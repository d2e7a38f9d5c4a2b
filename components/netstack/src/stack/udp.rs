//! UDP sockets of a session: a smoltcp UDP socket each, bound at the first `bind` (port 0: an
//! ephemeral one) or, unbound, at the first `send-to` (an ephemeral port, as POSIX does).
//! Datagrams to the stack's own address (or `127.0.0.0/8`) come back in through the loopback of
//! [`Stack::poll`], as TCP's do.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use mica_device::sockets::{Interest, Response, SocketErrorCode as Code, SocketId};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::{SessionId, Stack, error, std_address};

/// Datagrams each UDP socket queues each way, at most.
const QUEUED: usize = 16;

/// Bytes of datagrams each UDP socket queues each way, at most (and the largest datagram).
const BUFFER_BYTES: usize = 64 * 1024;

/// A UDP socket of a session.
#[derive(Debug)]
pub(super) enum Udp {
    /// Made, not bound.
    Fresh,
    /// Bound to `port` (`any`: to the unspecified address).
    Bound { port: u16, any: bool, handle: SocketHandle },
}

impl Stack {
    pub(super) fn is_udp(&self, session: SessionId, socket: SocketId) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.udp.contains_key(&socket))
    }

    fn udp_socket(&mut self, session: SessionId, socket: SocketId) -> Result<&mut Udp, Response> {
        if self.sessions.get(&session).is_some_and(|s| s.sockets.contains_key(&socket)) {
            return Err(error(Code::InvalidState, format!("socket {socket} is a TCP socket")));
        }
        self.sessions.get_mut(&session).and_then(|s| s.udp.get_mut(&socket)).ok_or_else(|| super::bad_socket(socket))
    }

    /// Binds `socket` to `port` (0: an ephemeral one).
    fn udp_bind_port(&mut self, session: SessionId, socket: SocketId, port: u16, any: bool) -> Result<(), Response> {
        let port = match port {
            0 => self.ephemeral().ok_or_else(|| error(Code::AddressInUse, "every ephemeral port is taken"))?,
            port if self.udp_ports.contains(&port) => {
                return Err(error(Code::AddressInUse, format!("UDP port {port} is taken by another socket")));
            }
            port => port,
        };
        if self.set.iter().count() >= super::MAX_SOCKETS {
            return Err(error(
                Code::NewSocketLimit,
                format!("the stack holds {} sockets, its most", super::MAX_SOCKETS),
            ));
        }
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; QUEUED], vec![0; BUFFER_BYTES]);
        let mut s = udp::Socket::new(buffer(), buffer());
        if let Err(e) = s.bind(port) {
            return Err(error(Code::Unknown, format!("smoltcp refused to bind UDP port {port}: {e}")));
        }
        let handle = self.set.add(s);
        self.udp_ports.insert(port);
        if let Ok(u) = self.udp_socket(session, socket) {
            *u = Udp::Bound { port, any, handle };
        }
        Ok(())
    }

    pub(super) fn udp_bind(&mut self, session: SessionId, socket: SocketId, address: SocketAddr) -> Response {
        match self.udp_socket(session, socket) {
            Ok(Udp::Fresh) => {}
            Ok(Udp::Bound { .. }) => return error(Code::InvalidState, format!("socket {socket} is bound already")),
            Err(e) => return e,
        }
        let v4 = match self.bindable(address) {
            Ok(v4) => v4,
            Err(e) => return e,
        };
        match self.udp_bind_port(session, socket, v4.port(), v4.ip().is_unspecified()) {
            Ok(()) => Response::Done,
            Err(e) => e,
        }
    }

    pub(super) fn send_to(
        &mut self,
        session: SessionId,
        socket: SocketId,
        address: SocketAddr,
        data: &[u8],
    ) -> Response {
        let SocketAddr::V4(v4) = address else {
            return error(Code::InvalidArgument, format!("{address} is not an IPv4 address (the socket is IPv4)"));
        };
        let ip = if v4.ip().is_loopback() { self.address } else { *v4.ip() };
        if ip.is_unspecified() || ip.is_multicast() || v4.port() == 0 {
            return error(Code::InvalidArgument, format!("{address} is not an address to send to"));
        }
        if data.len() > BUFFER_BYTES {
            return error(
                Code::DatagramTooLarge,
                format!("{} bytes is more than a datagram here ({BUFFER_BYTES})", data.len()),
            );
        }
        let handle = match self.udp_socket(session, socket) {
            Ok(Udp::Bound { handle, .. }) => *handle,
            Ok(Udp::Fresh) => {
                if let Err(e) = self.udp_bind_port(session, socket, 0, true) {
                    return e;
                }
                match self.udp_socket(session, socket) {
                    Ok(Udp::Bound { handle, .. }) => *handle,
                    _ => return error(Code::Unknown, "the socket did not bind"),
                }
            }
            Err(e) => return e,
        };
        let endpoint = IpEndpoint::new(IpAddress::Ipv4(ip), v4.port());
        match self.set.get_mut::<udp::Socket>(handle).send_slice(data, endpoint) {
            Ok(()) => Response::Sent(data.len() as u32),
            Err(udp::SendError::BufferFull) => error(Code::WouldBlock, "the send queue is full"),
            Err(udp::SendError::Unaddressable) => error(Code::RemoteUnreachable, format!("cannot send to {address}")),
        }
    }

    pub(super) fn receive_from(&mut self, session: SessionId, socket: SocketId) -> Response {
        let handle = match self.udp_socket(session, socket) {
            Ok(Udp::Bound { handle, .. }) => *handle,
            Ok(Udp::Fresh) => return error(Code::InvalidState, format!("socket {socket} is not bound")),
            Err(e) => return e,
        };
        match self.set.get_mut::<udp::Socket>(handle).recv() {
            Ok((data, meta)) => Response::Datagram { address: std_address(meta.endpoint), data: data.to_vec() },
            Err(_) => error(Code::WouldBlock, "no datagram yet"),
        }
    }

    pub(super) fn udp_close(&mut self, session: SessionId, socket: SocketId) -> Response {
        match self.sessions.get_mut(&session).and_then(|s| s.udp.remove(&socket)) {
            Some(udp) => {
                self.release_udp(udp);
                Response::Done
            }
            None => super::bad_socket(socket),
        }
    }

    pub(super) fn release_udp(&mut self, udp: Udp) {
        if let Udp::Bound { port, handle, .. } = udp {
            self.set.remove(handle);
            self.udp_ports.remove(&port);
        }
    }

    pub(super) fn udp_addresses(&mut self, session: SessionId, socket: SocketId) -> Response {
        let address = self.address;
        match self.udp_socket(session, socket) {
            Ok(Udp::Fresh) => Response::Endpoints { local: None, remote: None },
            Ok(Udp::Bound { port, any, .. }) => {
                let ip = if *any { Ipv4Addr::UNSPECIFIED } else { address };
                Response::Endpoints { local: Some(SocketAddr::V4(SocketAddrV4::new(ip, *port))), remote: None }
            }
            Err(e) => e,
        }
    }

    pub(super) fn udp_ready(&self, udp: &Udp, interest: Interest) -> bool {
        match udp {
            // Its receive fails at once; its first send binds it.
            Udp::Fresh => true,
            Udp::Bound { handle, .. } => {
                let s = self.set.get::<udp::Socket>(*handle);
                match interest {
                    Interest::Readable => s.can_recv(),
                    Interest::Writable => s.can_send(),
                }
            }
        }
    }
}
