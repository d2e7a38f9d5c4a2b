//! `cargo xtask bench`: benchmarks.
//!
//! `bench boot` measures what a user waits for (wall time from starting QEMU to its exit, for an
//! empty kernel and for Mica's default system, per accelerator) and what the guest does (exact
//! instruction counts from Mica's first instruction to "ready" under TCG with `-icount`).
//! `bench components` counts, inside the guest, what loading, instantiating and running each
//! component of `components/bench.toml` costs, and what one host call costs. `bench pods` times
//! legacy pods (cold boot to the agent answering, exec) against plain QEMU. `bench ipc` counts IPC
//! round trips and one-way messages between components against pipes and Unix sockets in a Linux
//! guest. `bench density` starts N idle components and reports memory per component and the
//! instructions to start them. `bench io` counts block requests through the virtio-blk driver component against
//! Linux's `virtio_blk`, and times HTTP requests to a component web server against busybox
//! `httpd` in the Linux guest. `bench fs` counts the same `std::fs` calls through Mica's file
//! system service and on ext4 in a Linux guest. `bench net` times TCP requests to a std echo server on
//! Mica's `wasi:sockets` against the same server in a Linux guest. `bench k8s` times kubelet's CRI calls with the Mica shim against runc. `bench late-binding` compares a system compiled at boot (first boot,
//! then from the module store) with one compiled ahead of time, and CPU-specific code with baseline
//! code.

mod baselines;
mod boot;
mod clock;
mod components;
mod density;
mod fs;
mod io;
mod ipc;
mod k8s;
mod late;
mod net;
mod pods;
mod report;
mod stats;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use mica_launch::GuestArch;

/// The fewest boots a wall-clock row may be based on.
pub const MIN_RUNS: u32 = 10;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot time: wall clock per accelerator (empty kernel vs Mica) and guest instructions to ready.
    Boot(BootArgs),
    /// Component costs in guest instructions: load, instantiate, run, and one host call.
    Components(ArchArgs),
    /// Kubernetes: CRI RunPodSandbox + CreateContainer + StartContainer to the first output, and
    /// ExecSync, with the Mica shim against runc on the same containerd.
    K8s,
    /// Legacy pods: cold boot to the agent answering, exec, QEMU memory, plain-QEMU baseline.
    Pods,
    /// IPC between components in guest instructions (round trip, one-way, thread switch) against
    /// pipes and Unix sockets between two processes in a Linux guest.
    Ipc(ArchArgs),
    /// Block I/O (instructions per request) and HTTP (wall clock) through Mica's driver
    /// components against Linux's in-kernel drivers on the same virtual hardware.
    Io(IoArgs),
    /// Files (instructions per operation) through Mica's file system service against ext4 in a
    /// Linux guest on the same virtual hardware.
    Fs(IoArgs),
    /// TCP (wall clock): a std echo server on Mica's wasi:sockets and network stack component
    /// against the same server natively in a Linux guest, on the same virtual hardware.
    Net,
    /// Idle components: kernel memory per component and guest instructions to start N of them.
    Density(DensityArgs),
    /// Late binding: first boot (compile in the system) vs store-hit boot vs host-precompiled,
    /// compile cost per KiB of wasm, and code for this CPU against baseline code.
    LateBinding(LateArgs),
}

/// The architectures a benchmark measures.
#[derive(Debug, Args)]
pub struct ArchArgs {
    /// The guest architectures to measure, comma-separated: each boots in its own QEMU (TCG,
    /// `-icount shift=0`) against a Linux guest of the same architecture, and the table puts
    /// them side by side.
    #[arg(long, value_name = "ARCH", value_delimiter = ',', default_values_t = GuestArch::ALL)]
    pub arch: Vec<GuestArch>,
}

