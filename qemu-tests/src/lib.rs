//! Mica's boot tests.
//!
//! Each [`Scenario`] boots the kernel named by `MICA_KERNEL` under QEMU and checks the verdict
//! (the `isa-debug-exit` code) and the serial output. Every scenario runs under TCG; under KVM,
//! [`plan`] decides per host: all scenarios when KVM is hardware-backed, only the smoke test when
//! it is a software KVM, none when `/dev/kvm` cannot be used. Trials that cannot run stay
//! visible: they are listed as ignored, and [`Plan::notes`] says why.
//!
//! The test binary (`tests/boot.rs`, libtest-mimic) is a thin shell over this library, so the
//! planning and checking logic is unit-tested here.
#![forbid(unsafe_code)]

pub mod aarch64;
pub mod chaos;
pub mod files;
pub mod http;
pub mod late;
pub mod live;
pub mod memory;
pub mod power_cut;
pub mod scenarios;
pub mod sockets;
pub mod std_sockets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mica_launch::{Accel, KvmProbe, OutputMode, QemuCommand, RunOptions};

pub use scenarios::{BundleUse, KvmUse, SCENARIOS, Scenario, Tamper};

/// The variable that names the kernel image to boot.
pub const KERNEL_ENV: &str = "MICA_KERNEL";
/// The variable that names the directory of boot bundles (`<system>.bundle`) that
/// `cargo xtask test` builds from `qemu-tests/systems/*.toml` and `components/default.toml`.
pub const BUNDLES_ENV: &str = "MICA_BUNDLES";
/// Guest memory for scenarios that run components, in MiB.
pub const SYSTEM_MEMORY_MIB: u32 = 256;
/// Host timeout per boot under TCG and hardware KVM.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Host timeout per boot under a software KVM, where guests run hundreds of times slower.
pub const SOFTWARE_KVM_TIMEOUT: Duration = Duration::from_secs(300);

/// The kernel image from `MICA_KERNEL`, or a message saying how to get one.
pub fn kernel_from_env() -> Result<PathBuf, String> {
    kernel_from(KERNEL_ENV)
}

/// The kernel image the environment variable `var` names, or a message saying how to get one.
pub fn kernel_from(var: &str) -> Result<PathBuf, String> {
    let how = "run the boot tests with `cargo xtask test`, which builds the kernels and sets it";
    let path = std::env::var_os(var).ok_or_else(|| format!("{var} is not set: {how}"))?;
    let path = PathBuf::from(path);
    if path.is_file() { Ok(path) } else { Err(format!("{var}={} is not a file: {how}", path.display())) }
}

/// One scenario under one accelerator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTrial {
    /// `tcg::panic`, `kvm::basic_boot`, ...
    pub name: String,
    /// What to boot and expect.
    pub scenario: Scenario,
    /// The accelerator.
    pub accel: Accel,
    /// The host timeout.
    pub timeout: Duration,
    /// Why this trial cannot run here (it is then listed as ignored).
    pub skip: Option<String>,
}

/// The trials for this host, and notes to print before running them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Every trial, runnable or not.
    pub trials: Vec<PlannedTrial>,
    /// One line per reason that some trials are skipped.
    pub notes: Vec<String>,
}

