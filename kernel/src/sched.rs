//! Kernel threads and the scheduler, on every CPU: strict priorities (high, normal, low) and
//! round-robin within a priority, preemptive. At every timer tick the running thread's time slice
//! (one tick) ends, and the next ready thread of its priority or a higher one runs; a thread of a
//! higher priority that becomes ready runs at the next tick, or at once when the thread that woke
//! it checks ([`preempt_point`]). A thread may also yield, sleep, or park until another thread
//! unparks it (IPC waits). A sleeping or parked thread is off the run queues and costs nothing
//! until the tick that finds its deadline passed (or its unpark); a CPU with nothing to run
//! halts in its idle thread until the next interrupt.
//!
//! **SMP.** Each CPU has its own run queue and its own idle thread; a CPU whose queue has nothing
//! it may run takes work from the other CPUs' queues (work stealing), so busy threads spread over
//! the CPUs. New and woken threads go to the queue of the CPU that made or woke them, and an idle
//! CPU, if there is one, gets a reschedule IPI so that it takes the work at once rather than at
//! its next tick. One lock guards all of it. A thread switched away from is not put anywhere until the
//! switch is complete: the thread switched to places it (`finish_switch`), so that no other CPU
//! can resume a thread whose state is still being saved.
//!
//! Preemption is safe against the kernel's own locks because they are all [`IrqMutex`]es: a
//! thread holding one has interrupts off and is never switched away from.
//!
//! Every thread has its own [`KernelStack`] (a guard page below it), its vector state and its two
//! Wasmtime TLS slots, all switched with it. The boot code becomes the thread `boot` at [`init`].
//! A finished thread's stack is freed once the switch away from it is complete, outside the lock.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch;
use crate::arch::clock;
use crate::context::Context;
use crate::irq_lock::IrqMutex;
use crate::mem::stacks::{KernelStack, StackError};
use crate::percpu::{self, MAX_CPUS};
pub use crate::runqueue::Priority;
use crate::runqueue::RunQueue;
use crate::wasm::tls;

/// The stack size of a kernel thread (components need deep stacks for Wasmtime and Cranelift
/// code: the same as the component stack).
pub const THREAD_STACK_BYTES: u64 = mica_runtime::config::COMPONENT_STACK_BYTES as u64;

/// How much of a thread's stack is mapped when it is made (the rest on first use): about what
/// a component uses (its `stack-used` line says 14.5 KiB for most).
const EAGER_STACK_BYTES: u64 = 16 * 1024;

/// A thread's identity.
pub type ThreadId = u64;

/// A kernel thread.
struct Thread {
    /// TSC ticks this thread has run for, up to its last switch away.
    cpu_time: u64,
    id: ThreadId,
    priority: Priority,
    name: String,
    context: Context,
    /// Wasmtime's TLS slots while the thread is not running.
    tls: [usize; 2],
    /// What the thread runs, taken when it starts.
    entry: Option<Box<dyn FnOnce() + Send>>,
    /// Whether it is a CPU's idle thread (never in a run queue).
    idle: bool,
    /// The CPUs it has run on, as a bit set.
    ran_on: u32,
}

/// One CPU's part of the scheduler.
#[derive(Default)]
struct Cpu {
    /// The running thread (`None` until the CPU joins).
    current: Option<Box<Thread>>,
    /// The idle thread, when it is not running.
    idle: Option<Box<Thread>>,
    /// The TSC when the running thread was switched to.
    slice_start: u64,
    /// The thread this CPU just switched away from and where it goes, placed by the thread
    /// switched to once the switch is complete.
    pending: Option<(Box<Thread>, After)>,
    /// Ready threads.
    ready: RunQueue<Box<Thread>>,
}

struct Scheduler {
    cpus: Vec<Cpu>,
    /// Sleeping threads and their deadlines (monotonic ns).
    sleeping: Vec<(u64, Box<Thread>)>,
    /// Parked threads (waiting for [`unpark`]), each with the deadline after which a tick puts
    /// it back anyway.
    parked: Vec<(Option<u64>, Box<Thread>)>,
    /// Threads [`unpark`]ed while they were not parked: their next [`park`] returns at once.
    wake_tokens: Vec<ThreadId>,
    /// Threads told to stop what they run ([`kill`]): their waits return early until they
    /// [`clear_kill`].
    killed: Vec<ThreadId>,
    next_id: ThreadId,
}

