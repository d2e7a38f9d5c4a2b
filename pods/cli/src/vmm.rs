//! The mica-vmm backend: a pod is one VMM process, `mica vmm ...` (this binary running
//! [`mica_vmm::cli`]), in its own process group so that it outlives the command that started it,
//! with
//!
//! - COM1 and `hvc0` on its stdout, which is the pod directory's `console.log` (`mica pod logs`),
//!   and its own messages on stderr, `vmm.log`;
//! - a virtio-console whose `mica.agent` port is the Unix socket `agent.sock`;
//! - the secrets, when there are any, on a read-only virtio-blk disk (the same ext4 image the
//!   QEMU backend attaches): the device refuses writes, and Linux sees the disk read-only;
//! - its pid in the pod directory's pid file, written by the VMM itself once the VM is built.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::backend::{AGENT_SOCKET, CONSOLE_LOG, cmdline, secrets_image};
use crate::spec::PodSpec;

/// The VMM's own messages in a pod directory.
pub const VMM_LOG: &str = "vmm.log";
/// How long the VMM may take to build the VM and write its pid file.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// mica-vmm's arguments (after `mica vmm`) for `spec` in pod directory `dir`.
pub fn args(spec: &PodSpec, dir: &Path, secrets: Option<&Path>) -> Vec<String> {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let mut args = vec![
        "--kernel".to_owned(),
        spec.kernel.to_string_lossy().into_owned(),
        "--initrd".to_owned(),
        spec.initramfs.to_string_lossy().into_owned(),
        "--cmdline".to_owned(),
        // KVM: the guest calibrates its TSC itself.
        cmdline(spec, None),
        "--memory-mib".to_owned(),
        spec.memory_mib.to_string(),
        "--vcpus".to_owned(),
        spec.vcpus.to_string(),
        "--agent-socket".to_owned(),
        path(AGENT_SOCKET),
        "--pidfile".to_owned(),
        path(crate::state::PIDFILE),
    ];
    if let Some(image) = secrets {
        args.extend(["--disk".to_owned(), image.to_string_lossy().into_owned(), "--disk-read-only".to_owned()]);
    }
    args
}

/// Starts the pod's VMM and returns its pid once it has built the VM (its pid file is there).
pub fn launch(spec: &PodSpec, dir: &Path) -> Result<u32> {
    let secrets = secrets_image(spec, dir)?;
    let exe = std::env::current_exe().context("cannot find this program's path to start mica-vmm")?;
    let console = fs::File::create(dir.join(CONSOLE_LOG)).with_context(|| format!("creating {CONSOLE_LOG}"))?;
    let log_path = dir.join(VMM_LOG);
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new(&exe)
        .arg("vmm")
        .arg("--")
        .args(args(spec, dir, secrets.as_deref()))
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(log)
        // Its own process group: a ^C meant for `mica pod run` does not stop the pod.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {} vmm", exe.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("waiting for mica-vmm")? {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            bail!("mica-vmm refused to start the pod ({status}): {}", log.trim_end());
        }
        if let Some(pid) = crate::state::read_pidfile(dir) {
            if pid != child.id() {
                bail!("mica-vmm wrote pid {pid} to its pid file, but its pid is {}", child.id());
            }
            // The VMM runs on; it is this process's child only until this process exits.
            return Ok(pid);
        }
        if Instant::now() > deadline {
            // Not a pod yet: stop it here, since no pid file names it.
            let _ = child.kill();
            let _ = child.wait();
            bail!("mica-vmm did not build the VM within {} s", START_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mica_vmm_gets_console_agent_socket_pidfile_and_secrets_disk() {
        let spec = crate::backend::tests::spec("mica-vmm", 1, 384);
        let dir = Path::new("/run/mica/pods/web");
        let args = args(&spec, dir, Some(Path::new("/run/mica/pods/web/secrets.img"))).join(" ");
        assert!(args.starts_with("--kernel /k/vmlinuz --initrd /k/initrd --cmdline console=ttyS0 panic=-1"), "{args}");
        assert!(args.contains("mica.pod=web loglevel=4 --memory-mib 384 --vcpus 1"), "{args}");
        assert!(!args.contains("tsc_early_khz"), "KVM: {args}");
        assert!(args.contains("--agent-socket /run/mica/pods/web/agent.sock"), "{args}");
        assert!(args.contains("--pidfile /run/mica/pods/web/hypervisor.pid"), "{args}");
        assert!(args.ends_with("--disk /run/mica/pods/web/secrets.img --disk-read-only"), "{args}");
        let none = super::args(&spec, dir, None).join(" ");
        assert!(!none.contains("--disk"), "{none}");
    }
}
