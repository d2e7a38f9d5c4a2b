//! The guest architecture: which QEMU binary, machine and boot protocol a kernel needs.

use std::fmt;
use std::str::FromStr;

/// A guest architecture Mica builds for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GuestArch {
    /// x86_64 on QEMU's `microvm`, PVH boot, verdict through `isa-debug-exit`.
    #[default]
    X86_64,
    /// aarch64 on QEMU's `virt`, Linux arm64 `Image` boot with a device tree, verdict through
    /// semihosting `SYS_EXIT`.
    Aarch64,
}

impl GuestArch {
    /// Every architecture.
    pub const ALL: [GuestArch; 2] = [GuestArch::X86_64, GuestArch::Aarch64];

    /// Its name: `x86_64`, `aarch64`.
    pub const fn name(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::Aarch64 => "aarch64",
        }
    }

    /// The QEMU binary that emulates it.
    pub const fn qemu_binary(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "qemu-system-x86_64",
            GuestArch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The Debian package with that binary.
    pub const fn qemu_package(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "qemu-system-x86",
            GuestArch::Aarch64 => "qemu-system-arm",
        }
    }

    /// The environment variable that names a QEMU binary for it instead of searching `PATH`.
    pub const fn qemu_env(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "MICA_QEMU",
            GuestArch::Aarch64 => "MICA_QEMU_AARCH64",
        }
    }

    /// The Rust target the kernel builds for.
    pub const fn kernel_target(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64-unknown-none",
            GuestArch::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// The serial console a Linux guest on this machine names (`console=`): the 16550 of
    /// `microvm`, the PL011 of `virt`.
    pub const fn linux_console(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "ttyS0",
            GuestArch::Aarch64 => "ttyAMA0",
        }
    }

    /// The architecture of the machine this runs on, if Mica builds for it.
    pub fn host() -> Option<GuestArch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(GuestArch::X86_64),
            "aarch64" => Some(GuestArch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for GuestArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GuestArch {
    type Err = String;

    fn from_str(s: &str) -> Result<GuestArch, String> {
        GuestArch::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            format!("unknown architecture `{s}` (known: {})", GuestArch::ALL.map(GuestArch::name).join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in GuestArch::ALL {
            assert_eq!(arch.name().parse::<GuestArch>(), Ok(arch));
            assert!(arch.kernel_target().starts_with(arch.name()));
            assert!(arch.qemu_binary().ends_with(arch.name()));
        }
        let err = "riscv64".parse::<GuestArch>().expect_err("not an architecture");
        assert!(err.contains("riscv64") && err.contains("aarch64"), "{err}");
    }
}
