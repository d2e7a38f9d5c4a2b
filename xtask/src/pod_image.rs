//! `cargo xtask pod-image`: the test workload of legacy pods, in `target/mica/pods/`.
//!
//! - `vmlinuz`: Debian's cloud kernel (`linux-image-cloud-amd64`), unmodified.
//! - `initramfs.cpio`: busybox-static, the static `mica-agent`, the kernel modules a pod needs
//!   (virtio-mmio transport, virtio-console for the agent's port, virtio-blk for the secrets
//!   disk, with their dependencies, taken from the same kernel package) and an `/init` script
//!   that mounts `/proc`, `/sys` and `/dev`, loads the modules, mounts the secrets disk read-only
//!   at `/run/secrets` when there is one, names the host after the pod and `exec`s the agent.
//!
//! `pods/examples/debian.toml` refers to both files.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mica_initramfs::Initramfs;
use mica_launch::GuestArch;

use crate::linux_guest::{self, BUSYBOX_APPLETS};

/// Modules every pod loads (dependencies are added and ordered by `mica-initramfs`).
const MODULES: &[&str] = &["virtio_mmio", "virtio_console", "virtio_blk"];
/// The virtio-serial port the agent serves (the `mica` CLI's QEMU backend names it so).
const AGENT_PORT: &str = "mica.agent";

/// The two files of the pod image.
#[derive(Debug)]
pub struct PodImage {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
}

/// Builds (or refreshes) the pod image under `root/target/mica/pods`.
pub fn build(root: &Path) -> Result<PodImage> {
    let target = root.join("target");
    let guest = linux_guest::fetch(&target, GuestArch::X86_64)?;
    let agent = linux_guest::build_static(root, "mica-agent", "mica-agent")?;
    let dir = target.join("mica").join("pods");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut image = Initramfs::new();
    image.busybox(read(&guest.busybox)?, BUSYBOX_APPLETS)?;
    image.file("bin/mica-agent", read(&agent)?, 0o755)?;
    let order = image.modules(&guest.modules, MODULES)?;
    image.file("etc/mica/modules", format!("{}\n", order.join("\n")).into_bytes(), 0o644)?;
    image.file("init", init_script().into_bytes(), 0o755)?;
    image.dir("run")?;
    let initramfs = dir.join("initramfs.cpio");
    write_atomically(&initramfs, &image.to_bytes())?;
    let kernel = dir.join("vmlinuz");
    write_atomically(&kernel, &read(&guest.kernel)?)?;
    eprintln!(
        "xtask: pod image: Linux {} with modules {}, busybox and mica-agent in {}",
        guest.release,
        order.join(", "),
        dir.display()
    );
    Ok(PodImage { kernel, initramfs })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("moving {} into place", tmp.display()))
}

/// The pod's `/init`.
fn init_script() -> String {
    format!(
        r#"#!/bin/sh
# Mica pod init: prepare the guest, then become the agent (PID 1).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/mica/modules); do
    insmod "/lib/modules/$module.ko" || echo "mica-init: loading $module failed"
done
pod=$(sed -n 's/.*mica\.pod=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
hostname "${{pod:-pod}}"
if [ -b /dev/vda ]; then
    mkdir -p /run/secrets
    mount -t ext4 -o ro /dev/vda /run/secrets || echo "mica-init: mounting the secrets disk failed"
fi
echo "mica-init: pod ${{pod:-?}} up; starting mica-agent"
exec /bin/mica-agent --port-name {AGENT_PORT}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_execs_the_agent_on_the_named_port() {
        let script = init_script();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.trim_end().ends_with("exec /bin/mica-agent --port-name mica.agent"), "{script}");
        assert!(script.contains("hostname \"${pod:-pod}\""), "{script}");
        for applet in ["mount", "insmod", "sed", "hostname", "mkdir", "cat", "echo", "sh"] {
            assert!(BUSYBOX_APPLETS.contains(&applet), "{applet} is used by /init");
        }
    }
}
