//! The `mica-vmm` command line: boots a PVH kernel or a Linux bzImage on KVM with its consoles
//! (COM1, and `hvc0` when there is an agent socket) on stdout, and exits with the guest's verdict:
//! 0 for success, 1 for failed, 2 for anything else (with a message on stderr).
//!
//! It is the `mica-vmm` binary, and `mica vmm` runs the same (the pod manager starts each
//! `mica-vmm` pod's VMM that way, so one binary carries both).

use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use clap::Parser;

use crate::{ExitCode, SerialOutput, Vm, VmConfig};

/// Boots a PVH ELF kernel (such as the Mica kernel) or a Linux bzImage directly on KVM.
#[derive(Debug, Parser)]
#[command(name = "mica-vmm", version, about)]
struct Args {
    /// The kernel: an x86_64 ELF with a PVH entry note, or a Linux bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// The kernel command line.
    #[arg(long, value_name = "STR", default_value = "")]
    cmdline: String,
    /// An initrd: a PVH boot module (Mica's boot bundle) or a Linux initramfs, like QEMU's `-initrd`.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// A raw disk image the guest gets as a virtio-blk device (virtio-mmio at 0xd0000000, GSI 5;
    /// a Linux guest is told so on its command line).
    #[arg(long, value_name = "PATH")]
    disk: Option<PathBuf>,
    /// Give the --disk image to the guest read-only.
    #[arg(long, requires = "disk")]
    disk_read_only: bool,
    /// Give the guest a virtio-console whose port `mica.agent` is a Unix socket listening here
    /// (the pod agent's channel; virtio-mmio in the slot after the disk).
    #[arg(long, value_name = "PATH")]
    agent_socket: Option<PathBuf>,
    /// Write this process's pid here once the VM is built (removed when it ends).
    #[arg(long, value_name = "PATH")]
    pidfile: Option<PathBuf>,
    /// Virtual CPUs (an MP table tells the guest about them).
    #[arg(long, value_name = "N", default_value_t = 1)]
    vcpus: u8,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "N", default_value_t = 128)]
    memory_mib: u64,
    /// Stop the guest after this many seconds of wall time (default: no limit).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Log more on stderr (-v: info, -vv: debug, including unclaimed port accesses).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// A minimal stderr logger.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("mica-vmm: {}: {}", record.level().as_str().to_lowercase(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

/// A pid file, removed when dropped.
struct Pidfile(PathBuf);

impl Pidfile {
    /// Writes this process's pid to `path` atomically (a temporary file renamed into place).
    fn write(path: PathBuf) -> Result<Pidfile, String> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))?;
        Ok(Pidfile(path))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const STATUS_OTHER: u8 = 2;

/// Runs the `mica-vmm` command with `args` (the first is the program name): parses them, boots the
/// VM and returns the exit status (usage errors print clap's message and exit with 2, as
/// clap does).
pub fn main<I, T>(args: I) -> ProcessExit
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(args);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match args.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    });
    let timeout = match args.timeout.map(Duration::try_from_secs_f64).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mica-vmm: bad --timeout: {e}");
            return ProcessExit::from(STATUS_OTHER);
        }
    };
    let mut config = VmConfig::new(&args.kernel)
        .cmdline(args.cmdline)
        .memory_mib(args.memory_mib)
        .vcpus(args.vcpus)
        .serial(SerialOutput::Stream(Box::new(std::io::stdout())));
    if let Some(initrd) = args.initrd {
        config = config.initrd(initrd);
    }
    if let Some(disk) = args.disk {
        config = config.disk(disk, args.disk_read_only);
    }
    if let Some(socket) = args.agent_socket {
        config = config.agent_socket(socket);
    }
    let vm = match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("mica-vmm: {e}");
            return ProcessExit::from(STATUS_OTHER);
        }
    };
    let _pidfile = match args.pidfile.map(Pidfile::write).transpose() {
        Ok(pidfile) => pidfile,
        Err(e) => {
            eprintln!("mica-vmm: {e}");
            return ProcessExit::from(STATUS_OTHER);
        }
    };
    log::info!("VM ready in {:?} (backend: {})", vm.setup_duration(), crate::kvm_backend().unwrap_or("unknown"));
    let outcome = match vm.run(timeout) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("mica-vmm: {e}");
            return ProcessExit::from(STATUS_OTHER);
        }
    };
    log::info!("guest ran {:?}: {}", outcome.duration, outcome.ending);
    match outcome.exit() {
        Some(ExitCode::Success) => ProcessExit::SUCCESS,
        Some(ExitCode::Failed) => {
            eprintln!("mica-vmm: the guest reported failure ({})", outcome.ending);
            ProcessExit::FAILURE
        }
        None => {
            eprintln!("mica-vmm: {}", outcome.ending);
            ProcessExit::from(STATUS_OTHER)
        }
    }
}