/// Decides which trials run on a host with KVM as `probe` describes.
pub fn plan(probe: &KvmProbe) -> Plan {
    let kvm_skip = |scenario: &Scenario| -> Option<String> {
        if let Some(why) = probe.unusable_reason() {
            return Some(format!("KVM cannot be used: {why}"));
        }
        match (probe.hardware(), scenario.kvm) {
            (true, _) | (false, KvmUse::Smoke) => None,
            (false, KvmUse::HardwareOnly) => {
                Some(format!("KVM here is {}, not hardware-backed: only the smoke test runs under it", probe.label()))
            }
        }
    };
    let kvm_timeout = if probe.hardware() { TIMEOUT } else { SOFTWARE_KVM_TIMEOUT };

    let tcg = SCENARIOS.iter().map(|scenario| PlannedTrial {
        name: format!("tcg::{}", scenario.name),
        scenario: *scenario,
        accel: Accel::Tcg,
        timeout: TIMEOUT,
        skip: None,
    });
    let kvm = SCENARIOS.iter().map(|scenario| PlannedTrial {
        name: format!("kvm::{}", scenario.name),
        scenario: *scenario,
        accel: Accel::Kvm,
        timeout: kvm_timeout,
        skip: kvm_skip(scenario),
    });
    let trials: Vec<_> = tcg.chain(kvm).collect();

    let mut notes: Vec<String> = Vec::new();
    for trial in &trials {
        if let Some(why) = &trial.skip
            && !notes.iter().any(|n| n.starts_with(why.as_str()))
        {
            let skipped: Vec<_> =
                trials.iter().filter(|t| t.skip.as_ref() == Some(why)).map(|t| t.name.as_str()).collect();
            notes.push(format!("{why}; ignored: {}", skipped.join(", ")));
        }
    }
    if probe.usable() && !probe.hardware() {
        notes.push(format!(
            "kvm::basic_boot runs under {} as a smoke test (timeout {} s)",
            probe.label(),
            SOFTWARE_KVM_TIMEOUT.as_secs()
        ));
    }
    Plan { trials, notes }
}

/// The bundle for `use_`, tampered with as it asks (written to a file in `scratch`).
pub fn bundle_path(use_: &BundleUse, scratch: &Path) -> Result<PathBuf, String> {
    bundle_path_in(&bundles_dir()?, use_, scratch)
}

/// Where `cargo xtask test` put the system bundles ([`BUNDLES_ENV`]).
pub fn bundles_dir() -> Result<PathBuf, String> {
    let how = "run the boot tests with `cargo xtask test`, which builds the system bundles";
    std::env::var_os(BUNDLES_ENV).map(PathBuf::from).ok_or_else(|| format!("{BUNDLES_ENV} is not set: {how}"))
}

/// [`bundle_path`] with the bundles in `dir`.
pub fn bundle_path_in(dir: &Path, use_: &BundleUse, scratch: &Path) -> Result<PathBuf, String> {
    let how = "run the boot tests with `cargo xtask test`, which builds the system bundles";
    let path = dir.join(format!("{}.bundle", use_.system));
    if !path.is_file() {
        return Err(format!("no bundle {}: {how}", path.display()));
    }
    let Some(tamper) = use_.tamper else { return Ok(path) };
    let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let out = scratch.join(format!("{}-{tamper:?}.bundle", use_.system));
    std::fs::write(&out, tamper_with(&bytes, tamper)?).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(out)
}

/// Applies `tamper` to the `victim` component of a bundle.
pub fn tamper_with(bytes: &[u8], tamper: Tamper) -> Result<Vec<u8>, String> {
    use mica_bundle::{Bundle, BundleWriter, EntryKind, MANIFEST_ENTRY};
    let bundle = Bundle::parse(bytes).map_err(|e| e.to_string())?;
    let mut manifest = bundle.manifest().map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let victim = manifest.components.iter_mut().find(|c| c.name == "victim").ok_or("no component `victim`")?;
    let mica_bundle::Code::Native(native) = &mut victim.code else {
        return Err("component `victim` is not compiled ahead of time".into());
    };
    let victim_entry = native.artifact.clone();
    if tamper == Tamper::CorruptArtifact {
        let entry = bundle.entry(&victim_entry).map_err(|e| e.to_string())?;
        let mut out = bytes.to_vec();
        out[entry.offset + entry.len() / 2] ^= 0x5a;
        return Ok(out);
    }
    match tamper {
        Tamper::OtherCpu => native.cpu_features.push("avx2".into()),
        Tamper::OtherWasmtime => native.wasmtime_version = "47.0.0".into(),
        Tamper::FuelWithoutInstrumentation => victim.fuel = Some(1_000_000),
        Tamper::FalseInstrumentation => native.fuel_instrumented = true,
        Tamper::TruncateArtifact | Tamper::CorruptArtifact => {}
    }
    let mut writer = BundleWriter::new();
    for entry in bundle.entries().iter().filter(|e| e.name != MANIFEST_ENTRY) {
        let mut data = entry.data().map_err(|e| e.to_string())?.to_vec();
        if tamper == Tamper::TruncateArtifact && entry.name == victim_entry {
            data.truncate(data.len() / 2);
        }
        writer.add(entry.kind, entry.name, data).map_err(|e| e.to_string())?;
    }
    writer.add(EntryKind::Manifest, MANIFEST_ENTRY, manifest.encode()).map_err(|e| e.to_string())?;
    Ok(writer.finish())
}

