//! The TCP/IP side: a smoltcp interface over frames queued in memory ([`FrameDevice`]), and the
//! HTTP server on its TCP sockets ([`Server`]). Nothing here talks to the driver: the caller
//! moves frames between the queues and the network, so the whole server runs in host tests too.

use std::time::Duration;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as NetDuration, Instant};
use smoltcp::wire::IpEndpoint;

use crate::http::{self, Answer, Head, Request, Status};
use crate::kv::Store;
use crate::routes::{self, Route};

/// The port served.
pub const PORT: u16 = 80;

/// Each socket's receive and transmit buffer.
const SOCKET_BUFFER_BYTES: usize = 8192;

/// How long a connection may take to send its request, or to see its answer acknowledged and
/// closed, before it is cut off.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

pub use netstack::device::{FrameDevice, NetConfig};

/// A request answered, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Who asked.
    pub peer: Option<IpEndpoint>,
    /// The request line, or what was wrong with it.
    pub request: String,
    /// The status answered.
    pub status: u16,
}

/// Where one socket is in serving a connection.
#[derive(Debug)]
enum Conn {
    /// Listening, or about to listen again.
    Idle,
    /// Connected (or connecting), reading the request head.
    Reading { head: Vec<u8>, since: Instant },
    /// Reading the request body, `length` bytes.
    Body { request: Request, route: Route, body: Vec<u8>, length: usize, since: Instant },
    /// Sending the answer, then closing.
    Writing { answer: Vec<u8>, sent: usize, since: Instant },
    /// Closed our side; waiting for the connection to end.
    Closing { since: Instant },
}

/// The HTTP server: an interface and its listening sockets.
pub struct Server {
    /// The frames in and out.
    pub device: FrameDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<(SocketHandle, Conn)>,
    served: u64,
    accepting: bool,
    store: Option<Box<dyn Store>>,
}

/// Fails when the interface cannot be set up, or a socket cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// smoltcp's tables are too small for the configuration.
    #[error(transparent)]
    Interface(#[from] netstack::device::SetupError),
    /// A socket refused to listen.
    #[error("a socket cannot listen on port {PORT}: {0}")]
    Listen(tcp::ListenError),
}

fn net_duration(d: Duration) -> NetDuration {
    NetDuration::from_micros(d.as_micros().try_into().unwrap_or(u64::MAX))
}

impl Server {
    /// An interface with `config` and `sockets` sockets listening on [`PORT`].
    pub fn new(config: NetConfig, sockets: usize, now: Instant) -> Result<Server, SetupError> {
        let mut device = FrameDevice::default();
        let iface = netstack::device::interface(&config, &mut device, now)?;
        let mut set = SocketSet::new(Vec::new());
        let mut conns = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
                tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
            );
            socket.set_timeout(Some(net_duration(CONNECTION_TIMEOUT)));
            socket.set_nagle_enabled(false);
            socket.listen(PORT).map_err(SetupError::Listen)?;
            conns.push((set.add(socket), Conn::Idle));
        }
        Ok(Server { device, iface, sockets: set, conns, served: 0, accepting: true, store: None })
    }

    /// Serves `/kv/KEY` from `store`.
    pub fn with_store(mut self, store: Box<dyn Store>) -> Server {
        self.store = Some(store);
        self
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Stops taking new connections: sockets no longer listen once their connection ends.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
        for (handle, conn) in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            if matches!(conn, Conn::Idle) && socket.is_listening() {
                socket.abort();
            }
        }
    }

    /// Whether no connection is in progress (every socket listening or closed).
    pub fn is_quiet(&self) -> bool {
        self.conns.iter().all(|(_, conn)| matches!(conn, Conn::Idle))
    }

    /// Processes the frames in `device.rx`, serves the sockets and queues what is to be sent in
    /// `device.tx`. Returns the requests answered.
    pub fn poll(&mut self, now: Instant) -> Vec<Served> {
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let mut answered = Vec::new();
        for (handle, conn) in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            let store = self.store.as_mut().map(|s| &mut **s as &mut dyn Store);
            if let Some(served) = step(socket, conn, now, self.served + 1, self.accepting, store) {
                self.served += 1;
                answered.push(served);
            }
        }
        // What the sockets have to send now goes out in this round.
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        answered
    }

    /// How long until the interface needs polling again if no frame comes (`None`: no timer
    /// runs).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface.poll_delay(now, &self.sockets).map(|d| Duration::from_micros(d.total_micros()))
    }
}

