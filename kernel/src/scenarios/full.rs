//! The boot tests that need the whole architecture API: threads, preemption, priorities, sleep,
//! SMP and the cost of a switch.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::arch::{self, clock};
use crate::kprintln;
use crate::mem::{phys, stacks};

/// Rounds each of the [`threads`] scenario's threads makes.
const THREAD_ROUNDS: u32 = 20;
/// Threads of the [`threads`] scenario.
const THREADS: u32 = 3;

/// Kernel threads: three threads (each on its own guarded stack) take turns with the boot thread
/// in round-robin order; each keeps its own FP rounding mode across switches (x86's MXCSR,
/// aarch64's FPCR, saved and restored with its FP state) and its own Wasmtime TLS value; a finished thread's stack is
/// freed.
pub(super) fn threads() -> Result<(), String> {
    use core::sync::atomic::{AtomicU32, Ordering};

    use crate::sched;
    use crate::wasm::tls;

    static ORDER: spin::Mutex<Vec<(u32, u32)>> = spin::Mutex::new(Vec::new());
    static FAILURES: spin::Mutex<Vec<String>> = spin::Mutex::new(Vec::new());
    static DONE: AtomicU32 = AtomicU32::new(0);
    const ROUNDING: [u64; 3] = [0b00, 0b01, 0b11];

    // Strict round-robin order is what yields alone give: no time slices here.
    sched::set_preemption(false);
    let free_before = phys::free_frames();
    for t in 0..THREADS {
        let spawned = sched::spawn(&format!("worker-{t}"), move || {
            // The rounding mode in the FP control register differs per thread.
            let control = arch::cpu::with_rounding(arch::cpu::fp_control(), ROUNDING[t as usize]);
            arch::cpu::set_fp_control(control);
            tls::wasmtime_tls_set(0, core::ptr::with_exposed_provenance_mut(0x1000 * (t as usize + 1)));
            let local = 0u8;
            let here = (&raw const local).addr() as u64;
            if stacks::guard_page_owner(here).is_some() || here < crate::mem::layout::STACKS_BASE {
                FAILURES.lock().push(format!("worker-{t} runs on {here:#x}, not on a thread stack"));
            }
            for round in 0..THREAD_ROUNDS {
                ORDER.lock().push((t, round));
                sched::yield_now();
                let now = arch::cpu::fp_control();
                if now != control {
                    FAILURES.lock().push(format!("worker-{t}: FP control {now:#x} after a switch, set {control:#x}"));
                }
                let slot = tls::wasmtime_tls_get(0).addr();
                if slot != 0x1000 * (t as usize + 1) {
                    FAILURES.lock().push(format!("worker-{t}: TLS slot {slot:#x} after a switch"));
                }
            }
            DONE.fetch_add(1, Ordering::SeqCst);
        });
        spawned.map_err(|e| format!("spawning worker-{t}: {e}"))?;
    }
    let boot_control = arch::cpu::fp_control();
    let mut turns = 0;
    while DONE.load(Ordering::SeqCst) < THREADS || sched::ready_count() > 0 {
        sched::yield_now();
        turns += 1;
        ensure!(turns < 10 * THREAD_ROUNDS, "threads did not finish after {turns} turns of the boot thread");
    }
    let now = arch::cpu::fp_control();
    ensure!(now == boot_control, "the boot thread's FP control changed from {boot_control:#x} to {now:#x}");
    let failures = FAILURES.lock().clone();
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    let order = ORDER.lock().clone();
    let expected: Vec<(u32, u32)> = (0..THREAD_ROUNDS).flat_map(|r| (0..THREADS).map(move |t| (t, r))).collect();
    ensure!(order == expected, "not round-robin: {:?}", &order[..order.len().min(12)]);
    // The last finished thread's stack goes when another thread next yields.
    sched::yield_now();
    let leaked = free_before.saturating_sub(phys::free_frames());
    ensure!(leaked < 8, "{leaked} frames not returned after the threads ended");
    sched::set_preemption(true);
    kprintln!("mica: threads: {THREADS} threads x {THREAD_ROUNDS} rounds, round-robin, FPU and TLS state kept");
    Ok(())
}

