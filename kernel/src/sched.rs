//! Kernel threads and the scheduler: one CPU, strict priorities (high, normal, low) and
//! round-robin within a priority, preemptive: at every timer tick the running thread's time slice
//! (one tick) ends, and the next ready thread of its priority or a higher one runs; a thread of a
//! higher priority that becomes ready runs at the next tick, or at once when the thread that
//! woke it checks ([`preempt_point`]). A thread may also yield, sleep, or park until another
//! thread unparks it (IPC waits). A sleeping thread is off the run queue and costs nothing until the tick
//! that finds its deadline passed; when no thread is ready, the idle thread halts the CPU until
//! the next interrupt. SMP is the next step.
//!
//! Preemption is safe against the kernel's own locks because they are all
//! [`IrqMutex`]es: a thread holding one has interrupts off and is never switched away from.
//!
//! Every thread has its own [`KernelStack`] (a guard page below it), its x87/SSE state and its
//! two Wasmtime TLS slots, all switched with it. The boot code becomes the thread `boot` at
//! [`init`]. A finished thread's stack is freed by the next thread that runs (never while it is
//! still the stack in use).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::arch;
use crate::arch::clock;
use crate::arch::context::Context;
use crate::arch::irq_lock::IrqMutex;
use crate::arch::stacks::{KernelStack, StackError};
use crate::components::tls;
pub use crate::runqueue::Priority;
use crate::runqueue::RunQueue;

/// The stack size of a kernel thread (components need deep stacks for Wasmtime and Cranelift
/// code: the same as the component stack).
pub const THREAD_STACK_BYTES: u64 = mica_runtime::config::COMPONENT_STACK_BYTES as u64;

/// A thread's identity.
pub type ThreadId = u64;

/// A kernel thread.
struct Thread {
    /// TSC ticks this thread has run for, up to its last switch away.
    cpu: u64,
    id: ThreadId,
    priority: Priority,
    name: String,
    context: Context,
    /// Wasmtime's TLS slots while the thread is not running.
    tls: [usize; 2],
    /// What the thread runs, taken when it starts.
    entry: Option<Box<dyn FnOnce() + Send>>,
}

struct Scheduler {
    /// The TSC when the running thread was switched to.
    slice_start: u64,
    current: Box<Thread>,
    ready: RunQueue<Box<Thread>>,
    /// Sleeping threads and their deadlines (monotonic ns).
    sleeping: Vec<(u64, Box<Thread>)>,
    /// Parked threads (waiting for [`unpark`]), each with the deadline after which a tick puts
    /// it back anyway.
    parked: Vec<(Option<u64>, Box<Thread>)>,
    /// Threads [`unpark`]ed while they were not parked: their next [`park`] returns at once.
    wake_tokens: Vec<ThreadId>,
    /// The idle thread, when it is not running.
    idle: Option<Box<Thread>>,
    /// Finished threads whose stacks are freed by the next thread to run.
    finished: Vec<Box<Thread>>,
    next_id: ThreadId,
}

static SCHEDULER: IrqMutex<Option<Scheduler>> = IrqMutex::new(None);

/// The idle thread's id.
const IDLE: ThreadId = 1;
/// The idle thread's stack: it only halts.
const IDLE_STACK_BYTES: u64 = 16 * 1024;

/// Makes the running code the thread `boot`, and the idle thread.
pub fn init() -> Result<(), SpawnError> {
    let boot = Box::new(Thread {
        cpu: 0,
        id: 0,
        priority: Priority::Normal,
        name: "boot".into(),
        context: Context::current(),
        tls: [0; 2],
        entry: None,
    });
    let stack = KernelStack::new(IDLE_STACK_BYTES).map_err(SpawnError::Stack)?;
    let halt: Box<dyn FnOnce() + Send> = Box::new(|| {
        loop {
            arch::wait_for_interrupt();
        }
    });
    let idle = Box::new(Thread {
        cpu: 0,
        id: IDLE,
        priority: Priority::Low,
        name: "idle".into(),
        context: Context::new(stack, thread_main, 0),
        tls: [0; 2],
        entry: Some(halt),
    });
    *SCHEDULER.lock() = Some(Scheduler {
        slice_start: clock::rdtsc(),
        current: boot,
        ready: RunQueue::new(),
        sleeping: Vec::new(),
        parked: Vec::new(),
        wake_tokens: Vec::new(),
        idle: Some(idle),
        finished: Vec::new(),
        next_id: IDLE + 1,
    });
    Ok(())
}

/// Why a thread could not be made.
#[derive(Debug)]
pub enum SpawnError {
    /// [`init`] has not run.
    NotStarted,
    /// No stack for it.
    Stack(StackError),
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::NotStarted => write!(f, "the scheduler is not started"),
            SpawnError::Stack(e) => write!(f, "no stack for the thread: {e}"),
        }
    }
}

/// Makes a thread of normal priority that runs `f`, queued behind the ready ones.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<ThreadId, SpawnError> {
    spawn_with(name, Priority::Normal, f)
}

