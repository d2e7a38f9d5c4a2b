//! `cargo xtask test`: build the kernel, then run every test in the workspace.
//!
//! The boot tests (`qemu-tests`) find the kernel through `MICA_KERNEL` (the aarch64 kernel's
//! `Image` through `MICA_KERNEL_AARCH64`) and the system bundles
//! (built here from `components/default.toml` and `qemu-tests/systems/*.toml`, for the baseline
//! CPU profile, and the default, IPC and drivers systems for aarch64 as `NAME-aarch64`) through
//! `MICA_BUNDLES`; the legacy-pod tests (`pods/cli`) find the pod image
//! (`cargo xtask pod-image`: Debian's kernel and an initramfs with busybox and mica-agent) through
//! `MICA_POD_KERNEL` and `MICA_POD_INITRAMFS`; the shim's tests find the Mica kernel and the
//! template system of wasm containers through `MICA_WASM_IMAGE_DIR` and the component they
//! put in an image (`testkit`) through `MICA_TEST_COMPONENT`. The tests run with the same cargo
//! that runs this xtask (`$CARGO`), so the same toolchain builds host code throughout.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use mica_launch::GuestArch;
use mica_runtime::config::CpuFeature;

use crate::{kernel, process, setup, toolchain};

/// The variable through which the boot tests find the kernel image.
pub const KERNEL_ENV: &str = "MICA_KERNEL";
/// The variable through which the boot tests find the aarch64 kernel's `Image`.
pub const AARCH64_KERNEL_ENV: &str = "MICA_KERNEL_AARCH64";
/// The variable through which the boot tests find the system bundles.
pub const BUNDLES_ENV: &str = "MICA_BUNDLES";
/// The variables through which the pod tests find the pod image.
pub const POD_KERNEL_ENV: &str = "MICA_POD_KERNEL";
/// See [`POD_KERNEL_ENV`].
pub const POD_INITRAMFS_ENV: &str = "MICA_POD_INITRAMFS";
/// The variable through which the shim (and its tests) find the Mica kernel and the template
/// bundle wasm containers run in.
pub const WASM_IMAGE_ENV: &str = "MICA_WASM_IMAGE_DIR";
/// The variable through which the shim's tests find a wasm component to put in an image
/// (`testkit`).
pub const TEST_COMPONENT_ENV: &str = "MICA_TEST_COMPONENT";

