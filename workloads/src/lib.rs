//! Compute kernels that benchmarks run on both sides of a comparison: compiled to `wasm32-wasip2`
//! inside a Mica component, and compiled natively into a program run in a Linux guest or on the
//! host. One source, so the comparison measures the platform, not two implementations.
// `no_std` unless the `std` feature brings the file and network benchmarks, which use `std::fs`
// and `std::net`.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec;
use core::hint::black_box;

/// How many primes are below `n`, by the sieve of Eratosthenes (a byte per number: `n` bytes of
/// memory, written with a stride, then scanned once).
pub fn sieve(n: usize) -> usize {
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut i = 2;
    while i * i < n {
        if !composite[i] {
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
        i += 1;
    }
    black_box(&composite);
    composite[2..].iter().filter(|c| !**c).count()
}

/// Sums the leading and trailing zero bits of `n` pseudo-random 64-bit words, `rounds` times over:
/// a bit-scan loop whose machine code depends on the CPU it is compiled for (one LZCNT or TZCNT
/// with LZCNT and BMI1, a BSR or BSF with a zero check and a move without them).
pub fn bit_scan(n: usize, rounds: u32) -> u64 {
    let mut words = vec![0u64; n];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in words.iter_mut() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Some words are zero, most have a run of zeros at either end.
        *w = (x >> (x & 63)) << ((x >> 8) & 31);
    }
    black_box(&words);
    let mut sum = 0u64;
    for _ in 0..rounds {
        for &w in &words {
            sum = sum.wrapping_add(u64::from(w.leading_zeros()) + u64::from(w.trailing_zeros()));
        }
        black_box(sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::{bit_scan, sieve};

    #[test]
    fn bit_scan_counts_zero_bits() {
        // Every word's leading plus trailing zeros is between 0 and 128 (128 for a zero word).
        let one = bit_scan(1000, 1);
        assert!(one > 0 && one <= 128 * 1000);
        assert_eq!(bit_scan(1000, 3), one * 3);
        assert_eq!(bit_scan(0, 5), 0);
    }

    #[test]
    fn counts_primes_below_n() {
        assert_eq!(sieve(0), 0);
        assert_eq!(sieve(2), 0);
        assert_eq!(sieve(3), 1);
        assert_eq!(sieve(10), 4);
        assert_eq!(sieve(100), 25);
        assert_eq!(sieve(1_000_000), 78_498);
    }
}

/// The TCP echo server of `cargo xtask bench net` and of the `std::net` example: the same
/// `std::net` calls in Mica's `std-net` component (through `wasi:sockets` and the network stack
/// component) and in the Linux guest (on Linux's TCP).
#[cfg(feature = "std")]
pub mod net {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};

    /// Serves `connections` connections of `listener`, one after another: each gets back every
    /// byte it sends, as it comes, until it shuts its sending down; then its sending is shut
    /// down too. `report` hears of each (`connection I from ADDRESS`, `connection I echoed B
    /// bytes`); a connection that fails is reported and the next one served.
    pub fn echo(listener: &TcpListener, connections: u64, mut report: impl FnMut(String)) -> io::Result<()> {
        for n in 1..=connections {
            let (mut stream, peer) = listener.accept()?;
            report(format!("connection {n} from {peer}"));
            match echo_one(&mut stream) {
                Ok(bytes) => report(format!("connection {n} echoed {bytes} bytes")),
                Err(e) => report(format!("connection {n} failed: {e}")),
            }
        }
        Ok(())
    }

    /// Echoes what `stream` sends until it ends; how many bytes.
    fn echo_one(stream: &mut TcpStream) -> io::Result<u64> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut echoed = 0u64;
        loop {
            let got = stream.read(&mut buf)?;
            if got == 0 {
                break;
            }
            stream.write_all(&buf[..got])?;
            echoed += got as u64;
        }
        stream.shutdown(Shutdown::Write)?;
        Ok(echoed)
    }
}

/// The file benchmark (`cargo xtask bench fs`): the same `std::fs` calls in Mica's `notes
/// bench` (through `wasi:filesystem` and the file system service) and in the Linux guest (on
/// ext4), each phase timed by the caller's clock. Every phase that writes ends durable: a sync
/// after the writes, and each created file synced.
#[cfg(feature = "std")]
pub mod files {
    use std::fs::{self, File};
    use std::io::{self, Read, Seek, SeekFrom, Write};
    use std::path::Path;

    use super::block::{RANDOM_REQUEST, SEQ_REQUEST, random_sector};

    /// The big file's size, written and read sequentially.
    pub const SEQ_BYTES: u64 = 1 << 20;
    /// Random writes and reads of [`RANDOM_REQUEST`] bytes in it. Few: littlefs (Mica's file
    /// system service) copies a file from the written place to its end on every write that is
    /// not at the end, so a random write costs up to the whole file.
    pub const RANDOM_N: u64 = 50;
    /// Small files created, then removed.
    pub const CREATE_N: u64 = 100;
    /// Bytes in each small file.
    pub const SMALL_FILE: u64 = 100;

