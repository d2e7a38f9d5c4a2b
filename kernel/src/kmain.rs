//! The boot sequence, from the first Rust instruction to the default system or a boot test.

use core::fmt;

use log::{LevelFilter, debug, info};
use mica_exit::ExitCode;

use crate::arch::boot_info::BootInfo;
use crate::arch::{self, cpu};
use crate::cmdline::KernelArgs;
use crate::mem::frames;
use crate::mem::range::{PAGE_SIZE, PhysRange};
use crate::mem::{heap, layout, paging, phys};
use crate::{console, kprintln};
use {crate::arch::clock, crate::scenarios, log::warn};

/// Prints what went wrong during boot and ends the run "failed".
fn fail(what: &str, error: impl fmt::Display) -> ! {
    console::emergency_print(format_args!("mica: boot failed: {what}: {error}\n"));
    arch::exit(ExitCode::Failed)
}

const MIB: u64 = 1024 * 1024;

/// Boots. Called once, by the arch entry, on the boot stack with interrupts disabled. The phases
/// run in this order, each needing what the ones before it set up.
pub fn start(start_info: u64) -> ! {
    let boot = early(start_info);
    let args = KernelArgs::parse(boot.record().cmdline()).unwrap_or_else(|e| fail("bad input", e));
    log::set_max_level(args.log);
    kprintln!("mica: Mica {} booting ({})", env!("CARGO_PKG_VERSION"), arch::NAME);
    info!("command line: \"{}\"", boot.record().cmdline());
    info!("boot: {}", boot.summary());
    for other in args.others() {
        debug!("command line: not for the kernel: {other}");
    }
    let cpu = processor();
    let plan = frame_plan(&boot);
    rest(&boot, &args, &cpu, &plan)
}

/// The phases that need the whole architecture API: memory management, interrupts and time, the
/// other CPUs, devices, then the system.
fn rest(boot: &BootInfo, args: &KernelArgs<'_>, cpu: &cpu::CpuInfo, plan: &frames::FramePlan) -> ! {
    memory(boot, plan, cpu.nx);
    let boot_cpu = arch::init_interrupts_and_time(args.tick_hz).unwrap_or_else(|(what, e)| fail(what, e));
    cpus(boot_cpu);
    devices(args);

    let ready = clock::counter().wrapping_sub(arch::boot::boot_counter());
    kprintln!("mica: ready (tsc_since_entry={ready})");
    system(boot, args)
}

/// The first phase: per-CPU data (the boot CPU is CPU 0, and the console lock and TLS slots use
/// it), the console and logger, the descriptor tables and trap handlers (so a fault is reported,
/// not a triple fault), and the boot information the loader passed at `start_info`.
fn early(start_info: u64) -> BootInfo {
    crate::percpu::init(0);
    console::init();
    console::init_logger(LevelFilter::Info);
    arch::init_traps();
    // SAFETY: the boot stub's identity map is still active and `start_info` is what the loader
    // passed.
    unsafe { BootInfo::read(start_info) }.unwrap_or_else(|e| fail("boot information", e))
}

/// The processor: its features, and the vector state every thread will save.
fn processor() -> cpu::CpuInfo {
    let cpu = cpu::init();
    info!("cpu: {cpu}");
    arch::init_vector_state();
    cpu
}

/// The frame plan: the RAM the boot information describes, less the firmware's memory, the
/// kernel image, the boot structures and the boot modules.
fn frame_plan(boot: &BootInfo) -> frames::FramePlan {
    let ram = boot.record().ram().unwrap_or_else(|e| fail("memory map", e));
    for e in boot.record().memory_map() {
        debug!("memory map: {:#012x}..{:#012x} {:?}", e.addr, e.addr + e.size, e.kind);
    }
    info!("memory: {} MiB of RAM in {} ranges", ram.total() / MIB, ram.len());
    let image = crate::mem::image::kernel_image();
    let mut reserved = [PhysRange::default(); 5 + crate::boot_record::MAX_MODULES];
    reserved[0] = arch::FIRMWARE_RESERVED;
    reserved[1] = image.whole;
    reserved[2..5].copy_from_slice(&boot.boot_structures());
    for (i, m) in boot.record().modules().enumerate() {
        reserved[5 + i] = PhysRange::sized(m.paddr, m.size);
        info!("boot module {i}: {:#x}..{:#x} ({} bytes)", m.paddr, m.paddr + m.size, m.size);
    }
    let plan = frames::plan(&ram, &reserved).unwrap_or_else(|e| fail("memory", e));
    let free = plan.free.total() / PAGE_SIZE;
    info!(
        "frames: {free} free ({} MiB), bitmap of {} KiB at {:#x}; kernel image {:#x}..{:#x}",
        free * PAGE_SIZE / MIB,
        plan.bitmap.len() / 1024,
        plan.bitmap.start,
        image.whole.start,
        image.whole.end
    );
    plan
}

