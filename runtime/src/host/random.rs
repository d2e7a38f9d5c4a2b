//! `wasi:random/random`, `wasi:random/insecure`, `wasi:random/insecure-seed`: bytes from the
//! platform. In the kernel, `random` comes from ChaCha20 keyed from the CPU's generator
//! (RDSEED/RDRAND, RNDR), and is refused on a machine without one
//! ([`crate::platform::NoEntropySource`]); the insecure ones never fail.

use alloc::vec::Vec;

use super::InstanceState;
use super::wasi::random::{insecure, insecure_seed, random};

/// The most bytes one call returns.
const MAX_RANDOM: u64 = 1024 * 1024;

impl InstanceState {
    /// `len` bytes, secure (`wasi:random/random`) or not.
    fn bytes(&self, len: u64, secure: bool) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM {
            return Err(wasmtime::format_err!("asked for {len} random bytes; at most {MAX_RANDOM} per call"));
        }
        let mut buf = alloc::vec![0u8; len as usize];
        self.fill(&mut buf, secure)?;
        Ok(buf)
    }

    fn u64(&self, secure: bool) -> wasmtime::Result<u64> {
        let mut b = [0u8; 8];
        self.fill(&mut b, secure)?;
        Ok(u64::from_le_bytes(b))
    }

    fn fill(&self, buf: &mut [u8], secure: bool) -> wasmtime::Result<()> {
        if !secure {
            self.platform.insecure_random_bytes(buf);
            return Ok(());
        }
        // A component that imports wasi:random/random is refused at load on a machine without
        // an entropy source; this is the last line, should one get here anyway.
        self.platform.random_bytes(buf).map_err(|e| wasmtime::format_err!("wasi:random/random: {e}"))
    }
}

impl random::Host for InstanceState {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bytes(len, true)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        self.u64(true)
    }
}

impl insecure::Host for InstanceState {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.bytes(len, false)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        self.u64(false)
    }
}

impl insecure_seed::Host for InstanceState {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((self.u64(false)?, self.u64(false)?))
    }
}
