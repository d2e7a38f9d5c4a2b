//! Late binding: components shipped as wasm are compiled here, at boot, for exactly the CPU the
//! kernel finds, by the compiler component (Wasmtime's Cranelift built for wasm32-wasip2, compiled
//! ahead of time for the baseline CPU: the one component that must be). It runs in a sandbox of
//! its own like any component, one fresh instance per compile, one compile at a time; a compile
//! that fails (a malformed component, a trap or out-of-memory in the compiler) fails only the
//! component it was for, with the reason.
//!
//! What is compiled is kept in the module store, a service component on a disk, when the system
//! has one (`mica_device::modules`): under a key naming the wasm (SHA-256) and everything the code
//! depends on (the artifact key, CPU features included), so that the next boot on this CPU
//! compiles nothing and a boot on another CPU compiles again beside the old entries. An entry the
//! store finds corrupt, or Wasmtime refuses, is named and compiled again. The kernel talks to the
//! store over IPC like a component does (its own port, connection `modules`), and closes its
//! connection once every component of wasm code is loaded, which ends the store.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mica_bundle::{Bundle, CompilerSpec};
use mica_device::modules::{self, MAX_CHUNK_BYTES, ModulesErrorCode, Response};
use mica_runtime::compiler::{self, CompilerPre, Request};
use mica_runtime::config::{ArtifactKey, CpuFeature, CpuProfile, Instrumentation, KERNEL_TARGET};
use mica_runtime::ipc::{Handle, IpcPort};
use mica_runtime::platform::Platform;
use mica_runtime::program::{self, Launch};
use mica_runtime::wasmtime::Engine;
use mica_runtime::wasmtime::component::Component;

use super::{Shared, Source};
use crate::arch::{clock, cpu};
use crate::ipc::blocking::{self, Port};
use crate::irq_lock::IrqMutex;
use crate::{kprintln, sched};

/// How long the kernel waits for one answer of the module store, in nanoseconds: past it, the
/// store is given up on for this boot (compiled code is then kept in memory only).
const STORE_TIMEOUT_NS: u64 = 30_000_000_000;

/// The handle table of the kernel's own IPC port (one connection).
const STORE_HANDLES: u16 = 4;

/// The kernel's connection to the module store.
enum StoreLink {
    /// Not opened yet; the kernel is IPC component `index`.
    Closed { index: usize },
    /// Open.
    Open { index: usize, port: Arc<Port>, handle: Handle },
    /// Given up on, or closed for good (every component of wasm code is loaded).
    Gone,
    /// The system has no module store.
    None,
}

/// The name the compiler component runs under (its console prefix and reports).
const NAME: &str = "compiler";

/// What the compiler component may import: the WASI interfaces of a `std` program, no more (it
/// has no preopened directories, no IPC, no devices).
const GRANTS: &[&str] = &["wasi"];

/// The compiler component, loaded on first use.
struct Ready {
    pre: CompilerPre,
    /// Its loaded artifact, kept while the system runs.
    _shared: Arc<Shared>,
}

/// An artifact compiled this boot, and the component it was first compiled for.
struct Compiled {
    artifact: Arc<[u8]>,
    first: String,
}

/// The system's compiler: the bundle's compiler component, if it has one.
pub struct Compiler {
    bundle: Bundle<'static>,
    spec: Option<CompilerSpec>,
    platform: Arc<dyn Platform>,
    /// Loaded on first use; dropped once every component of wasm code is loaded (restarts find
    /// their code kept in `compiled`), so that its memory comes back. Used only by the thread
    /// holding a [`Turn`].
    ready: spin::Mutex<Option<Result<Arc<Ready>, String>>>,
    busy: AtomicBool,
    /// What was compiled (or found in the store) this boot, by where its wasm lies in the bundle
    /// and its instrumentation: a later component (or a restart after every instance ended) of
    /// the same wasm loads it again without compiling or asking the store.
    compiled: IrqMutex<BTreeMap<(usize, usize, usize), Compiled>>,
    /// The module store; used only by the thread holding a [`Turn`].
    store: spin::Mutex<StoreLink>,
    /// Components of wasm code not yet loaded (or refused): when none is left, the kernel closes
    /// its connection to the store.
    pending: AtomicUsize,
    /// The store keys of every component's code on this CPU: named to the store when the kernel
    /// connects, so that a full store evicts only what this system does not reference.
    keep: Vec<String>,
}

