//! What the runtime needs from whoever hosts it (the kernel, or Linux in hosted tests), as one
//! narrow trait. The runtime never reaches into the kernel: it only calls this.

use core::fmt;

/// Which output stream a component wrote to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`.
    Stderr,
}

/// `wasi:random/random` cannot be served: the machine has no entropy source to key a secure
/// generator with, and bytes that are not secure must not pass for secure ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoEntropySource;

impl fmt::Display for NoEntropySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "this machine has no entropy source (no RDSEED/RDRAND or RNDR) to key a secure generator with")
    }
}

/// The services a component's host functions are built on.
pub trait Platform: Send + Sync {
    /// Nanoseconds on a monotonic clock.
    fn monotonic_ns(&self) -> u64;
    /// The monotonic clock's resolution in nanoseconds.
    fn monotonic_resolution_ns(&self) -> u64;
    /// Wall-clock time since the Unix epoch: seconds and nanoseconds.
    fn wall_clock(&self) -> (u64, u32);
    /// Blocks the calling component until the monotonic clock reaches `deadline_ns` (or, once
    /// the instance is [`killed`](Platform::killed), returns early).
    fn sleep_until(&self, deadline_ns: u64);
    /// Whether the calling instance is being ended from outside (the kernel's fault injector):
    /// its next host call traps, so that it ends as a crashed instance would. Waits in the
    /// platform return early for it. Never, by default.
    fn killed(&self) -> bool {
        false
    }
    /// Fills `buf` from a cryptographically secure generator (`wasi:random/random`); `Err` when
    /// there is no entropy source to key one with.
    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), NoEntropySource>;
    /// Fills `buf` with bytes that need not be secure (`wasi:random/insecure`,
    /// `wasi:random/insecure-seed`); never fails.
    fn insecure_random_bytes(&self, buf: &mut [u8]);
    /// Whether [`Platform::random_bytes`] can succeed. A component that imports
    /// `wasi:random/random` is refused at load when it cannot.
    fn has_entropy_source(&self) -> bool;
    /// Writes one complete line (without its newline) that component `name` wrote to `kind`.
    fn console_line(&self, name: &str, kind: OutputKind, line: &[u8]);
    /// Logs one `mica:kernel/log` record of component `name`: `message` is one line already
    /// (control characters escaped) and bounded (see [`crate::host::log::MAX_MESSAGE_BYTES`]).
    /// Records below the platform's own log level may be dropped.
    fn component_log(&self, name: &str, level: log::Level, message: &str);
}
