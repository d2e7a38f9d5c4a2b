//! The boot-test scenarios: what to boot, and what must come out.
//!
//! The verdict is the exit code (through `isa-debug-exit`); the substrings are extra assertions
//! on the serial output, so that a scenario that ends with the right code for the wrong reason
//! (a panic in place of a page fault, say) still fails.

use mica_exit::ExitCode;

/// Under which KVM a scenario runs (every scenario runs under TCG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmUse {
    /// Under any usable KVM, software ones included: a smoke test that KVM boots at all.
    Smoke,
    /// Only under hardware-backed KVM (a software KVM would take minutes and add nothing).
    HardwareOnly,
}

/// How a test tampers with the `victim` component of the `tamper` system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Flip a byte of its artifact (the bundle checksum must catch it).
    CorruptArtifact,
    /// Cut its artifact in half, with a valid checksum (Wasmtime must refuse it).
    TruncateArtifact,
    /// Claim it was compiled for AVX2, which the kernel does not enable.
    OtherCpu,
    /// Claim it was compiled by another Wasmtime version.
    OtherWasmtime,
    /// Give it a fuel budget while its key says it was compiled without fuel counting (the
    /// kernel must refuse it rather than run it unlimited).
    FuelWithoutInstrumentation,
    /// Claim it was compiled with fuel counting, which it was not (the kernel loads it into the
    /// engine with fuel counting, and Wasmtime must refuse it there).
    FalseInstrumentation,
}

/// The boot bundle a scenario boots with: a system from `qemu-tests/systems/` or
/// `components/default.toml`, built by `cargo xtask test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleUse {
    /// The system's name (its manifest's file stem).
    pub system: &'static str,
    /// What to change before booting.
    pub tamper: Option<Tamper>,
}

/// One boot test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The trial name after the accelerator: `tcg::NAME`, `kvm::NAME`.
    pub name: &'static str,
    /// The kernel command line.
    pub cmdline: &'static str,
    /// The verdict the kernel must reach.
    pub expect: ExitCode,
    /// Text that must appear in the serial output.
    pub output_contains: &'static [&'static str],
    /// Whether it also runs under KVM.
    pub kvm: KvmUse,
    /// The boot bundle, if any.
    pub bundle: Option<BundleUse>,
    /// CPU features QEMU's CPU model adds to the baseline profile's (e.g. `avx`).
    pub cpu_features: &'static [&'static str],
    /// vCPUs (`-smp`); 1 is QEMU's default.
    pub cpus: u32,
    /// Host files the run must have written, and text each must contain: (file in the trial's
    /// scratch directory, e.g. `console0.log` for the first device's console output, text).
    pub files_contain: &'static [(&'static str, &'static str)],
}