impl core::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Compiler").field("spec", &self.spec).finish_non_exhaustive()
    }
}

/// A turn at the compiler: while it is held, no other thread compiles.
#[derive(Debug)]
pub struct Turn<'a>(&'a Compiler);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The CPU features compiled code may use here: what CPUID reports and the kernel has enabled.
pub fn this_cpu() -> CpuProfile {
    CpuProfile::for_target(
        KERNEL_TARGET,
        "this CPU",
        CpuFeature::of_target(KERNEL_TARGET).filter(|f| cpu::code_may_use(f.name()) == Some(true)),
    )
}

impl Compiler {
    /// The compiler of a system booted from `bundle`, whose manifest names `spec`, with
    /// `wasm_components` components of wasm code to load, whose store keys are `keep`; `store` is
    /// the kernel's IPC component index when the system has a module store (a connection
    /// `modules` from it to the store).
    pub fn new(
        bundle: Bundle<'static>,
        spec: Option<CompilerSpec>,
        platform: Arc<dyn Platform>,
        store: Option<usize>,
        wasm_components: usize,
        keep: Vec<String>,
    ) -> Compiler {
        Compiler {
            bundle,
            spec,
            platform,
            ready: spin::Mutex::new(None),
            busy: AtomicBool::new(false),
            compiled: IrqMutex::new(BTreeMap::new()),
            store: spin::Mutex::new(store.map_or(StoreLink::None, |index| StoreLink::Closed { index })),
            pending: AtomicUsize::new(wasm_components),
            keep,
        }
    }