/// Priorities: a low-priority spinner gets no CPU while the boot thread (normal) is busy; a
/// high-priority thread that wakes from a sleep takes the CPU from the busy boot thread at the
/// next tick and keeps it while it works; once the boot thread sleeps, the low spinner runs.
pub(super) fn priority() -> Result<(), String> {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use crate::sched::{self, Priority};

    static LOW_SPINS: AtomicU64 = AtomicU64::new(0);
    static BOOT_SPINS: AtomicU64 = AtomicU64::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    /// (boot spins when the high thread started working, when it finished, ticks it worked).
    static HIGH_SAW: spin::Mutex<Option<(u64, u64, u64)>> = spin::Mutex::new(None);

    ensure!(sched::current_priority() == Priority::Normal, "the boot thread is not of normal priority");
    sched::spawn_with("low-spinner", Priority::Low, || {
        while !STOP.load(Ordering::Relaxed) {
            LOW_SPINS.fetch_add(1, Ordering::Relaxed);
        }
    })
    .map_err(|e| format!("spawning the low spinner: {e}"))?;
    sched::spawn_with("high", Priority::High, || {
        sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + 30_000_000);
        let start = BOOT_SPINS.load(Ordering::Relaxed);
        let first = clock::ticks();
        while clock::ticks() < first + 3 {
            core::hint::spin_loop();
        }
        *HIGH_SAW.lock() = Some((start, BOOT_SPINS.load(Ordering::Relaxed), clock::ticks() - first));
    })
    .map_err(|e| format!("spawning the high thread: {e}"))?;
    // Busy for 10 ticks: the low spinner must not run; the high thread wakes meanwhile.
    let start = clock::ticks();
    while clock::ticks() < start + 10 {
        BOOT_SPINS.fetch_add(1, Ordering::Relaxed);
    }
    let low_while_busy = LOW_SPINS.load(Ordering::Relaxed);
    let saw = *HIGH_SAW.lock();
    // Sleeping, the boot thread leaves the CPU to the low spinner.
    sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + 30_000_000);
    let low_after = LOW_SPINS.load(Ordering::Relaxed);
    STOP.store(true, Ordering::SeqCst);
    ensure!(low_while_busy == 0, "the low spinner ran {low_while_busy} spins while a normal thread was busy");
    let Some((before, after, worked)) = saw else {
        return Err("the high thread did not finish while the boot thread was busy".into());
    };
    ensure!(before == after, "the boot thread ran ({} spins) while the high thread worked", after - before);
    ensure!(low_after > 0, "the low spinner never ran, even with the CPU free");
    kprintln!(
        "mica: priority: low spinner starved while normal was busy (0 spins), high thread preempted normal and \
         worked {worked} ticks undisturbed, low ran {low_after} spins once normal slept"
    );
    Ok(())
}

/// SMP: as many spinning threads as there are CPUs (each spinning for 10 ticks of its own CPU
/// time, never yielding) while the boot thread sleeps: the idle CPUs take them from the boot
/// CPU's queue, and every CPU runs one; all of them finish.
pub(super) fn smp() -> Result<(), String> {
    use core::sync::atomic::{AtomicU32, Ordering};

    use crate::sched;

    static RAN_ON: AtomicU32 = AtomicU32::new(0);
    static DONE: AtomicU32 = AtomicU32::new(0);
    let cpus = arch::smp::online();
    ensure!(cpus >= 2, "only {cpus} CPU online: boot with -smp 2 or more");
    let spin_ticks = 10 * clock::tick_ns() * clock::counter_frequency().map_or(1, |f| f.hz()) / 1_000_000_000;
    for t in 0..cpus {
        sched::spawn(&format!("spinner-{t}"), move || {
            let start = sched::cpu_ticks();
            while sched::cpu_ticks() - start < spin_ticks {
                core::hint::spin_loop();
            }
            RAN_ON.fetch_or(sched::current_cpus(), Ordering::SeqCst);
            DONE.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|e| format!("spawning spinner-{t}: {e}"))?;
    }
    let start = clock::ticks();
    while DONE.load(Ordering::SeqCst) < cpus {
        ensure!(clock::ticks() - start < 2000, "the spinners did not finish in 2000 ticks");
        sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + clock::tick_ns());
    }
    let mask = RAN_ON.load(Ordering::SeqCst);
    let all = (1u32 << cpus) - 1;
    ensure!(mask & all == all, "the spinners ran only on CPUs {mask:#b} of {all:#b}");
    kprintln!(
        "mica: smp: {cpus} spinners ran on CPUs {mask:#b} (every CPU ran work), done in {} ticks",
        clock::ticks() - start
    );
    Ok(())
}

