//! Mica's fuzz targets: one function per input surface that takes arbitrary bytes and must
//! neither panic nor hang, whatever they are (a parser that refuses them with an error is
//! right). libFuzzer drives them (`fuzz/libfuzzer`, `cargo xtask fuzz`); `cargo test` runs them
//! over [`seeds`] and the committed corpora and crash reproducers (`fuzz/corpus/TARGET/`,
//! `fuzz/regressions/TARGET/`), so every crash once found stays a regression test.
//!
//! The surfaces so far: the boot bundle and its manifest (what the kernel reads from the boot
//! module), the kernel command line, the boot protocols (PVH start info and its tables, the MP
//! table in low memory, the device tree), the pod protocol's frames (what the host and the
//! agent read from each other), and the key-value store's recovery from any disk.

use std::io::Cursor;

use kvstore::disk::{MemDisk, SECTOR_SIZE};
use kvstore::log::Store;
use mica_bundle::{Bundle, BundleWriter, EntryKind, SystemManifest};
use mica_kernel::aarch64_boot_protocol::boot_info::BootInfo;
use mica_kernel::cmdline::KernelArgs;
use mica_kernel::x86_64_boot_protocol::{mptable, pvh};
use mica_pod_proto::{GuestMsg, HostMsg, decode_payload, encode_frame, read_frame};

/// A fuzz target: takes any bytes; a panic is a finding.
pub type Target = fn(&[u8]);

/// Every target, by name (the name of its libFuzzer binary and corpus directory).
pub const TARGETS: [(&str, Target); 7] = [
    ("bundle", bundle),
    ("cmdline", cmdline),
    ("pvh", pvh),
    ("mp_table", mp_table),
    ("device_tree", device_tree),
    ("pod_frames", pod_frames),
    ("kv_recovery", kv_recovery),
];

/// The boot bundle: its directory, every entry's data (checksummed), the manifest entry, and
/// the same bytes as a manifest alone.
pub fn bundle(data: &[u8]) {
    if let Ok(bundle) = Bundle::parse(data) {
        for entry in bundle.entries() {
            let _ = entry.data();
        }
        if let Ok(Ok(manifest)) = bundle.manifest() {
            // What decodes must encode and decode to the same.
            let again = SystemManifest::decode(&manifest.encode()).expect("a decoded manifest re-encodes");
            assert_eq!(again, manifest, "a manifest changed through encode and decode");
        }
    }
    let _ = SystemManifest::decode(data);
}

/// The kernel command line (what the boot loader passes; the kernel reads it as text).
pub fn cmdline(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = KernelArgs::parse(line);
    }
}

/// PVH: the start info, a memory-map entry and a module entry from the same bytes.
pub fn pvh(data: &[u8]) {
    let _ = pvh::StartInfo::parse(data);
    let _ = pvh::MemoryEntry::parse(data);
    let _ = pvh::Module::parse(data);
}

/// Where the MP floating pointer is put in low memory (the BIOS area the kernel searches).
const MP_AT: u64 = 0xf_0000;

/// The MP table: `data` at 0xf0000 in otherwise zeroed low memory, searched as the kernel
/// searches it.
pub fn mp_table(data: &[u8]) {
    let mut low = vec![0u8; (mptable::LOW_END - mptable::LOW_BASE) as usize];
    let start = (MP_AT - mptable::LOW_BASE) as usize;
    let len = data.len().min(low.len() - start);
    low[start..start + len].copy_from_slice(&data[..len]);
    let _ = mptable::processors(&low);
}

/// The device tree, as the aarch64 kernel reads it from QEMU's `virt` (or a damaged one).
pub fn device_tree(data: &[u8]) {
    if let Ok(info) = BootInfo::parse(0x4000_0000, data) {
        let _ = info.summary().virtio_transports().count();
        let _ = info.boot_structures();
        let _ = info.record();
    }
}

/// The pod protocol: frames one after another as the host reads the agent's and the agent the
/// host's, and the bytes as one payload.
pub fn pod_frames(data: &[u8]) {
    let mut host_side = Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<GuestMsg>(&mut host_side) {}
    let mut guest_side = Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<HostMsg>(&mut guest_side) {}
    let _ = decode_payload::<GuestMsg>(data);
    let _ = decode_payload::<HostMsg>(data);
}

