//! Finding QEMU and building its command line for a Mica boot.
//!
//! One machine shape per architecture, with nothing QEMU would add by default (`-nodefaults
//! -no-user-config`), the serial port on QEMU's stdio, and `-no-reboot` (a triple fault or a
//! reset ends the run instead of looping):
//! - x86_64: QEMU's `microvm` (qboot firmware, PVH `-kernel` loading, an ISA serial port) and the
//!   `isa-debug-exit` device through which the kernel reports its verdict;
//! - aarch64: QEMU's `virt` (Linux arm64 `Image` loading with a device tree, a PL011), and
//!   semihosting, through which the kernel reports its verdict with the same exit statuses.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use mica_exit::{ISA_DEBUG_EXIT_PORT, ISA_DEBUG_EXIT_SIZE};

use crate::{Accel, GuestArch, LaunchError};

/// The QEMU binary for x86_64 guests.
pub const QEMU_X86_64: &str = "qemu-system-x86_64";
/// Environment variable that names a QEMU binary for x86_64 guests instead of searching `PATH`.
pub const QEMU_ENV: &str = "MICA_QEMU";
/// Guest memory when not set otherwise, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 128;

/// Finds `qemu-system-x86_64`: `$MICA_QEMU` when set, else the first match on `PATH`.
pub fn find_qemu() -> Result<PathBuf, LaunchError> {
    find_qemu_for(GuestArch::X86_64)
}

/// Finds the QEMU binary for `arch` guests: its environment variable when set
/// ([`GuestArch::qemu_env`]), else the first match on `PATH`.
pub fn find_qemu_for(arch: GuestArch) -> Result<PathBuf, LaunchError> {
    let (binary, package, var) = (arch.qemu_binary(), arch.qemu_package(), arch.qemu_env());
    if let Some(path) = env::var_os(var) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(LaunchError::QemuNotFound {
                binary,
                package,
                searched: format!("${var} is {}, which is not an executable", path.display()),
            })
        };
    }
    let path_var = env::var_os("PATH").unwrap_or_default();
    find_in_path(binary, &path_var).ok_or_else(|| LaunchError::QemuNotFound {
        binary,
        package,
        searched: "not on PATH".to_owned(),
    })
}

