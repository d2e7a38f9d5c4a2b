//! The block client: patterned 4 KiB writes spread over the disk, each read back and compared;
//! in its reconnecting form it rides out driver crashes.

use std::time::Duration;

use mica::ipc::{Channel, ErrorCode};
use mica_device::block::{self, BlockErrorCode, Request, Response, SECTOR_SIZE};

use crate::context;

/// Bytes per write.
const WRITE_BYTES: usize = 4096;
/// Sectors per write.
const WRITE_SECTORS: u64 = (WRITE_BYTES / SECTOR_SIZE as usize) as u64;
/// How often one request is retried on `peer-closed` before giving up.
const MAX_RETRIES: u32 = 50;
/// The pause between retries after the first.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// A connection to the block driver that, when asked to, reconnects when the driver goes away.
struct Client {
    channel: Channel,
    reconnect: bool,
    /// Times the driver went away.
    reconnects: u64,
}

impl Client {
    fn connect(reconnect: bool) -> Result<Client, String> {
        let channel = Channel::connect(block::CONNECTION).map_err(context("connect block"))?;
        Ok(Client { channel, reconnect, reconnects: 0 })
    }

    /// Sends `request` and decodes the response. On `peer-closed` (with reconnecting on), a new
    /// connection and the same request again: a write that reached the disk before the crash
    /// is written again, which changes nothing.
    fn request(&mut self, what: &str, request: &Request) -> Result<Response, String> {
        let mut retries = 0;
        loop {
            match self.channel.call(&request.encode()) {
                Ok(bytes) => {
                    return Response::decode(&bytes).map_err(|e| format!("{what}: a malformed response: {e}"));
                }
                Err(e) if self.reconnect && e.code == ErrorCode::PeerClosed && retries < MAX_RETRIES => {
                    if retries == 0 {
                        self.reconnects += 1;
                        println!("block: {what}: the driver went away ({e}); reconnecting");
                    } else {
                        std::thread::sleep(RETRY_PAUSE);
                    }
                    retries += 1;
                    self.channel = Channel::connect(block::CONNECTION).map_err(context("reconnect block"))?;
                }
                Err(e) => return Err(context(what)(e)),
            }
        }
    }

    /// The disk's capacity in sectors; fails for a read-only disk.
    fn writable_capacity(&mut self) -> Result<u64, String> {
        match self.request("info", &Request::Info)? {
            Response::Info { read_only: true, .. } => Err("the disk is read-only: the test needs to write".into()),
            Response::Info { sectors, sector_size: SECTOR_SIZE, .. } => Ok(sectors),
            other => Err(format!("info: expected the disk's size, got {other:?}")),
        }
    }

    fn write(&mut self, round: u64, sector: u64) -> Result<(), String> {
        let what = format!("write {round} at sector {sector}");
        match self.request(&what, &Request::Write { sector, data: pattern(round, sector) })? {
            Response::Done => Ok(()),
            other => Err(format!("{what}: expected done, got {}", other.brief())),
        }
    }

    fn check(&mut self, round: u64, sector: u64) -> Result<(), String> {
        let what = format!("read {round} at sector {sector}");
        match self.request(&what, &Request::Read { sector, count: WRITE_SECTORS as u32 })? {
            Response::Data(data) if data == pattern(round, sector) => Ok(()),
            Response::Data(data) => {
                let first = data.iter().zip(pattern(round, sector)).position(|(a, b)| *a != b);
                Err(format!("{what}: {} bytes came back, differing from the write at byte {first:?}", data.len()))
            }
            other => Err(format!("{what}: expected data, got {}", other.brief())),
        }
    }
}

/// What round `round` writes at `sector`: a byte stream of its own (xorshift64, seeded by the
/// round), starting with words that say what it is.
fn pattern(round: u64, sector: u64) -> Vec<u8> {
    let mut state = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    let mut data = Vec::with_capacity(WRITE_BYTES);
    while data.len() < WRITE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    let label = format!("mica block test: round {round}, sector {sector}\n");
    data[..label.len()].copy_from_slice(label.as_bytes());
    data
}

/// The first sector of round `round` of `rounds`: spread evenly over the disk, never overlapping.
fn sector_of(round: u64, rounds: u64, capacity: u64) -> u64 {
    let stride = (capacity / rounds / WRITE_SECTORS * WRITE_SECTORS).max(WRITE_SECTORS);
    round * stride
}

fn fits(rounds: u64, capacity: u64) -> Result<(), String> {
    if rounds.saturating_mul(WRITE_SECTORS) > capacity {
        return Err(format!("{rounds} writes of {WRITE_SECTORS} sectors do not fit on a disk of {capacity} sectors"));
    }
    Ok(())
}

/// `block ROUNDS`: every write, then every read-back, a flush and a refused read past the end.
pub fn verify(rounds: u64) -> Result<(), String> {
    let mut client = Client::connect(false)?;
    let capacity = client.writable_capacity()?;
    println!("block: capacity {capacity} sectors");
    fits(rounds, capacity)?;
    for round in 0..rounds {
        client.write(round, sector_of(round, rounds, capacity))?;
    }
    for round in 0..rounds {
        client.check(round, sector_of(round, rounds, capacity))?;
    }
    match client.request("flush", &Request::Flush)? {
        Response::Done => {}
        other => return Err(format!("flush: expected done, got {}", other.brief())),
    }
    match client.request("read past the end", &Request::Read { sector: capacity, count: 1 })? {
        Response::Error { code: BlockErrorCode::OutOfRange, message } => {
            println!("block: a read past the end was refused: {message}");
        }
        other => return Err(format!("read past the end: expected out-of-range, got {}", other.brief())),
    }
    println!("block: {rounds} writes verified, capacity {capacity} sectors");
    Ok(())
}

/// `block-reconnect ROUNDS`: rounds of write and read-back that ride out driver crashes.
pub fn reconnecting(rounds: u64) -> Result<(), String> {
    let mut client = Client::connect(true)?;
    let capacity = client.writable_capacity()?;
    println!("block: capacity {capacity} sectors");
    fits(rounds, capacity)?;
    for round in 0..rounds {
        let sector = sector_of(round, rounds, capacity);
        client.write(round, sector)?;
        client.check(round, sector)?;
    }
    println!("block: {rounds} rounds verified after {} reconnect(s)", client.reconnects);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_spread_without_overlap() {
        for (rounds, capacity) in [(1, 8), (4, 32), (8, 2048), (3, 100), (10, 1 << 20)] {
            let sectors: Vec<u64> = (0..rounds).map(|r| sector_of(r, rounds, capacity)).collect();
            for pair in sectors.windows(2) {
                assert!(pair[1] >= pair[0] + WRITE_SECTORS);
            }
            assert!(sectors.last().copied().unwrap_or(0) + WRITE_SECTORS <= capacity);
        }
        assert!(fits(5, 32).is_err());
    }

    #[test]
    fn patterns_differ_between_rounds() {
        assert_eq!(pattern(1, 8).len(), WRITE_BYTES);
        for (a, b) in [(0, 1), (1, 2), (1, 257), (3, 1 << 32)] {
            assert!(pattern(a, 8)[100..] != pattern(b, 8)[100..], "rounds {a} and {b} write the same");
        }
        assert!(pattern(0, 0)[100..].iter().any(|&b| b != 0));
    }
}