/// The key-value store's disk in sectors: enough for a header and some log.
const KV_SECTORS: usize = 16;

/// The key-value store opened on a disk holding `data` (zero-padded to [`KV_SECTORS`]): it must
/// open or refuse, never panic. When it opens, a write it acknowledges must be there after a
/// power cut, whatever the disk held before.
pub fn kv_recovery(data: &[u8]) {
    let mut image = data[..data.len().min(KV_SECTORS * SECTOR_SIZE)].to_vec();
    image.resize(KV_SECTORS * SECTOR_SIZE, 0);
    let Ok((mut store, _)) = Store::open(MemDisk::from_image(image), 1) else { return };
    if store.put("fuzz", "acknowledged").is_err() {
        return;
    }
    let after = store.disk().crashed();
    let (store, _) = Store::open(after, 2).expect("a store that acknowledged a write opens after a power cut");
    assert_eq!(store.get("fuzz"), Some("acknowledged"), "an acknowledged write was lost in a power cut");
}

/// Valid inputs to start each target from (the fuzzer mutates them), by target name.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "bundle" => {
            let mut writer = BundleWriter::new();
            let _ = writer.add(EntryKind::Wasm, "hello.wasm", b"\0asm\x0d\0\x01\0".to_vec());
            vec![writer.finish()]
        }
        "cmdline" => ["", "log=debug test=heap tick_hz=250 quiet", "virtio_mmio.device=512@0xfeb00e00:12 mica.x=y"]
            .map(|s| s.as_bytes().to_vec())
            .to_vec(),
        "pvh" => {
            let mut start = vec![0u8; pvh::START_INFO_SIZE];
            start[0..4].copy_from_slice(&pvh::START_INFO_MAGIC.to_le_bytes());
            start[4..8].copy_from_slice(&1u32.to_le_bytes());
            start[12..16].copy_from_slice(&1u32.to_le_bytes());
            start[48..52].copy_from_slice(&3u32.to_le_bytes());
            vec![start]
        }
        "mp_table" => vec![mp_table_bytes(&[(0, 3), (1, 1), (2, 0)])],
        "device_tree" => vec![include_bytes!("../../../kernel/src/arch/aarch64/testdata/virt-256m-2cpu.dtb").to_vec()],
        "pod_frames" => {
            let mut frames = Vec::new();
            for msg in [HostMsg::Hello, HostMsg::Ping { id: 7 }] {
                frames.extend(encode_frame(&msg).expect("encodes"));
            }
            let mut answers = encode_frame(&GuestMsg::Pong { id: 7 }).expect("encodes");
            answers.extend(
                encode_frame(&GuestMsg::Ready { agent_version: "0.1.0".into(), kernel_release: "6.1".into() })
                    .expect("encodes"),
            );
            vec![frames, answers]
        }
        "kv_recovery" => {
            // A store with two records, as the store itself writes it.
            let Ok((mut store, _)) = Store::open(MemDisk::new(KV_SECTORS as u64), 7) else { return Vec::new() };
            let written = store.put("colour", "blue").and_then(|()| store.put("shape", "round"));
            if written.is_err() {
                return Vec::new();
            }
            vec![store.disk().durable().to_vec(), Vec::new()]
        }
        _ => Vec::new(),
    }
}

/// An MP floating pointer at [`MP_AT`] followed by its configuration table listing `cpus`
/// (APIC id, flags: bit 0 enabled, bit 1 bootstrap).
fn mp_table_bytes(cpus: &[(u8, u8)]) -> Vec<u8> {
    let mut entries = Vec::new();
    for &(apic, flags) in cpus {
        let mut e = [0u8; 20];
        e[1] = apic;
        e[2] = 0x14;
        e[3] = flags;
        entries.extend_from_slice(&e);
    }
    let mut table = b"PCMP".to_vec();
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]);
    table.extend_from_slice(b"MICA    MICA-FUZZ   ");
    table.extend_from_slice(&[0; 6]);
    table.extend_from_slice(&(cpus.len() as u16).to_le_bytes());
    table.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    table.extend_from_slice(&[0; 4]);
    table.extend_from_slice(&entries);
    table[7] = table.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
    let mut floating = b"_MP_".to_vec();
    floating.extend_from_slice(&((MP_AT + 16) as u32).to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    floating[10] = floating.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
    floating.extend_from_slice(&table);
    floating
}
