use std::io::Read;

use object::write::{Object as WriteObject, StandardSection};
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

use super::*;

/// Every entry of an archive: (name, mode, rdev major, rdev minor, contents).
fn read_back(bytes: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    let mut rest = bytes;
    let mut entries = Vec::new();
    loop {
        let mut reader = cpio::NewcReader::new(rest).expect("a valid newc header");
        if reader.entry().is_trailer() {
            break;
        }
        let entry = reader.entry();
        let (name, mode, major, minor) =
            (entry.name().to_owned(), entry.mode(), entry.rdev_major(), entry.rdev_minor());
        let mut data = Vec::new();
        reader.read_to_end(&mut data).expect("entry data");
        entries.push((name, mode, major, minor, data));
        rest = reader.finish().expect("next entry");
    }
    entries
}

#[test]
fn skeleton_has_a_console_node_and_the_usual_directories() {
    let entries = read_back(&Initramfs::new().to_bytes());
    let names: Vec<&str> = entries.iter().map(|entry| entry.0.as_str()).collect();
    assert_eq!(names, ["bin", "dev", "dev/console", "etc", "proc", "root", "sbin", "sys", "tmp"]);
    let console = &entries[2];
    assert_eq!((console.1, console.2, console.3), (S_IFCHR | 0o600, 5, 1));
    assert_eq!(entries[0].1, S_IFDIR | 0o755);
}

#[test]
fn files_symlinks_and_parents_are_written_in_path_order() {
    let mut image = Initramfs::default();
    image.file("/usr/lib/x/data", b"payload".to_vec(), 0o644).unwrap();
    image.busybox(b"\x7fELF busybox".to_vec(), &["sh", "uname"]).unwrap();
    let entries = read_back(&image.to_bytes());
    let names: Vec<&str> = entries.iter().map(|entry| entry.0.as_str()).collect();
    assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "bin/uname", "usr", "usr/lib", "usr/lib/x", "usr/lib/x/data"]);
    let busybox = &entries[1];
    assert_eq!((busybox.1, busybox.4.as_slice()), (S_IFREG | 0o755, b"\x7fELF busybox".as_slice()));
    let sh = &entries[2];
    assert_eq!((sh.1, sh.4.as_slice()), (S_IFLNK | 0o777, b"busybox".as_slice()));
    assert_eq!(entries[7].4, b"payload");
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let build = || {
        let mut image = Initramfs::new();
        image.file("init", b"#!/bin/sh\n".to_vec(), 0o755).unwrap();
        image.to_bytes()
    };
    assert_eq!(build(), build());
}

#[test]
fn bad_paths_and_conflicts_are_refused_by_name() {
    let mut image = Initramfs::new();
    for bad in ["", "/", "a//b", "a/../b", "./a"] {
        let error = image.file(bad, Vec::new(), 0o644).unwrap_err();
        assert!(matches!(error, Error::BadPath(ref path) if path == bad), "{bad:?}: {error}");
    }
    image.file("etc/motd", b"hi".to_vec(), 0o644).unwrap();
    image.file("etc/motd", b"hi".to_vec(), 0o644).expect("the same entry twice is fine");
    let error = image.file("etc/motd", b"other".to_vec(), 0o644).unwrap_err();
    assert_eq!(error.to_string(), "\"etc/motd\" is already in the initramfs as a file");
    let error = image.file("etc/motd/x", Vec::new(), 0o644).unwrap_err();
    assert_eq!(error.to_string(), "\"etc/motd\" is already in the initramfs as a file");
}

/// A relocatable ELF object with a `.modinfo` section, like a `.ko`.
fn fake_module(modinfo: &[u8]) -> Vec<u8> {
    let mut object = WriteObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let section = object.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    object.append_section_data(section, modinfo, 1);
    let text = object.section_id(StandardSection::Text);
    object.append_section_data(text, &[0xc3], 1);
    object.write().unwrap()
}

#[test]
fn modules_come_with_their_dependencies_in_load_order() {
    let tree = tempfile::tempdir().unwrap();
    let drivers = tree.path().join("kernel/drivers");
    fs::create_dir_all(drivers.join("virtio")).unwrap();
    fs::create_dir_all(drivers.join("char")).unwrap();
    let write = |path: PathBuf, modinfo: &[u8]| fs::write(path, fake_module(modinfo)).unwrap();
    write(drivers.join("virtio/virtio.ko"), b"license=GPL\0depends=\0name=virtio\0");
    write(drivers.join("virtio/virtio_ring.ko"), b"depends=virtio\0name=virtio_ring\0");
    write(drivers.join("virtio/virtio_mmio.ko"), b"depends=virtio,virtio_ring\0name=virtio_mmio\0");
    write(drivers.join("char/virtio_console.ko"), b"depends=virtio_ring,virtio\0name=virtio_console\0");
    write(drivers.join("char/unused.ko"), b"depends=\0");

    let mut image = Initramfs::default();
    let order = image.modules(tree.path(), &["virtio-mmio", "virtio_console"]).unwrap();
    assert_eq!(order, ["virtio", "virtio_ring", "virtio_mmio", "virtio_console"]);
    let names: Vec<String> = read_back(&image.to_bytes()).into_iter().map(|entry| entry.0).collect();
    assert_eq!(
        names,
        [
            "lib",
            "lib/modules",
            "lib/modules/virtio.ko",
            "lib/modules/virtio_console.ko",
            "lib/modules/virtio_mmio.ko",
            "lib/modules/virtio_ring.ko"
        ]
    );

    let error = image.modules(tree.path(), &["virtio_blk"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "kernel module \"virtio_blk\" not found under {} (needed by the image's module list)",
            tree.path().display()
        )
    );
    write(drivers.join("char/needy.ko"), b"depends=virtio,missing_dep\0");
    let error = image.modules(tree.path(), &["needy"]).unwrap_err();
    assert!(
        error.to_string().contains("\"missing_dep\" not found") && error.to_string().ends_with("(needed by needy)")
    );
}

#[test]
fn a_file_that_is_not_a_module_is_refused() {
    assert!(module_depends(b"not an elf").unwrap_err().starts_with("not an ELF object"));
    let mut object = WriteObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = object.section_id(StandardSection::Text);
    object.append_section_data(text, &[0xc3], 1);
    assert_eq!(module_depends(&object.write().unwrap()).unwrap_err(), "no .modinfo section: not a kernel module");
}
