//! The lock-and-blocking layer of IPC: the one [`IpcState`] behind a lock, and each component
//! instance's [`IpcPort`] on it, with blocking done by the scheduler. A waiting thread is parked
//! (off the run queue, costing nothing); the operation that completes it stores its result and
//! unparks it after the lock is released; a deadline puts it back on the run queue at the first
//! tick after it, and it then cancels its wait.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use mica_caps::HandleTable;
use mica_ipc::WaiterId;

use mica_runtime::ipc::{ErrorCode, Handle, IpcFailure, IpcPort, Received, RightsBits, Span, Timeout};

use super::state::{Connection, Finished, IpcState, Object, Region, SpaceId, Step, Waitables};
use crate::arch::clock;
use crate::irq_lock::IrqMutex;
use crate::sched;
use crate::wasm::vmem;

static STATE: IrqMutex<Option<IpcState>> = IrqMutex::new(None);

/// Sets up the system's channels: one per service of the manifest's connections.
pub fn init(names: Vec<String>, connections: &[Connection]) -> Result<(), IpcFailure> {
    let state = IpcState::new(names, connections)?;
    *STATE.lock() = Some(state);
    Ok(())
}

/// Component `component` will not run again (see `IpcState::component_ended`).
pub fn component_ended(component: usize) {
    let _ = locked(|st| {
        st.component_ended(component);
        Ok(())
    });
}

/// Runs `f` on the state under the lock, makes the copies it asked for, and unparks the threads
/// it completed. Unparking under the IPC lock is safe: the scheduler never takes the IPC lock, so
/// the two are always taken in this order.
///
/// A copy goes from the running thread's memory into a parked thread's landing. It is made under
/// the lock: the parked thread cannot wake, time out or end meanwhile (each of those takes the
/// lock first), so its memory is as it was when it registered the landing, and the span checks
/// made then still hold.
fn locked<T>(f: impl FnOnce(&mut IpcState) -> Result<T, IpcFailure>) -> Result<T, IpcFailure> {
    locked_keeping(f, |_| false).map(|(result, _)| result)
}

/// [`locked`], except that when `keep` says so of the result (the caller's thread is about to
/// park) and the operation completed exactly one thread, that thread is not made ready here but
/// returned: the caller's park hands the CPU straight to it (`sched::park_and_wake`).
fn locked_keeping<T>(
    f: impl FnOnce(&mut IpcState) -> Result<T, IpcFailure>,
    keep: impl FnOnce(&Result<T, IpcFailure>) -> bool,
) -> Result<(T, Option<sched::ThreadId>), IpcFailure> {
    let (result, woke, kept) = {
        let mut guard = STATE.lock();
        let Some(state) = guard.as_mut() else {
            return Err(IpcFailure::new(ErrorCode::NotPermitted, "IPC is not set up"));
        };
        let result = f(state);
        for copy in state.drain_copies() {
            let from: *const u8 = core::ptr::with_exposed_provenance(copy.from as usize);
            let to: *mut u8 = core::ptr::with_exposed_provenance_mut(copy.to as usize);
            // Pages not yet touched are mapped by the page-fault path. Both spans were checked
            // against their memories' sizes when given, which still holds (see above).
            // SAFETY: the running instance's accessible memory to a parked one's; linear
            // memories never overlap.
            unsafe { core::ptr::copy_nonoverlapping(from, to, copy.len as usize) };
        }
        let mut higher = false;
        let mut kept = None;
        let mut wakes = state.drain_wakes();
        let (first, second) = (wakes.next(), wakes.next());
        match (first, second) {
            (Some(only), None) if keep(&result) => kept = Some(only.0),
            _ => {
                for waiter in first.into_iter().chain(second).chain(wakes) {
                    higher |= sched::unpark(waiter.0);
                }
            }
        }
        (result, higher, kept)
    };
    if woke {
        // A woken thread of a higher priority runs now, not at the next tick.
        sched::preempt_point();
    }
    result.map(|r| (r, kept))
}

/// One component instance's port. Dropping it does not close the space: [`Port::end_instance`] does,
/// saying whether the component will run again.
#[derive(Debug)]
pub struct Port {
    space: SpaceId,
    /// The instance's linear memory, once a span operation has looked.
    memory: spin::Once<vmem::MemoryView>,
}

impl Port {
    /// A port with an empty handle table of `capacity` for an instance of component `component`.
    pub fn open(component: usize, capacity: u16, may_create: bool) -> Result<Arc<Port>, IpcFailure> {
        let space = locked(|st| Ok(st.open_space(component, capacity, may_create)))?;
        Ok(Arc::new(Port { space, memory: spin::Once::new() }))
    }