/// Makes a thread of `priority` that runs `f`, queued behind the ready ones of its priority.
pub fn spawn_with(name: &str, priority: Priority, f: impl FnOnce() + Send + 'static) -> Result<ThreadId, SpawnError> {
    let stack = KernelStack::new(THREAD_STACK_BYTES).map_err(SpawnError::Stack)?;
    let context = Context::new(stack, thread_main, 0);
    arch::without_interrupts(|| {
        let mut guard = SCHEDULER.lock();
        let scheduler = guard.as_mut().ok_or(SpawnError::NotStarted)?;
        let id = scheduler.next_id;
        scheduler.next_id += 1;
        let entry: Box<dyn FnOnce() + Send> = Box::new(f);
        let thread = Thread { cpu: 0, id, priority, name: name.to_string(), context, tls: [0; 2], entry: Some(entry) };
        scheduler.ready.push(priority, Box::new(thread));
        Ok(id)
    })
}

/// The running thread's id and name.
pub fn current() -> Option<(ThreadId, String)> {
    arch::without_interrupts(|| SCHEDULER.lock().as_ref().map(|s| (s.current.id, s.current.name.clone())))
}

/// TSC ticks the running thread has run for (guest instructions under `-icount shift=0`): its
/// own CPU time, not counting other threads that ran in between.
pub fn cpu_ticks() -> u64 {
    let guard = SCHEDULER.lock();
    match guard.as_ref() {
        Some(s) => s.current.cpu + clock::rdtsc().wrapping_sub(s.slice_start),
        None => clock::rdtsc(),
    }
}

/// The running thread's id (0 before the scheduler starts: the boot thread's).
pub fn current_id() -> ThreadId {
    arch::without_interrupts(|| SCHEDULER.lock().as_ref().map_or(0, |s| s.current.id))
}

/// How many threads are ready to run (not counting the running one).
pub fn ready_count() -> usize {
    arch::without_interrupts(|| SCHEDULER.lock().as_ref().map_or(0, |s| s.ready.len()))
}