    /// One component of wasm code was loaded, or refused: when it was the last, the kernel
    /// closes its connection to the module store (which then ends).
    pub fn one_done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _turn = self.turn();
            self.close_store();
            // Nothing is left to compile: the compiler's loaded code and memory go back.
            *self.ready.lock() = None;
        }
    }

    /// Whether the native code of `wasm` (from the bundle) with `instrumentation` was compiled, or
    /// found in the module store, earlier this boot.
    pub fn has_compiled(&self, wasm: &[u8], instrumentation: Instrumentation) -> bool {
        self.compiled.lock().contains_key(&(wasm.as_ptr() as usize, wasm.len(), instrumentation.index()))
    }

    /// Whether no component of wasm code is left to load.
    pub fn all_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Closes the kernel's connection to the module store for good (the caller holds a [`Turn`],
    /// or no component thread runs yet).
    pub fn close_store(&self) {
        let mut link = self.store.lock();
        let index = match *link {
            StoreLink::Closed { index } => index,
            StoreLink::Open { index, ref port, .. } => {
                port.end_instance(false);
                index
            }
            StoreLink::Gone | StoreLink::None => return,
        };
        *link = StoreLink::Gone;
        blocking::component_ended(index);
    }

    /// Gives up on the store for this boot, saying why (once).
    fn store_failed(&self, why: &str) {
        kprintln!("mica: module store unavailable: {why}; compiled code is kept for this boot only");
        self.close_store();
    }

    /// One request to the module store; `None` when there is no store (or it was given up on).
    fn store_call(&self, request: &modules::Request) -> Option<Response> {
        let mut link = self.store.lock();
        if let StoreLink::Closed { index } = *link {
            let opened = Port::open(index, STORE_HANDLES, false)
                .and_then(|port| port.connect(modules::CONNECTION).map(|handle| (port, handle)));
            match opened {
                Ok((port, handle)) => {
                    *link = StoreLink::Open { index, port: port.clone(), handle };
                    drop(link);
                    // First, what this system references: a full store keeps it.
                    for keys in self.keep.chunks(modules::MAX_KEEP_KEYS) {
                        let keep = modules::Request::Keep { keys: keys.to_vec() };
                        match Self::call(&port, handle, &keep) {
                            Ok(Response::Kept) => {}
                            Ok(other) => {
                                self.store_failed(&format!("it answered a keep list with {}", describe(&other)));
                                return None;
                            }
                            Err(e) => {
                                self.store_failed(&e);
                                return None;
                            }
                        }
                    }
                    link = self.store.lock();
                }
                Err(e) => {
                    drop(link);
                    self.store_failed(&format!("cannot connect to it: {e}"));
                    return None;
                }
            }
        }
        let StoreLink::Open { ref port, handle, .. } = *link else { return None };
        let port = port.clone();
        drop(link);
        match Self::call(&port, handle, request) {
            Ok(response) => Some(response),
            Err(e) => {
                self.store_failed(&e);
                None
            }
        }
    }

    /// One call to the store on `handle` of `port`, within [`STORE_TIMEOUT_NS`].
    fn call(port: &Port, handle: Handle, request: &modules::Request) -> Result<Response, String> {
        let deadline = clock::monotonic_ns().unwrap_or(0) + STORE_TIMEOUT_NS;
        port.call(handle, request.encode(), Vec::new(), Some(deadline))
            .map_err(|e| format!("{e}"))
            .and_then(|received| Response::decode(&received.bytes).map_err(|e| format!("a malformed answer: {e}")))
    }

    /// The entry `key` from the store: `Ok(None)` when it has none (or there is no store), an
    /// error naming what was wrong with it when it is corrupt. A store that answers out of line
    /// (an entry over the protocol's limit, a size that changes, chunks that stop or overrun) is
    /// given up on: the kernel holds no more than the size it was told, within the limit.
    fn store_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let mut data: Vec<u8> = Vec::new();
        let mut expected: Option<u64> = None;
        loop {
            let request = modules::Request::Get { key: key.into(), offset: data.len() as u64 };
            match self.store_call(&request) {
                None | Some(Response::Missing) => return Ok(None),
                Some(Response::Chunk { total, data: chunk }) => {
                    let end = data.len() as u64 + chunk.len() as u64;
                    let wrong = if total > modules::MAX_ENTRY_BYTES {
                        Some(format!("an entry of {total} bytes, over the limit of {}", modules::MAX_ENTRY_BYTES))
                    } else if expected.is_some_and(|t| t != total) {
                        Some(format!("the entry's size changed from {} to {total} bytes", expected.unwrap_or(0)))
                    } else if chunk.is_empty() && end < total {
                        Some(String::from("an empty chunk"))
                    } else if end > total {
                        Some(format!("{end} bytes of an entry of {total}"))
                    } else {
                        None
                    };
                    if let Some(wrong) = wrong {
                        self.store_failed(&format!("it sent {wrong}"));
                        return Ok(None);
                    }
                    expected = Some(total);
                    if data.try_reserve(chunk.len()).is_err() {
                        self.store_failed(&format!("no kernel memory for an entry of {total} bytes"));
                        return Ok(None);
                    }
                    data.extend_from_slice(&chunk);
                    if end == total {
                        return Ok(Some(data));
                    }
                }
                Some(Response::Error { code: ModulesErrorCode::Corrupt, message }) => return Err(message),
                Some(other) => {
                    self.store_failed(&format!("it answered a get with {}", describe(&other)));
                    return Ok(None);
                }
            }
        }
    }

    /// Keeps `artifact` under `key` in the store; what happened, for the console.
    fn store_put(&self, key: &str, artifact: &[u8]) -> Result<(), String> {
        let total = artifact.len() as u64;
        let mut offset = 0;
        loop {
            let end = (offset + MAX_CHUNK_BYTES).min(artifact.len());
            let request = modules::Request::Put {
                key: key.into(),
                total,
                offset: offset as u64,
                data: artifact[offset..end].to_vec(),
            };
            match self.store_call(&request) {
                None => return Err(String::from("no module store")),
                Some(Response::Accepted) if end < artifact.len() => offset = end,
                Some(Response::Stored) if end == artifact.len() => return Ok(()),
                Some(Response::Error { code: ModulesErrorCode::Full, message }) => return Err(message),
                Some(other) => {
                    let e = format!("it answered a put with {}", describe(&other));
                    self.store_failed(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Waits for a turn at the compiler (compiles take seconds, so the wait sleeps).
    pub fn turn(&self) -> Turn<'_> {
        while self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + clock::tick_ns().max(1));
        }
        Turn(self)
    }

    /// The compiler component, loaded and linked on first use.
    fn ready(&self) -> Result<Arc<Ready>, String> {
        let mut ready = self.ready.lock();
        ready.get_or_insert_with(|| self.load().map(Arc::new)).clone()
    }

    fn load(&self) -> Result<Ready, String> {
        let refused = |e: &dyn core::fmt::Display| format!("the compiler component was refused: {e}");
        let spec = self.spec.as_ref().ok_or_else(|| {
            String::from(
                "the bundle has no compiler component (it was built with every component compiled ahead of time)",
            )
        })?;
        let instrumentation = super::system::check_native(&spec.code).map_err(|e| refused(&e))?;
        if instrumentation != Instrumentation::NONE {
            return Err(refused(&format!("its code is instrumented for CPU limits ({instrumentation})")));
        }
        let bytes = self.bundle.entry(&spec.code.artifact).and_then(|e| e.data()).map_err(|e| refused(&e))?;
        let shared = super::shared(NAME, bytes, Source::Artifact(super::Kind::Native), instrumentation)
            .map_err(|e| refused(&e))?;
        let engine = super::engine(instrumentation).map_err(|e| refused(&e))?;
        let grants: Vec<String> = GRANTS.iter().map(|g| g.to_string()).collect();
        let interfaces = program::check_imports(engine, &shared.component, &grants, self.platform.has_entropy_source())
            .map_err(|e| refused(&e))?;
        let linker =
            super::shared_linker(engine, super::Kind::Native, instrumentation, interfaces).map_err(|e| refused(&e))?;
        let pre = CompilerPre::new(&shared.component, &linker).map_err(|e| refused(&e))?;
        Ok(Ready { pre, _shared: shared })
    }

    /// Component `name`'s `wasm` (from the bundle) loaded into `engine` as native code for this
    /// CPU with `instrumentation`: compiled or found earlier this boot, found in the module store,
    /// or compiled now (and kept in the store). The caller holds a [`Turn`].
    pub fn load_code(
        &self,
        name: &str,
        wasm: &[u8],
        sha256: &[u8; 32],
        instrumentation: Instrumentation,
        engine: &Engine,
    ) -> Result<Component, String> {
        let load = |artifact: &[u8]| {
            // It was made by the compiler component with this kernel's engine settings for this
            // CPU (compiled here, or stored under a key that says so); Wasmtime checks version,
            // settings and CPU features again, and copies it into code memory.
            // SAFETY: so it is an artifact for this engine; the bytes are only read here.
            unsafe { program::load(engine, artifact) }.map_err(|e| format!("{e}"))
        };
        let index = (wasm.as_ptr() as usize, wasm.len(), instrumentation.index());
        let known = self.compiled.lock().get(&index).map(|c| (c.artifact.clone(), c.first.clone()));
        if let Some((artifact, first)) = known {
            kprintln!("mica: component {name}: native code compiled earlier this boot (for {first})");
            return load(&artifact);
        }
        let cpu = this_cpu();
        let key = store_key(sha256, &cpu, instrumentation);
        match self.store_get(&key) {
            Ok(Some(artifact)) => match load(&artifact) {
                Ok(component) => {
                    kprintln!(
                        "mica: component {name}: native code from the module store (cpu-{}, {} KiB)",
                        cpu.feature_list(),
                        artifact.len().div_ceil(1024)
                    );
                    self.compiled.lock().insert(index, Compiled { artifact: artifact.into(), first: name.into() });
                    return Ok(component);
                }
                Err(e) => {
                    kprintln!("mica: component {name}: module store entry refused by Wasmtime: {e}; compiling again")
                }
            },
            Ok(None) => {}
            Err(e) => kprintln!("mica: component {name}: module store entry refused: {e}; compiling again"),
        }
        let artifact: Arc<[u8]> = self.compile_now(name, wasm, &cpu, instrumentation)?.into();
        let component = load(&artifact)?;
        if !matches!(*self.store.lock(), StoreLink::None | StoreLink::Gone) {
            match self.store_put(&key, &artifact) {
                Ok(()) => kprintln!("mica: component {name}: kept in the module store"),
                Err(e) => kprintln!("mica: component {name}: not kept in the module store: {e}"),
            }
        }
        self.compiled.lock().insert(index, Compiled { artifact, first: name.into() });
        Ok(component)
    }

    fn compile_now(
        &self,
        name: &str,
        wasm: &[u8],
        cpu: &CpuProfile,
        instrumentation: Instrumentation,
    ) -> Result<Vec<u8>, String> {
        let ready = self.ready()?;
        let memory_limit = self.spec.as_ref().map_or(0, |s| s.memory_limit);
        let request = Request { triple: KERNEL_TARGET, cpu, instrumentation };
        let launch = Launch {
            name: NAME.into(),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            fuel: None,
            cpu_time: None,
            dirs: Vec::new(),
            network: None,
        };
        let start = clock::monotonic_ns().unwrap_or(0);
        let ticks = sched::cpu_ticks();
        let artifact = compiler::compile(&ready.pre, self.platform.clone(), &launch, wasm, &request)
            .map_err(|e| format!("compiling it failed: {e}"))?;
        let ticks = sched::cpu_ticks() - ticks;
        let ms = (clock::monotonic_ns().unwrap_or(0) - start) / 1_000_000;
        // The TSC ticks are this thread's own (guest instructions under `-icount shift=0`).
        kprintln!(
            "mica: component {name}: compiled in {ms} ms for {KERNEL_TARGET} cpu-{} instrument-{instrumentation} \
             ({} KiB wasm, {} KiB native, tsc {ticks}, crc32 {:08x})",
            cpu.feature_list(),
            wasm.len().div_ceil(1024),
            artifact.len().div_ceil(1024),
            mica_bundle::checksum(&artifact)
        );
        Ok(artifact)
    }
}

/// The module-store key of the wasm whose SHA-256 is `sha256`, compiled for `cpu` with
/// `instrumentation`: the hash, then the artifact key (Wasmtime version, target, engine settings
/// version, instrumentation, CPU features), so that code is found only for exactly the wasm,
/// settings and CPU it was made for.
pub fn store_key(sha256: &[u8; 32], cpu: &CpuProfile, instrumentation: Instrumentation) -> String {
    let mut key = String::with_capacity(64 + 128);
    for byte in sha256 {
        key.push_str(&format!("{byte:02x}"));
    }
    key.push('/');
    key.push_str(&ArtifactKey::new(cpu.clone(), instrumentation).to_string());
    key
}

/// A module-store answer, briefly (not pages of data).
fn describe(response: &Response) -> String {
    match response {
        Response::Chunk { total, data } => format!("a chunk of {} of {total} bytes", data.len()),
        Response::Error { code, message } => format!("error {code:?}: {message}"),
        other => format!("{other:?}"),
    }
}
