//! Chaos in a running system: the `chaos` system (virtio-blk and virtio-net drivers, `kvstore`,
//! `httpd`, each restarted whenever it ends) under a steady load of HTTP writes and reads from
//! this host, while the kernel's fault injector (`chaos=SEED`, `wasm::chaos` in the kernel)
//! kills random instances of the four for a set time. Afterwards:
//!
//! - every write that was acknowledged (`PUT` answered 200) is readable with its value, and no
//!   read during the run saw a wrong value;
//! - all four components run (the kernel's `chaos-memory when=after` report says `running=4 of 4`);
//! - the kernel's own memory is back where it was before the first kill: the frames it holds
//!   besides the components' linear memories, their drivers' DMA buffers, its page tables and
//!   its heap, and the heap's allocated bytes, within [`SLACK_FRAMES`] and [`SLACK_HEAP_BYTES`] (see
//!   [`Memory::check`] and the kernel's `wasm/chaos.rs`).
//!
//! The boot test runs 60 s of it; `cargo xtask soak chaos --time S` runs longer.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mica_launch::{Accel, GuestArch, QemuCommand};

use crate::live::LiveGuest;
use crate::{BundleUse, bundle_path_in, with_system_devices};

/// The system.
pub const SYSTEM: &str = "chaos";
/// The same system compiled for aarch64 (by `cargo xtask test`).
pub const SYSTEM_AARCH64: &str = "chaos-aarch64";
/// The variable that fixes the seed.
pub const SEED_ENV: &str = "MICA_CHAOS_SEED";
/// How long the boot test kills for.
pub const BOOT_TEST_MS: u64 = 60_000;
/// The mean wait between kills.
pub const GAP_MS: u64 = 1_000;
/// Frames the kernel may hold for itself after the run beyond what it held before (the runs so
/// far: exactly none).
pub const SLACK_FRAMES: i64 = 4;
/// Heap bytes likewise: tables that grew to their high-water mark keep their room (the runs so
/// far: 0.3 to 2 KiB).
pub const SLACK_HEAP_BYTES: i64 = 16 * 1024;

/// A `mica: chaos-memory` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Restartable components running an instance, and how many there are.
    pub running: (u64, u64),
    /// Free physical frames.
    pub frames_free: u64,
    /// Frames of the components' linear memories (and loaded code).
    pub wasm_pages: u64,
    /// Free frames promised to committed pages not touched yet.
    pub frames_promised: u64,
    /// Frames of drivers' DMA buffers.
    pub dma_frames: u64,
    /// Page-table frames made since boot, less those freed.
    pub page_tables: i64,
    /// Heap bytes allocated.
    pub heap_allocated: u64,
    /// Bytes the heap has mapped (its frames are the heap's, counted by `heap_allocated`).
    pub heap_bytes: u64,
}

impl Memory {
    /// Reads a `mica: chaos-memory when=WHEN ...` line.
    pub fn parse(line: &str, when: &str) -> Option<Memory> {
        let rest = line.split(&format!("mica: chaos-memory when={when} ")).nth(1)?;
        let field =
            |key: &str| rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?.parse().ok();
        let running = rest.split("running=").nth(1)?;
        let mut words = running.split_whitespace();
        let up = words.next()?.parse().ok()?;
        let total = if words.next()? == "of" { words.next()?.parse().ok()? } else { return None };
        Some(Memory {
            running: (up, total),
            frames_free: field("frames_free")?,
            wasm_pages: field("wasm_pages")?,
            frames_promised: field("frames_promised")?,
            dma_frames: field("dma_frames")?,
            page_tables: rest.split_whitespace().find_map(|kv| kv.strip_prefix("page_tables=")?.parse().ok())?,
            heap_allocated: field("heap_allocated")?,
            heap_bytes: field("heap_bytes")?,
        })
    }

    /// Frames not held by the kernel for itself: free ones not promised to a page, and those it
    /// holds for components (linear memories, whether touched or promised; DMA buffers). Page
    /// tables are counted apart.
    fn outside_kernel(&self) -> i64 {
        (self.frames_free + self.wasm_pages + self.dma_frames + self.heap_bytes / 4096) as i64
            - self.frames_promised as i64
    }

