//! `cargo xtask bench net`: TCP through Mica's `wasi:sockets`, the network stack component and
//! the virtio-net driver component, against the same server natively in a Linux guest, on the
//! same virtual hardware (QEMU `microvm`, virtio-mmio, same CPU model and memory), in wall clock
//! (`-accel tcg`, no icount: the client on this host runs in real time).
//!
//! Both sides run [`mica_workloads::net::echo`], the same `std::net` calls:
//!
//! - Mica: `components/bench-net.toml`, `std-net quiet 80` (a plain std program) through the
//!   runtime's `wasi:sockets`, `netstack` (smoltcp) and the virtio-net driver component;
//! - Linux: `mica-linux-bench echo` as init, on Linux's TCP and Debian's `virtio_net`.
//!
//! Each behind QEMU's user networking with a free port of 127.0.0.1 forwarded to port 80. The
//! client, on this host with `TCP_NODELAY`, measures [`ONE_CONNECTION`] request/response round
//! trips of [`MESSAGE_BYTES`] on one connection, and [`NEW_CONNECTIONS`] requests each on a new
//! connection (connect, send, end the sending, read the echo to its end). Median latency, 10th
//! and 90th percentiles, and requests per second over the whole run.
//!
//! Where Mica's time goes, in guest instructions (`-icount shift=0`): the system boots twice more
//! with the server serving two connections and then ending (`std-net serve 80 2`; the stack and
//! the driver end after it, and the kernel prints each component's own CPU time in TSC ticks,
//! instructions under icount). The first connection is the readiness probe; the second makes
//! no round trips in one boot and [`COUNTED`] in the other. The difference, per round trip and
//! per component, is what one round trip costs each of them (the kernel's work for a thread,
//! IPC included, counts as that thread's).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, KvmProbe, QemuCommand};
use serde::Serialize;

use super::io::{free_port, guest_image, net_device, start};
use super::stats::Summary;
use crate::linux_guest;
use crate::machine::Machine;

/// The benchmark's system.
const MANIFEST: &str = "components/bench-net.toml";
/// Round trips on one connection.
pub const ONE_CONNECTION: usize = 1000;
/// Requests each on a new connection.
pub const NEW_CONNECTIONS: usize = 200;
/// Bytes per request (and per answer).
pub const MESSAGE_BYTES: usize = 64;
/// How long a server may take to answer its first request after QEMU starts.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// One request's patience.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Round trips of the counted boot.
pub const COUNTED: usize = 200;
/// The components whose instructions the counted boots split: the server, the stack, the driver.
const PARTS: [(&str, &str); 3] =
    [("echo", "std-net: wasm32-wasip2, wasi:sockets"), ("stack", "netstack: smoltcp"), ("net", "virtio-net driver")];
/// One counted boot's time limit.
const COUNT_TIMEOUT: Duration = Duration::from_secs(600);
/// Modules the Linux guest loads.
const LINUX_MODULES: &[&str] = &["virtio_mmio", "virtio_net"];

/// One way of making requests, measured.
#[derive(Debug, Serialize)]
pub struct Rate {
    /// Requests made.
    pub requests: usize,
    /// Latency per request: a round trip, or connect to the end of the echo.
    pub latency: Summary,
    /// Requests per second over the whole run.
    pub requests_per_s: f64,
}

/// One server's figures.
#[derive(Debug, Serialize)]
pub struct Server {
    /// Round trips on one connection.
    pub one_connection: Rate,
    /// A new connection per request.
    pub new_connections: Rate,
}

/// One component's instructions per round trip on an open connection.
#[derive(Debug, Serialize)]
pub struct Part {
    /// The component.
    pub name: &'static str,
    /// What it is.
    pub what: &'static str,
    /// Its instructions per round trip: (run with [`COUNTED`] - run with none) / [`COUNTED`].
    pub per_round_trip: f64,
}

/// Everything `bench net` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// Bytes per request.
    pub message_bytes: usize,
    /// Mica: std-net on wasi:sockets, netstack, the virtio-net driver component.
    pub mica: Server,
    /// Linux: the same server on Linux's TCP.
    pub linux: Server,
    /// The Linux guest's kernel release.
    pub linux_kernel: String,
    /// Mica's instructions per round trip, by component.
    pub mica_parts: Vec<Part>,
    /// How it was measured.
    pub method: Vec<&'static str>,
}

