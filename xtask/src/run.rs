//! `cargo xtask run`: boot the kernel under QEMU with the serial console on this terminal.
//!
//! The first line printed names the accelerator and why it was chosen. Arguments are checked
//! before anything is built, so a typo in `--log` costs nothing. The kernel's verdict becomes
//! the exit status: success 0, failed 1, and distinct statuses when no verdict came.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use mica_launch::{Accel, AccelChoice, Ended, GuestArch, KernelCmdline, KvmProbe, OutputMode, QemuCommand, RunOptions};

use crate::{kernel, process, setup};

/// Exit status when the host timeout stopped QEMU (as `timeout(1)` does).
pub const EXIT_TIMED_OUT: u8 = 124;
/// Exit status when QEMU ended without a kernel verdict.
pub const EXIT_NO_VERDICT: u8 = 125;

/// Default host timeout under TCG and hardware KVM, in seconds.
pub const TIMEOUT_SECS: u64 = 60;
/// Default host timeout under a software KVM, in seconds (guests run hundreds of times slower).
pub const SOFTWARE_KVM_TIMEOUT_SECS: u64 = 300;

/// The accelerator, as the command line names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM when hardware-backed, TCG otherwise.
    #[default]
    Auto,
    /// KVM (an error when /dev/kvm cannot be used).
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl From<AccelArg> for AccelChoice {
    fn from(arg: AccelArg) -> AccelChoice {
        match arg {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Tcg => AccelChoice::Tcg,
        }
    }
}

/// Arguments of `cargo xtask run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The guest architecture: x86_64 (QEMU's microvm) or aarch64 (QEMU's virt) [default: this
    /// host's].
    #[arg(long, value_name = "ARCH", default_value_t = default_arch())]
    pub arch: GuestArch,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
    /// Boot the release build.
    #[arg(long)]
    pub release: bool,
    /// Kernel log level (off, error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log: Option<String>,
    /// Boot with Mica's own VMM (`mica-vmm`, rust-vmm on KVM) instead of QEMU.
    #[arg(long, conflicts_with = "accel")]
    pub vmm: bool,
    /// The system manifest to boot [default: components/default.toml].
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<std::path::PathBuf>,
    /// The CPU QEMU presents: `baseline`, `host`, or a feature list. The system compiles its
    /// components for it at boot (with `--aot`, the build host compiles them for it instead).
    #[arg(long, value_name = "PROFILE", default_value = "baseline")]
    pub cpu: String,
    /// Compile every component ahead of time on this host, for `--cpu`, instead of shipping wasm
    /// for the system to compile at boot (late binding, the default).
    #[arg(long)]
    pub aot: bool,
    /// vCPUs (QEMU's `-smp`, or as many vCPUs on `mica-vmm`, described to the kernel by its MP table).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub smp: u32,
    /// Host timeout in seconds [default: 60; 300 under a software KVM].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Words appended to the kernel command line.
    #[arg(last = true, value_name = "KEY=VALUE")]
    pub kernel_args: Vec<String>,
}

/// The host's architecture when Mica builds for it, else x86_64.
pub fn default_arch() -> GuestArch {
    GuestArch::host().unwrap_or_default()
}

fn parse_log_level(value: &str) -> Result<String, String> {
    mica_launch::check_log_level(value).map_err(|e| e.to_string())?;
    Ok(value.to_owned())
}

/// The kernel command line from `--log` and the words after `--`, checked.
pub fn kernel_cmdline(log: Option<&str>, words: &[String]) -> Result<KernelCmdline> {
    let mut line = KernelCmdline::new();
    if let Some(level) = log {
        line.set("log", level)?;
    }
    for word in words {
        if log.is_some() && word.starts_with("log=") {
            bail!("the log level is given twice (--log and `{word}`): give it once");
        }
        line.push(word)?;
    }
    Ok(line)
}

