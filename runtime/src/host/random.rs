//! `wasi:random/random`, `wasi:random/insecure`, `wasi:random/insecure-seed`: bytes from the
//! platform (RDRAND/RDSEED in the kernel when the CPU has them; see [`crate::platform::RandomSource`]).

use alloc::vec::Vec;

use super::InstanceState;
use super::wasi::random::{insecure, insecure_seed, random};

/// The most bytes one call returns.
const MAX_RANDOM: u64 = 1024 * 1024;

impl InstanceState {
    fn bytes(&self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM {
            return Err(wasmtime::format_err!("asked for {len} random bytes; at most {MAX_RANDOM} per call"));
        }
        let mut buf = alloc::vec![0u8; len as usize];
        self.platform.random_bytes(&mut buf);
        Ok(buf)
    }

    fn u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.platform.random_bytes(&mut b);
        u64::from_le_bytes(b)
    }
}

impl random::Host for InstanceState {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bytes(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.u64())
    }
}

impl insecure::Host for InstanceState {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bytes(len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.u64())
    }
}

impl insecure_seed::Host for InstanceState {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((self.u64(), self.u64()))
    }
}
