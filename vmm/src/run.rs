//! Running the vCPUs: one exit loop per vCPU thread (port I/O to the
//! [`PortBus`](crate::devices::PortBus), MMIO to the [`MmioBus`](crate::devices::MmioBus), both
//! shared under locks; every way a guest can stop turned into an [`Ending`], the first of which
//! ends the run for all vCPUs), a watchdog thread that kicks the vCPU threads out of `KVM_RUN` with
//! a signal, so that the host-side timeout holds and a guest halted with interrupts off is noticed
//! instead of waited on forever, and an I/O thread that moves the virtio console's host input in.
//!
//! With the in-kernel irqchip, `hlt` never reaches the VMM: KVM blocks the vCPU thread until an
//! interrupt arrives. The watchdog's periodic kick (every [`KICK_PERIOD`]) makes `KVM_RUN` return
//! `EINTR`; the loop then reads the vCPU's run state, and vCPU 0 halted with RFLAGS.IF clear is
//! reported as [`Ending::HaltedWithInterruptsOff`].

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION, KVM_MP_STATE_HALTED};
use kvm_ioctls::{VcpuExit, VcpuFd};
use rustix::event::{PollFd, PollFlags, Timespec};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::signal::{self, SIGRTMIN};

use crate::devices::{MmioBus, PortAction, PortBus};
use crate::error::{Error, Result};
use crate::outcome::{Ending, Outcome};
use crate::virtio::console::Console;
use crate::virtio::mmio::MmioTransport;
use crate::vm::Vm;

/// How often the watchdog interrupts the vCPU to check for a timeout or a dead halt.
pub const KICK_PERIOD: Duration = Duration::from_millis(100);
/// The longest the I/O thread waits before polling the console anyway (a device that has just
/// been started by its driver has nothing to wait on yet).
const IO_POLL_PERIOD: Duration = Duration::from_millis(50);
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// The longest x86 instruction.
const MAX_INSTRUCTION: usize = 15;

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return EINTR.
}

/// Installs the (empty) kick handler once per process, without `SA_RESTART`.
fn install_kick_handler() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::host("installing the vCPU kick signal handler")(std::io::Error::other(e)))
}

/// A thread that can be sent the kick signal.
#[derive(Clone, Copy)]
struct Kickable(libc::pthread_t);

impl Kickable {
    fn current() -> Kickable {
        // SAFETY: pthread_self has no preconditions and always succeeds.
        Kickable(unsafe { libc::pthread_self() })
    }

    fn kick(self) {
        // SAFETY: only threads registered in `Run::threads` are kicked, under its lock, and a
        // vCPU thread removes itself from there (under the same lock) before it returns, so the
        // thread exists.
        let rc = unsafe { libc::pthread_kill(self.0, kick_signal()) };
        if rc != 0 {
            log::warn!("cannot kick a vCPU thread: {}", std::io::Error::from_raw_os_error(rc));
        }
    }
}

/// What the vCPU threads of one run share.
struct Run<'a> {
    ports: &'a Mutex<PortBus>,
    mmio: &'a Mutex<MmioBus>,
    memory: &'a GuestMemoryMmap,
    /// Set once the run is over: every vCPU thread returns.
    stop: AtomicBool,
    /// Set by the watchdog once the deadline has passed.
    timed_out: AtomicBool,
    /// The time limit, for the [`Ending::Timeout`] it causes.
    timeout: Duration,
    /// How the run ended (the first vCPU to end it says), or the VMM's own failure.
    ending: Mutex<Option<Result<Ending>>>,
    /// The vCPU threads that may be kicked: (vCPU index, thread).
    threads: Mutex<Vec<(usize, Kickable)>>,
}

impl Run<'_> {
    /// Kicks every registered vCPU thread out of `KVM_RUN`.
    fn kick_all(&self) {
        for (_, thread) in lock(&self.threads).iter() {
            thread.kick();
        }
    }

    /// Ends the run with `ending` unless another vCPU ended it first, and stops every vCPU.
    fn end(&self, ending: Result<Ending>) {
        lock(&self.ending).get_or_insert(ending);
        self.stop.store(true, Ordering::SeqCst);
        self.kick_all();
    }
}

/// Locks `mutex`, whether or not a vCPU thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kicks every vCPU every [`KICK_PERIOD`] until `done` says the run is over; sets `timed_out` once
/// `deadline` has passed. Once the run is over it goes on kicking, more often, until every vCPU
/// thread has returned: one that was about to enter `KVM_RUN` when the run ended would otherwise
/// miss the kick that ended it and wait there (an application processor waiting for its STARTUP,
/// for ever).
fn watchdog(run: &Run<'_>, deadline: Option<Instant>, done: mpsc::Receiver<()>) {
    loop {
        match done.recv_timeout(KICK_PERIOD) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                while !lock(&run.threads).is_empty() {
                    run.kick_all();
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    run.timed_out.store(true, Ordering::SeqCst);
                }
                run.kick_all();
            }
        }
    }
}

