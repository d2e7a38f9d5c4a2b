//! `cargo xtask bench pods`: what a user waits for with legacy pods, and what the guest does.
//!
//! - Wall clock (medians over [`RUNS`] pods), for each backend that can run a pod here (QEMU
//!   always, with hardware KVM or else TCG; mica-vmm on hardware KVM): `mica pod run` from start
//!   to the agent answering (cold boot: hypervisor start, Linux boot, module loading, agent
//!   handshake), `mica pod exec true` (connect, handshake, exec, exit status), and the
//!   hypervisor process's resident memory once the pod is ready.
//! - Baseline: the same kernel and initramfs under plain `qemu-system-x86_64 -M microvm` (same
//!   accelerator, memory and devices but no agent connection), timed from QEMU start to the init
//!   script's "up" line on the serial console.
//! - Guest instructions from reset to init under `-accel tcg -icount shift=0`: Debian's kernel
//!   with `mica-linux-bench boot` as `/init`, which prints the TSC as its first act.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, KvmProbe, QemuCommand};
use serde::Serialize;

use super::report::grouped;
use super::stats::{Summary, human};
use crate::linux_guest;
use crate::machine::Machine;
use crate::pod_image;

/// Pods started per measurement.
const RUNS: usize = 5;
/// `exec true` calls per pod.
const EXECS_PER_POD: usize = 4;
/// Linux-guest boots counted for instructions.
const COUNT_RUNS: usize = 2;
/// What the pod init prints once modules are loaded, just before it starts the agent.
const INIT_UP: &str = "mica-init: pod ";
/// A boot's time limit.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Everything `bench pods` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The accelerator QEMU ran with (pods and the baseline), and why.
    pub accel: String,
    /// The guest kernel release.
    pub linux: String,
    /// Each backend measured.
    pub backends: Vec<BackendRun>,
    /// Plain QEMU, same kernel and initramfs: start to the init's "up" line.
    pub plain_qemu_to_init: Summary,
    /// Guest instructions from reset to init's `main` (TCG, `-icount shift=0`), per boot.
    pub instructions_to_init: Vec<u64>,
    /// Backends and accelerators that were not measured, and why.
    pub not_measured: Vec<String>,
    /// Published figures to compare with.
    pub peers: Vec<&'static str>,
}

/// What one backend measured.
#[derive(Debug, Serialize)]
pub struct BackendRun {
    /// `qemu` or `mica-vmm`.
    pub backend: &'static str,
    /// Its accelerator, and why (`TCG (software KVM (kvm_pvm))`, `hardware KVM`).
    pub accel: String,
    /// `mica pod run` to the agent answering.
    pub run_to_ready: Summary,
    /// `mica pod exec POD -- true`.
    pub exec_true: Summary,
    /// The hypervisor's resident memory per pod once ready, in KiB (one sample per pod).
    pub rss_kib: Vec<u64>,
}

/// The backends this run cannot measure here, and why.
fn not_measured(probe: &KvmProbe) -> Vec<String> {
    let mut rows = Vec::new();
    if probe.usable() && !probe.hardware() {
        rows.push(format!(
            "qemu with {}: a stock Linux kernel stops there with a KVM emulation failure (cmpxchg16b), so pods use TCG",
            probe.label()
        ));
    }
    if !probe.hardware() {
        rows.push("hardware KVM: none on this host".to_owned());
    }
    if !probe.hardware() {
        rows.push(format!(
            "mica-vmm: needs hardware KVM for a stock Linux kernel (here: {})",
            probe.unusable_reason().unwrap_or_else(|| probe.label())
        ));
    }
    rows
}

/// Peer figures, quoted in the notes.
const PEERS: &[&str] = &[
    "Firecracker: <= 125 ms to guest init, <= 5 MiB VMM memory overhead (hardware KVM)",
    "Cloud Hypervisor: ~87 ms boot to guest init (hardware KVM)",
];

