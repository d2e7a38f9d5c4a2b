//! The QEMU backend: a pod is one `qemu-system-x86_64 -M microvm` process, daemonized, with
//!
//! - the serial console in the pod directory's `console.log` (`mica pod logs`);
//! - a virtio-serial port named [`AGENT_PORT`] behind a Unix socket (`agent.sock`) for the guest
//!   agent;
//! - the secrets, when there are any, on a read-only virtio-blk disk (an ext4 image made with
//!   `mke2fs -d`, attached `readonly=on`, so the guest cannot write it even by remounting).
//!
//! KVM is used when it is hardware-backed; otherwise TCG (a software KVM such as `kvm_pvm`
//! cannot run a stock Linux kernel): see [`crate::backend`].

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use mica_launch::Accel;

use crate::backend::{AGENT_PORT, AGENT_SOCKET, CONSOLE_LOG, cmdline, secrets_image};
use crate::spec::PodSpec;

/// QEMU's arguments for `spec` in pod directory `dir`.
pub fn args(spec: &PodSpec, dir: &Path, accel: Accel, secrets: Option<&Path>) -> Vec<String> {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let mut args: Vec<String> = [
        "-M",
        "microvm",
        "-accel",
        accel.name(),
        "-cpu",
        if accel == Accel::Kvm { "host" } else { "max" },
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(["-smp".into(), spec.vcpus.to_string(), "-m".into(), format!("{}M", spec.memory_mib)]);
    args.extend(["-kernel".into(), spec.kernel.to_string_lossy().into_owned()]);
    args.extend(["-initrd".into(), spec.initramfs.to_string_lossy().into_owned()]);
    let tsc_khz = if accel == Accel::Tcg { mica_launch::linux_guest::host_tsc_khz() } else { None };
    args.extend(["-append".into(), cmdline(spec, tsc_khz)]);
    args.extend(["-chardev".into(), format!("file,id=console,path={}", path(CONSOLE_LOG))]);
    args.extend(["-serial".into(), "chardev:console".into()]);
    args.extend(["-device".into(), "virtio-serial-device".into()]);
    args.extend(["-chardev".into(), format!("socket,id=agent,path={},server=on,wait=off", path(AGENT_SOCKET))]);
    args.extend(["-device".into(), format!("virtserialport,chardev=agent,name={AGENT_PORT}")]);
    if let Some(image) = secrets {
        args.extend([
            "-drive".into(),
            format!("if=none,id=secrets,format=raw,readonly=on,file={}", image.to_string_lossy()),
            "-device".into(),
            "virtio-blk-device,drive=secrets".into(),
        ]);
    }
    args.extend(["-daemonize".into(), "-pidfile".into(), path(crate::state::PIDFILE)]);
    args
}

/// Starts the pod's QEMU (daemonized) and returns its pid.
pub fn launch(spec: &PodSpec, dir: &Path, accel: Accel) -> Result<u32> {
    let qemu = mica_launch::find_qemu()?;
    let secrets = secrets_image(spec, dir)?;
    let mut cmd = Command::new(&qemu);
    cmd.args(args(spec, dir, accel, secrets.as_deref())).stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("cannot run {}", qemu.display()))?;
    if !out.status.success() {
        bail!("QEMU refused to start the pod ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim_end());
    }
    crate::state::read_pidfile(dir).context("QEMU started but wrote no pid file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PodSpec {
        serde_json::from_str(
            r#"{"name":"web","backend":"qemu","kernel":"/k/vmlinuz","initramfs":"/k/initrd","cmdline":" loglevel=4 ",
                "vcpus":2,"memory_mib":384,"command":[],"env":{},"secrets":[]}"#,
        )
        .unwrap()
    }

    #[test]
    fn qemu_gets_console_agent_port_and_secrets_disk() {
        let dir = Path::new("/run/mica/pods/web");
        let args = args(&spec(), dir, Accel::Tcg, Some(Path::new("/run/mica/pods/web/secrets.img")));
        let joined = args.join(" ");
        assert!(joined.starts_with("-M microvm -accel tcg -cpu max -nodefaults"), "{joined}");
        assert!(joined.contains("-smp 2 -m 384M -kernel /k/vmlinuz -initrd /k/initrd"), "{joined}");
        let line = args.iter().find(|a| a.starts_with("console=ttyS0")).expect("a command line");
        assert!(line.starts_with("console=ttyS0 panic=-1 reboot=t no_timer_check mica.pod=web"), "{line}");
        assert!(line.ends_with(" loglevel=4"), "{line}");
        assert!(
            joined.contains("-chardev file,id=console,path=/run/mica/pods/web/console.log -serial chardev:console")
        );
        assert!(joined.contains("socket,id=agent,path=/run/mica/pods/web/agent.sock,server=on,wait=off"));
        assert!(joined.contains("virtserialport,chardev=agent,name=mica.agent"));
        assert!(
            joined.contains("readonly=on,file=/run/mica/pods/web/secrets.img -device virtio-blk-device,drive=secrets")
        );
        assert!(joined.ends_with("-daemonize -pidfile /run/mica/pods/web/hypervisor.pid"), "{joined}");
        let kvm = super::args(&spec(), dir, Accel::Kvm, None).join(" ");
        assert!(kvm.contains("-accel kvm -cpu host") && !kvm.contains("virtio-blk"), "{kvm}");
    }
}
