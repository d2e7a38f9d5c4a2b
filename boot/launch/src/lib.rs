//! Host-side launcher for Mica under QEMU.
//!
//! Everything a host tool needs to boot a Mica kernel (or any PVH kernel) and read its verdict:
//!
//! - [`accel`]: is `/dev/kvm` usable, and is it hardware-backed or a software KVM? Which
//!   accelerator to use, and why ([`resolve`]).
//! - [`qemu`]: where `qemu-system-x86_64` is and the exact command line for a `microvm` boot
//!   ([`QemuCommand`]).
//! - [`cmdline`]: host-side checks of the kernel command line (`log=` levels).
//! - [`devices`]: the machine devices a boot bundle asks for (`[[device]]`), as QEMU arguments,
//!   and their disk images.
//! - [`run`]: running QEMU with a host-enforced timeout, inheriting or capturing its output, and
//!   decoding the `isa-debug-exit` status into a [`mica_exit::ExitCode`] ([`Outcome`]).
//!
//! Detection reads the host only through [`KvmProbe::detect_at`], so every decision here is plain
//! logic that host unit tests drive with made-up states.
#![forbid(unsafe_code)]

pub mod accel;
pub mod cmdline;
pub mod devices;
mod error;
pub mod linux_guest;
pub mod qemu;
pub mod run;

pub use accel::{Accel, AccelChoice, AccelDecision, DevKvm, KvmBacking, KvmProbe, resolve};
pub use cmdline::{KernelCmdline, LOG_LEVELS, check_log_level};
pub use error::LaunchError;
pub use mica_exit::ExitCode;
pub use qemu::{QemuCommand, cpu_model, find_qemu};
pub use run::{Ended, Outcome, OutputMode, RunOptions};
