//! Late binding: a bundle that carries wasm and the compiler component boots, and the kernel
//! compiles each distinct component (per instrumentation) once, for the CPU QEMU presents, before
//! it runs it; a malformed component's compile fails with the reason while the others run.

use std::path::Path;

use mica_launch::{Accel, OutputMode, QemuCommand, RunOptions};

use crate::{BundleUse, TIMEOUT, bundle_path, with_system};

/// The system: `qemu-tests/systems/compile-late.toml`.
const SYSTEM: &str = "compile-late";

/// The system with a module store: `qemu-tests/systems/store-late.toml`.
const STORE_SYSTEM: &str = "store-late";

/// One `mica: component NAME: compiled in N ms for TARGET cpu-FEATURES instrument-I (...)` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The component it was compiled for (the first of those that share its wasm).
    pub name: String,
    /// The target.
    pub target: String,
    /// The CPU features, comma-separated.
    pub cpu: String,
    /// The instrumentation.
    pub instrumentation: String,
    /// The artifact's CRC-32.
    pub crc32: Option<u32>,
}

/// Every compile the kernel reported in `serial`, in order.
pub fn compiles(serial: &str) -> Vec<Compiled> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("mica: component ")?;
            let (name, rest) = rest.split_once(": compiled in ")?;
            let rest = rest.split_once(" ms for ")?.1;
            let mut words = rest.split_whitespace();
            let target = words.next()?.to_owned();
            let cpu = words.next()?.strip_prefix("cpu-")?.to_owned();
            let instrumentation = words.next()?.strip_prefix("instrument-")?.to_owned();
            let crc32 =
                rest.split_once("crc32 ").and_then(|(_, hex)| u32::from_str_radix(hex.trim_end_matches(')'), 16).ok());
            Some(Compiled { name: name.to_owned(), target, cpu, instrumentation, crc32 })
        })
        .collect()
}

/// Checks that the compiles in `serial` are exactly the `expected` (name, instrumentation) pairs,
/// each for `target` and the CPU features `cpu`.
pub fn check_compiles(serial: &str, expected: &[(&str, &str)], target: &str, cpu: &str) -> Result<(), String> {
    let found = compiles(serial);
    let mut got: Vec<(&str, &str)> = found.iter().map(|c| (c.name.as_str(), c.instrumentation.as_str())).collect();
    let mut want = expected.to_vec();
    got.sort();
    want.sort();
    if got != want {
        return Err(format!("expected compiles {want:?}, the kernel reported {got:?}"));
    }
    if let Some(other) = found.iter().find(|c| c.target != target || c.cpu != cpu) {
        return Err(format!(
            "{} was compiled for {} cpu-{}, not {target} cpu-{cpu}",
            other.name, other.target, other.cpu
        ));
    }
    Ok(())
}

