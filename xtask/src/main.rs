//! `cargo xtask`: Mica's host tasks.
//!
//! - `setup`: install or check what building and booting needs (idempotent).
//! - `build`: build the kernel and print its path.
//! - `run`: build the kernel, the manifest's components, their AOT artifacts and the boot bundle,
//!   then boot under QEMU (or `mica-vmm` with `--vmm`): serial console on stdout, the kernel's
//!   verdict as exit status.
//! - `lint-kernel`: clippy with `-D warnings` on the bare-metal kernel, for every architecture.
//! - `test`: build the kernel, the test systems' bundles and the legacy-pod image, then run every
//!   host test, boot test, KVM trial and pod test (`cargo test --workspace`), and the component
//!   crates' host tests.
//! - `bench boot|components|ipc|io|pods`: benchmarks against baselines from the same run (see
//!   `bench/mod.rs`).
//! - `pod-image`: the Debian kernel + initramfs (busybox, mica-agent) that legacy pods boot.
//! - `install-shim`: containerd-shim-mica-v2 and its pod image, and the containerd configuration
//!   that makes Mica a Kubernetes `RuntimeClass` handler.
//! - `host-run`: run a component on this Linux host under Mica's Wasmtime settings and WASI host.
//! - `fuzz`: coverage-guided fuzzing of the input surfaces (libFuzzer, the host's nightly).
//! - `aot`: compile a component ahead of time for a CPU profile (cached) and print the artifact's
//!   path.
//!
//! `build`, `run`, `test` and the benches that boot Mica first check setup (cheap) and complete it
//! if needed.
#![forbid(unsafe_code)]

mod aot;
mod bench;
mod c_component;
mod cargo_json;
mod components;
mod empty_kernel;
mod fuzz;
mod host_run;
mod install_shim;
mod kernel;
mod linux_guest;
mod machine;
mod pod_image;
mod process;
mod run;
mod setup;
mod soak;
mod system;
mod test;
mod toolchain;
mod volume;
mod wasi_testsuite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
/// The manifest parser, a crate of its own (`boot/manifest`) so that the fuzzer reaches it too.
use mica_manifest as manifest;