/// Whether the timer tick switches threads (on by default; a boot test of strict cooperative
/// order turns it off).
static PREEMPTION: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Turns preemption on or off.
pub fn set_preemption(on: bool) {
    PREEMPTION.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Called from the timer interrupt (interrupts off, on the interrupted thread's stack): the
/// running thread's time slice is over; the next ready thread runs.
pub fn on_tick() {
    let idle = {
        let mut guard = SCHEDULER.lock();
        let Some(scheduler) = guard.as_mut() else { return };
        if let Some(now) = clock::monotonic_ns() {
            let mut i = 0;
            while i < scheduler.sleeping.len() {
                if scheduler.sleeping[i].0 <= now {
                    let (_, thread) = scheduler.sleeping.swap_remove(i);
                    scheduler.ready.push(thread.priority, thread);
                } else {
                    i += 1;
                }
            }
            let mut i = 0;
            while i < scheduler.parked.len() {
                if scheduler.parked[i].0.is_some_and(|deadline| deadline <= now) {
                    let (_, thread) = scheduler.parked.swap_remove(i);
                    scheduler.ready.push(thread.priority, thread);
                } else {
                    i += 1;
                }
            }
        }
        // The slice ends only for a thread of the same or a higher priority.
        let current = &scheduler.current;
        current.id == IDLE || scheduler.ready.best().is_some_and(|best| best >= current.priority)
    };
    if idle || PREEMPTION.load(core::sync::atomic::Ordering::Relaxed) {
        switch_away(After::Ready);
    }
}

/// Switches at once if a thread of a higher priority than the running one is ready (called after
/// waking threads, so that a woken high-priority thread need not wait for the next tick).
pub fn preempt_point() {
    let higher = arch::without_interrupts(|| {
        SCHEDULER
            .lock()
            .as_ref()
            .is_some_and(|s| s.current.id != IDLE && s.ready.best().is_some_and(|best| best > s.current.priority))
    });
    if higher {
        switch_away(After::Ready);
    }
}

/// The running thread's priority.
pub fn current_priority() -> Priority {
    arch::without_interrupts(|| SCHEDULER.lock().as_ref().map_or(Priority::Normal, |s| s.current.priority))
}

/// Lets the next ready thread run; returns when this one is scheduled again (at once when no
/// other is ready).
pub fn yield_now() {
    switch_away(After::Ready);
}

/// Sleeps until the monotonic clock reaches `deadline_ns`: the thread leaves the run queue and
/// is put back by the first timer tick at or after its deadline (so it wakes within a tick).
/// Before the scheduler or the clock runs, it halts until the deadline instead.
pub fn sleep_until(deadline_ns: u64) {
    loop {
        let Some(now) = clock::monotonic_ns() else { return };
        if now >= deadline_ns {
            return;
        }
        if SCHEDULER.lock().is_none() {
            arch::wait_for_interrupt();
        } else {
            switch_away(After::Sleep(deadline_ns));
        }
    }
}

/// Parks the running thread until [`unpark`] names it or, with a deadline (monotonic ns), until
/// the first tick at or after it. Returns at once if it was unparked since its last park (a wake
/// that came before the park is never lost). The caller checks why it woke: a park may also
/// return for a wake meant for an earlier park that had already timed out.
pub fn park(deadline: Option<u64>) {
    switch_away(After::Park(deadline));
}

/// Makes thread `id` ready if it is parked; otherwise its next [`park`] returns at once.
pub fn unpark(id: ThreadId) {
    arch::without_interrupts(|| {
        let mut guard = SCHEDULER.lock();
        let Some(scheduler) = guard.as_mut() else { return };
        if let Some(i) = scheduler.parked.iter().position(|(_, t)| t.id == id) {
            let (_, thread) = scheduler.parked.swap_remove(i);
            scheduler.ready.push(thread.priority, thread);
        } else if !scheduler.wake_tokens.contains(&id) {
            scheduler.wake_tokens.push(id);
        }
    });
}

/// Where the running thread goes when it is switched away from.
#[derive(Clone, Copy, Debug)]
enum After {
    /// The back of the run queue.
    Ready,
    /// Nowhere: it has ended.
    Finished,
    /// The sleepers, until this deadline (monotonic ns).
    Sleep(u64),
    /// The parked threads, until unparked (or this deadline passes).
    Park(Option<u64>),
}

/// Where every new thread starts: runs its entry, then ends the thread.
extern "C" fn thread_main(_: usize) -> ! {
    // The switch into a new thread happens with interrupts off; threads run with them on.
    arch::enable_interrupts();
    let entry = arch::without_interrupts(|| {
        let mut guard = SCHEDULER.lock();
        let scheduler = guard.as_mut().expect("a thread runs only once the scheduler exists");
        scheduler.finished.clear();
        scheduler.current.entry.take()
    });
    if let Some(entry) = entry {
        entry();
    }
    switch_away(After::Finished);
    unreachable!("a finished thread was scheduled again");
}

/// Switches to the next ready thread (the idle thread when none is ready and the running one
/// cannot go on). The running thread goes where `after` says; a finished one's stack is freed by
/// whoever runs next.
fn switch_away(after: After) {
    arch::without_interrupts(|| {
        let (from, to): (*mut Context, *mut Context) = {
            let mut guard = SCHEDULER.lock();
            let Some(scheduler) = guard.as_mut() else { return };
            if !matches!(after, After::Finished) {
                scheduler.finished.clear();
            }
            let current = scheduler.current.id;
            match after {
                After::Park(_) => {
                    if let Some(i) = scheduler.wake_tokens.iter().position(|&t| t == current) {
                        scheduler.wake_tokens.swap_remove(i);
                        return;
                    }
                }
                After::Finished => scheduler.wake_tokens.retain(|&t| t != current),
                _ => {}
            }
            // Yielding (or a tick) never hands the CPU to a lower priority than the running one.
            let candidate = match after {
                After::Ready if scheduler.current.id != IDLE => {
                    scheduler.ready.pop_at_least(scheduler.current.priority)
                }
                _ => scheduler.ready.pop(),
            };
            let next = match (candidate, after) {
                (Some(next), _) => next,
                (None, After::Ready) => return,
                (None, _) => match scheduler.idle.take() {
                    Some(idle) => idle,
                    None => panic!("thread {} cannot go on and the idle thread is missing", scheduler.current.name),
                },
            };
            let now = clock::rdtsc();
            scheduler.current.cpu += now.wrapping_sub(scheduler.slice_start);
            scheduler.slice_start = now;
            let mut previous = core::mem::replace(&mut scheduler.current, next);
            previous.tls = tls::save();
            tls::restore(scheduler.current.tls);
            // Boxes: the contexts stay where they are when the box moves into a queue.
            let from: *mut Context = &mut previous.context;
            let to: *mut Context = &mut scheduler.current.context;
            match after {
                _ if previous.id == IDLE => scheduler.idle = Some(previous),
                After::Ready => scheduler.ready.push(previous.priority, previous),
                After::Finished => scheduler.finished.push(previous),
                After::Sleep(deadline) => scheduler.sleeping.push((deadline, previous)),
                After::Park(deadline) => scheduler.parked.push((deadline, previous)),
            }
            (from, to)
        };
        // Both contexts live in boxed threads owned by the scheduler (the previous one in a queue
        // or the finished list, which is only cleared by a thread running on another stack, never
        // before this switch completes). Interrupts are off and this is the only CPU, so nothing
        // else touches them until the switch is done; the lock is released first so that the
        // thread switched to can take it.
        // SAFETY: as above: both pointers are valid, unaliased and outlive the switch.
        let switched = unsafe { (*from).switch(&mut *to) };
        if let Err(e) = switched {
            panic!("scheduler: bad context switch: {e:?}");
        }
    });
}