/// `cmd` booting the system in `bundle`, with the machine devices it asks for; its disk images
/// are `disk0.img`, `disk1.img`, ... (by device index) in `disks`, created when missing, and its
/// consoles write `console0.log`, ... there.
pub fn with_system(cmd: QemuCommand, bundle: &Path, disks: &Path) -> Result<QemuCommand, String> {
    with_system_devices(cmd, bundle, disks, |_| {})
}

/// [`with_system`], with each machine device changed by `adjust` first (a test's own port
/// forward, say).
pub fn with_system_devices(
    cmd: QemuCommand,
    bundle: &Path,
    disks: &Path,
    adjust: impl Fn(&mut mica_bundle::MachineDevice),
) -> Result<QemuCommand, String> {
    let mut machine = mica_launch::devices::of_bundle(bundle).map_err(|e| e.to_string())?;
    for (i, d) in machine.iter_mut().enumerate() {
        if d.disk.is_some() {
            d.disk = Some(disks.join(format!("disk{i}.img")).to_string_lossy().into_owned());
        }
        if d.output.is_some() {
            d.output = Some(disks.join(format!("console{i}.log")).to_string_lossy().into_owned());
        }
        adjust(d);
    }
    mica_launch::devices::prepare_disks(&machine).map_err(|e| e.to_string())?;
    let memory = mica_launch::devices::memory_mib(bundle, SYSTEM_MEMORY_MIB).map_err(|e| e.to_string())?;
    Ok(cmd.initrd(bundle).memory_mib(memory).extra_args(mica_launch::devices::qemu_args(&machine)))
}

/// Boots one trial and checks it.
pub fn run_trial(qemu: &Path, kernel: &Path, trial: &PlannedTrial) -> Result<(), String> {
    if let Some(why) = &trial.skip {
        return Err(format!("cannot run here: {why}"));
    }
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let mut features: Vec<&str> =
        mica_runtime::config::CpuProfile::baseline().features.iter().map(|f| f.name()).collect();
    let (removed, added): (Vec<&str>, Vec<&str>) = trial.scenario.cpu_features.iter().partition(|f| f.starts_with('-'));
    features.extend(added);
    // QEMU applies `-feature` after every `+feature`, whatever the order.
    let model = removed.iter().fold(mica_launch::cpu_model(&features), |model, f| format!("{model},{f}"));
    let mut cmd = QemuCommand::new(qemu, kernel, trial.accel).cmdline(trial.scenario.cmdline).cpu(model);
    if trial.scenario.cpus > 1 {
        cmd = cmd.extra_args(["-smp".to_string(), trial.scenario.cpus.to_string()]);
    }
    if let Some(use_) = &trial.scenario.bundle {
        // Every trial gets fresh disk images in its scratch directory.
        cmd = with_system(cmd, &bundle_path(use_, scratch.path())?, scratch.path())?;
    }
    let options = RunOptions { timeout: trial.timeout, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| format!("{e}\n{}", cmd.display()))?;
    check(&trial.scenario, &outcome).map_err(|why| format!("{why}\n{}\n{}", cmd.display(), outcome.transcript()))?;
    check_files(trial.scenario.files_contain, scratch.path(), &cmd, &outcome)
}

/// Whether each file in `dir` named by `files_contain` holds its text, after the run `outcome`
/// of `cmd` (both shown when one does not).
pub fn check_files(
    files_contain: &[(&str, &str)],
    dir: &Path,
    cmd: &QemuCommand,
    outcome: &mica_launch::Outcome,
) -> Result<(), String> {
    for (file, text) in files_contain {
        let content = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if !content.contains(text) {
            return Err(format!(
                "the run succeeded, but {file} lacks \"{text}\"; it holds:\n{content}\n{}\n{}",
                cmd.display(),
                outcome.transcript()
            ));
        }
    }
    Ok(())
}