    /// The instance has ended: closes every handle it held; `restart` says whether its
    /// component will be started again (see `IpcState::close_space`).
    pub fn end_instance(&self, restart: bool) {
        let _ = locked(|st| {
            st.close_space(self.space, restart);
            Ok(())
        });
    }

    /// Runs `f` on this instance's capability space (`None` once it has ended): how its
    /// hardware (`crate::hw::instance`) keeps its handles beside the channel ends. Nothing here
    /// wakes a thread: `f` touches hardware objects only.
    pub fn with_table<T>(&self, f: impl FnOnce(&mut HandleTable<Object>) -> T) -> Option<T> {
        STATE.lock().as_mut().and_then(|st| st.with_table(self.space, f))
    }

    /// Waits until one of `waitables` is ready or `deadline` passes: looks under the lock at
    /// every end (registering as their watcher when none is ready) and at every line
    /// (registering as its waiter), parks until something wakes it, and looks again;
    /// unregisters everywhere before it returns. `handoff`, a thread the caller woke and kept
    /// back, gets the CPU straight away if this thread parks, and is made ready otherwise.
    fn wait_on(
        &self,
        waitables: &Waitables,
        deadline: Option<u64>,
        mut handoff: Option<sched::ThreadId>,
    ) -> Result<Vec<u32>, IpcFailure> {
        let waiter = WaiterId(sched::current_id());
        let looked = loop {
            let mut ready = match locked(|st| Ok(st.watch(waiter, &waitables.ends))) {
                Ok(ready) => ready,
                Err(e) => break Err(e),
            };
            for &(position, line) in &waitables.lines {
                if crate::hw::watch_line(line, waiter.0) {
                    ready.push(position);
                }
            }
            let expired = deadline.is_some_and(|d| clock::monotonic_ns().unwrap_or(u64::MAX) >= d);
            // A killed thread's wait ends as if its deadline had passed.
            if !ready.is_empty() || expired || sched::killed() {
                ready.sort_unstable();
                break Ok(ready);
            }
            match handoff.take() {
                Some(to) => sched::park_and_wake(to, deadline),
                None => sched::park(deadline),
            }
        };
        if let Some(to) = handoff
            && sched::unpark(to)
        {
            sched::preempt_point();
        }
        let _ = locked(|st| {
            st.unwatch(waiter);
            Ok(())
        });
        for &(_, line) in &waitables.lines {
            crate::hw::unwatch_line(line, waiter.0);
        }
        looked
    }

    /// The address of `span` in the calling instance's linear memory (the instance runs on the
    /// calling thread), if it lies inside the memory's current size.
    fn span_address(&self, span: Span) -> Result<u64, IpcFailure> {
        let invalid = |message: String| IpcFailure::new(ErrorCode::InvalidSpan, message);
        let memory = match self.memory.get() {
            Some(memory) => memory,
            None => {
                let view = vmem::memory_of(sched::current_id()).map_err(invalid)?;
                self.memory.call_once(|| view)
            }
        };
        memory.span_address(span.offset, span.len).map_err(invalid)
    }

    /// `span` of the calling instance's memory, by its kernel address.
    fn region(&self, span: Span) -> Result<Region, IpcFailure> {
        Ok(Region { addr: self.span_address(span)?, len: span.len })
    }

    /// Runs a blocking operation: parks while it is pending, until its result or its deadline.
    /// An operation that parked goes straight to sleep: a completion that came in between left
    /// a wake token, so the park returns at once, and only a woken thread takes the lock again.
    /// The one thread the operation completed, if it completed one (a call's server, a reply's
    /// caller), gets the CPU straight away.
    fn blocking<T>(
        &self,
        timeout: Timeout,
        start: impl FnOnce(&mut IpcState, SpaceId, WaiterId, bool) -> Step<T>,
        finished: impl Fn(Finished) -> Result<T, IpcFailure>,
    ) -> Result<T, IpcFailure> {
        self.blocking_after(timeout, |st, space, waiter, wait| ((), start(st, space, waiter, wait)), finished)?.1
    }

