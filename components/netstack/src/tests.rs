//! Two stacks wired back to back (each one's sent frames are the other's received ones), each
//! driven through the sockets protocol as a client would.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use mica_device::sockets::{Family, Interest, Request, Response, Shutdown, SocketErrorCode as Code};
use smoltcp::time::Instant;

use crate::stack::{NetConfig, SessionId, Stack};

const SESSION: SessionId = 7;

struct Pair {
    a: Stack,
    b: Stack,
    now: i64,
}

fn config(last: u8) -> NetConfig {
    NetConfig {
        mac: [0x02, 0, 0, 0, 0, last],
        address: Ipv4Addr::new(10, 0, 2, last),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 2, 2),
        random_seed: u64::from(last),
    }
}

fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, last), port))
}

fn code(response: Response) -> Code {
    match response {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

impl Pair {
    fn new() -> Pair {
        let mut a = Stack::new(config(15), Instant::from_millis(0)).expect("a");
        let mut b = Stack::new(config(16), Instant::from_millis(0)).expect("b");
        a.open_session(SESSION);
        b.open_session(SESSION);
        Pair { a, b, now: 0 }
    }

    /// Ten rounds of 10 ms: each stack polls, and the frames cross.
    fn pump(&mut self) {
        for _ in 0..10 {
            self.now += 10;
            let now = Instant::from_millis(self.now);
            self.a.poll(now);
            self.b.poll(now);
            self.b.device.rx.extend(self.a.device.tx.drain(..));
            self.a.device.rx.extend(self.b.device.tx.drain(..));
            self.a.poll(now);
            self.b.poll(now);
        }
    }

    fn socket(stack: &mut Stack) -> u32 {
        match stack.handle(SESSION, Request::Tcp(Family::V4)) {
            Response::Socket(id) => id,
            other => panic!("no socket: {other:?}"),
        }
    }
}

/// `a` listens on port 80, `b` connects: the listener, the two ends and `b`'s local address.
fn connected(p: &mut Pair) -> (u32, u32, u32, SocketAddr) {
    let listener = Pair::socket(&mut p.a);
    assert_eq!(p.a.handle(SESSION, Request::Bind { socket: listener, address: v4(0, 80).map_ip() }), Response::Done);
    assert_eq!(p.a.handle(SESSION, Request::Listen { socket: listener, backlog: 2 }), Response::Done);
    // Bound to the unspecified address, its local address says so (as `getsockname` does).
    assert_eq!(
        p.a.handle(SESSION, Request::Addresses { socket: listener }),
        Response::Endpoints { local: Some(v4(0, 80).map_ip()), remote: None }
    );
    assert_eq!(p.a.ready(SESSION, &[(listener, Interest::Readable)]), Vec::<u32>::new(), "nobody connected yet");
    let client = Pair::socket(&mut p.b);
    assert_eq!(p.b.handle(SESSION, Request::Connect { socket: client, address: v4(15, 80) }), Response::Done);
    assert_eq!(code(p.b.handle(SESSION, Request::Connected { socket: client })), Code::WouldBlock);
    assert_eq!(code(p.a.handle(SESSION, Request::Accept { socket: listener })), Code::WouldBlock);
    p.pump();
    assert_eq!(p.b.ready(SESSION, &[(client, Interest::Writable)]), [0]);
    let Response::Endpoints { local: Some(local), remote: Some(remote) } =
        p.b.handle(SESSION, Request::Connected { socket: client })
    else {
        panic!("not connected")
    };
    assert_eq!(remote, v4(15, 80));
    assert_eq!(local.ip(), v4(16, 0).ip());
    assert_eq!(p.a.ready(SESSION, &[(listener, Interest::Readable)]), [0], "a connection to accept");
    let Response::Accepted { socket: server, local: l, remote: r } =
        p.a.handle(SESSION, Request::Accept { socket: listener })
    else {
        panic!("nothing accepted")
    };
    assert_eq!((l, r), (v4(15, 80), local));
    (listener, server, client, local)
}

trait MapIp {
    fn map_ip(self) -> SocketAddr;
}

impl MapIp for SocketAddr {
    /// `10.0.2.0:port` stands for the unspecified address.
    fn map_ip(self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.port()))
    }
}

