//! Which hypervisor runs a pod, and what the backends share: the files in a pod directory, the
//! guest command line and the secrets disk.
//!
//! - `qemu`: `qemu-system-x86_64 -M microvm`, with KVM when it is hardware-backed, else TCG (a
//!   software KVM such as `kvm_pvm` cannot run a stock Linux kernel).
//! - `mica-vmm`: Mica's own VMM on rust-vmm; KVM only, and a stock Linux kernel needs hardware KVM.
//! - `auto`: `mica-vmm` on hardware KVM when the pod fits it (at most 3 GiB of memory), else
//!   `qemu`; the reason is printed when the pod starts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use mica_launch::{Accel, KvmProbe};

use crate::spec::{Backend, PodSpec};

/// The virtio-serial port name the agent looks for (QEMU's `virtserialport,name=` and mica-vmm's
/// console port 1).
pub const AGENT_PORT: &str = "mica.agent";
/// The console log in a pod directory.
pub const CONSOLE_LOG: &str = "console.log";
/// The agent socket in a pod directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The secrets disk in a pod directory.
const SECRETS_IMAGE: &str = "secrets.img";

/// The hypervisor that runs a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypervisor {
    /// QEMU with this accelerator.
    Qemu(Accel),
    /// mica-vmm (always KVM).
    MicaVmm,
}

impl Hypervisor {
    /// The backend's name, as pod specs and `mica pod list` give it.
    pub fn backend_name(self) -> &'static str {
        match self {
            Hypervisor::Qemu(_) => "qemu",
            Hypervisor::MicaVmm => "mica-vmm",
        }
    }

    /// The accelerator's name.
    pub fn accel_name(self) -> &'static str {
        match self {
            Hypervisor::Qemu(accel) => accel.name(),
            Hypervisor::MicaVmm => "kvm",
        }
    }
}

/// A backend chosen for a pod, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// What runs the pod.
    pub hypervisor: Hypervisor,
    /// Why, in words (printed when the pod starts).
    pub why: String,
}

/// What mica-vmm cannot run yet, if `spec` asks for it.
fn beyond_mica_vmm(spec: &PodSpec) -> Option<String> {
    let max_mib = mica_vmm::layout::MAX_MEMORY / mica_vmm::layout::MIB;
    if spec.vcpus > u32::from(mica_vmm::vm::MAX_VCPUS) {
        Some(format!("mica-vmm runs at most {} vCPUs, and this pod asks for {}", mica_vmm::vm::MAX_VCPUS, spec.vcpus))
    } else if u64::from(spec.memory_mib) > max_mib {
        Some(format!("mica-vmm gives a guest at most {max_mib} MiB, and this pod asks for {} MiB", spec.memory_mib))
    } else {
        None
    }
}

/// The environment variable that lets backend `mica-vmm` start a pod on a software KVM, where
/// Debian's kernel does not get far (minutes into its boot it stops at an instruction `kvm_pvm`
/// cannot emulate): for tests of the VMM's process handling, and for diagnosis.
pub const ALLOW_SOFTWARE_KVM: &str = "MICA_POD_ALLOW_SOFTWARE_KVM";