/// The request line, for the log.
fn describe(request: &Request) -> String {
    format!("{} {} {}", request.line.method, request.line.path, request.line.version)
}

/// An answer to send, and the request it answers (for the log).
type Reply = (String, Answer);

/// Moves one socket's connection on; returns the request it answered, if it answered one.
/// `number` is the number of requests answered once this one is, for `/stats`.
///
/// A connection goes through [`Conn`]'s states in order, as far as it can in one call: a
/// request read whole in one go is answered in the same call.
fn step(
    socket: &mut tcp::Socket,
    conn: &mut Conn,
    now: Instant,
    number: u64,
    accepting: bool,
    store: Option<&mut dyn Store>,
) -> Option<Served> {
    follow_socket(socket, conn, now, accepting);
    let reply = match read_head(socket, conn, now, store.is_some()) {
        Some(reply) => Some(reply),
        None => read_body(socket, conn, now, number, store),
    };
    let answered = reply.map(|reply| start_writing(socket, conn, now, reply));
    write_answer(socket, conn, now);
    wait_for_close(socket, conn, now, accepting);
    answered
}

/// Whether a connection that started at `since` has run out of time.
fn timed_out(now: Instant, since: Instant) -> bool {
    now - since > net_duration(CONNECTION_TIMEOUT)
}

/// Gives up on the connection: resets it and frees the socket.
fn cut_off(socket: &mut tcp::Socket, conn: &mut Conn) {
    socket.abort();
    *conn = Conn::Idle;
}

