//! Components: the kernel's Wasmtime engines (configured by the runtime's shared
//! `engine_config`, with the kernel's code memory and CPU feature detection; one per CPU-limit
//! instrumentation in use), the platform services components run on, and running one component
//! to its end on the kernel thread `system` gives it.

pub mod chaos;
pub mod compile;
pub mod platform;
pub mod sync;
pub mod system;
pub mod tls;
pub mod traps;
pub mod vmem;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};

use mica_runtime::config::{Instrumentation, KERNEL_TARGET, PULLEY_TARGET, engine_config_for};
use mica_runtime::host::InstanceState;
use mica_runtime::platform::Platform;
use mica_runtime::program::{self, Interfaces, Launch, LoadError, Outcome, Ports, Prepared};
use mica_runtime::wasmtime::Engine;
use mica_runtime::wasmtime::component::{Component, Linker};
use spin::Once;

use crate::arch::cpu;
use crate::irq_lock::IrqMutex;
use crate::sched;

/// What an engine runs: native code for this CPU, or Pulley bytecode in Wasmtime's interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Native code (the kernel's target).
    Native,
    /// Pulley bytecode (`pulley64`), the same for every CPU.
    Pulley,
}

impl Kind {
    /// The kind of an artifact compiled for `target`.
    pub fn of_target(target: &str) -> Kind {
        if target == PULLEY_TARGET { Kind::Pulley } else { Kind::Native }
    }

    fn index(self, instrumentation: Instrumentation) -> usize {
        instrumentation.index() + Instrumentation::ALL.len() * (self as usize)
    }
}

/// One engine per [`Kind`] and [`Instrumentation`] (see [`Kind::index`]), each made when the
/// first component compiled that way is loaded: an artifact loads only into an engine
/// configured exactly as it was compiled.
static ENGINES: [Once<Result<Engine, String>>; 2 * Instrumentation::ALL.len()] =
    [const { Once::new() }; 2 * Instrumentation::ALL.len()];

/// The kernel's engine for native code compiled with `instrumentation`, made on first use.
pub fn engine(instrumentation: Instrumentation) -> Result<&'static Engine, String> {
    engine_of(Kind::Native, instrumentation)
}

/// The kernel's engine for `kind` of code compiled with `instrumentation`, made on first use.
pub fn engine_of(kind: Kind, instrumentation: Instrumentation) -> Result<&'static Engine, String> {
    ENGINES[kind.index(instrumentation)]
        .call_once(|| {
            let target = match kind {
                Kind::Native => KERNEL_TARGET,
                Kind::Pulley => PULLEY_TARGET,
            };
            // Code, linear memories and their guard regions are mapped through `vmem` (code
            // published read-execute, never writable); faults in wasm code reach Wasmtime
            // through `traps`. Pulley's interpreter checks every access itself.
            let mut config = engine_config_for(target, instrumentation).map_err(|e| format!("{e}"))?;
            config.with_custom_code_memory(Some(Arc::new(vmem::KernelCodeMemory)));
            if kind == Kind::Native {
                // SAFETY: `code_may_use` answers from CPUID and the kernel's own state (AVX-class
                // features are reported absent because their state is not enabled), so code is
                // only ever loaded for features that work here.
                unsafe {
                    config.detect_host_feature(cpu::code_may_use);
                }
            }
            Engine::new(&config).map_err(|e| {
                format!("cannot create the Wasmtime engine ({target}, instrumentation {instrumentation}): {e:#}")
            })
        })
        .as_ref()
        .map_err(String::clone)
}

/// Advances the epoch of every engine made so far that has epoch checks: called from the timer
/// interrupt, once per tick.
pub fn on_tick() {
    for kind in [Kind::Native, Kind::Pulley] {
        for instrumentation in Instrumentation::ALL.into_iter().filter(|i| i.epochs) {
            if let Some(Ok(engine)) = ENGINES[kind.index(instrumentation)].get() {
                engine.increment_epoch();
            }
        }
    }
}

/// Why a component did not run.
#[derive(Debug)]
pub enum StartError {
    /// The engine could not be made.
    Engine(String),
    /// The runtime refused the component.
    Load(LoadError),
    /// Its wasm could not be compiled.
    Compile(String),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Engine(e) => write!(f, "{e}"),
            StartError::Load(e) => write!(f, "{e}"),
            StartError::Compile(e) => write!(f, "{e}"),
        }
    }
}