    /// [`blocking`](Self::blocking) for a start that also gives a result of its own (`R`), as
    /// a reply that comes before the receive does. Fails as a whole only when IPC is not set up.
    fn blocking_after<R, T>(
        &self,
        timeout: Timeout,
        start: impl FnOnce(&mut IpcState, SpaceId, WaiterId, bool) -> (R, Step<T>),
        finished: impl Fn(Finished) -> Result<T, IpcFailure>,
    ) -> Result<(R, Result<T, IpcFailure>), IpcFailure> {
        let waiter = WaiterId(sched::current_id());
        let wait = timeout != Some(0);
        let deadline = timeout.map(|ns| clock::monotonic_ns().unwrap_or(0).saturating_add(ns));
        let parks = |r: &Result<(R, Step<T>), IpcFailure>| matches!(r, Ok((_, Step::Parked(_))));
        let ((first, step), mut handoff) = locked_keeping(|st| Ok(start(st, self.space, waiter, wait)), parks)?;
        let pending = match step {
            Step::Done(result) => return Ok((first, result)),
            Step::Parked(pending) => pending,
        };
        loop {
            match handoff.take() {
                Some(to) => sched::park_and_wake(to, deadline),
                None => sched::park(deadline),
            }
            // A killed thread's wait ends as if its deadline had passed; the component host
            // then ends the instance.
            let expired = deadline.is_some_and(|d| clock::monotonic_ns().unwrap_or(u64::MAX) >= d) || sched::killed();
            match locked(|st| Ok(st.finish(self.space, waiter, pending, expired))) {
                Ok(Some(result)) => return Ok((first, result.and_then(&finished))),
                Ok(None) => {}
                Err(e) => return Ok((first, Err(e))),
            }
        }
    }
}

/// The monotonic time `timeout` nanoseconds from now (`None`: no deadline).
fn deadline_of(timeout: Timeout) -> Option<u64> {
    timeout.map(|ns| clock::monotonic_ns().unwrap_or(0).saturating_add(ns))
}

/// The bytes of `region` (of the running instance's memory), copied into a kernel buffer.
fn read_region(region: Region) -> Result<Vec<u8>, IpcFailure> {
    let len = region.len as usize;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| IpcFailure::new(ErrorCode::OutOfMemory, alloc::format!("no kernel memory for {len} bytes")))?;
    let src: *const u8 = core::ptr::with_exposed_provenance(region.addr as usize);
    // Pages of the span not yet touched are mapped by the page-fault path.
    // SAFETY: `src..src + len` is accessible memory of the calling instance (checked when the
    // region was made), mapped while it runs, whose code runs only on this thread; `bytes` has
    // room for `len`.
    unsafe {
        core::ptr::copy_nonoverlapping(src, bytes.as_mut_ptr(), len);
        bytes.set_len(len);
    }
    Ok(bytes)
}

fn expect_received(f: Finished) -> Result<Received, IpcFailure> {
    match f {
        Finished::Received(r) => Ok(r),
        Finished::Sent => Err(IpcFailure::new(ErrorCode::InvalidHandle, "kernel error: a receive completed as a send")),
    }
}

impl IpcPort for Port {
    fn connect(&self, name: &str) -> Result<Handle, IpcFailure> {
        locked(|st| st.connect(self.space, name))
    }

    fn create_channel(&self) -> Result<(Handle, Handle), IpcFailure> {
        locked(|st| st.create_channel(self.space))
    }

    fn send(&self, end: Handle, bytes: Vec<u8>, handles: Vec<Handle>, timeout: Timeout) -> Result<(), IpcFailure> {
        self.blocking(timeout, |st, space, waiter, wait| st.send(space, waiter, end, bytes, handles, wait), |_| Ok(()))
    }

    fn receive(&self, end: Handle, timeout: Timeout) -> Result<Received, IpcFailure> {
        self.blocking(timeout, |st, space, waiter, wait| st.receive(space, waiter, end, wait), expect_received)
    }

    fn call(
        &self,
        end: Handle,
        bytes: Vec<u8>,
        handles: Vec<Handle>,
        timeout: Timeout,
    ) -> Result<Received, IpcFailure> {
        self.blocking(timeout, |st, space, waiter, _| st.call(space, waiter, end, bytes, handles), expect_received)
    }

    fn reply(&self, end: Handle, call: u64, bytes: Vec<u8>, handles: Vec<Handle>) -> Result<(), IpcFailure> {
        locked(|st| st.reply(self.space, end, call, bytes, handles))
    }

    fn wait(&self, handles: &[Handle], timeout: Timeout) -> Result<Vec<u32>, IpcFailure> {
        let deadline = deadline_of(timeout);
        let waitables = locked(|st| st.waitables(self.space, handles))?;
        self.wait_on(&waitables, deadline, None)
    }

