//! The kernel's side of the runtime's `Platform` trait: clocks, randomness, the console and
//! components' log records.

use mica_runtime::platform::{NoEntropySource, OutputKind, Platform};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::arch::{self, clock, random};
use crate::irq_lock::IrqMutex;
use crate::kprintln;

/// Bytes the secure generator hands out before it takes a fresh key from the CPU.
const RESEED_BYTES: usize = 1 << 20;

/// `wasi:random/random`'s generator: ChaCha20 keyed from the CPU's generator.
#[derive(Debug)]
struct Secure {
    rng: ChaCha20Rng,
    /// Bytes handed out since the last key from the CPU.
    since_seed: usize,
}

/// The kernel as a component's platform.
#[derive(Debug)]
pub struct KernelPlatform {
    generators: random::Generators,
    /// Unix time at the kernel's first instruction, from the RTC (0 without one).
    boot_unix_time: u64,
    /// `None` when the CPU has no generator: then nothing secure can be made, and
    /// `wasi:random/random` is refused.
    secure: IrqMutex<Option<Secure>>,
    /// `wasi:random/insecure*`: ChaCha20 too, keyed from the CPU's generator when there is one
    /// and from the clock otherwise.
    insecure: IrqMutex<ChaCha20Rng>,
}

/// 32 bytes from the CPU's generator, or `None` when it has none (or it keeps failing).
fn hardware_seed(generators: random::Generators) -> Option<[u8; 32]> {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&random::hardware_u64(generators)?.to_le_bytes());
    }
    Some(seed)
}

/// A key for the insecure generator from the clock: distinct per boot only as far as the clock
/// is.
fn clock_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&clock::counter().to_le_bytes());
    }
    seed
}

/// A generator of its own for one request, keyed from `parent` (so the shared one is held only
/// for one block, whatever the request's size).
fn child_of(parent: &mut ChaCha20Rng) -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    parent.fill_bytes(&mut seed);
    ChaCha20Rng::from_seed(seed)
}

impl KernelPlatform {
    /// Reads the RTC and keys the generators from the CPU's.
    pub fn new() -> KernelPlatform {
        let generators = random::generators();
        let now = arch::rtc::unix_time();
        let since_boot = clock::monotonic_ns().unwrap_or(0) / 1_000_000_000;
        match now {
            Some(t) => log::info!("wall clock: {t} s since the Unix epoch (RTC)"),
            None => log::warn!("wall clock: no RTC answered; wall time counts from 1970-01-01 at boot"),
        }
        let seed = if generators.any() { hardware_seed(generators) } else { None };
        let secure = seed.map(|seed| Secure { rng: ChaCha20Rng::from_seed(seed), since_seed: 0 });
        let insecure = ChaCha20Rng::from_seed(match &secure {
            Some(_) => hardware_seed(generators).unwrap_or_else(clock_seed),
            None => clock_seed(),
        });
        if secure.is_some() {
            log::info!("randomness for components: ChaCha20 keyed from {}", random::SOURCE);
        } else {
            log::warn!(
                "randomness for components: {}; components that import wasi:random/random are refused",
                NoEntropySource
            );
        }
        KernelPlatform {
            generators,
            boot_unix_time: now.map_or(0, |t| t.saturating_sub(since_boot)),
            secure: IrqMutex::new(secure),
            insecure: IrqMutex::new(insecure),
        }
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

    fn killed(&self) -> bool {
        crate::sched::killed()
    }

    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), NoEntropySource> {
        let mut child = {
            let mut secure = self.secure.lock();
            let secure = secure.as_mut().ok_or(NoEntropySource)?;
            secure.since_seed += buf.len();
            if secure.since_seed >= RESEED_BYTES {
                // The new key mixes the CPU's bytes into the old generator's output, so neither a
                // failing nor a dishonest CPU generator weakens it. Should the CPU's generator
                // fail now, the generator goes on as it is (still secure) and tries again later.
                if let Some(fresh) = hardware_seed(self.generators) {
                    let mut key = [0u8; 32];
                    secure.rng.fill_bytes(&mut key);
                    key.iter_mut().zip(fresh).for_each(|(k, f)| *k ^= f);
                    secure.rng = ChaCha20Rng::from_seed(key);
                    secure.since_seed = 0;
                }
            }
            child_of(&mut secure.rng)
        };
        child.fill_bytes(buf);
        Ok(())
    }

    fn insecure_random_bytes(&self, buf: &mut [u8]) {
        let mut child = child_of(&mut self.insecure.lock());
        child.fill_bytes(buf);
    }

    fn has_entropy_source(&self) -> bool {
        self.secure.lock().is_some()
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
