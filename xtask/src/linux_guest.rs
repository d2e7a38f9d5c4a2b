//! Linux guests: the baseline side of Mica's benchmarks (and the test workload of legacy pods).
//!
//! The guest is stock Debian: the kernel of `linux-image-cloud-amd64` and `busybox-static`,
//! fetched with `apt-get download` (no root needed, nothing installed on the host) and unpacked
//! under `target/mica/linux/`. A static program of this workspace (built for
//! `x86_64-unknown-linux-gnu` with `+crt-static`) becomes `/init` of an initramfs made by
//! `mica-initramfs`, and the guest boots under the same [`QemuCommand`] settings as Mica.

use std::fs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mica_initramfs::Initramfs;
use mica_launch::QemuCommand;
use mica_launch::run::{Ended, OutputMode, RunOptions};

use crate::process;
use crate::toolchain::clear_cargo_run_env;

/// The Debian package that names the current cloud kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// The Debian package with a static busybox.
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The target static guest programs are built for.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Busybox applets linked into every image (a shell and what pods and debugging need).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "cat", "dmesg", "echo", "env", "false", "grep", "head", "hostname", "id", "insmod", "kill", "ls", "mkdir", "mount",
    "poweroff", "ps", "reboot", "rm", "sed", "setsid", "sh", "sleep", "sync", "tail", "touch", "true", "umount",
    "uname",
];

/// An unpacked Debian kernel and busybox.
#[derive(Debug, Clone)]
pub struct LinuxGuest {
    /// The kernel release (`6.1.0-48-cloud-amd64`).
    pub release: String,
    /// The kernel image (bzImage).
    pub kernel: PathBuf,
    /// Its modules (`lib/modules/<release>`).
    pub modules: PathBuf,
    /// The static busybox binary.
    pub busybox: PathBuf,
}

/// Fetches (once) and unpacks Debian's cloud kernel and static busybox under `target_dir`.
pub fn fetch(target_dir: &Path) -> Result<LinuxGuest> {
    let dir = target_dir.join("mica").join("linux");
    let package = kernel_package()?;
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{KERNEL_METAPACKAGE} depends on {package:?}, not a linux-image-* package"))?
        .to_owned();
    let kernel_root = unpacked(&dir, &package)?;
    let busybox_root = unpacked(&dir, BUSYBOX_PACKAGE)?;
    let guest = LinuxGuest {
        kernel: kernel_root.join("boot").join(format!("vmlinuz-{release}")),
        modules: kernel_root.join("lib").join("modules").join(&release),
        busybox: busybox_root.join("bin").join("busybox"),
        release,
    };
    for path in [&guest.kernel, &guest.modules, &guest.busybox] {
        if !path.exists() {
            bail!("{} is missing from the unpacked Debian packages under {}", path.display(), dir.display());
        }
    }
    Ok(guest)
}

