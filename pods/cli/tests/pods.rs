//! Legacy pods end to end: the real `mica` binary boots Debian's kernel with the pod initramfs
//! (`cargo xtask pod-image`) under QEMU, execs into it, reads its logs, stops it, survives being
//! killed half-way through `run`, and keeps secrets read-only. The same runs again on mica-vmm
//! where it can (hardware KVM); elsewhere the tests say so, and check that mica-vmm refuses the
//! pod clearly.
//!
//! `cargo xtask test` builds the pod image and passes it in `MICA_POD_KERNEL` and
//! `MICA_POD_INITRAMFS`; without them (a plain `cargo test`) these tests say so and pass
//! without booting anything.
#![allow(clippy::unwrap_used, reason = "test helpers: a failed setup step should fail the test loudly")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pod image, or `None` (with the reason printed) when this run has none.
fn image() -> Option<(PathBuf, PathBuf)> {
    match (std::env::var_os("MICA_POD_KERNEL"), std::env::var_os("MICA_POD_INITRAMFS")) {
        (Some(kernel), Some(initramfs)) => Some((kernel.into(), initramfs.into())),
        _ => {
            eprintln!("skipped: MICA_POD_KERNEL/MICA_POD_INITRAMFS are not set (run `cargo xtask test`)");
            None
        }
    }
}

/// Whether this host has hardware KVM, which mica-vmm needs for a stock Linux kernel.
fn hardware_kvm() -> bool {
    mica_launch::KvmProbe::detect().hardware()
}

/// The backends that can run a Linux pod here: QEMU always, mica-vmm on hardware KVM (when it
/// cannot, that is printed).
fn backends() -> Vec<&'static str> {
    if hardware_kvm() {
        vec!["qemu", "mica-vmm"]
    } else {
        let probe = mica_launch::KvmProbe::detect();
        eprintln!("mica-vmm pods SKIPPED: they need hardware KVM, and this host has {}", probe.label());
        vec!["qemu"]
    }
}

/// Pod tests boot one guest at a time: TCG guests on a small machine starve each other (Linux
/// then fails to calibrate its clocks and boots far slower).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One test's world: its own state directory and spec files.
struct World {
    _turn: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    kernel: PathBuf,
    initramfs: PathBuf,
}

impl World {
    fn new() -> Option<World> {
        let (kernel, initramfs) = image()?;
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(World { _turn: turn, dir: tempfile::tempdir().unwrap(), kernel, initramfs })
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a spec for pod `name` with `extra` TOML lines; its path.
    fn spec(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        let memory = if extra.contains("memory_mib") { "" } else { "memory_mib = 256\n" };
        let text = format!(
            "name = \"{name}\"\nkernel = \"{}\"\ninitramfs = \"{}\"\n{memory}{extra}\n",
            self.kernel.display(),
            self.initramfs.display()
        );
        fs::write(&path, text).unwrap();
        path
    }

    fn mica(&self, args: &[&str]) -> Output {
        self.mica_with(args, None)
    }

    fn mica_with(&self, args: &[&str], fault: Option<&str>) -> Output {
        self.mica_env(args, &[("MICA_POD_FAULT", fault)])
    }

    /// Runs `mica` with `env` set (`None`: removed).
    fn mica_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mica"));
        cmd.args(args).env("MICA_STATE_DIR", self.state()).env_remove("MICA_POD_FAULT");
        cmd.env_remove("MICA_POD_ALLOW_SOFTWARE_KVM");
        for (name, value) in env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.output().unwrap()
    }

