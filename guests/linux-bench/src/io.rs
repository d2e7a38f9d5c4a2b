//! The I/O workloads of `cargo xtask bench io`, on Linux's own virtio drivers.
//!
//! - `block`: the same requests as Mica's `device-client block-bench` on `/dev/vda`, opened with
//!   `O_DIRECT` (no page cache, like Mica's driver, which has none): 4 MiB written and read in
//!   32 KiB requests, a flush (`fdatasync`), then 500 writes and 500 reads of 4 KiB at the same
//!   pseudo-random places. Reports the instructions of each phase.
//! - `fs`: mounts `/dev/vda` (formatted ext4 by the host) on `/mnt` and runs
//!   [`mica_workloads::files`] in `/mnt/bench`, the same `std::fs` calls as Mica's `notes bench`.
//!   Reports the instructions of each phase.
//! - `httpd`: brings up `eth0` as 10.0.2.15/24 (QEMU user networking), writes the page Mica's
//!   httpd serves, says `httpd ready` and becomes busybox's `httpd` in the foreground (the host
//!   stops the guest when it has measured).
//! - `echo`: the same, then the TCP echo server of `cargo xtask bench net` on port 80
//!   ([`mica_workloads::net::echo`], the code Mica's `std-net` runs).
//!
//! Both load their modules first: `/etc/mica/modules` lists them in dependency order.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

use mica_workloads::block::{RANDOM_N, RANDOM_REQUEST, RANDOM_SPAN, SECTOR, SEQ_BYTES, SEQ_REQUEST, random_sector};
use rustix::fs::{Mode, OFlags};

/// Loads the modules `/etc/mica/modules` lists and mounts devtmpfs on `/dev`.
fn prepare() -> Result<(), String> {
    let _ = fs::create_dir_all("/dev");
    rustix::mount::mount("devtmpfs", "/dev", "devtmpfs", rustix::mount::MountFlags::empty(), None)
        .map_err(|e| format!("mounting devtmpfs on /dev: {e}"))?;
    let list = fs::read_to_string("/etc/mica/modules").map_err(|e| format!("reading /etc/mica/modules: {e}"))?;
    for name in list.lines().filter(|l| !l.is_empty()) {
        let path = format!("/lib/modules/{name}.ko");
        let status = Command::new("/bin/insmod").arg(&path).status().map_err(|e| format!("running insmod: {e}"))?;
        if !status.success() {
            return Err(format!("insmod {path} failed ({status})"));
        }
    }
    Ok(())
}

/// A page-aligned buffer of `len` bytes inside `storage` (O_DIRECT needs alignment).
fn aligned(storage: &mut [u8], len: usize) -> &mut [u8] {
    let offset = storage.as_ptr().align_offset(4096);
    &mut storage[offset..offset + len]
}

/// The `block` workload; its report.
pub fn block() -> Result<String, String> {
    prepare()?;
    let fd = rustix::fs::open("/dev/vda", OFlags::RDWR | OFlags::DIRECT, Mode::empty())
        .map_err(|e| format!("opening /dev/vda: {e}"))?;
    let mut storage = vec![0u8; SEQ_REQUEST as usize + 4096];
    let buf = aligned(&mut storage, SEQ_REQUEST as usize);
    buf.fill(0x5a);
    let io = |e: rustix::io::Errno| format!("I/O on /dev/vda: {e}");
    let mut report = Vec::new();
    let (r, n) = super::counted(|| -> Result<(), String> {
        for i in 0..SEQ_BYTES / SEQ_REQUEST {
            rustix::io::pwrite(&fd, buf, i * SEQ_REQUEST).map_err(io)?;
        }
        Ok(())
    });
    r?;
    report.push(format!("seq-write={n}"));
    let (r, n) = super::counted(|| rustix::fs::fdatasync(&fd).map_err(io));
    r?;
    report.push(format!("flush={n}"));
    let (r, n) = super::counted(|| -> Result<(), String> {
        for i in 0..SEQ_BYTES / SEQ_REQUEST {
            rustix::io::pread(&fd, &mut *buf, i * SEQ_REQUEST).map_err(io)?;
        }
        Ok(())
    });
    r?;
    report.push(format!("seq-read={n}"));
    let size = rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0)).map_err(io)?;
    let slots = size.min(RANDOM_SPAN) / RANDOM_REQUEST;
    let small = &mut buf[..RANDOM_REQUEST as usize];
    small.fill(0xa5);
    let (r, n) = super::counted(|| -> Result<(), String> {
        for i in 0..RANDOM_N {
            rustix::io::pwrite(&fd, small, random_sector(i, slots) * SECTOR).map_err(io)?;
        }
        Ok(())
    });
    r?;
    report.push(format!("rand-write={n}"));
    let (r, n) = super::counted(|| -> Result<(), String> {
        for i in 0..RANDOM_N {
            rustix::io::pread(&fd, &mut *small, random_sector(i, slots) * SECTOR).map_err(io)?;
        }
        Ok(())
    });
    r?;
    report.push(format!("rand-read={n}"));
    Ok(format!("block {}", report.join(" ")))
}

