//! Boot tests on KVM: tiny hand-made PVH guests that end in each way the exit loop knows, and the
//! real Mica kernel (its path from `MICA_KERNEL`, as `cargo xtask test` passes it).
//!
//! When `/dev/kvm` is not usable the KVM trials are listed as ignored and the reason is printed,
//! so that a machine without KVM is visible in the output rather than a silent pass. With KVM but
//! without `MICA_KERNEL`, the Mica trials fail and say how to build the kernel. The Linux trial
//! boots Debian's bzImage with the pod initramfs (`MICA_POD_KERNEL`, `MICA_POD_INITRAMFS`, from
//! `cargo xtask test`) and runs only on hardware KVM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use mica_vmm::{Ending, ExitCode, Outcome, Vm, VmConfig};

#[path = "support/pvh_elf.rs"]
mod pvh_elf;

/// Generous: under the software KVM (`kvm_pvm`) the Mica kernel boots in about a second.
const MICA_TIMEOUT: Duration = Duration::from_secs(60);
const TINY_TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    let args = Arguments::from_args();
    let kvm = mica_vmm::kvm_usable();
    match &kvm {
        Ok(()) => eprintln!("boot_kvm: /dev/kvm is usable (backend: {})", mica_vmm::kvm_backend().unwrap_or("unknown")),
        Err(e) => eprintln!("boot_kvm: KVM TRIALS IGNORED: {e}"),
    }
    let no_kvm = kvm.is_err();
    let trials = vec![
        Trial::test("tiny::hello_checks_start_info_and_exits_success", tiny_hello),
        Trial::test("tiny::unknown_exit_byte_is_reported", tiny_unknown_exit),
        Trial::test("tiny::halt_with_interrupts_off_ends_the_run", tiny_halt),
        Trial::test("tiny::spinning_guest_times_out", tiny_spin),
        Trial::test("tiny::exception_without_idt_is_a_triple_fault", tiny_triple_fault),
        Trial::test("tiny::xgetbv_ends_the_run_clearly", tiny_xgetbv),
        Trial::test("mica::boots_to_ready_and_exits_success", mica_ready),
        Trial::test("mica::test_panic_exits_failed", mica_panic),
        Trial::test("mica::finds_the_virtio_disk_and_console", mica_disk),
        Trial::test("mica::boots_with_four_vcpus", mica_four_vcpus),
    ];
    let mut trials: Vec<Trial> = trials.into_iter().map(|t| t.with_ignored_flag(no_kvm)).collect();
    // A stock Linux kernel needs hardware KVM: the software kvm_pvm stops it with an emulation
    // failure (cmpxchg16b) a few minutes into its boot.
    let hardware = matches!(mica_vmm::kvm_backend(), Some("kvm_intel" | "kvm_amd"));
    if !hardware {
        eprintln!(
            "boot_kvm: LINUX TRIAL IGNORED: booting Debian's kernel needs hardware KVM (backend here: {})",
            mica_vmm::kvm_backend().unwrap_or("none")
        );
    }
    trials.push(Trial::test("linux::debian_bzimage_reaches_init", linux_reaches_init).with_ignored_flag(!hardware));
    libtest_mimic::run(&args, trials).exit();
}

/// Writes `code` as a PVH ELF into a temporary file and boots it.
fn boot_tiny(name: &str, code: &[u8], timeout: Duration) -> Result<Outcome, Failed> {
    let path = std::env::temp_dir().join(format!("mica-vmm-{name}-{}.elf", std::process::id()));
    std::fs::write(&path, pvh_elf::build(code, true)).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let result = Vm::new(VmConfig::new(&path).memory_mib(4)).and_then(|vm| vm.run(Some(timeout)));
    let _ = std::fs::remove_file(&path);
    Ok(result.map_err(|e| format!("VMM error: {e}"))?)
}

fn describe(o: &Outcome) -> String {
    format!("ended after {:?}: {}\n--- serial ---\n{}--- end ---", o.duration, o.ending, o.serial_text())
}

fn tiny_hello() -> Result<(), Failed> {
    let o = boot_tiny("hello", &pvh_elf::hello("hello from PVH\n", ExitCode::Success.code()), TINY_TIMEOUT)?;
    if o.exit() != Some(ExitCode::Success) || o.serial_text() != "hello from PVH\n" {
        return Err(describe(&o).into());
    }
    Ok(())
}