    /// Runs `mica` and expects success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.mica(args);
        assert!(out.status.success(), "mica {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Processes whose command line names this world's state directory.
    fn processes(&self) -> Vec<u32> {
        processes_naming(&self.state())
    }

    fn pod_dirs(&self) -> Vec<String> {
        match fs::read_dir(self.state().join("pods")) {
            Ok(entries) => {
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Never leave a QEMU behind, whatever the test did.
        for pid in self.processes() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Live (non-zombie) processes whose command line contains `needle`.
fn processes_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !zombie && String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_debian_pod_runs_execs_logs_and_stops() {
    let Some(world) = World::new() else { return };
    for backend in backends() {
        a_debian_pod_on(&world, backend);
    }
}

fn a_debian_pod_on(world: &World, backend: &str) {
    let spec = world.spec("deb", &format!("backend = \"{backend}\"\nenv = {{ GREETING = \"hi there\" }}"));
    let run = world.ok(&["pod", "run", spec.to_str().unwrap()]);
    assert!(run.starts_with(&format!("pod deb running: {backend} with ")), "{run}");

    let list = world.ok(&["pod", "list"]);
    let row = list.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("deb ") && row.split_whitespace().nth(1) == Some(backend), "{list}");

    let uname = world.ok(&["pod", "exec", "deb", "--", "uname", "-a"]);
    assert!(uname.starts_with("Linux deb ") && uname.contains("cloud-amd64"), "{uname}");

    let out = world.mica(&["pod", "exec", "deb", "--", "sh", "-c", "echo \"$GREETING\"; echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let out = world.mica(&["pod", "exec", "deb", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"no-such-program\""), "{}", text(&out));

    let logs = world.ok(&["pod", "logs", "deb"]);
    assert!(logs.contains("Linux version") && logs.contains("mica-init: pod deb up"), "{logs}");

    let out = world.mica(&["pod", "run", spec.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a pod named \"deb\" is already running"), "{}", text(&out));

    let stop = world.ok(&["pod", "stop", "deb"]);
    assert_eq!(stop, "pod deb powered off and removed\n");
    assert!(world.processes().is_empty(), "{backend} left behind: {:?}", world.processes());
    assert!(world.pod_dirs().is_empty(), "{:?}", world.pod_dirs());
    let out = world.mica(&["pod", "exec", "deb", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pod named \"deb\" is running"), "{}", text(&out));
}

#[test]
fn secrets_are_readable_and_read_only() {
    let Some(world) = World::new() else { return };
    for backend in backends() {
        secrets_on(&world, backend);
    }
}

fn secrets_on(world: &World, backend: &str) {
    let secret = world.dir.path().join("token.txt");
    fs::write(&secret, "s3cret-value\n").unwrap();
    let spec = world.spec(
        "sec",
        &format!("backend = \"{backend}\"\n[[secrets]]\nname = \"token\"\npath = \"{}\"", secret.display()),
    );
    world.ok(&["pod", "run", spec.to_str().unwrap()]);

    assert_eq!(world.ok(&["pod", "exec", "sec", "--", "cat", "/run/secrets/token"]), "s3cret-value\n");
    let out = world.mica(&["pod", "exec", "sec", "--", "sh", "-c", "echo changed > /run/secrets/token"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"), "{}", text(&out));
    // Not even root can make it writable: the disk itself is read-only.
    let out = world.mica(&["pod", "exec", "sec", "--", "mount", "-o", "remount,rw", "/run/secrets"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(world.ok(&["pod", "exec", "sec", "--", "cat", "/run/secrets/token"]), "s3cret-value\n");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "s3cret-value\n");
    world.ok(&["pod", "stop", "sec"]);
}

#[test]
fn a_manager_killed_at_any_step_leaves_a_whole_pod_or_nothing() {
    let Some(world) = World::new() else { return };
    for backend in backends() {
        killed_manager_on(&world, backend);
    }
}

fn killed_manager_on(world: &World, backend: &str) {
    let spec = world.spec("crash", &format!("backend = \"{backend}\""));
    for point in ["after-mkdir", "after-launch"] {
        let out = world.mica_with(&["pod", "run", spec.to_str().unwrap()], Some(point));
        assert!(!out.status.success(), "{point}: {}", text(&out));
        assert!(!world.pod_dirs().is_empty(), "{point}: the crash left nothing to clean up");
        // The next command finds the half-made pod and removes it, QEMU included.
        let list = world.mica(&["pod", "list"]);
        assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 1, "{point}: {}", text(&list));
        assert!(String::from_utf8_lossy(&list.stderr).contains("never completely started"), "{}", text(&list));
        assert!(world.processes().is_empty(), "{point}: {backend} left behind");
        assert!(world.pod_dirs().is_empty(), "{point}: {:?}", world.pod_dirs());
    }
    // Killed after the record was written: the pod is whole and is found again.
    let out = world.mica_with(&["pod", "run", spec.to_str().unwrap()], Some("after-record"));
    assert!(!out.status.success(), "{}", text(&out));
    let list = world.ok(&["pod", "list"]);
    assert!(list.lines().nth(1).is_some_and(|line| line.starts_with("crash ")), "{list}");
    assert!(world.ok(&["pod", "exec", "crash", "--", "hostname"]).starts_with("crash"));
    world.ok(&["pod", "stop", "crash"]);
    assert!(world.processes().is_empty() && world.pod_dirs().is_empty());
}

#[test]
fn a_pod_whose_hypervisor_died_is_cleaned_up() {
    let Some(world) = World::new() else { return };
    for backend in backends() {
        hypervisor_died_on(&world, backend);
    }
}

fn hypervisor_died_on(world: &World, backend: &str) {
    let spec = world.spec("dies", &format!("backend = \"{backend}\""));
    world.ok(&["pod", "run", spec.to_str().unwrap()]);
    let pids = world.processes();
    assert_eq!(pids.len(), 1, "{pids:?}");
    Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
    let list = world.mica(&["pod", "list"]);
    assert!(String::from_utf8_lossy(&list.stderr).contains("pod dies stopped by itself"), "{}", text(&list));
    assert!(world.pod_dirs().is_empty());
}

#[test]
fn bad_specs_are_refused_before_anything_starts() {
    let Some(world) = World::new() else { return };
    // mica-vmm: on this host, either no hardware KVM, or a pod beyond what it runs yet.
    let vmm_refusal = if hardware_kvm() { "at most 3072 MiB" } else { "needs hardware KVM" };
    let cases = [
        ("memory_mib = 100000000", "more than this host's"),
        ("backend = \"mica-vmm\"\nmemory_mib = 4096", vmm_refusal),
    ];
    for (extra, expected) in cases {
        let spec = world.spec("bad", extra);
        let out = world.mica(&["pod", "run", spec.to_str().unwrap()]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(expected), "{}", text(&out));
        assert!(world.pod_dirs().is_empty() && world.processes().is_empty());
    }
    let missing = world.dir.path().join("missing.toml");
    fs::write(&missing, "name = \"m\"\nkernel = \"/nonexistent/vmlinuz\"\ninitramfs = \"/nonexistent/i\"\n").unwrap();
    let out = world.mica(&["pod", "run", missing.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel /nonexistent/vmlinuz"), "{}", text(&out));
    assert!(world.pod_dirs().is_empty());
}

/// On a software KVM, mica-vmm cannot boot Debian's kernel far enough for the agent, but the
/// backend's process handling can still be tested for real: with `MICA_POD_ALLOW_SOFTWARE_KVM=1`
/// the VMM starts (its console reaches the pod's log), a pod that does not come up is removed with
/// its VMM, and a manager killed after starting the VMM leaves nothing the next command does not
/// clean up.
#[test]
fn a_mica_vmm_pod_on_software_kvm_is_started_and_cleaned_up() {
    let probe = mica_launch::KvmProbe::detect();
    if !probe.usable() || probe.hardware() {
        eprintln!("skipped: this test is for a software KVM; this host has {}", probe.label());
        return;
    }
    let Some(world) = World::new() else { return };
    let spec = world.spec("soft", "backend = \"mica-vmm\"\ncmdline = \"earlyprintk=serial\"");
    let allow = [("MICA_POD_ALLOW_SOFTWARE_KVM", Some("1"))];
    // Debian's kernel takes about 90 s there to decompress itself and print its first line.
    let out = world.mica_env(&["pod", "run", "--timeout", "240", spec.to_str().unwrap()], &allow);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("pod soft did not come up, so it was removed"), "{}", text(&out));
    // What the console showed: Linux's own lines (`[    6.169761] Booting ...`), its serial output
    // from mica-vmm in the pod's log.
    let console = stderr.split_once("--- console (last lines) ---").map(|(_, c)| c).unwrap_or_default();
    let printk = |line: &str| {
        line.starts_with('[') && line.split_once("] ").is_some_and(|(t, _)| t[1..].trim().parse::<f64>().is_ok())
    };
    assert!(console.lines().any(printk), "no kernel lines from the console: {}", text(&out));
    assert!(world.processes().is_empty(), "mica-vmm left behind: {:?}", world.processes());
    assert!(world.pod_dirs().is_empty(), "{:?}", world.pod_dirs());

    for point in ["after-mkdir", "after-launch"] {
        let out = world.mica_env(&["pod", "run", spec.to_str().unwrap()], &[allow[0], ("MICA_POD_FAULT", Some(point))]);
        assert!(!out.status.success(), "{point}: {}", text(&out));
        if point == "after-launch" {
            assert_eq!(world.processes().len(), 1, "{point}: the VMM runs on after the manager died");
        }
        let list = world.mica(&["pod", "list"]);
        assert!(String::from_utf8_lossy(&list.stderr).contains("never completely started"), "{}", text(&list));
        assert!(world.processes().is_empty(), "{point}: mica-vmm left behind");
        assert!(world.pod_dirs().is_empty(), "{point}: {:?}", world.pod_dirs());
    }
}
