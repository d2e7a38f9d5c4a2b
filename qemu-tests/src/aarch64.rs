//! Boot tests of the aarch64 kernel on QEMU's `virt` under TCG: what its port does so far
//! (`docs/aarch64-plan.md`). The kernel boots from a Linux arm64 `Image` with a device tree,
//! reads its memory, command line and boot module from it, builds its own page tables (W^X
//! audited, guard pages under its stacks) and heap, reports exceptions (a stack overflow on the
//! exception stack), takes the timer's interrupts through the GIC, runs threads with preemption,
//! and ends the run with its verdict through semihosting. Most scenarios are x86_64's own, run
//! unchanged ([`SHARED`]).

use std::path::Path;

use mica_launch::{Accel, ExitCode, GuestArch, OutputMode, QemuCommand, RunOptions};

use crate::scenarios::{KvmUse, Scenario};

/// The variable that names the aarch64 kernel's `Image` (set by `cargo xtask test`).
pub const KERNEL_ENV: &str = "MICA_KERNEL_AARCH64";

/// Guest memory for these boots, in MiB.
const MEMORY_MIB: u32 = 256;
/// The size of the boot module the device-tree test passes.
const MODULE_BYTES: usize = 123_457;

/// One aarch64 boot test.
#[derive(Clone, Copy, Debug)]
pub struct ArmScenario {
    /// The trial name after `aarch64::`.
    pub name: &'static str,
    /// The kernel command line.
    pub cmdline: &'static str,
    /// QEMU arguments after the generated ones.
    pub extra: &'static [&'static str],
    /// Whether to pass a boot module of [`MODULE_BYTES`] bytes.
    pub module: bool,
    /// The system to boot, if any: its bundle is `SYSTEM-aarch64.bundle` (`cargo xtask test`
    /// builds it from the same manifest and wasm as x86_64's `SYSTEM.bundle`), with the devices
    /// its manifest names.
    pub system: Option<&'static str>,
    /// The verdict the kernel must reach.
    pub expect: ExitCode,
    /// Text that must appear in the serial output.
    pub output_contains: &'static [&'static str],
    /// Text that must appear in files the system's devices wrote (a console's log), by name in
    /// the scratch directory, once the run succeeded.
    pub files_contain: &'static [(&'static str, &'static str)],
}

/// What a boot of the default system left wasm prints: the compiler component (itself compiled
/// for aarch64 ahead of time) compiles `hello` for the CPU the ID registers describe, and the
/// module store keeps the code.
const LATE_BINDING_OUTPUT: &[&str] = &[
    "mica: component hello: compiled in ",
    " for aarch64-unknown-none cpu-lse,paca,fp16,dotprod,i8mm instrument-none",
    "/aarch64-unknown-none/config-4/instrument-none/cpu-lse,paca,fp16,dotprod,i8mm (506 KiB)",
    "mica: component hello: kept in the module store",
    "[hello] hello from a Mica component",
    "mica: all components finished: 3 of 3 succeeded",
];

