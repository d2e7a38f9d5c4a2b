//! Running the system: the boot bundle's manifest, each component on a kernel thread of its own.
//! Each component is checked against this kernel and CPU before it is loaded; a refusal or a
//! failure is reported with the component's name and the reason, and the others still run.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use mica_bundle::{Bundle, Code, ComponentSpec, NativeCode, Restart};
use mica_exit::ExitCode;
use mica_runtime::config::{CONFIG_VERSION, Instrumentation, KERNEL_TARGET, PULLEY_TARGET, WASMTIME_VERSION};
use mica_runtime::host::filesystem::Preopen;
use mica_runtime::host::sockets::NetworkGrant;
use mica_runtime::ipc::IpcPort;
use mica_runtime::platform::Platform;
use mica_runtime::program::{self, CpuTimeLimit, Launch, Ports};

use super::compile::Compiler;
use super::platform::KernelPlatform;
use super::{Kind, Source};
use crate::arch::{clock, cpu};
use crate::ipc::blocking::{self, Port};
use crate::ipc::state::Connection;
use crate::irq_lock::IrqMutex;
use crate::{kprintln, sched};

/// How many times an `on-failure` component is started again before it is given up on.
/// The longest wait between restarts.
const MAX_BACKOFF_MS: u64 = 5_000;

/// How the system restarts failed components (from the kernel command line).
#[derive(Clone, Copy, Debug)]
pub struct Supervision {
    /// How many times `restart = "on-failure"` starts a failed component again (`restarts=`).
    pub max_restarts: u32,
    /// The wait before the first restart (`restart_backoff_ms=`); it doubles with each further
    /// one, up to [`MAX_BACKOFF_MS`].
    pub first_backoff_ms: u64,
}

/// An instance that ran this long before it ended starts the waits between restarts over: a
/// component that fails now and then is restarted as quickly as the first time, one that fails
/// at once again and again waits longer each time.
const BACKOFF_RESET_MS: u64 = 10_000;

/// The wait before restart number `attempt` (1-based) of a streak (see [`BACKOFF_RESET_MS`]): by
/// default 100 ms, 200 ms, 400 ms, ... at most 5 s.
fn backoff_ms(supervision: Supervision, attempt: u32) -> u64 {
    supervision.first_backoff_ms.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF_MS)
}

/// Sleeps this component's thread (off the run queue) for `ms`.
fn pause_ms(ms: u64) {
    sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + ms * 1_000_000);
}

/// Why an artifact does not fit this kernel or this CPU; if it fits, the instrumentation it was
/// compiled with (which picks the engine it is loaded into).
pub(super) fn check_native(spec: &NativeCode) -> Result<Instrumentation, String> {
    if spec.wasmtime_version != WASMTIME_VERSION {
        return Err(format!(
            "artifact compiled by Wasmtime {}, this kernel runs Wasmtime {WASMTIME_VERSION}",
            spec.wasmtime_version
        ));
    }
    if spec.target != KERNEL_TARGET && spec.target != PULLEY_TARGET {
        return Err(format!(
            "artifact compiled for target {}, this kernel runs {KERNEL_TARGET} and {PULLEY_TARGET}",
            spec.target
        ));
    }
    if spec.config_version != CONFIG_VERSION {
        return Err(format!(
            "artifact compiled with engine settings version {}, this kernel uses version {CONFIG_VERSION}",
            spec.config_version
        ));
    }
    let missing: Vec<&str> =
        spec.cpu_features.iter().map(String::as_str).filter(|f| cpu::code_may_use(f) != Some(true)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "artifact compiled for CPU features this CPU does not offer (or the kernel has not enabled): {}",
            missing.join(", ")
        ));
    }
    Ok(Instrumentation { fuel: spec.fuel_instrumented, epochs: spec.epochs_instrumented })
}

