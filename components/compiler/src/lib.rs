//! Mica's compiler component: Wasmtime's compiler (Cranelift), built for wasm32-wasip2 and run by
//! the kernel in a sandbox of its own, compiles a component for the CPU the kernel finds. It uses
//! the same engine settings as the host's AOT compiler (`mica_engine::compile_config`), so the
//! same wasm, target and features give the same artifact, byte for byte.
//!
//! It reaches nothing but its arguments: the wasm, the target, and the artifact it returns. A bug
//! in the compiler (a trap, running out of memory) ends this component, not the kernel.

use mica_engine::{CONFIG_VERSION, CpuProfile, Instrumentation, WASMTIME_VERSION, compile_config};
use wasmtime::Engine;

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        world: "compiler",
        path: "../../wit/compiler",
    });
}

use bindings::exports::mica::compiler::compile::{Error, Guest, Target};

struct Compiler;

/// `wasmtime-<version>/config-<settings version>`.
fn settings() -> String {
    format!("wasmtime-{WASMTIME_VERSION}/config-{CONFIG_VERSION}")
}

impl Guest for Compiler {
    fn settings() -> String {
        settings()
    }

    fn compile(component: Vec<u8>, target: Target) -> Result<Vec<u8>, Error> {
        let cpu = CpuProfile::parse_list_for(&target.triple, &target.cpu_features.join(","))
            .map_err(|e| Error::BadTarget(e.to_string()))?;
        let instrumentation = Instrumentation { fuel: target.fuel, epochs: target.epochs };
        let config =
            compile_config(&target.triple, instrumentation, &cpu).map_err(|e| Error::BadTarget(e.to_string()))?;
        let engine = Engine::new(&config).map_err(|e| Error::BadTarget(format!("{e:#}")))?;
        engine.precompile_component(&component).map_err(|e| Error::InvalidComponent(format!("{e:#}")))
    }
}

/// The core wasm exports of the compile interface. wit-bindgen's `export!` expands to
/// `#[unsafe(export_name = ...)]` functions that call `Compiler`'s methods: generated, and with
/// the bindings the only unsafe code in this crate, so it is allowed in this module alone (a lint
/// attribute on the macro call itself has no effect).
#[allow(unsafe_code)]
mod entry {
    use super::Compiler;

    crate::bindings::export!(Compiler with_types_in crate::bindings);
}
