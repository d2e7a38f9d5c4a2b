//! `cargo xtask bench io`: Mica's driver components against Linux's in-kernel drivers on the same
//! virtual hardware (QEMU `microvm`, virtio-mmio, same CPU model and memory, one vCPU).
//!
//! - Block, in guest instructions (`-accel tcg -icount shift=0`): `components/bench-io.toml` (the
//!   virtio-blk driver component and `device-client block-bench`) against `mica-linux-bench block`
//!   (`O_DIRECT` on `/dev/vda` through Debian's `virtio_blk`): 4 MiB written and read in 32 KiB
//!   requests, a flush, 500 random 4 KiB writes and reads. Per request: instructions; and, as
//!   derived figures, throughput and IOPS at one instruction per nanosecond (what icount's
//!   virtual clock runs at), so that they are stable run to run.
//! - HTTP, wall clock (`-accel tcg`, no icount: a host client needs real time): the
//!   `components/net.toml` system (virtio-net driver component and `httpd` on smoltcp) against
//!   busybox `httpd` in the Linux guest (Debian's `virtio_net`), each behind QEMU user networking
//!   with a port forwarded from 127.0.0.1; [`HTTP_REQUESTS`] sequential `GET /`, each on a new
//!   connection, from this host. Median latency and requests per second.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use mica_bundle::MachineDevice;
use mica_initramfs::Initramfs;
use mica_launch::{Accel, KvmProbe, QemuCommand};
use serde::Serialize;

use super::boot::boot;
use super::report::grouped;
use super::stats::Summary;
use crate::linux_guest::{self, BUSYBOX_APPLETS};
use crate::machine::Machine;

/// The block benchmark's system.
const BLOCK_MANIFEST: &str = "components/bench-io.toml";
/// The HTTP benchmark's system.
const NET_MANIFEST: &str = "components/net.toml";
/// The QEMU options that make the TSC count instructions.
const ICOUNT_OPTIONS: &str = "-accel tcg -icount shift=0";
/// One boot's time limit.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a server may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests per HTTP measurement.
pub const HTTP_REQUESTS: usize = 100;
/// The disk image size for both block runs.
const DISK_BYTES: u64 = 128 << 20;
/// What Mica's block client prints before its fields.
const MICA_BLOCK_PREFIX: &str = "block-bench ";
/// What `mica-linux-bench` prints before its result.
const LINUX_PREFIX: &str = "mica-linux-bench: ";
/// Modules the Linux guest loads (dependencies are added by `mica-initramfs`).
const LINUX_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net"];
/// The block phases, in the order both clients run them: (name, bytes per request, requests).
const PHASES: [(&str, u64, u64); 5] = [
    ("seq-write", 32768, 128),
    ("flush", 0, 1),
    ("seq-read", 32768, 128),
    ("rand-write", 4096, 500),
    ("rand-read", 4096, 500),
];

/// One block phase on one system.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockPhase {
    /// `seq-write`, `flush`, `seq-read`, `rand-write`, `rand-read`.
    pub op: String,
    /// Bytes per request.
    pub bytes: u64,
    /// Requests.
    pub n: u64,
    /// Guest instructions for all of them.
    pub instructions: u64,
}

impl BlockPhase {
    /// Instructions per request.
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.n.max(1) as f64
    }

    /// Requests per second at one instruction per nanosecond.
    pub fn iops(&self) -> f64 {
        self.n as f64 * 1e9 / self.instructions.max(1) as f64
    }

    /// MiB per second at one instruction per nanosecond.
    pub fn mib_per_s(&self) -> f64 {
        self.iops() * self.bytes as f64 / f64::from(1 << 20)
    }
}

/// Each phase's median over runs (of instructions; an even count takes the mean of the middle
/// two), and its lowest and highest count. Every run has the same phases (`check_phases`).
pub(super) fn medians(runs: &[Vec<BlockPhase>]) -> (Vec<BlockPhase>, Vec<(u64, u64)>) {
    let Some(first) = runs.first() else { return (Vec::new(), Vec::new()) };
    first
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let mut counts: Vec<u64> = runs.iter().map(|run| run[i].instructions).collect();
            counts.sort_unstable();
            let mid = counts.len() / 2;
            let median = if counts.len() % 2 == 1 { counts[mid] } else { (counts[mid - 1] + counts[mid]) / 2 };
            let range = (counts[0], counts[counts.len() - 1]);
            (BlockPhase { instructions: median, ..phase.clone() }, range)
        })
        .unzip()
}