/// Why a component's code does not fit this kernel, this CPU or its own limits; if it fits, the
/// instrumentation its code has (native code) or needs (wasm, compiled with what its limits need).
fn check_code(spec: &ComponentSpec) -> Result<Instrumentation, String> {
    let instrumentation = match &spec.code {
        Code::Native(native) => check_native(native)?,
        Code::Wasm { .. } => Instrumentation::for_limits(spec.fuel.is_some(), spec.cpu_time_limit_ms.is_some()),
    };
    program::check_limits(instrumentation, spec.fuel, spec.cpu_time_limit_ms).map_err(|e| format!("{e}"))?;
    Ok(instrumentation)
}

fn launch(spec: &ComponentSpec) -> Launch {
    let tick_ms = (clock::tick_ns() / 1_000_000).max(1);
    Launch {
        name: spec.name.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        memory_limit: usize::try_from(spec.memory_limit).unwrap_or(usize::MAX),
        fuel: spec.fuel,
        cpu_time: spec.cpu_time_limit_ms.map(|ms| CpuTimeLimit { ms, epochs: ms.div_ceil(tick_ms) }),
        dirs: spec
            .dirs
            .iter()
            .map(|d| Preopen { path: d.path.clone(), connection: d.connection.clone(), read_only: d.read_only })
            .collect(),
        network: spec.network.as_ref().map(|n| NetworkGrant {
            connection: n.connection.clone(),
            listen: n.listen.clone(),
            // Checked when the manifest was; a name whose address does not parse is left out.
            hosts: n.hosts.iter().filter_map(|(name, ip)| Some((name.clone(), ip.parse().ok()?))).collect(),
        }),
    }
}

/// Whether an instance that ended with `success` after `attempt` restarts is started again, and
/// the restart number if so.
fn restarts(policy: Restart, success: bool, attempt: u32, max_restarts: u32) -> Option<u32> {
    match policy {
        Restart::Never => None,
        Restart::OnFailure if success || attempt >= max_restarts => None,
        Restart::OnFailure | Restart::Always => Some(attempt + 1),
    }
}

/// Tells the compiler, when dropped, that a component of wasm code no longer needs the store.
struct OneDone(Arc<Compiler>);

impl Drop for OneDone {
    fn drop(&mut self) {
        self.0.one_done();
    }
}

/// Compiles (or finds in the module store) the native code of component `name`, which runs on
/// Pulley meanwhile, on a thread of its own; the component switches to it at its next start.
fn compile_in_background(
    compiler: Arc<Compiler>,
    name: &str,
    wasm: &'static [u8],
    sha256: [u8; 32],
    instrumentation: Instrumentation,
    done: Option<OneDone>,
) {
    let thread_name = format!("compile {name}");
    let name = String::from(name);
    let spawned = sched::spawn(&thread_name, move || {
        // Dropped last, after the turn: the store is no longer needed for this component.
        let _done = done;
        let engine = match super::engine(instrumentation) {
            Ok(engine) => engine,
            Err(e) => {
                kprintln!("mica: component {name}: no native code ({e}); it stays on Pulley");
                return;
            }
        };
        let _turn = compiler.turn();
        match compiler.load_code(&name, wasm, &sha256, instrumentation, engine) {
            Ok(_) => kprintln!("mica: component {name}: native code ready; it runs from its next start"),
            Err(e) => kprintln!("mica: component {name}: no native code ({e}); it stays on Pulley"),
        }
    });
    if let Err(e) = spawned {
        kprintln!("mica: component {thread_name}: cannot start the compile ({e}); it stays on Pulley");
    }
}

