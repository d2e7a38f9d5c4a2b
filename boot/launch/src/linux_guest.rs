//! What booting a stock Linux guest needs from the host side, shared by the pod manager
//! (`mica pod run`) and the pod benchmark's plain-QEMU baseline, so both boot the guest the same.

use std::fs;

/// The host's TSC frequency in kHz, from `/proc/cpuinfo` (`cpu MHz`, constant on the hosts a
/// TSC-based guest clock makes sense on).
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    cpu_mhz_khz(&cpuinfo)
}

/// The first `cpu MHz` of a `/proc/cpuinfo` text, in kHz.
pub fn cpu_mhz_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|line| line.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split_once(':')?.1.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// The kernel command line a pod's Linux guest boots with: serial console, no reboot wait, the
/// pod's name for the guest's init. `no_timer_check`: Linux's check that the timer reaches the
/// I/O APIC relies on timing that an emulated or overcommitted vCPU may miss. `tsc_early_khz`
/// (to give under TCG, where the guest's TSC is the host's): Linux calibrates the TSC against
/// the PIT, which under TCG now and then misses its timing window; it then marks the TSC unstable
/// and its boot stalls for good ("tsc: Unable to calibrate against PIT").
pub fn pod_cmdline(pod: &str, tsc_khz: Option<u64>) -> String {
    let mut line = format!("console=ttyS0 panic=-1 reboot=t no_timer_check mica.pod={pod}");
    if let Some(khz) = tsc_khz {
        line.push_str(&format!(" tsc_early_khz={khz}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_mhz_becomes_khz() {
        assert_eq!(cpu_mhz_khz("processor\t: 0\ncpu MHz\t\t: 2445.404\n"), Some(2_445_404));
        assert_eq!(cpu_mhz_khz("processor\t: 0\n"), None);
        assert_eq!(cpu_mhz_khz("cpu MHz\t\t: 0.000\n"), None);
    }

    #[test]
    fn pod_cmdline_names_the_pod_and_the_tsc() {
        assert_eq!(pod_cmdline("web", None), "console=ttyS0 panic=-1 reboot=t no_timer_check mica.pod=web");
        assert!(pod_cmdline("web", Some(2_000_000)).ends_with(" mica.pod=web tsc_early_khz=2000000"));
    }
}
