//! The launcher's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can stop a launch before or while QEMU runs.
///
/// A kernel that boots and reports failure is not an error here: that is an
/// [`Outcome`](crate::Outcome) whose verdict is [`ExitCode::Failed`](mica_exit::ExitCode::Failed).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// KVM was asked for explicitly, but `/dev/kvm` cannot be used.
    #[error("KVM was asked for, but {reason}; use --accel tcg (or auto) instead")]
    KvmUnusable {
        /// Why: the device is missing or cannot be opened read-write.
        reason: String,
    },
    /// No QEMU binary was found.
    #[error(
        "{binary} not found ({searched}); install the Debian package `{package}` \
         (`apt-get install {package}`) or run `cargo xtask setup`"
    )]
    QemuNotFound {
        /// The binary looked for.
        binary: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// Where it was looked for.
        searched: String,
    },
    /// KVM runs guests of the host's own architecture only.
    #[error("KVM was asked for, but KVM runs only {host} guests here, not {guest}; use --accel tcg (or auto)")]
    KvmForeignGuest {
        /// The host's architecture.
        host: &'static str,
        /// The guest's.
        guest: crate::GuestArch,
    },
    /// `-icount` counts instructions only under TCG.
    #[error("instruction counting (-icount) needs the TCG accelerator, not {accel}")]
    IcountNeedsTcg {
        /// The accelerator that was asked for.
        accel: crate::Accel,
    },
    /// A `log=` value the kernel would refuse.
    #[error("invalid log level `{value}`: expected one of {}", crate::LOG_LEVELS.join(", "))]
    InvalidLogLevel {
        /// The value given.
        value: String,
    },
    /// A kernel command-line word that cannot be passed as one word.
    #[error("invalid kernel command-line word `{word}`: {why}")]
    InvalidCmdlineWord {
        /// The word given.
        word: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// QEMU could not be started.
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        /// The program that failed to start.
        program: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The boot bundle could not be read for its machine devices.
    #[error("boot bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A disk image could not be created or sized.
    #[error("disk image {}: {source}", path.display())]
    Disk {
        /// The image.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Waiting for QEMU, or stopping it, failed.
    #[error("while {doing} QEMU: {source}")]
    Process {
        /// What the launcher was doing.
        doing: &'static str,
        /// The operating system's reason.
        source: io::Error,
    },
}