/// Runs one component to its end (again, per its restart policy). Returns whether it succeeded.
fn run_instances(
    platform: &Arc<dyn Platform>,
    bundle: &Bundle<'static>,
    compiler: &Arc<Compiler>,
    index: usize,
    spec: &ComponentSpec,
    supervision: Supervision,
) -> bool {
    let name = &spec.name;
    // Until its code is loaded (or refused), a component of wasm code may need the module store.
    let mut wasm_pending = matches!(spec.code, Code::Wasm { .. }).then(|| OneDone(compiler.clone()));
    let instrumentation = match check_code(spec) {
        Ok(instrumentation) => instrumentation,
        Err(reason) => {
            kprintln!("mica: component {name} refused: {reason}");
            return false;
        }
    };
    if instrumentation != Instrumentation::NONE {
        log::info!("component {name}: code instrumented for CPU limits ({instrumentation})");
    }
    let (entry, code) = match &spec.code {
        Code::Native(native) => (&native.artifact, Source::Artifact(Kind::of_target(&native.target))),
        Code::Wasm { entry, sha256, .. } => (entry, Source::Wasm { compiler, sha256 }),
    };
    let bytes = match bundle.entry(entry).and_then(|e| e.data()) {
        Ok(bytes) => bytes,
        Err(e) => {
            kprintln!("mica: component {name} refused: {e}");
            return false;
        }
    };
    // Loaded (compiled first, for wasm) and linked once: restarts reuse it. A component that
    // starts on Pulley (unless its native code was made earlier this boot) runs its Pulley
    // bytecode at once while its native code is made on another thread.
    let mut on_pulley = false;
    let entropy = platform.has_entropy_source();
    let loaded = match &spec.code {
        Code::Wasm { pulley: Some(pulley), sha256, .. } if !compiler.has_compiled(bytes, instrumentation) => {
            let pulley_bytes = match check_native(pulley)
                .and_then(|compiled| {
                    if compiled == instrumentation {
                        Ok(())
                    } else {
                        Err(format!(
                            "its Pulley bytecode has instrumentation {compiled}, its limits need {instrumentation}"
                        ))
                    }
                })
                .and_then(|()| bundle.entry(&pulley.artifact).and_then(|e| e.data()).map_err(|e| format!("{e}")))
            {
                Ok(pulley_bytes) => pulley_bytes,
                Err(e) => {
                    kprintln!("mica: component {name} refused: {e}");
                    return false;
                }
            };
            let loaded =
                super::load(name, pulley_bytes, Source::Artifact(Kind::Pulley), instrumentation, &spec.grants, entropy);
            if loaded.is_ok() {
                on_pulley = true;
                kprintln!(
                    "mica: component {name}: starts on Pulley bytecode (interpreted) while its native code is made"
                );
                compile_in_background(compiler.clone(), name, bytes, *sha256, instrumentation, wasm_pending.take());
            }
            loaded
        }
        _ => super::load(name, bytes, code, instrumentation, &spec.grants, entropy),
    };
    drop(wasm_pending);
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            kprintln!("mica: component {name} refused: {e}");
            return false;
        }
    };
    let launch = launch(spec);
    let mut attempt = 0;
    // Restarts since an instance last ran for BACKOFF_RESET_MS: what the wait grows with.
    let mut streak = 0;
    loop {
        if on_pulley
            && compiler.has_compiled(bytes, instrumentation)
            && let Code::Wasm { sha256, .. } = &spec.code
        {
            match super::load(name, bytes, Source::Wasm { compiler, sha256 }, instrumentation, &spec.grants, entropy) {
                Ok(native) => {
                    loaded = native;
                    on_pulley = false;
                    kprintln!("mica: component {name}: runs native code from this start");
                }
                Err(e) => kprintln!("mica: component {name}: stays on Pulley: {e}"),
            }
        }
        let start = clock::monotonic_ns().unwrap_or(0);
        let port = match Port::open(index, spec.handles, spec.create_channels) {
            Ok(port) => port,
            Err(e) => {
                kprintln!("mica: component {name} refused: {e}");
                return false;
            }
        };
        let ipc: Arc<dyn IpcPort> = port.clone();
        let hw = Arc::new(crate::hw::instance::Instance::new(name, spec.devices.clone(), spec.dma_limit, port.clone()));
        let ports = Ports { ipc: Some(ipc), hw: Some(hw.clone()) };
        // Each instance of a component that may be restarted learns how many times it was
        // restarted before it. A component that never is sees exactly its manifest's environment.
        let mut instance = launch.clone();
        if spec.restart != Restart::Never {
            instance.env.push((String::from("MICA_RESTARTS"), format!("{attempt}")));
        }
        super::chaos::instance_started(index);
        let ran = super::run(platform, &loaded, attempt == 0, &instance, ports);
        super::chaos::instance_ended(index);
        // Its devices are reset and released, and its DMA memory freed, before anything else.
        hw.end();
        let again = match &ran {
            Ok((outcome, _)) => restarts(spec.restart, outcome.success(), attempt, supervision.max_restarts),
            Err(_) => None,
        };
        // Its handles close before anything else happens, so its peers see at once that it ended.
        port.end_instance(again.is_some());
        match ran {
            Err(e) => {
                kprintln!("mica: component {name} refused: {e}");
                return false;
            }
            Ok((outcome, costs)) => {
                let ms = (clock::monotonic_ns().unwrap_or(0) - start) / 1_000_000;
                kprintln!("mica: component {name} {outcome} ({ms} ms)");
                if crate::arch::smp::online() > 1 {
                    let mask = sched::current_cpus();
                    CPUS_USED.fetch_or(mask, core::sync::atomic::Ordering::Relaxed);
                    kprintln!("mica: component {name} ran on CPU(s) {}", cpu_list(mask));
                }
                // Machine-readable, for `cargo xtask bench components`: TSC ticks per phase.
                kprintln!(
                    "mica: component-costs name={name} load={} instantiate={} run={}",
                    costs.load,
                    costs.instantiate,
                    costs.run
                );
                memory_report("memory-after", name);
                let Some(next) = again else { return outcome.success() };
                attempt = next;
                streak = if ms >= BACKOFF_RESET_MS { 1 } else { streak + 1 };
                let wait = backoff_ms(supervision, streak);
                match spec.restart {
                    Restart::OnFailure => kprintln!(
                        "mica: component {name}: restarting (on-failure, attempt {attempt} of {}, \
                         after {wait} ms)",
                        supervision.max_restarts
                    ),
                    _ => kprintln!("mica: component {name}: restarting (always, restart {attempt}, after {wait} ms)"),
                }
                pause_ms(wait);
            }
        }
    }
}