/// Chooses the hypervisor for `spec` on a host whose KVM is `probe`, or says why the spec's
/// backend cannot run the pod here (before anything is created). `allow_software` lets an
/// explicit `mica-vmm` run on a software KVM ([`ALLOW_SOFTWARE_KVM`]).
pub fn choose(spec: &PodSpec, probe: &KvmProbe, allow_software: bool) -> Result<Choice> {
    let hardware = probe.hardware() && probe.usable();
    let tcg = || Choice {
        hypervisor: Hypervisor::Qemu(Accel::Tcg),
        why: format!("TCG ({})", probe.unusable_reason().unwrap_or_else(|| probe.label())),
    };
    match spec.backend {
        Backend::Qemu if hardware => {
            Ok(Choice { hypervisor: Hypervisor::Qemu(Accel::Kvm), why: "hardware KVM".into() })
        }
        Backend::Qemu => Ok(tcg()),
        Backend::MicaVmm => {
            if let Some(reason) = probe.unusable_reason() {
                bail!(
                    "backend \"mica-vmm\" needs KVM, and {reason}; use backend = \"qemu\" or \"auto\" (QEMU with TCG)"
                );
            }
            if !hardware && !allow_software {
                bail!(
                    "backend \"mica-vmm\" needs hardware KVM to run a stock Linux kernel, and this host's KVM is {} \
                     (Debian's kernel stops there with an emulation failure); use backend = \"qemu\" or \"auto\" \
                     (QEMU with TCG)",
                    probe.label()
                );
            }
            if let Some(reason) = beyond_mica_vmm(spec) {
                bail!("backend \"mica-vmm\": {reason}; use backend = \"qemu\" or \"auto\"");
            }
            let why =
                if hardware { "hardware KVM".into() } else { format!("{} ({ALLOW_SOFTWARE_KVM})", probe.label()) };
            Ok(Choice { hypervisor: Hypervisor::MicaVmm, why })
        }
        Backend::Auto if hardware => match beyond_mica_vmm(spec) {
            None => Ok(Choice { hypervisor: Hypervisor::MicaVmm, why: "hardware KVM".into() }),
            Some(reason) => Ok(Choice {
                hypervisor: Hypervisor::Qemu(Accel::Kvm),
                why: format!("hardware KVM; not mica-vmm: {reason}"),
            }),
        },
        Backend::Auto => Ok(tcg()),
    }
}

/// The kernel command line of a pod: what every pod's guest boots with
/// ([`mica_launch::linux_guest::pod_cmdline`]: serial console, `no_timer_check`, and the host's TSC
/// rate under TCG), then the spec's own additions.
pub fn cmdline(spec: &PodSpec, tsc_khz: Option<u64>) -> String {
    let mut line = mica_launch::linux_guest::pod_cmdline(&spec.name, tsc_khz);
    if !spec.cmdline.trim().is_empty() {
        line.push(' ');
        line.push_str(spec.cmdline.trim());
    }
    line
}