/// The CRC-32 of the artifact the host's AOT compiler makes from the bundle's wasm entry `entry`
/// for the kernel target and `cpu`, without instrumentation.
fn host_artifact_crc(bundle: &Path, entry: &str, cpu: &mica_engine::CpuProfile) -> Result<u32, String> {
    let bytes = std::fs::read(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let bundle = mica_bundle::Bundle::parse(&bytes).map_err(|e| e.to_string())?;
    let wasm = bundle.entry(entry).and_then(|e| e.data()).map_err(|e| e.to_string())?;
    let config = mica_engine::compile_config(mica_engine::KERNEL_TARGET, mica_engine::Instrumentation::NONE, cpu)
        .map_err(|e| e.to_string())?;
    let engine = mica_runtime::wasmtime::Engine::new(&config).map_err(|e| format!("{e:#}"))?;
    let artifact = engine.precompile_component(wasm).map_err(|e| format!("compiling {entry} on the host: {e:#}"))?;
    Ok(mica_bundle::checksum(&artifact))
}

/// Boots the late-binding system under TCG and checks what was compiled and how each ended.
pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let baseline = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = baseline.features.iter().map(|f| f.name()).collect();
    let cmd = QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features));
    let bundle = bundle_path(&BundleUse { system: SYSTEM, tamper: None }, scratch.path())?;
    let cmd = with_system(cmd, &bundle, scratch.path())?;
    let options = RunOptions { timeout: TIMEOUT * 5, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| e.to_string())?;
    let context = || format!("{}\n{}", cmd.display(), outcome.transcript());
    // `malformed` and `spinner-fuel` fail, so the verdict is failure; each must end as it should.
    if outcome.verdict != Some(mica_exit::ExitCode::Failed) {
        return Err(format!(
            "expected the verdict failed (malformed cannot run): {}\n{}",
            outcome.describe(),
            context()
        ));
    }
    for line in [
        "[hello] hello from a Mica component",
        "[hello] args: [\"hello\", \"x\", \"y\"]",
        "mica: component hello exited with status 0",
        "[count] count 2",
        "mica: component count exited with status 0",
        "[count-again] count 3",
        "mica: component count-again exited with status 0",
        "mica: component spinner-fuel exceeded its CPU limit: all 200000000 units of fuel used",
        "mica: component malformed refused: compiling it failed: not a valid component:",
        "mica: all components finished: 3 of 5 succeeded",
    ] {
        if !outcome.serial.contains(line) {
            return Err(format!("the output lacks \"{line}\"\n{}", context()));
        }
    }
    // hello, testkit without instrumentation (count and count-again share it) and testkit with
    // fuel counting (spinner-fuel): three compiles, all for the CPU QEMU presents.
    // Which of count and count-again compiled depends on which thread got to the compiler first;
    // the other loads what it compiled (still loaded, or kept for the boot), so exactly one of
    // them compiles.
    let first = if outcome.serial.contains("mica: component count: compiled in ") { "count" } else { "count-again" };
    check_compiles(
        &outcome.serial,
        &[("hello", "none"), (first, "none"), ("spinner-fuel", "fuel")],
        mica_runtime::config::KERNEL_TARGET,
        &baseline.feature_list(),
    )
    .map_err(|e| format!("{e}\n{}", context()))?;
    // The system's compiler makes, byte for byte, what the host's AOT compiler makes.
    let in_system = compiles(&outcome.serial).into_iter().find(|c| c.name == "hello").and_then(|c| c.crc32);
    let on_host = host_artifact_crc(&bundle, "hello.wasm", &baseline)?;
    if in_system != Some(on_host) {
        return Err(format!(
            "hello's artifact compiled in the system (crc32 {in_system:08x?}) differs from the host's AOT \
             compile of the same wasm (crc32 {on_host:08x})\n{}",
            context()
        ));
    }
    let times: Vec<String> = outcome
        .serial
        .lines()
        .filter(|l| l.contains(": compiled in "))
        .filter_map(|l| l.strip_prefix("mica: component "))
        .map(str::to_owned)
        .collect();
    Ok(times.join("; "))
}

/// The QEMU command (TCG, CPU `features`) that boots `bundle` with its disks in `scratch`.
fn tcg_system(
    qemu: &Path,
    kernel: &Path,
    bundle: &Path,
    scratch: &Path,
    features: &[&str],
) -> Result<QemuCommand, String> {
    with_system(QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(features)), bundle, scratch)
}

/// Lines of `serial` that start with `prefix`, as a count.
fn count_lines(serial: &str, prefix: &str, contains: &str) -> usize {
    serial.lines().filter(|l| l.starts_with(prefix) && l.contains(contains)).count()
}

/// Boots the module-store system from `bundle` on the disk in `scratch` under TCG with CPU
/// `features`; returns the serial output of a run that succeeded.
fn boot_store(qemu: &Path, kernel: &Path, bundle: &Path, scratch: &Path, features: &[&str]) -> Result<String, String> {
    let cmd = tcg_system(qemu, kernel, bundle, scratch, features)?;
    let options = RunOptions { timeout: TIMEOUT * 5, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| e.to_string())?;
    let context = format!("{}\n{}", cmd.display(), outcome.transcript());
    if outcome.verdict != Some(mica_exit::ExitCode::Success) {
        return Err(format!("expected success: {}\n{context}", outcome.describe()));
    }
    for line in [
        "[hello] hello from a Mica component",
        "[count] count 2",
        "mica: module store: component modstore; components compiled at boot: 2",
        "modstore: the kernel is done;",
        "mica: all components finished: 4 of 4 succeeded",
    ] {
        if !outcome.serial.contains(line) {
            return Err(format!("the output lacks \"{line}\"\n{context}"));
        }
    }
    Ok(outcome.serial)
}

