//! Linux guests: the baseline side of Mica's benchmarks (and the test workload of legacy pods).
//!
//! The guest is stock Debian for the guest's architecture: the kernel of
//! `linux-image-cloud-amd64` or `linux-image-cloud-arm64` and `busybox-static`, fetched with
//! `apt-get download` (no root needed, nothing installed on the host) and unpacked under
//! `target/mica/linux/` (`target/mica/linux-arm64/` for arm64). Packages of another architecture
//! than the host's come through a private apt state of that architecture
//! (`target/mica/linux-arm64/apt`, the host's own sources lists): the host's dpkg is not told of
//! a foreign architecture. A static program of this workspace (built for
//! `x86_64-unknown-linux-gnu` or `aarch64-unknown-linux-gnu` with `+crt-static`) becomes `/init`
//! of an initramfs made by `mica-initramfs`, and the guest boots under the same [`QemuCommand`]
//! settings as Mica.

use std::fs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mica_initramfs::Initramfs;
use mica_launch::run::{Ended, OutputMode, RunOptions};
use mica_launch::{GuestArch, QemuCommand};

use crate::process;
use crate::toolchain::{Toolchain, clear_cargo_run_env};

/// The Debian package with a static busybox.
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Busybox applets linked into every image (a shell and what pods and debugging need).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "cat", "dmesg", "echo", "env", "false", "grep", "head", "hostname", "id", "insmod", "kill", "ls", "mkdir", "mount",
    "poweroff", "ps", "reboot", "rm", "sed", "setsid", "sh", "sleep", "sync", "tail", "tar", "touch", "true", "umount",
    "uname",
];

/// Debian's name for `arch`.
const fn debian_arch(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "amd64",
        GuestArch::Aarch64 => "arm64",
    }
}

/// The Rust target static guest programs for `arch` are built for.
const fn guest_target(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "x86_64-unknown-linux-gnu",
        GuestArch::Aarch64 => "aarch64-unknown-linux-gnu",
    }
}

