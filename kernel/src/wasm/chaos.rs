//! The fault injector (`chaos=SEED` on the kernel command line): for `chaos_ms`, at random
//! moments about `chaos_gap_ms` apart (never with `chaos_gap_ms=0`: then only the reports), it
//! kills a random instance of the system's restartable components (`restart = "on-failure"` or
//! `"always"`), as a crash would end it: its thread is [`sched::kill`]ed, its waits return early
//! and its next host call traps. Supervision restarts it; its peers see it gone and reconnect.
//!
//! Around the kills it reports the kernel's memory, for the boot test and `cargo xtask soak
//! chaos` to compare: `mica: chaos-memory when=before|after running=N of M frames_free=F
//! wasm_pages=W frames_promised=P dma_frames=D page_tables=T heap_allocated=H heap_bytes=B`,
//! each taken once every restartable component runs an instance and the system has been quiet
//! (every component waiting) for a while.
//!
//! The frames the kernel holds for itself (besides its heap, counted in bytes) are the total
//! less the free ones, the pages committed to linear memories (`wasm_pages`), the drivers' DMA
//! buffers and its page tables (which follow where linear memories were placed). Free frames include those promised to committed pages not
//! touched yet (linear memories, stacks mapped on first use), which are not free to take: so
//! `frames_free - frames_promised + wasm_pages + dma_frames + page_tables + heap_bytes / 4096`
//! stays the same while the kernel's own frames do, however much of their memory the components
//! touch. That, and
//! `heap_allocated`, must be back where they were.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::arch::clock;
use crate::cmdline::Chaos;
use crate::irq_lock::IrqMutex;
use crate::{kprintln, sched};

/// One component of the system, as the injector sees it.
#[derive(Debug)]
struct Member {
    name: String,
    /// Whether its manifest restarts it: only those are killed.
    restartable: bool,
    /// The thread its instances run on, while one runs.
    running: Option<sched::ThreadId>,
    /// Instances started so far.
    instances: u64,
    /// Whether it has ended for good.
    ended: bool,
}

static MEMBERS: IrqMutex<Vec<Member>> = IrqMutex::new(Vec::new());

/// How long the system must stay quiet before a memory report.
const QUIET_MS: u64 = 500;
/// How long the injector waits for the system to settle (every restartable component running,
/// then quiet) before it reports what it found anyway: well inside the boot test's patience
/// (60 s), so that a system that never settles is reported, not timed out on.
const SETTLE_MS: u64 = 30_000;

/// The system's components, in manifest order, and which of them are restarted when they fail.
pub fn register(components: impl Iterator<Item = (String, bool)>) {
    let mut members = MEMBERS.lock();
    members.clear();
    members.extend(components.map(|(name, restartable)| Member {
        name,
        restartable,
        running: None,
        instances: 0,
        ended: false,
    }));
}

/// An instance of component `index` starts on the running thread.
pub fn instance_started(index: usize) {
    sched::clear_kill();
    if let Some(m) = MEMBERS.lock().get_mut(index) {
        m.running = Some(sched::current_id());
        m.instances += 1;
    }
}

/// The instance of component `index` ended; a kill of it that came too late is forgotten.
pub fn instance_ended(index: usize) {
    if let Some(m) = MEMBERS.lock().get_mut(index) {
        m.running = None;
    }
    sched::clear_kill();
}

/// Component `index` has ended for good (it will not be restarted).
pub fn component_ended(index: usize) {
    if let Some(m) = MEMBERS.lock().get_mut(index) {
        m.ended = true;
    }
}

/// Starts the injector on a thread of its own.
pub fn start(chaos: Chaos) {
    if let Err(e) = sched::spawn("chaos", move || run(chaos)) {
        kprintln!("mica: chaos: cannot start the fault injector ({e})");
    }
}

fn now_ms() -> u64 {
    clock::monotonic_ns().unwrap_or(0) / 1_000_000
}

fn sleep_ms(ms: u64) {
    sched::sleep_until(clock::monotonic_ns().unwrap_or(0) + ms * 1_000_000);
}

/// The restartable components: how many run an instance now, and the names of those that do
/// not.
fn running() -> (usize, usize, Vec<String>) {
    let members = MEMBERS.lock();
    let restartable: Vec<&Member> = members.iter().filter(|m| m.restartable).collect();
    let down: Vec<String> = restartable.iter().filter(|m| m.running.is_none()).map(|m| m.name.clone()).collect();
    (restartable.len() - down.len(), restartable.len(), down)
}