/// The secrets disk for `spec` in pod directory `dir`, if it has secrets: an ext4 image made
/// without root by `mke2fs -d`, which both backends attach read-only.
pub fn secrets_image(spec: &PodSpec, dir: &Path) -> Result<Option<PathBuf>> {
    if spec.secrets.is_empty() {
        return Ok(None);
    }
    let staging = dir.join("secrets");
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let mut total = 0;
    for secret in &spec.secrets {
        let target = staging.join(&secret.name);
        fs::copy(&secret.path, &target)
            .with_context(|| format!("copying secret {:?} from {}", secret.name, secret.path.display()))?;
        total += fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    }
    // ext4 needs room for its own metadata: a floor of 2 MiB, then the files twice over.
    let size_kib = (2048 + 2 * total / 1024).to_string();
    let image = dir.join(SECRETS_IMAGE);
    let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"].into_iter().map(PathBuf::from).find(|p| p.exists());
    let mke2fs = mke2fs.context("mke2fs is not installed (secrets need it): apt-get install e2fsprogs")?;
    let out = Command::new(&mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-L", "mica-secrets", "-E", "root_owner=0:0", "-d"])
        .arg(&staging)
        .arg(&image)
        .arg(&size_kib)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", mke2fs.display()))?;
    if !out.status.success() {
        bail!("making the secrets disk failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim_end());
    }
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    Ok(Some(image))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(backend: &str, vcpus: u32, memory_mib: u32) -> PodSpec {
        serde_json::from_str(&format!(
            r#"{{"name":"web","backend":"{backend}","kernel":"/k/vmlinuz","initramfs":"/k/initrd","cmdline":" loglevel=4 ",
                "vcpus":{vcpus},"memory_mib":{memory_mib},"command":[],"env":{{}},"secrets":[]}}"#
        ))
        .unwrap()
    }

    /// A probe of a host with `/dev/kvm` (usable or not) and `module` loaded.
    fn probe(dev_kvm: bool, module: Option<&str>) -> (tempfile::TempDir, KvmProbe) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        if dev_kvm {
            fs::write(&dev, b"").unwrap();
        }
        let modules = dir.path().join("module");
        fs::create_dir_all(&modules).unwrap();
        if let Some(module) = module {
            fs::create_dir_all(modules.join(module)).unwrap();
        }
        let probe = KvmProbe::detect_at(&dev, &modules);
        (dir, probe)
    }

    #[test]
    fn auto_takes_mica_vmm_on_hardware_kvm_and_qemu_otherwise() {
        let (_d, hardware) = probe(true, Some("kvm_intel"));
        let (_e, software) = probe(true, Some("kvm_pvm"));
        let (_f, none) = probe(false, None);
        let choice = choose(&spec("auto", 1, 256), &hardware, false).unwrap();
        assert_eq!(choice, Choice { hypervisor: Hypervisor::MicaVmm, why: "hardware KVM".into() });
        assert_eq!(choose(&spec("auto", 4, 256), &hardware, false).unwrap().hypervisor, Hypervisor::MicaVmm);
        let big = choose(&spec("auto", 1, 4096), &hardware, false).unwrap();
        assert_eq!(big.hypervisor, Hypervisor::Qemu(Accel::Kvm));
        assert!(big.why.contains("at most 3072 MiB"), "{}", big.why);
        for probe in [&software, &none] {
            let choice = choose(&spec("auto", 1, 256), probe, false).unwrap();
            assert_eq!(choice.hypervisor, Hypervisor::Qemu(Accel::Tcg));
            assert!(choice.why.starts_with("TCG ("), "{}", choice.why);
        }
        assert_eq!(choose(&spec("qemu", 4, 256), &hardware, false).unwrap().hypervisor, Hypervisor::Qemu(Accel::Kvm));
        assert_eq!(choose(&spec("qemu", 1, 256), &software, false).unwrap().hypervisor, Hypervisor::Qemu(Accel::Tcg));
    }

    #[test]
    fn mica_vmm_says_why_it_cannot_run_a_pod_here() {
        let (_d, hardware) = probe(true, Some("kvm_amd"));
        let (_e, software) = probe(true, Some("kvm_pvm"));
        let (_f, none) = probe(false, None);
        assert_eq!(choose(&spec("mica-vmm", 1, 256), &hardware, false).unwrap().hypervisor, Hypervisor::MicaVmm);
        let e = choose(&spec("mica-vmm", 1, 256), &software, false).unwrap_err().to_string();
        assert!(e.contains("needs hardware KVM") && e.contains("kvm_pvm"), "{e}");
        let e = choose(&spec("mica-vmm", 1, 256), &none, false).unwrap_err().to_string();
        assert!(e.starts_with("backend \"mica-vmm\" needs KVM, and "), "{e}");
        let e = choose(&spec("mica-vmm", 1, 3073), &hardware, false).unwrap_err().to_string();
        assert!(e.contains("at most 3072 MiB, and this pod asks for 3073 MiB"), "{e}");
        let forced = choose(&spec("mica-vmm", 1, 256), &software, true).unwrap();
        assert_eq!(forced.hypervisor, Hypervisor::MicaVmm);
        assert_eq!(forced.why, "software KVM (kvm_pvm) (MICA_POD_ALLOW_SOFTWARE_KVM)");
        assert!(choose(&spec("mica-vmm", 1, 256), &none, true).is_err(), "no KVM at all");
        assert_eq!(choose(&spec("auto", 1, 256), &software, true).unwrap().hypervisor, Hypervisor::Qemu(Accel::Tcg));
    }

    #[test]
    fn the_command_line_is_mica_s_then_the_spec_s() {
        assert_eq!(
            cmdline(&spec("qemu", 1, 256), Some(2_445_404)),
            "console=ttyS0 panic=-1 reboot=t no_timer_check mica.pod=web tsc_early_khz=2445404 loglevel=4"
        );
        assert_eq!(
            cmdline(&spec("qemu", 1, 256), None),
            "console=ttyS0 panic=-1 reboot=t no_timer_check mica.pod=web loglevel=4"
        );
    }
}