    /// Whether `after` has every component running and the kernel's own memory back where
    /// `self` had it; `Ok` gives the differences.
    pub fn check(&self, after: &Memory) -> Result<String, String> {
        if after.running.0 != after.running.1 || after.running.1 == 0 {
            return Err(format!("{} of {} components running after the run", after.running.0, after.running.1));
        }
        let tables = after.page_tables - self.page_tables;
        let frames = self.outside_kernel() - after.outside_kernel() - tables;
        let heap = after.heap_allocated as i64 - self.heap_allocated as i64;
        let said = format!("kernel frames {frames:+} (besides {tables:+} page tables), kernel heap {heap:+} bytes");
        if frames > SLACK_FRAMES || heap > SLACK_HEAP_BYTES {
            return Err(format!(
                "the kernel's memory is not back: {said} (at most {SLACK_FRAMES} frames and {SLACK_HEAP_BYTES} bytes \
                 are allowed); before {self:?}, after {after:?}"
            ));
        }
        Ok(said)
    }
}

/// What one run did.
#[derive(Clone, Debug)]
pub struct Run {
    /// The injector's seed.
    pub seed: u64,
    /// How long it killed for.
    pub run_ms: u64,
    /// Instances killed.
    pub kills: u64,
    /// Instances restarted (`restarting` lines).
    pub restarts: u64,
    /// Writes acknowledged, all of them read back afterwards.
    pub acked: u64,
    /// Writes not acknowledged (an error status, a reset connection, a timeout).
    pub unacked: u64,
    /// Reads during the run that got the right value.
    pub reads_ok: u64,
    /// Reads during the run that got no answer or an error status.
    pub reads_failed: u64,
    /// Median and 99th percentile of the answered requests' latency, in ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// The memory check's figures.
    pub memory: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {} kills in {} s, {} restarts; {} writes acknowledged and all read back ({} not acknowledged); \
             {} reads right during the run ({} unanswered); latency p50 {:.1} ms, p99 {:.1} ms; {}",
            self.seed,
            self.kills,
            self.run_ms / 1000,
            self.restarts,
            self.acked,
            self.unacked,
            self.reads_ok,
            self.reads_failed,
            self.p50_ms,
            self.p99_ms,
            self.memory
        )
    }
}

/// The `p`th percentile (0 to 100) of `samples`, in ms (nearest rank); 0 for none.
pub fn percentile_ms(samples: &[Duration], p: u32) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n * p as usize).div_ceil(100)).clamp(1, n) - 1].as_secs_f64() * 1000.0,
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// `PUT` or `GET` of key `key`: the status and body, or why there was none.
fn ask(agent: &ureq::Agent, port: u16, key: &str, put: Option<&str>) -> Result<(u16, String), String> {
    let url = format!("http://127.0.0.1:{port}/kv/{key}");
    let sent = match put {
        Some(value) => agent.put(&url).send(value),
        None => agent.get(&url).call(),
    };
    let mut response = sent.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// What the load saw.
#[derive(Debug, Default)]
struct Load {
    /// Keys whose write was acknowledged, with their values (every key is written once).
    acked: Vec<(String, String)>,
    unacked: u64,
    reads_ok: u64,
    reads_failed: u64,
    /// Reads that got a value other than the one acknowledged: data corrupted or lost.
    wrong: Vec<String>,
    /// How long each request answered 200 took.
    latencies: Vec<Duration>,
}

/// Writes fresh keys and reads back acknowledged ones until `stop`.
fn load(port: u16, seed: u64, stop: &AtomicBool, seen: &Mutex<Load>) {
    // Answers take milliseconds; a request that meets a killed httpd or driver waits for nothing
    // longer than this (it counts as not acknowledged) and the load goes on.
    let agent = agent(Duration::from_secs(1));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("chaos-{n}");
        let value = format!("v{n}-{seed}");
        let start = Instant::now();
        let acked = matches!(ask(&agent, port, &key, Some(&value)), Ok((200, _)));
        let took = start.elapsed();
        let earlier: Vec<(String, String)> = {
            let mut seen = seen.lock().expect("load lock");
            if acked {
                seen.latencies.push(took);
                seen.acked.push((key, value));
            } else {
                seen.unacked += 1;
            }
            // After each write, reads of two earlier acknowledged keys (one write in three
            // requests: the store's log, which has no compaction yet, fills more slowly).
            let count = seen.acked.len() as u64;
            (0..2u64)
                .filter(|_| count > 0)
                .map(|i| seen.acked[((n * 7919 + i * 104_729) % count) as usize].clone())
                .collect()
        };
        for (key, value) in earlier {
            let start = Instant::now();
            let got = ask(&agent, port, &key, None);
            let took = start.elapsed();
            let mut seen = seen.lock().expect("load lock");
            match got {
                Ok((200, body)) if body == value => {
                    seen.reads_ok += 1;
                    seen.latencies.push(took);
                }
                Ok((200 | 404, body)) => seen.wrong.push(format!("GET {key}: {body:?}, acknowledged as {value:?}")),
                _ => seen.reads_failed += 1,
            }
        }
    }
}