/// Builds the bundle of every test system; returns the directory that holds them.
fn test_bundles(root: &Path, toolchain: &toolchain::Toolchain) -> Result<std::path::PathBuf> {
    let profile = mica_runtime::config::CpuProfile::baseline();
    let mut manifests =
        [crate::system::DEFAULT_MANIFEST, crate::system::IPC_EXAMPLE_MANIFEST, crate::system::DRIVERS_EXAMPLE_MANIFEST]
            .map(|m| root.join(m))
            .to_vec();
    let systems = root.join("qemu-tests").join("systems");
    let mut listed: Vec<_> = std::fs::read_dir(&systems)
        .with_context(|| format!("listing {}", systems.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    listed.sort();
    manifests.extend(listed);
    let mut dir = None;
    // Systems named `*-avx2` are compiled for AVX and AVX2 too (their boot tests give QEMU's CPU
    // model those features).
    let avx2 = mica_runtime::config::CpuProfile::new(
        "baseline+avx2",
        profile.features.iter().copied().chain([CpuFeature::Avx, CpuFeature::Avx2]),
    );
    // Systems named `*-late` are left wasm, for the system to compile at boot (late binding).
    for m in &manifests {
        let stem = m.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let binding = if stem.ends_with("-late") {
            crate::system::Binding::Late
        } else if stem.ends_with("-avx2") {
            crate::system::Binding::Aot(avx2.clone())
        } else {
            crate::system::Binding::Aot(profile.clone())
        };
        let bundle = crate::system::prepare_with(root, toolchain, m, &binding, None)?;
        dir = bundle.parent().map(Path::to_path_buf);
    }
    // The aarch64 boot tests' systems, the same wasm: `NAME-aarch64` compiled ahead of time for
    // aarch64's baseline (the example systems, the console and HTTP test systems for the
    // console and net drivers, the chaos system, and `notes` with the file system service),
    // `default-late-aarch64` left to the system to compile.
    let arm = mica_runtime::config::AARCH64_TARGET;
    let arm_baseline = mica_runtime::config::CpuProfile::baseline_for(arm);
    for (m, binding) in [
        (crate::system::DEFAULT_MANIFEST, crate::system::Binding::Aot(arm_baseline.clone())),
        (crate::system::IPC_EXAMPLE_MANIFEST, crate::system::Binding::Aot(arm_baseline.clone())),
        (crate::system::DRIVERS_EXAMPLE_MANIFEST, crate::system::Binding::Aot(arm_baseline.clone())),
        ("qemu-tests/systems/console.toml", crate::system::Binding::Aot(arm_baseline.clone())),
        ("qemu-tests/systems/http.toml", crate::system::Binding::Aot(arm_baseline.clone())),
        ("qemu-tests/systems/chaos.toml", crate::system::Binding::Aot(arm_baseline.clone())),
        ("qemu-tests/systems/notes.toml", crate::system::Binding::Aot(arm_baseline.clone())),
        ("qemu-tests/systems/c-hello.toml", crate::system::Binding::Aot(arm_baseline)),
        (crate::system::DEFAULT_MANIFEST, crate::system::Binding::Late),
    ] {
        let path = root.join(m);
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let late = if matches!(binding, crate::system::Binding::Late) { "-late" } else { "" };
        let name = format!("{stem}{late}-aarch64");
        crate::system::prepare_for(root, toolchain, &path, &binding, Some(&name), arm)?;
    }
    dir.context("no system manifests to build")
}

/// Arguments of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test --workspace` (after `--`; a second `--` passes arguments
    /// to the test binaries).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_args: Vec<String>,
}

/// Runs `cargo xtask test`.
pub fn run(root: &Path, args: &TestArgs) -> Result<ExitCode> {
    let toolchain = setup::ensure(root)?;
    let ((kernel, arm_kernel), bundles) = process::both(
        || -> Result<_> {
            Ok((
                kernel::build(root, &toolchain, GuestArch::X86_64, false)?,
                kernel::build(root, &toolchain, GuestArch::Aarch64, false)?,
            ))
        },
        || test_bundles(root, &toolchain),
    )?;
    let kernel = kernel.canonicalize().with_context(|| format!("{} vanished", kernel.display()))?;
    let arm_kernel = arm_kernel.canonicalize().with_context(|| format!("{} vanished", arm_kernel.display()))?;
    let pod_image = crate::pod_image::build(root)?;
    let wasm_image = crate::install_shim::wasm_image(root, &toolchain, &kernel, false)?;
    let testkit = crate::components::build(root, &toolchain, &["testkit".to_owned()])?;
    let testkit = testkit.get("testkit").context("testkit was not built")?;

    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    toolchain::clear_cargo_run_env(&mut cmd);
    cmd.current_dir(root)
        .env(KERNEL_ENV, &kernel)
        .env(AARCH64_KERNEL_ENV, &arm_kernel)
        .env(BUNDLES_ENV, &bundles)
        .env(POD_KERNEL_ENV, &pod_image.kernel)
        .env(POD_INITRAMFS_ENV, &pod_image.initramfs)
        .env(WASM_IMAGE_ENV, &wasm_image.dir)
        .env(TEST_COMPONENT_ENV, testkit)
        .args(["test", "--workspace"])
        .args(&args.cargo_args);
    eprintln!("xtask: {KERNEL_ENV}={} {}", kernel.display(), process::shown(&cmd));
    let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    if !status.success() {
        eprintln!("error: tests failed ({status})");
        return Ok(ExitCode::FAILURE);
    }
    // The plain logic of component and driver crates (log format, virtqueue, protocols, the HTTP
    // server against a simulated client) is tested on the host too.
    let mut cmd = components_host_tests(root);
    eprintln!("xtask: {}", process::shown(&cmd));
    let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    if status.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: component host tests failed ({status})");
        Ok(ExitCode::FAILURE)
    }
}

/// `cargo test` of the components' workspace on the host (all but `logger`, which only builds for
/// wasm, and `compiler`, which has no logic of its own to test there: the late-binding boot test
/// checks its artifacts against the host's), in a target directory of its own so host and wasm
/// builds do not evict each other.
fn components_host_tests(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    toolchain::clear_cargo_run_env(&mut cmd);
    cmd.current_dir(root).env("CARGO_TARGET_DIR", root.join("target").join("host-components")).args([
        "test",
        "--manifest-path",
        "components/Cargo.toml",
        "--workspace",
        "--exclude",
        "logger",
        "--exclude",
        "compiler",
    ]);
    cmd
}
