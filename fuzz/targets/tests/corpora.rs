//! Every fuzz target over its seeds, its committed corpus (`fuzz/corpus/TARGET/`) and its crash
//! reproducers (`fuzz/regressions/TARGET/`): what once crashed stays fixed.

use std::path::Path;

use mica_fuzz_targets::{TARGETS, seeds};

/// The files of `dir`, if it exists.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.path().display().to_string(), std::fs::read(e.path()).expect("readable")))
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_survives_its_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/");
    for (name, target) in TARGETS {
        let mut inputs: Vec<(String, Vec<u8>)> =
            seeds(name).into_iter().enumerate().map(|(i, s)| (format!("seed {i}"), s)).collect();
        assert!(!inputs.is_empty(), "target {name} has no seeds");
        inputs.extend(files(&fuzz.join("corpus").join(name)));
        inputs.extend(files(&fuzz.join("regressions").join(name)));
        for (what, input) in &inputs {
            if std::panic::catch_unwind(|| target(input)).is_err() {
                panic!("fuzz target {name} panicked on {what}");
            }
        }
    }
}

#[test]
fn seeds_are_accepted_where_they_should_be() {
    // The seeds are valid inputs: the fuzzer starts from parsed structures, not from refusals.
    let bundle = &seeds("bundle")[0];
    assert!(mica_bundle::Bundle::parse(bundle).is_ok());
    let mp = &seeds("mp_table")[0];
    let mut low = vec![0u8; 0x7_0000];
    low[0x6_0000..0x6_0000 + mp.len()].copy_from_slice(mp);
    assert_eq!(mica_kernel::x86_64_boot_protocol::mptable::processors(&low), Ok(vec![0, 1]));
    // The console seed brings the ports up: the guest's `hello` reaches the console's host side
    // and the host's input is taken into the receive buffer the guest posted.
    let ports = mica_fuzz_targets::vmm_console_run(&seeds("vmm_console")[0]);
    assert_eq!(ports[0].take_output(), b"hello");
    assert_eq!(ports[0].pending_input(), 0);
    assert!(ports[1].take_output().is_empty());
    let dtb = &seeds("device_tree")[0];
    assert!(mica_kernel::aarch64_boot_protocol::boot_info::BootInfo::parse(0x4000_0000, dtb).is_ok());
}

/// Writes every target's seeds to `fuzz/corpus/TARGET/seed-N` (run by hand when the seeds change:
/// `cargo test -p mica-fuzz-targets -- --ignored write_seeds`), so that libFuzzer starts from
/// them; `every_target_survives_its_corpus` runs them either way.
#[test]
#[ignore = "writes files: run by hand when the seeds change"]
fn write_seeds() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/").join("corpus");
    for (name, _) in TARGETS {
        let dir = corpus.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write");
        }
    }
}