/// The I/O thread: moves host input into the virtio console as it arrives. It waits on what the
/// console waits on (its socket, [`MmioTransport::waits`]) and on `stop`, at most
/// [`IO_POLL_PERIOD`], then polls the console, until `stop` becomes readable.
fn io_loop(console: &Mutex<MmioTransport<Console>>, stop: &UnixStream) {
    loop {
        let waits = {
            let mut transport = console.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            transport.poll();
            transport.waits()
        };
        let mut fds = vec![PollFd::new(stop, PollFlags::IN)];
        for wait in &waits {
            let mut flags = PollFlags::empty();
            flags.set(PollFlags::IN, wait.readable);
            flags.set(PollFlags::OUT, wait.writable);
            fds.push(PollFd::new(&wait.fd, flags));
        }
        let period = Timespec::try_from(IO_POLL_PERIOD).unwrap_or(Timespec { tv_sec: 0, tv_nsec: 50_000_000 });
        match rustix::event::poll(&mut fds, Some(&period)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                log::warn!("the I/O thread stops: poll failed: {e}");
                return;
            }
        }
        if !fds[0].revents().is_empty() {
            return;
        }
    }
}

impl Vm {
    /// Enters the kernel and runs it until it writes the exit port, stops in a way it cannot
    /// recover from, or `timeout` (host wall time) passes. `Err` means the VMM itself failed (a
    /// KVM ioctl, a host resource); every way the guest can end is an [`Ending`] in the
    /// [`Outcome`], with the serial output so far.
    ///
    /// vCPU 0 runs on the calling thread, each other vCPU on a thread of its own; whichever vCPU
    /// ends the run (exit port, triple fault, ...) stops the others. Halted with interrupts off
    /// ends the run only on vCPU 0: an application processor the guest has parked that way
    /// (Linux does when it stops its CPUs) is not an ending.
    pub fn run(self, timeout: Option<Duration>) -> Result<Outcome> {
        install_kick_handler()?;
        signal::unblock_signal(kick_signal())
            .map_err(|e| Error::host("unblocking the kick signal")(std::io::Error::other(e.to_string())))?;
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let Vm { vcpus, memory, ports, mmio, console, .. } = self;
        let run = Run {
            ports: &ports,
            mmio: &mmio,
            memory: &memory,
            stop: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            timeout: timeout.unwrap_or_default(),
            ending: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        };
        // Writing a byte to one end stops the I/O thread, which waits on the other.
        let (mut io_stop, io_stopped) = UnixStream::pair().map_err(Error::host("a socket pair for the I/O thread"))?;
        let mut vcpus = vcpus.into_iter();
        let mut bsp = vcpus.next().expect("a VM has at least one vCPU");
        std::thread::scope(|scope| -> Result<()> {
            let run = &run;
            let (done_tx, done_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("mica-vmm-watchdog".into())
                .spawn_scoped(scope, move || watchdog(run, deadline, done_rx))
                .map_err(Error::host("starting the watchdog thread"))?;
            if let Some(console) = console.clone() {
                let io_stopped = &io_stopped;
                std::thread::Builder::new()
                    .name("mica-vmm-io".into())
                    .spawn_scoped(scope, move || io_loop(&console, io_stopped))
                    .map_err(Error::host("starting the I/O thread"))?;
            }
            for (i, mut vcpu) in vcpus.enumerate() {
                let index = i + 1;
                let spawned = std::thread::Builder::new()
                    .name(format!("mica-vmm-vcpu{index}"))
                    .spawn_scoped(scope, move || vcpu_thread(run, index, &mut vcpu));
                if let Err(e) = spawned {
                    run.end(Err(Error::host("starting a vCPU thread")(e)));
                }
            }
            vcpu_thread(run, 0, &mut bsp);
            let _ = done_tx.send(());
            if let Err(e) = io_stop.write_all(&[1]) {
                log::warn!("cannot stop the I/O thread: {e}");
            }
            Ok(())
        })?;
        let ending = lock(&run.ending).take().unwrap_or(Ok(Ending::Unexpected("no vCPU ended the run".into())))?;
        let duration = started.elapsed();
        log::debug!("run ended after {duration:?}: {ending}");
        let serial_output = ports.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()).into_serial_output();
        Ok(Outcome { ending, serial_output, duration })
    }
}

/// Runs vCPU `index` until the run is over, then ends it for all vCPUs if this one ended it.
fn vcpu_thread(run: &Run<'_>, index: usize, vcpu: &mut VcpuFd) {
    lock(&run.threads).push((index, Kickable::current()));
    let result = exit_loop(run, index, vcpu);
    lock(&run.threads).retain(|(i, _)| *i != index);
    match result {
        Ok(Some(ending)) => run.end(Ok(ending)),
        Ok(None) => {}
        Err(e) => run.end(Err(e)),
    }
}