impl Scheduler {
    fn cpu(&mut self, cpu: usize) -> &mut Cpu {
        &mut self.cpus[cpu]
    }

    fn current(&self, cpu: usize) -> &Thread {
        self.cpus[cpu].current.as_deref().expect("a CPU in the scheduler has a running thread")
    }

    /// The highest priority ready anywhere.
    fn best_ready(&self) -> Option<Priority> {
        self.cpus.iter().filter_map(|c| c.ready.best()).max()
    }

    /// Another CPU that is running its idle thread, to be told there is work.
    fn idle_cpu_besides(&self, cpu: usize) -> Option<usize> {
        (0..self.cpus.len()).find(|&c| c != cpu && self.cpus[c].current.as_deref().is_some_and(|t| t.idle))
    }

    /// A ready thread of at least `at_least` for `cpu`: from its own queue first, else taken from
    /// another CPU's (the one whose best thread is the most urgent).
    fn take_ready(&mut self, cpu: usize, at_least: Priority) -> Option<Box<Thread>> {
        if let Some(t) = self.cpus[cpu].ready.pop_at_least(at_least) {
            return Some(t);
        }
        let victim = (0..self.cpus.len())
            .filter(|&c| c != cpu)
            .filter(|&c| self.cpus[c].ready.best().is_some_and(|b| b >= at_least))
            .max_by_key(|&c| self.cpus[c].ready.best())?;
        self.cpus[victim].ready.pop_at_least(at_least)
    }

    /// Puts a thread that was switched away from on `cpu` where `after` says. Finished threads
    /// are handed back to be freed outside the lock.
    #[allow(clippy::vec_box, reason = "threads stay boxed: a context's saved state must not move")]
    fn place(&mut self, cpu: usize, thread: Box<Thread>, after: After, dead: &mut Vec<Box<Thread>>) {
        if thread.idle {
            self.cpus[cpu].idle = Some(thread);
            return;
        }
        match after {
            After::Ready | After::Yield => self.cpus[cpu].ready.push(thread.priority, thread),
            After::Finished => dead.push(thread),
            // Killed while the switch away was under way: its sleep ends at once.
            After::Sleep(_) if self.killed.contains(&thread.id) => self.cpus[cpu].ready.push(thread.priority, thread),
            After::Sleep(deadline) => self.sleeping.push((deadline, thread)),
            After::Park(deadline) => {
                if let Some(i) = self.wake_tokens.iter().position(|&t| t == thread.id) {
                    // Unparked while the switch away was under way.
                    self.wake_tokens.swap_remove(i);
                    self.cpus[cpu].ready.push(thread.priority, thread);
                } else {
                    self.parked.push((deadline, thread));
                }
            }
        }
    }
}

static SCHEDULER: IrqMutex<Option<Scheduler>> = IrqMutex::new(None);

/// The idle thread's stack: it only halts.
const IDLE_STACK_BYTES: u64 = 16 * 1024;

/// The idle loop: halt until an interrupt, forever (the tick switches to ready threads).
fn idle_loop() -> ! {
    loop {
        arch::wait_for_interrupt();
    }
}

