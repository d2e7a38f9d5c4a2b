//! An ordinary Rust program that uses nothing but `std::net`: no Mica interface, no WASI crate
//! (its echo loop is `mica_workloads::net`, plain `std` shared with `bench net`'s Linux guest).
//! Built for `wasm32-wasip2`, it imports `wasi:sockets`, which Mica's runtime serves from the
//! network stack component the manifest's `network` grant names.
//!
//! - `std-net serve PORT N`: listens on `0.0.0.0:PORT` with `TcpListener` and serves `N`
//!   connections one after another: each gets back every byte it sends, until it shuts its
//!   sending down. Prints `std-net: listening on 0.0.0.0:PORT`, then for each connection
//!   `std-net: connection I from ADDRESS` and `std-net: connection I echoed B bytes`.
//! - `std-net quiet PORT`: the same server, serving connections until it is stopped, printing
//!   nothing per connection (`bench net`'s server).
//! - `std-net http PORT [N]`: a small HTTP/1.0 server on `TcpListener` (what `httpd` serves,
//!   without a network stack of its own): `GET /` answers a page, `GET /stats` how many requests
//!   it has served, anything else 404. Serves `N` requests and ends, or serves until stopped.
//!   Prints `std-net: http on 0.0.0.0:PORT`.
//! - `std-net ask HOST:PORT MESSAGE`: connects with `TcpStream`, sends `MESSAGE`, shuts its
//!   sending down and reads the answer to its end. Prints `std-net: HOST:PORT answered "..."`
//!   from PEER. The host may be a name (`localhost`) or an address.
//! - `std-net udp-echo PORT N`: binds a `UdpSocket` to `0.0.0.0:PORT` and sends each of `N`
//!   datagrams back to where it came from. Prints `std-net: udp on 0.0.0.0:PORT`, then
//!   `std-net: datagram I of B bytes from ADDRESS` for each.
//! - `std-net udp-ask HOST:PORT MESSAGE`: sends `MESSAGE` in a datagram from an ephemeral port
//!   and prints `std-net: HOST:PORT answered "..." by udp from PEER`; it sends again after each
//!   second without an answer, up to 30 times.
//! - `std-net blurt PORT BYTES`: accepts one connection on `PORT`, writes `BYTES` bytes (byte
//!   `i` is `i % 251`) and exits at once with `std::process::exit`, closing nothing itself:
//!   Mica must send them all and close the connection, as Linux does for a process that exits.
//! - `std-net refused PORT`: listens on `PORT`, which it expects its manifest not to grant, and
//!   prints what the refusal said.
//!
//! A failure prints `std-net: ...` on stderr and exits with status 1.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn serve(port: u16, connections: u64, quiet: bool) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("std-net: listening on {}", listener.local_addr()?);
    mica_workloads::net::echo(&listener, connections, |line| {
        if !quiet {
            println!("std-net: {line}");
        }
    })
}

fn ask(to: &str, message: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(to)?;
    let peer = stream.peer_addr()?;
    stream.write_all(message.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    println!("std-net: {to} answered {answer:?} from {peer}");
    Ok(())
}

/// The page `http` serves at `/`.
const PAGE: &str = "hello from a plain std::net program on Mica\n";

fn http(port: u16, requests: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("std-net: http on {}", listener.local_addr()?);
    let mut served = 0u64;
    while served < requests {
        let (mut stream, _) = listener.accept()?;
        // The request head, up to its blank line (8 KiB at most).
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let got = stream.read(&mut buf)?;
            if got == 0 {
                break;
            }
            head.extend_from_slice(&buf[..got]);
        }
        let head = String::from_utf8_lossy(&head);
        let mut words = head.split_whitespace();
        let (status, body) = match (words.next(), words.next()) {
            (Some("GET"), Some("/")) => ("200 OK", PAGE.to_owned()),
            (Some("GET"), Some("/stats")) => ("200 OK", format!("requests served: {}\n", served + 1)),
            (Some("GET"), Some(_)) => ("404 Not Found", "not found\n".to_owned()),
            _ => ("400 Bad Request", "bad request\n".to_owned()),
        };
        served += 1;
        let response = format!(
            "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        // A client that went away is its own loss, not the server's end.
        if let Err(e) = stream.write_all(response.as_bytes()).and_then(|()| stream.shutdown(Shutdown::Write)) {
            eprintln!("std-net: answering a request: {e}");
        }
    }
    Ok(())
}

fn udp_echo(port: u16, datagrams: u64) -> std::io::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", port))?;
    println!("std-net: udp on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 64 * 1024];
    for n in 1..=datagrams {
        let (got, peer) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..got], peer)?;
        println!("std-net: datagram {n} of {got} bytes from {peer}");
    }
    Ok(())
}

fn udp_ask(to: &str, message: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", 0))?;
    // Not blocking: a datagram may be lost (or come before the server listens), so it is sent
    // again each second until an answer comes.
    socket.set_nonblocking(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..30 {
        socket.send_to(message.as_bytes(), to)?;
        for _ in 0..20 {
            match socket.recv_from(&mut buf) {
                Ok((got, peer)) => {
                    let answer = String::from_utf8_lossy(&buf[..got]);
                    println!("std-net: {to} answered {answer:?} by udp from {peer}");
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::other(format!("{to} did not answer 30 datagrams")))
}

fn blurt(port: u16, bytes: u32) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("std-net: blurting on {}", listener.local_addr()?);
    let (mut stream, peer) = listener.accept()?;
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    stream.write_all(&data)?;
    println!("std-net: wrote {bytes} bytes to {peer}; exiting without closing");
    std::process::exit(0)
}

fn refused(port: u16) -> std::io::Result<()> {
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => Err(std::io::Error::other(format!("listening on port {port} was allowed"))),
        Err(e) => {
            println!("std-net: listening on port {port} refused: {:?}", e.kind());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", port, n] => match (port.parse(), n.parse()) {
            (Ok(port), Ok(n)) => serve(port, n, false),
            _ => Err(std::io::Error::other("serve PORT N: a port and a count")),
        },
        ["quiet", port] => match port.parse() {
            Ok(port) => serve(port, u64::MAX, true),
            Err(_) => Err(std::io::Error::other("quiet PORT: a port")),
        },
        ["http", port, rest @ ..] if rest.len() <= 1 => {
            match (port.parse(), rest.first().map_or(Ok(u64::MAX), |n| n.parse())) {
                (Ok(port), Ok(n)) => http(port, n),
                _ => Err(std::io::Error::other("http PORT [N]: a port and a count")),
            }
        }
        ["ask", to, message] => ask(to, message),
        ["udp-echo", port, n] => match (port.parse(), n.parse()) {
            (Ok(port), Ok(n)) => udp_echo(port, n),
            _ => Err(std::io::Error::other("udp-echo PORT N: a port and a count")),
        },
        ["udp-ask", to, message] => udp_ask(to, message),
        ["blurt", port, bytes] => match (port.parse(), bytes.parse()) {
            (Ok(port), Ok(bytes)) => blurt(port, bytes),
            _ => Err(std::io::Error::other("blurt PORT BYTES: a port and a count")),
        },
        ["refused", port] => match port.parse() {
            Ok(port) => refused(port),
            Err(_) => Err(std::io::Error::other("refused PORT: a port")),
        },
        _ => Err(std::io::Error::other(
            "usage: serve PORT N | quiet PORT | http PORT [N] | ask HOST:PORT MESSAGE | udp-echo PORT N | udp-ask HOST:PORT MESSAGE | blurt PORT BYTES | refused PORT",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("std-net: {e}");
            ExitCode::FAILURE
        }
    }
}
