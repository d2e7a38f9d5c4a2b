//! The machine devices a boot bundle asks for (its manifest's `[[device]]` entries) as QEMU
//! arguments for `microvm`'s virtio-mmio transports, and the disk images behind block devices.
//!
//! QEMU plugs `-device` entries into the transports from the last one down, in command-line
//! order; the kernel probes them in that order too, so the N-th device of a kind here is the
//! kernel's `kind.N`. Transports are modern (virtio 1.x): `force-legacy=false`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use mica_bundle::{Bundle, MachineDevice};

use crate::LaunchError;

/// The machine devices of the boot bundle at `path` (none for a bundle without any).
pub fn of_bundle(path: &Path) -> Result<Vec<MachineDevice>, LaunchError> {
    let bad = |reason: String| LaunchError::Bundle { path: path.to_owned(), reason };
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    let bundle = Bundle::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let manifest = bundle.manifest().map_err(|e| bad(e.to_string()))?.map_err(|e| bad(e.to_string()))?;
    Ok(manifest.machine)
}

/// Guest memory for booting the bundle at `path`, in MiB: `base_mib` for the system, plus room for
/// the bundle itself (it is loaded into guest memory) and, for a bundle whose components the
/// system compiles, the compiler component's memory budget.
pub fn memory_mib(path: &Path, base_mib: u32) -> Result<u32, LaunchError> {
    let bad = |reason: String| LaunchError::Bundle { path: path.to_owned(), reason };
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    let bundle = Bundle::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let manifest = bundle.manifest().map_err(|e| bad(e.to_string()))?.map_err(|e| bad(e.to_string()))?;
    let Some(compiler) = manifest.compiler else { return Ok(base_mib) };
    let mib = |bytes: u64| u32::try_from(bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
    Ok(base_mib.saturating_add(mib(bytes.len() as u64)).saturating_add(mib(compiler.memory_limit)))
}

/// QEMU arguments for `devices`: for each, its backend (disk, network) and its virtio-mmio device.
pub fn qemu_args(devices: &[MachineDevice]) -> Vec<OsString> {
    let mut args: Vec<String> = Vec::new();
    if devices.is_empty() {
        return Vec::new();
    }
    args.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
    for (i, d) in devices.iter().enumerate() {
        match d.kind.as_str() {
            "virtio-blk" => {
                let disk = d.disk.as_deref().unwrap_or("");
                let ro = if d.read_only { ",readonly=on" } else { "" };
                args.push("-drive".into());
                args.push(format!("if=none,id=dev{i},format=raw,file={}{ro}", disk.replace(',', ",,")));
                args.push("-device".into());
                args.push(format!("virtio-blk-device,drive=dev{i}"));
            }
            "virtio-net" => {
                let mut netdev = format!("user,id=dev{i}");
                for f in &d.hostfwd {
                    netdev.push_str(",hostfwd=");
                    netdev.push_str(f);
                }
                args.push("-netdev".into());
                args.push(netdev);
                args.push("-device".into());
                args.push(format!("virtio-net-device,netdev=dev{i}"));
            }
            "virtio-rng" => {
                args.push("-device".into());
                args.push("virtio-rng-device".into());
            }
            "virtio-console" => {
                // A virtio-serial device whose port 0 is a console, written to a file.
                let output = d.output.as_deref().unwrap_or("/dev/null");
                args.push("-chardev".into());
                args.push(format!("file,id=dev{i},path={}", output.replace(',', ",,")));
                args.push("-device".into());
                args.push(format!("virtio-serial-device,id=dev{i}-bus"));
                args.push("-device".into());
                args.push(format!("virtconsole,chardev=dev{i},bus=dev{i}-bus.0,nr=0"));
            }
            other => {
                // The manifest check lets no other kind through; a newer bundle may carry one.
                args.push("-device".into());
                args.push(format!("{other}-device"));
            }
        }
    }
    args.into_iter().map(OsString::from).collect()
}

/// Creates the disk images of `devices` that do not exist yet, zeroed, of their size (existing
/// images are left as they are: what a system stored survives a reboot), and the directories of
/// console output files.
pub fn prepare_disks(devices: &[MachineDevice]) -> Result<(), LaunchError> {
    for d in devices {
        if let Some(output) = &d.output {
            let path = PathBuf::from(output);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|source| LaunchError::Disk { path: path.clone(), source })?;
            }
        }
        let Some(disk) = &d.disk else { continue };
        let path = PathBuf::from(disk);
        if path.exists() {
            continue;
        }
        let err = |source| LaunchError::Disk { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let file = fs::File::create(&path).map_err(err)?;
        file.set_len(d.disk_size).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(kind: &str) -> MachineDevice {
        MachineDevice {
            kind: kind.into(),
            disk: None,
            disk_size: 0,
            read_only: false,
            hostfwd: Vec::new(),
            output: None,
        }
    }

    #[test]
    fn devices_become_qemu_arguments() {
        assert!(qemu_args(&[]).is_empty());
        let mut blk = device("virtio-blk");
        blk.disk = Some("/d/a,b.img".into());
        blk.read_only = true;
        let mut net = device("virtio-net");
        net.hostfwd = vec!["tcp:127.0.0.1:8080-:80".into()];
        let args: Vec<String> =
            qemu_args(&[device("virtio-rng"), blk, net]).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-global",
                "virtio-mmio.force-legacy=false",
                "-device",
                "virtio-rng-device",
                "-drive",
                "if=none,id=dev1,format=raw,file=/d/a,,b.img,readonly=on",
                "-device",
                "virtio-blk-device,drive=dev1",
                "-netdev",
                "user,id=dev2,hostfwd=tcp:127.0.0.1:8080-:80",
                "-device",
                "virtio-net-device,netdev=dev2",
            ]
        );
    }

    #[test]
    fn a_console_writes_to_its_file() {
        let mut console = device("virtio-console");
        console.output = Some("/o/console.log".into());
        let args: Vec<String> = qemu_args(&[console]).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args[2..],
            [
                "-chardev",
                "file,id=dev0,path=/o/console.log",
                "-device",
                "virtio-serial-device,id=dev0-bus",
                "-device",
                "virtconsole,chardev=dev0,bus=dev0-bus.0,nr=0",
            ]
        );
    }

    #[test]
    fn missing_disks_are_created_and_existing_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("disk.img");
        let mut blk = device("virtio-blk");
        blk.disk = Some(path.to_string_lossy().into_owned());
        blk.disk_size = 1 << 20;
        prepare_disks(&[blk.clone()]).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 1 << 20);
        fs::write(&path, b"kept").unwrap();
        prepare_disks(&[blk]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"kept");
    }
}