fn tiny_unknown_exit() -> Result<(), Failed> {
    let o = boot_tiny("unknown-exit", &pvh_elf::hello("", 0x42), TINY_TIMEOUT)?;
    if o.ending != Ending::ExitPort(0x42) || o.exit().is_some() {
        return Err(describe(&o).into());
    }
    Ok(())
}

fn tiny_halt() -> Result<(), Failed> {
    // cli; hlt
    let o = boot_tiny("halt", &[0xfa, 0xf4], TINY_TIMEOUT)?;
    match o.ending {
        Ending::HaltedWithInterruptsOff { rip } if rip == pvh_elf::LOAD_ADDR + 2 => Ok(()),
        _ => Err(describe(&o).into()),
    }
}

fn tiny_spin() -> Result<(), Failed> {
    // jmp $
    let timeout = Duration::from_millis(500);
    let o = boot_tiny("spin", &[0xeb, 0xfe], timeout)?;
    if o.ending != Ending::Timeout(timeout) {
        return Err(describe(&o).into());
    }
    if o.duration > timeout + Duration::from_secs(2) {
        return Err(format!("the timeout took {:?} to act", o.duration).into());
    }
    Ok(())
}

fn tiny_triple_fault() -> Result<(), Failed> {
    // ud2, with no IDT: #UD cannot be delivered, so it becomes a triple fault.
    let o = boot_tiny("ud2", &[0x0f, 0x0b], TINY_TIMEOUT)?;
    match o.ending {
        Ending::TripleFault { .. } => Ok(()),
        _ => Err(describe(&o).into()),
    }
}

fn tiny_xgetbv() -> Result<(), Failed> {
    // xor ecx, ecx; xgetbv. Hardware KVM raises #UD (CR4.OSXSAVE is clear), a triple fault here;
    // the software kvm_pvm cannot emulate it at all. Either way the run must end, and say why.
    let o = boot_tiny("xgetbv", &[0x31, 0xc9, 0x0f, 0x01, 0xd0], TINY_TIMEOUT)?;
    eprintln!("tiny::xgetbv: {}", o.ending);
    match &o.ending {
        Ending::TripleFault { .. } => Ok(()),
        Ending::EmulationFailure { rip, .. } if *rip == pvh_elf::LOAD_ADDR + 2 => {
            if o.ending.to_string().contains("xgetbv") {
                Ok(())
            } else {
                Err(format!("emulation failure not named: {}", o.ending).into())
            }
        }
        _ => Err(describe(&o).into()),
    }
}

fn mica_kernel() -> Result<PathBuf, Failed> {
    let Some(path) = std::env::var_os("MICA_KERNEL") else {
        return Err("MICA_KERNEL is not set: build the kernel with\n  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
                    /usr/bin/cargo build -p mica-kernel --target x86_64-unknown-none \
                    -Zbuild-std=core,alloc,compiler_builtins -Zbuild-std-features=compiler-builtins-mem\n\
                    and run with MICA_KERNEL=target/x86_64-unknown-none/debug/mica-kernel (or use `cargo xtask test`)"
            .into());
    };
    let given = PathBuf::from(path);
    // Tests run in vmm/; a relative path is most likely meant from the workspace root.
    let from_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&given);
    [given.clone(), from_root]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("MICA_KERNEL={} is not a file", given.display()).into())
}

fn boot_mica(cmdline: &str) -> Result<Outcome, Failed> {
    let config = VmConfig::new(mica_kernel()?).cmdline(cmdline);
    let vm = Vm::new(config).map_err(|e| format!("VMM error: {e}"))?;
    let o = vm.run(Some(MICA_TIMEOUT)).map_err(|e| format!("VMM error: {e}"))?;
    eprintln!("mica (cmdline \"{cmdline}\"): {} in {:?}", o.ending, o.duration);
    Ok(o)
}

fn mica_ready() -> Result<(), Failed> {
    let o = boot_mica("")?;
    if o.exit() != Some(ExitCode::Success) || !o.serial_text().contains("mica: ready (tsc_since_entry=") {
        return Err(format!("expected success and \"mica: ready\"; {}", describe(&o)).into());
    }
    Ok(())
}

fn mica_panic() -> Result<(), Failed> {
    let o = boot_mica("test=panic")?;
    if o.exit() != Some(ExitCode::Failed) || !o.serial_text().contains("KERNEL PANIC at") {
        return Err(format!("expected failed and \"KERNEL PANIC at\"; {}", describe(&o)).into());
    }
    Ok(())
}