/// A panic while another CPU works: a thread that never yields prints line after line (taking
/// the console lock with interrupts off for each) on another CPU; once it has printed a few, the
/// boot thread panics. The panic handler first stops that CPU (x86_64: an NMI; aarch64: an
/// SGI), which then counts itself stopped, and reports `mica: stopped 1 other CPU(s)` before the
/// panic's message. Never returns.
pub(super) fn panic_smp() -> Result<(), String> {
    use core::sync::atomic::{AtomicU64, Ordering};

    use crate::sched;

    static PRINTED: AtomicU64 = AtomicU64::new(0);
    let cpus = arch::smp::online();
    ensure!(cpus >= 2, "only {cpus} CPU online: boot with -smp 2 or more");
    sched::spawn("printer", || {
        loop {
            let n = PRINTED.fetch_add(1, Ordering::SeqCst);
            crate::kprintln!("mica: panic_smp: printer line {n} on CPUs {:#b}", sched::current_cpus());
        }
    })
    .map_err(|e| format!("spawning the printer: {e}"))?;
    let start = clock::ticks();
    while PRINTED.load(Ordering::SeqCst) < 5 {
        ensure!(clock::ticks() - start < 2000, "the printer printed nothing in 2000 ticks");
        sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + clock::tick_ns());
    }
    panic!("boot test: deliberate panic while another CPU prints");
}

/// Interrupts whose frames are the first stores into stack pages: a thread (whose stack is
/// committed on demand below its top 16 KiB) lowers its stack pointer into pages it never
/// touched and waits there for the tick, eight times, each time a few pages deeper. Saving the
/// interrupted state faults on the page; the kernel maps it and the interrupt goes on. The thread
/// must come back each time to where it was, with its stack intact.
pub(super) fn irq_on_fresh_stack_page() -> Result<(), String> {
    use core::sync::atomic::{AtomicU64, Ordering};

    use crate::sched;

    static DONE: AtomicU64 = AtomicU64::new(0);
    sched::spawn("deep-waiter", || {
        let sentinel = core::hint::black_box([0x5a5a_5a5a_5a5a_5a5au64; 4]);
        for round in 0..8u64 {
            arch::cpu::wait_for_tick_below_stack(64 * 1024 + round * 3 * 4096);
        }
        if core::hint::black_box(sentinel) == [0x5a5a_5a5a_5a5a_5a5a; 4] {
            DONE.store(1, Ordering::SeqCst);
        } else {
            DONE.store(2, Ordering::SeqCst);
        }
    })
    .map_err(|e| format!("spawning the waiter: {e}"))?;
    let start = clock::ticks();
    while DONE.load(Ordering::SeqCst) == 0 {
        ensure!(clock::ticks() - start < 2000, "the waiter did not come back in 2000 ticks");
        sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + clock::tick_ns());
    }
    ensure!(DONE.load(Ordering::SeqCst) == 1, "the waiter's stack changed under it");
    crate::kprintln!("mica: irq_on_fresh_stack_page: 8 ticks taken with their frames on untouched stack pages");
    Ok(())
}

/// Switches each of the two threads of [`switch`] makes.
const SWITCH_ROUNDS: u64 = 20_000;

/// The cost of a thread switch: the boot thread and one other yield to each other
/// [`SWITCH_ROUNDS`] times each (no time slices meanwhile); TSC ticks over the whole, per switch
/// (guest instructions under `-icount shift=0`): saving and restoring the FPU/SSE state and the
/// TLS slots, the run-queue work and the stack switch. `cargo xtask bench ipc` reads the line.
pub(super) fn switch() -> Result<(), String> {
    use core::sync::atomic::{AtomicU64, Ordering};

    use crate::sched;

    static OTHER: AtomicU64 = AtomicU64::new(0);
    sched::set_preemption(false);
    // The first switch to a new thread starts it: not part of the count.
    sched::spawn("switcher", || {
        for _ in 0..SWITCH_ROUNDS {
            OTHER.fetch_add(1, Ordering::Relaxed);
            sched::yield_now();
        }
    })
    .map_err(|e| format!("spawning the switcher: {e}"))?;
    sched::yield_now();
    let start = clock::counter();
    for _ in 1..SWITCH_ROUNDS {
        sched::yield_now();
    }
    let ticks = clock::counter() - start;
    sched::yield_now();
    sched::set_preemption(true);
    let rounds = OTHER.load(Ordering::Relaxed);
    ensure!(rounds == SWITCH_ROUNDS, "the other thread ran {rounds} rounds, not {SWITCH_ROUNDS}");
    let switches = 2 * (SWITCH_ROUNDS - 1);
    kprintln!("mica: bench switch switches={switches} ticks={ticks} per_switch={}", ticks / switches);
    Ok(())
}

/// Ticks the [`preempt`] scenario lets pass.
const PREEMPT_TICKS: u64 = 20;