/// The first record on the module store's disk image at `path` whose key contains `contains`: its
/// data's first byte offset in the image.
fn entry_data_offset(path: &Path, contains: &str) -> Result<u64, String> {
    let image = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    store_log(&image)
        .into_iter()
        .find(|(key, _, _)| key.contains(contains))
        .map(|(_, sector, _)| (sector + 1) * 512)
        .ok_or_else(|| format!("no module-store record with {contains:?} in its key in {}", path.display()))
}

/// Boots the module-store system four times on one disk: the first boot compiles and stores, the
/// second compiles nothing, one with AVX2 compiles again beside the old entries (the next
/// baseline boot still compiles nothing), and a damaged entry is named and compiled again.
pub fn run_store(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let bundle = bundle_path(&BundleUse { system: STORE_SYSTEM, tamper: None }, scratch.path())?;
    let baseline = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = baseline.features.iter().map(|f| f.name()).collect();
    let target = mica_runtime::config::KERNEL_TARGET;
    let expect = |serial: &str, compiles: &[(&str, &str)], cpu: &str, hits: usize, what: &str| {
        check_compiles(serial, compiles, target, cpu).map_err(|e| format!("{what}: {e}\n{serial}"))?;
        let kept = count_lines(serial, "mica: component ", ": kept in the module store");
        let found = count_lines(serial, "mica: component ", ": native code from the module store");
        if kept != compiles.len() || found != hits {
            return Err(format!(
                "{what}: expected {} kept and {hits} found in the store, got {kept} and {found}\n{serial}",
                compiles.len()
            ));
        }
        Ok(())
    };
    let none = "none";
    let first = boot_store(qemu, kernel, &bundle, scratch.path(), &features)?;
    if !first.contains("modstore: formatted a blank disk of 32768 sectors") {
        return Err(format!("the first boot did not format the store's disk\n{first}"));
    }
    expect(&first, &[("hello", none), ("count", none)], &baseline.feature_list(), 0, "first boot")?;
    let second = boot_store(qemu, kernel, &bundle, scratch.path(), &features)?;
    expect(&second, &[], &baseline.feature_list(), 2, "second boot")?;
    if !second.contains("modstore: opened: 2 entries (2 records)") {
        return Err(format!("second boot: the store does not hold the two entries\n{second}"));
    }
    // Another CPU: compiled again for it, beside the baseline entries.
    let mut avx2 = features.clone();
    avx2.extend(["avx", "avx2"]);
    let other = mica_runtime::config::CpuProfile::new(
        "avx2",
        baseline
            .features
            .iter()
            .copied()
            .chain([mica_runtime::config::CpuFeature::Avx, mica_runtime::config::CpuFeature::Avx2]),
    );
    let third = boot_store(qemu, kernel, &bundle, scratch.path(), &avx2)?;
    expect(&third, &[("hello", none), ("count", none)], &other.feature_list(), 0, "boot with AVX2")?;
    let fourth = boot_store(qemu, kernel, &bundle, scratch.path(), &features)?;
    expect(&fourth, &[], &baseline.feature_list(), 2, "baseline boot after the AVX2 one")?;
    if !fourth.contains("modstore: opened: 4 entries (4 records)") {
        return Err(format!("the baseline and AVX2 entries are not side by side\n{fourth}"));
    }
    // Damage the first baseline entry's data: named, compiled again, kept again.
    let disk = scratch.path().join("disk0.img");
    let at = entry_data_offset(&disk, &format!("cpu-{}", baseline.feature_list()))?;
    let mut image = std::fs::read(&disk).map_err(|e| e.to_string())?;
    image[at as usize + 100] ^= 0xff;
    std::fs::write(&disk, &image).map_err(|e| e.to_string())?;
    let fifth = boot_store(qemu, kernel, &bundle, scratch.path(), &features)?;
    let refused = count_lines(&fifth, "mica: component ", ": module store entry refused: entry ");
    let recompiled = compiles(&fifth);
    if refused != 1 || recompiled.len() != 1 || !fifth.contains("is corrupt: its ") {
        return Err(format!(
            "after damaging an entry: expected it named corrupt once and compiled again, got {refused} refusal(s) \
             and {} compile(s)\n{fifth}",
            recompiled.len()
        ));
    }
    expect(&fifth, &[(recompiled[0].name.as_str(), none)], &baseline.feature_list(), 1, "boot after the damage")?;
    let times: Vec<String> = compiles(&first).iter().map(|c| c.name.clone()).collect();
    Ok(format!(
        "first boot compiled {}; second boot 0 compiles, 2 store hits; AVX2 boot compiled 2 beside them; damaged \
         entry of {} named and recompiled",
        times.join(" and "),
        recompiled[0].name
    ))
}

