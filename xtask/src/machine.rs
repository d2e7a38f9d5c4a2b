//! What machine a measurement ran on, for benchmark reports.

use std::fs;
use std::path::Path;
use std::process::Command;

use mica_launch::KvmProbe;
use serde::Serialize;

use crate::process;

/// The host, as recorded next to benchmark numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// First line of `qemu-system-x86_64 --version`.
    pub qemu: String,
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os: String,
    /// The host kernel release.
    pub host_kernel: String,
    /// What KVM is here: `software KVM (kvm_pvm)`, ..., or why it cannot be used.
    pub kvm: String,
}

impl Machine {
    /// Describes this host, using the QEMU binary `qemu`.
    pub fn describe(qemu: &Path, probe: &KvmProbe) -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let qemu_version = process::output(Command::new(qemu).arg("--version"))
            .ok()
            .and_then(|v| v.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cpu_model: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".to_owned()),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            qemu: qemu_version,
            os: os_name(&read("/etc/os-release")).unwrap_or_else(|| "unknown".to_owned()),
            host_kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            kvm: match probe.unusable_reason() {
                None => probe.label(),
                Some(why) => format!("not usable: {why}"),
            },
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
}

fn os_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
}

impl Machine {
    /// A fixed machine for report tests, with `kvm` as given.
    #[cfg(test)]
    pub fn sample(kvm: &str) -> Machine {
        Machine {
            cpu_model: "AMD EPYC".into(),
            cpus: 2,
            qemu: "QEMU emulator version 7.2.22".into(),
            os: "Debian".into(),
            host_kernel: "6.1".into(),
            kvm: kvm.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_os_release() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model(""), None);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_name(os).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    }
}