/// Runs the pods benchmark.
pub fn run(root: &Path) -> Result<()> {
    let target = root.join("target");
    let out_dir = target.join("mica").join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let image = pod_image::build(root)?;
    let guest = linux_guest::fetch(&target, mica_launch::GuestArch::X86_64)?;
    let mica = linux_guest::build_static(root, "mica-cli", "mica")?;
    let qemu = mica_launch::find_qemu()?;
    let probe = KvmProbe::detect();
    let machine = Machine::describe(&qemu, &probe);
    let (accel, accel_label) = if probe.hardware() && probe.usable() {
        (Accel::Kvm, "hardware KVM".to_owned())
    } else {
        (Accel::Tcg, format!("TCG ({})", probe.unusable_reason().unwrap_or_else(|| probe.label())))
    };

    let state = out_dir.join("pod-state");
    let _ = fs::remove_dir_all(&state);
    let mut backends = vec![("qemu", accel_label.clone())];
    if probe.hardware() {
        backends.push(("mica-vmm", "hardware KVM".to_owned()));
    }
    let mut runs = Vec::new();
    for (backend, label) in backends {
        let spec = out_dir.join(format!("bench-pod-{backend}.toml"));
        fs::write(
            &spec,
            format!(
                "name = \"bench\"\nbackend = \"{backend}\"\nkernel = \"{}\"\ninitramfs = \"{}\"\nmemory_mib = 256\n",
                image.kernel.display(),
                image.initramfs.display()
            ),
        )
        .with_context(|| format!("writing {}", spec.display()))?;
        runs.push(measure_backend(&mica, &state, &spec, backend, label)?);
    }

    eprint!("bench: {RUNS} boots of the same kernel and initramfs under plain QEMU ");
    let mut plain = Vec::new();
    for _ in 0..RUNS {
        plain.push(plain_qemu_to_init(&qemu, &image, accel)?);
        eprint!(".");
    }
    eprintln!();

    let init = linux_guest::build_static(root, "mica-linux-bench", "mica-linux-bench")?;
    let counting_image = out_dir.join("linux-boot.cpio");
    linux_guest::init_image(&guest, &init, &counting_image)?;
    let cmd = QemuCommand::new(&qemu, &guest.kernel, Accel::Tcg).memory_mib(256).initrd(&counting_image).icount(true);
    let cmd = cmd.clone().cmdline(guest.cmdline(&cmd, &["boot"]));
    eprint!("bench: instructions from reset to init (-icount shift=0, {COUNT_RUNS} boots) ");
    let mut instructions = Vec::new();
    for _ in 0..COUNT_RUNS {
        let line = linux_guest::boot_for_line(&cmd, "mica-linux-bench: ", TIMEOUT)?;
        instructions.push(linux_guest::field(&line, "instructions")?);
        eprint!(".");
    }
    eprintln!();

    let report = Report {
        machine,
        unix_time_s: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        accel: accel_label,
        linux: guest.release,
        backends: runs,
        plain_qemu_to_init: Summary::of(&plain).context("no plain boots")?,
        instructions_to_init: instructions,
        not_measured: not_measured(&probe),
        peers: PEERS.to_vec(),
    };
    super::report::publish(&out_dir, "pods.json", &report.markdown(), &report)
}

