//! `block-bench`: the block workload of `cargo xtask bench io`, timed with the monotonic clock
//! (under `-icount shift=0` the kernel's clock counts guest instructions). The same workload runs
//! in a Linux guest on its own virtio-blk driver (`mica-linux-bench block`).
//!
//! - `seq-write`, `seq-read`: 4 MiB from sector 0 in requests of 32 KiB (the protocol's most);
//! - `rand-write`, `rand-read`: 500 requests of 4 KiB at random 4 KiB-aligned places in the
//!   first 64 MiB (or the whole disk, if smaller);
//! - `flush`: one flush after the writes.
//!
//! Each prints `block-bench op=OP bytes=B n=N ns=T` (bytes per request).

use std::time::Instant;

use mica::ipc::Channel;
use mica_device::block::{self, Request, Response, SECTOR_SIZE};

use crate::context;

/// Bytes read and written sequentially.
const SEQ_BYTES: u64 = 4 << 20;
/// Bytes per sequential request.
const SEQ_REQUEST: u64 = block::MAX_DATA_BYTES as u64;
/// Random requests of each kind.
const RANDOM_N: u64 = 500;
/// Bytes per random request.
const RANDOM_REQUEST: u64 = 4096;
/// The span random requests fall in.
const RANDOM_SPAN: u64 = 64 << 20;

fn call(channel: &Channel, request: &Request) -> Result<Response, String> {
    let bytes = channel.call(&request.encode()).map_err(context("block request"))?;
    match Response::decode(&bytes).map_err(|e| format!("a malformed response: {e}"))? {
        Response::Error { code, message } => Err(format!("the driver refused a request: {code:?}: {message}")),
        response => Ok(response),
    }
}

/// Runs `n` requests made by `request(i)` and prints the line for `op`.
fn timed(channel: &Channel, op: &str, bytes: u64, n: u64, request: impl Fn(u64) -> Request) -> Result<(), String> {
    let start = Instant::now();
    for i in 0..n {
        call(channel, &request(i))?;
    }
    let ns = start.elapsed().as_nanos();
    println!("block-bench op={op} bytes={bytes} n={n} ns={ns}");
    Ok(())
}

/// The `i`-th random request's first sector: xorshift over 4 KiB slots of the span.
fn random_sector(i: u64, slots: u64) -> u64 {
    let mut x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x % slots) * (RANDOM_REQUEST / u64::from(SECTOR_SIZE))
}

/// `block-bench`.
pub fn run() -> Result<(), String> {
    let channel = Channel::connect(block::CONNECTION).map_err(context("connect block"))?;
    let sectors = match call(&channel, &Request::Info)? {
        Response::Info { sectors, read_only: false, .. } => sectors,
        other => return Err(format!("info: expected a writable disk, got {other:?}")),
    };
    let disk = sectors * u64::from(SECTOR_SIZE);
    if disk < SEQ_BYTES {
        return Err(format!("the disk has {disk} bytes; the benchmark needs {SEQ_BYTES}"));
    }
    let per = SEQ_REQUEST / u64::from(SECTOR_SIZE);
    let data = vec![0x5a; SEQ_REQUEST as usize];
    timed(&channel, "seq-write", SEQ_REQUEST, SEQ_BYTES / SEQ_REQUEST, |i| Request::Write {
        sector: i * per,
        data: data.clone(),
    })?;
    timed(&channel, "flush", 0, 1, |_| Request::Flush)?;
    timed(&channel, "seq-read", SEQ_REQUEST, SEQ_BYTES / SEQ_REQUEST, |i| Request::Read {
        sector: i * per,
        count: per as u32,
    })?;
    let slots = disk.min(RANDOM_SPAN) / RANDOM_REQUEST;
    let small = vec![0xa5; RANDOM_REQUEST as usize];
    timed(&channel, "rand-write", RANDOM_REQUEST, RANDOM_N, |i| Request::Write {
        sector: random_sector(i, slots),
        data: small.clone(),
    })?;
    timed(&channel, "rand-read", RANDOM_REQUEST, RANDOM_N, |i| Request::Read {
        sector: random_sector(i, slots),
        count: (RANDOM_REQUEST / u64::from(SECTOR_SIZE)) as u32,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_sectors_stay_in_the_span_and_aligned() {
        let slots = RANDOM_SPAN / RANDOM_REQUEST;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..RANDOM_N {
            let s = random_sector(i, slots);
            assert_eq!(s % 8, 0);
            assert!(s * u64::from(SECTOR_SIZE) + RANDOM_REQUEST <= RANDOM_SPAN);
            seen.insert(s);
        }
        assert!(seen.len() > 450, "{} distinct", seen.len());
    }
}