/// What cross-building a static Linux program for `arch` on another host needs (Debian's linker
/// driver and glibc's static libraries for it), and the linker they provide.
const fn cross_linker(arch: GuestArch) -> ([&'static str; 2], &'static str) {
    match arch {
        GuestArch::X86_64 => (["gcc-x86-64-linux-gnu", "libc6-dev-amd64-cross"], "x86_64-linux-gnu-gcc"),
        GuestArch::Aarch64 => (["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"], "aarch64-linux-gnu-gcc"),
    }
}

/// An unpacked Debian kernel and busybox.
#[derive(Debug, Clone)]
pub struct LinuxGuest {
    /// Their architecture.
    pub arch: GuestArch,
    /// The kernel release (`6.1.0-48-cloud-amd64`).
    pub release: String,
    /// The kernel image (bzImage on x86_64, `Image` on arm64).
    pub kernel: PathBuf,
    /// Its modules (`lib/modules/<release>`).
    pub modules: PathBuf,
    /// The static busybox binary.
    pub busybox: PathBuf,
}

impl LinuxGuest {
    /// The kernel command line of a baseline guest booted by `cmd` (its accelerator and clock
    /// decide the clock options: [`clock_options`]); the workload's arguments for init follow
    /// `--`.
    pub fn cmdline(&self, cmd: &QemuCommand, init_args: &[&str]) -> String {
        cmdline(self.arch, &clock_options(self.arch, cmd.accel(), cmd.counts_instructions()), init_args)
    }

    /// A QEMU command that boots this kernel with `initrd` under `accel` on the machine Mica's
    /// boots of the same architecture use.
    pub fn qemu(&self, qemu: &Path, accel: mica_launch::Accel, initrd: &Path) -> QemuCommand {
        QemuCommand::new(qemu, &self.kernel, accel).arch(self.arch).initrd(initrd)
    }
}

/// Fetches (once) and unpacks Debian's cloud kernel and static busybox for `arch` under
/// `target_dir`.
pub fn fetch(target_dir: &Path, arch: GuestArch) -> Result<LinuxGuest> {
    let apt = Apt::for_arch(target_dir, arch)?;
    let package = apt.kernel_package()?;
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{} depends on {package:?}, not a linux-image-* package", apt.metapackage))?
        .to_owned();
    let kernel_root = apt.unpacked(&package)?;
    let busybox_root = apt.unpacked(BUSYBOX_PACKAGE)?;
    let guest = LinuxGuest {
        arch,
        kernel: kernel_root.join("boot").join(format!("vmlinuz-{release}")),
        modules: kernel_root.join("lib").join("modules").join(&release),
        busybox: busybox_root.join("bin").join("busybox"),
        release,
    };
    for path in [&guest.kernel, &guest.modules, &guest.busybox] {
        if !path.exists() {
            bail!("{} is missing from the unpacked Debian packages under {}", path.display(), apt.dir.display());
        }
    }
    Ok(guest)
}

/// apt for one architecture's packages: the host's own, or a private state of another
/// architecture.
struct Apt {
    /// Where packages are downloaded and unpacked.
    dir: PathBuf,
    /// The metapackage that names the current cloud kernel.
    metapackage: String,
    /// `-o` options that point apt at the private state (empty for the host's architecture).
    options: Vec<String>,
}

impl Apt {
    /// apt for `arch`'s packages, its private package lists brought up to date (once a day)
    /// when `arch` is not the host's.
    fn for_arch(target_dir: &Path, arch: GuestArch) -> Result<Apt> {
        let debian = debian_arch(arch);
        let metapackage = format!("linux-image-cloud-{debian}");
        if GuestArch::host() == Some(arch) {
            return Ok(Apt { dir: target_dir.join("mica").join("linux"), metapackage, options: Vec::new() });
        }
        let dir = target_dir.join("mica").join(format!("linux-{debian}"));
        let state = dir.join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(state.join(sub)).with_context(|| format!("creating {}", state.join(sub).display()))?;
        }
        let status = state.join("status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        let apt = Apt { dir, metapackage, options: private_options(&state, debian) };
        let stamp = state.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(24 * 3600));
        if !fresh {
            eprintln!("xtask: updating the {debian} package lists (apt, private state in {})", state.display());
            process::output(Command::new("apt-get").args(&apt.options).args(["update", "-q"]))
                .with_context(|| format!("updating the {debian} package lists for the {} Linux guest", arch.name()))?;
            fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))?;
        }
        Ok(apt)
    }

    /// The versioned kernel package the cloud metapackage currently depends on.
    fn kernel_package(&self) -> Result<String> {
        let out = process::capture(Command::new("apt-cache").args(&self.options).args([
            "depends",
            "--important",
            &self.metapackage,
        ]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let package = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|dep| dep.starts_with("linux-image-"));
        match package {
            Some(package) if out.status.success() => Ok(package.to_owned()),
            _ => bail!(
                "apt does not know {} (needed for the Linux guest): run `apt-get update` as root, or \
                 check that Debian's main archive is in /etc/apt/sources.list(.d)\n{}",
                self.metapackage,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// The unpacked root of Debian package `package`, downloading and unpacking it the first
    /// time. A marker file is written last, so an interrupted unpack is redone.
    fn unpacked(&self, package: &str) -> Result<PathBuf> {
        let root = self.dir.join(package);
        let marker = root.join(".mica-unpacked");
        if marker.is_file() {
            return Ok(root);
        }
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("removing the partial unpack {}", root.display()))?;
        }
        let downloads = self.dir.join("debs");
        fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
        eprintln!("xtask: downloading Debian package {package}");
        process::output(
            Command::new("apt-get").args(&self.options).args(["download", "-q", package]).current_dir(&downloads),
        )
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
}

/// The `-o` options that make apt-get and apt-cache use the private state in `state` (lists,
/// an empty dpkg status, the download cache) for Debian architecture `debian` alone, with the
/// host's sources lists, and without the host's lock.
fn private_options(state: &Path, debian: &str) -> Vec<String> {
    [
        format!("Dir::State={}", state.display()),
        format!("Dir::State::Lists={}", state.join("lists").display()),
        format!("Dir::State::status={}", state.join("status").display()),
        format!("Dir::Cache={}", state.join("cache").display()),
        format!("APT::Architecture={debian}"),
        format!("APT::Architectures::={debian}"),
        "Debug::NoLocking=1".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect()
}

/// Builds binary `bin` of workspace package `package` as a static x86_64 Linux executable
/// (release, the host's cargo) and returns its path.
pub fn build_static(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    clear_cargo_run_env(&mut cmd);
    cmd.args(["build", "--target", guest_target(GuestArch::X86_64)]).current_dir(root);
    static_build(cmd, package, bin, GuestArch::X86_64)
}

/// [`build_static`] for `arch`. For the host's architecture the host's cargo builds it; for
/// another, the kernel's toolchain way with the standard library for that target (rustup's, or
/// Debian's built from source) and Debian's cross linker, installed here when missing.
pub fn build_static_for(
    root: &Path,
    toolchain: &Toolchain,
    package: &str,
    bin: &str,
    arch: GuestArch,
) -> Result<PathBuf> {
    if arch == GuestArch::X86_64 && GuestArch::host() == Some(arch) {
        return build_static(root, package, bin);
    }
    let target = guest_target(arch);
    let (packages, linker) = cross_linker(arch);
    let missing = crate::setup::apt::missing(&crate::setup::RealHost, &packages)?;
    crate::setup::apt::install(&crate::setup::RealHost, &missing)
        .with_context(|| format!("the {target} build of {bin} needs a cross linker"))?;
    let mut cmd = toolchain.foreign_std_build(root, target);
    cmd.env(format!("CARGO_TARGET_{}_LINKER", target.replace('-', "_").to_uppercase()), linker);
    static_build(cmd, package, bin, arch)
}

/// Runs `cmd` (a `cargo build --target ...` in the workspace) for a static release build of
/// `bin`; the executable's path.
fn static_build(mut cmd: Command, package: &str, bin: &str, arch: GuestArch) -> Result<PathBuf> {
    cmd.env("RUSTFLAGS", "-C target-feature=+crt-static -C strip=debuginfo")
        .args(["--release", "-p", package, "--bin", bin])
        .arg("--message-format=json-render-diagnostics");
    let what = format!("building {bin} for the {} Linux guest", arch.name());
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

/// The kernel command line of a baseline guest for `arch`: serial console, quiet, no reboot
/// wait, `clock` ([`clock_options`]), the workload's arguments for init after `--`.
pub fn cmdline(arch: GuestArch, clock: &[String], init_args: &[&str]) -> String {
    let mut line = format!("console={} quiet panic=-1 reboot=t", arch.linux_console());
    for option in clock {
        line.push(' ');
        line.push_str(option);
    }
    format!("{line} -- {}", init_args.join(" "))
}

/// The clock options an x86_64 Linux guest needs to boot every time under emulation, as the
/// pods' guests get them ([`mica_launch::linux_guest::pod_cmdline`]):
/// - `no_timer_check`: Linux's check that the timer reaches the I/O APIC relies on timing an
///   emulated vCPU may miss.
/// - `tsc_early_khz` under TCG: Linux calibrates the TSC against the PIT, which under TCG now and
///   then misses its window; the TSC is then marked unstable and the boot can stall for good
///   (`bench io`'s HTTP guest once never answered). Under `-icount shift=0` the TSC ticks once
///   per instruction, a virtual nanosecond (1 GHz); under plain TCG it is the host's TSC. KVM
///   guests calibrate against kvmclock and get none.
///
/// aarch64's generic timer reports its own frequency: nothing to add (and an option Linux does
/// not know would reach init as an argument).
pub fn clock_options(arch: GuestArch, accel: mica_launch::Accel, icount: bool) -> Vec<String> {
    if arch != GuestArch::X86_64 {
        return Vec::new();
    }
    let mut options = vec![String::from("no_timer_check")];
    let tsc_khz = match (accel, icount) {
        (mica_launch::Accel::Kvm, _) => None,
        (mica_launch::Accel::Tcg, true) => Some(1_000_000),
        (mica_launch::Accel::Tcg, false) => mica_launch::linux_guest::host_tsc_khz(),
    };
    if let Some(khz) = tsc_khz {
        options.push(format!("tsc_early_khz={khz}"));
    }
    options
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
    fn a_foreign_architecture_gets_its_own_apt_state() {
        let options = private_options(Path::new("/t/apt"), "arm64");
        assert!(options.chunks(2).all(|pair| pair[0] == "-o"), "{options:?}");
        for wanted in ["Dir::State::status=/t/apt/status", "APT::Architecture=arm64", "APT::Architectures::=arm64"] {
            assert!(options.iter().any(|o| o == wanted), "{wanted} missing from {options:?}");
        }
        assert_eq!(
            (debian_arch(GuestArch::Aarch64), guest_target(GuestArch::Aarch64)),
            ("arm64", "aarch64-unknown-linux-gnu")
        );
        assert_eq!(cross_linker(GuestArch::Aarch64).1, "aarch64-linux-gnu-gcc");
    }

    #[test]
    fn the_workload_follows_the_double_dash() {
        let clock = clock_options(GuestArch::X86_64, mica_launch::Accel::Tcg, true);
        assert_eq!(
            cmdline(GuestArch::X86_64, &clock, &["sieve", "100"]),
            "console=ttyS0 quiet panic=-1 reboot=t no_timer_check tsc_early_khz=1000000 -- sieve 100"
        );
        assert_eq!(cmdline(GuestArch::Aarch64, &[], &["boot"]), "console=ttyAMA0 quiet panic=-1 reboot=t -- boot");
    }

    #[test]
    fn x86_guests_get_the_clock_of_their_accelerator() {
        use mica_launch::Accel;
        let kvm = clock_options(GuestArch::X86_64, Accel::Kvm, false);
        assert_eq!(kvm, ["no_timer_check"]);
        let tcg = clock_options(GuestArch::X86_64, Accel::Tcg, false);
        assert_eq!(tcg[0], "no_timer_check");
        // Plain TCG: the host's TSC, when /proc/cpuinfo says it.
        match mica_launch::linux_guest::host_tsc_khz() {
            Some(khz) => assert_eq!(tcg[1], format!("tsc_early_khz={khz}")),
            None => assert_eq!(tcg.len(), 1),
        }
        assert!(clock_options(GuestArch::Aarch64, Accel::Tcg, true).is_empty());
    }
}
