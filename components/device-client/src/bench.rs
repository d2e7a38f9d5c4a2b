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
use mica_workloads::block::{RANDOM_N, RANDOM_REQUEST, RANDOM_SPAN, SEQ_BYTES, SEQ_REQUEST, random_sector};

use crate::context;

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