/// The module store's log on the disk image `image`: each record's key, first sector and
/// sectors taken (record and data), in log order, as far as records follow one another.
fn store_log(image: &[u8]) -> Vec<(String, u64, u64)> {
    let mut log = Vec::new();
    let mut sector = 1usize;
    while (sector + 1) * 512 <= image.len() {
        let record = &image[sector * 512..(sector + 1) * 512];
        if &record[0..4] != b"MMR1" {
            break;
        }
        let len = u64::from_le_bytes(record[12..20].try_into().expect("8 bytes"));
        let key_len = usize::from(u16::from_le_bytes([record[24], record[25]]));
        let key = String::from_utf8_lossy(&record[26..26 + key_len.min(400)]).into_owned();
        let taken = 1 + len.div_ceil(512);
        log.push((key, sector as u64, taken));
        sector += taken as usize;
    }
    log
}

/// Eviction: the store system boots on a fresh disk with the baseline CPU (two entries kept),
/// then the disk is cut down to just past its log, so that it holds one CPU's entries but not
/// two. A boot with AVX2 compiles again, and the store evicts the baseline entries (no manifest
/// of this boot references them) to keep the new ones; the next AVX2 boot finds both.
pub fn run_store_eviction(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let bundle = bundle_path(&BundleUse { system: STORE_SYSTEM, tamper: None }, scratch.path())?;
    let baseline = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = baseline.features.iter().map(|f| f.name()).collect();
    let first = boot_store(qemu, kernel, &bundle, scratch.path(), &features)?;
    if count_lines(&first, "mica: component ", ": kept in the module store") != 2 {
        return Err(format!("the first boot did not keep two entries\n{first}"));
    }
    let disk = scratch.path().join("disk0.img");
    let mut image = std::fs::read(&disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    let log = store_log(&image);
    let [(_, _, a), (_, _, b)] = log.as_slice() else {
        return Err(format!("expected two records on the disk after the first boot, found {log:?}"));
    };
    let end = 1 + a + b;
    // Room for this log and half the smaller entry more: the next CPU's first entry does not fit
    // beside these, and its two fit once these are gone.
    let sectors = end + a.min(b) / 2;
    image.truncate(usize::try_from(sectors * 512).map_err(|e| e.to_string())?);
    std::fs::write(&disk, &image).map_err(|e| e.to_string())?;
    let mut avx2 = features.clone();
    avx2.extend(["avx", "avx2"]);
    let second = boot_store(qemu, kernel, &bundle, scratch.path(), &avx2)?;
    let compiled = compiles(&second).len();
    let kept = count_lines(&second, "mica: component ", ": kept in the module store");
    let evicted = "; evicted 2 entries no manifest references, kept 0 (";
    if compiled != 2 || kept != 2 || count_lines(&second, "[modstore] modstore: stored ", evicted) != 1 {
        return Err(format!(
            "on a disk of {sectors} sectors holding the baseline entries ({end} sectors): expected the AVX2 boot to \
             compile 2, evict the 2 baseline entries once and keep both of its own; it compiled {compiled} and kept \
             {kept}\n{second}"
        ));
    }
    if !second.contains("[modstore] modstore: the system references 2 entries; kept when full") {
        return Err(format!("the kernel did not name the entries it references\n{second}"));
    }
    let third = boot_store(qemu, kernel, &bundle, scratch.path(), &avx2)?;
    let hits = count_lines(&third, "mica: component ", ": native code from the module store");
    if !compiles(&third).is_empty() || hits != 2 || !third.contains("modstore: opened: 2 entries (2 records)") {
        return Err(format!("the AVX2 boot after the eviction: expected 0 compiles and 2 hits, got {hits}\n{third}"));
    }
    Ok(format!(
        "disk cut to {sectors} sectors ({end} held the baseline pair): the AVX2 boot evicted both and kept its own, the \
         next found them"
    ))
}

/// The system whose bundle holds no native code but the compiler's:
/// `qemu-tests/systems/nonative-late.toml`.
const NO_NATIVE_SYSTEM: &str = "nonative-late";

/// Checks that the bundle at `path` carries wasm for every component, Pulley bytecode (for
/// `pulley_first`, and only for them) and no native code but the compiler component's.
fn check_no_native(path: &Path, pulley_first: &[&str]) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bundle = mica_bundle::Bundle::parse(&bytes).map_err(|e| e.to_string())?;
    let manifest = bundle.manifest().map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let compiler = manifest.compiler.ok_or("the bundle has no compiler component")?;
    if compiler.code.target != mica_engine::KERNEL_TARGET {
        return Err(format!("the compiler's code is for {}", compiler.code.target));
    }
    for c in &manifest.components {
        match &c.code {
            mica_bundle::Code::Native(native) => {
                return Err(format!("component {} carries native code for {}", c.name, native.target));
            }
            mica_bundle::Code::Wasm { pulley: Some(p), .. } if p.target != mica_engine::PULLEY_TARGET => {
                return Err(format!("component {}'s start code is for {}, not Pulley", c.name, p.target));
            }
            mica_bundle::Code::Wasm { pulley, .. } if pulley.is_some() != pulley_first.contains(&c.name.as_str()) => {
                return Err(format!(
                    "component {}: Pulley bytecode {}",
                    c.name,
                    if pulley.is_some() { "carried" } else { "missing" }
                ));
            }
            mica_bundle::Code::Wasm { .. } => {}
        }
    }
    Ok(())
}

