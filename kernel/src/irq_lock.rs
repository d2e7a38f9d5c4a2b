//! Spin locks that keep interrupts off on this CPU while they are held.
//!
//! With preemption, a thread holding a plain spin lock may be switched away from by the timer
//! interrupt; a thread that then spins on the same lock with interrupts off (inside the
//! scheduler, say) would wait forever on one CPU. A lock that disables interrupts while held is
//! never held by a preempted thread, so it cannot deadlock that way. Every kernel lock that
//! threads share (heap, frames, page tables, stacks, console, scheduler) is one of these.
//!
//! With several CPUs, a CPU spinning for one of these locks (interrupts off) answers TLB-shootdown
//! requests while it spins (`paging::service_flush`), so a CPU that holds the lock and waits for
//! every TLB to be flushed is never waiting for it.
//!
//! Guards must be dropped in the reverse order of locking (as scopes do): the outermost unlock
//! restores the interrupt flag that was in effect before the first lock.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch;

/// The raw lock under [`IrqMutex`] (and under the heap's `TalcLock`).
#[derive(Debug)]
pub struct RawIrqSpinlock {
    locked: AtomicBool,
    /// Whether interrupts were enabled when the holder locked it.
    restore_interrupts: AtomicBool,
}

// SAFETY: `lock` returns only once `locked` went from false to true through this call (an
// acquire compare-exchange), so at most one holder exists; `unlock` (called only by the holder,
// as the trait requires) releases with a release store.
unsafe impl lock_api::RawMutex for RawIrqSpinlock {
    #[allow(clippy::declare_interior_mutable_const, reason = "lock_api's required initializer")]
    const INIT: RawIrqSpinlock =
        RawIrqSpinlock { locked: AtomicBool::new(false), restore_interrupts: AtomicBool::new(false) };
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        let enabled = arch::interrupts_enabled();
        arch::disable_interrupts();
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            // Interrupts are off here: answer TLB shootdowns while waiting, or a CPU that holds
            // this lock and waits for this one to flush would wait forever.
            arch::paging::service_flush();
            core::hint::spin_loop();
        }
        self.restore_interrupts.store(enabled, Ordering::Relaxed);
    }

    fn try_lock(&self) -> bool {
        let enabled = arch::interrupts_enabled();
        arch::disable_interrupts();
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.restore_interrupts.store(enabled, Ordering::Relaxed);
            true
        } else {
            if enabled {
                arch::enable_interrupts();
            }
            false
        }
    }

    unsafe fn unlock(&self) {
        let enable = self.restore_interrupts.load(Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
        if enable {
            arch::enable_interrupts();
        }
    }
}

/// A mutex that keeps interrupts off while held.
pub type IrqMutex<T> = lock_api::Mutex<RawIrqSpinlock, T>;
/// Its guard.
pub type IrqMutexGuard<'a, T> = lock_api::MutexGuard<'a, RawIrqSpinlock, T>;