/// Runs the network benchmark.
pub fn run(root: &Path) -> Result<()> {
    let super::Prepared { toolchain, kernel, out_dir } = super::prepare(root)?;
    let qemu = mica_launch::find_qemu()?;
    let profile = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
    let cpu = mica_launch::cpu_model(&features);
    let machine = Machine::describe(&qemu, &KvmProbe::detect());
    let bundle = crate::system::prepare(root, &toolchain, &root.join(MANIFEST), &profile)?;
    let guest = linux_guest::fetch(&root.join("target"), mica_launch::GuestArch::X86_64)?;
    let init = linux_guest::build_static(root, "mica-linux-bench", "mica-linux-bench")?;
    let image = out_dir.join("linux-net.cpio");
    guest_image(&guest, &init, &image, &["ip"], LINUX_MODULES)?;
    let boot = |kernel: &Path, initrd: &Path, port: u16| {
        QemuCommand::new(&qemu, kernel, Accel::Tcg)
            .cpu(cpu.clone())
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
            .initrd(initrd)
            .extra_args(mica_launch::devices::qemu_args(&[net_device(port)]))
    };

    eprintln!("bench: TCP echo through wasi:sockets, netstack and the virtio-net driver component, -accel tcg");
    let mica = serve_and_measure(|port| Ok(boot(&kernel, &bundle, port))).context("Mica's echo server")?;
    eprintln!("bench: TCP echo on Linux {}'s TCP and virtio_net, -accel tcg", guest.release);
    let linux = serve_and_measure(|port| {
        let cmd = boot(&guest.kernel, &image, port);
        Ok(cmd.clone().cmdline(guest.cmdline(&cmd, &["echo"])))
    })
    .context("Linux's echo server")?;

    eprintln!("bench: instructions per round trip on Mica, by component (-accel tcg -icount shift=0), two boots");
    let counted = counted_manifest(root, &out_dir)?;
    let bundle = crate::system::prepare(root, &toolchain, &counted, &profile)?;
    let icount = |port: u16| super::io::icount_boot(&qemu, &kernel, &cpu, &bundle, &[net_device(port)]);
    let none = count_run(icount, 0).context("the counted boot without round trips")?;
    let some = count_run(icount, COUNTED).context("the counted boot")?;
    let mica_parts = PARTS
        .iter()
        .zip(none.iter().zip(&some))
        .map(|(&(name, what), (&zero, &n))| Part {
            name,
            what,
            per_round_trip: n.saturating_sub(zero) as f64 / COUNTED as f64,
        })
        .collect();

    let report = Report {
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        message_bytes: MESSAGE_BYTES,
        mica,
        linux,
        linux_kernel: guest.release,
        mica_parts,
        method: vec![
            "both servers run mica_workloads::net::echo, the same std::net calls: on Mica the std-net component \
             (wasm32-wasip2) through the runtime's wasi:sockets, the netstack component (smoltcp) and the \
             virtio-net driver component, each over IPC; on Linux mica-linux-bench as /init, natively",
            "same virtual hardware: microvm, modern virtio-mmio, one virtio-net card on QEMU's user networking \
             (slirp) with a free port of 127.0.0.1 forwarded to port 80, same CPU model and memory, -accel tcg \
             without icount (the client on this host runs in real time)",
            "the client (this host, TCP_NODELAY) checks every echo; latency is per request: one round trip on \
             the open connection, or connect, send, end of sending and the echo read to its end on a new one",
            "wall clock on a shared 2-core build machine, where QEMU's TCG thread competes with the client: treat \
             the figures as rough, and the ratio between the two servers as the result",
            "instructions by component: two more boots under -icount shift=0 with the server ending after two \
             connections, one without round trips and one with 200; each component's own CPU time (TSC ticks, \
             one per instruction) from the kernel's component-costs line, the difference divided by 200",
        ],
    };
    super::report::publish(&out_dir, "net.json", &report.markdown(), &report)
}

/// A connection to 127.0.0.1:`port` with `TCP_NODELAY` and timeouts.
fn connect(port: u16) -> Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    Ok(stream)
}

/// The request `i`: [`MESSAGE_BYTES`] bytes that differ from one request to the next.
fn message(i: usize) -> Vec<u8> {
    (0..MESSAGE_BYTES).map(|b| (i.wrapping_mul(31).wrapping_add(b) % 251) as u8).collect()
}

/// One request on a new connection: its echo must come back whole, then the end of the stream.
fn on_new_connection(port: u16, request: &[u8]) -> Result<()> {
    let mut stream = connect(port)?;
    stream.write_all(request).context("sending")?;
    stream.shutdown(Shutdown::Write).context("ending the sending")?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back).context("reading the echo")?;
    if back != request {
        bail!("{} bytes came back for {} sent, or other bytes", back.len(), request.len());
    }
    Ok(())
}