/// Reports the kernel's memory (machine-readable, for the boot tests that check every frame comes
/// back): free frames, the heap's mapped bytes, and what the wasm region holds. `what` is
/// `memory-after` when an instance of `name` ended (its loaded code is still held for the next
/// one) and `memory-after-component` when the component ended for good (nothing of it is left).
fn memory_report(what: &str, name: &str) {
    let wasm = super::vmem::usage();
    kprintln!(
        "mica: {what} name={name} wasm_pages={} wasm_reservations={} frames_free={} heap_bytes={} \
         image_pages_mapped={} image_pages_copied={}",
        wasm.pages,
        wasm.reservations,
        crate::mem::phys::free_frames(),
        crate::mem::heap::mapped_bytes(),
        wasm.image_pages_mapped,
        wasm.image_pages_copied
    );
}

/// Prints what the system holds once every running component waits: `waiting` components, the
/// TSC ticks since they were started (instructions under `-icount shift=0`), and memory (wasm
/// pages committed, frames free and promised, kernel heap mapped).
fn idle_report(waiting: usize, started_tsc: u64) {
    let wasm = super::vmem::usage();
    kprintln!(
        "mica: all-waiting components={waiting} tsc_since_start={} wasm_pages={} wasm_reservations={} \
         frames_free={} frames_promised={} heap_bytes={}",
        crate::arch::clock::counter().wrapping_sub(started_tsc),
        wasm.pages,
        wasm.reservations,
        crate::mem::phys::free_frames(),
        crate::mem::phys::reserved_frames(),
        crate::mem::heap::mapped_bytes()
    );
}