/// Starts, execs into and stops [`RUNS`] pods from `spec` (on `backend`, whose accelerator is
/// `accel`) with the `mica` binary at `mica` and state in `state`.
fn measure_backend(mica: &Path, state: &Path, spec: &Path, backend: &'static str, accel: String) -> Result<BackendRun> {
    let pod = |args: &[&str]| -> Result<String> {
        let out = Command::new(mica)
            .args(args)
            .env("MICA_STATE_DIR", state)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", mica.display()))?;
        if !out.status.success() {
            bail!(
                "`mica {}` failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    eprint!("bench: {RUNS} pods on {backend} ({accel}): run, {EXECS_PER_POD} x exec true, RSS, stop ");
    let spec_arg = spec.to_string_lossy().into_owned();
    let (mut ready, mut execs, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        let line = pod(&["pod", "run", &spec_arg])?;
        ready.push(start.elapsed());
        if !line.starts_with(&format!("pod bench running: {backend} with ")) {
            bail!("the pod did not run on {backend}: {line}");
        }
        for _ in 0..EXECS_PER_POD {
            let start = Instant::now();
            pod(&["pod", "exec", "bench", "--", "true"])?;
            execs.push(start.elapsed());
        }
        rss.push(hypervisor_rss_kib(&state.join("pods").join("bench"))?);
        pod(&["pod", "stop", "bench"])?;
        eprint!(".");
    }
    eprintln!();
    Ok(BackendRun {
        backend,
        accel,
        run_to_ready: Summary::of(&ready).context("no pod runs")?,
        exec_true: Summary::of(&execs).context("no execs")?,
        rss_kib: rss,
    })
}

/// The resident memory of the hypervisor process of the pod in `dir`, in KiB.
fn hypervisor_rss_kib(dir: &Path) -> Result<u64> {
    let record: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.join("pod.json")).with_context(|| format!("reading {}/pod.json", dir.display()))?,
    )?;
    let pid = record["pid"].as_u64().context("pod.json has no pid")?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("hypervisor pid {pid}"))?;
    vm_rss_kib(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// `VmRSS:` of a `/proc/PID/status` text, in KiB.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The command line of the plain-QEMU baseline: what `mica pod run` gives a pod, the TSC rate
/// under TCG included.
fn plain_cmdline(accel: Accel) -> String {
    let tsc_khz = if accel == Accel::Tcg { mica_launch::linux_guest::host_tsc_khz() } else { None };
    mica_launch::linux_guest::pod_cmdline("plain", tsc_khz)
}

/// Boots the pod image under plain QEMU (serial on stdout) until the init prints its "up" line;
/// the time from start to that line.
fn plain_qemu_to_init(qemu: &Path, image: &pod_image::PodImage, accel: Accel) -> Result<Duration> {
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", "microvm", "-accel", accel.name(), "-cpu", if accel == Accel::Kvm { "host" } else { "max" }])
        .args(["-m", "256M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initramfs)
        .arg("-append")
        .arg(plain_cmdline(accel))
        .args(["-serial", "stdio"])
        .args(["-device", "virtio-serial-device"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("running {}", qemu.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout was not captured")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let found = BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.contains(INIT_UP));
        let _ = tx.send(found.then(Instant::now));
    });
    let reached = rx.recv_timeout(TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    match reached {
        Ok(Some(at)) => Ok(at - start),
        Ok(None) => bail!("plain QEMU ended without the init's {INIT_UP:?} line"),
        Err(_) => bail!("plain QEMU did not reach the init within {} s", TIMEOUT.as_secs()),
    }
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "## Legacy pods ({}, Linux {})\n", self.accel, self.linux);
        let _ = writeln!(md, "Machine: {} ({} CPUs), {}, KVM: {}\n", m.cpu_model, m.cpus, m.qemu, m.kvm);
        md.push_str("| what | median | p10 | p90 | runs |\n|---|---:|---:|---:|---:|\n");
        let mut rows: Vec<(String, &Summary)> = Vec::new();
        for run in &self.backends {
            let on = format!("{}, {}", run.backend, run.accel);
            rows.push((format!("`mica pod run` to the agent answering (cold boot; {on})"), &run.run_to_ready));
            rows.push((format!("`mica pod exec POD -- true` ({on})"), &run.exec_true));
        }
        rows.push(("plain `qemu -M microvm`, same kernel + initramfs, to init".to_owned(), &self.plain_qemu_to_init));
        for (what, s) in rows {
            let _ = writeln!(
                md,
                "| {what} | {} | {} | {} | {} |",
                human(s.median_s),
                human(s.p10_s),
                human(s.p90_s),
                s.runs
            );
        }
        for run in &self.backends {
            let mut rss = run.rss_kib.clone();
            rss.sort_unstable();
            if let Some(median) = rss.get(rss.len() / 2) {
                let _ = writeln!(
                    md,
                    "\n{} resident memory per ready pod (256 MiB guest): median {:.1} MiB (min {:.1}, max {:.1})",
                    run.backend,
                    *median as f64 / 1024.0,
                    rss[0] as f64 / 1024.0,
                    rss[rss.len() - 1] as f64 / 1024.0
                );
            }
        }
        let counts: Vec<String> = self.instructions_to_init.iter().map(|c| grouped(*c)).collect();
        let _ = writeln!(
            md,
            "\nGuest instructions from reset to init (`-accel tcg -icount shift=0`, Debian kernel, {} boots): {}",
            counts.len(),
            counts.join(", ")
        );
        if !self.not_measured.is_empty() {
            md.push_str("\nNot measured here:\n");
            for row in &self.not_measured {
                let _ = writeln!(md, "- {row}");
            }
        }
        let _ = writeln!(md, "\nPeers (hardware KVM, not comparable one-to-one with TCG): {}.", self.peers.join("; "));
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        assert_eq!(vm_rss_kib("Name:\tqemu\nVmRSS:\t  123456 kB\nThreads: 4\n"), Some(123_456));
        assert_eq!(vm_rss_kib("Name:\tqemu\n"), None);
    }

    #[test]
    fn what_cannot_run_here_is_said() {
        use mica_launch::{DevKvm, KvmBacking};
        let software = KvmProbe { dev: DevKvm::Usable, backing: KvmBacking::Software("kvm_pvm") };
        let rows = not_measured(&software);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(rows[0].starts_with("qemu with software KVM (kvm_pvm): a stock Linux kernel stops"), "{rows:?}");
        let hardware = KvmProbe { dev: DevKvm::Usable, backing: KvmBacking::Hardware("kvm_amd") };
        assert!(not_measured(&hardware).is_empty(), "both backends run on hardware KVM");
    }

    #[test]
    fn markdown_has_rows_and_peers() {
        let s = |x: f64| Summary::of(&[Duration::from_secs_f64(x)]).unwrap();
        let report = Report {
            machine: Machine::sample("none"),
            unix_time_s: 0,
            accel: "TCG (no KVM)".into(),
            linux: "6.1.0-56-cloud-amd64".into(),
            backends: vec![BackendRun {
                backend: "qemu",
                accel: "TCG (no KVM)".into(),
                run_to_ready: s(2.7),
                exec_true: s(0.2),
                rss_kib: vec![200 * 1024, 100 * 1024, 150 * 1024],
            }],
            plain_qemu_to_init: s(2.5),
            instructions_to_init: vec![1_500_000_000, 1_500_000_000],
            not_measured: vec!["mica-vmm: needs hardware KVM".into()],
            peers: PEERS.to_vec(),
        };
        let md = report.markdown();
        assert!(md.contains("## Legacy pods (TCG (no KVM), Linux 6.1.0-56-cloud-amd64)"), "{md}");
        assert!(
            md.contains("| `mica pod run` to the agent answering (cold boot; qemu, TCG (no KVM)) | 2.700 s |"),
            "{md}"
        );
        assert!(
            md.contains("qemu resident memory per ready pod (256 MiB guest): median 150.0 MiB (min 100.0, max 200.0)"),
            "{md}"
        );
        assert!(md.contains("2 boots): 1,500,000,000, 1,500,000,000"), "{md}");
        assert!(md.contains("Firecracker") && md.contains("Cloud Hypervisor"), "{md}");
        assert!(md.contains("Not measured here:\n- mica-vmm: needs hardware KVM"), "{md}");
    }
}