/// Moves up to `limit` bytes in all of what the socket has received onto `into`.
fn receive(socket: &mut tcp::Socket, into: &mut Vec<u8>, limit: usize) {
    let mut chunk = [0u8; 1024];
    while into.len() < limit && socket.can_recv() {
        let room = chunk.len().min(limit - into.len());
        match socket.recv_slice(&mut chunk[..room]) {
            Ok(0) | Err(_) => break,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Keeps `conn` in step with the socket: a connection the peer reset (or smoltcp gave up on)
/// frees the socket, a new one starts reading its request, and a free socket that no longer
/// listens listens again while the server is accepting.
fn follow_socket(socket: &mut tcp::Socket, conn: &mut Conn, now: Instant, accepting: bool) {
    if !matches!(conn, Conn::Idle) && !socket.is_open() {
        *conn = Conn::Idle;
    }
    if let Conn::Idle = conn {
        if socket.is_active() {
            *conn = Conn::Reading { head: Vec::new(), since: now };
        } else if !socket.is_open() && accepting {
            // Only fails for an open socket, and this one is not.
            let _ = socket.listen(PORT);
        }
    }
}

/// Reads the request head while `conn` is [`Conn::Reading`]: once it is whole, moves on to
/// reading the body, or returns the refusal to send.
fn read_head(socket: &mut tcp::Socket, conn: &mut Conn, now: Instant, has_store: bool) -> Option<Reply> {
    let Conn::Reading { head, since } = conn else { return None };
    let started = *since;
    receive(socket, head, http::MAX_HEAD_BYTES);
    // The peer has closed its side: no more of the request will come.
    let peer_done = socket.state() == tcp::State::CloseWait;
    match http::parse(head) {
        Head::Incomplete if head.is_empty() && peer_done => {
            // Connected and left without asking anything.
            socket.close();
            *conn = Conn::Closing { since: now };
            None
        }
        Head::Incomplete if peer_done => {
            let why = "the request head ended before its blank line";
            Some((format!("unreadable request ({why})"), Answer::error(Status::BadRequest, why)))
        }
        Head::Incomplete => {
            if timed_out(now, started) {
                cut_off(socket, conn);
            }
            None
        }
        Head::Bad(status, why) => Some((format!("unreadable request ({why})"), Answer::error(status, &why))),
        Head::Request(request) => {
            let route = routes::route(&request.line, has_store);
            match routes::body_length(&route, &request) {
                Err(answer) => Some((describe(&request), answer)),
                Ok(length) => {
                    *conn = start_body(socket, request, route, &head[..], length, started);
                    None
                }
            }
        }
    }
}

/// The connection reading the body of `request` (`length` bytes), from whatever of it came
/// with the head in `received`; asks the client to go on if it waits to be asked.
fn start_body(
    socket: &mut tcp::Socket,
    request: Request,
    route: Route,
    received: &[u8],
    length: usize,
    since: Instant,
) -> Conn {
    let mut body = received[request.head_len..].to_vec();
    body.truncate(length);
    if body.len() < length && request.expect_continue && request.line.version == "HTTP/1.1" {
        // Nothing was sent yet, so this fits the send buffer; if it did not go out, the client
        // sends the body after waiting a little anyway.
        let _ = socket.send_slice(http::CONTINUE);
    }
    Conn::Body { request, route, body, length, since }
}

/// Reads the request body while `conn` is [`Conn::Body`]: once it is whole, returns the answer
/// to the request; if it ends short, the refusal.
fn read_body(
    socket: &mut tcp::Socket,
    conn: &mut Conn,
    now: Instant,
    number: u64,
    store: Option<&mut dyn Store>,
) -> Option<Reply> {
    let Conn::Body { request, route, body, length, since } = conn else { return None };
    receive(socket, body, *length);
    if body.len() == *length {
        let answer = routes::respond(route, request.line.method == "HEAD", body, number, store);
        Some((describe(request), answer))
    } else if socket.state() == tcp::State::CloseWait {
        let why = format!("the body ended after {} of its {length} bytes", body.len());
        Some((describe(request), Answer::error(Status::BadRequest, &why)))
    } else {
        if timed_out(now, *since) {
            cut_off(socket, conn);
        }
        None
    }
}

/// Moves `conn` on to sending the answer in `reply`; returns the log line for it.
fn start_writing(socket: &tcp::Socket, conn: &mut Conn, now: Instant, (request, answer): Reply) -> Served {
    *conn = Conn::Writing { answer: answer.to_bytes(), sent: 0, since: now };
    Served { peer: socket.remote_endpoint(), request, status: answer.status.code() }
}

/// Sends what the socket takes of the answer while `conn` is [`Conn::Writing`], and closes
/// once all of it is sent.
fn write_answer(socket: &mut tcp::Socket, conn: &mut Conn, now: Instant) {
    let Conn::Writing { answer, sent, since } = conn else { return };
    if socket.can_send()
        && let Ok(n) = socket.send_slice(&answer[*sent..])
    {
        *sent += n;
    }
    if *sent == answer.len() {
        socket.close();
        *conn = Conn::Closing { since: now };
    } else if !socket.may_send() || timed_out(now, *since) {
        cut_off(socket, conn);
    }
}

/// Frees the socket once the connection has ended while `conn` is [`Conn::Closing`] (listening
/// again while the server is accepting), or cuts it off when that takes too long.
fn wait_for_close(socket: &mut tcp::Socket, conn: &mut Conn, now: Instant, accepting: bool) {
    let Conn::Closing { since } = conn else { return };
    if !socket.is_open() {
        *conn = Conn::Idle;
        if accepting {
            let _ = socket.listen(PORT);
        }
    } else if timed_out(now, *since) {
        cut_off(socket, conn);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use smoltcp::iface::Config;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

    use super::*;
    use crate::kv::fake::Fake;

    const SERVER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const CLIENT_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

    fn server(now: Instant) -> Server {
        let config = NetConfig {
            mac: SERVER_MAC,
            address: Ipv4Address::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Address::new(10, 0, 2, 2),
            random_seed: 7,
        };
        Server::new(config, 4, now).expect("server")
    }

    /// The other end: a smoltcp interface at 10.0.2.2 with client sockets.
    struct Client {
        device: FrameDevice,
        iface: Interface,
        sockets: SocketSet<'static>,
        /// Requests to send once their connection is established, in parts each sent once the
        /// one before is acknowledged (so in segments of their own), and whether to close the
        /// connection after the last.
        unsent: Vec<(SocketHandle, VecDeque<Vec<u8>>, bool)>,
    }

    impl Client {
        fn new(now: Instant) -> Client {
            let mut device = FrameDevice::default();
            let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(CLIENT_MAC)));
            config.random_seed = 99;
            let mut iface = Interface::new(config, &mut device, now);
            iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 2), 24)).expect("address"));
            Client { device, iface, sockets: SocketSet::new(Vec::new()), unsent: Vec::new() }
        }

        fn connect(&mut self, port: u16, request: &[u8]) -> SocketHandle {
            self.connect_parts(port, &[request], false)
        }

        /// Connects and sends `parts` in segments of their own, then closes if `close`.
        fn connect_parts(&mut self, port: u16, parts: &[&[u8]], close: bool) -> SocketHandle {
            let mut socket =
                tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
            socket.connect(self.iface.context(), (IpAddress::v4(10, 0, 2, 15), PORT), port).expect("connect");
            let handle = self.sockets.add(socket);
            self.unsent.push((handle, parts.iter().map(|p| p.to_vec()).collect(), close));
            handle
        }

        /// Sends the next part of the requests whose connection is established and whose
        /// parts sent so far are acknowledged.
        fn send_requests(&mut self) {
            let sockets = &mut self.sockets;
            self.unsent.retain_mut(|(handle, parts, close)| {
                let socket = sockets.get_mut::<tcp::Socket>(*handle);
                if !socket.can_send() || socket.send_queue() > 0 {
                    return true;
                }
                let Some(part) = parts.pop_front() else {
                    if *close {
                        socket.close();
                    }
                    return false;
                };
                assert_eq!(socket.send_slice(&part), Ok(part.len()), "the request fits the buffer");
                true
            });
        }
    }

    /// Runs both ends, moving frames both ways, until `done` or 30 simulated seconds; returns
    /// the requests the server answered and the time reached.
    fn run(
        server: &mut Server,
        client: &mut Client,
        mut now: Instant,
        mut done: impl FnMut(&mut Server, &mut Client) -> bool,
    ) -> (Vec<Served>, Instant) {
        let mut served = Vec::new();
        let end = now + NetDuration::from_secs(30);
        while now < end {
            served.extend(server.poll(now));
            client.iface.poll(now, &mut client.device, &mut client.sockets);
            client.send_requests();
            for (_, socket) in client.sockets.iter_mut() {
                // Like an HTTP client: close once the server has closed its side.
                if let smoltcp::socket::Socket::Tcp(s) = socket
                    && s.state() == tcp::State::CloseWait
                {
                    s.close();
                }
            }
            server.device.rx.extend(client.device.tx.drain(..));
            client.device.rx.extend(server.device.tx.drain(..));
            if done(server, client) {
                break;
            }
            now += NetDuration::from_millis(1);
        }
        (served, now)
    }

    /// Everything the server sent on a client socket.
    fn received(client: &mut Client, handle: SocketHandle) -> String {
        let socket = client.sockets.get_mut::<tcp::Socket>(handle);
        let mut out = vec![0; 65536];
        let n = socket.recv_slice(&mut out).unwrap_or(0);
        String::from_utf8_lossy(&out[..n]).into_owned()
    }

    fn all_closed(server: &Server, client: &Client) -> bool {
        server.is_quiet()
            && client.sockets.iter().all(|(_, s)| !matches!(s, smoltcp::socket::Socket::Tcp(t) if t.is_open()))
    }

    #[test]
    fn serves_overlapping_requests_then_closes() {
        let now = Instant::from_millis(0);
        let mut server = server(now);
        let mut client = Client::new(now);
        let requests = [
            (&b"GET / HTTP/1.1\r\nHost: 10.0.2.15\r\n\r\n"[..], "200 OK", http::HELLO),
            (b"GET /missing HTTP/1.0\r\n\r\n", "404 Not Found", "no such page: /missing\n"),
            (b"GET /stats HTTP/1.1\r\n\r\n", "200 OK", "requests served: "),
        ];
        let handles: Vec<SocketHandle> =
            requests.iter().enumerate().map(|(i, (r, _, _))| client.connect(49152 + i as u16, r)).collect();
        let (served, _) = run(&mut server, &mut client, now, |s, c| all_closed(s, c) && s.served() == 3);
        assert_eq!(server.served(), 3);
        assert_eq!(served.len(), 3);
        assert!(served.iter().all(|s| s.peer.is_some_and(|p| p.addr == IpAddress::v4(10, 0, 2, 2))));
        for (handle, (_, status, body)) in handles.into_iter().zip(requests) {
            let answer = received(&mut client, handle);
            assert!(answer.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{answer}");
            assert!(answer.contains(&format!("\r\n\r\n{body}")), "{answer}");
        }
        assert!(server.is_quiet());
    }

    #[test]
    fn sockets_listen_again_after_each_connection() {
        let mut now = Instant::from_millis(0);
        let mut server = server(now);
        let mut client = Client::new(now);
        // More connections, one after another, than the server has sockets.
        for i in 0..10u16 {
            let handle = client.connect(50000 + i, b"GET /stats HTTP/1.1\r\n\r\n");
            let (served, later) = run(&mut server, &mut client, now, |s, c| all_closed(s, c));
            now = later + NetDuration::from_millis(1);
            assert_eq!(served.len(), 1, "connection {i}");
            let answer = received(&mut client, handle);
            assert!(answer.ends_with(&format!("requests served: {}\n", i + 1)), "{answer}");
            client.sockets.remove(handle);
        }
        assert_eq!(server.served(), 10);
    }

    #[test]
    fn a_silent_connection_is_cut_off_and_a_bad_one_answered() {
        let now = Instant::from_millis(0);
        let mut server = server(now);
        let mut client = Client::new(now);
        let silent = client.connect(40000, b"GET / HTT");
        let bad = client.connect(40001, b"BREW /pot HTCPCP/1.0\r\n\r\n");
        let (served, _) = run(&mut server, &mut client, now, |s, c| {
            s.is_quiet() && s.served() == 1 && !c.sockets.get::<tcp::Socket>(silent).is_active()
        });
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].status, 400);
        assert!(received(&mut client, bad).starts_with("HTTP/1.1 400 Bad Request\r\n"));
        // The half-sent request was given up after the timeout (the connection reset), unanswered.
        assert!(received(&mut client, silent).is_empty());
    }

    #[test]
    fn stopping_lets_the_server_go_quiet() {
        let now = Instant::from_millis(0);
        let mut server = server(now);
        server.stop_accepting();
        assert!(server.is_quiet());
        let mut client = Client::new(now);
        let refused = client.connect(40002, b"GET / HTTP/1.1\r\n\r\n");
        let (served, _) = run(&mut server, &mut client, now, |_, c| !c.sockets.get::<tcp::Socket>(refused).is_open());
        assert!(served.is_empty(), "nobody listens any more");
    }

    /// A server with a fake store, and the fake.
    fn server_with_store(now: Instant) -> (Server, Fake) {
        let fake = Fake::default();
        (server(now).with_store(Box::new(fake.clone())), fake)
    }

    /// Makes the requests (at most one per server socket), each as parts in segments of their
    /// own, one connection each, all at once; returns what each got and the log lines.
    /// `now` moves on to just after the last connection closed.
    fn ask_all(server: &mut Server, now: &mut Instant, requests: &[(&[&[u8]], bool)]) -> (Vec<String>, Vec<Served>) {
        let mut client = Client::new(*now);
        let handles: Vec<SocketHandle> = requests
            .iter()
            .enumerate()
            .map(|(i, (parts, close))| client.connect_parts(41000 + i as u16, parts, *close))
            .collect();
        let before = server.served();
        let count = requests.len() as u64;
        let (served, later) = run(server, &mut client, *now, |s, c| all_closed(s, c) && s.served() == before + count);
        *now = later + NetDuration::from_millis(1);
        assert_eq!(served.len(), requests.len(), "{served:?}");
        (handles.into_iter().map(|h| received(&mut client, h)).collect(), served)
    }

    #[test]
    fn puts_gets_and_deletes_values() {
        let mut now = Instant::from_millis(0);
        let (mut server, fake) = server_with_store(now);
        let put: &[&[u8]] = &[b"PUT /kv/colour HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\ndeep blue"];
        let (answers, served) = ask_all(&mut server, &mut now, &[(put, false)]);
        assert!(
            answers[0].starts_with("HTTP/1.1 200 OK\r\n") && answers[0].ends_with("\r\n\r\nstored\n"),
            "{}",
            answers[0]
        );
        assert_eq!(served[0].request, "PUT /kv/colour HTTP/1.1");
        assert_eq!(fake.0.borrow().map.get("colour").map(String::as_str), Some("deep blue"));
        let get: &[&[u8]] = &[b"GET /kv/colour HTTP/1.1\r\n\r\n"];
        let missing: &[&[u8]] = &[b"GET /kv/shape HTTP/1.1\r\n\r\n"];
        let (answers, _) = ask_all(&mut server, &mut now, &[(get, false), (missing, false)]);
        assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n"), "{}", answers[0]);
        assert!(answers[0].ends_with("Content-Length: 9\r\nConnection: close\r\n\r\ndeep blue"), "{}", answers[0]);
        assert!(answers[1].starts_with("HTTP/1.1 404 Not Found\r\n"), "{}", answers[1]);
        let delete: &[&[u8]] = &[b"DELETE /kv/colour HTTP/1.1\r\n\r\n"];
        let (answers, _) = ask_all(&mut server, &mut now, &[(delete, false)]);
        assert!(answers[0].ends_with("\r\n\r\ndeleted\n"), "{}", answers[0]);
        assert!(fake.0.borrow().map.is_empty());
        assert_eq!(server.served(), 4);
    }

    #[test]
    fn a_body_split_over_segments_is_read_whole() {
        let mut now = Instant::from_millis(0);
        let (mut server, fake) = server_with_store(now);
        let parts: &[&[u8]] =
            &[b"PUT /kv/split HTTP/1.1\r\nContent-", b"Length: 19\r\n\r\n", b"one ", b"two three ", b"four", b"!"];
        // The same, the client waiting for 100 Continue first (it is sent before the body comes).
        let expecting: &[&[u8]] =
            &[b"PUT /kv/expect HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", b"ab", b"cde"];
        let (answers, _) = ask_all(&mut server, &mut now, &[(parts, false), (expecting, false)]);
        assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n") && answers[0].ends_with("stored\n"), "{}", answers[0]);
        assert!(
            answers[1].starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
                && answers[1].ends_with("stored\n"),
            "{}",
            answers[1]
        );
        let state = fake.0.borrow();
        assert_eq!(state.map.get("split").map(String::as_str), Some("one two three four!"));
        assert_eq!(state.map.get("expect").map(String::as_str), Some("abcde"));
    }

    #[test]
    fn bad_puts_are_refused() {
        let mut now = Instant::from_millis(0);
        let (mut server, fake) = server_with_store(now);
        let long = vec![b'x'; 5000];
        let cases: [(&[&[u8]], bool, &str, &str); 6] = [
            (&[b"PUT /kv/colour HTTP/1.1\r\n\r\nblue"], false, "411 Length Required", "Content-Length"),
            (
                &[b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", &long],
                false,
                "413 Content Too Large",
                "5000 bytes",
            ),
            (
                &[b"PUT /kv/my%20colour HTTP/1.1\r\nContent-Length: 4\r\n\r\nblue"],
                false,
                "400 Bad Request",
                "the key has '%'",
            ),
            (
                &[b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 5\r\n\r\nblue\n"],
                false,
                "400 Bad Request",
                "a line break",
            ),
            (
                &[b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 8\r\n\r\nblue"],
                true,
                "400 Bad Request",
                "ended after 4 of its 8 bytes",
            ),
            (&[b"GET /kv/", &[b'k'; 65], b" HTTP/1.1\r\n\r\n"], false, "400 Bad Request", "65 characters"),
        ];
        // As many at once as the server has sockets.
        for cases in cases.chunks(4) {
            let requests: Vec<(&[&[u8]], bool)> = cases.iter().map(|(parts, close, _, _)| (*parts, *close)).collect();
            let (answers, served) = ask_all(&mut server, &mut now, &requests);
            for ((_, _, status, why), answer) in cases.iter().zip(&answers) {
                assert!(answer.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{answer}");
                assert!(answer.contains(why), "{answer}");
            }
            assert!(served.iter().all(|s| s.request.starts_with("PUT /kv/") || s.request.starts_with("GET /kv/kkk")));
        }
        assert!(fake.0.borrow().requests.is_empty(), "nothing reached the store");
    }

    #[test]
    fn a_full_or_gone_store_is_answered_for() {
        let mut now = Instant::from_millis(0);
        let (mut server, fake) = server_with_store(now);
        fake.0.borrow_mut().full = true;
        let put: &[&[u8]] = &[b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 4\r\n\r\nblue"];
        let (answers, _) = ask_all(&mut server, &mut now, &[(put, false)]);
        assert!(answers[0].starts_with("HTTP/1.1 507 Insufficient Storage\r\n"), "{}", answers[0]);
        let mut state = fake.0.borrow_mut();
        state.full = false;
        state.gone_calls = 1;
        drop(state);
        let (answers, _) = ask_all(&mut server, &mut now, &[(put, false)]);
        assert!(answers[0].ends_with("stored\n"), "connected again: {}", answers[0]);
        let mut state = fake.0.borrow_mut();
        state.gone_calls = 1;
        state.reconnect_fails = true;
        drop(state);
        let get: &[&[u8]] = &[b"GET /kv/colour HTTP/1.1\r\n\r\n"];
        let (answers, _) = ask_all(&mut server, &mut now, &[(get, false)]);
        assert!(answers[0].starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{}", answers[0]);
        assert_eq!(fake.0.borrow().reconnects, 2);
    }
}
