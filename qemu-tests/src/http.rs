//! The HTTP boot tests: systems with the virtio-net driver component and `httpd` (a TCP/IP stack,
//! smoltcp, in a component) behind QEMU user networking, with a free port of 127.0.0.1 forwarded
//! to the guest's port 80, asked by a real HTTP client (`ureq`) on this host.
//!
//! - [`run`] (`http`): `GET /` gets the page, `GET /stats` the count, an unknown path 404; httpd
//!   ends after those three requests, the driver after it, and the system powers off.
//! - [`run_kv`] (`http-kv`): httpd in front of `kvstore` on the block driver: a key `PUT` over
//!   HTTP is there after a reboot on the same disk image.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use mica_launch::{Accel, QemuCommand};

use crate::live::LiveGuest;
use crate::{BundleUse, TIMEOUT, bundle_path, with_system_devices};

/// What httpd serves at `/`.
pub const PAGE: &str = "hello from Mica over virtio-net\n";

/// One request and the answer it must get.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// `GET`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path.
    pub path: &'static str,
    /// The request body (`PUT`).
    pub body: &'static str,
    /// The status expected.
    pub status: u16,
    /// The body expected, if it matters.
    pub answer: Option<&'static str>,
}

const fn ask(method: &'static str, path: &'static str, status: u16, answer: Option<&'static str>) -> Ask {
    Ask { method, path, body: "", status, answer }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Makes `ask` against 127.0.0.1:`port`: the status code and the body.
fn request(port: u16, ask: &Ask) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{}", ask.path);
    let what = format!("{} {}", ask.method, ask.path);
    let sent = match ask.method {
        "PUT" => agent.put(&url).send(ask.body),
        "DELETE" => agent.delete(&url).call(),
        _ => agent.get(&url).call(),
    };
    let mut response = sent.map_err(|e| format!("{what}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| format!("{what}: reading the body: {e}"))?;
    Ok((status, body))
}

/// Boots `system` (its disk images in `disks`), waits for httpd, makes `asks` in order, then
/// waits for the system to power off with success.
pub fn boot_and_ask(
    qemu: &Path,
    kernel: &Path,
    system: &'static str,
    disks: &Path,
    asks: &[Ask],
) -> Result<(), String> {
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    let bundle = bundle_path(&BundleUse { system, tamper: None }, disks)?;
    boot_bundle_and_ask(cmd, &bundle, disks, asks)
}

/// [`boot_and_ask`] of `bundle` with `cmd` (QEMU, kernel and machine already chosen).
fn boot_bundle_and_ask(cmd: QemuCommand, bundle: &Path, disks: &Path, asks: &[Ask]) -> Result<(), String> {
    let port = free_port()?;
    let cmd = with_system_devices(cmd, bundle, disks, |d| {
        if d.kind == "virtio-net" {
            d.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:80")];
        }
    })?;
    let mut guest = LiveGuest::spawn(&cmd)?;
    let deadline = Instant::now() + TIMEOUT;
    let result = (|| {
        guest.wait_for("httpd: listening on 10.0.2.15:80", deadline)?;
        for a in asks {
            let (status, body) = request(port, a)?;
            if status != a.status || a.answer.is_some_and(|want| want != body) {
                return Err(format!(
                    "{} {}: got {status} {body:?}, expected {} {:?}",
                    a.method, a.path, a.status, a.answer
                ));
            }
        }
        guest.wait_for("succeeded; powering off", deadline)
    })();
    if let Err(e) = result {
        guest.kill();
        return Err(format!("{e}\n{}\n{}", cmd.display(), guest.console));
    }
    let status = guest.wait()?;
    match status.code().and_then(mica_exit::ExitCode::from_qemu_status) {
        Some(mica_exit::ExitCode::Success) => Ok(()),
        other => Err(format!("QEMU ended with {status} (verdict {other:?})\n{}", guest.console)),
    }
}

/// What the `http` system is asked: the page, the count, a 404.
const HTTP_ASKS: [Ask; 3] = [
    ask("GET", "/", 200, Some(PAGE)),
    ask("GET", "/stats", 200, Some("requests served: 2\n")),
    ask("GET", "/nothing-here", 404, None),
];

/// The `http` system: the page, the count, a 404.
pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    boot_and_ask(qemu, kernel, "http", scratch.path(), &HTTP_ASKS)?;
    Ok(format!("{} requests answered", HTTP_ASKS.len()))
}

/// The same `http` system (the same `.wasm` files, compiled for aarch64: `http-aarch64`) on the
/// aarch64 kernel `kernel` on QEMU's `virt`, `qemu` being its QEMU.
pub fn run_aarch64(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let dir = std::env::var_os(crate::BUNDLES_ENV)
        .ok_or_else(|| format!("{} is not set: run the boot tests with `cargo xtask test`", crate::BUNDLES_ENV))?;
    let bundle = Path::new(&dir).join("http-aarch64.bundle");
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).arch(mica_launch::GuestArch::Aarch64);
    boot_bundle_and_ask(cmd, &bundle, scratch.path(), &HTTP_ASKS)?;
    Ok(format!("{} requests answered", HTTP_ASKS.len()))
}

/// The `http-kv` system, booted twice on one disk image: what was stored over HTTP survives.
pub fn run_kv(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let first = [
        Ask { method: "PUT", path: "/kv/colour", body: "blue", status: 200, answer: Some("stored\n") },
        ask("GET", "/kv/colour", 200, Some("blue")),
        ask("GET", "/kv/shape", 404, None),
        Ask { method: "PUT", path: "/kv/bad%20key", body: "x", status: 400, answer: None },
    ];
    boot_and_ask(qemu, kernel, "http-kv", scratch.path(), &first).map_err(|e| format!("first boot: {e}"))?;
    let second = [
        ask("GET", "/kv/colour", 200, Some("blue")),
        ask("DELETE", "/kv/colour", 200, Some("deleted\n")),
        ask("GET", "/kv/colour", 404, None),
        ask("GET", "/", 200, Some(PAGE)),
    ];
    boot_and_ask(qemu, kernel, "http-kv", scratch.path(), &second).map_err(|e| format!("second boot: {e}"))?;
    Ok("stored over HTTP, found again after a reboot, deleted".to_owned())
}
