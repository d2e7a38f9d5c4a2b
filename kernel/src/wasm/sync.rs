//! The lock primitives Wasmtime asks its embedder for when it has no `std`
//! (`custom-sync-primitives`): components run on preemptible threads, so Wasmtime's internal
//! locks (engine, code registry, type registry) can be contended and must really wait.
//!
//! Each lock is one `usize` inside Wasmtime's own structure, zero when new. A mutex is 0 (free)
//! or 1 (held); a reader-writer lock is 0 (free), [`WRITER`] (held for writing) or the number of
//! readers. A thread that cannot take a lock gives its turn to the others (the holder may be one
//! of them) and tries again; the timer tick preempts it anyway.

use core::sync::atomic::{AtomicUsize, Ordering};

/// A reader-writer lock held for writing.
const WRITER: usize = usize::MAX;

/// Waits a little for another thread to release a lock: gives the CPU to another thread when one
/// is ready, unless interrupts are off (the caller holds an `IrqMutex`, or runs in an interrupt),
/// where switching threads would leave the mutex held by a thread that is not running.
fn back_off() {
    if crate::arch::interrupts_enabled() && crate::sched::ready_count() > 0 {
        crate::sched::yield_now();
    } else {
        core::hint::spin_loop();
    }
}

/// The lock word behind Wasmtime's pointer.
///
/// # Safety
/// `lock` must point to the aligned `usize` inside a Wasmtime lock that lives for `'a` and is
/// only ever accessed through these functions (atomically): what Wasmtime passes every hook.
unsafe fn word<'a>(lock: *mut usize) -> &'a AtomicUsize {
    // SAFETY: forwarded to the caller.
    unsafe { AtomicUsize::from_ptr(lock) }
}

/// Frees a mutex: nothing to do, the word is all there is.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_sync_lock_free(_lock: *mut usize) {}

/// Takes a mutex, waiting while another thread holds it.
///
/// # Safety
/// `lock` is Wasmtime\'s pointer to the word of one of its locks ([`word`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_lock_acquire(lock: *mut usize) {
    // SAFETY: Wasmtime's pointer to its lock word (the caller's promise).
    let word = unsafe { word(lock) };
    while word.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        back_off();
    }
}

/// Releases a mutex.
///
/// # Safety
/// `lock` is Wasmtime\'s pointer to the word of one of its locks ([`word`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_lock_release(lock: *mut usize) {
    // SAFETY: Wasmtime's pointer to its lock word (the caller's promise).
    unsafe { word(lock) }.store(0, Ordering::Release);
}

/// Takes a reader-writer lock for reading, waiting while a writer holds it.
///
/// # Safety
/// `lock` is Wasmtime\'s pointer to the word of one of its locks ([`word`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_read(lock: *mut usize) {
    // SAFETY: Wasmtime's pointer to its lock word (the caller's promise).
    let word = unsafe { word(lock) };
    loop {
        let readers = word.load(Ordering::Relaxed);
        if readers != WRITER
            && readers + 1 != WRITER
            && word.compare_exchange_weak(readers, readers + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return;
        }
        back_off();
    }
}

/// Releases a read hold.
///
/// # Safety
/// `lock` is Wasmtime\'s pointer to the word of one of its locks ([`word`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_read_release(lock: *mut usize) {
    // SAFETY: Wasmtime's pointer to its lock word (the caller's promise).
    unsafe { word(lock) }.fetch_sub(1, Ordering::Release);
}

/// Takes a reader-writer lock for writing, waiting while anyone holds it.
///
/// # Safety
/// `lock` is Wasmtime\'s pointer to the word of one of its locks ([`word`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_write(lock: *mut usize) {
    // SAFETY: Wasmtime's pointer to its lock word (the caller's promise).
    let word = unsafe { word(lock) };
    while word.compare_exchange_weak(0, WRITER, Ordering::Acquire, Ordering::Relaxed).is_err() {
        back_off();
    }
}

/// Releases a write hold.
///
/// # Safety
/// `lock` is Wasmtime\'s pointer to the word of one of its locks ([`word`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_write_release(lock: *mut usize) {
    // SAFETY: Wasmtime's pointer to its lock word (the caller's promise).
    unsafe { word(lock) }.store(0, Ordering::Release);
}

/// Frees a reader-writer lock: nothing to do.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_sync_rwlock_free(_lock: *mut usize) {}
