//! Compute kernels that benchmarks run on both sides of a comparison: compiled to `wasm32-wasip2`
//! inside a Mica component, and compiled natively into a program run in a Linux guest or on the
//! host. One source, so the comparison measures the platform, not two implementations.
#![no_std]
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