/// Runs `cargo xtask run`.
pub fn run(root: &Path, args: &RunArgs) -> Result<ExitCode> {
    let cmdline = kernel_cmdline(args.log.as_deref(), &args.kernel_args)?;
    if args.vmm {
        if GuestArch::host() != Some(args.arch) {
            bail!("--vmm runs guests of this host's architecture only, not {}", args.arch);
        }
        return run_vmm(root, args, &cmdline);
    }
    let probe = KvmProbe::detect();
    let decision = mica_launch::resolve_for(args.accel.into(), &probe, args.arch)?;
    println!("mica: {decision}");
    // The accelerator line must come first, before the build's progress on stderr.
    std::io::stdout().flush()?;

    let toolchain = setup::ensure(root)?;
    let (kernel, (bundle, profile)) = process::both(
        || kernel::build(root, &toolchain, args.arch, args.release),
        || system_bundle(root, &toolchain, args),
    )?;
    let qemu = mica_launch::find_qemu_for(args.arch)?;
    let timeout = Duration::from_secs(args.timeout.unwrap_or(match decision.accel {
        Accel::Kvm if !probe.hardware() => SOFTWARE_KVM_TIMEOUT_SECS,
        Accel::Kvm | Accel::Tcg => TIMEOUT_SECS,
    }));
    let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
    let mut command = QemuCommand::new(qemu, &kernel, decision.accel)
        .arch(args.arch)
        .cmdline(cmdline.as_string())
        .memory_mib(SYSTEM_MEMORY_MIB);
    if args.arch == GuestArch::X86_64 {
        command = command.cpu(mica_launch::cpu_model(&features));
    }
    if let Some(bundle) = &bundle {
        // The machine's devices (the manifest's [[device]] entries), with their disk images.
        let machine = mica_launch::devices::of_bundle(bundle)?;
        mica_launch::devices::prepare_disks(&machine)?;
        command = command
            .initrd(bundle)
            .memory_mib(mica_launch::devices::memory_mib(bundle, SYSTEM_MEMORY_MIB)?)
            .extra_args(mica_launch::devices::qemu_args(&machine));
    }
    if args.smp > 1 {
        command = command.extra_args(["-smp".to_string(), args.smp.to_string()]);
    }
    eprintln!("xtask: {}", command.display());
    let options = RunOptions { timeout, output: OutputMode::Inherit };
    let outcome = mica_launch::run::run(&command, &options)?;

    Ok(match (outcome.verdict, outcome.ended) {
        (Some(mica_launch::ExitCode::Success), _) => {
            eprintln!("mica: {}", outcome.describe());
            ExitCode::SUCCESS
        }
        (Some(mica_launch::ExitCode::Failed), _) => {
            eprintln!("error: the kernel reported failure ({})", outcome.describe());
            ExitCode::FAILURE
        }
        (None, Ended::TimedOut) => {
            eprintln!("error: {}", outcome.describe());
            ExitCode::from(EXIT_TIMED_OUT)
        }
        (None, _) => {
            eprintln!("error: {}", outcome.describe());
            ExitCode::from(EXIT_NO_VERDICT)
        }
    })
}

/// The engine's name for the kernel target of `arch`.
pub fn kernel_target(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => mica_runtime::config::X86_64_TARGET,
        GuestArch::Aarch64 => mica_runtime::config::AARCH64_TARGET,
    }
}

/// Guest memory for a system boot, in MiB.
pub const SYSTEM_MEMORY_MIB: u32 = 256;

