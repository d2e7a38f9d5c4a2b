//! The panic handler: the other CPUs stopped, the message and its location on the console, then
//! the run ends "failed".

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use mica_exit::ExitCode;

use crate::arch;

static PANICKING: AtomicBool = AtomicBool::new(false);

/// Set by the CPU that fails first: every other CPU is to stop for good.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The index of the CPU that is stopping the others (`usize::MAX`: none yet).
static STOPPER: AtomicUsize = AtomicUsize::new(usize::MAX);
/// How many CPUs have stopped since [`STOPPING`] was set.
static STOPPED: AtomicU32 = AtomicU32::new(0);
/// How long the failing CPU waits for the others to stop, in spins of its loop (a few ms on any
/// machine, far more than a CPU takes to enter its stop handler).
const STOP_WAIT_SPINS: u32 = 10_000_000;

/// What [`stop_other_cpus`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every other CPU has stopped (`stopped` of them, 0 when this is the only one): this CPU is
    /// the only one running.
    All {
        /// CPUs stopped.
        stopped: u32,
    },
    /// Another CPU failed first and is stopping this one (which then never returns), or some
    /// CPUs did not answer the stop signal (one spinning with interrupts masked, on a machine
    /// whose stop signal is maskable): `running` of them may still run.
    NotAll {
        /// CPUs that did not stop.
        running: u32,
    },
}

/// Stops every other CPU for good, as the first step of a kernel failure (a panic, a fatal
/// exception): afterwards nothing else runs, so the failing CPU may take the console whoever held
/// it. x86_64 sends an NMI, which a CPU takes even with interrupts off; aarch64 sends an SGI.
/// A CPU that fails while another is already stopping the machine stops itself instead; the
/// stopping CPU failing again (a panic while it reports an exception) goes on with its report.
pub fn stop_other_cpus() -> Stopped {
    let others = arch::smp::online().saturating_sub(1);
    if others == 0 {
        // The only CPU (per-CPU data may not even be set up yet).
        return Stopped::All { stopped: 0 };
    }
    let me = crate::percpu::index();
    match STOPPER.compare_exchange(usize::MAX, me, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {}
        // Its second failure: the others were told to stop the first time.
        Err(stopper) if stopper == me => {
            let running = others.saturating_sub(STOPPED.load(Ordering::SeqCst));
            return if running == 0 { Stopped::All { stopped: 0 } } else { Stopped::NotAll { running } };
        }
        // Another CPU failed first; its report is the one that counts.
        Err(_) => park_this_cpu(),
    }
    STOPPING.store(true, Ordering::SeqCst);
    if !arch::irq::signal_stop_others() {
        return Stopped::NotAll { running: others };
    }
    for _ in 0..STOP_WAIT_SPINS {
        if STOPPED.load(Ordering::SeqCst) >= others {
            return Stopped::All { stopped: others };
        }
        core::hint::spin_loop();
    }
    Stopped::NotAll { running: others - STOPPED.load(Ordering::SeqCst).min(others) }
}

/// Whether a failing CPU is stopping the others (the stop signal's handler asks).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Stops this CPU for good: counted, interrupts off, halted.
pub fn park_this_cpu() -> ! {
    arch::disable_interrupts();
    STOPPED.fetch_add(1, Ordering::SeqCst);
    arch::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::disable_interrupts();
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: end now, without printing again.
        arch::exit(ExitCode::Failed);
    }
    let mut out = crate::console::EmergencyWriter::new();
    match info.location() {
        Some(l) => {
            let _ = writeln!(out, "KERNEL PANIC at {}:{}:{}: {}", l.file(), l.line(), l.column(), info.message());
        }
        None => {
            let _ = writeln!(out, "KERNEL PANIC at an unknown location: {}", info.message());
        }
    }
    arch::exit(ExitCode::Failed)
}
