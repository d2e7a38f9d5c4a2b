//! Host-side launcher for Mica under QEMU.
//!
//! Everything a host tool needs to boot a Mica kernel (or any PVH kernel) and read its verdict:
//!
//! - [`accel`]: is `/dev/kvm` usable, and is it hardware-backed or a software KVM? Which
//!   accelerator to use, and why ([`resolve`]).
//! - [`arch`]: the guest architecture ([`GuestArch`]): x86_64 or aarch64.
//! - [`qemu`]: where QEMU is and the exact command line for a `microvm` (x86_64) or `virt`
//!   (aarch64) boot ([`QemuCommand`]).
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
pub mod arch;
pub mod cmdline;
pub mod devices;
mod error;
pub mod linux_guest;
pub mod qemu;
pub mod run;

pub use accel::{Accel, AccelChoice, AccelDecision, DevKvm, KvmBacking, KvmProbe, resolve, resolve_for};
pub use arch::GuestArch;
pub use cmdline::{KernelCmdline, LOG_LEVELS, check_log_level};
pub use error::LaunchError;
pub use mica_exit::ExitCode;
pub use qemu::{QemuCommand, cpu_model, find_qemu, find_qemu_for};
pub use run::{Ended, Outcome, OutputMode, RunOptions};
