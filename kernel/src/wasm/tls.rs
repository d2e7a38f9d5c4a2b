//! The two thread-local slots Wasmtime keeps (slot 0: the runtime's, slot 1: component-model
//! async). The running thread's values live in its CPU's per-CPU data; the scheduler keeps every
//! other thread's in its thread (`sched`), switching them with [`save`] and [`restore`].

use crate::percpu::{TLS_ORDER, tls_slot};

/// Wasmtime's TLS getter (`wasmtime_tls_get` in `wasmtime-platform.h`).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    tls_slot(slot).map_or(core::ptr::null_mut(), |s| s.load(TLS_ORDER))
}

/// Wasmtime's TLS setter (`wasmtime_tls_set` in `wasmtime-platform.h`). Safe: the pointer is
/// only kept, never dereferenced here.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(s) = tls_slot(slot) {
        s.store(ptr, TLS_ORDER);
    }
}

/// Both slots, for the scheduler to keep with the thread that is switched away from.
pub fn save() -> [usize; 2] {
    [0, 1].map(|slot| tls_slot(slot).map_or(0, |s| s.load(TLS_ORDER).expose_provenance()))
}

/// Puts back the slots [`save`] returned, for the thread that is switched to.
pub fn restore(slots: [usize; 2]) {
    for (slot, value) in slots.into_iter().enumerate() {
        if let Some(s) = tls_slot(slot) {
            s.store(core::ptr::with_exposed_provenance_mut(value), TLS_ORDER);
        }
    }
}