/// The first executable file called `name` in a `PATH`-style list of directories.
pub fn find_in_path(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    env::split_paths(path_var).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A QEMU invocation that boots one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuCommand {
    arch: GuestArch,
    qemu: PathBuf,
    kernel: PathBuf,
    accel: Accel,
    cmdline: String,
    memory_mib: u32,
    icount: bool,
    cpu: Option<String>,
    initrd: Option<PathBuf>,
    extra: Vec<OsString>,
}

/// QEMU's name for a CPU feature Rust calls `feature` (`sse4.1`, `lzcnt`, ...).
fn qemu_flag(feature: &str) -> &str {
    match feature {
        "lzcnt" => "abm",
        other => other,
    }
}

/// A QEMU CPU model that exposes `features` (Rust names) plus RDRAND: QEMU's default model
/// (`qemu64`, which has only SSE3 beyond SSE2) with each feature added. TCG emulates all of
/// them; under KVM the host CPU must have them. AVX-class features bring XSAVE with them (the
/// kernel needs it to enable AVX state), and XSAVEOPT beside it: QEMU 7.2's TCG with `qemu64,+xsave`
/// alone hangs at the guest's first write of CR4.OSXSAVE (Linux's too).
pub fn cpu_model(features: &[&str]) -> String {
    let mut model = String::from("qemu64");
    let avx = features.iter().any(|f| matches!(*f, "avx" | "avx2" | "fma"));
    let xsave: &[&str] = if avx && !features.contains(&"xsave") { &["xsave", "xsaveopt"] } else { &[] };
    for f in xsave.iter().chain(features).copied().chain(["rdrand"]) {
        model.push_str(",+");
        model.push_str(qemu_flag(f));
    }
    model
}

impl QemuCommand {
    /// Boots `kernel` with the QEMU binary `qemu` under `accel`, 128 MiB, an empty command line.
    pub fn new(qemu: impl Into<PathBuf>, kernel: impl Into<PathBuf>, accel: Accel) -> QemuCommand {
        QemuCommand {
            arch: GuestArch::X86_64,
            qemu: qemu.into(),
            kernel: kernel.into(),
            accel,
            cmdline: String::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            icount: false,
            cpu: None,
            initrd: None,
            extra: Vec::new(),
        }
    }

    /// Boots an `arch` kernel (its machine, boot protocol and exit device). Default: x86_64.
    pub fn arch(mut self, arch: GuestArch) -> QemuCommand {
        self.arch = arch;
        self
    }

    /// The guest architecture.
    pub fn guest_arch(&self) -> GuestArch {
        self.arch
    }

    /// Sets the guest CPU model (`-cpu`); see [`cpu_model`]. Default: QEMU's on x86_64, `max`
    /// (every feature TCG emulates) on aarch64.
    pub fn cpu(mut self, model: impl Into<String>) -> QemuCommand {
        self.cpu = Some(model.into());
        self
    }

    /// Passes a boot module (`-initrd`): Mica's boot bundle.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> QemuCommand {
        self.initrd = Some(path.into());
        self
    }

    /// Sets the kernel command line (`-append`), passed as given.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> QemuCommand {
        self.cmdline = cmdline.into();
        self
    }

    /// Sets guest memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> QemuCommand {
        self.memory_mib = mib;
        self
    }

    /// Counts instructions: `-icount shift=0`, one guest TSC tick per retired instruction (TCG only).
    pub fn icount(mut self, on: bool) -> QemuCommand {
        self.icount = on;
        self
    }

    /// Appends raw QEMU arguments after the generated ones.
    pub fn extra_args<I, S>(mut self, args: I) -> QemuCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// The accelerator this command runs under.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Whether it counts instructions (`-icount shift=0`).
    pub fn counts_instructions(&self) -> bool {
        self.icount
    }

    /// The QEMU binary.
    pub fn program(&self) -> &Path {
        &self.qemu
    }

    /// Guest memory in MiB.
    pub fn memory(&self) -> u32 {
        self.memory_mib
    }

    /// The `-cpu` model, when one is set.
    pub fn cpu_model(&self) -> Option<&str> {
        self.cpu.as_deref()
    }

    /// The arguments, after the program name.
    pub fn args(&self) -> Result<Vec<OsString>, LaunchError> {
        if self.icount && self.accel != Accel::Tcg {
            return Err(LaunchError::IcountNeedsTcg { accel: self.accel });
        }
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |a: &str| args.push(a.into());
        push("-M");
        push(match (self.arch, self.accel) {
            (GuestArch::X86_64, _) => "microvm",
            // GICv3, not `virt`'s default GICv2: the controller of today's arm64 machines (boot
            // tests ask for GICv2 to cover it too). Under KVM, the host's own.
            (GuestArch::Aarch64, Accel::Tcg) => "virt,gic-version=3",
            (GuestArch::Aarch64, Accel::Kvm) => "virt,gic-version=host",
        });
        push("-accel");
        push(self.accel.name());
        if self.icount {
            push("-icount");
            push("shift=0");
        }
        let default_cpu = match (self.arch, self.accel) {
            (GuestArch::X86_64, _) => None,
            (GuestArch::Aarch64, Accel::Tcg) => Some("max"),
            (GuestArch::Aarch64, Accel::Kvm) => Some("host"),
        };
        if let Some(cpu) = self.cpu.as_deref().or(default_cpu) {
            push("-cpu");
            push(cpu);
        }
        push("-m");
        push(&format!("{}M", self.memory_mib));
        push("-nodefaults");
        push("-no-user-config");
        push("-display");
        push("none");
        push("-serial");
        push("stdio");
        match self.arch {
            GuestArch::X86_64 => {
                push("-device");
                push(&format!("isa-debug-exit,iobase={ISA_DEBUG_EXIT_PORT:#x},iosize={ISA_DEBUG_EXIT_SIZE:#04x}"));
            }
            GuestArch::Aarch64 => {
                push("-semihosting-config");
                push("enable=on,target=native");
            }
        }
        push("-no-reboot");
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        if let Some(initrd) = &self.initrd {
            args.push("-initrd".into());
            args.push(initrd.clone().into_os_string());
        }
        args.push("-append".into());
        args.push(self.cmdline.clone().into());
        args.extend(self.extra.iter().cloned());
        Ok(args)
    }

    /// A [`Command`] ready to spawn (stdio not yet configured).
    pub fn command(&self) -> Result<Command, LaunchError> {
        let mut cmd = Command::new(&self.qemu);
        cmd.args(self.args()?);
        Ok(cmd)
    }

    /// The command as one line a person can paste into a shell (for logs and errors).
    pub fn display(&self) -> String {
        let args = self.args().unwrap_or_else(|_| vec!["<invalid: -icount without tcg>".into()]);
        std::iter::once(self.qemu.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes one argument for a POSIX shell when it needs it.
fn shell_quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
    if plain { s.into_owned() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(cmd: &QemuCommand) -> Vec<String> {
        cmd.args().expect("valid command").into_iter().map(|a| a.into_string().expect("utf-8")).collect()
    }

    #[test]
    fn default_command_line() {
        let cmd =
            QemuCommand::new("/usr/bin/qemu-system-x86_64", "/k/mica-kernel", Accel::Tcg).cmdline("log=info test=heap");
        assert_eq!(
            strings(&cmd).join(" "),
            "-M microvm -accel tcg -m 128M -nodefaults -no-user-config -display none \
             -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot \
             -kernel /k/mica-kernel -append log=info test=heap"
        );
    }

    #[test]
    fn aarch64_boots_virt_with_semihosting() {
        let cmd = QemuCommand::new("/usr/bin/qemu-system-aarch64", "/k/Image", Accel::Tcg)
            .arch(GuestArch::Aarch64)
            .cmdline("test=panic");
        assert_eq!(
            strings(&cmd).join(" "),
            "-M virt,gic-version=3 -accel tcg -cpu max -m 128M -nodefaults -no-user-config -display none \
             -serial stdio -semihosting-config enable=on,target=native -no-reboot \
             -kernel /k/Image -append test=panic"
        );
        let cmd = cmd.cpu("cortex-a72");
        assert!(strings(&cmd).windows(2).any(|w| w == ["-cpu", "cortex-a72"]));
    }

    #[test]
    fn cpu_model_and_boot_module() {
        assert_eq!(cpu_model(&["sse4.1", "lzcnt"]), "qemu64,+sse4.1,+abm,+rdrand");
        assert_eq!(cpu_model(&["popcnt", "avx2"]), "qemu64,+xsave,+xsaveopt,+popcnt,+avx2,+rdrand");
        let cmd = QemuCommand::new("qemu", "k", Accel::Tcg).cpu(cpu_model(&["popcnt"])).initrd("/b/bundle");
        let args = strings(&cmd);
        assert!(args.windows(2).any(|w| w == ["-cpu", "qemu64,+popcnt,+rdrand"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["-initrd", "/b/bundle"]), "{args:?}");
    }

    #[test]
    fn kvm_memory_icount_and_extra_args() {
        let cmd = QemuCommand::new("qemu", "k", Accel::Kvm).memory_mib(256).extra_args(["-smp", "2"]);
        let args = strings(&cmd);
        assert_eq!(&args[..4], ["-M", "microvm", "-accel", "kvm"]);
        assert!(args.windows(2).any(|w| w == ["-m", "256M"]), "{args:?}");
        assert_eq!(&args[args.len() - 2..], ["-smp", "2"]);
        assert!(!args.contains(&"-icount".to_owned()));

        let err = cmd.clone().icount(true).args().expect_err("icount needs tcg");
        assert!(matches!(err, LaunchError::IcountNeedsTcg { accel: Accel::Kvm }));

        let tcg = QemuCommand::new("qemu", "k", Accel::Tcg).icount(true);
        assert!(strings(&tcg).windows(2).any(|w| w == ["-icount", "shift=0"]));
    }

    #[test]
    fn the_command_line_is_one_argument_even_when_empty() {
        let args = strings(&QemuCommand::new("qemu", "k", Accel::Tcg));
        assert_eq!(&args[args.len() - 2..], ["-append", ""]);
    }

    #[test]
    fn display_quotes_for_the_shell() {
        let cmd = QemuCommand::new("/q", "/my kernel", Accel::Tcg).cmdline("a=1 it's");
        let shown = cmd.display();
        assert!(shown.starts_with("/q -M microvm "), "{shown}");
        assert!(shown.ends_with(r"-kernel '/my kernel' -append 'a=1 it'\''s'"), "{shown}");
    }

    #[test]
    fn path_search_finds_executables_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        std::fs::write(a.join(QEMU_X86_64), b"").expect("write");
        std::fs::write(b.join(QEMU_X86_64), b"").expect("write");
        let exe = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(b.join(QEMU_X86_64), exe).expect("chmod");
        let path = env::join_paths([&a, &b]).expect("join");
        assert_eq!(find_in_path(QEMU_X86_64, &path), Some(b.join(QEMU_X86_64)));
        assert_eq!(find_in_path(QEMU_X86_64, OsStr::new("")), None);
    }

    #[test]
    fn not_found_names_the_package_and_setup() {
        let err = LaunchError::QemuNotFound {
            binary: QEMU_X86_64,
            package: "qemu-system-x86",
            searched: "not on PATH".into(),
        };
        let msg = err.to_string();
        assert!(msg.contains("qemu-system-x86`"), "{msg}");
        assert!(msg.contains("cargo xtask setup"), "{msg}");
    }
}
