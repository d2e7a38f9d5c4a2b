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

#[cfg(test)]
mod tests {
    use super::sieve;

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