/// Waits until the system is quiet (at most [`SETTLE_MS`]), then reports the kernel's memory as
/// `when`. Quiet: for a whole window of [`QUIET_MS`], every restartable component runs an
/// instance, and in at most half of the window's samples (one each 10 ms) is any other thread
/// ready or running. Not "never busy": a component that polls a timer (`httpd`'s 100 ms) is
/// seen busy whenever its wake falls on a sample's tick, which depends on how the threads fall
/// on the CPUs, not on whether the system has settled.
fn settle_and_report(when: &str) {
    let deadline = now_ms() + SETTLE_MS;
    let mut window = (now_ms(), 0u64, 0u64);
    while now_ms() < deadline {
        let (up, total, _) = running();
        let (start, samples, busy) = &mut window;
        if up < total {
            window = (now_ms(), 0, 0);
        } else {
            *samples += 1;
            if sched::busy_besides_current() > 0 {
                *busy += 1;
            }
            if now_ms() - *start >= QUIET_MS {
                if *busy * 2 <= *samples {
                    break;
                }
                window = (now_ms(), 0, 0);
            }
        }
        sleep_ms(10);
    }
    let (up, total, down) = running();
    let wasm = super::vmem::usage();
    kprintln!(
        "mica: chaos-memory when={when} running={up} of {total} frames_free={} wasm_pages={} \
         frames_promised={} dma_frames={} page_tables={} heap_allocated={} heap_bytes={}",
        crate::mem::phys::free_frames(),
        wasm.pages,
        crate::mem::phys::reserved_frames(),
        crate::mem::dma::frames(),
        crate::mem::paging::table_frames(),
        crate::mem::heap::allocated_bytes(),
        crate::mem::heap::mapped_bytes()
    );
    if !down.is_empty() {
        kprintln!("mica: chaos: not running {when}: {}", down.join(", "));
    }
}

/// A random instance of a restartable component that runs now: its name, instance number and
/// thread.
fn pick(rng: &mut ChaCha8Rng) -> Option<(String, u64, sched::ThreadId)> {
    let members = MEMBERS.lock();
    let candidates: Vec<&Member> = members.iter().filter(|m| m.restartable && m.running.is_some()).collect();
    if candidates.is_empty() {
        return None;
    }
    let m = candidates[(rng.next_u64() % candidates.len() as u64) as usize];
    Some((m.name.clone(), m.instances, m.running?))
}

fn run(chaos: Chaos) {
    let names: Vec<String> = MEMBERS.lock().iter().filter(|m| m.restartable).map(|m| m.name.clone()).collect();
    kprintln!(
        "mica: chaos: seed {}, kills for {} ms, {}, among: {}",
        chaos.seed,
        chaos.run_ms,
        if chaos.gap_ms == 0 {
            String::from("none at all (chaos_gap_ms=0)")
        } else {
            format!("one every {} ms on average", chaos.gap_ms)
        },
        if names.is_empty() { String::from("(no restartable component)") } else { names.join(", ") }
    );
    settle_and_report("before");
    let mut rng = ChaCha8Rng::seed_from_u64(chaos.seed);
    let end = now_ms() + chaos.run_ms;
    let mut kills = 0u64;
    // Each wait is drawn from half to one and a half times the gap; none with a gap of 0.
    let next_gap = |rng: &mut ChaCha8Rng| (chaos.gap_ms > 0).then(|| chaos.gap_ms / 2 + rng.next_u64() % chaos.gap_ms);
    while let Some(gap) = next_gap(&mut rng)
        && now_ms() + gap < end
    {
        sleep_ms(gap);
        let Some((name, instance, thread)) = pick(&mut rng) else { continue };
        if sched::kill(thread) {
            kills += 1;
            kprintln!("mica: chaos: kill {kills}: {name} (instance {instance})");
        }
    }
    sleep_ms(end.saturating_sub(now_ms()));
    let given_up: Vec<String> =
        MEMBERS.lock().iter().filter(|m| m.restartable && m.ended).map(|m| format!("{} ", m.name)).collect();
    kprintln!("mica: chaos: done: {kills} kill(s) in {} ms", chaos.run_ms);
    if !given_up.is_empty() {
        kprintln!("mica: chaos: given up on: {}", given_up.concat().trim_end());
    }
    settle_and_report("after");
}