/// The aarch64 boot tests of its own: what the device tree says, EL2, GICv2 (QEMU's `virt` runs
/// GICv3 by default here: `mica_launch`), fault reports in aarch64's terms, and the systems whose
/// output names aarch64's devices or code.
pub const SCENARIOS: [ArmScenario; 9] = [
    ArmScenario {
        name: "boots_from_the_device_tree",
        cmdline: "log=info mica.note=from-the-device-tree",
        extra: &["-machine", "gic-version=2", "-smp", "2"],
        module: true,
        system: None,
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: Mica 0.1.0 booting (aarch64, Linux Image + device tree)",
            "command line: \"log=info mica.note=from-the-device-tree\"",
            "boot: device tree: 2 CPUs (MPIDR 0x0 0x1), PSCI 1.0 over hvc, GICv2 (distributor 0x8000000, CPU \
             interface 0x8010000), timer INTIDs 30 (physical) 27 (virtual), 32 virtio-mmio transports",
            "PL011 0x9000000, 32 bytes of rng-seed",
            "cpu: entered at EL1, running at EL1",
            "memory: 256 MiB of RAM in 1 ranges",
            "boot module 0: 0x",
            "(123457 bytes)",
            "frames: ",
            "kernel image 0x40200000..",
            "guard pages unmapped; W^X holds for all",
            "heap: 1024 KiB mapped at 0xffff900000000000",
            "time: generic counter 62.500 MHz; GICv2 (distributor 0x8000000); virtual timer INTID 27 ticking at 100 Hz",
            "smp: CPU 1 (MPIDR 0x1) online",
            "smp: 2 of 2 CPUs online, each with its own run queue (counted by the device tree)",
            "mica: ready (tsc_since_entry=",
            // The module is no boot bundle: refused by name, not a crash.
            "mica: boot bundle refused: not a Mica boot bundle (bad magic)",
        ],
        files_contain: &[],
    },
    ArmScenario {
        name: "timer_at_el2_with_gicv3",
        cmdline: "test=timer",
        extra: &["-machine", "virtualization=on", "-smp", "2"],
        module: false,
        system: None,
        expect: ExitCode::Success,
        output_contains: &[
            "booting (aarch64",
            "GICv3 (distributor 0x8000000, redistributors 0x80a0000)",
            "cpu: entered at EL2, running at EL1",
            "time: generic counter 62.500 MHz; GICv3",
            "smp: 2 of 2 CPUs online",
            "mica: timer: 50 ticks of 10000 us",
            "mica: boot test timer: passed",
        ],
        files_contain: &[],
    },
    ArmScenario {
        name: "page_fault",
        cmdline: "test=page_fault",
        extra: &[],
        module: false,
        system: None,
        expect: ExitCode::Failed,
        output_contains: &[
            "EXCEPTION synchronous from EL1: data abort on a read (translation fault, level 0)",
            "ESR=0x96000004",
            "FAR=0x7eedbeef0000",
            "ELR=0x",
            "x30=0x",
        ],
        files_contain: &[],
    },
    ArmScenario {
        name: "smp_brings_up_every_cpu",
        cmdline: "test=timer",
        extra: &["-smp", "4"],
        module: false,
        system: None,
        expect: ExitCode::Success,
        output_contains: &[
            "smp: CPU 1 (MPIDR 0x1) online",
            "smp: CPU 3 (MPIDR 0x3) online",
            "smp: 4 of 4 CPUs online, each with its own run queue",
            "mica: boot test timer: passed",
        ],
        files_contain: &[],
    },
    ArmScenario {
        name: "drivers_example_system",
        cmdline: "",
        extra: &[],
        module: false,
        system: Some("drivers"),
        expect: ExitCode::Success,
        output_contains: &[
            "devices: virtio-blk.0 (virtio-mmio v2 at 0xa003a00, INTID 77 -> slot 0)",
            "devices: virtio-rng.0 (virtio-mmio v2 at 0xa003c00, INTID 78 -> slot 1)",
            "devices: virtio-rng.1 (virtio-mmio v2 at 0xa003e00, INTID 79 -> slot 2)",
            "[rng] virtio-rng: virtio-rng.0 ready (queue size 8)",
            "[rng-c] virtio-rng-c: virtio-rng.1 ready (queue size 8)",
            "[blk] virtio-blk: virtio-blk.0 ready: 16384 sectors of 512 bytes",
            crate::scenarios::ENTROPY_CHECKS,
            crate::scenarios::ENTROPY_CHECKS_C,
            "[block-client] block: 16 writes verified, capacity 16384 sectors",
            "devices: virtio-rng.0 reset and released (rng ended)",
            "devices: virtio-rng.1 reset and released (rng-c ended)",
            "devices: virtio-blk.0 reset and released (blk ended)",
            "mica: all components finished: 6 of 6 succeeded",
        ],
        files_contain: &[],
    },
    // The virtio-console driver, the same `.wasm` as x86_64's, on a virtio-serial device of
    // `virt` whose port 0 writes a host file.
    ArmScenario {
        name: "console_driver_writes_to_the_host",
        cmdline: "",
        extra: &[],
        module: false,
        system: Some("console"),
        expect: ExitCode::Success,
        output_contains: &[
            "devices: virtio-console.0 (virtio-mmio v2 at 0xa003e00, INTID 79 -> slot 0)",
            "[console] virtio-console: virtio-console.0 ready",
            "[writer] console: wrote 2 lines",
            "mica: all components finished: 2 of 2 succeeded",
        ],
        files_contain: &[
            ("console0.log", "hello through virtio-console\n"),
            ("console0.log", "bytes written through the virtio-console driver\n"),
        ],
    },
    ArmScenario {
        name: "late_binding_compiles_in_the_system",
        cmdline: "",
        extra: &["-smp", "2"],
        module: false,
        system: Some("default-late"),
        expect: ExitCode::Success,
        output_contains: LATE_BINDING_OUTPUT,
        files_contain: &[],
    },
    // The same on the older controller with two CPUs: reschedule SGIs between them (whose
    // acknowledge value names the sending CPU, and must be ended with it) and the disk's SPI.
    ArmScenario {
        name: "late_binding_on_gicv2_with_two_cpus",
        cmdline: "",
        extra: &["-machine", "gic-version=2", "-smp", "2"],
        module: false,
        system: Some("default-late"),
        expect: ExitCode::Success,
        output_contains: LATE_BINDING_OUTPUT,
        files_contain: &[],
    },
    ArmScenario {
        name: "smp_spinners_with_gicv2",
        cmdline: "test=smp",
        extra: &["-machine", "gic-version=2", "-smp", "2"],
        module: false,
        system: None,
        expect: ExitCode::Success,
        output_contains: &[
            "GICv2 (distributor 0x8000000",
            "mica: smp: 2 spinners ran on CPUs 0b11 (every CPU ran work)",
        ],
        files_contain: &[],
    },
];