#[test]
fn a_connection_carries_bytes_both_ways_and_ends_in_order() {
    let mut p = Pair::new();
    let (_, server, client, _) = connected(&mut p);
    assert_eq!(p.b.handle(SESSION, Request::Send { socket: client, data: b"hello".to_vec() }), Response::Sent(5));
    assert_eq!(p.a.ready(SESSION, &[(server, Interest::Readable)]), Vec::<u32>::new());
    p.pump();
    assert_eq!(p.a.ready(SESSION, &[(server, Interest::Readable), (server, Interest::Writable)]), [0, 1]);
    assert_eq!(p.a.handle(SESSION, Request::Receive { socket: server, max: 3 }), Response::Data(b"hel".to_vec()));
    assert_eq!(p.a.handle(SESSION, Request::Receive { socket: server, max: 100 }), Response::Data(b"lo".to_vec()));
    assert_eq!(code(p.a.handle(SESSION, Request::Receive { socket: server, max: 100 })), Code::WouldBlock);

    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let Response::Sent(first) = p.a.handle(SESSION, Request::Send { socket: server, data: big.clone() }) else {
        panic!("no send")
    };
    assert!(first > 0 && (first as usize) < big.len(), "a full buffer takes part: {first}");
    let mut sent = first as usize;
    let mut got = Vec::new();
    for _ in 0..100 {
        p.pump();
        while let Response::Data(d) = p.b.handle(SESSION, Request::Receive { socket: client, max: 65536 }) {
            got.extend(d);
        }
        if sent < big.len()
            && let Response::Sent(n) = p.a.handle(SESSION, Request::Send { socket: server, data: big[sent..].to_vec() })
        {
            sent += n as usize;
        }
        if got.len() == big.len() {
            break;
        }
    }
    assert_eq!(got, big, "every byte, in order");

    // b shuts its sending down: a reads the end of the stream, and can still send.
    assert_eq!(p.b.handle(SESSION, Request::Shutdown { socket: client, how: Shutdown::Send }), Response::Done);
    p.pump();
    assert_eq!(p.a.ready(SESSION, &[(server, Interest::Readable)]), [0]);
    assert_eq!(code(p.a.handle(SESSION, Request::Receive { socket: server, max: 10 })), Code::Closed);
    assert_eq!(p.a.handle(SESSION, Request::Send { socket: server, data: b"bye".to_vec() }), Response::Sent(3));
    assert_eq!(p.a.handle(SESSION, Request::Close { socket: server }), Response::Done);
    p.pump();
    assert_eq!(p.b.handle(SESSION, Request::Receive { socket: client, max: 10 }), Response::Data(b"bye".to_vec()));
    assert_eq!(code(p.b.handle(SESSION, Request::Receive { socket: client, max: 10 })), Code::Closed);
    assert_eq!(code(p.a.handle(SESSION, Request::Receive { socket: server, max: 10 })), Code::BadSocket);
}

#[test]
fn a_listener_accepts_one_connection_after_another() {
    let mut p = Pair::new();
    let (listener, first, _, first_local) = connected(&mut p);
    let second = Pair::socket(&mut p.b);
    assert_eq!(p.b.handle(SESSION, Request::Connect { socket: second, address: v4(15, 80) }), Response::Done);
    p.pump();
    let Response::Accepted { socket, remote, .. } = p.a.handle(SESSION, Request::Accept { socket: listener }) else {
        panic!("the second connection was not accepted")
    };
    assert_ne!(socket, first);
    assert_ne!(remote, first_local, "another connection, from another port");
    assert_eq!(code(p.a.handle(SESSION, Request::Accept { socket: listener })), Code::WouldBlock);
}