/// The versioned kernel package `linux-image-cloud-amd64` currently depends on.
fn kernel_package() -> Result<String> {
    let out = process::capture(Command::new("apt-cache").args(["depends", "--important", KERNEL_METAPACKAGE]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with("linux-image-"));
    match package {
        Some(package) if out.status.success() => Ok(package.to_owned()),
        _ => bail!(
            "apt does not know {KERNEL_METAPACKAGE} (needed for the Linux guest): run `apt-get update` as root, or \
             check that Debian's main archive is in /etc/apt/sources.list\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The unpacked root of Debian package `package` under `dir`, downloading and unpacking it the
/// first time. A marker file is written last, so an interrupted unpack is redone.
fn unpacked(dir: &Path, package: &str) -> Result<PathBuf> {
    let root = dir.join(package);
    let marker = root.join(".mica-unpacked");
    if marker.is_file() {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing the partial unpack {}", root.display()))?;
    }
    let downloads = dir.join("debs");
    fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    eprintln!("xtask: downloading Debian package {package}");
    process::output(Command::new("apt-get").args(["download", "-q", package]).current_dir(&downloads))
        .with_context(|| format!("downloading {package} (the Linux guest needs it)"))?;
    let deb = fs::read_dir(&downloads)
        .with_context(|| format!("listing {}", downloads.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
        .max()
        .with_context(|| format!("apt-get download left no {package}_*.deb in {}", downloads.display()))?;
    process::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    fs::write(&marker, package).with_context(|| format!("writing {}", marker.display()))?;
    Ok(root)
}

/// Builds binary `bin` of workspace package `package` as a static Linux executable (release) and
/// returns its path.
pub fn build_static(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    clear_cargo_run_env(&mut cmd);
    cmd.env("RUSTFLAGS", "-C target-feature=+crt-static -C strip=debuginfo")
        .args(["build", "--release", "-p", package, "--bin", bin, "--target", GUEST_TARGET])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root);
    let what = format!("building {bin} for the Linux guest");
    crate::cargo_json::build(&mut cmd, &what)?
        .into_iter()
        .filter(|(target, _)| target.name == bin && target.kind.iter().any(|kind| kind == "bin"))
        .find_map(|(_, msg)| msg.executable)
        .with_context(|| format!("cargo built no `{bin}` executable: `{}`", process::shown(&cmd)))
}

/// An initramfs with busybox and `init` as `/init`, written to `path`.
pub fn init_image(guest: &LinuxGuest, init: &Path, path: &Path) -> Result<()> {
    let busybox = fs::read(&guest.busybox).with_context(|| format!("reading {}", guest.busybox.display()))?;
    let program = fs::read(init).with_context(|| format!("reading {}", init.display()))?;
    let mut image = Initramfs::new();
    image.busybox(busybox, BUSYBOX_APPLETS)?;
    image.file("init", program, 0o755)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    image.write_to(std::io::BufWriter::new(file)).with_context(|| format!("writing {}", path.display()))
}

/// The kernel command line of a baseline guest: serial console, quiet, no reboot wait, the
/// workload's arguments for init after `--`.
pub fn cmdline(init_args: &[&str]) -> String {
    format!("console=ttyS0 quiet panic=-1 reboot=t -- {}", init_args.join(" "))
}

/// Boots `cmd` (a Linux guest whose init prints `prefix...` and powers off) and returns what
/// follows `prefix` on the first line that has it.
pub fn boot_for_line(cmd: &QemuCommand, prefix: &str, timeout: Duration) -> Result<String> {
    let options = RunOptions { timeout, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(cmd, &options)?;
    let line = outcome.serial.lines().find_map(|line| line.trim_end().split_once(prefix).map(|(_, rest)| rest));
    match (outcome.ended, line) {
        (Ended::Exited(0), Some(rest)) if !rest.starts_with("error:") => Ok(rest.to_owned()),
        _ => bail!(
            "the Linux guest did not report a result: {}\n{}\n{}",
            outcome.describe(),
            cmd.display(),
            outcome.transcript()
        ),
    }
}

/// The value of `key=` in a `key=value key=value` line.
pub fn field(line: &str, key: &str) -> Result<u64> {
    let value = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .with_context(|| format!("no {key}= in {line:?}"))?;
    value.parse().with_context(|| format!("{key}={value} in {line:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_by_key() {
        let line = " sieve n=10 result=4 instructions=1234";
        assert_eq!(field(line, "result").unwrap(), 4);
        assert_eq!(field(line, "instructions").unwrap(), 1234);
        assert!(field(line, "n2").unwrap_err().to_string().starts_with("no n2="));
        assert!(field("x=abc", "x").unwrap_err().to_string().contains("is not a number"));
    }

    #[test]
    fn the_workload_follows_the_double_dash() {
        assert_eq!(cmdline(&["sieve", "100"]), "console=ttyS0 quiet panic=-1 reboot=t -- sieve 100");
    }
}