/// The boot tests that run on aarch64 exactly as on x86_64: the same kernel scenario, verdict and
/// expected output (`scenarios::SCENARIOS`).
pub const SHARED: [&str; 16] = [
    "panic",
    "panic_smp",
    "irq_on_fresh_stack_page",
    "stack_overflow",
    "heap",
    "timer",
    "paging",
    "threads",
    "preempt",
    "sleep",
    "switch",
    "priority",
    "smp_spinners_use_every_cpu",
    "default_system",
    "ipc_example_system",
    "c_component",
];

/// Every aarch64 boot test: its own, then the shared ones.
pub fn scenarios() -> impl Iterator<Item = ArmScenario> {
    let shared = crate::scenarios::SCENARIOS.iter().filter(|s| SHARED.contains(&s.name)).map(|s| ArmScenario {
        name: s.name,
        cmdline: s.cmdline,
        extra: match s.cpus {
            1 => &[],
            2 => &["-smp", "2"],
            4 => &["-smp", "4"],
            n => panic!("scenario {}: no aarch64 arguments for {n} CPUs", s.name),
        },
        module: false,
        system: s.bundle.map(|b| {
            assert!(b.tamper.is_none(), "scenario {}: aarch64 has no tampered bundles", s.name);
            b.system
        }),
        expect: s.expect,
        output_contains: s.output_contains,
        files_contain: s.files_contain,
    });
    SCENARIOS.into_iter().chain(shared)
}

/// Boots `scenario` with the aarch64 QEMU `qemu` and the `Image` `kernel`, and checks it.
pub fn run(qemu: &Path, kernel: &Path, scenario: &ArmScenario) -> Result<(), String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let mut cmd = QemuCommand::new(qemu, kernel, Accel::Tcg)
        .arch(GuestArch::Aarch64)
        .memory_mib(MEMORY_MIB)
        .cmdline(scenario.cmdline)
        .extra_args(scenario.extra.iter().copied());
    if scenario.module {
        let module = scratch.path().join("module");
        let bytes: Vec<u8> = (0..MODULE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&module, bytes).map_err(|e| format!("writing {}: {e}", module.display()))?;
        cmd = cmd.initrd(module);
    }
    if let Some(system) = scenario.system {
        let dir = std::env::var_os(crate::BUNDLES_ENV)
            .ok_or_else(|| format!("{} is not set: run the boot tests with `cargo xtask test`", crate::BUNDLES_ENV))?;
        let bundle = Path::new(&dir).join(format!("{system}-aarch64.bundle"));
        // Fresh disk images in the scratch directory, as for x86_64's systems.
        cmd = crate::with_system(cmd, &bundle, scratch.path())?;
    }
    let options = RunOptions { timeout: crate::TIMEOUT, output: OutputMode::Capture { echo: false } };
    let outcome = mica_launch::run::run(&cmd, &options).map_err(|e| format!("{e}\n{}", cmd.display()))?;
    let check = Scenario {
        name: scenario.name,
        cmdline: scenario.cmdline,
        expect: scenario.expect,
        output_contains: scenario.output_contains,
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    };
    crate::check(&check, &outcome).map_err(|why| format!("{why}\n{}\n{}", cmd.display(), outcome.transcript()))?;
    crate::check_files(scenario.files_contain, scratch.path(), &cmd, &outcome)
}