/// Preemption: two threads spin forever without yielding; the boot thread still gets the CPU
/// back at every tick until [`PREEMPT_TICKS`] ticks have passed, and both spinners made
/// progress in several time slices each.
pub(super) fn preempt() -> Result<(), String> {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use crate::sched;

    static STOP: AtomicBool = AtomicBool::new(false);
    static SPINS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static SLICES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static DONE: AtomicU64 = AtomicU64::new(0);

    for t in 0..2 {
        let spawned = sched::spawn(&format!("spinner-{t}"), move || {
            let mut last_tick = u64::MAX;
            while !STOP.load(Ordering::Relaxed) {
                SPINS[t].fetch_add(1, Ordering::Relaxed);
                let tick = clock::ticks();
                if tick != last_tick {
                    // A new tick seen while running: a new time slice of this thread.
                    SLICES[t].fetch_add(1, Ordering::Relaxed);
                    last_tick = tick;
                }
            }
            DONE.fetch_add(1, Ordering::SeqCst);
        });
        spawned.map_err(|e| format!("spawning spinner-{t}: {e}"))?;
    }
    let start = clock::ticks();
    let mut boot_slices = 0;
    let mut last = start;
    while clock::ticks() < start + PREEMPT_TICKS {
        if clock::ticks() != last {
            boot_slices += 1;
            last = clock::ticks();
        }
        core::hint::spin_loop();
    }
    STOP.store(true, Ordering::SeqCst);
    while DONE.load(Ordering::SeqCst) < 2 {
        core::hint::spin_loop();
    }
    let spins = [SPINS[0].load(Ordering::Relaxed), SPINS[1].load(Ordering::Relaxed)];
    let slices = [SLICES[0].load(Ordering::Relaxed), SLICES[1].load(Ordering::Relaxed)];
    ensure!(spins[0] > 0 && spins[1] > 0, "a spinner never ran: spins {spins:?}");
    ensure!(slices[0] >= 3 && slices[1] >= 3, "spinners ran in too few time slices: {slices:?}");
    kprintln!(
        "mica: preempt: 2 spinners that never yield and the boot thread shared {PREEMPT_TICKS} ticks: time slices \
         {slices:?} (boot thread {boot_slices}), spins {spins:?}"
    );
    Ok(())
}

/// How long the [`sleep`] scenario's sleeper sleeps.
const SLEEP_MS: u64 = 50;

/// Sleeping: a thread that sleeps 50 ms beside a busy one wakes after its deadline (within a few
/// ticks) having used almost no CPU, and the boot thread, sleeping alone afterwards (only the idle
/// thread left to run), wakes too.
pub(super) fn sleep() -> Result<(), String> {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use crate::sched;

    static WOKE_LATE_BY_NS: AtomicU64 = AtomicU64::new(u64::MAX);
    static SLEEP_CPU: AtomicU64 = AtomicU64::new(u64::MAX);
    static SLEEPER_DONE: AtomicBool = AtomicBool::new(false);
    static BUSY_DONE: AtomicBool = AtomicBool::new(false);

    let now = || clock::monotonic_ns().unwrap_or(0);
    sched::spawn("sleeper", move || {
        let deadline = now() + SLEEP_MS * 1_000_000;
        let cpu = sched::cpu_ticks();
        sched::sleep_until(deadline);
        SLEEP_CPU.store(sched::cpu_ticks() - cpu, Ordering::SeqCst);
        WOKE_LATE_BY_NS.store(now().saturating_sub(deadline), Ordering::SeqCst);
        SLEEPER_DONE.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawning the sleeper: {e}"))?;
    sched::spawn("busy", || {
        while !SLEEPER_DONE.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        BUSY_DONE.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawning the busy thread: {e}"))?;
    while !BUSY_DONE.load(Ordering::SeqCst) {
        sched::sleep_until(now() + clock::tick_ns());
    }
    let (late, cpu) = (WOKE_LATE_BY_NS.load(Ordering::SeqCst), SLEEP_CPU.load(Ordering::SeqCst));
    let tick = clock::tick_ns();
    ensure!(late <= 3 * tick, "the sleeper woke {late} ns after its deadline (a tick is {tick} ns)");
    // Sleeping costs nothing but the switches: far below the time slept, in TSC ticks.
    let slept_tsc = clock::counter_frequency().map_or(0, |f| f.hz()) / 1000 * SLEEP_MS;
    ensure!(cpu < slept_tsc / 20, "the sleeper used {cpu} TSC ticks of CPU while sleeping {SLEEP_MS} ms ({slept_tsc})");
    // Alone: nothing else is ready, so the idle thread halts until the tick that wakes us.
    let start = now();
    sched::sleep_until(start + 30_000_000);
    ensure!(now() >= start + 30_000_000, "the boot thread woke early");
    kprintln!("mica: sleep: woke {late} ns after the deadline, {cpu} TSC ticks of CPU while asleep");
    Ok(())
}