/// What starting and running a component cost, in TSC ticks (guest instructions under QEMU's
/// `-icount shift=0`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Costs {
    /// Deserializing the artifact from the in-memory bundle, after compiling it for wasm (0 for
    /// a restart, which reuses it).
    pub load: u64,
    /// Linking the granted interfaces (unless a linker for them was made already), resolving the
    /// imports (not for a restart), making the store and instantiating.
    pub instantiate: u64,
    /// The `wasi:cli/run` call.
    pub run: u64,
}

/// One linker per engine and set of granted interfaces, made when the first component that
/// needs it is prepared: every component with the same grants shares it.
static LINKERS: IrqMutex<LinkerCache> = IrqMutex::new(BTreeMap::new());

/// The shared linkers, by engine index and granted interfaces.
type LinkerCache = BTreeMap<(usize, Interfaces), Arc<Linker<InstanceState>>>;

fn shared_linker(
    engine: &Engine,
    kind: Kind,
    instrumentation: Instrumentation,
    interfaces: Interfaces,
) -> Result<Arc<Linker<InstanceState>>, LoadError> {
    let key = (kind.index(instrumentation), interfaces);
    if let Some(linker) = LINKERS.lock().get(&key) {
        return Ok(linker.clone());
    }
    // Built outside the lock (it takes a while, and the lock keeps interrupts off); if another
    // thread built one meanwhile, the first one in is kept.
    let linker = Arc::new(program::linker(engine, interfaces)?);
    Ok(first_in(&LINKERS, key, linker))
}

/// The value under `key` in `map`, inserting `new` when there is none yet. A `new` that is not
/// needed is dropped after the lock is released, never under it: dropping a Wasmtime object can
/// take one of Wasmtime's own locks, whose wait yields the CPU, and a thread that yields while it
/// holds an [`IrqMutex`] leaves the next thread on its CPU spinning for that mutex forever, with
/// interrupts off (a hang seen in `tcg::wasm_traps` under load).
fn first_in<K: Ord, V: Clone>(map: &IrqMutex<BTreeMap<K, V>>, key: K, new: V) -> V {
    let (kept, spare) = {
        let mut map = map.lock();
        match map.entry(key) {
            alloc::collections::btree_map::Entry::Occupied(e) => (e.get().clone(), Some(new)),
            alloc::collections::btree_map::Entry::Vacant(e) => (e.insert(new).clone(), None),
        }
    };
    drop(spare);
    kept
}

/// An artifact loaded once for every component that uses it (a bundle holds one entry per
/// distinct artifact, however many components run it): Wasmtime's component and, per set of
/// granted interfaces, its imports resolved. Dropped when the last component using it ends.
struct Shared {
    /// Linked, per set of granted interfaces; dropped first (it holds the component).
    prepared: IrqMutex<BTreeMap<Interfaces, Prepared>>,
    component: Component,
    /// Where the artifact is mapped in place (none for an artifact compiled in the system, which
    /// Wasmtime copied into code memory); dropped last, after everything that uses it.
    _artifact: Option<vmem::BorrowedMapping>,
}

/// Where a component's native code comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// The bytes are an artifact compiled ahead of time (native code, or Pulley bytecode),
    /// loaded in place.
    Artifact(Kind),
    /// The bytes are wasm, compiled here for this CPU by the compiler component (or found in
    /// the module store under its SHA-256).
    Wasm {
        /// The system's compiler.
        compiler: &'a compile::Compiler,
        /// The wasm's SHA-256, from the manifest.
        sha256: &'a [u8; 32],
    },
}

/// The artifacts loaded now, by where they lie in the bundle and the engine they were loaded
/// into (its kind and instrumentation).
static SHARED: IrqMutex<BTreeMap<(usize, usize, usize), Weak<Shared>>> = IrqMutex::new(BTreeMap::new());