/// The boot bundle for the run (none for a boot-test scenario) and the CPU profile.
fn system_bundle(
    root: &Path,
    toolchain: &crate::toolchain::Toolchain,
    args: &RunArgs,
) -> Result<(Option<std::path::PathBuf>, mica_runtime::config::CpuProfile)> {
    let target = kernel_target(args.arch);
    let profile = crate::aot::profile_for(target, &args.cpu)?;
    if args.kernel_args.iter().any(|w| w.starts_with("test=")) && args.manifest.is_none() {
        return Ok((None, profile));
    }
    let manifest = args.manifest.clone().unwrap_or_else(|| root.join(crate::system::DEFAULT_MANIFEST));
    let bundle = if !args.aot {
        let stem = manifest.file_stem().and_then(|s| s.to_str()).unwrap_or("system");
        let name = if stem.ends_with("-late") { stem.to_owned() } else { format!("{stem}-late") };
        crate::system::prepare_for(root, toolchain, &manifest, &crate::system::Binding::Late, Some(&name), target)?
    } else {
        let binding = crate::system::Binding::Aot(profile.clone());
        crate::system::prepare_for(root, toolchain, &manifest, &binding, None, target)?
    };
    Ok((Some(bundle), profile))
}

/// `cargo xtask run --vmm`: the same boot on `mica-vmm` (KVM only).
fn run_vmm(root: &Path, args: &RunArgs, cmdline: &KernelCmdline) -> Result<ExitCode> {
    let probe = KvmProbe::detect();
    if let Err(e) = mica_vmm::kvm_usable() {
        bail!("--vmm needs KVM: {e}");
    }
    println!(
        "mica: vmm mica-vmm on {} KVM{}",
        if probe.hardware() { "hardware" } else { "software" },
        mica_vmm::kvm_backend().map(|b| format!(" ({b})")).unwrap_or_default()
    );
    std::io::stdout().flush()?;
    let toolchain = setup::ensure(root)?;
    let (kernel, (bundle, _)) = process::both(
        || kernel::build(root, &toolchain, args.arch, args.release),
        || system_bundle(root, &toolchain, args),
    )?;
    let timeout = Duration::from_secs(args.timeout.unwrap_or(if probe.hardware() {
        TIMEOUT_SECS
    } else {
        SOFTWARE_KVM_TIMEOUT_SECS
    }));
    let memory = match &bundle {
        Some(bundle) => mica_launch::devices::memory_mib(bundle, SYSTEM_MEMORY_MIB)?,
        None => SYSTEM_MEMORY_MIB,
    };
    let mut config = mica_vmm::VmConfig::new(&kernel)
        .cmdline(cmdline.as_string())
        .memory_mib(u64::from(memory))
        .vcpus(u8::try_from(args.smp).unwrap_or(u8::MAX))
        .serial(mica_vmm::SerialOutput::Tee(Box::new(std::io::stdout())));
    if let Some(bundle) = bundle {
        config = config.initrd(bundle);
    }
    let outcome = mica_vmm::Vm::new(config)?.run(Some(timeout))?;
    Ok(match outcome.exit() {
        Some(mica_launch::ExitCode::Success) => {
            eprintln!("mica: kernel verdict success ({:.3} s)", outcome.duration.as_secs_f64());
            ExitCode::SUCCESS
        }
        Some(mica_launch::ExitCode::Failed) => {
            eprintln!("error: the kernel reported failure ({})", outcome.ending);
            ExitCode::FAILURE
        }
        None => {
            eprintln!("error: {}", outcome.ending);
            ExitCode::from(EXIT_NO_VERDICT)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_from_flags_and_words() {
        let words = ["test=heap".to_owned(), "tick_hz=250".to_owned()];
        let line = kernel_cmdline(Some("debug"), &words).expect("valid");
        assert_eq!(line.as_string(), "log=debug test=heap tick_hz=250");
        assert_eq!(kernel_cmdline(None, &[]).expect("valid").as_string(), "");
    }

    #[test]
    fn bad_log_levels_are_refused_before_booting() {
        let err = kernel_cmdline(None, &["log=loud".to_owned()]).expect_err("bad level");
        assert!(err.to_string().contains("off, error, warn, info, debug, trace"), "{err}");
        assert!(parse_log_level("loud").is_err());
        let err = kernel_cmdline(Some("info"), &["log=debug".to_owned()]).expect_err("twice");
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(kernel_cmdline(None, &["two words".to_owned()]).is_err());
    }
}
