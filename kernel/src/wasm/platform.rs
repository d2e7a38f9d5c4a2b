//! The kernel's side of the runtime's `Platform` trait: clocks, randomness, the console and
//! components' log records.

use core::sync::atomic::{AtomicU64, Ordering};

use mica_runtime::platform::{OutputKind, Platform, RandomSource};

use crate::arch::{self, clock, random};
use crate::kprintln;

/// The kernel as a component's platform.
#[derive(Debug)]
pub struct KernelPlatform {
    generators: random::Generators,
    /// Unix time at the kernel's first instruction, from the RTC (0 without one).
    boot_unix_time: u64,
    /// State of the software fallback generator (xorshift, seeded from the TSC).
    fallback: AtomicU64,
}

impl KernelPlatform {
    /// Reads the RTC and the CPU's generators.
    pub fn new() -> KernelPlatform {
        let generators = random::generators();
        let now = arch::rtc::unix_time();
        let since_boot = clock::monotonic_ns().unwrap_or(0) / 1_000_000_000;
        match now {
            Some(t) => log::info!("wall clock: {t} s since the Unix epoch (RTC)"),
            None => log::warn!("wall clock: no RTC answered; wall time counts from 1970-01-01 at boot"),
        }
        let source = if generators.any() { RandomSource::Hardware } else { RandomSource::Fallback };
        if source == RandomSource::Fallback {
            log::warn!("randomness for components: {source}");
        } else {
            log::info!("randomness for components: {source}");
        }
        KernelPlatform {
            generators,
            boot_unix_time: now.map_or(0, |t| t.saturating_sub(since_boot)),
            fallback: AtomicU64::new(clock::counter() | 1),
        }
    }

    fn fallback_u64(&self) -> u64 {
        let mut x = self.fallback.load(Ordering::Relaxed) ^ clock::counter().rotate_left(17);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.fallback.store(x | 1, Ordering::Relaxed);
        x
    }
}

impl Default for KernelPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for KernelPlatform {
    fn monotonic_ns(&self) -> u64 {
        clock::monotonic_ns().unwrap_or(0)
    }

    fn monotonic_resolution_ns(&self) -> u64 {
        clock::counter_frequency().map_or(1, |f| 1_000_000_000u64.div_ceil(f.hz()).max(1))
    }

    fn wall_clock(&self) -> (u64, u32) {
        let ns = self.monotonic_ns();
        (self.boot_unix_time + ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
    }

    fn sleep_until(&self, deadline_ns: u64) {
        // Off the run queue until the deadline's tick: a sleeping component costs nothing.
        crate::sched::sleep_until(deadline_ns);
    }

    fn random_bytes(&self, buf: &mut [u8]) -> RandomSource {
        let mut source = RandomSource::Hardware;
        for chunk in buf.chunks_mut(8) {
            let v = random::hardware_u64(self.generators).unwrap_or_else(|| {
                source = RandomSource::Fallback;
                self.fallback_u64()
            });
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        source
    }

    fn console_line(&self, name: &str, kind: OutputKind, line: &[u8]) {
        let text = core::str::from_utf8(line).unwrap_or("<output that is not UTF-8>");
        match kind {
            OutputKind::Stdout => kprintln!("[{name}] {text}"),
            OutputKind::Stderr => kprintln!("[{name}!] {text}"),
        }
    }

    /// `[name] LEVEL: message`, when `level` passes the kernel's own log level (`log=LEVEL`).
    fn component_log(&self, name: &str, level: log::Level, message: &str) {
        if level <= log::max_level() {
            kprintln!("[{name}] {level}: {message}");
        }
    }
}