/// Makes the running code the thread `boot` on CPU 0, and CPU 0's idle thread.
pub fn init() -> Result<(), SpawnError> {
    let boot = Box::new(Thread {
        cpu_time: 0,
        id: 0,
        priority: Priority::Normal,
        name: "boot".into(),
        context: Context::current(),
        tls: [0; 2],
        entry: None,
        idle: false,
        ran_on: 1,
    });
    let stack = KernelStack::new(IDLE_STACK_BYTES).map_err(SpawnError::Stack)?;
    let halt: Box<dyn FnOnce() + Send> = Box::new(|| idle_loop());
    let idle = Box::new(Thread {
        cpu_time: 0,
        id: 1,
        priority: Priority::Low,
        name: "idle-0".into(),
        context: Context::new(stack, thread_main, 0),
        tls: [0; 2],
        entry: Some(halt),
        idle: true,
        ran_on: 0,
    });
    let mut cpus: Vec<Cpu> = (0..MAX_CPUS).map(|_| Cpu::default()).collect();
    cpus[0] = Cpu { current: Some(boot), idle: Some(idle), slice_start: clock::counter(), ..Cpu::default() };
    *SCHEDULER.lock() = Some(Scheduler {
        cpus,
        sleeping: Vec::new(),
        parked: Vec::new(),
        wake_tokens: Vec::new(),
        killed: Vec::new(),
        next_id: 2,
    });
    Ok(())
}