/// Reads every acknowledged key back; each must have its value. A read that gets no answer or
/// an error status other than 404 is tried again (for up to 30 s in all).
fn verify(port: u16, acked: &[(String, String)]) -> Result<(), String> {
    let agent = agent(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lost = Vec::new();
    for (key, value) in acked {
        loop {
            match ask(&agent, port, key, None) {
                Ok((200, body)) if body == *value => break,
                Ok((200 | 404, body)) => {
                    lost.push(format!("GET {key}: {body:?}, acknowledged as {value:?}"));
                    break;
                }
                other if Instant::now() >= deadline => {
                    return Err(format!("GET {key} after the run: {other:?}, and no answer within 30 s"));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {} acknowledged writes lost or wrong: {}", lost.len(), acked.len(), lost.join("; ")))
    }
}

/// The seed from [`SEED_ENV`], or else from the clock.
pub fn seed() -> Result<u64, String> {
    match std::env::var(SEED_ENV) {
        Ok(v) => v.parse().map_err(|_| format!("{SEED_ENV}={v} is not a number")),
        Err(_) => {
            Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64))
        }
    }
}

/// The boot test: [`BOOT_TEST_MS`] of chaos with the seed from [`SEED_ENV`] or the clock.
pub fn run(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let bundles = crate::bundles_dir()?;
    run_seeded(qemu, kernel, &bundles, GuestArch::X86_64, seed()?, BOOT_TEST_MS, GAP_MS).map(|run| run.to_string())
}

/// The boot test on the aarch64 kernel on QEMU's `virt` (`qemu` being its QEMU), with the same
/// `.wasm` files compiled for aarch64 (the bundle `chaos-aarch64`).
pub fn run_aarch64(qemu: &Path, kernel: &Path) -> Result<String, String> {
    let bundles = crate::bundles_dir()?;
    run_seeded(qemu, kernel, &bundles, GuestArch::Aarch64, seed()?, BOOT_TEST_MS, GAP_MS).map(|run| run.to_string())
}

/// One run of `run_ms` of kills about `gap_ms` apart with `seed`, the system's bundle in
/// `bundles`; with `gap_ms` 0, the same load and checks with no kills (`cargo xtask soak
/// http`). An error says what went wrong, with the seed and the console.
pub fn run_seeded(
    qemu: &Path,
    kernel: &Path,
    bundles: &Path,
    arch: GuestArch,
    seed: u64,
    run_ms: u64,
    gap_ms: u64,
) -> Result<Run, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let port = free_port()?;
    let (cmd, system) = match arch {
        GuestArch::X86_64 => {
            let profile = mica_runtime::config::CpuProfile::baseline();
            let features: Vec<&str> = profile.features.iter().map(|f| f.name()).collect();
            (QemuCommand::new(qemu, kernel, Accel::Tcg).cpu(mica_launch::cpu_model(&features)), SYSTEM)
        }
        GuestArch::Aarch64 => (QemuCommand::new(qemu, kernel, Accel::Tcg).arch(GuestArch::Aarch64), SYSTEM_AARCH64),
    };
    let cmd = cmd
        .cmdline(format!("chaos={seed} chaos_ms={run_ms} chaos_gap_ms={gap_ms} restart_backoff_ms=50"))
        // Two CPUs: a kill also lands on a thread running on the other one.
        .extra_args(["-smp", "2"]);
    let bundle = bundle_path_in(bundles, &BundleUse { system, tamper: None }, scratch.path())?;
    let cmd = with_system_devices(cmd, &bundle, scratch.path(), |d| {
        if d.kind == "virtio-net" {
            d.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:80")];
        }
    })?;
    let mut guest = LiveGuest::spawn(&cmd)?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Load::default()));
    let mut loader = None;
    let result = (|| {
        let deadline = Instant::now() + crate::TIMEOUT;
        let mut before = None;
        while before.is_none() {
            let line = guest.next_line(deadline).ok_or("no `chaos-memory when=before` report")?;
            before = Memory::parse(&line, "before");
        }
        let before = before.ok_or("no report")?;
        let (stop_load, seen_load) = (Arc::clone(&stop), Arc::clone(&seen));
        loader = Some(std::thread::spawn(move || load(port, seed, &stop_load, &seen_load)));
        let deadline = Instant::now() + Duration::from_millis(run_ms) + crate::TIMEOUT;
        guest.wait_for("mica: chaos: done:", deadline)?;
        stop.store(true, Ordering::Relaxed);
        if let Some(loader) = loader.take() {
            loader.join().map_err(|_| "the load thread panicked")?;
        }
        let mut after = None;
        while after.is_none() {
            let line = guest.next_line(deadline).ok_or("no `chaos-memory when=after` report")?;
            after = Memory::parse(&line, "after");
        }
        let after = after.ok_or("no report")?;
        let seen = seen.lock().map_err(|_| "the load's lock is poisoned")?;
        if !seen.wrong.is_empty() {
            return Err(format!("reads during the run got wrong values: {}", seen.wrong.join("; ")));
        }
        if seen.acked.is_empty() {
            return Err(format!("no write was acknowledged in {run_ms} ms ({} failed)", seen.unacked));
        }
        verify(port, &seen.acked)?;
        let memory = before.check(&after)?;
        let count = |needle: &str| guest.console.lines().filter(|l| l.contains(needle)).count() as u64;
        let kills = count("mica: chaos: kill ");
        if (kills == 0) != (gap_ms == 0) {
            return Err(format!("the injector killed {kills} instance(s) with chaos_gap_ms={gap_ms}"));
        }
        Ok(Run {
            seed,
            run_ms,
            kills,
            restarts: count(": restarting ("),
            acked: seen.acked.len() as u64,
            unacked: seen.unacked,
            reads_ok: seen.reads_ok,
            reads_failed: seen.reads_failed,
            p50_ms: percentile_ms(&seen.latencies, 50),
            p99_ms: percentile_ms(&seen.latencies, 99),
            memory,
        })
    })();
    stop.store(true, Ordering::Relaxed);
    if let Some(loader) = loader {
        let _ = loader.join();
    }
    guest.kill();
    result.map_err(|e| format!("chaos (seed {seed}, {run_ms} ms): {e}\n{}\n{}", cmd.display(), guest.console))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "mica: chaos-memory when=before running=4 of 4 frames_free=1000 wasm_pages=300 \
                          frames_promised=50 dma_frames=64 page_tables=20 heap_allocated=500000 heap_bytes=4194304";

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        assert_eq!(percentile_ms(&[], 50), 0.0);
        assert_eq!(percentile_ms(&ms(&[7]), 99), 7.0);
        let hundred: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile_ms(&ms(&hundred), 50), 50.0);
        assert_eq!(percentile_ms(&ms(&hundred), 99), 99.0);
        assert_eq!(percentile_ms(&ms(&[1, 2, 3]), 50), 2.0);
    }

    #[test]
    fn reports_are_read_and_compared() {
        let before = Memory::parse(BEFORE, "before").expect("parse");
        assert_eq!(
            before,
            Memory {
                running: (4, 4),
                frames_free: 1000,
                wasm_pages: 300,
                frames_promised: 50,
                dma_frames: 64,
                page_tables: 20,
                heap_allocated: 500_000,
                heap_bytes: 4_194_304
            }
        );
        assert_eq!(Memory::parse(BEFORE, "after"), None);
        assert_eq!(Memory::parse("mica: chaos-memory when=before running=4 frames_free=1", "before"), None);
        // Linear memories grew by 20 frames, taken from the free ones: the kernel's own are the same.
        let same = Memory { frames_free: 980, wasm_pages: 320, heap_allocated: 500_100, ..before };
        assert_eq!(
            before.check(&same),
            Ok("kernel frames +0 (besides +0 page tables), kernel heap +100 bytes".to_owned())
        );
        // Components touched 5 pages they had been promised, 3 page tables more, and one more
        // frame: within the slack.
        let grown = Memory { frames_free: 991, frames_promised: 45, page_tables: 23, ..before };
        assert_eq!(
            before.check(&grown),
            Ok("kernel frames +1 (besides +3 page tables), kernel heap +0 bytes".to_owned())
        );
        let leaked = Memory { frames_free: 900, ..before };
        assert!(before.check(&leaked).expect_err("frames").contains("kernel frames +100"));
        let heap = Memory { heap_allocated: 600_000, ..before };
        assert!(before.check(&heap).expect_err("heap").contains("heap +100000"));
        // The heap mapped another megabyte (its frames are the heap's): not a frame leak.
        let grown_heap = Memory { frames_free: 744, heap_bytes: 5_242_880, ..before };
        assert!(before.check(&grown_heap).is_ok());
        let down = Memory { running: (3, 4), ..before };
        assert!(before.check(&down).expect_err("down").contains("3 of 4"));
    }
}
