//! Accelerator choice: KVM or TCG, and the reason for it.
//!
//! `/dev/kvm` being openable is not enough to prefer KVM: on cloud VMs without nested
//! virtualization the module behind it can be `kvm_pvm`, a software KVM under which guests run
//! hundreds of times slower than QEMU's own TCG. So detection reports two facts, whether the
//! device is usable and what backs it, and [`resolve`] picks KVM automatically only when both say
//! yes. Detection reads the host through [`KvmProbe::detect_at`] only; tests build a
//! [`KvmProbe`] by hand.

use std::fmt;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;
use std::str::FromStr;

use crate::LaunchError;

/// The KVM device node.
pub const DEV_KVM: &str = "/dev/kvm";
/// Where Linux lists loaded modules.
pub const SYS_MODULE: &str = "/sys/module";

/// Kernel modules that back KVM with hardware virtualization.
const HARDWARE_MODULES: [&str; 2] = ["kvm_intel", "kvm_amd"];
/// Kernel modules that provide KVM without hardware virtualization.
const SOFTWARE_MODULES: [&str; 1] = ["kvm_pvm"];

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccelChoice {
    /// KVM when it is usable and hardware-backed, TCG otherwise.
    #[default]
    Auto,
    /// KVM, or an error saying why it cannot be used.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl AccelChoice {
    /// Every choice's name, for help texts.
    pub const NAMES: [&'static str; 3] = ["auto", "kvm", "tcg"];
}

impl FromStr for AccelChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(format!("unknown accelerator `{s}`: expected one of {}", Self::NAMES.join(", "))),
        }
    }
}

/// The accelerator QEMU runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Linux KVM (`-accel kvm`).
    Kvm,
    /// QEMU's Tiny Code Generator (`-accel tcg`).
    Tcg,
}

impl Accel {
    /// The value of QEMU's `-accel` option, also used as a short name.
    pub const fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `/dev/kvm` can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevKvm {
    /// It opens read-write.
    Usable,
    /// It does not exist.
    Missing,
    /// It exists but does not open read-write; the operating system's reason.
    Unusable(String),
}

/// What provides KVM on this host, from the loaded kernel modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmBacking {
    /// Hardware virtualization (VT-x or AMD-V); the module name.
    Hardware(&'static str),
    /// A software KVM without hardware virtualization; the module name.
    Software(&'static str),
    /// None of the known modules is loaded.
    Unknown,
}

/// The two facts accelerator choice depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmProbe {
    /// Whether `/dev/kvm` opens read-write.
    pub dev: DevKvm,
    /// What backs KVM.
    pub backing: KvmBacking,
}

impl KvmProbe {
    /// Probes this host (`/dev/kvm`, `/sys/module`).
    pub fn detect() -> KvmProbe {
        KvmProbe::detect_at(Path::new(DEV_KVM), Path::new(SYS_MODULE))
    }

    /// Probes a device node and a module directory given by path (for tests, or a chroot).
    pub fn detect_at(dev_kvm: &Path, sys_module: &Path) -> KvmProbe {
        let dev = match OpenOptions::new().read(true).write(true).open(dev_kvm) {
            Ok(_) => DevKvm::Usable,
            Err(e) if e.kind() == ErrorKind::NotFound => DevKvm::Missing,
            Err(e) => DevKvm::Unusable(e.to_string()),
        };
        let loaded = |module: &&&str| sys_module.join(module).exists();
        let backing = if let Some(m) = HARDWARE_MODULES.iter().find(loaded) {
            KvmBacking::Hardware(m)
        } else if let Some(m) = SOFTWARE_MODULES.iter().find(loaded) {
            KvmBacking::Software(m)
        } else {
            KvmBacking::Unknown
        };
        KvmProbe { dev, backing }
    }

    /// Whether QEMU can use KVM at all.
    pub fn usable(&self) -> bool {
        self.dev == DevKvm::Usable
    }

    /// Whether KVM is usable and backed by hardware virtualization.
    pub fn hardware(&self) -> bool {
        self.usable() && matches!(self.backing, KvmBacking::Hardware(_))
    }

    /// Why KVM cannot be used, or `None` when it can.
    pub fn unusable_reason(&self) -> Option<String> {
        match &self.dev {
            DevKvm::Usable => None,
            DevKvm::Missing => {
                Some(format!("{DEV_KVM} does not exist (no KVM module loaded, or no hardware virtualization)"))
            }
            DevKvm::Unusable(why) => Some(format!("{DEV_KVM} cannot be opened read-write: {why}")),
        }
    }

