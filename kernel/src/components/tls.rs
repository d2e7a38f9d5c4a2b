//! The two thread-local slots Wasmtime keeps (slot 0: the runtime's, slot 1: component-model
//! async). One kernel thread runs components for now, so they are plain globals; with the
//! scheduler they move into the thread control block and switch with the thread.

use core::sync::atomic::{AtomicPtr, Ordering};

static SLOTS: [AtomicPtr<u8>; 2] = [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())];

/// Wasmtime's TLS getter (`wasmtime_tls_get` in `wasmtime-platform.h`).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    SLOTS.get(slot).map_or(core::ptr::null_mut(), |s| s.load(Ordering::Relaxed))
}

/// Wasmtime's TLS setter (`wasmtime_tls_set` in `wasmtime-platform.h`).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(s) = SLOTS.get(slot) {
        s.store(ptr, Ordering::Relaxed);
    }
}
