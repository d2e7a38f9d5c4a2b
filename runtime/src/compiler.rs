//! Compiling components inside Mica. The compiler is a component too (`components/compiler`:
//! Wasmtime's Cranelift built for wasm32-wasip2), loaded like any other and run in a store of its
//! own with its own memory limit, one fresh instance per compile: it gets the wasm and the target
//! and returns the artifact. When it traps or runs out of memory, that is this compile's error,
//! named, and nothing else is affected.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use wasmtime::component::{Component, Linker};

use crate::config::{CONFIG_VERSION, CpuProfile, Instrumentation, WASMTIME_VERSION};
use crate::host::InstanceState;
use crate::platform::Platform;
use crate::program::{self, Launch, LoadError, Outcome, Ports};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "mica:host/compiler-host",
    });
}

use bindings::exports::mica::compiler::compile::{Error as CompilerError, Target};

/// The settings string of a compiler whose artifacts this runtime loads: its Wasmtime version and
/// engine settings version (as the compiler component's `settings` export reports them).
pub fn expected_settings() -> String {
    format!("wasmtime-{WASMTIME_VERSION}/config-{CONFIG_VERSION}")
}

/// The compiler component, loaded and linked once.
#[derive(Clone)]
pub struct CompilerPre(bindings::CompilerHostPre<InstanceState>);

impl fmt::Debug for CompilerPre {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompilerPre").finish_non_exhaustive()
    }
}

impl CompilerPre {
    /// Resolves the compiler component's imports against `linker` and finds its export.
    pub fn new(component: &Component, linker: &Linker<InstanceState>) -> Result<CompilerPre, LoadError> {
        let pre = linker.instantiate_pre(component).map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        bindings::CompilerHostPre::new(pre)
            .map(CompilerPre)
            .map_err(|e| LoadError::Instantiate(format!("not a compiler component: {e:#}")))
    }
}

/// What to compile for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The kernel target, such as `x86_64-unknown-none`.
    pub triple: &'a str,
    /// The CPU features the code may use.
    pub cpu: &'a CpuProfile,
    /// The CPU-limit instrumentation to compile in.
    pub instrumentation: Instrumentation,
}

/// Why a compile gave no artifact.
#[derive(Debug)]
pub enum CompileError {
    /// The compiler could not be instantiated.
    Instantiate(String),
    /// The compiler's artifacts would not load here: another Wasmtime or other engine settings.
    Settings {
        /// What the compiler reports.
        compiler: String,
        /// What this runtime loads.
        runtime: String,
    },
    /// The compiler does not know the target or a CPU feature.
    BadTarget(String),
    /// The wasm is not a valid component (or needs what Mica's settings leave off).
    InvalidComponent(String),
    /// The compiler itself failed: it trapped, ran out of memory, or exited.
    Failed(Outcome),
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::Instantiate(e) => write!(f, "the compiler component cannot be instantiated: {e}"),
            CompileError::Settings { compiler, runtime } => {
                write!(f, "the compiler component makes artifacts for {compiler}, this kernel loads {runtime}")
            }
            CompileError::BadTarget(e) => write!(f, "the compiler refused the target: {e}"),
            CompileError::InvalidComponent(e) => write!(f, "not a valid component: {e}"),
            CompileError::Failed(outcome) => write!(f, "the compiler component failed: {outcome}"),
        }
    }
}

/// `text` on one line: a compiler's message may span several (a parser's expected and actual
/// bytes, say), and the console report is one line per event.
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ")
}

/// Compiles the component `wasm` for `request` in a fresh instance of the compiler, started as
/// `launch` (its name and memory limit). The artifact is checked by Wasmtime again when loaded.
pub fn compile(
    pre: &CompilerPre,
    platform: Arc<dyn Platform>,
    launch: &Launch,
    wasm: &[u8],
    request: &Request<'_>,
) -> Result<Vec<u8>, CompileError> {
    let engine = pre.0.engine();
    let mut store = program::new_store(engine, platform, Ports::default(), launch, alloc::vec![launch.name.clone()])
        .map_err(|e| CompileError::Instantiate(e.to_string()))?;
    let failed = |store: &wasmtime::Store<InstanceState>, e: wasmtime::Error, instantiating: bool| match program::ended(
        store,
        launch,
        &e,
        instantiating,
    ) {
        Ok(outcome) => CompileError::Failed(outcome),
        Err(e) => CompileError::Instantiate(e.to_string()),
    };
    let compiler = match pre.0.instantiate(&mut store) {
        Ok(compiler) => compiler,
        Err(e) => return Err(failed(&store, e, true)),
    };
    let interface = compiler.mica_compiler_compile();
    let settings = match interface.call_settings(&mut store) {
        Ok(settings) => settings,
        Err(e) => return Err(failed(&store, e, false)),
    };
    if settings != expected_settings() {
        return Err(CompileError::Settings { compiler: settings, runtime: expected_settings() });
    }
    let target = Target {
        triple: request.triple.to_string(),
        cpu_features: request.cpu.features.iter().map(|f| f.name().to_string()).collect(),
        fuel: request.instrumentation.fuel,
        epochs: request.instrumentation.epochs,
    };
    let result = interface.call_compile(&mut store, wasm, &target);
    store.data_mut().flush_output();
    match result {
        Ok(Ok(artifact)) => Ok(artifact),
        Ok(Err(CompilerError::BadTarget(e))) => Err(CompileError::BadTarget(one_line(&e))),
        Ok(Err(CompilerError::InvalidComponent(e))) => Err(CompileError::InvalidComponent(one_line(&e))),
        Err(e) => Err(failed(&store, e, false)),
    }
}