/// Arguments of `cargo xtask bench late-binding`.
#[derive(Debug, Args)]
pub struct LateArgs {
    /// Boots of each kind (each first boot on a fresh disk).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

/// Arguments of `cargo xtask bench density`.
#[derive(Debug, Args)]
pub struct DensityArgs {
    /// Idle components to start (at least 2).
    #[arg(long, default_value_t = 1000)]
    pub n: u64,
}

/// Arguments of `cargo xtask bench io`.
#[derive(Debug, Args)]
pub struct IoArgs {
    /// Block runs per system (Mica and Linux alternate); the table gives each phase's median and
    /// range. The counts include the guest idling while the host does the I/O, in real time, so
    /// they vary from run to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

/// Arguments of `cargo xtask bench boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The architectures.
    #[command(flatten)]
    pub arches: ArchArgs,
    /// Boots per kernel and accelerator (at least 10).
    #[arg(long, default_value_t = MIN_RUNS, value_parser = clap::value_parser!(u32).range(i64::from(MIN_RUNS)..))]
    pub runs: u32,
}

/// What every benchmark starts from.
pub(crate) struct Prepared {
    /// The toolchain, set up.
    pub toolchain: crate::toolchain::Toolchain,
    /// The release kernel, built.
    pub kernel: std::path::PathBuf,
    /// Where results are written (`target/mica/bench`), made.
    pub out_dir: std::path::PathBuf,
}

/// Sets up the toolchain, builds the release x86_64 kernel and makes the output directory.
pub(crate) fn prepare(root: &Path) -> Result<Prepared> {
    prepare_for(root, GuestArch::X86_64)
}

/// [`prepare`] with the kernel for `arch`.
pub(crate) fn prepare_for(root: &Path, arch: GuestArch) -> Result<Prepared> {
    let toolchain = crate::setup::ensure(root)?;
    let kernel = crate::kernel::build(root, &toolchain, arch, true)?;
    let out_dir = boot::target_dir(root, &kernel).join("mica").join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", out_dir.display()))?;
    Ok(Prepared { toolchain, kernel, out_dir })
}

/// `arches` without repeats, in the order given.
fn distinct(arches: &[GuestArch]) -> Vec<GuestArch> {
    let mut seen = Vec::new();
    for &arch in arches {
        if !seen.contains(&arch) {
            seen.push(arch);
        }
    }
    seen
}

/// Runs `measure` once on each architecture of `arches`, in order; the reports and the output
/// directory.
fn per_arch<R>(
    arches: &[GuestArch],
    mut measure: impl FnMut(GuestArch) -> Result<(R, std::path::PathBuf)>,
) -> Result<(Vec<R>, std::path::PathBuf)> {
    let mut reports = Vec::new();
    let mut out_dir = None;
    for arch in distinct(arches) {
        let (report, dir) = measure(arch)?;
        reports.push(report);
        out_dir = Some(dir);
    }
    Ok((reports, out_dir.ok_or_else(|| anyhow::anyhow!("no architecture to measure"))?))
}

/// A benchmark system prepared for one architecture.
pub(crate) struct ArchSystem {
    /// The architecture.
    pub arch: GuestArch,
    /// The toolchain, the release kernel and the output directory.
    pub prepared: Prepared,
    /// QEMU for the architecture.
    pub qemu: std::path::PathBuf,
    /// The system's bundle, compiled ahead of time for the architecture's baseline CPU.
    pub bundle: std::path::PathBuf,
    /// The baseline CPU's QEMU model on x86_64 (aarch64 boots `-cpu max`, QEMU's default here).
    pub cpu: Option<String>,
}

impl ArchSystem {
    /// Builds the release kernel for `arch` and the bundle of `manifest` (relative to `root`).
    pub fn prepare(root: &Path, arch: GuestArch, manifest: &str) -> Result<ArchSystem> {
        let prepared = prepare_for(root, arch)?;
        let qemu = mica_launch::find_qemu_for(arch)?;
        let target = crate::run::kernel_target(arch);
        let profile = mica_runtime::config::CpuProfile::baseline_for(target);
        let binding = crate::system::Binding::Aot(profile.clone());
        let bundle =
            crate::system::prepare_for(root, &prepared.toolchain, &root.join(manifest), &binding, None, target)?;
        let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
        let cpu = (arch == GuestArch::X86_64).then(|| mica_launch::cpu_model(&features));
        Ok(ArchSystem { arch, prepared, qemu, bundle, cpu })
    }

    /// A QEMU command booting `kernel` on the architecture's machine under `accel`, with the
    /// system memory and the CPU model.
    pub fn command(&self, kernel: &Path, accel: mica_launch::Accel) -> mica_launch::QemuCommand {
        let cmd = mica_launch::QemuCommand::new(&self.qemu, kernel, accel)
            .arch(self.arch)
            .memory_mib(crate::run::SYSTEM_MEMORY_MIB);
        match &self.cpu {
            Some(cpu) => cmd.cpu(cpu.clone()),
            None => cmd,
        }
    }
}

/// Runs a benchmark.
pub fn run(root: &Path, command: &BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Boot(args) => boot::run(root, args).map(|()| ExitCode::SUCCESS),
        BenchCommand::Components(args) => components::run(root, &args.arch).map(|()| ExitCode::SUCCESS),
        BenchCommand::Pods => pods::run(root).map(|()| ExitCode::SUCCESS),
        BenchCommand::K8s => k8s::run(root).map(|()| ExitCode::SUCCESS),
        BenchCommand::Ipc(args) => ipc::run(root, &args.arch).map(|()| ExitCode::SUCCESS),
        BenchCommand::Io(args) => io::run(root, args.runs).map(|()| ExitCode::SUCCESS),
        BenchCommand::Fs(args) => fs::run(root, args.runs).map(|()| ExitCode::SUCCESS),
        BenchCommand::Net => net::run(root).map(|()| ExitCode::SUCCESS),
        BenchCommand::Density(args) => density::run(root, args.n).map(|()| ExitCode::SUCCESS),
        BenchCommand::LateBinding(args) => late::run(root, args.runs).map(|()| ExitCode::SUCCESS),
    }
}