/// The page both servers serve at `/`.
pub const PAGE: &str = "hello from Mica over virtio-net\n";

/// The `httpd` workload: never returns on success (it becomes busybox's httpd).
pub fn httpd() -> Result<String, String> {
    prepare()?;
    network_up()?;
    fs::create_dir_all("/www").map_err(|e| format!("creating /www: {e}"))?;
    fs::write("/www/index.html", PAGE).map_err(|e| format!("writing /www/index.html: {e}"))?;
    println!("mica-linux-bench: httpd ready");
    let error = Command::new("/bin/httpd").args(["-f", "-p", "80", "-h", "/www"]).exec();
    Err(format!("running busybox httpd: {error}"))
}

/// The `echo` workload (`cargo xtask bench net`): [`mica_workloads::net::echo`] on port 80, the
/// same server as Mica's `std-net quiet 80`; serves until the host stops the guest.
pub fn echo() -> Result<String, String> {
    prepare()?;
    network_up()?;
    let listener = std::net::TcpListener::bind(("0.0.0.0", 80)).map_err(|e| format!("listening on port 80: {e}"))?;
    println!("mica-linux-bench: echo ready");
    mica_workloads::net::echo(&listener, u64::MAX, |_| {}).map_err(|e| format!("the echo server: {e}"))?;
    Err("the echo server ended".to_owned())
}

/// Brings up `eth0` as 10.0.2.15/24 behind QEMU's user networking (10.0.2.2 its gateway).
fn network_up() -> Result<(), String> {
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "set", "eth0", "up"],
        &["addr", "add", "10.0.2.15/24", "dev", "eth0"],
        &["route", "add", "default", "via", "10.0.2.2"],
    ] {
        let status = Command::new("/bin/ip").args(args).status().map_err(|e| format!("running ip: {e}"))?;
        if !status.success() {
            return Err(format!("ip {} failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

/// The `fs` workload; its report.
pub fn files() -> Result<String, String> {
    prepare()?;
    fs::create_dir_all("/mnt").map_err(|e| format!("making /mnt: {e}"))?;
    rustix::mount::mount("/dev/vda", "/mnt", "ext4", rustix::mount::MountFlags::empty(), None)
        .map_err(|e| format!("mounting /dev/vda (ext4) on /mnt: {e}"))?;
    let phases = mica_workloads::files::run(std::path::Path::new("/mnt/bench"), &mut super::tsc)
        .map_err(|e| format!("the file workload on ext4: {e}"))?;
    let fields: Vec<String> = phases.iter().map(|p| format!("{}={}", p.op, p.elapsed)).collect();
    rustix::mount::unmount("/mnt", rustix::mount::UnmountFlags::empty())
        .map_err(|e| format!("unmounting /mnt: {e}"))?;
    Ok(format!("fs {}", fields.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned() {
        let mut storage = vec![0u8; 8192 + 4096];
        let buf = aligned(&mut storage, 8192);
        assert_eq!(buf.as_ptr() as usize % 4096, 0);
        assert_eq!(buf.len(), 8192);
    }
}