/// The HTTP figures of one server.
#[derive(Clone, Debug, Serialize)]
pub struct Http {
    /// Requests made.
    pub requests: usize,
    /// Latency per request (connect to the end of the response).
    pub latency: Summary,
    /// Requests per second over the whole run.
    pub requests_per_s: f64,
}

/// Everything `bench io` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The block runs' QEMU options.
    pub block_qemu_options: &'static str,
    /// The TSC rate Mica calibrated under icount (MHz), in its first run.
    pub tsc_mhz: f64,
    /// Mica's block phases: each phase's median over the runs.
    pub mica_block: Vec<BlockPhase>,
    /// Linux's block phases: each phase's median over the runs.
    pub linux_block: Vec<BlockPhase>,
    /// Each of Mica's block phases: its lowest and highest count over the runs.
    pub mica_block_ranges: Vec<(u64, u64)>,
    /// Each of Linux's block phases: its lowest and highest count over the runs.
    pub linux_block_ranges: Vec<(u64, u64)>,
    /// Each of Mica's block runs.
    pub mica_block_runs: Vec<Vec<BlockPhase>>,
    /// Each of Linux's block runs.
    pub linux_block_runs: Vec<Vec<BlockPhase>>,
    /// Mica's HTTP server.
    pub mica_http: Http,
    /// Linux's HTTP server.
    pub linux_http: Http,
    /// The Linux guest's kernel release.
    pub linux_kernel: String,
    /// How the figures were taken.
    pub method: Vec<&'static str>,
}

/// Runs the I/O benchmark.
pub fn run(root: &Path, runs: u32) -> Result<()> {
    let super::Prepared { toolchain, kernel: mica, out_dir } = super::prepare(root)?;
    let qemu = mica_launch::find_qemu()?;
    let profile = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
    let cpu = mica_launch::cpu_model(&features);
    let machine = Machine::describe(&qemu, &KvmProbe::detect());
    let disk = out_dir.join("io-disk.img");
    let block = |image: &Path| {
        let _ = fs::remove_file(image);
        vec![MachineDevice {
            kind: "virtio-blk".into(),
            disk: Some(image.to_string_lossy().into_owned()),
            disk_size: DISK_BYTES,
            read_only: false,
            hostfwd: Vec::new(),
            output: None,
        }]
    };

    // Block: Mica and Linux in turn, each on a fresh disk, `runs` times.
    let bundle = crate::system::prepare(root, &toolchain, &root.join(BLOCK_MANIFEST), &profile)?;
    let guest = linux_guest::fetch(&root.join("target"), mica_launch::GuestArch::X86_64)?;
    let init = linux_guest::build_static(root, "mica-linux-bench", "mica-linux-bench")?;
    let image = out_dir.join("linux-io.cpio");
    io_image(&guest, &init, &image)?;
    let (mut mica_block_runs, mut linux_block_runs, mut tsc_mhz) = (Vec::new(), Vec::new(), None);
    for run in 1..=runs {
        eprintln!("bench: block run {run} of {runs}, through the virtio-blk driver component ({ICOUNT_OPTIONS})");
        let devices = block(&disk);
        mica_launch::devices::prepare_disks(&devices)?;
        let cmd = icount_boot(&qemu, &mica, &cpu, &bundle, &devices);
        let outcome = boot(&cmd, BOOT_TIMEOUT)?;
        let mhz = super::clock::of_boot(&outcome.serial)
            .map(|clock| clock.counter_mhz)
            .with_context(|| format!("no TSC rate line\n{}", outcome.transcript()))?;
        let phases = mica_block_phases(&outcome.serial, mhz);
        check_phases(&phases).with_context(|| format!("Mica's block run\n{}", outcome.transcript()))?;
        tsc_mhz.get_or_insert(mhz);
        mica_block_runs.push(phases);

        eprintln!("bench: block run {run} of {runs}, through Linux {}'s virtio_blk ({ICOUNT_OPTIONS})", guest.release);
        let devices = block(&disk);
        mica_launch::devices::prepare_disks(&devices)?;
        let cmd = icount_boot(&qemu, &guest.kernel, &cpu, &image, &devices);
        let cmd = cmd.clone().cmdline(guest.cmdline(&cmd, &["block"]));
        let line = linux_guest::boot_for_line(&cmd, LINUX_PREFIX, BOOT_TIMEOUT)?;
        linux_block_runs.push(linux_block_phases(&line)?);
        let _ = fs::remove_file(&disk);
    }
    let (mica_block, mica_ranges) = medians(&mica_block_runs);
    let (linux_block, linux_ranges) = medians(&linux_block_runs);

    // HTTP.
    eprintln!("bench: HTTP through the virtio-net driver component and httpd (smoltcp), -accel tcg, wall clock");
    let bundle = crate::system::prepare(root, &toolchain, &root.join(NET_MANIFEST), &profile)?;
    let mica_http = http_bench(|port| {
        let devices = [net_device(port)];
        Ok(QemuCommand::new(&qemu, &mica, Accel::Tcg)
            .cpu(cpu.clone())
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
            .initrd(&bundle)
            .extra_args(mica_launch::devices::qemu_args(&devices)))
    })
    .context("Mica's HTTP server")?;
    eprintln!("bench: HTTP through Linux's virtio_net and busybox httpd, -accel tcg, wall clock");
    let linux_http = http_bench(|port| {
        let devices = [net_device(port)];
        let cmd = QemuCommand::new(&qemu, &guest.kernel, Accel::Tcg)
            .cpu(cpu.clone())
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
            .initrd(&image)
            .extra_args(mica_launch::devices::qemu_args(&devices));
        Ok(cmd.clone().cmdline(guest.cmdline(&cmd, &["httpd"])))
    })
    .context("Linux's HTTP server")?;

    let report = Report {
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        block_qemu_options: ICOUNT_OPTIONS,
        tsc_mhz: tsc_mhz.unwrap_or_default(),
        mica_block,
        linux_block,
        mica_block_ranges: mica_ranges,
        linux_block_ranges: linux_ranges,
        mica_block_runs,
        linux_block_runs,
        mica_http,
        linux_http,
        linux_kernel: guest.release,
        method: vec![
            "block: both guests on the same virtual hardware (microvm, modern virtio-mmio, a fresh 128 MiB raw \
             image, one vCPU, same CPU model and memory); Mica: the virtio-blk driver component and a client \
             component over IPC, timed with the monotonic clock (TSC-derived; under -icount shift=0, ns x \
             calibrated MHz / 1000 = instructions); Linux: mica-linux-bench as /init, O_DIRECT on /dev/vda, TSC \
             around each phase",
            "block throughput and IOPS are derived from the instruction counts at one instruction per ns (icount's \
             virtual clock), not measured in real time",
            "block: the runs alternate Mica and Linux, each on a fresh disk; the counts include the guest idling \
             while the host does the I/O, in real time (icount's virtual clock runs on while the guest halts), so \
             they vary from run to run (writes and flushes most): the table gives each phase's median",
            "HTTP: no icount (the client on this host runs in real time); each request opens a new TCP connection \
             through QEMU's user networking (slirp) to 127.0.0.1; Mica: virtio-net driver component + httpd \
             component with smoltcp over IPC; Linux: busybox httpd",
        ],
    };
    super::report::publish(&out_dir, "io.json", &report.markdown(), &report)
}