    /// A label for reports: `hardware KVM (kvm_intel)`, `software KVM (kvm_pvm)`, ...
    pub fn label(&self) -> String {
        match self.backing {
            KvmBacking::Hardware(m) => format!("hardware KVM ({m})"),
            KvmBacking::Software(m) => format!("software KVM ({m})"),
            KvmBacking::Unknown => "KVM of unknown backing".to_owned(),
        }
    }

    /// Why KVM is not chosen automatically although it is usable, or `None` when it is.
    fn auto_refusal(&self) -> Option<String> {
        match self.backing {
            KvmBacking::Hardware(_) => None,
            KvmBacking::Software(m) => {
                Some(format!("KVM is {m}, a software KVM: guests run hundreds of times slower than TCG"))
            }
            KvmBacking::Unknown => Some(format!(
                "KVM's backing is unknown (none of {} is in {SYS_MODULE}): it may be a slow \
                 software KVM",
                [HARDWARE_MODULES.as_slice(), SOFTWARE_MODULES.as_slice()].concat().join(", ")
            )),
        }
    }
}

/// The accelerator to use and a human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelDecision {
    /// The accelerator.
    pub accel: Accel,
    /// Why this one, as a phrase (`KVM is kvm_pvm, a software KVM: ...`).
    pub reason: String,
}

impl fmt::Display for AccelDecision {
    /// `accel tcg (reason)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "accel {} ({})", self.accel, self.reason)
    }
}

/// Resolves what was asked for against what the host offers.
///
/// `Auto` picks KVM only when it is usable and hardware-backed; an explicit `Kvm` on a host
/// where `/dev/kvm` cannot be used is an error naming the device and why.
pub fn resolve(choice: AccelChoice, probe: &KvmProbe) -> Result<AccelDecision, LaunchError> {
    let decision = |accel, reason: String| Ok(AccelDecision { accel, reason });
    match choice {
        AccelChoice::Tcg => decision(Accel::Tcg, "TCG was asked for".to_owned()),
        AccelChoice::Kvm => match probe.unusable_reason() {
            Some(reason) => Err(LaunchError::KvmUnusable { reason }),
            None => match probe.auto_refusal() {
                None => decision(Accel::Kvm, format!("KVM was asked for: {}", probe.label())),
                Some(warning) => decision(Accel::Kvm, format!("KVM was asked for; note: {warning}")),
            },
        },
        AccelChoice::Auto => match (probe.unusable_reason(), probe.auto_refusal()) {
            (Some(reason), _) => decision(Accel::Tcg, reason),
            (None, Some(refusal)) => decision(Accel::Tcg, refusal),
            (None, None) => decision(Accel::Kvm, format!("{} is usable", probe.label())),
        },
    }
}