/// Boots the server `command(port)` makes, waits until it echoes, then measures it.
fn serve_and_measure(command: impl Fn(u16) -> Result<QemuCommand>) -> Result<Server> {
    let port = free_port()?;
    let cmd = command(port)?;
    let (guest, console) = start(&cmd)?;
    let started = Instant::now();
    let mut seen = String::new();
    loop {
        while let Ok(line) = console.try_recv() {
            seen.push_str(&line);
            seen.push('\n');
        }
        match on_new_connection(port, b"ready?") {
            Ok(()) => break,
            Err(_) if started.elapsed() < READY_TIMEOUT => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => bail!("no echo on port {port} within {READY_TIMEOUT:?}: {e:#}\n{}\n{seen}", cmd.display()),
        }
    }

    let mut stream = connect(port)?;
    let mut samples = Vec::with_capacity(ONE_CONNECTION);
    let mut back = vec![0u8; MESSAGE_BYTES];
    let run = Instant::now();
    for i in 0..ONE_CONNECTION {
        let request = message(i);
        let t = Instant::now();
        stream.write_all(&request).with_context(|| format!("round trip {i}: sending"))?;
        stream.read_exact(&mut back).with_context(|| format!("round trip {i}: reading the echo"))?;
        samples.push(t.elapsed());
        if back != request {
            bail!("round trip {i}: other bytes came back");
        }
    }
    let one_connection = rate(&samples, run.elapsed())?;
    drop(stream);

    let mut samples = Vec::with_capacity(NEW_CONNECTIONS);
    let run = Instant::now();
    for i in 0..NEW_CONNECTIONS {
        let request = message(i);
        let t = Instant::now();
        on_new_connection(port, &request).with_context(|| format!("request {i} on a new connection"))?;
        samples.push(t.elapsed());
    }
    let new_connections = rate(&samples, run.elapsed())?;
    drop(guest);
    Ok(Server { one_connection, new_connections })
}