/// The CPUs any component instance ran on, as a bit set.
static CPUS_USED: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// `mask` as a list: `0, 1`.
fn cpu_list(mask: u32) -> String {
    let cpus: Vec<String> = (0..32).filter(|c| mask & (1 << c) != 0).map(|c| format!("{c}")).collect();
    cpus.join(", ")
}

/// What the component threads report back to the boot thread.
struct Tally {
    /// Components whose thread has finished.
    finished: usize,
    /// Of those, the ones that succeeded.
    succeeded: usize,
    /// Names of the components still running.
    running: Vec<String>,
}

/// Runs every component of the bundle, each on a kernel thread of its own (so that one in an
/// endless loop does not hold up the others: the timer tick preempts it). The verdict is success
/// when all of them succeeded. With `stop_after_ms`, the system stops that long after the
/// components started, whatever is still running (reported by name; the verdict is then failed).
pub fn run(
    bytes: &'static [u8],
    stop_after_ms: Option<u64>,
    supervision: Supervision,
    chaos: Option<crate::cmdline::Chaos>,
) -> ExitCode {
    let bundle = match Bundle::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            kprintln!("mica: boot bundle refused: {e}");
            return ExitCode::Failed;
        }
    };
    let manifest = match bundle.manifest() {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            kprintln!("mica: boot bundle refused: {e}");
            return ExitCode::Failed;
        }
        Err(e) => {
            kprintln!("mica: boot bundle refused: {e}");
            return ExitCode::Failed;
        }
    };
    let platform: Arc<dyn Platform> = Arc::new(KernelPlatform::new());
    let total = manifest.components.len();
    let mut names: Vec<String> = manifest.components.iter().map(|c| c.name.clone()).collect();
    let mut connections: Vec<Connection> = manifest
        .connections
        .iter()
        .map(|c| Connection { name: c.name.clone(), from: c.from as usize, to: c.to as usize })
        .collect();
    // With a module store, the kernel is one more IPC participant (after the components), the
    // client of connection `modules`.
    let store = match manifest.module_store.map(|i| i as usize) {
        Some(index) if index < total => {
            names.push(String::from("kernel"));
            connections.push(Connection { name: mica_device::modules::CONNECTION.into(), from: total, to: index });
            Some(total)
        }
        Some(index) => {
            kprintln!("mica: boot bundle refused: its module store is component {index} of {total}");
            return ExitCode::Failed;
        }
        None => None,
    };
    let wasm_components = manifest.components.iter().filter(|c| matches!(c.code, Code::Wasm { .. })).count();
    // The store keys of every component's code on this CPU: what a full store must not evict.
    let cpu = super::compile::this_cpu();
    let keep: BTreeSet<String> = manifest
        .components
        .iter()
        .filter_map(|c| match (&c.code, check_code(c)) {
            (Code::Wasm { sha256, .. }, Ok(instrumentation)) => {
                Some(super::compile::store_key(sha256, &cpu, instrumentation))
            }
            _ => None,
        })
        .collect();
    let compiler = Arc::new(Compiler::new(
        bundle.clone(),
        manifest.compiler.clone(),
        platform.clone(),
        store,
        wasm_components,
        keep.into_iter().collect(),
    ));
    if let Err(e) = blocking::init(names, &connections) {
        kprintln!("mica: boot bundle refused: cannot set up its connections: {e}");
        return ExitCode::Failed;
    }
    if !connections.is_empty() {
        kprintln!("mica: {} connection(s) between components", connections.len());
    }
    kprintln!("mica: system of {total} component(s)");
    if let Some(index) = manifest.module_store {
        let wasm = if wasm_components == 0 { String::from("none") } else { format!("{wasm_components}") };
        kprintln!(
            "mica: module store: component {}; components compiled at boot: {wasm}",
            manifest.components[index as usize].name
        );
    }
    if compiler.all_done() {
        // Nothing to compile: the store has no client.
        compiler.close_store();
    }
    super::chaos::register(manifest.components.iter().map(|c| (c.name.clone(), c.restart != Restart::Never)));
    let started_tsc = crate::arch::clock::counter();
    let tally = Arc::new(IrqMutex::new(Tally { finished: 0, succeeded: 0, running: Vec::new() }));
    for (index, spec) in manifest.components.into_iter().enumerate() {
        let name = spec.name.clone();
        let wasm_code = matches!(spec.code, Code::Wasm { .. });
        tally.lock().running.push(name.clone());
        let (platform, thread_tally, bundle, thread_compiler) =
            (platform.clone(), tally.clone(), bundle.clone(), compiler.clone());
        let priority = match spec.priority {
            mica_bundle::Priority::Low => sched::Priority::Low,
            mica_bundle::Priority::Normal => sched::Priority::Normal,
            mica_bundle::Priority::High => sched::Priority::High,
        };
        if priority != sched::Priority::Normal {
            kprintln!("mica: component {name}: priority {priority}");
        }
        let spawned = sched::spawn_with(&format!("component {name}"), priority, move || {
            let ok = run_instances(&platform, &bundle, &thread_compiler, index, &spec, supervision);
            // However it ended, IPC learns that it will not run again.
            blocking::component_ended(index);
            super::chaos::component_ended(index);
            memory_report("memory-after-component", &spec.name);
            if let Some(used) = sched::stack_high_water() {
                kprintln!("mica: stack-used name={} bytes={used} of={}", spec.name, sched::THREAD_STACK_BYTES);
            }
            let mut tally = thread_tally.lock();
            tally.finished += 1;
            tally.succeeded += usize::from(ok);
            tally.running.retain(|running| *running != spec.name);
        });
        if let Err(e) = spawned {
            kprintln!("mica: component {name} refused: {e}");
            if wasm_code {
                compiler.one_done();
            }
            blocking::component_ended(index);
            let mut tally = tally.lock();
            tally.finished += 1;
            tally.running.retain(|running| *running != name);
        }
    }
    if let Some(chaos) = chaos {
        super::chaos::start(chaos);
    }
    let deadline = stop_after_ms.map(|ms| clock::monotonic_ns().unwrap_or(0) + ms * 1_000_000);
    let mut idle_reported = false;
    loop {
        let (finished, succeeded, running) = {
            let tally = tally.lock();
            (tally.finished, tally.succeeded, tally.running.clone())
        };
        if !idle_reported && finished < total && sched::busy_besides_current() == 0 {
            // Every component still running is waiting (blocked in IPC, asleep): what the system
            // holds now is what idle components cost.
            idle_reported = true;
            idle_report(total - finished, started_tsc);
        }
        if finished == total {
            if crate::arch::smp::online() > 1 {
                let used = CPUS_USED.load(core::sync::atomic::Ordering::Relaxed);
                kprintln!("mica: components ran on CPUs {} of {}", cpu_list(used), crate::arch::smp::online());
            }
            // Machine-readable, for `cargo xtask bench late-binding`: instructions under icount.
            kprintln!(
                "mica: system ran (tsc_since_entry={} idle={})",
                crate::arch::clock::counter().wrapping_sub(crate::arch::boot::boot_counter()),
                sched::idle_ticks()
            );
            kprintln!("mica: all components finished: {succeeded} of {total} succeeded; powering off");
            return if succeeded == total { ExitCode::Success } else { ExitCode::Failed };
        }
        if let (Some(deadline), Some(ms)) = (deadline, stop_after_ms)
            && clock::monotonic_ns().unwrap_or(0) >= deadline
        {
            kprintln!(
                "mica: stop_after_ms={ms} reached with {} component(s) still running: {}; {succeeded} of {total} \
                 succeeded; powering off",
                running.len(),
                running.join(", ")
            );
            return ExitCode::Failed;
        }
        // The boot thread only waits, off the run queue, looking again every tick.
        sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + clock::tick_ns().max(1));
    }
}
