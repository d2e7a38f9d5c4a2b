//! Running the vCPU: the exit loop (port I/O to the [`PortBus`](crate::devices::PortBus), MMIO to
//! the [`MmioBus`](crate::devices::MmioBus), every way a guest can stop turned into an
//! [`Ending`]) and a watchdog thread that kicks the vCPU out of `KVM_RUN` with a signal, so that the
//! host-side timeout holds and a guest halted with interrupts off is noticed instead of waited on
//! forever.
//!
//! With the in-kernel irqchip, `hlt` never reaches the VMM: KVM blocks the vCPU thread until an
//! interrupt arrives. The watchdog's periodic kick (every [`KICK_PERIOD`]) makes `KVM_RUN` return
//! `EINTR`; the loop then reads the vCPU's run state, and a vCPU that is halted with RFLAGS.IF clear
//! is reported as [`Ending::HaltedWithInterruptsOff`].

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION, KVM_MP_STATE_HALTED};
use kvm_ioctls::VcpuExit;
use rustix::event::{PollFd, PollFlags, Timespec};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::signal::{self, SIGRTMIN};

use crate::devices::PortAction;
use crate::error::{Error, Result};
use crate::outcome::{Ending, Outcome};
use crate::virtio::console::Console;
use crate::virtio::mmio::MmioTransport;
use crate::vm::PvhVm;

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
        // SAFETY: the thread is the one running `PvhVm::run`, which does not return (and so the
        // thread cannot exit) before the watchdog, a scoped thread, has finished.
        let rc = unsafe { libc::pthread_kill(self.0, kick_signal()) };
        if rc != 0 {
            log::warn!("cannot kick the vCPU thread: {}", std::io::Error::from_raw_os_error(rc));
        }
    }
}