/// Whether an outcome is what the scenario expects: the verdict first, then the output.
pub fn check(scenario: &Scenario, outcome: &mica_launch::Outcome) -> Result<(), String> {
    if outcome.verdict != Some(scenario.expect) {
        return Err(format!("expected kernel verdict {}, got: {}", scenario.expect.name(), outcome.describe()));
    }
    let missing: Vec<_> = scenario.output_contains.iter().filter(|s| !outcome.serial.contains(*s)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "verdict {} as expected, but the serial output lacks {}",
            scenario.expect.name(),
            missing.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mica_launch::{DevKvm, Ended, ExitCode, KvmBacking, Outcome};

    use super::*;

    fn probe(dev: DevKvm, backing: KvmBacking) -> KvmProbe {
        KvmProbe { dev, backing }
    }

    fn runnable(plan: &Plan) -> Vec<&str> {
        plan.trials.iter().filter(|t| t.skip.is_none()).map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn hardware_kvm_runs_everything_twice() {
        let plan = plan(&probe(DevKvm::Usable, KvmBacking::Hardware("kvm_intel")));
        assert_eq!(runnable(&plan).len(), 2 * SCENARIOS.len());
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
        assert!(plan.trials.iter().all(|t| t.timeout == TIMEOUT));
    }

    #[test]
    fn software_kvm_runs_only_the_smoke_test() {
        let plan = plan(&probe(DevKvm::Usable, KvmBacking::Software("kvm_pvm")));
        let kvm: Vec<_> = runnable(&plan).into_iter().filter(|n| n.starts_with("kvm::")).collect();
        assert_eq!(kvm, ["kvm::basic_boot"]);
        let smoke = plan.trials.iter().find(|t| t.name == "kvm::basic_boot").expect("planned");
        assert_eq!(smoke.timeout, SOFTWARE_KVM_TIMEOUT);
        assert!(plan.notes[0].contains("software KVM (kvm_pvm)"), "{:?}", plan.notes);
        assert!(plan.notes[0].contains("kvm::panic"), "{:?}", plan.notes);
        assert!(plan.trials.iter().any(|t| t.name == "kvm::panic" && t.skip.is_some()), "visible, ignored");
    }

    #[test]
    fn unusable_kvm_skips_every_kvm_trial_visibly() {
        let plan = plan(&probe(DevKvm::Missing, KvmBacking::Unknown));
        assert!(runnable(&plan).iter().all(|n| n.starts_with("tcg::")));
        assert_eq!(plan.trials.len(), 2 * SCENARIOS.len());
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(plan.notes[0].starts_with("KVM cannot be used: /dev/kvm does not exist"), "{:?}", plan.notes);
    }

    fn outcome(status: i32, serial: &str) -> Outcome {
        Outcome {
            ended: Ended::Exited(status),
            verdict: ExitCode::from_qemu_status(status),
            serial: serial.into(),
            stderr: String::new(),
            wall: Duration::from_millis(30),
            timeout: TIMEOUT,
        }
    }

    #[test]
    fn the_verdict_decides_and_substrings_add() {
        let page_fault = SCENARIOS.iter().find(|s| s.name == "page_fault").expect("scenario");
        let report = "EXCEPTION #PF (vector 14) error_code=0x0 CR2=0x7eedbeef0000 RIP=0x1234\n";
        assert_eq!(check(page_fault, &outcome(35, report)), Ok(()));

        let err = check(page_fault, &outcome(33, report)).expect_err("wrong verdict");
        assert!(err.contains("expected kernel verdict failed"), "{err}");

        let err =
            check(page_fault, &outcome(35, "KERNEL PANIC at kernel/src/x.rs:1:1: oops\n")).expect_err("wrong reason");
        assert!(err.contains("lacks \"EXCEPTION #PF\""), "{err}");

        let mut timed_out = outcome(0, "");
        timed_out.ended = Ended::TimedOut;
        timed_out.verdict = None;
        let err = check(page_fault, &timed_out).expect_err("no verdict");
        assert!(err.contains("timed out"), "{err}");
    }
}