/// Every scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "basic_boot",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &["mica: ready (tsc_since_entry="],
        kvm: KvmUse::Smoke,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "panic",
        cmdline: "test=panic",
        expect: ExitCode::Failed,
        output_contains: &["KERNEL PANIC at kernel/src/"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "page_fault",
        cmdline: "test=page_fault",
        expect: ExitCode::Failed,
        output_contains: &["EXCEPTION #PF", "error_code=", "CR2=0x", "RIP=0x"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "stack_overflow",
        cmdline: "test=stack_overflow",
        expect: ExitCode::Failed,
        output_contains: &["kernel stack overflow"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "heap",
        cmdline: "test=heap",
        expect: ExitCode::Success,
        output_contains: &["mica: boot test heap: passed"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "timer",
        cmdline: "test=timer",
        expect: ExitCode::Success,
        output_contains: &["mica: boot test timer: passed"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "paging",
        cmdline: "test=paging",
        expect: ExitCode::Success,
        output_contains: &["mica: boot test paging: passed"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "threads",
        cmdline: "test=threads",
        expect: ExitCode::Success,
        output_contains: &[
            "mica: threads: 3 threads x 20 rounds, round-robin, FPU and TLS state kept",
            "mica: boot test threads: passed",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "preempt",
        cmdline: "test=preempt",
        expect: ExitCode::Success,
        output_contains: &[
            "mica: preempt: 2 spinners that never yield and the boot thread shared 20 ticks",
            "mica: boot test preempt: passed",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "sleep",
        cmdline: "test=sleep",
        expect: ExitCode::Success,
        output_contains: &["mica: sleep: woke ", "mica: boot test sleep: passed"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "invalid_cmdline",
        cmdline: "log=loud",
        expect: ExitCode::Failed,
        output_contains: &["log=loud"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "default_system",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "[hello] hello from a Mica component",
            "mica: component hello exited with status 0",
            "mica: all components finished: 1 of 1 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "default", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "components",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "[hello] args: [\"hello\", \"x\", \"y\"]",
            "[hello] env: A=1",
            "mica: component hello exited with status 0",
            "[exit7] exiting with status 7",
            "mica: component exit7 exited with status 1",
            "mica: component flaky: restarting (on-failure, attempt 3 of 3, after 400 ms)",
            "[panicker!] ",
            "mica: component panicker trapped: wasm trap: wasm `unreachable` instruction executed",
            "mica: component hog ran out of memory: ",
            "wasm::system: component spinner-fuel: code instrumented for CPU limits (fuel)",
            "mica: component spinner-fuel exceeded its CPU limit: all 200000000 units of fuel used",
            "wasm::system: component spinner-time: code instrumented for CPU limits (epochs)",
            "mica: component spinner-time exceeded its CPU time limit",
            "mica: component ungranted refused: imports wasi:clocks/",
            ", which its manifest does not grant",
            "mica: component log-ungranted refused: imports mica:kernel/log@0.1.0, which its manifest does not grant",
            "[after] count 2",
            "mica: component after exited with status 0",
            "mica: all components finished: 2 of 10 succeeded",
            "[flaky] exiting with status 3",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "components", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "nostd_component",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "[logger] INFO: hello from a no_std component, through mica:kernel/log",
            "[logger] WARN: this is a warning",
            "[logger] ERROR: this is an error (the component still succeeds)",
            "[logger] INFO: 2 more records follow, shown only with log=debug or log=trace",
            "mica: component logger exited with status 0",
            "mica: all components finished: 1 of 1 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "nostd", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "endless_loop_does_not_starve_others",
        cmdline: "stop_after_ms=4000",
        expect: ExitCode::Failed,
        output_contains: &[
            "[looper] spinning forever",
            "[counter] count 3",
            "mica: component counter exited with status 0",
            "[greeter] slept at least 10 ms: true",
            "mica: component greeter exited with status 0",
            "mica: stop_after_ms=4000 reached with 1 component(s) still running: looper; 2 of 3 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "starve", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "restart_always_with_backoff",
        cmdline: "stop_after_ms=2000",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component again exited with status 0",
            "mica: component again: restarting (always, restart 1, after 100 ms)",
            "mica: component again: restarting (always, restart 2, after 200 ms)",
            "mica: component again: restarting (always, restart 3, after 400 ms)",
            "mica: stop_after_ms=2000 reached with 1 component(s) still running: again",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "always", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "switch",
        cmdline: "test=switch",
        expect: ExitCode::Success,
        output_contains: &["mica: bench switch switches=39998 ticks=", "mica: boot test switch: passed"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "priority",
        cmdline: "test=priority",
        expect: ExitCode::Success,
        output_contains: &[
            "mica: priority: low spinner starved while normal was busy",
            "mica: boot test priority: passed",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "avx_state_per_thread",
        cmdline: "test=avx",
        expect: ExitCode::Success,
        output_contains: &[
            "cpu: AVX state on (XCR0 x87|SSE|AVX, 832-byte XSAVE area per thread)",
            "mica: avx: 3 threads kept their own 256-bit YMM0 across 50 yields and preemption",
            "mica: boot test avx: passed",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &["avx", "avx2"],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "avx_component",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "cpu: AVX state on",
            "[sieve-avx2] 78498 primes below 1000000",
            "mica: component sieve-avx2 exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "sieve-avx2", tamper: None }),
        cpu_features: &["avx", "avx2"],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "vectors",
        cmdline: "test=vectors",
        expect: ExitCode::Success,
        output_contains: &["mica: vectors: 0x21 to 0xef raised and returned", "mica: boot test vectors: passed"],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "smp_brings_up_every_cpu",
        cmdline: "test=timer",
        expect: ExitCode::Success,
        output_contains: &[
            "smp: CPU 1 (APIC 1) online",
            "smp: CPU 3 (APIC 3) online",
            "smp: 4 of 4 CPUs online, each with its own run queue",
            "mica: boot test timer: passed",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 4,
        files_contain: &[],
    },
    Scenario {
        name: "smp_spinners_use_every_cpu",
        cmdline: "test=smp",
        expect: ExitCode::Success,
        output_contains: &[
            "mica: smp: 2 spinners ran on CPUs 0b11 (every CPU ran work)",
            "mica: boot test smp: passed",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: None,
        cpu_features: &[],
        cpus: 2,
        files_contain: &[],
    },
    Scenario {
        name: "busy_components_use_both_cpus",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "[sieve-a] 216816 primes below 3000000",
            "[sieve-b] 216816 primes below 3000000",
            "mica: components ran on CPUs 0, 1 of 2",
            "mica: all components finished: 2 of 2 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "busy-pair", tamper: None }),
        cpu_features: &[],
        cpus: 2,
        files_contain: &[],
    },
    Scenario {
        name: "ipc_on_two_cpus",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "[kv-client] 50 put/get rounds correct, 0 reconnect(s)",
            "[echo-client] a channel end went to the echo server and back, and still works",
            "mica: components ran on CPUs 0, 1 of 2",
            "mica: all components finished: 4 of 4 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "ipc", tamper: None }),
        cpu_features: &[],
        cpus: 2,
        files_contain: &[],
    },
    Scenario {
        name: "ipc_example_system",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "mica: 2 connection(s) between components",
            "[echo-client] 100 echo calls answered correctly",
            "[echo-client] a channel end went to the echo server and back, and still works",
            "[kv-client] 50 put/get rounds correct, 0 reconnect(s)",
            "[echo] all clients gone; answered 101 calls and dropped 0 messages",
            "[kv] all clients gone after 100 requests; 50 keys",
            "mica: all components finished: 4 of 4 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "ipc", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "drivers_example_system",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "devices: virtio-rng.0 (virtio-mmio v2 at 0xfeb02e00, GSI 47 -> vector 0x57)",
            "devices: virtio-blk.0 (virtio-mmio v2 at 0xfeb02c00, GSI 46 -> vector 0x56)",
            "[rng] virtio-rng: virtio-rng.0 ready (queue size 8)",
            "[blk] virtio-blk: virtio-blk.0 ready: 16384 sectors of 512 bytes",
            "[entropy-client] entropy: 2 x 64 bytes, distinct",
            "[block-client] block: a read past the end was refused: 1 sector(s) from sector 16384 go past the end",
            "[block-client] block: 16 writes verified, capacity 16384 sectors",
            "devices: virtio-rng.0 reset and released (rng ended)",
            "devices: virtio-blk.0 reset and released (blk ended)",
            "mica: all components finished: 4 of 4 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "drivers", tamper: None }),
        cpu_features: &[],
        cpus: 2,
        files_contain: &[],
    },
    Scenario {
        name: "console_driver_writes_to_the_host",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "devices: virtio-console.0 (virtio-mmio v2 at 0xfeb02e00, GSI 47 -> vector 0x57)",
            "[console] virtio-console: virtio-console.0 ready",
            "[writer] console: wrote 2 lines",
            "mica: all components finished: 2 of 2 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "console", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[
            ("console0.log", "hello through virtio-console\n"),
            ("console0.log", "bytes written through the virtio-console driver\n"),
        ],
    },
    Scenario {
        name: "devices_from_the_command_line",
        // How mica-vmm describes its transports: the kernel takes these instead of probing.
        cmdline: "virtio_mmio.device=512@0xfeb02e00:47",
        expect: ExitCode::Success,
        output_contains: &[
            "devices: virtio-console.0 (virtio-mmio v2 at 0xfeb02e00, GSI 47 -> vector 0x40)",
            "[writer] console: wrote 2 lines",
            "mica: all components finished: 2 of 2 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "console", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[("console0.log", "hello through virtio-console\n")],
    },
    Scenario {
        name: "driver_crash_is_restarted_and_clients_reconnect",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "[blk] virtio-blk: request 5: crashing on purpose (CRASH_AFTER=5) before answering",
            "mica: component blk trapped: wasm trap: wasm `unreachable` instruction executed",
            "devices: virtio-blk.0 reset and released (blk ended)",
            "mica: component blk: restarting (on-failure, attempt 1 of 3, after 100 ms)",
            "the driver went away (the peer is closed: its component ended or let go of it); reconnecting",
            "[block-client] block: 12 rounds verified after 1 reconnect(s)",
            "[entropy-client] entropy: 2 x 64 bytes, distinct",
            "mica: component rng exited with status 0",
            "mica: all components finished: 4 of 4 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "driver-crash", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "hw_bad_access_gets_error_values",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "check read at the window size: ok, ErrorCode::OutOfRange (window of virtio-rng.0: 4 byte(s) at offset 0x200 reach past its end (0x200 bytes))",
            "check read at 2^31: ok, ErrorCode::OutOfRange",
            "check read of width 3: ok, ErrorCode::BadWidth (window of virtio-rng.0: access width 3 is not 1, 2, 4 or 8 bytes)",
            "check unaligned 4-byte read: ok, ErrorCode::BadWidth",
            "check write through handle 999: ok, ErrorCode::InvalidHandle (hardware handle 999: ",
            "check dma load on the window handle: ok, ErrorCode::InvalidHandle",
            "is a register window, not a DMA buffer",
            "check read past a buffer's end: ok, ErrorCode::OutOfRange (DMA buffer: 16 byte(s) at offset 0xff8 reach past its end (0x1000 bytes))",
            "check read of a freed buffer: ok, ErrorCode::InvalidHandle",
            "check allocate 64 MiB: ok, ErrorCode::OutOfMemory (a DMA buffer of 67108864 bytes would take misbehave past its dma_limit of 65536 bytes (0 in use))",
            "check claim it again: ok, ErrorCode::Busy (device virtio-rng.0 is already claimed by this instance)",
            "check claim virtio-net.7: ok, ErrorCode::NotGranted (device virtio-net.7 is not granted to misbehave (its manifest grants: virtio-rng.0))",
            "check irq wait with timeout 0: ok, ErrorCode::TimedOut",
            "check mmio read on a channel end: ok, ErrorCode::InvalidHandle",
            "is a channel end, not a register window",
            "check send on the window handle: ok, InvalidHandle (handle ",
            "is a register window, not a channel end)",
            "[misbehave] hw-misbehave: 14 refusals, device still answers",
            "[block-client] block: 8 writes verified, capacity 8192 sectors",
            "mica: all components finished: 3 of 3 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "hw-misbehave", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "ipc_server_crash_is_restarted_and_clients_reconnect",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "mica: component kv: priority high",
            "[kv] request 7: crashing on purpose (CRASH_AFTER=7) before answering",
            "mica: component kv trapped: wasm trap: wasm `unreachable` instruction executed",
            "mica: component kv: restarting (on-failure, attempt 1 of 3, after 100 ms)",
            "[kv-client] round 3: the server went away (the peer is closed: its component ended or let go of it); reconnecting",
            "[kv-client] 20 put/get rounds correct, 1 reconnect(s)",
            "[echo-client] 200 echo calls answered correctly",
            "mica: component echo-client exited with status 0",
            "mica: all components finished: 4 of 4 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "supervise", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "ipc_bad_input_gets_error_values",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &[
            "[misbehave] check forged-handle: ok (handle 0xbadcafe is not a handle of this component",
            "[misbehave] check closed-handle: ok (handle ",
            "[misbehave] check wrong-rights: ok (handle ",
            "lacks the write right (has: read)",
            "[misbehave] check rights-escalation: ok (cannot duplicate or transfer handle",
            "[misbehave] check transfer-without-grant: ok (handle ",
            "[misbehave] check oversized: ok (message of 65537 bytes exceeds the channel's limit of 65536 bytes)",
            "[misbehave] check too-many-handles: ok (message carries 18 handles, more than the channel's limit of 16 handles)",
            "[misbehave] check closed-peer: ok (the peer of handle ",
            "[misbehave] check closed-peer-receive: ok (the peer of handle ",
            "[misbehave] check flood: ok (the queue of handle ",
            "[misbehave] (the queue took 16 messages)",
            "[misbehave] check flood-wait-times-out: ok (timed out: the queue had no room)",
            "[misbehave] check receive-timeout: ok (timed out: no message arrived)",
            "[misbehave] check unknown-call: ok (call 3735928559 awaits no reply",
            "[misbehave] check no-such-connection: ok (no connection named \"nonexistent\" in the manifest for this component (its connections: echo))",
            "[misbehave] check table-full: ok (the handle table of component misbehave is full (48 handles;",
            "[misbehave] all bad-input checks passed; the echo service still answers",
            "[echo-client] 300 echo calls answered correctly",
            "mica: all components finished: 3 of 3 succeeded",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "misbehave", tamper: None }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "corrupt_artifact",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component victim refused: boot bundle entry 'victim.cwasm' is corrupt or truncated",
            "mica: component bystander exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "tamper", tamper: Some(Tamper::CorruptArtifact) }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "truncated_artifact",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component victim refused: artifact refused: ",
            "mica: component bystander exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "tamper", tamper: Some(Tamper::TruncateArtifact) }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "artifact_for_other_cpu",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component victim refused: artifact compiled for CPU features this CPU does not offer (or the kernel has not enabled): avx2",
            "mica: component bystander exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "tamper", tamper: Some(Tamper::OtherCpu) }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "artifact_from_other_wasmtime",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component victim refused: artifact compiled by Wasmtime 47.0.0, this kernel runs Wasmtime 48.0.8",
            "mica: component bystander exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "tamper", tamper: Some(Tamper::OtherWasmtime) }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "fuel_without_instrumentation",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component victim refused: its manifest sets fuel = 1000000, but its artifact was compiled without fuel counting (instrumentation: none)",
            "mica: component bystander exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "tamper", tamper: Some(Tamper::FuelWithoutInstrumentation) }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
    Scenario {
        name: "false_instrumentation",
        cmdline: "",
        expect: ExitCode::Failed,
        output_contains: &[
            "mica: component victim refused: artifact refused: ",
            "Module was compiled without fuel support but it is enabled for the host",
            "mica: component bystander exited with status 0",
        ],
        kvm: KvmUse::HardwareOnly,
        bundle: Some(BundleUse { system: "tamper", tamper: Some(Tamper::FalseInstrumentation) }),
        cpu_features: &[],
        cpus: 1,
        files_contain: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_identifiers() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(s.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", s.name);
            assert!(SCENARIOS[..i].iter().all(|t| t.name != s.name), "duplicate {}", s.name);
        }
    }

    #[test]
    fn exactly_basic_boot_is_the_kvm_smoke_test() {
        let smoke: Vec<_> = SCENARIOS.iter().filter(|s| s.kvm == KvmUse::Smoke).map(|s| s.name).collect();
        assert_eq!(smoke, ["basic_boot"]);
    }
}