/// The loaded code of `bytes` (from `source`) for `instrumentation`: the one already loaded, or
/// loaded (compiled first, for wasm) now.
fn shared(
    name: &str,
    bytes: &'static [u8],
    source: Source<'_>,
    instrumentation: Instrumentation,
) -> Result<Arc<Shared>, StartError> {
    let kind = source.kind();
    let key = (bytes.as_ptr() as usize, bytes.len(), kind.index(instrumentation));
    let known = || SHARED.lock().get(&key).and_then(Weak::upgrade);
    if let Some(shared) = known() {
        return Ok(shared);
    }
    let engine = engine_of(kind, instrumentation).map_err(StartError::Engine)?;
    let loaded = match source {
        Source::Artifact(_) => {
            let mapping = vmem::BorrowedMapping::new(bytes).map_err(StartError::Engine)?;
            // The artifact passed the bundle's checksum and the artifact key check (made by
            // Mica's AOT compiler for this engine configuration, instrumentation included);
            // Wasmtime checks its version, settings (fuel and epochs among them) and CPU features
            // again. The mapping starts on a page, lives in `Shared` after the component, and the
            // bundle under it is never written.
            // SAFETY: so it is an artifact for this engine, mapped unchanged for the component's life.
            let component = unsafe { program::load_in_place(engine, mapping.bytes()) }.map_err(StartError::Load)?;
            Shared { prepared: IrqMutex::new(BTreeMap::new()), component, _artifact: Some(mapping) }
        }
        Source::Wasm { compiler, sha256 } => {
            // One compile at a time; a component that waited may find its code compiled meanwhile
            // (two components of one wasm).
            let _turn = compiler.turn();
            if let Some(shared) = known() {
                return Ok(shared);
            }
            let component =
                compiler.load_code(name, bytes, sha256, instrumentation, engine).map_err(StartError::Compile)?;
            Shared { prepared: IrqMutex::new(BTreeMap::new()), component, _artifact: None }
        }
    };
    let loaded = Arc::new(loaded);
    // Loaded outside the lock (it takes a while, and the lock keeps interrupts off); if another
    // thread loaded it meanwhile, the first one in is kept.
    let mut all = SHARED.lock();
    all.retain(|_, weak| weak.strong_count() > 0);
    match all.get(&key).and_then(Weak::upgrade) {
        Some(first) => Ok(first),
        None => {
            all.insert(key, Arc::downgrade(&loaded));
            Ok(loaded)
        }
    }
}

impl Source<'_> {
    /// The engine the code goes into.
    fn kind(&self) -> Kind {
        match self {
            Source::Artifact(kind) => *kind,
            Source::Wasm { .. } => Kind::Native,
        }
    }
}

/// A component loaded and linked once, for all of its instances.
pub struct Loaded {
    prepared: Prepared,
    /// The loaded artifact, kept while this component may run.
    _shared: Arc<Shared>,
    /// What loading and linking cost, charged to its first instance.
    first_costs: Costs,
}

impl core::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Loaded").field("first_costs", &self.first_costs).finish_non_exhaustive()
    }
}

/// Loads component `name`'s code into the engine for `instrumentation`, only once however many
/// components run it. An artifact (compiled with `instrumentation`, as its key says) is loaded in
/// place: its pages are mapped where they lie in the boot bundle, not copied. Wasm is compiled
/// first, for this CPU and with `instrumentation`. Then resolves its imports against a linker
/// with what `grants` allows (once per set of granted interfaces).
pub fn load(
    name: &str,
    bytes: &'static [u8],
    source: Source<'_>,
    instrumentation: Instrumentation,
    grants: &[String],
    has_entropy_source: bool,
) -> Result<Loaded, StartError> {
    let kind = source.kind();
    let engine = engine_of(kind, instrumentation).map_err(StartError::Engine)?;
    // Costs are the component thread's own CPU time: other threads running meanwhile don't count.
    let t0 = sched::cpu_ticks();
    let shared = shared(name, bytes, source, instrumentation)?;
    let t1 = sched::cpu_ticks();
    let interfaces =
        program::check_imports(engine, &shared.component, grants, has_entropy_source).map_err(StartError::Load)?;
    let known = shared.prepared.lock().get(&interfaces).cloned();
    let prepared = match known {
        Some(prepared) => prepared,
        None => {
            let linker = shared_linker(engine, kind, instrumentation, interfaces).map_err(StartError::Load)?;
            let prepared = program::prepare(&shared.component, &linker).map_err(StartError::Load)?;
            first_in(&shared.prepared, interfaces, prepared)
        }
    };
    let t2 = sched::cpu_ticks();
    Ok(Loaded { prepared, _shared: shared, first_costs: Costs { load: t1 - t0, instantiate: t2 - t1, run: 0 } })
}

/// Runs an instance of `loaded` to its end on this kernel thread (whose stack has
/// `COMPONENT_STACK_BYTES`, see `sched`). `first` says whether it is the component's first
/// instance, which is charged for loading and linking.
pub fn run(
    platform: &Arc<dyn Platform>,
    loaded: &Loaded,
    first: bool,
    launch: &Launch,
    ports: Ports,
) -> Result<(Outcome, Costs), StartError> {
    let (outcome, phases) = program::run_timed(&loaded.prepared, platform.clone(), ports, launch, sched::cpu_ticks)
        .map_err(StartError::Load)?;
    let before = if first { loaded.first_costs } else { Costs::default() };
    let costs = Costs { load: before.load, instantiate: before.instantiate + phases.instantiate, run: phases.run };
    Ok((outcome, costs))
}
