//! The HTTP boot test: the `http` system (virtio-net driver component and `httpd`, a TCP/IP stack
//! in a component) behind QEMU user networking, with a free port of 127.0.0.1 forwarded to the
//! guest's port 80, asked by a real HTTP client (`ureq`) on this host: `GET /` gets the page,
//! `GET /stats` the count, an unknown path 404. httpd ends after those three requests, the
//! driver after it, and the system powers off with success.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mica_launch::{Accel, QemuCommand};

use crate::{BundleUse, TIMEOUT, bundle_path, with_system_devices};

/// The system.
pub const SYSTEM: &str = "http";
/// What httpd serves at `/`.
pub const PAGE: &str = "hello from Mica over virtio-net\n";

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// `GET url`: the status code and the body (error statuses are answers too).
fn get(url: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok((status, body))
}

/// Runs the test; `Ok` says what happened.
pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let port = free_port()?;
    let features: Vec<&str> = mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    let bundle = bundle_path(&BundleUse { system: SYSTEM, tamper: None }, scratch.path())?;
    let cmd = with_system_devices(cmd, &bundle, scratch.path(), |d| {
        if d.kind == "virtio-net" {
            d.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:80")];
        }
    })?;
    let mut child = cmd
        .command()
        .map_err(|e| e.to_string())?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    let stdout = child.stdout.take().ok_or("QEMU's stdout was not captured")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut console = String::new();
    let wait_for = |needle: &str, console: &mut String| -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    console.push_str(&line);
                    console.push('\n');
                    if line.contains(needle) {
                        return Ok(());
                    }
                }
                Err(_) => return Err(format!("no `{needle}` on the console")),
            }
        }
    };
    let result = (|| {
        wait_for("httpd: listening on 10.0.2.15:80", &mut console)?;
        let base = format!("http://127.0.0.1:{port}");
        let (status, body) = get(&format!("{base}/"))?;
        if (status, body.as_str()) != (200, PAGE) {
            return Err(format!("GET /: {status} {body:?}, expected 200 {PAGE:?}"));
        }
        let (status, body) = get(&format!("{base}/stats"))?;
        if (status, body.as_str()) != (200, "requests served: 2\n") {
            return Err(format!("GET /stats: {status} {body:?}, expected 200 \"requests served: 2\\n\""));
        }
        let (status, _) = get(&format!("{base}/nothing-here"))?;
        if status != 404 {
            return Err(format!("GET /nothing-here: {status}, expected 404"));
        }
        wait_for("mica: all components finished: 2 of 2 succeeded", &mut console)?;
        Ok(())
    })();
    let status = match result {
        Ok(()) => child.wait().map_err(|e| e.to_string())?,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            while let Ok(line) = rx.try_recv() {
                console.push_str(&line);
                console.push('\n');
            }
            return Err(format!("{e}\n{}\n{console}", cmd.display()));
        }
    };
    match status.code().and_then(mica_exit::ExitCode::from_qemu_status) {
        Some(mica_exit::ExitCode::Success) => Ok(format!("3 requests answered on 127.0.0.1:{port}")),
        other => Err(format!("QEMU ended with {status} (verdict {other:?})\n{console}")),
    }
}