/// A bundle with no native code but the compiler's boots a system of drivers and components:
/// the module store and its block driver start on Pulley bytecode while the system compiles
/// them (and the rest waits for its native code); the second boot compiles nothing and finds all
/// five in the store, the store and its driver included (native from their next start).
pub fn run_no_native(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let bundle = bundle_path(&BundleUse { system: NO_NATIVE_SYSTEM, tamper: None }, scratch.path())?;
    let on_pulley = ["blk", "modstore"];
    check_no_native(&bundle, &on_pulley)?;
    let baseline = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = baseline.features.iter().map(|f| f.name()).collect();
    let cmd = tcg_system(qemu, kernel, &bundle, scratch.path(), &features)?;
    let options = RunOptions { timeout: TIMEOUT * 5, output: OutputMode::Capture { echo: false } };
    let names = ["blk", "modstore", "rng", "entropy-client", "hello"];
    let boot = |what: &str| -> Result<String, String> {
        let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| e.to_string())?;
        let context = format!("{what}: {}\n{}", cmd.display(), outcome.transcript());
        if outcome.verdict != Some(mica_exit::ExitCode::Success) {
            return Err(format!("expected success: {}\n{context}", outcome.describe()));
        }
        let mut lines = vec![
            String::from("[entropy-client] entropy: 2 x 64 bytes, distinct"),
            String::from("[hello] hello from a Mica component"),
            String::from("mica: all components finished: 5 of 5 succeeded"),
        ];
        for name in on_pulley {
            lines.push(format!(
                "mica: component {name}: starts on Pulley bytecode (interpreted) while its native code is made"
            ));
            lines.push(format!("mica: component {name}: native code ready; it runs from its next start"));
        }
        if let Some(line) = lines.iter().find(|l| !outcome.serial.contains(l.as_str())) {
            return Err(format!("the output lacks \"{line}\"\n{context}"));
        }
        Ok(outcome.serial)
    };
    let first = boot("first boot")?;
    let expected: Vec<(&str, &str)> = names.iter().map(|n| (*n, "none")).collect();
    check_compiles(&first, &expected, mica_engine::KERNEL_TARGET, &baseline.feature_list())
        .map_err(|e| format!("first boot: {e}\n{first}"))?;
    let kept = count_lines(&first, "mica: component ", ": kept in the module store");
    if kept != names.len() {
        return Err(format!("first boot: {kept} of {} kept in the module store\n{first}", names.len()));
    }
    let second = boot("second boot")?;
    let hits = count_lines(&second, "mica: component ", ": native code from the module store");
    if !compiles(&second).is_empty() || hits != names.len() {
        return Err(format!(
            "second boot: expected 0 compiles and {} store hits, got {} and {hits}\n{second}",
            names.len(),
            compiles(&second).len()
        ));
    }
    Ok(format!(
        "no native code but the compiler's: first boot compiled {}, second boot found all in the store",
        names.len()
    ))
}