/// vCPU `index`'s exits, until it ends the run (`Some`) or another vCPU did (`None`).
fn exit_loop(run: &Run<'_>, index: usize, vcpu: &mut VcpuFd) -> Result<Option<Ending>> {
    loop {
        if run.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                if run.stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                if let Some(ending) = check_stalled(run, index, vcpu)? {
                    return Ok(Some(ending));
                }
                continue;
            }
            Err(e) => return Err(Error::Kvm { what: "KVM_RUN", source: e }),
        };
        match exit {
            VcpuExit::IoOut(port, data) => {
                if let PortAction::Exit(byte) = lock(run.ports).io_out(port, data) {
                    return Ok(Some(Ending::ExitPort(byte)));
                }
            }
            VcpuExit::IoIn(port, data) => lock(run.ports).io_in(port, data),
            VcpuExit::MmioRead(addr, data) => {
                if !lock(run.mmio).read(addr, data) {
                    log::debug!("MMIO read from unclaimed {addr:#x} ({} bytes): all ones", data.len());
                    data.fill(0xff);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !lock(run.mmio).write(addr, data) {
                    log::debug!("MMIO write to unclaimed {addr:#x}: {data:02x?} ignored");
                }
            }
            VcpuExit::Intr => {
                if let Some(ending) = check_stalled(run, index, vcpu)? {
                    return Ok(Some(ending));
                }
            }
            VcpuExit::Hlt => {
                // Only without an in-kernel irqchip; with one, KVM keeps halts to itself.
                let rflags = vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?.rflags;
                if index == 0 && rflags & RFLAGS_IF == 0 {
                    return Ok(Some(Ending::HaltedWithInterruptsOff { rip: rip(vcpu)? }));
                }
            }
            VcpuExit::Shutdown => return Ok(Some(Ending::TripleFault { rip: rip(vcpu)? })),
            VcpuExit::FailEntry(reason, _cpu) => return Ok(Some(Ending::EntryFailure { reason })),
            VcpuExit::SystemEvent(kind, _) => return Ok(Some(Ending::SystemEvent { kind })),
            VcpuExit::InternalError => return internal_error(vcpu, run.memory).map(Some),
            other => return Ok(Some(Ending::Unexpected(format!("{other:?}")))),
        }
    }
}

/// Called when `KVM_RUN` was interrupted: ends the run on a timeout, or when vCPU 0 is halted with
/// interrupts disabled.
fn check_stalled(run: &Run<'_>, index: usize, vcpu: &VcpuFd) -> Result<Option<Ending>> {
    if run.timed_out.load(Ordering::SeqCst) {
        return Ok(Some(Ending::Timeout(run.timeout)));
    }
    if index != 0 {
        return Ok(None);
    }
    let state = vcpu.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?;
    if state.mp_state == KVM_MP_STATE_HALTED {
        let regs = vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?;
        if regs.rflags & RFLAGS_IF == 0 {
            return Ok(Some(Ending::HaltedWithInterruptsOff { rip: regs.rip }));
        }
    }
    Ok(None)
}

fn rip(vcpu: &VcpuFd) -> Result<u64> {
    Ok(vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?.rip)
}

/// Describes a `KVM_EXIT_INTERNAL_ERROR`, with the instruction bytes for an emulation failure.
fn internal_error(vcpu: &mut VcpuFd, memory: &GuestMemoryMmap) -> Result<Ending> {
    let kvm_run = vcpu.get_kvm_run();
    let suberror = if kvm_run.exit_reason == KVM_EXIT_INTERNAL_ERROR {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
        // member KVM filled in; it is plain old data.
        unsafe { kvm_run.__bindgen_anon_1.internal.suberror }
    } else {
        u32::MAX
    };
    let rip = rip(vcpu)?;
    if suberror == KVM_INTERNAL_ERROR_EMULATION {
        return Ok(Ending::EmulationFailure { rip, bytes: instruction_bytes(vcpu, memory, rip) });
    }
    Ok(Ending::InternalError { suberror, rip })
}

/// Up to [`MAX_INSTRUCTION`] bytes at guest virtual address `rip` (empty if unmapped).
fn instruction_bytes(vcpu: &VcpuFd, memory: &GuestMemoryMmap, rip: u64) -> Vec<u8> {
    let Ok(t) = vcpu.translate_gva(rip) else { return Vec::new() };
    if t.valid == 0 {
        return Vec::new();
    }
    // Stay within the page: the next one may map elsewhere.
    let in_page = (0x1000 - (t.physical_address & 0xfff)) as usize;
    let mut bytes = vec![0; MAX_INSTRUCTION.min(in_page)];
    match memory.read_slice(&mut bytes, GuestAddress(t.physical_address)) {
        Ok(()) => bytes,
        Err(_) => Vec::new(),
    }
}
