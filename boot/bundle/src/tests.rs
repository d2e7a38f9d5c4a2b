//! Bundle round trips and corruption.

extern crate std;

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

fn native(artifact: &str) -> NativeCode {
    NativeCode {
        artifact: artifact.into(),
        wasmtime_version: "48.0.8".into(),
        target: "x86_64-unknown-none".into(),
        config_version: 2,
        fuel_instrumented: true,
        epochs_instrumented: false,
        cpu_features: vec!["sse4.1".into()],
    }
}

fn manifest() -> SystemManifest {
    SystemManifest {
        components: vec![ComponentSpec {
            name: "hello".into(),
            code: Code::Native(native("hello.cwasm")),
            args: vec!["a".into()],
            env: vec![("K".into(), "V".into())],
            memory_limit: 1 << 20,
            fuel: Some(5),
            cpu_time_limit_ms: None,
            restart: Restart::Never,
            grants: vec!["wasi:cli".into()],
            handles: 64,
            create_channels: false,
            priority: Priority::High,
            devices: vec!["virtio-blk.0".into()],
            dma_limit: 1 << 20,
            dirs: vec![DirGrant { path: "/data".into(), connection: "files".into(), read_only: true }],
            network: Some(NetworkGrant {
                connection: "sockets".into(),
                listen: vec![7, 8080],
                hosts: vec![("db".into(), "10.0.2.2".into())],
            }),
        }],
        connections: vec![Connection { name: "kv".into(), from: 0, to: 0 }],
        machine: vec![MachineDevice {
            kind: "virtio-blk".into(),
            disk: Some("/tmp/disk.img".into()),
            disk_size: 1 << 24,
            read_only: false,
            hostfwd: Vec::new(),
            output: None,
        }],
        compiler: Some(CompilerSpec { code: native("compiler.cwasm"), memory_limit: 1 << 28 }),
        module_store: Some(0),
    }
}

fn sample() -> Vec<u8> {
    let mut w = BundleWriter::new();
    w.add(EntryKind::Manifest, MANIFEST_ENTRY, manifest().encode()).expect("add");
    w.add(EntryKind::Artifact, "hello.cwasm", (0..1000u32).map(|i| i as u8).collect()).expect("add");
    w.add(EntryKind::Artifact, "empty", Vec::new()).expect("add");
    w.add(EntryKind::Wasm, "hello.wasm", b"\0asm\x0d\x00\x01\x00".to_vec()).expect("add");
    w.finish()
}

#[test]
fn round_trip() {
    let bytes = sample();
    let b = Bundle::parse(&bytes).expect("parses");
    assert_eq!(b.entries().len(), 4);
    assert_eq!(b.entry("hello.wasm").expect("present").kind, EntryKind::Wasm);
    assert_eq!(b.manifest().expect("entry").expect("decodes"), manifest());
    let a = b.entry("hello.cwasm").expect("present");
    assert_eq!(a.kind, EntryKind::Artifact);
    assert_eq!(a.data().expect("checksum").len(), 1000);
    assert!(b.entry("empty").expect("present").data().expect("ok").is_empty());
    assert_eq!(b.entry("nope").expect_err("missing"), BundleError::Missing("nope".into()));
}

#[test]
fn named_errors() {
    let mut bytes = sample();
    assert_eq!(
        Bundle::parse(&bytes[..10]).expect_err("short").to_string(),
        "boot bundle truncated: the header needs 32 bytes, 10 present"
    );
    let len = bytes.len();
    assert!(matches!(Bundle::parse(&bytes[..len - 1]), Err(BundleError::Truncated { what: "the bundle", .. })));
    bytes[9] = 2;
    assert_eq!(Bundle::parse(&bytes).expect_err("version"), BundleError::UnsupportedVersion(0x200 | VERSION));
    let mut bytes = sample();
    bytes[8] = 1;
    assert_eq!(
        Bundle::parse(&bytes).expect_err("version 1").to_string(),
        format!("boot bundle format version 1; this kernel reads version {VERSION}")
    );
    let mut bytes = sample();
    bytes[0] = b'X';
    assert_eq!(Bundle::parse(&bytes).expect_err("magic"), BundleError::BadMagic);
    let mut bytes = sample();
    // hello's data (bytes 0, 1, 2, ...), found where the writer put it.
    let hello = bytes.windows(64).position(|w| w.iter().enumerate().all(|(i, b)| *b == i as u8)).expect("hello's data");
    assert_eq!(hello % DATA_ALIGN, 0, "data is page-aligned");
    bytes[hello + 500] ^= 0xff;
    let b = Bundle::parse(&bytes).expect("table intact");
    let e = b.entry("hello.cwasm").expect("present").data().expect_err("corrupt");
    assert_eq!(e.to_string(), "boot bundle entry 'hello.cwasm' is corrupt or truncated (checksum mismatch)");
    let mut w = BundleWriter::new();
    w.add(EntryKind::Artifact, "a", vec![]).expect("add");
    assert_eq!(w.add(EntryKind::Artifact, "a", vec![]).expect_err("dup"), BundleError::DuplicateName("a".into()));
    assert!(w.add(EntryKind::Artifact, &"x".repeat(65), vec![]).is_err());
    assert!(SystemManifest::decode(b"\xff\xff\xff").is_err());
}

proptest! {
    #[test]
    fn corruption_is_an_error_never_a_panic(index in 0usize..2000, flip in 1u8..=255, cut in 0usize..2000) {
        let good = sample();
        let mut bytes = good.clone();
        let i = index % bytes.len();
        bytes[i] ^= flip;
        let detected = match Bundle::parse(&bytes) {
            Err(_) => true,
            Ok(b) => b.entries().iter().any(|e| e.data().is_err()) || b.manifest().map(|m| m.is_err()).unwrap_or(true),
        };
        // A flip in padding between entries changes nothing that is read.
        let in_padding = Bundle::parse(&good).map(|b| {
            !b.entries().iter().any(|e| {
                let start = e.data.as_ptr() as usize - good.as_ptr() as usize;
                (start..start + e.len()).contains(&i)
            }) && i >= HEADER_SIZE + b.entries().len() * ENTRY_SIZE
        }).unwrap_or(false);
        prop_assert!(detected || in_padding, "flip at {} not detected", i);
        let cut = cut % good.len();
        prop_assert!(Bundle::parse(&good[..cut]).is_err());
    }
}