/// Resolves the accelerator for an `arch` guest: as [`resolve`] for the host's own architecture;
/// for another one KVM cannot run it, so `Auto` is TCG and an explicit `Kvm` an error.
pub fn resolve_for(
    choice: AccelChoice,
    probe: &KvmProbe,
    arch: crate::GuestArch,
) -> Result<AccelDecision, LaunchError> {
    let host = std::env::consts::ARCH;
    if crate::GuestArch::host() == Some(arch) {
        return resolve(choice, probe);
    }
    match choice {
        AccelChoice::Kvm => Err(LaunchError::KvmForeignGuest { host, guest: arch }),
        AccelChoice::Tcg => resolve(choice, probe),
        AccelChoice::Auto => {
            Ok(AccelDecision { accel: Accel::Tcg, reason: format!("an {arch} guest on an {host} host") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_guest_runs_under_tcg() {
        let host = crate::GuestArch::host().expect("the tests run on x86_64 or aarch64");
        let other = if host == crate::GuestArch::X86_64 { crate::GuestArch::Aarch64 } else { crate::GuestArch::X86_64 };
        let p = probe(DevKvm::Usable, KvmBacking::Hardware("kvm_intel"));
        let d = resolve_for(AccelChoice::Auto, &p, other).expect("auto never fails");
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains(other.name()), "{}", d.reason);
        let err = resolve_for(AccelChoice::Kvm, &p, other).expect_err("KVM cannot run it");
        assert!(err.to_string().contains(other.name()), "{err}");
        assert_eq!(resolve_for(AccelChoice::Auto, &p, host).expect("auto").accel, Accel::Kvm);
    }

    fn probe(dev: DevKvm, backing: KvmBacking) -> KvmProbe {
        KvmProbe { dev, backing }
    }

    #[test]
    fn auto_takes_hardware_kvm() {
        for module in HARDWARE_MODULES {
            let p = probe(DevKvm::Usable, KvmBacking::Hardware(module));
            let d = resolve(AccelChoice::Auto, &p).expect("auto never fails");
            assert_eq!(d.accel, Accel::Kvm);
            assert!(d.reason.contains(module), "{}", d.reason);
        }
    }

    #[test]
    fn auto_refuses_software_kvm_and_says_why() {
        let p = probe(DevKvm::Usable, KvmBacking::Software("kvm_pvm"));
        let d = resolve(AccelChoice::Auto, &p).expect("auto never fails");
        assert_eq!(d.accel, Accel::Tcg);
        assert_eq!(
            d.to_string(),
            "accel tcg (KVM is kvm_pvm, a software KVM: guests run hundreds of times slower than TCG)"
        );
    }

    #[test]
    fn auto_refuses_unknown_backing() {
        let p = probe(DevKvm::Usable, KvmBacking::Unknown);
        let d = resolve(AccelChoice::Auto, &p).expect("auto never fails");
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("unknown"), "{}", d.reason);
    }

    #[test]
    fn auto_falls_back_when_dev_kvm_is_unusable() {
        let p = probe(DevKvm::Missing, KvmBacking::Hardware("kvm_intel"));
        let d = resolve(AccelChoice::Auto, &p).expect("auto never fails");
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("/dev/kvm does not exist"), "{}", d.reason);

        let p = probe(DevKvm::Unusable("Permission denied".into()), KvmBacking::Hardware("kvm_amd"));
        let d = resolve(AccelChoice::Auto, &p).expect("auto never fails");
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("Permission denied"), "{}", d.reason);
    }

    #[test]
    fn explicit_kvm_errors_when_unusable() {
        let p = probe(DevKvm::Unusable("Permission denied".into()), KvmBacking::Software("kvm_pvm"));
        let err = resolve(AccelChoice::Kvm, &p).expect_err("unusable KVM");
        let msg = err.to_string();
        assert!(msg.contains("/dev/kvm cannot be opened read-write: Permission denied"), "{msg}");
        let err = resolve(AccelChoice::Kvm, &probe(DevKvm::Missing, KvmBacking::Unknown)).expect_err("missing KVM");
        assert!(err.to_string().contains("/dev/kvm does not exist"), "{err}");
    }

    #[test]
    fn explicit_kvm_is_honoured_with_a_warning_for_software_kvm() {
        let p = probe(DevKvm::Usable, KvmBacking::Software("kvm_pvm"));
        let d = resolve(AccelChoice::Kvm, &p).expect("usable");
        assert_eq!(d.accel, Accel::Kvm);
        assert!(d.reason.contains("software KVM"), "{}", d.reason);
        let d = resolve(AccelChoice::Kvm, &probe(DevKvm::Usable, KvmBacking::Hardware("kvm_amd"))).expect("usable");
        assert_eq!(d.reason, "KVM was asked for: hardware KVM (kvm_amd)");
    }

    #[test]
    fn explicit_tcg_never_looks_at_kvm() {
        let d = resolve(AccelChoice::Tcg, &probe(DevKvm::Missing, KvmBacking::Unknown)).expect("tcg never fails");
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn detection_reads_the_given_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let modules = dir.path().join("module");
        std::fs::create_dir_all(modules.join("kvm")).expect("mkdir");
        let dev = dir.path().join("kvm");

        let p = KvmProbe::detect_at(&dev, &modules);
        assert_eq!(p, probe(DevKvm::Missing, KvmBacking::Unknown));

        std::fs::write(&dev, b"").expect("create fake device");
        std::fs::create_dir(modules.join("kvm_pvm")).expect("mkdir");
        let p = KvmProbe::detect_at(&dev, &modules);
        assert_eq!(p, probe(DevKvm::Usable, KvmBacking::Software("kvm_pvm")));
        assert_eq!(p.label(), "software KVM (kvm_pvm)");

        std::fs::create_dir(modules.join("kvm_amd")).expect("mkdir");
        let p = KvmProbe::detect_at(&dev, &modules);
        assert_eq!(p.backing, KvmBacking::Hardware("kvm_amd"));
        assert!(p.hardware());

        // A directory stands in for a node that exists but does not open read-write.
        let p = KvmProbe::detect_at(dir.path(), &modules);
        assert!(matches!(p.dev, DevKvm::Unusable(_)), "{p:?}");
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(AccelChoice::Auto));
        assert_eq!("kvm".parse(), Ok(AccelChoice::Kvm));
        assert_eq!("tcg".parse(), Ok(AccelChoice::Tcg));
        assert!("hvf".parse::<AccelChoice>().is_err());
    }
}
