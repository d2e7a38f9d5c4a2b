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

/// Where random bytes came from, so that a report can say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandomSource {
    /// The CPU's generator: RDSEED/RDRAND on x86_64, RNDR on aarch64.
    Hardware,
    /// A software generator seeded from the clock: not for secrets.
    Fallback,
    /// The host operating system's generator (hosted runs on Linux).
    Os,
}

impl fmt::Display for RandomSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RandomSource::Hardware => write!(f, "the CPU's generator (RDSEED/RDRAND, RNDR)"),
            RandomSource::Fallback => write!(f, "a clock-seeded software generator (no RDRAND or RNDR)"),
            RandomSource::Os => write!(f, "the host operating system (getrandom)"),
        }
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
    /// Blocks the calling component until the monotonic clock reaches `deadline_ns`.
    fn sleep_until(&self, deadline_ns: u64);
    /// Fills `buf` with random bytes.
    fn random_bytes(&self, buf: &mut [u8]) -> RandomSource;
    /// Writes one complete line (without its newline) that component `name` wrote to `kind`.
    fn console_line(&self, name: &str, kind: OutputKind, line: &[u8]);
    /// Logs one `mica:kernel/log` record of component `name`: `message` is one line already
    /// (control characters escaped) and bounded (see [`crate::host::log::MAX_MESSAGE_BYTES`]).
    /// Records below the platform's own log level may be dropped.
    fn component_log(&self, name: &str, level: log::Level, message: &str);
}