#[test]
fn mistakes_get_the_error_wasi_sockets_names() {
    let mut p = Pair::new();
    let (listener, ..) = connected(&mut p);
    let s = Pair::socket(&mut p.a);
    assert_eq!(code(p.a.handle(SESSION, Request::Bind { socket: s, address: v4(0, 80).map_ip() })), Code::AddressInUse);
    assert_eq!(code(p.a.handle(SESSION, Request::Bind { socket: s, address: v4(99, 81) })), Code::AddressNotBindable);
    assert_eq!(code(p.a.handle(SESSION, Request::Listen { socket: s, backlog: 1 })), Code::InvalidState);
    assert_eq!(code(p.a.handle(SESSION, Request::Send { socket: s, data: vec![1] })), Code::InvalidState);
    assert_eq!(code(p.a.handle(SESSION, Request::Connected { socket: s })), Code::NotInProgress);
    assert_eq!(code(p.a.handle(SESSION, Request::Accept { socket: s })), Code::InvalidState);
    assert_eq!(code(p.a.handle(SESSION, Request::Receive { socket: 999, max: 1 })), Code::BadSocket);
    assert_eq!(code(p.a.handle(SESSION, Request::Tcp(Family::V6))), Code::NotSupported);
    assert_eq!(code(p.a.handle(SESSION, Request::Udp(Family::V6))), Code::NotSupported);
    assert_eq!(code(p.a.handle(SESSION, Request::Resolve { name: "example.org".into() })), Code::NameUnresolvable);
    assert_eq!(
        p.a.handle(SESSION, Request::Resolve { name: "10.0.2.2".into() }),
        Response::Resolved(vec![v4(2, 0).ip()])
    );
    assert_eq!(code(p.a.handle(99, Request::Tcp(Family::V4))), Code::BadRequest, "no such session");
    // Another session cannot name this one's sockets.
    p.a.open_session(SESSION + 1);
    assert_eq!(code(p.a.handle(SESSION + 1, Request::Accept { socket: listener })), Code::BadSocket);
    // Port 80 comes free when its listener closes.
    assert_eq!(p.a.handle(SESSION, Request::Close { socket: listener }), Response::Done);
    assert_eq!(p.a.handle(SESSION, Request::Bind { socket: s, address: v4(15, 80) }), Response::Done);
}

#[test]
fn a_connect_nobody_answers_is_refused_and_a_dead_session_resets_its_connections() {
    let mut p = Pair::new();
    let lonely = Pair::socket(&mut p.b);
    assert_eq!(p.b.handle(SESSION, Request::Connect { socket: lonely, address: v4(15, 81) }), Response::Done);
    p.pump();
    assert_eq!(p.b.ready(SESSION, &[(lonely, Interest::Writable)]), [0]);
    assert_eq!(code(p.b.handle(SESSION, Request::Connected { socket: lonely })), Code::ConnectionRefused);

    let (_, _, client, _) = connected(&mut p);
    p.a.close_session(SESSION);
    assert_eq!(p.a.sessions(), 0);
    p.pump();
    assert_eq!(p.b.ready(SESSION, &[(client, Interest::Readable)]), [0]);
    assert_eq!(code(p.b.handle(SESSION, Request::Receive { socket: client, max: 10 })), Code::Closed);
    assert_eq!(code(p.b.handle(SESSION, Request::Send { socket: client, data: vec![1] })), Code::ConnectionReset);
}

#[test]
fn two_sessions_of_one_stack_connect_to_each_other_through_its_own_address() {
    let mut p = Pair::new();
    let other: SessionId = SESSION + 1;
    p.a.open_session(other);
    let listener = Pair::socket(&mut p.a);
    assert_eq!(p.a.handle(SESSION, Request::Bind { socket: listener, address: v4(0, 7).map_ip() }), Response::Done);
    assert_eq!(p.a.handle(SESSION, Request::Listen { socket: listener, backlog: 1 }), Response::Done);
    let Response::Resolved(ips) = p.a.handle(other, Request::Resolve { name: "localhost".into() }) else {
        panic!("localhost unresolved")
    };
    assert_eq!(ips, [v4(15, 0).ip()], "localhost is the stack's own address");
    let Response::Socket(client) = p.a.handle(other, Request::Tcp(Family::V4)) else { panic!("no socket") };
    let loopback = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7));
    assert_eq!(p.a.handle(other, Request::Connect { socket: client, address: loopback }), Response::Done);
    p.pump();
    assert!(p.b.device.rx.is_empty() && p.b.device.tx.is_empty(), "nothing went out on the wire");
    assert!(matches!(p.a.handle(other, Request::Connected { socket: client }), Response::Endpoints { .. }));
    let Response::Accepted { socket: server, .. } = p.a.handle(SESSION, Request::Accept { socket: listener }) else {
        panic!("not accepted")
    };
    assert_eq!(p.a.handle(other, Request::Send { socket: client, data: b"ping".to_vec() }), Response::Sent(4));
    p.pump();
    assert_eq!(p.a.handle(SESSION, Request::Receive { socket: server, max: 10 }), Response::Data(b"ping".to_vec()));
    assert_eq!(p.a.handle(SESSION, Request::Send { socket: server, data: b"pong".to_vec() }), Response::Sent(4));
    p.pump();
    assert_eq!(p.a.handle(other, Request::Receive { socket: client, max: 10 }), Response::Data(b"pong".to_vec()));
}