/// Makes the code running on CPU `cpu` (an AP that has just come up) that CPU's idle thread, so
/// that the CPU takes part in scheduling from its next tick on, and runs the idle loop.
pub fn join(cpu: usize) -> ! {
    arch::without_interrupts(|| {
        let mut guard = SCHEDULER.lock();
        let Some(s) = guard.as_mut() else { return };
        let id = s.next_id;
        s.next_id += 1;
        let idle = Box::new(Thread {
            cpu_time: 0,
            id,
            priority: Priority::Low,
            name: format!("idle-{cpu}"),
            context: Context::current(),
            tls: [0; 2],
            entry: None,
            idle: true,
            ran_on: 1 << cpu,
        });
        let slot = s.cpu(cpu);
        slot.current = Some(idle);
        slot.slice_start = clock::counter();
    });
    idle_loop()
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

/// Makes a thread of `priority` that runs `f`, queued on this CPU behind the ready ones of its
/// priority (another CPU may take it).
pub fn spawn_with(name: &str, priority: Priority, f: impl FnOnce() + Send + 'static) -> Result<ThreadId, SpawnError> {
    let stack = KernelStack::new_lazy(THREAD_STACK_BYTES, EAGER_STACK_BYTES).map_err(SpawnError::Stack)?;
    let context = Context::new(stack, thread_main, 0);
    let entry: Box<dyn FnOnce() + Send> = Box::new(f);
    let thread = Box::new(Thread {
        cpu_time: 0,
        id: 0,
        priority,
        name: name.to_string(),
        context,
        tls: [0; 2],
        entry: Some(entry),
        idle: false,
        ran_on: 0,
    });
    arch::without_interrupts(|| {
        let mut guard = SCHEDULER.lock();
        let Some(s) = guard.as_mut() else { return Err(SpawnError::NotStarted) };
        let mut thread = thread;
        let id = s.next_id;
        s.next_id += 1;
        thread.id = id;
        let cpu = percpu::index();
        s.cpus[cpu].ready.push(priority, thread);
        Ok((id, s.idle_cpu_besides(cpu)))
    })
    .map(|(id, idle)| {
        kick(idle);
        id
    })
}

/// Tells idle CPU `cpu` (if any) that there is work to take: an IPI, so that it need not wait for
/// its next tick.
fn kick(cpu: Option<usize>) {
    if let Some(data) = cpu.and_then(percpu::of) {
        arch::irq::send_reschedule(data.hw_id.load(core::sync::atomic::Ordering::Relaxed));
    }
}

/// Called from the reschedule IPI: an idle CPU takes the work it was told about.
pub fn on_reschedule() {
    let idle = with(|s, cpu| s.cpus[cpu].current.as_deref().is_some_and(|t| t.idle));
    if idle == Some(true) {
        switch_away(After::Ready);
    }
}

/// Runs `f` on the scheduler and this CPU's index, with interrupts off.
fn with<R>(f: impl FnOnce(&mut Scheduler, usize) -> R) -> Option<R> {
    arch::without_interrupts(|| {
        let mut guard = SCHEDULER.lock();
        guard.as_mut().map(|s| f(s, percpu::index()))
    })
}

/// The running thread's id and name.
pub fn current() -> Option<(ThreadId, String)> {
    with(|s, cpu| {
        let t = s.current(cpu);
        (t.id, t.name.clone())
    })
}

/// TSC ticks the running thread has run for (guest instructions under `-icount shift=0`): its
/// own CPU time, not counting other threads that ran in between.
pub fn cpu_ticks() -> u64 {
    with(|s, cpu| s.current(cpu).cpu_time + clock::counter().wrapping_sub(s.cpus[cpu].slice_start))
        .unwrap_or_else(clock::counter)
}

/// TSC ticks every CPU's idle thread has run so far (halted, waiting for an interrupt): under
/// `-icount shift=0`, virtual time that passed with nothing to run, such as waits for the host's
/// disk, which instruction counts should leave out.
pub fn idle_ticks() -> u64 {
    let now = clock::counter();
    SCHEDULER.lock().as_ref().map_or(0, |s| {
        s.cpus
            .iter()
            .map(|c| match (&c.current, &c.idle) {
                (Some(t), _) if t.idle => t.cpu_time + now.wrapping_sub(c.slice_start),
                (_, Some(t)) => t.cpu_time,
                _ => 0,
            })
            .sum()
    })
}

/// The running thread's id (0 before the scheduler starts: the boot thread's).
pub fn current_id() -> ThreadId {
    with(|s, cpu| s.current(cpu).id).unwrap_or(0)
}

/// How deep the running thread has used its stack so far, in bytes (see
/// `KernelStack::high_water`); `None` for a thread without a stack of its own.
pub fn stack_high_water() -> Option<u64> {
    // The stack's bounds under the lock; the scan (up to the whole stack) outside it: the stack
    // is the running thread's own and stays while it runs.
    let (bottom, top) = with(|s, cpu| s.current(cpu).context.stack().map(|k| (k.bottom(), k.top()))).flatten()?;
    crate::mem::stacks::high_water(bottom, top)
}

/// The CPUs the running thread has run on so far, as a bit set (bit N: CPU N).
pub fn current_cpus() -> u32 {
    with(|s, cpu| s.current(cpu).ran_on).unwrap_or(1)
}

/// How many threads are ready to run (not counting the running ones).
pub fn ready_count() -> usize {
    with(|s, _| s.cpus.iter().map(|c| c.ready.len()).sum()).unwrap_or(0)
}

/// How many threads besides the calling one are ready or running (idle threads do not count):
/// 0 means every other thread is parked, asleep or finished.
pub fn busy_besides_current() -> usize {
    with(|s, cpu| {
        let ready: usize = s.cpus.iter().map(|c| c.ready.len()).sum();
        let running = s
            .cpus
            .iter()
            .enumerate()
            .filter(|(c, slot)| *c != cpu && slot.current.as_deref().is_some_and(|t| !t.idle))
            .count();
        ready + running
    })
    .unwrap_or(0)
}

/// Whether the timer tick switches threads (on by default; a boot test of strict cooperative
/// order turns it off).
static PREEMPTION: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Turns preemption on or off.
pub fn set_preemption(on: bool) {
    PREEMPTION.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Called from the timer interrupt on every CPU (interrupts off, on the interrupted thread's
/// stack): wakes threads whose deadline passed, and ends the running thread's time slice.
pub fn on_tick() {
    let decision = with(|s, cpu| {
        if s.cpus[cpu].current.is_none() {
            return (false, false);
        }
        if let Some(now) = clock::monotonic_ns() {
            let mut i = 0;
            while i < s.sleeping.len() {
                if s.sleeping[i].0 <= now {
                    let (_, thread) = s.sleeping.swap_remove(i);
                    s.cpus[cpu].ready.push(thread.priority, thread);
                } else {
                    i += 1;
                }
            }
            let mut i = 0;
            while i < s.parked.len() {
                if s.parked[i].0.is_some_and(|deadline| deadline <= now) {
                    let (_, thread) = s.parked.swap_remove(i);
                    s.cpus[cpu].ready.push(thread.priority, thread);
                } else {
                    i += 1;
                }
            }
        }
        // The idle thread gives way to any ready thread; any other thread's slice ends only for
        // a thread of the same or a higher priority, and only while preemption is on.
        let current = s.current(cpu);
        let waiting = s.best_ready().is_some_and(|best| best >= current.priority);
        (current.idle, waiting)
    });
    let Some((idle, waiting)) = decision else { return };
    if idle || (waiting && PREEMPTION.load(core::sync::atomic::Ordering::Relaxed)) {
        switch_away(After::Ready);
    }
}

/// Switches at once if a thread of a higher priority than the running one is ready (called after
/// waking threads, so that a woken high-priority thread need not wait for the next tick).
pub fn preempt_point() {
    let higher = with(|s, cpu| {
        let current = s.current(cpu);
        !current.idle && s.best_ready().is_some_and(|best| best > current.priority)
    });
    if higher == Some(true) {
        switch_away(After::Ready);
    }
}

/// Called at the end of a device interrupt, on the interrupted thread's stack: the thread the
/// interrupt woke runs at once if this CPU was idle or it has a higher priority than the running
/// thread (otherwise a waiting driver would sleep on until the next tick).
pub fn on_device_interrupt() {
    let switch = with(|s, cpu| {
        let current = s.current(cpu);
        s.best_ready().is_some_and(|best| current.idle || best > current.priority)
    });
    if switch == Some(true) {
        switch_away(After::Ready);
    }
}

/// The running thread's priority.
pub fn current_priority() -> Priority {
    with(|s, cpu| s.current(cpu).priority).unwrap_or(Priority::Normal)
}

/// Lets another ready thread run, of any priority (a thread that yields is waiting for something,
/// often for a lower-priority thread that holds a lock); returns when this one is scheduled again
/// (at once when no other is ready). A higher-priority thread that yields to a lower one gets the
/// CPU back at the next tick.
pub fn yield_now() {
    switch_away(After::Yield);
}

/// Sleeps until the monotonic clock reaches `deadline_ns`: the thread leaves the run queue and
/// is put back by the first timer tick at or after its deadline (so it wakes within a tick).
/// Before the scheduler or the clock runs, it halts until the deadline instead.
pub fn sleep_until(deadline_ns: u64) {
    loop {
        let Some(now) = clock::monotonic_ns() else { return };
        if now >= deadline_ns || killed() {
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

/// Wakes thread `to` and parks the running thread, as [`unpark`] then [`park`] would, but hands
/// the CPU straight to `to` when it can: `to` was parked and nothing of a higher priority is
/// ready here. Then `to` runs next on this CPU without going through a run queue, and this
/// thread parks in the same pass of the scheduler: how a call reaches its server and a reply its
/// caller. Otherwise `to` goes to a run queue as [`unpark`] puts it. If this thread was unparked
/// since its last park, it does not park, and `to` is only made ready.
pub fn park_and_wake(to: ThreadId, deadline: Option<u64>) {
    switch_away_waking(After::Park(deadline), Some(to));
}

/// Makes thread `id` ready (on this CPU's queue) if it is parked; otherwise its next [`park`]
/// returns at once. Returns whether the thread it made ready has a higher priority than the
/// running one (then the caller should reach a [`preempt_point`] soon).
pub fn unpark(id: ThreadId) -> bool {
    let woke = with(|s, cpu| {
        if let Some(i) = s.parked.iter().position(|(_, t)| t.id == id) {
            let (_, thread) = s.parked.swap_remove(i);
            let current = s.current(cpu);
            let higher = current.idle || thread.priority > current.priority;
            s.cpus[cpu].ready.push(thread.priority, thread);
            return (s.idle_cpu_besides(cpu), higher);
        }
        if !s.wake_tokens.contains(&id) {
            s.wake_tokens.push(id);
        }
        (None, false)
    });
    let (idle, higher) = woke.unwrap_or((None, false));
    kick(idle);
    higher
}

/// How many threads are marked killed: while none is, [`killed`] costs one load.
static KILLS: AtomicUsize = AtomicUsize::new(0);

/// Tells thread `id` to stop what it runs: it is marked killed, and taken out of a park or a
/// sleep (or, running, its next park returns at once). Every wait of the kernel returns early
/// for a killed thread and the component host ends the instance it runs (a trap) at its next
/// host call; a thread that never waits nor calls the host runs on. Returns whether the thread
/// exists.
pub fn kill(id: ThreadId) -> bool {
    let found = with(|s, cpu| {
        if !s.killed.contains(&id) {
            s.killed.push(id);
            KILLS.store(s.killed.len(), Ordering::Relaxed);
        }
        if let Some(i) = s.sleeping.iter().position(|(_, t)| t.id == id) {
            let (_, thread) = s.sleeping.swap_remove(i);
            s.cpus[cpu].ready.push(thread.priority, thread);
            return (true, s.idle_cpu_besides(cpu));
        }
        if let Some(i) = s.parked.iter().position(|(_, t)| t.id == id) {
            let (_, thread) = s.parked.swap_remove(i);
            s.cpus[cpu].ready.push(thread.priority, thread);
            return (true, s.idle_cpu_besides(cpu));
        }
        let exists = s.cpus.iter().any(|c| {
            c.current.as_deref().is_some_and(|t| t.id == id)
                || c.ready.iter().any(|t| t.id == id)
                || c.pending.as_ref().is_some_and(|(t, _)| t.id == id)
        });
        if exists && !s.wake_tokens.contains(&id) {
            s.wake_tokens.push(id);
        }
        if !exists {
            s.killed.retain(|&t| t != id);
            KILLS.store(s.killed.len(), Ordering::Relaxed);
        }
        (exists, None)
    });
    let (found, idle) = found.unwrap_or((false, None));
    kick(idle);
    found
}

/// Whether the running thread has been [`kill`]ed (and not [`clear_kill`]ed since).
pub fn killed() -> bool {
    if KILLS.load(Ordering::Relaxed) == 0 {
        return false;
    }
    with(|s, cpu| s.killed.contains(&s.current(cpu).id)).unwrap_or(false)
}

/// Clears the running thread's kill (when what it ran has ended).
pub fn clear_kill() {
    if KILLS.load(Ordering::Relaxed) == 0 {
        return;
    }
    with(|s, cpu| {
        let id = s.current(cpu).id;
        s.killed.retain(|&t| t != id);
        KILLS.store(s.killed.len(), Ordering::Relaxed);
    });
}

/// Where the running thread goes when it is switched away from.
#[derive(Clone, Copy, Debug)]
enum After {
    /// The back of the run queue; the next thread is of the same priority or a higher one.
    Ready,
    /// The back of the run queue; the next thread may be of any priority.
    Yield,
    /// Nowhere: it has ended.
    Finished,
    /// The sleepers, until this deadline (monotonic ns).
    Sleep(u64),
    /// The parked threads, until unparked (or this deadline passes).
    Park(Option<u64>),
}

/// Where every new thread starts: completes the switch to it, runs its entry, then ends the
/// thread.
extern "C" fn thread_main(_: usize) -> ! {
    // The switch into a new thread happens with interrupts off: the thread switched away from is
    // placed before anything can interrupt, then threads run with interrupts on.
    finish_switch();
    let entry = with(|s, cpu| s.cpus[cpu].current.as_mut().and_then(|t| t.entry.take())).flatten();
    arch::enable_interrupts();
    if let Some(entry) = entry {
        entry();
    }
    switch_away(After::Finished);
    unreachable!("a finished thread was scheduled again");
}

/// Places the thread this CPU switched away from (see [`Cpu::pending`]); frees it if it has
/// finished. Runs on the thread switched to, with interrupts off.
fn finish_switch() {
    let mut dead = Vec::new();
    with(|s, cpu| {
        if let Some((thread, after)) = s.cpus[cpu].pending.take() {
            s.place(cpu, thread, after, &mut dead);
        }
    });
    // Outside the lock: freeing a stack unmaps it, which may wait for other CPUs' TLBs.
    drop(dead);
}

/// Switches to the next ready thread (this CPU's idle thread when none is ready and the running
/// one cannot go on). The running thread goes where `after` says once the switch is complete.
fn switch_away(after: After) {
    switch_away_waking(after, None);
}

/// [`switch_away`], waking thread `wake` first and preferring it as the next thread (see
/// [`park_and_wake`]).
fn switch_away_waking(after: After, wake: Option<ThreadId>) {
    let mut kicked = None;
    arch::without_interrupts(|| {
        let (from, to, kick_now): (*mut Context, *mut Context, Option<usize>) = {
            let mut guard = SCHEDULER.lock();
            let Some(s) = guard.as_mut() else { return };
            let cpu = percpu::index();
            // The thread to wake, if it was parked: taken out, to run next or to be made ready.
            let mut woken = None;
            if let Some(id) = wake {
                match s.parked.iter().position(|(_, t)| t.id == id) {
                    Some(i) => woken = Some(s.parked.swap_remove(i).1),
                    None if !s.wake_tokens.contains(&id) => s.wake_tokens.push(id),
                    None => {}
                }
            }
            let Some(current) = s.cpus[cpu].current.as_deref() else { return };
            let (current_id, current_idle, current_priority) = (current.id, current.idle, current.priority);
            match after {
                After::Park(_) => {
                    if let Some(i) = s.wake_tokens.iter().position(|&t| t == current_id) {
                        s.wake_tokens.swap_remove(i);
                        if let Some(thread) = woken {
                            s.cpus[cpu].ready.push(thread.priority, thread);
                            kicked = s.idle_cpu_besides(cpu);
                        }
                        return;
                    }
                }
                After::Finished => {
                    s.wake_tokens.retain(|&t| t != current_id);
                    if s.killed.contains(&current_id) {
                        s.killed.retain(|&t| t != current_id);
                        KILLS.store(s.killed.len(), Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            // A tick or a preemption point never hands the CPU to a lower priority than the
            // running thread's; a yield may (see `yield_now`).
            let at_least = match after {
                After::Ready if !current_idle => current_priority,
                _ => Priority::Low,
            };
            // The woken thread runs next unless something more urgent is ready here.
            let mut kick_now = None;
            let handed = match woken {
                Some(thread) if s.cpus[cpu].ready.best().is_none_or(|best| best <= thread.priority) => Some(thread),
                Some(thread) => {
                    s.cpus[cpu].ready.push(thread.priority, thread);
                    kick_now = s.idle_cpu_besides(cpu);
                    None
                }
                None => None,
            };
            let next = match (handed.or_else(|| s.take_ready(cpu, at_least)), after) {
                (Some(next), _) => next,
                (None, After::Ready | After::Yield) => return,
                (None, _) => match s.cpus[cpu].idle.take() {
                    Some(idle) => idle,
                    None => panic!("a thread on CPU {cpu} cannot go on and the idle thread is missing"),
                },
            };
            let now = clock::counter();
            let slot = &mut s.cpus[cpu];
            let mut previous = slot.current.replace(next).expect("checked above");
            previous.cpu_time += now.wrapping_sub(slot.slice_start);
            slot.slice_start = now;
            previous.tls = tls::save();
            let current = slot.current.as_mut().expect("just set");
            current.ran_on |= 1 << cpu;
            tls::restore(current.tls);
            // Boxes: the contexts stay where they are while the box moves.
            let from: *mut Context = &mut previous.context;
            let to: *mut Context = &mut current.context;
            debug_assert!(slot.pending.is_none(), "a switch on CPU {cpu} was not completed");
            slot.pending = Some((previous, after));
            (from, to, kick_now)
        };
        kick(kick_now);
        // Both contexts live in boxed threads the scheduler owns: the previous one in this CPU's
        // `pending` slot, where no other CPU looks and which only the thread switched to empties
        // (after this switch is complete, in `finish_switch`); the next one is this CPU's running
        // thread. Interrupts are off, so nothing on this CPU touches them until the switch is
        // done; the lock is released first so that the thread switched to can take it.
        // SAFETY: as above: both pointers are valid, unaliased and outlive the switch.
        let switched = unsafe { (*from).switch(&mut *to) };
        if let Err(e) = switched {
            panic!("scheduler: bad context switch: {e:?}");
        }
        // Back on this thread, perhaps on another CPU: place the thread that ran before it there.
        finish_switch();
    });
    kick(kicked);
}
