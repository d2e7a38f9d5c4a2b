//! The `std::net` boot test (`std-sockets`): unmodified Rust programs (components/std-net, which
//! uses nothing but `std`) on the runtime's `wasi:sockets`, served by the network stack
//! component. Two instances listen on ports 7 and 8 at once, each through its manifest's
//! `network` grant; this host connects to both through two forwarded ports (both first
//! connections open together, then 200,000 bytes on port 7) and checks every byte comes back.
//! A third instance connects to port 8 from inside the machine by a name its manifest gives
//! (`web-b.mica`), and a fourth is refused a port its grant does not list. A std `UdpSocket` echo answers a datagram
//! from the host (a forwarded UDP port) and one from another component by `localhost`. Then
//! everything ends in order and the system powers off. The same program's HTTP server answers
//! `GET /` and `GET /stats` from the host, and 100,000 bytes written by a program that then
//! exits without closing its connection all arrive.

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use mica_launch::{Accel, QemuCommand};

use crate::live::LiveGuest;
use crate::sockets::{check, connect, echoed, free_port, two_echo_servers, wait_for_all};
use crate::{BundleUse, TIMEOUT, bundle_path, with_system_devices};

fn free_udp_port() -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("finding a free UDP port: {e}"))?;
    socket.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Sends `datagram` to 127.0.0.1:`port` and returns the answer; sent again after each second
/// without one (UDP may lose it), up to 20 times.
fn udp_answer(port: u16, datagram: &[u8]) -> Result<Vec<u8>, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("a UDP socket: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    for _ in 0..20 {
        socket.send_to(datagram, ("127.0.0.1", port)).map_err(|e| format!("sending a datagram: {e}"))?;
        if let Ok(got) = socket.recv(&mut buf) {
            return Ok(buf[..got].to_vec());
        }
    }
    Err(format!("no answer to 20 datagrams on UDP port {port}"))
}

/// `GET path` on a new connection to 127.0.0.1:`port`: the status line and the body, joined by
/// `|`.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: mica\r\n\r\n");
    let response = echoed(connect(port)?, request.as_bytes())?;
    let text = String::from_utf8(response).map_err(|e| format!("GET {path}: not UTF-8: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("GET {path}: no end of head in {text:?}"))?;
    Ok(format!("{}|{body}", head.lines().next().unwrap_or_default()))
}

pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    let bundle = bundle_path(&BundleUse { system: "std-sockets", tamper: None }, scratch.path())?;
    let (a, b) = (free_port()?, free_port()?);
    let u = free_udp_port()?;
    let h = free_port()?;
    let z = free_port()?;
    let cmd = with_system_devices(cmd, &bundle, scratch.path(), |d| {
        if d.kind == "virtio-net" {
            d.hostfwd = vec![
                format!("tcp:127.0.0.1:{a}-:7"),
                format!("tcp:127.0.0.1:{b}-:8"),
                format!("udp:127.0.0.1:{u}-:9"),
                format!("tcp:127.0.0.1:{h}-:80"),
                format!("tcp:127.0.0.1:{z}-:10"),
            ];
        }
    })?;
    let mut guest = LiveGuest::spawn(&cmd)?;
    let deadline = Instant::now() + TIMEOUT;
    let result = (|| {
        let servers = [
            "[web-a] std-net: listening on 0.0.0.0:7",
            "[web-b] std-net: listening on 0.0.0.0:8",
            "[udp] std-net: udp on 0.0.0.0:9",
            "[web-c] std-net: http on 0.0.0.0:80",
            "[blurt] std-net: blurting on 0.0.0.0:10",
        ];
        wait_for_all(&mut guest, &servers, deadline, "the std servers")?;
        two_echo_servers(a, b, [b"GET / from the host, port 7", b"GET / from the host, port 8"])?;
        // A datagram to the UDP echo, and its answer.
        let datagram = b"a datagram from the host";
        check("UDP port 9", datagram, &udp_answer(u, datagram)?)?;
        // What a program wrote before it exited without closing arrives whole, then the end.
        let mut stream = connect(z)?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).map_err(|e| format!("reading what blurt wrote: {e}"))?;
        let expected: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        check("blurt, 100,000 bytes before its exit", &expected, &got)?;
        // The HTTP server: a page, then its count.
        for (path, expected) in [
            ("/", "HTTP/1.0 200 OK|hello from a plain std::net program on Mica\n"),
            ("/stats", "HTTP/1.0 200 OK|requests served: 2\n"),
        ] {
            let got = http_get(h, path)?;
            if got != expected {
                return Err(format!("GET {path}: {got:?}, expected {expected:?}"));
            }
        }
        guest.wait_for("succeeded; powering off", deadline)?;
        let console = &guest.console;
        // The asker's connection and the host's reach `web-b` in either order.
        for needle in [
            ["[web-a] std-net: connection 2 echoed 200000 bytes", ""],
            ["[asker] std-net: web-b.mica:8 answered \"hello from a component\" from 10.0.2.15:8", ""],
            ["[web-b] std-net: connection ", " echoed 22 bytes"],
            ["[denied] std-net: listening on port 9 refused: PermissionDenied", ""],
            ["[udp-asker] std-net: localhost:9 answered \"a datagram from a component\" by udp from 10.0.2.15:9", ""],
            ["[udp] std-net: datagram ", " of 24 bytes from 10.0.2.2:"],
        ] {
            if !console.lines().any(|l| needle.iter().all(|part| l.contains(part))) {
                return Err(format!("no `{}`", needle.concat()));
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        guest.kill();
        return Err(format!("{e}\n{}\n{}", cmd.display(), guest.console));
    }
    let status = guest.wait()?;
    match status.code().and_then(mica_exit::ExitCode::from_qemu_status) {
        Some(mica_exit::ExitCode::Success) => Ok(
            "two std TcpListener servers, 3 connections from the host, 1 std TcpStream client by name, 1 refused port, UDP echoed to the host and to a component, 2 HTTP requests, 100 KB written before an exit"
                .into(),
        ),
        other => Err(format!("QEMU ended with {status} (verdict {other:?})\n{}", guest.console)),
    }
}