fn udp_socket(stack: &mut Stack) -> u32 {
    match stack.handle(SESSION, Request::Udp(Family::V4)) {
        Response::Socket(id) => id,
        other => panic!("no UDP socket: {other:?}"),
    }
}

#[test]
fn datagrams_cross_both_ways_and_come_back_to_their_own_stack() {
    let mut p = Pair::new();
    let server = udp_socket(&mut p.a);
    assert_eq!(p.a.handle(SESSION, Request::Bind { socket: server, address: v4(0, 53).map_ip() }), Response::Done);
    assert_eq!(
        p.a.handle(SESSION, Request::Addresses { socket: server }),
        Response::Endpoints { local: Some(v4(0, 53).map_ip()), remote: None }
    );
    assert_eq!(code(p.a.handle(SESSION, Request::ReceiveFrom { socket: server })), Code::WouldBlock);
    assert_eq!(p.a.ready(SESSION, &[(server, Interest::Readable)]), Vec::<u32>::new(), "nothing came yet");
    // An unbound socket's first send binds it to an ephemeral port.
    let client = udp_socket(&mut p.b);
    let sent = p.b.handle(SESSION, Request::SendTo { socket: client, address: v4(15, 53), data: b"query".to_vec() });
    assert_eq!(sent, Response::Sent(5));
    let Response::Endpoints { local: Some(from), .. } = p.b.handle(SESSION, Request::Addresses { socket: client })
    else {
        panic!("the client is bound")
    };
    assert!(from.port() >= 49152, "{from}");
    p.pump();
    assert_eq!(p.a.ready(SESSION, &[(server, Interest::Readable)]), vec![0]);
    let Response::Datagram { address, data } = p.a.handle(SESSION, Request::ReceiveFrom { socket: server }) else {
        panic!("no datagram")
    };
    assert_eq!((address, data.as_slice()), (v4(16, from.port()), &b"query"[..]));
    assert_eq!(
        p.a.handle(SESSION, Request::SendTo { socket: server, address, data: b"answer".to_vec() }),
        Response::Sent(6)
    );
    p.pump();
    assert_eq!(
        p.b.handle(SESSION, Request::ReceiveFrom { socket: client }),
        Response::Datagram { address: v4(15, 53), data: b"answer".to_vec() }
    );
    // To its own stack through 127.0.0.1: nothing reaches the other stack.
    let local = udp_socket(&mut p.a);
    let to_self = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53));
    assert_eq!(
        p.a.handle(SESSION, Request::SendTo { socket: local, address: to_self, data: b"me".to_vec() }),
        Response::Sent(2)
    );
    p.b.device.rx.clear();
    p.pump();
    assert!(matches!(
        p.a.handle(SESSION, Request::ReceiveFrom { socket: server }),
        Response::Datagram { data, .. } if data == b"me"
    ));
    // Mistakes: a port taken, TCP requests on a UDP socket, too large, nowhere to send.
    let other = udp_socket(&mut p.a);
    assert_eq!(code(p.a.handle(SESSION, Request::Bind { socket: other, address: v4(15, 53) })), Code::AddressInUse);
    assert_eq!(code(p.a.handle(SESSION, Request::Listen { socket: other, backlog: 1 })), Code::InvalidState);
    assert_eq!(code(p.a.handle(SESSION, Request::ReceiveFrom { socket: other })), Code::InvalidState);
    let huge = vec![0; 70_000];
    assert_eq!(
        code(p.a.handle(SESSION, Request::SendTo { socket: other, address: v4(16, 9), data: huge })),
        Code::DatagramTooLarge
    );
    assert_eq!(
        code(p.a.handle(SESSION, Request::SendTo { socket: other, address: v4(16, 0), data: vec![1] })),
        Code::InvalidArgument
    );
    // Closing frees the port; a session's end frees its sockets' ports too.
    assert_eq!(p.a.handle(SESSION, Request::Close { socket: server }), Response::Done);
    assert_eq!(p.a.handle(SESSION, Request::Bind { socket: other, address: v4(15, 53) }), Response::Done);
    p.a.close_session(SESSION);
    p.a.open_session(SESSION);
    let again = udp_socket(&mut p.a);
    assert_eq!(p.a.handle(SESSION, Request::Bind { socket: again, address: v4(15, 53) }), Response::Done);
}