    /// One timed phase: `n` operations of `bytes` each (0 for a create or remove).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Phase {
        /// `seq-write`, `seq-read`, `rand-write`, `rand-read`, `create` or `remove`.
        pub op: &'static str,
        /// Bytes per operation.
        pub bytes: u64,
        /// Operations.
        pub n: u64,
        /// What `clock` advanced by over the phase.
        pub elapsed: u64,
    }

    /// The phases' names, sizes and counts, in the order [`run`] runs them.
    pub const PHASES: [(&str, u64, u64); 6] = [
        ("seq-write", SEQ_REQUEST, SEQ_BYTES / SEQ_REQUEST),
        ("seq-read", SEQ_REQUEST, SEQ_BYTES / SEQ_REQUEST),
        ("rand-write", RANDOM_REQUEST, RANDOM_N),
        ("rand-read", RANDOM_REQUEST, RANDOM_N),
        ("create", SMALL_FILE, CREATE_N),
        ("remove", 0, CREATE_N),
    ];

    /// Runs every phase in `dir` (made if missing), timing each with `clock`.
    pub fn run(dir: &Path, clock: &mut dyn FnMut() -> u64) -> io::Result<Vec<Phase>> {
        fs::create_dir_all(dir)?;
        let big = dir.join("big");
        let mut phases = Vec::new();
        let mut timed = |i: usize, work: &mut dyn FnMut() -> io::Result<()>| -> io::Result<()> {
            let (op, bytes, n) = PHASES[i];
            let start = clock();
            work()?;
            phases.push(Phase { op, bytes, n, elapsed: clock().wrapping_sub(start) });
            Ok(())
        };
        let mut buf = vec![0x5au8; SEQ_REQUEST as usize];
        let slots = SEQ_BYTES / RANDOM_REQUEST;
        timed(0, &mut || {
            let mut file = File::create(&big)?;
            for _ in 0..SEQ_BYTES / SEQ_REQUEST {
                file.write_all(&buf)?;
            }
            file.sync_all()
        })?;
        timed(1, &mut || {
            let mut file = File::open(&big)?;
            for _ in 0..SEQ_BYTES / SEQ_REQUEST {
                file.read_exact(&mut buf)?;
            }
            Ok(())
        })?;
        let mut small = vec![0xa5u8; RANDOM_REQUEST as usize];
        timed(2, &mut || {
            let mut file = File::options().write(true).open(&big)?;
            for i in 0..RANDOM_N {
                // random_sector counts 512-byte sectors; the slots are request-sized.
                file.seek(SeekFrom::Start(random_sector(i, slots) * 512))?;
                file.write_all(&small)?;
            }
            file.sync_all()
        })?;
        timed(3, &mut || {
            let mut file = File::open(&big)?;
            for i in 0..RANDOM_N {
                file.seek(SeekFrom::Start(random_sector(i, slots) * 512))?;
                file.read_exact(&mut small)?;
            }
            Ok(())
        })?;
        let content = vec![b'x'; SMALL_FILE as usize];
        timed(4, &mut || {
            for i in 0..CREATE_N {
                let mut file = File::create(dir.join(format!("small-{i}")))?;
                file.write_all(&content)?;
                file.sync_all()?;
            }
            Ok(())
        })?;
        timed(5, &mut || {
            for i in 0..CREATE_N {
                fs::remove_file(dir.join(format!("small-{i}")))?;
            }
            Ok(())
        })?;
        Ok(phases)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_phase_runs_in_order_and_leaves_the_big_file() {
            let dir = std::env::temp_dir().join(format!("mica-workloads-files-{}", std::process::id()));
            let mut ticks = 0;
            let phases = run(&dir, &mut || {
                ticks += 1;
                ticks
            })
            .expect("ran");
            let names: Vec<(&str, u64, u64)> = phases.iter().map(|p| (p.op, p.bytes, p.n)).collect();
            assert_eq!(names, PHASES);
            assert!(phases.iter().all(|p| p.elapsed == 1));
            assert_eq!(fs::metadata(dir.join("big")).expect("big").len(), SEQ_BYTES);
            assert_eq!(fs::read_dir(&dir).expect("dir").count(), 1, "the small files are gone");
            fs::remove_dir_all(&dir).expect("cleaned up");
        }
    }
}

/// The block benchmark's request pattern (`cargo xtask bench io`), shared by Mica's client
/// component and the Linux guest so both touch the same places in the same order.
pub mod block {
    /// Bytes read and written sequentially.
    pub const SEQ_BYTES: u64 = 4 << 20;
    /// Bytes per sequential request.
    pub const SEQ_REQUEST: u64 = 32 << 10;
    /// Random requests of each kind.
    pub const RANDOM_N: u64 = 500;
    /// Bytes per random request.
    pub const RANDOM_REQUEST: u64 = 4096;
    /// The span random requests fall in (or the whole disk, if smaller).
    pub const RANDOM_SPAN: u64 = 64 << 20;
    /// Bytes per sector in the offsets.
    pub const SECTOR: u64 = 512;

    /// The first sector of the `i`-th random request: a mixed hash of `i` over the `slots`
    /// request-sized slots of the span.
    pub fn random_sector(i: u64, slots: u64) -> u64 {
        let mut x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        (x % slots.max(1)) * (RANDOM_REQUEST / SECTOR)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn random_sectors_stay_in_the_span_aligned_and_spread() {
            let slots = RANDOM_SPAN / RANDOM_REQUEST;
            let mut seen = alloc::collections::BTreeSet::new();
            for i in 0..RANDOM_N {
                let s = random_sector(i, slots);
                assert_eq!(s % (RANDOM_REQUEST / SECTOR), 0);
                assert!(s * SECTOR + RANDOM_REQUEST <= RANDOM_SPAN);
                seen.insert(s);
            }
            assert!(seen.len() > 450, "{} distinct", seen.len());
        }
    }
}
