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
//!
//! Like the Linux side (`pread`/`pwrite` with `O_DIRECT` into one buffer), it works in place:
//! replies land in one buffer kept for the run (`Channel::call_into`) and are decoded where they
//! lie, and a write's request is made from the data in one copy.

use std::time::Instant;

use mica::ipc::Channel;
use mica_device::block::{self, RequestRef, Response, ResponseRef, SECTOR_SIZE};
use mica_workloads::block::{RANDOM_N, RANDOM_REQUEST, RANDOM_SPAN, SEQ_BYTES, SEQ_REQUEST, random_sector};

use crate::context;

/// Sends `request` and decodes the reply where it landed, in `reply`.
fn call<'r>(channel: &Channel, request: &RequestRef<'_>, reply: &'r mut Vec<u8>) -> Result<ResponseRef<'r>, String> {
    let arrived = channel.call_into(&request.encode(), reply, None).map_err(context("block request"))?;
    match Response::decode_borrowed(&reply[..arrived.len]).map_err(|e| format!("a malformed response: {e}"))? {
        ResponseRef::Error { code, message } => Err(format!("the driver refused a request: {code:?}: {message}")),
        response => Ok(response),
    }
}

/// Runs `n` requests made by `request(i)` and prints the line for `op`.
fn timed<'d>(
    channel: &Channel,
    op: &str,
    bytes: u64,
    n: u64,
    request: impl Fn(u64) -> RequestRef<'d>,
) -> Result<(), String> {
    let mut reply = vec![0; block::MAX_DATA_BYTES + 64];
    let start = Instant::now();
    for i in 0..n {
        call(channel, &request(i), &mut reply)?;
    }
    let ns = start.elapsed().as_nanos();
    println!("block-bench op={op} bytes={bytes} n={n} ns={ns}");
    Ok(())
}

/// `block-bench`.
pub fn run() -> Result<(), String> {
    let channel = Channel::connect(block::CONNECTION).map_err(context("connect block"))?;
    let mut reply = Vec::new();
    let sectors = match call(&channel, &RequestRef::Info, &mut reply)? {
        ResponseRef::Info { sectors, read_only: false, .. } => sectors,
        other => return Err(format!("info: expected a writable disk, got {other:?}")),
    };
    let disk = sectors * u64::from(SECTOR_SIZE);
    if disk < SEQ_BYTES {
        return Err(format!("the disk has {disk} bytes; the benchmark needs {SEQ_BYTES}"));
    }
    let per = SEQ_REQUEST / u64::from(SECTOR_SIZE);
    let data = vec![0x5a; SEQ_REQUEST as usize];
    timed(&channel, "seq-write", SEQ_REQUEST, SEQ_BYTES / SEQ_REQUEST, |i| RequestRef::Write {
        sector: i * per,
        data: &data,
    })?;
    timed(&channel, "flush", 0, 1, |_| RequestRef::Flush)?;
    timed(&channel, "seq-read", SEQ_REQUEST, SEQ_BYTES / SEQ_REQUEST, |i| RequestRef::Read {
        sector: i * per,
        count: per as u32,
    })?;
    let slots = disk.min(RANDOM_SPAN) / RANDOM_REQUEST;
    let small = vec![0xa5; RANDOM_REQUEST as usize];
    timed(&channel, "rand-write", RANDOM_REQUEST, RANDOM_N, |i| RequestRef::Write {
        sector: random_sector(i, slots),
        data: &small,
    })?;
    timed(&channel, "rand-read", RANDOM_REQUEST, RANDOM_N, |i| RequestRef::Read {
        sector: random_sector(i, slots),
        count: (RANDOM_REQUEST / u64::from(SECTOR_SIZE)) as u32,
    })?;
    Ok(())
}