/// Mica's host tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the toolchain pieces, QEMU and wasm-tools (idempotent; a second run only checks).
    Setup,
    /// Build the kernel and print the path of its image.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
        /// The architecture: x86_64 or aarch64 [default: this host's].
        #[arg(long, value_name = "ARCH", default_value_t = run::default_arch())]
        arch: mica_launch::GuestArch,
    },
    /// Build the kernel and boot it under QEMU; exit 0 on the kernel's "success" verdict.
    Run(run::RunArgs),
    /// Build the kernel, then run `cargo test --workspace` (host tests and boot tests).
    Test(test::TestArgs),
    /// Clippy with `-D warnings` on the bare-metal kernel for every architecture (the host's
    /// clippy never sees the code that builds only for bare metal).
    LintKernel,
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Build the legacy-pod image (Debian kernel, initramfs with busybox and mica-agent) in
    /// target/mica/pods/.
    PodImage,
    /// Install containerd-shim-mica-v2 and its pod image (default under /usr/local) and print
    /// the containerd configuration that registers Mica as the runtime handler `mica`.
    InstallShim(install_shim::InstallShimArgs),
    /// Run a component on this Linux host (no boot) under Mica's Wasmtime settings and WASI host.
    HostRun(host_run::HostRunArgs),
    /// Build, list or extract a volume of the file system service (a littlefs disk image).
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// The long versions of the reliability tests, with fresh seeds and figures: power cuts of the
    /// key-value store, the hostile component beside a working system.
    #[command(subcommand)]
    Soak(soak::SoakCommand),
    /// Fuzz Mica's input surfaces with libFuzzer (the host's nightly toolchain): every target, or
    /// one, for `--time` seconds each.
    Fuzz(fuzz::FuzzArgs),
    /// The WebAssembly WASI test suite (a checkout of its `prod/testsuite-base` branch), each test
    /// booted on Mica: prints `N passed, N failed` and writes
    /// target/mica/wasi-testsuite/results-ARCH.json.
    WasiTestsuite(wasi_testsuite::SuiteArgs),
    /// Compile a component ahead of time for a CPU profile (cached) and print the artifact path.
    Aot {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// The kernel architecture to compile for: x86_64 or aarch64 [default: this host's].
        #[arg(long, value_name = "ARCH", default_value_t = run::default_arch())]
        arch: mica_launch::GuestArch,
        /// CPU profile: `baseline`, `host`, or a comma-separated feature list of that
        /// architecture's CPUs.
        #[arg(long, default_value = "baseline")]
        cpu: String,
        /// Compile in fuel counting (what a manifest's `fuel` needs).
        #[arg(long)]
        fuel: bool,
        /// Compile in epoch checks (what a manifest's `cpu_time_limit` needs).
        #[arg(long)]
        epochs: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    let root = workspace_root();
    match command {
        Command::Setup => {
            setup::run(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { release, arch } => {
            let toolchain = setup::ensure(&root)?;
            let kernel = kernel::build(&root, &toolchain, arch, release)?;
            println!("{}", kernel.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(&root, &args),
        Command::Test(args) => test::run(&root, &args),
        Command::LintKernel => {
            let toolchain = setup::ensure(&root)?;
            for arch in mica_launch::GuestArch::ALL {
                let mut cmd = toolchain.kernel_clippy(&root, arch);
                eprintln!("xtask: clippy on the {arch} kernel: {}", process::shown(&cmd));
                let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
                if !status.success() {
                    eprintln!("error: clippy found problems in the {arch} kernel ({status})");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(bench) => bench::run(&root, &bench),
        Command::PodImage => {
            let image = pod_image::build(&root)?;
            println!("{}\n{}", image.kernel.display(), image.initramfs.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::InstallShim(args) => install_shim::run(&root, &args),
        Command::HostRun(args) => host_run::run(&args),
        Command::Volume(command) => volume::run(&root, &command),
        Command::Fuzz(args) => fuzz::run(&root, &args),
        Command::WasiTestsuite(args) => wasi_testsuite::run(&root, &args),
        Command::Soak(command) => soak::run(&root, &command),
        Command::Aot { wasm, arch, cpu, fuel, epochs } => {
            let target = arch.kernel_target();
            let profile = aot::profile_for(target, &cpu)?;
            let instrumentation = mica_runtime::config::Instrumentation { fuel, epochs };
            let artifact =
                aot::compile_for(&aot::cache_dir(&root.join("target")), &wasm, target, &profile, instrumentation)?;
            eprintln!(
                "xtask: {} for {} ({})",
                if artifact.cached { "cached" } else { "compiled" },
                artifact.key,
                wasm.display()
            );
            println!("{}", artifact.path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_owned()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_are_refused() {
        assert!(Cli::try_parse_from(["xtask", "run", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "boot", "--runs", "9"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--log", "loud"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--accel", "hvf"]).is_err());
    }

    #[test]
    fn run_arguments_parse() {
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "--accel",
            "tcg",
            "--release",
            "--log",
            "debug",
            "--timeout",
            "5",
            "--",
            "test=heap",
        ])
        .expect("valid");
        let Command::Run(args) = cli.command else { panic!("not run: {cli:?}") };
        assert!(args.release);
        assert_eq!(args.log.as_deref(), Some("debug"));
        assert_eq!(args.timeout, Some(5));
        assert_eq!(args.kernel_args, ["test=heap"]);
    }

    #[test]
    fn host_run_takes_a_fuel_budget() {
        let cli = Cli::try_parse_from(["xtask", "host-run", "--fuel", "1000", "c.wasm", "--", "spin"]).expect("valid");
        let Command::HostRun(args) = cli.command else { panic!("not host-run: {cli:?}") };
        assert_eq!(args.fuel, Some(1000));
        assert_eq!(args.args, ["spin"]);
        assert!(Cli::try_parse_from(["xtask", "host-run", "--fuel", "0", "c.wasm"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "aot", "c.wasm", "--fuel"]).expect("valid");
        assert!(matches!(cli.command, Command::Aot { fuel: true, epochs: false, .. }), "{cli:?}");
    }

    #[test]
    fn workspace_root_has_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