/// Mica with a virtio-blk disk: mica-vmm describes the transport on the command line, and the
/// kernel finds and names the device and routes its interrupt before it is ready.
fn mica_disk() -> Result<(), Failed> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let disk = scratch.path().join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(1 << 20)).map_err(|e| format!("disk image: {e}"))?;
    let socket = scratch.path().join("agent.sock");
    let config = VmConfig::new(mica_kernel()?).cmdline("test=timer").disk(&disk, false).agent_socket(&socket);
    let vm = Vm::new(config).map_err(|e| format!("VMM error: {e}"))?;
    if !socket.exists() {
        return Err(format!("no agent socket at {} once the VM is built", socket.display()).into());
    }
    let o = vm.run(Some(MICA_TIMEOUT)).map_err(|e| format!("VMM error: {e}"))?;
    for want in [
        "devices: virtio-blk.0 (virtio-mmio v2 at 0xd0000000, GSI 5 -> vector 0x40)",
        "devices: virtio-console.0 (virtio-mmio v2 at 0xd0001000, GSI 6 -> vector 0x41)",
    ] {
        if o.exit() != Some(ExitCode::Success) || !o.serial_text().contains(want) {
            return Err(format!("expected success and \"{want}\"; {}", describe(&o)).into());
        }
    }
    if socket.exists() {
        return Err(format!("the agent socket {} outlived the VM", socket.display()).into());
    }
    Ok(())
}

/// Four vCPUs: the kernel counts them in mica-vmm's MP table (there is no fw_cfg), starts the
/// three application processors with INIT and STARTUP, and all four vCPU threads stop when the
/// kernel writes its verdict.
fn mica_four_vcpus() -> Result<(), Failed> {
    let vm = Vm::new(VmConfig::new(mica_kernel()?).vcpus(4)).map_err(|e| format!("VMM error: {e}"))?;
    let o = vm.run(Some(MICA_TIMEOUT)).map_err(|e| format!("VMM error: {e}"))?;
    let want = "smp: 4 of 4 CPUs online, each with its own run queue (counted by the MP table)";
    if o.exit() != Some(ExitCode::Success) || !o.serial_text().contains(want) {
        return Err(format!("expected success and \"{want}\"; {}", describe(&o)).into());
    }
    Ok(())
}

/// Linux boot timeout: Debian's kernel reaches init in about a second on hardware KVM.
const LINUX_TIMEOUT: Duration = Duration::from_secs(60);

fn linux_reaches_init() -> Result<(), Failed> {
    let var = |name: &str| {
        std::env::var_os(name).map(PathBuf::from).ok_or(format!("{name} is not set (use `cargo xtask test`)"))
    };
    let (kernel, initramfs) = (var("MICA_POD_KERNEL")?, var("MICA_POD_INITRAMFS")?);
    // A 1 MiB disk on mica-vmm's virtio-mmio: the pod init loads virtio_mmio and virtio_blk, and
    // the kernel names the disk on the console.
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let disk = scratch.path().join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(1 << 20)).map_err(|e| format!("disk image: {e}"))?;
    let config = VmConfig::new(kernel)
        .initrd(initramfs)
        .memory_mib(256)
        .vcpus(2)
        .cmdline("console=ttyS0 reboot=t panic=-1 mica.pod=vmm")
        .disk(&disk, false)
        .agent_socket(scratch.path().join("agent.sock"));
    let vm = Vm::new(config).map_err(|e| format!("VMM error: {e}"))?;
    // The init starts its agent, which waits on its port for the host: nobody connects here (the
    // pod tests do), so the run ends at the timeout.
    let o = vm.run(Some(LINUX_TIMEOUT)).map_err(|e| format!("VMM error: {e}"))?;
    let serial = o.serial_text();
    if !serial.contains("Linux version") || !serial.contains("mica-init: pod vmm up") {
        return Err(format!("Debian's kernel did not reach the pod init; {}", describe(&o)).into());
    }
    if !serial.contains("smp: Brought up 1 node, 2 CPUs") {
        return Err(format!("the pod init came up, but Linux did not start both vCPUs; {}", describe(&o)).into());
    }
    if !serial.contains("[vda] 2048 512-byte logical blocks") {
        return Err(format!("the pod init came up, but Linux found no 1 MiB virtio disk; {}", describe(&o)).into());
    }
    Ok(())
}
