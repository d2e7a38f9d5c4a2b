//! The sockets boot test (`sockets`): TCP through the network stack component. Two echo
//! servers, each its own component, listen on ports 7 and 8 through `netstack` at once; this
//! host connects to both through two forwarded ports, twice each, with both servers' first
//! connections open together, and checks every byte comes back. A third component connects to
//! port 7's server from inside the machine (`localhost`). The servers end after their last
//! connection (three on port 7, two on port 8), then the stack, the driver, and the system
//! powers off.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use mica_launch::{Accel, QemuCommand};

use crate::live::LiveGuest;
use crate::{BundleUse, TIMEOUT, bundle_path, with_system_devices};

pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

pub(crate) fn connect(port: u16) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting to port {port}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends `message` on `stream`, ends the sending, and reads until the server closes.
pub(crate) fn echoed(mut stream: TcpStream, message: &[u8]) -> Result<Vec<u8>, String> {
    stream.write_all(message).map_err(|e| format!("sending: {e}"))?;
    stream.shutdown(Shutdown::Write).map_err(|e| format!("shutting the sending down: {e}"))?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back).map_err(|e| format!("reading the echo: {e}"))?;
    Ok(back)
}

pub(crate) fn check(what: &str, sent: &[u8], back: &[u8]) -> Result<(), String> {
    if sent == back {
        Ok(())
    } else {
        Err(format!("{what}: {} bytes came back for {} sent, or other bytes", back.len(), sent.len()))
    }
}

/// Waits until `guest` has printed every one of `needles`, in any order (servers start in
/// either order); `what` names them in the error.
pub(crate) fn wait_for_all(
    guest: &mut LiveGuest,
    needles: &[&str],
    deadline: Instant,
    what: &str,
) -> Result<(), String> {
    let mut seen = vec![false; needles.len()];
    while seen.iter().any(|s| !s) {
        let line = guest.next_line(deadline).ok_or_else(|| format!("{what} did not all start"))?;
        for (needle, seen) in needles.iter().zip(&mut seen) {
            *seen |= line.contains(needle);
        }
    }
    Ok(())
}

/// Two echo servers on 127.0.0.1 ports `a` and `b`: both first connections open at once, each
/// echoing its message of `first`, then 200,000 bytes on `a` (more than the stack's buffers and
/// an IPC message), every byte checked.
pub(crate) fn two_echo_servers(a: u16, b: u16, first: [&[u8]; 2]) -> Result<(), String> {
    let (first_a, first_b) = (connect(a)?, connect(b)?);
    let back_b = echoed(first_b, first[1])?;
    let back_a = echoed(first_a, first[0])?;
    check(&format!("port {a}, first connection"), first[0], &back_a)?;
    check(&format!("port {b}, first connection"), first[1], &back_b)?;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    check(&format!("port {a}, 200 KB"), &big, &echoed(connect(a)?, &big)?)
}

pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    let bundle = bundle_path(&BundleUse { system: "sockets", tamper: None }, scratch.path())?;
    let (a, b) = (free_port()?, free_port()?);
    let cmd = with_system_devices(cmd, &bundle, scratch.path(), |d| {
        if d.kind == "virtio-net" {
            d.hostfwd = vec![format!("tcp:127.0.0.1:{a}-:7"), format!("tcp:127.0.0.1:{b}-:8")];
        }
    })?;
    let mut guest = LiveGuest::spawn(&cmd)?;
    let deadline = Instant::now() + TIMEOUT;
    let result = (|| {
        let servers = ["[echo-a] tcp-echo: listening on port 7", "[echo-b] tcp-echo: listening on port 8"];
        wait_for_all(&mut guest, &servers, deadline, "the echo servers")?;
        two_echo_servers(a, b, [b"hello, port 7", b"hello, port 8"])?;
        check("port 8, second connection", b"bye", &echoed(connect(b)?, b"bye")?)?;
        guest.wait_for("succeeded; powering off", deadline)?;
        let asked = "[asker] tcp-ask: echoed back whole from 10.0.2.15:7";
        if guest.console.lines().any(|l| l.contains(asked)) { Ok(()) } else { Err(format!("no `{asked}`")) }
    })();
    if let Err(e) = result {
        guest.kill();
        return Err(format!("{e}\n{}\n{}", cmd.display(), guest.console));
    }
    let status = guest.wait()?;
    match status.code().and_then(mica_exit::ExitCode::from_qemu_status) {
        Some(mica_exit::ExitCode::Success) => {
            Ok("two echo servers on one network stack, 4 connections from the host and 1 between components, every byte back".into())
        }
        other => Err(format!("QEMU ended with {status} (verdict {other:?})\n{}", guest.console)),
    }
}
