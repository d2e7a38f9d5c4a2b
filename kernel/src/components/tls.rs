//! The two thread-local slots Wasmtime keeps (slot 0: the runtime's, slot 1: component-model
//! async). The running thread's values live here; the scheduler keeps every other thread's in
//! its thread (`sched`), switching them with [`save`] and [`restore`].

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

/// Both slots, for the scheduler to keep with the thread that is switched away from.
pub fn save() -> [usize; 2] {
    [SLOTS[0].load(Ordering::Relaxed).expose_provenance(), SLOTS[1].load(Ordering::Relaxed).expose_provenance()]
}

/// Puts back the slots [`save`] returned, for the thread that is switched to.
pub fn restore(slots: [usize; 2]) {
    for (slot, value) in SLOTS.iter().zip(slots) {
        slot.store(core::ptr::with_exposed_provenance_mut(value), Ordering::Relaxed);
    }
}
