//! `kvstore`: a persistent key-value server. It keeps its data on the disk behind the block
//! driver's connection `block` as an append-only, checksummed log (see [`kvstore::log`]) and
//! serves connection `kv` with the in-memory `kv` server's text protocol (see
//! [`kvstore::protocol`]): `put`/`del` are answered `ok` only once their record is written and
//! flushed. It ends (exit 0) when every client has gone.
//!
//! At start it prints `kvstore: opened: N records replayed, K keys, log end at sector S`, with
//! ` (discarded a torn record at sector X)` after it when replay stopped at a record that did not
//! check out (preceded by `kvstore: formatted a blank disk of N sectors` for a blank disk). A disk
//! that holds something else than a store, or a store of another format version, is refused
//! (exit 1) and left untouched.

use std::hash::{BuildHasher, RandomState};
use std::process::exit;

use kvstore::disk::{Disk, SECTOR_SIZE};
use kvstore::log::Store;
use kvstore::protocol::answer;
use mica::ipc::{Channel, ErrorCode};
use mica_device::block::{self, MAX_DATA_BYTES, MAX_SECTORS_PER_REQUEST, Request, Response};

/// The disk behind the block driver's connection.
struct BlockDisk {
    channel: Channel,
    sectors: u64,
}

impl BlockDisk {
    /// Connects to the driver and asks for the disk's size; fails for a read-only disk.
    fn connect() -> Result<BlockDisk, String> {
        let channel = Channel::connect(block::CONNECTION)
            .map_err(|e| format!("cannot connect to the block driver (connection {:?}): {e}", block::CONNECTION))?;
        let mut disk = BlockDisk { channel, sectors: 0 };
        match disk.request("info", &Request::Info)? {
            Response::Info { read_only: true, .. } => Err("the disk is read-only; kvstore needs to write".into()),
            Response::Info { sectors, sector_size, .. } if sector_size as usize == SECTOR_SIZE => {
                disk.sectors = sectors;
                Ok(disk)
            }
            Response::Info { sector_size, .. } => {
                Err(format!("the disk has {sector_size}-byte sectors; kvstore needs {SECTOR_SIZE}-byte ones"))
            }
            other => Err(format!("info: expected the disk's size, got {}", describe(&other))),
        }
    }

    fn request(&mut self, what: &str, request: &Request) -> Result<Response, String> {
        let bytes = self.channel.call(&request.encode()).map_err(|e| format!("{what}: {e}"))?;
        Response::decode(&bytes).map_err(|e| format!("{what}: a malformed response from the driver: {e}"))
    }

    /// Sends a write or flush, which the driver answers with `Done`.
    fn expect_done(&mut self, what: &str, request: &Request) -> Result<(), String> {
        match self.request(what, request)? {
            Response::Done => Ok(()),
            other => Err(format!("{what}: expected done, got {}", describe(&other))),
        }
    }
}

/// A response, briefly (not pages of data).
fn describe(response: &Response) -> String {
    match response {
        Response::Data(data) => format!("{} bytes of data", data.len()),
        Response::Error { code, message } => format!("error {code:?}: {message}"),
        other => format!("{other:?}"),
    }
}

impl Disk for BlockDisk {
    type Error = String;

    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
        let mut data = Vec::with_capacity(count as usize * SECTOR_SIZE);
        let mut done = 0;
        while done < count {
            let chunk = (count - done).min(MAX_SECTORS_PER_REQUEST);
            let at = sector + u64::from(done);
            let what = format!("read of {chunk} sector(s) at {at}");
            match self.request(&what, &Request::Read { sector: at, count: chunk })? {
                Response::Data(bytes) if bytes.len() == chunk as usize * SECTOR_SIZE => data.extend_from_slice(&bytes),
                other => return Err(format!("{what}: expected {chunk} sector(s) of data, got {}", describe(&other))),
            }
            done += chunk;
        }
        Ok(data)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        for (i, chunk) in data.chunks(MAX_DATA_BYTES).enumerate() {
            let at = sector + (i * MAX_DATA_BYTES / SECTOR_SIZE) as u64;
            let what = format!("write of {} sector(s) at {at}", chunk.len() / SECTOR_SIZE);
            self.expect_done(&what, &Request::Write { sector: at, data: chunk.to_vec() })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        self.expect_done("flush", &Request::Flush)
    }
}

/// An id for a new store: random (std's hash keys come from the system's random source), mixed
/// with the time.
fn new_store_id() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    RandomState::new().hash_one(now)
}

fn main() {
    let disk = BlockDisk::connect().unwrap_or_else(|e| {
        eprintln!("kvstore: {e}");
        exit(1);
    });
    let sectors = disk.sectors;
    let (mut store, report) = Store::open(disk, new_store_id()).unwrap_or_else(|e| {
        eprintln!("kvstore: cannot open the store: {e}");
        exit(1);
    });
    if report.formatted {
        println!("kvstore: formatted a blank disk of {sectors} sectors");
    }
    println!("kvstore: {report}");
    let service = Channel::connect("kv").unwrap_or_else(|e| {
        eprintln!("kvstore: cannot connect to connection \"kv\": {e}");
        exit(1);
    });
    let mut served = 0u64;
    loop {
        let received = match service.recv() {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("kvstore: all clients gone after {served} requests; {} keys", store.len());
                return;
            }
            Err(e) => {
                eprintln!("kvstore: receive failed: {e}");
                exit(1);
            }
        };
        let Some(call) = received.call else { continue };
        served += 1;
        let reply = answer(&mut store, &String::from_utf8_lossy(&received.message.bytes));
        if let Err(e) = service.reply(call, reply.as_bytes()) {
            println!("kvstore: reply to call {call} not delivered: {e}");
        }
    }
}
