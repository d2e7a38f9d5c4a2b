//! `mica-vmm`: a micro-VMM on rust-vmm that boots a PVH ELF kernel (the Mica kernel, or any
//! kernel with a `XEN_ELFNOTE_PHYS32_ENTRY` note) or a Linux bzImage (through the 32-bit boot
//! protocol, see [`linux`]) directly on KVM, without QEMU.
//!
//! One to [`vm::MAX_VCPUS`] vCPUs (one thread each, described to the guest by an MP table,
//! [`mptable`]), guest RAM from address 0 ([`layout`] documents where the boot structures go),
//! KVM's in-kernel irqchip and PIT, COM1 as a vm-superio 16550, and QEMU's `isa-debug-exit`
//! protocol on port `0xf4` for the guest's verdict (decoded with `mica-exit`). Optionally a raw
//! disk image as a virtio-blk device and a virtio-console for the pod agent, on virtio-mmio
//! ([`virtio`], [`VmConfig::disk`], [`VmConfig::agent_socket`]); the console's host input is
//! moved by an I/O thread.
//!
//! ```no_run
//! use std::time::Duration;
//! use mica_vmm::{Vm, VmConfig};
//!
//! let config = VmConfig::new("target/x86_64-unknown-none/debug/mica-kernel").cmdline("test=timer");
//! let outcome = Vm::new(config)?.run(Some(Duration::from_secs(30)))?;
//! println!("{}", outcome.serial_text());
//! match outcome.verdict() {
//!     Ok(code) => println!("verdict: {}", code.name()),
//!     Err(ending) => println!("no verdict: {ending}"),
//! }
//! # Ok::<(), mica_vmm::Error>(())
//! ```

pub mod boot;
pub mod cli;
pub mod cpuid;
pub mod devices;
pub mod error;
pub mod layout;
pub mod linux;
pub mod mptable;
pub mod outcome;
pub mod regs;
mod run;
pub mod virtio;
pub mod vm;

#[cfg(test)]
#[path = "../tests/support/pvh_elf.rs"]
mod pvh_elf;

pub use devices::SerialOutput;
pub use error::{Error, Result};
pub use mica_exit::ExitCode;
pub use outcome::{Ending, Outcome};
pub use run::KICK_PERIOD;
pub use vm::{DiskConfig, Vm, VmConfig};

/// Whether `/dev/kvm` can be opened here, and why not if it cannot.
pub fn kvm_usable() -> std::result::Result<(), Error> {
    kvm_ioctls::Kvm::new().map(drop).map_err(|e| Error::kvm_open(&e))
}

/// The kernel module behind `/dev/kvm`: `kvm_intel` or `kvm_amd` for hardware virtualization,
/// `kvm_pvm` for the software (page-table based) KVM found in some cloud VMs, where guests run
/// hundreds of times slower and some instructions cannot be emulated. `None` if none is loaded.
pub fn kvm_backend() -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"].into_iter().find(|m| std::path::Path::new("/sys/module").join(m).exists())
}