/// Memory: the frame allocator over the plan, the kernel's page tables (W^X checked, no-execute
/// when the CPU has `nx`), the heap, and then the scheduler, which needs the heap.
fn memory(boot: &BootInfo, plan: &frames::FramePlan, nx: bool) {
    phys::init(plan);
    let ram = boot.record().ram().unwrap_or_else(|e| fail("memory map", e));
    let mut modules = [PhysRange::default(); crate::boot_record::MAX_MODULES];
    for (i, m) in boot.record().modules().enumerate() {
        modules[i] = PhysRange::sized(m.paddr, m.size);
    }
    let report =
        paging::init(&ram, &modules[..boot.record().modules().count()], nx).unwrap_or_else(|e| fail("paging", e));
    let audit = paging::audit_wx()
        .unwrap_or_else(|addr| fail("W^X", format_args!("page {addr:#x} is writable and executable")));
    info!(
        "paging: {} x 2 MiB + {} x 4 KiB pages, {} guard pages unmapped; W^X holds for all {} mappings",
        report.large_pages, report.small_pages, report.guard_pages, audit.leaves
    );
    heap::init().unwrap_or_else(|e| fail("heap", e));
    info!("heap: {} KiB mapped at {:#x}", heap::mapped_bytes() / 1024, layout::HEAP_BASE);
    crate::sched::init().unwrap_or_else(|e| fail("scheduler", e));
}

/// The other CPUs: started (each with its own run queue) and counted; the boot CPU's
/// interrupt-controller id is `boot_cpu`.
fn cpus(boot_cpu: u32) {
    crate::percpu::this().hw_id.store(boot_cpu, core::sync::atomic::Ordering::Relaxed);
    let smp = arch::smp::start_aps(boot_cpu);
    match (smp.source, smp.present) {
        (arch::smp::CpuSource::Unknown, _) => info!("smp: 1 CPU (neither fw_cfg nor an MP table to count the others)"),
        (_, 1) => info!("smp: 1 CPU"),
        (source, present) => {
            info!("smp: {} of {present} CPUs online, each with its own run queue (counted by {source})", smp.online)
        }
    }
    if smp.online < smp.present {
        warn!("smp: {} CPU(s) did not start", smp.present - smp.online);
    }
}

/// Devices for driver components: found and routed (masked) to this CPU, the boot CPU.
fn devices(args: &KernelArgs<'_>) {
    let mut described: alloc::vec::Vec<_> = args.mmio_devices.iter().flatten().copied().collect();
    if described.is_empty()
        && let Some(platform) = arch::irq::platform_virtio_mmio()
    {
        described = platform;
        if described.is_empty() {
            log::debug!("devices: the platform describes no virtio-mmio transports");
            return;
        }
    }
    if crate::hw::discover(&described) == 0 {
        log::debug!("devices: no virtio-mmio devices");
    }
}

/// The system: the boot test the command line names, or else the components of the boot bundle
/// (the first boot module), or else nothing. Ends the run with its verdict.
fn system(boot: &BootInfo, args: &KernelArgs<'_>) -> ! {
    match args.test {
        Some(name) => scenarios::run(name),
        None => match boot.record().modules().next() {
            Some(m) => {
                // SAFETY: the module's range is RAM (or mapped read-only by `paging::init`),
                // reserved from the frame allocator, and never written.
                let bundle = unsafe { core::slice::from_raw_parts(m.paddr as *const u8, m.size as usize) };
                let supervision = crate::wasm::system::Supervision {
                    max_restarts: args.restarts,
                    first_backoff_ms: args.restart_backoff_ms,
                };
                arch::exit(crate::wasm::system::run(bundle, args.stop_after_ms, supervision, args.chaos))
            }
            None => {
                kprintln!("mica: no boot bundle, so no components to run; powering off");
                arch::exit(ExitCode::Success)
            }
        },
    }
}
