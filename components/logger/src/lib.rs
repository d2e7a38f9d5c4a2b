//! A `#![no_std]` component: no WASI at all, only Mica's own `mica:kernel/log` interface
//! (bindings from wit-bindgen for the world in `wit/world.wit`). It exports `wasi:cli/run`, so
//! Mica starts it like any program; `run` logs a few records at different levels.
//!
//! It exports no `cabi_realloc`: nothing in its world hands it a string or list from the host,
//! so the host never allocates in its memory.
#![no_std]

extern crate alloc;

use alloc::format;
use core::sync::atomic::{AtomicBool, Ordering};

use mica::kernel::log::{Level, log};

wit_bindgen::generate!({
    world: "logger",
    path: "wit",
    // Generate the imported `mica:kernel/log` here (wit-bindgen asks, as it comes from a dependency).
    generate_all,
});

/// wit-bindgen's runtime uses `alloc`, so a no_std component brings its own heap.
#[global_allocator]
static HEAP: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// A panic is logged as an error (once: formatting it may panic again, out of memory), then
/// traps, and Mica reports the component as trapped.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if !PANICKING.swap(true, Ordering::Relaxed) {
        log(Level::Error, &format!("{info}"));
    }
    core::arch::wasm32::unreachable()
}

struct Logger;

impl exports::wasi::cli::run::Guest for Logger {
    fn run() -> Result<(), ()> {
        log(Level::Info, "hello from a no_std component, through mica:kernel/log");
        log(Level::Warn, "this is a warning");
        log(Level::Error, "this is an error (the component still succeeds)");
        let detail = [(Level::Debug, "a debug record"), (Level::Trace, "a trace record")];
        log(Level::Info, &format!("{} more records follow, shown only with log=debug or log=trace", detail.len()));
        for (level, message) in detail {
            log(level, message);
        }
        Ok(())
    }
}

/// The core wasm export of `wasi:cli/run`. wit-bindgen's `export!` expands to an
/// `#[unsafe(export_name = "wasi:cli/run@0.2.12#run")]` function that calls `Logger::run`:
/// generated, and the only unsafe code in this crate, so it is allowed in this module alone (a
/// lint attribute on the macro call itself has no effect). See `[lints.rust]` in Cargo.toml.
#[allow(unsafe_code)]
mod entry {
    use super::Logger;

    crate::export!(Logger with_types_in crate);
}