/// Kicks the vCPU every [`KICK_PERIOD`] until `done` says the run is over; sets `timed_out` once
/// `deadline` has passed.
fn watchdog(vcpu: Kickable, deadline: Option<Instant>, done: mpsc::Receiver<()>, timed_out: &AtomicBool) {
    loop {
        match done.recv_timeout(KICK_PERIOD) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    timed_out.store(true, Ordering::SeqCst);
                }
                vcpu.kick();
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

impl PvhVm {
    /// Enters the kernel and runs it until it writes the exit port, stops in a way it cannot
    /// recover from, or `timeout` (host wall time) passes. `Err` means the VMM itself failed (a
    /// KVM ioctl, a host resource); every way the guest can end is an [`Ending`] in the
    /// [`Outcome`], with the serial output so far.
    pub fn run(mut self, timeout: Option<Duration>) -> Result<Outcome> {
        install_kick_handler()?;
        signal::unblock_signal(kick_signal())
            .map_err(|e| Error::host("unblocking the kick signal")(std::io::Error::other(e.to_string())))?;
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let timed_out = AtomicBool::new(false);
        let vcpu_thread = Kickable::current();
        // Writing a byte to one end stops the I/O thread, which waits on the other.
        let (mut io_stop, io_stopped) = UnixStream::pair().map_err(Error::host("a socket pair for the I/O thread"))?;
        let console = self.console.clone();
        let ending = std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel();
            let timed_out = &timed_out;
            std::thread::Builder::new()
                .name("mica-vmm-watchdog".into())
                .spawn_scoped(scope, move || watchdog(vcpu_thread, deadline, done_rx, timed_out))
                .map_err(Error::host("starting the watchdog thread"))?;
            if let Some(console) = console {
                let io_stopped = &io_stopped;
                std::thread::Builder::new()
                    .name("mica-vmm-io".into())
                    .spawn_scoped(scope, move || io_loop(&console, io_stopped))
                    .map_err(Error::host("starting the I/O thread"))?;
            }
            let ending = self.exit_loop(timed_out, timeout.unwrap_or_default());
            let _ = done_tx.send(());
            if let Err(e) = io_stop.write_all(&[1]) {
                log::warn!("cannot stop the I/O thread: {e}");
            }
            ending
        })?;
        let duration = started.elapsed();
        log::debug!("run ended after {duration:?}: {ending}");
        Ok(Outcome { ending, serial_output: self.ports.into_serial_output(), duration })
    }

    fn exit_loop(&mut self, timed_out: &AtomicBool, timeout: Duration) -> Result<Ending> {
        loop {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if let Some(ending) = self.check_stalled(timed_out, timeout)? {
                        return Ok(ending);
                    }
                    continue;
                }
                Err(e) => return Err(Error::Kvm { what: "KVM_RUN", source: e }),
            };
            match exit {
                VcpuExit::IoOut(port, data) => {
                    if let PortAction::Exit(byte) = self.ports.io_out(port, data) {
                        return Ok(Ending::ExitPort(byte));
                    }
                }
                VcpuExit::IoIn(port, data) => self.ports.io_in(port, data),
                VcpuExit::MmioRead(addr, data) => {
                    if !self.mmio.read(addr, data) {
                        log::debug!("MMIO read from unclaimed {addr:#x} ({} bytes): all ones", data.len());
                        data.fill(0xff);
                    }
                }
                VcpuExit::MmioWrite(addr, data) => {
                    if !self.mmio.write(addr, data) {
                        log::debug!("MMIO write to unclaimed {addr:#x}: {data:02x?} ignored");
                    }
                }
                VcpuExit::Intr => {
                    if let Some(ending) = self.check_stalled(timed_out, timeout)? {
                        return Ok(ending);
                    }
                }
                VcpuExit::Hlt => {
                    // Only without an in-kernel irqchip; with one, KVM keeps halts to itself.
                    let rflags = self.vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?.rflags;
                    if rflags & RFLAGS_IF == 0 {
                        return Ok(Ending::HaltedWithInterruptsOff { rip: self.rip()? });
                    }
                }
                VcpuExit::Shutdown => return Ok(Ending::TripleFault { rip: self.rip()? }),
                VcpuExit::FailEntry(reason, _cpu) => return Ok(Ending::EntryFailure { reason }),
                VcpuExit::SystemEvent(kind, _) => return Ok(Ending::SystemEvent { kind }),
                VcpuExit::InternalError => return self.internal_error(),
                other => return Ok(Ending::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// Called when `KVM_RUN` was interrupted: ends the run on a timeout, or when the vCPU is halted
    /// with interrupts disabled.
    fn check_stalled(&mut self, timed_out: &AtomicBool, timeout: Duration) -> Result<Option<Ending>> {
        if timed_out.load(Ordering::SeqCst) {
            return Ok(Some(Ending::Timeout(timeout)));
        }
        let state = self.vcpu.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?;
        if state.mp_state == KVM_MP_STATE_HALTED {
            let regs = self.vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?;
            if regs.rflags & RFLAGS_IF == 0 {
                return Ok(Some(Ending::HaltedWithInterruptsOff { rip: regs.rip }));
            }
        }
        Ok(None)
    }

    fn rip(&self) -> Result<u64> {
        Ok(self.vcpu.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?.rip)
    }

    /// Describes a `KVM_EXIT_INTERNAL_ERROR`, with the instruction bytes for an emulation failure.
    fn internal_error(&mut self) -> Result<Ending> {
        let run = self.vcpu.get_kvm_run();
        let suberror = if run.exit_reason == KVM_EXIT_INTERNAL_ERROR {
            // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
            // member KVM filled in; it is plain old data.
            unsafe { run.__bindgen_anon_1.internal.suberror }
        } else {
            u32::MAX
        };
        let rip = self.rip()?;
        if suberror == KVM_INTERNAL_ERROR_EMULATION {
            return Ok(Ending::EmulationFailure { rip, bytes: self.instruction_bytes(rip) });
        }
        Ok(Ending::InternalError { suberror, rip })
    }

    /// Up to [`MAX_INSTRUCTION`] bytes at guest virtual address `rip` (empty if unmapped).
    fn instruction_bytes(&self, rip: u64) -> Vec<u8> {
        let Ok(t) = self.vcpu.translate_gva(rip) else { return Vec::new() };
        if t.valid == 0 {
            return Vec::new();
        }
        // Stay within the page: the next one may map elsewhere.
        let in_page = (0x1000 - (t.physical_address & 0xfff)) as usize;
        let mut bytes = vec![0; MAX_INSTRUCTION.min(in_page)];
        match self.memory.read_slice(&mut bytes, GuestAddress(t.physical_address)) {
            Ok(()) => bytes,
            Err(_) => Vec::new(),
        }
    }
}
