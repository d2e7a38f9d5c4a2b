//! Reaping of every child process, ours and adopted.
//!
//! As PID 1 (or a child subreaper) the agent inherits the orphans of the commands it runs and must
//! reap them, but a `wait(-1)` for those would also steal the exit status of commands whose
//! supervisors are waiting for it. So one thread reaps everything and hands the statuses of
//! tracked children to their supervisors; the statuses of adopted orphans are dropped.
//!
//! Spawning and reaping share one lock: a child is tracked before the reaper can see it exit, and
//! the reaper never reaps behind the back of `Command::spawn`, which waits for a child whose
//! `exec` failed.

use std::collections::BTreeMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, WaitId, WaitIdOptions, WaitOptions, WaitStatus, wait, waitid};

/// Spawns commands and collects their exit statuses. There is one per process, as any waiter
/// for "any child" would take children from another: see [`Reaper::get`].
#[derive(Debug)]
pub struct Reaper {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    /// Tracked children by pid: `None` while running, then their status until collected.
    children: BTreeMap<i32, Option<WaitStatus>>,
    /// Counts spawns, to notice new children.
    spawns: u64,
}

static REAPER: Reaper =
    Reaper { state: Mutex::new(State { children: BTreeMap::new(), spawns: 0 }), changed: Condvar::new() };

impl Reaper {
    /// The process's reaper, its thread started on first use.
    pub fn get() -> io::Result<&'static Reaper> {
        static THREAD: OnceLock<Result<(), String>> = OnceLock::new();
        let started = THREAD.get_or_init(|| {
            let spawned = thread::Builder::new().name("reaper".into()).spawn(|| REAPER.run());
            spawned.map(drop).map_err(|e| e.to_string())
        });
        match started {
            Ok(()) => Ok(&REAPER),
            Err(e) => Err(io::Error::other(format!("cannot start the reaper thread: {e}"))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns `cmd` and tracks the child; collect it with [`Reaper::wait_exit`].
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut state = self.lock();
        let child = cmd.spawn()?;
        state.children.insert(Pid::from_child(&child).as_raw_pid(), None);
        state.spawns += 1;
        self.changed.notify_all();
        Ok(child)
    }

    /// Waits until the tracked child `pid` has exited and returns its status. `None` if `pid` is
    /// not tracked (never spawned here, or collected already).
    pub fn wait_exit(&self, pid: Pid) -> Option<WaitStatus> {
        let pid = pid.as_raw_pid();
        let mut state = self.lock();
        loop {
            match state.children.get(&pid) {
                None => return None,
                Some(Some(_)) => return state.children.remove(&pid).flatten(),
                Some(None) => state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
            }
        }
    }

    /// Reaps children until none is left or `timeout` has passed (used before exiting).
    pub fn reap_remaining(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.reap_exited() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The reaper thread.
    fn run(&self) {
        loop {
            let spawns = self.lock().spawns;
            // Sleep until some child is waitable, without reaping it: that happens under the lock.
            match waitid(WaitId::All, WaitIdOptions::EXITED | WaitIdOptions::NOWAIT) {
                Ok(_) => {
                    self.reap_exited();
                }
                Err(Errno::INTR) => {}
                Err(Errno::CHILD) => {
                    // No children at all: none can appear before the next spawn.
                    let state = self.lock();
                    drop(self.changed.wait_while(state, |s| s.spawns == spawns));
                }
                Err(e) => {
                    crate::log(format_args!("waiting for children failed: {e}"));
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Reaps every child that has exited; returns whether children are left.
    fn reap_exited(&self) -> bool {
        let mut state = self.lock();
        let left = loop {
            match wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    // Untracked children are adopted orphans: reaping is all they need.
                    if let Some(slot) = state.children.get_mut(&pid.as_raw_pid()) {
                        *slot = Some(status);
                    }
                }
                Ok(None) => break true,
                Err(Errno::CHILD) => break false,
                Err(Errno::INTR) => {}
                Err(e) => {
                    crate::log(format_args!("reaping children failed: {e}"));
                    break true;
                }
            }
        };
        drop(state);
        self.changed.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[test]
    fn statuses_reach_their_waiters() {
        let reaper = Reaper::get().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]).stdin(Stdio::null());
        let children: Vec<_> = (0..4).map(|_| reaper.spawn(&mut cmd).unwrap()).collect();
        for child in &children {
            let status = reaper.wait_exit(Pid::from_child(child)).unwrap();
            assert_eq!(status.exit_status(), Some(7));
        }
        assert!(reaper.wait_exit(Pid::from_child(&children[0])).is_none(), "collected once");
    }

    #[test]
    fn failed_spawns_are_reported() {
        let reaper = Reaper::get().unwrap();
        for _ in 0..20 {
            let err = reaper.spawn(Command::new("/nonexistent/program").env_clear().env("PATH", "/x")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        }
    }
}