    /// The reply and then the wait; when the wait parks, the caller just answered gets the CPU
    /// at once (as [`reply_receive_span`](IpcPort::reply_receive_span) does for one end).
    fn reply_wait(
        &self,
        end: Handle,
        call: u64,
        bytes: Vec<u8>,
        handles: &[Handle],
        timeout: Timeout,
    ) -> (Result<(), IpcFailure>, Result<Vec<u32>, IpcFailure>) {
        let deadline = deadline_of(timeout);
        let waitables = match locked(|st| st.waitables(self.space, handles)) {
            Ok(waitables) => waitables,
            Err(e) => return (self.reply(end, call, bytes, Vec::new()), Err(e)),
        };
        // Only a reply that went through woke anyone (its caller), so only then is one kept.
        let replied = locked_keeping(|st| st.reply(self.space, end, call, bytes, Vec::new()), Result::is_ok);
        match replied {
            Ok(((), caller)) => (Ok(()), self.wait_on(&waitables, deadline, caller)),
            Err(e) => (Err(e), self.wait_on(&waitables, deadline, None)),
        }
    }

    fn duplicate(&self, handle: Handle, rights: RightsBits) -> Result<Handle, IpcFailure> {
        locked(|st| st.duplicate(self.space, handle, rights))
    }

    fn rights(&self, handle: Handle) -> Result<RightsBits, IpcFailure> {
        locked(|st| st.rights(self.space, handle))
    }

    fn close(&self, handle: Handle) -> Result<(), IpcFailure> {
        locked(|st| st.close(self.space, handle))
    }

    fn read_span(&self, span: Span) -> Result<Vec<u8>, IpcFailure> {
        read_region(self.region(span)?)
    }

    fn write_span(&self, span: Span, bytes: &[u8]) -> Result<(), IpcFailure> {
        if bytes.len() > span.len as usize {
            return Err(IpcFailure::new(
                ErrorCode::InvalidSpan,
                alloc::format!("{} bytes do not fit a span of {}", bytes.len(), span.len),
            ));
        }
        let dst: *mut u8 = core::ptr::with_exposed_provenance_mut(self.span_address(span)? as usize);
        // SAFETY: `dst..dst + span.len` lies inside the accessible part of the calling
        // instance's linear memory, and `bytes` is no longer than that; wasm code of the instance
        // does not run while its host call does, and nothing else writes there.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }

    fn send_span(&self, end: Handle, message: Span, timeout: Timeout) -> Result<(), IpcFailure> {
        let from = self.region(message)?;
        self.blocking(
            timeout,
            |st, space, waiter, wait| st.send_span(space, waiter, end, from, || read_region(from), wait),
            |_| Ok(()),
        )
    }

    /// A landing outside the memory is not refused here: the message is received all the same
    /// and, as for any receive, held for `collect` when it cannot be written (nothing is lost).
    fn receive_span(&self, end: Handle, landing: Span, timeout: Timeout) -> Result<Received, IpcFailure> {
        let Ok(landing) = self.region(landing) else { return self.receive(end, timeout) };
        self.blocking(
            timeout,
            |st, space, waiter, wait| st.receive_span(space, waiter, end, landing, wait),
            expect_received,
        )
    }

    /// As for [`receive_span`](IpcPort::receive_span), a landing outside the memory gets its reply
    /// held for `collect`.
    fn call_span(&self, end: Handle, request: Span, landing: Span, timeout: Timeout) -> Result<Received, IpcFailure> {
        let from = self.region(request)?;
        let Ok(landing) = self.region(landing) else { return self.call(end, read_region(from)?, Vec::new(), timeout) };
        self.blocking(
            timeout,
            |st, space, waiter, _| st.call_span(space, waiter, end, from, landing, || read_region(from)),
            expect_received,
        )
    }

    fn reply_span(&self, end: Handle, call: u64, message: Span) -> Result<(), IpcFailure> {
        let from = self.region(message)?;
        locked(|st| st.reply_span(self.space, end, call, from, || read_region(from)))
    }

    /// The reply and the start of the receive in one pass under the lock; when the receive waits,
    /// the caller just answered gets the CPU at once.
    fn reply_receive_span(
        &self,
        end: Handle,
        call: u64,
        message: Span,
        landing: Span,
        timeout: Timeout,
    ) -> (Result<(), IpcFailure>, Result<Received, IpcFailure>) {
        let (from, landing) = match (self.region(message), self.region(landing)) {
            (Ok(from), Ok(landing)) => (from, landing),
            (from, _) => {
                let replied =
                    from.and_then(|from| locked(|st| st.reply_span(self.space, end, call, from, || read_region(from))));
                return (replied, self.receive_span(end, landing, timeout));
            }
        };
        let outcome = self.blocking_after(
            timeout,
            |st, space, waiter, wait| {
                let replied = st.reply_span(space, end, call, from, || read_region(from));
                (replied, st.receive_span(space, waiter, end, landing, wait))
            },
            expect_received,
        );
        outcome.unwrap_or_else(|e| (Err(e.clone()), Err(e)))
    }
}