/// `components/bench-net.toml` with the server serving two connections and then ending, written
/// to `out_dir`.
fn counted_manifest(root: &Path, out_dir: &Path) -> Result<std::path::PathBuf> {
    let path = root.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let serving = r#"args = ["quiet", "80"]"#;
    if !text.contains(serving) {
        bail!("{} has no `{serving}` for the counted boots to change", path.display());
    }
    let out = out_dir.join("bench-net-counted.toml");
    std::fs::write(&out, text.replace(serving, r#"args = ["serve", "80", "2"]"#))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// Boots the counted system `command(port)` makes: the readiness probe, then `round_trips` on
/// one connection, then the system ends. Each of [`PARTS`]' run ticks (instructions).
fn count_run(command: impl Fn(u16) -> QemuCommand, round_trips: usize) -> Result<[u64; 3]> {
    let port = free_port()?;
    let cmd = command(port);
    let (guest, console) = start(&cmd)?;
    let started = Instant::now();
    loop {
        match on_new_connection(port, b"ready?") {
            Ok(()) => break,
            Err(_) if started.elapsed() < READY_TIMEOUT => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => bail!("no echo on port {port} within {READY_TIMEOUT:?}: {e:#}\n{}", cmd.display()),
        }
    }
    let mut stream = connect(port)?;
    let mut back = vec![0u8; MESSAGE_BYTES];
    for i in 0..round_trips {
        let request = message(i);
        stream.write_all(&request).with_context(|| format!("round trip {i}: sending"))?;
        stream.read_exact(&mut back).with_context(|| format!("round trip {i}: reading the echo"))?;
        if back != request {
            bail!("round trip {i}: other bytes came back");
        }
    }
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    // The system ends after its server: its console is read to the end.
    let mut serial = String::new();
    let deadline = Instant::now() + COUNT_TIMEOUT;
    loop {
        match console.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                serial.push_str(&line);
                serial.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => bail!("the counted system did not end within {COUNT_TIMEOUT:?}\n{serial}"),
        }
    }
    drop(guest);
    let mut ticks = [0u64; 3];
    for (slot, (name, _)) in ticks.iter_mut().zip(PARTS) {
        *slot = run_ticks(&serial, name).with_context(|| format!("no component-costs line for {name}\n{serial}"))?;
    }
    Ok(ticks)
}

/// The `run=` ticks of `mica: component-costs name=NAME ...` in `serial`.
fn run_ticks(serial: &str, name: &str) -> Option<u64> {
    let prefix = format!("mica: component-costs name={name} ");
    serial.lines().find_map(|line| {
        let rest = &line[line.find(&prefix)? + prefix.len()..];
        rest.split_whitespace().find_map(|field| field.strip_prefix("run=")?.parse().ok())
    })
}

fn rate(samples: &[Duration], total: Duration) -> Result<Rate> {
    Ok(Rate {
        requests: samples.len(),
        latency: Summary::of(samples).context("no requests")?,
        requests_per_s: samples.len() as f64 / total.as_secs_f64(),
    })
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "## TCP echo, wall clock (-accel tcg, {} bytes per request)\n", self.message_bytes);
        let _ =
            writeln!(md, "Machine: {} ({} CPUs), {}; Linux guest {}\n", m.cpu_model, m.cpus, m.qemu, self.linux_kernel);
        md.push_str("| server | requests | median latency | p10 | p90 | requests/s |\n|---|---|---:|---:|---:|---:|\n");
        for (name, s) in [
            ("Mica: std-net on wasi:sockets, netstack, virtio-net driver", &self.mica),
            ("Linux: the same program natively, virtio_net", &self.linux),
        ] {
            for (how, r) in [
                (format!("{} on one connection", s.one_connection.requests), &s.one_connection),
                (format!("{}, a new connection each", s.new_connections.requests), &s.new_connections),
            ] {
                let _ = writeln!(
                    md,
                    "| {name} | {how} | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} |",
                    r.latency.median_s * 1e3,
                    r.latency.p10_s * 1e3,
                    r.latency.p90_s * 1e3,
                    r.requests_per_s
                );
            }
        }
        let ratio = |mica: &Rate, linux: &Rate| mica.latency.median_s / linux.latency.median_s;
        let _ = writeln!(
            md,
            "\nMica / Linux median latency: {:.2} on one connection, {:.2} with a new connection each.\n",
            ratio(&self.mica.one_connection, &self.linux.one_connection),
            ratio(&self.mica.new_connections, &self.linux.new_connections)
        );
        let _ = writeln!(md, "## Mica's instructions per round trip, by component (-icount shift=0)\n");
        md.push_str("| component | what | instructions per round trip |\n|---|---|---:|\n");
        for p in &self.mica_parts {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                p.name,
                p.what,
                super::report::grouped(p.per_round_trip.round() as u64)
            );
        }
        let total: f64 = self.mica_parts.iter().map(|p| p.per_round_trip).sum();
        let _ = writeln!(md, "| all three | | {} |\n", super::report::grouped(total.round() as u64));
        md.push_str("Notes:\n");
        for line in &self.method {
            let _ = writeln!(md, "- {line}.");
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_differ_and_have_their_size() {
        assert_eq!(message(0).len(), MESSAGE_BYTES);
        assert_ne!(message(0), message(1));
        assert_eq!(message(7), message(7));
    }

    #[test]
    fn the_table_has_both_servers_and_both_ways() {
        let summary = |ms: f64| Summary::of(&[Duration::from_secs_f64(ms / 1e3)]).expect("one sample");
        let rate = |ms: f64| Rate { requests: 10, latency: summary(ms), requests_per_s: 1e3 / ms };
        let report = Report {
            machine: Machine {
                cpu_model: "test cpu".into(),
                cpus: 2,
                qemu: "QEMU 7.2".into(),
                os: "Debian".into(),
                host_kernel: "6.1".into(),
                kvm: "none".into(),
            },
            unix_time_s: 0,
            message_bytes: MESSAGE_BYTES,
            mica: Server { one_connection: rate(0.5), new_connections: rate(2.0) },
            linux: Server { one_connection: rate(0.25), new_connections: rate(4.0) },
            linux_kernel: "6.1".into(),
            mica_parts: vec![Part { name: "echo", what: "std-net", per_round_trip: 12_345.4 }],
            method: vec!["a note"],
        };
        let md = report.markdown();
        assert!(
            md.contains(
                "| Mica: std-net on wasi:sockets, netstack, virtio-net driver | 10 on one connection | 0.500 ms"
            ),
            "{md}"
        );
        assert!(
            md.contains("| Linux: the same program natively, virtio_net | 10, a new connection each | 4.000 ms"),
            "{md}"
        );
        assert!(
            md.contains("Mica / Linux median latency: 2.00 on one connection, 0.50 with a new connection each."),
            "{md}"
        );
        assert!(md.contains("| echo | std-net | 12,345 |"), "{md}");
    }

    #[test]
    fn run_ticks_are_read_per_component() {
        let serial = "mica: component-costs name=stack load=5 instantiate=6 run=700\n\
                      [x] mica: component-costs name=echo load=1 instantiate=2 run=300\n";
        assert_eq!(run_ticks(serial, "echo"), Some(300));
        assert_eq!(run_ticks(serial, "stack"), Some(700));
        assert_eq!(run_ticks(serial, "net"), None);
    }
}