/// A virtio-net device whose port 80 is forwarded from 127.0.0.1:`port`.
pub(super) fn net_device(port: u16) -> MachineDevice {
    MachineDevice {
        kind: "virtio-net".into(),
        disk: None,
        disk_size: 0,
        read_only: false,
        hostfwd: vec![format!("tcp:127.0.0.1:{port}-:80")],
        output: None,
    }
}

/// The Linux guest's initramfs: busybox (with `ip` and `httpd`), the virtio modules in load order
/// (`/etc/mica/modules`), and `mica-linux-bench` as `/init`.
fn io_image(guest: &linux_guest::LinuxGuest, init: &Path, path: &Path) -> Result<()> {
    guest_image(guest, init, path, &["ip", "httpd"], LINUX_MODULES)
}

/// A Linux guest's initramfs: busybox with its usual applets and `applets`, `modules` (and what
/// they depend on) in load order (`/etc/mica/modules`), and `init` as `/init`.
pub(super) fn guest_image(
    guest: &linux_guest::LinuxGuest,
    init: &Path,
    path: &Path,
    applets: &[&str],
    modules: &[&str],
) -> Result<()> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut all = BUSYBOX_APPLETS.to_vec();
    all.extend(applets);
    let mut image = Initramfs::new();
    image.busybox(read(&guest.busybox)?, &all)?;
    let order = image.modules(&guest.modules, modules)?;
    image.file("etc/mica/modules", format!("{}\n", order.join("\n")).into_bytes(), 0o644)?;
    image.file("init", read(init)?, 0o755)?;
    fs::write(path, image.to_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The command that boots `kernel` with `initrd` and `devices` under TCG with `-icount
/// shift=0`, on CPU model `cpu` and the systems' memory.
pub(super) fn icount_boot(
    qemu: &Path,
    kernel: &Path,
    cpu: &str,
    initrd: &Path,
    devices: &[MachineDevice],
) -> QemuCommand {
    QemuCommand::new(qemu, kernel, Accel::Tcg)
        .cpu(cpu.to_owned())
        .memory_mib(crate::run::SYSTEM_MEMORY_MIB)
        .icount(true)
        .initrd(initrd)
        .extra_args(mica_launch::devices::qemu_args(devices))
}

/// Every `block-bench op=... bytes=... n=... ns=...` line, in instructions.
fn mica_block_phases(serial: &str, tsc_mhz: f64) -> Vec<BlockPhase> {
    mica_phases(serial, MICA_BLOCK_PREFIX, tsc_mhz)
}

/// Every `PREFIX op=... bytes=... n=... ns=...` line of `serial`, in instructions (`ns` x the
/// TSC's calibrated MHz / 1000, under `-icount shift=0`).
pub(super) fn mica_phases(serial: &str, prefix: &str, tsc_mhz: f64) -> Vec<BlockPhase> {
    super::report::op_lines(serial, prefix)
        .into_iter()
        .map(|(op, bytes, n, ns)| BlockPhase {
            op,
            bytes,
            n,
            instructions: (ns as f64 * tsc_mhz / 1000.0).round() as u64,
        })
        .collect()
}

/// The phases of `block seq-write=I ...` (instructions per phase).
fn linux_block_phases(line: &str) -> Result<Vec<BlockPhase>> {
    PHASES
        .iter()
        .map(|&(op, bytes, n)| {
            Ok(BlockPhase { op: op.to_owned(), bytes, n, instructions: linux_guest::field(line, op)? })
        })
        .collect()
}

/// Every phase, once, in order, with the request counts both clients use.
fn check_phases(phases: &[BlockPhase]) -> Result<()> {
    let got: Vec<(&str, u64, u64)> = phases.iter().map(|p| (p.op.as_str(), p.bytes, p.n)).collect();
    if got != PHASES {
        bail!("expected the phases {PHASES:?}, got {got:?}");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (free when asked; QEMU takes it right after).
pub(super) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Kills a QEMU child on drop.
pub(super) struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `GET /` on a new connection to 127.0.0.1:`port`: the status line and the body.
pub fn http_get(port: u16, timeout: Duration) -> Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: mica\r\nConnection: close\r\n\r\n").context("sending the request")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).context("reading the response")?;
    let (head, body) = response.split_once("\r\n\r\n").context("a response without a header end")?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// Boots the server `command(port)` makes, waits until a `GET /` answers, then times
/// [`HTTP_REQUESTS`] more.
fn http_bench(command: impl Fn(u16) -> Result<QemuCommand>) -> Result<Http> {
    let port = free_port()?;
    let cmd = command(port)?;
    let (guest, rx) = start(&cmd)?;
    let start = Instant::now();
    let mut console = String::new();
    let first = loop {
        while let Ok(line) = rx.try_recv() {
            console.push_str(&line);
            console.push('\n');
        }
        match http_get(port, Duration::from_secs(10)) {
            Ok((status, body)) => break (status, body),
            Err(_) if start.elapsed() < READY_TIMEOUT => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => bail!("no answer on port {port} within {READY_TIMEOUT:?}: {e:#}\n{}\n{console}", cmd.display()),
        }
    };
    if !first.0.contains("200") || first.1 != linux_guest_page() {
        bail!("unexpected answer: {:?} {:?}\n{console}", first.0, first.1);
    }
    let mut samples = Vec::with_capacity(HTTP_REQUESTS);
    let run_start = Instant::now();
    for i in 0..HTTP_REQUESTS {
        let t = Instant::now();
        let (status, body) = http_get(port, Duration::from_secs(30)).with_context(|| format!("request {i}"))?;
        if !status.contains("200") || body != linux_guest_page() {
            bail!("request {i}: unexpected answer {status:?} {body:?}");
        }
        samples.push(t.elapsed());
    }
    let total = run_start.elapsed();
    drop(guest);
    let latency = Summary::of(&samples).context("no requests")?;
    Ok(Http { requests: HTTP_REQUESTS, latency, requests_per_s: HTTP_REQUESTS as f64 / total.as_secs_f64() })
}

/// Starts the guest `cmd` boots, its console read (and kept) in the background so that a full
/// pipe never stalls it: the guest (killed when dropped) and its console lines.
pub(super) fn start(cmd: &QemuCommand) -> Result<(Guest, mpsc::Receiver<String>)> {
    let mut child = cmd
        .command()?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", cmd.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout was not captured")?;
    let guest = Guest(child);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((guest, rx))
}

/// The page both servers serve.
fn linux_guest_page() -> &'static str {
    "hello from Mica over virtio-net\n"
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "## Block I/O in guest instructions ({})\n", self.block_qemu_options);
        let _ =
            writeln!(md, "Machine: {} ({} CPUs), {}; Linux guest {}\n", m.cpu_model, m.cpus, m.qemu, self.linux_kernel);
        let _ = writeln!(
            md,
            "Each phase's median over {} runs per system (lowest to highest in brackets), per request.\n",
            self.mica_block_runs.len()
        );
        md.push_str(
            "| phase | requests | Mica instr./request | Linux instr./request | Mica / Linux | Mica MiB/s, IOPS @1 instr/ns | Linux MiB/s, IOPS @1 instr/ns |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        let ranges = self.mica_block_ranges.iter().zip(&self.linux_block_ranges);
        for ((mica, linux), (mica_range, linux_range)) in self.mica_block.iter().zip(&self.linux_block).zip(ranges) {
            let per = |p: &BlockPhase, (low, high): (u64, u64)| {
                let n = p.n.max(1);
                format!("{} ({}-{})", grouped(p.per_request().round() as u64), grouped(low / n), grouped(high / n))
            };
            let rate = |p: &BlockPhase| {
                if p.bytes == 0 {
                    format!("{:.0} /s", p.iops())
                } else {
                    format!("{:.1}, {:.0}", p.mib_per_s(), p.iops())
                }
            };
            let label =
                if mica.bytes == 0 { mica.op.clone() } else { format!("{} {} KiB", mica.op, mica.bytes / 1024) };
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {:.2} | {} | {} |",
                mica.n,
                per(mica, *mica_range),
                per(linux, *linux_range),
                mica.per_request() / linux.per_request(),
                rate(mica),
                rate(linux),
            );
        }
        let _ = writeln!(md, "\n## HTTP, wall clock (-accel tcg, {} requests, new connection each)\n", HTTP_REQUESTS);
        md.push_str("| server | median latency | p10 | p90 | requests/s |\n|---|---:|---:|---:|---:|\n");
        for (name, h) in [
            ("Mica: virtio-net driver + httpd (smoltcp)", &self.mica_http),
            ("Linux: virtio_net + busybox httpd", &self.linux_http),
        ] {
            let _ = writeln!(
                md,
                "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} |",
                h.latency.median_s * 1e3,
                h.latency.p10_s * 1e3,
                h.latency.p90_s * 1e3,
                h.requests_per_s
            );
        }
        md.push_str("\nNotes:\n");
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
    fn block_lines_are_read() {
        let serial = "[bench] block-bench op=seq-write bytes=32768 n=128 ns=1000\n\
                      [bench] block-bench op=flush bytes=0 n=1 ns=10\n\
                      noise\n";
        let phases = mica_block_phases(serial, 2000.0);
        assert_eq!(phases.len(), 2);
        assert_eq!(
            (phases[0].op.as_str(), phases[0].bytes, phases[0].n, phases[0].instructions),
            ("seq-write", 32768, 128, 2000)
        );
        assert!(check_phases(&phases).is_err());
        let line = " block seq-write=1280 flush=5 seq-read=640 rand-write=5000 rand-read=2500";
        let linux = linux_block_phases(line).unwrap();
        check_phases(&linux).unwrap();
        assert_eq!(linux[0].per_request(), 10.0);
        assert_eq!(linux[4].iops(), 500.0 * 1e9 / 2500.0);
        assert!(linux_block_phases(" block seq-write=1").is_err());
    }

    #[test]
    fn medians_and_ranges_per_phase() {
        let run = |counts: [u64; 2]| {
            vec![
                BlockPhase { op: "flush".into(), bytes: 0, n: 1, instructions: counts[0] },
                BlockPhase { op: "seq-read".into(), bytes: 4096, n: 2, instructions: counts[1] },
            ]
        };
        let (median, range) = medians(&[run([30, 7]), run([10, 9]), run([20, 1000])]);
        assert_eq!(median.iter().map(|p| p.instructions).collect::<Vec<_>>(), [20, 9]);
        assert_eq!(range, [(10, 30), (7, 1000)]);
        assert_eq!(median[1].op, "seq-read");
        let (even, _) = medians(&[run([10, 1]), run([20, 2])]);
        assert_eq!(even[0].instructions, 15, "an even count takes the mean of the middle two");
        assert!(medians(&[]).0.is_empty());
    }

    #[test]
    fn derived_rates() {
        let p = BlockPhase { op: "seq-read".into(), bytes: 1 << 20, n: 1, instructions: 1_000_000_000 };
        assert_eq!(p.iops(), 1.0);
        assert_eq!(p.mib_per_s(), 1.0);
    }
}
