//! Late binding: components shipped as wasm are compiled here, at boot, for exactly the CPU the
//! kernel finds, by the compiler component (Wasmtime's Cranelift built for wasm32-wasip2, compiled
//! ahead of time for the baseline CPU: the one component that must be). It runs in a sandbox of
//! its own like any component, one fresh instance per compile, one compile at a time; a compile
//! that fails (a malformed component, a trap or out-of-memory in the compiler) fails only the
//! component it was for, with the reason.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use mica_bundle::{Bundle, CompilerSpec};
use mica_runtime::compiler::{self, CompilerPre, Request};
use mica_runtime::config::{CpuFeature, CpuProfile, Instrumentation, KERNEL_TARGET};
use mica_runtime::platform::Platform;
use mica_runtime::program::{self, Launch};
use spin::Once;

use super::{Shared, Source};
use crate::arch::irq_lock::IrqMutex;
use crate::arch::{clock, cpu};
use crate::{kprintln, sched};

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
    ready: Once<Result<Ready, String>>,
    busy: AtomicBool,
    /// What was compiled this boot, by where its wasm lies in the bundle and its instrumentation:
    /// a later component (or a restart after every instance ended) of the same wasm loads it
    /// again without compiling.
    compiled: IrqMutex<BTreeMap<(usize, usize, usize), Compiled>>,
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
    CpuProfile::new("this CPU", CpuFeature::ALL.into_iter().filter(|f| cpu::code_may_use(f.name()) == Some(true)))
}

impl Compiler {
    /// The compiler of a system booted from `bundle`, whose manifest names `spec`.
    pub fn new(bundle: Bundle<'static>, spec: Option<CompilerSpec>, platform: Arc<dyn Platform>) -> Compiler {
        Compiler {
            bundle,
            spec,
            platform,
            ready: Once::new(),
            busy: AtomicBool::new(false),
            compiled: IrqMutex::new(BTreeMap::new()),
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
    fn ready(&self) -> Result<&Ready, String> {
        self.ready.call_once(|| self.load()).as_ref().map_err(String::clone)
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
        let shared = super::shared(NAME, bytes, Source::Artifact, instrumentation).map_err(|e| refused(&e))?;
        let engine = super::engine(instrumentation).map_err(|e| refused(&e))?;
        let grants: Vec<String> = GRANTS.iter().map(|g| g.to_string()).collect();
        let interfaces = program::check_imports(engine, &shared.component, &grants).map_err(|e| refused(&e))?;
        let linker = super::shared_linker(engine, instrumentation, interfaces).map_err(|e| refused(&e))?;
        let pre = CompilerPre::new(&shared.component, &linker).map_err(|e| refused(&e))?;
        Ok(Ready { pre, _shared: shared })
    }

    /// The artifact of component `name`'s `wasm` (from the bundle) for this CPU with
    /// `instrumentation`: compiled now, or earlier this boot. The caller holds a [`Turn`].
    pub fn compile(&self, name: &str, wasm: &[u8], instrumentation: Instrumentation) -> Result<Arc<[u8]>, String> {
        let key = (wasm.as_ptr() as usize, wasm.len(), instrumentation.index());
        if let Some(known) = self.compiled.lock().get(&key) {
            kprintln!("mica: component {name}: native code compiled earlier this boot (for {})", known.first);
            return Ok(known.artifact.clone());
        }
        let artifact: Arc<[u8]> = self.compile_now(name, wasm, instrumentation)?.into();
        self.compiled.lock().insert(key, Compiled { artifact: artifact.clone(), first: name.to_string() });
        Ok(artifact)
    }

    fn compile_now(&self, name: &str, wasm: &[u8], instrumentation: Instrumentation) -> Result<Vec<u8>, String> {
        let ready = self.ready()?;
        let memory_limit = self.spec.as_ref().map_or(0, |s| s.memory_limit);
        let cpu = this_cpu();
        let request = Request { triple: KERNEL_TARGET, cpu: &cpu, instrumentation };
        let launch = Launch {
            name: NAME.into(),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            fuel: None,
            cpu_time: None,
        };
        let start = clock::monotonic_ns().unwrap_or(0);
        let artifact = compiler::compile(&ready.pre, self.platform.clone(), &launch, wasm, &request)
            .map_err(|e| format!("compiling it failed: {e}"))?;
        let ms = (clock::monotonic_ns().unwrap_or(0) - start) / 1_000_000;
        kprintln!(
            "mica: component {name}: compiled in {ms} ms for {KERNEL_TARGET} cpu-{} instrument-{instrumentation} \
             ({} KiB wasm, {} KiB native, crc32 {:08x})",
            cpu.feature_list(),
            wasm.len().div_ceil(1024),
            artifact.len().div_ceil(1024),
            mica_bundle::checksum(&artifact)
        );
        Ok(artifact)
    }
}