/// Cuts power while the module store writes: boots the store system on a fresh disk, kills QEMU
/// (SIGKILL) a random 0 to 1499 ms after the first compile line (the put of that code follows at
/// once and takes a few hundred ms under TCG, so the cut falls during it or after), then boots
/// again on the same disk. The store must open, the system must succeed, and
/// every component whose code the first boot reported kept must now come from the store. The
/// seed is printed (`MICA_POWER_CUT_SEED=N` repeats one).
pub fn run_store_power_cut(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let seed: u64 = match std::env::var(crate::power_cut::SEED_ENV) {
        Ok(v) => v.parse().map_err(|_| format!("{}={v} is not a number", crate::power_cut::SEED_ENV))?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    };
    let delay = std::time::Duration::from_millis(seed % 1500);
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let bundle = bundle_path(&BundleUse { system: STORE_SYSTEM, tamper: None }, scratch.path())?;
    let baseline = mica_runtime::config::CpuProfile::baseline();
    let features: Vec<&str> = baseline.features.iter().map(|f| f.name()).collect();
    let cmd = tcg_system(qemu, kernel, &bundle, scratch.path(), &features)?;
    let mut guest = crate::live::LiveGuest::spawn(&cmd)?;
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    if let Err(e) = guest.wait_for(": compiled in ", deadline) {
        guest.kill();
        return Err(format!("the first boot compiled nothing before the cut (seed {seed}): {e}\n{}", guest.console));
    }
    std::thread::sleep(delay);
    guest.kill();
    let kept: Vec<String> = guest
        .console
        .lines()
        .filter_map(|l| l.strip_prefix("mica: component ")?.strip_suffix(": kept in the module store"))
        .map(str::to_owned)
        .collect();
    let after = boot_store(qemu, kernel, &bundle, scratch.path(), &features)
        .map_err(|e| format!("after the cut ({delay:?} after the first compile, seed {seed}): {e}"))?;
    for name in &kept {
        let hit = format!("mica: component {name}: native code from the module store");
        if !after.contains(&hit) {
            return Err(format!(
                "{name}'s code was reported kept before the cut (seed {seed}), but the next boot did not find it\n{after}"
            ));
        }
    }
    let torn = if after.contains("discarded a torn record") { "; a torn record was discarded" } else { "" };
    Ok(format!(
        "cut {delay:?} after the first compile (seed {seed}): {} entr(ies) acknowledged before the cut, all found; \
         the next boot compiled {}{torn}",
        kept.len(),
        compiles(&after).len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_lines_are_read_and_checked() {
        let serial = "mica: component a: compiled in 12 ms for x86_64-unknown-none cpu-sse3,popcnt instrument-none \
                      (10 KiB wasm, 40 KiB native, crc32 0000beef)\nother\nmica: component b: compiled in 3 ms for \
                      x86_64-unknown-none cpu-sse3,popcnt instrument-fuel (1 KiB wasm, 2 KiB native)\n";
        let found = compiles(serial);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].crc32, None);
        assert_eq!(
            found[0],
            Compiled {
                name: "a".into(),
                target: "x86_64-unknown-none".into(),
                cpu: "sse3,popcnt".into(),
                instrumentation: "none".into(),
                crc32: Some(0xbeef),
            }
        );
        let target = "x86_64-unknown-none";
        assert!(check_compiles(serial, &[("b", "fuel"), ("a", "none")], target, "sse3,popcnt").is_ok());
        assert!(check_compiles(serial, &[("a", "none")], target, "sse3,popcnt").is_err());
        assert!(check_compiles(serial, &[("a", "none"), ("b", "none")], target, "sse3,popcnt").is_err());
        let e = check_compiles(serial, &[("a", "none"), ("b", "fuel")], target, "sse3").expect_err("other CPU");
        assert!(e.contains("a was compiled for x86_64-unknown-none cpu-sse3,popcnt"), "{e}");
    }
}
