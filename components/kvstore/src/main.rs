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

use std::process::exit;

use kvstore::block::BlockDisk;
use kvstore::disk::Disk;
use kvstore::log::Store;
use kvstore::protocol::answer;
use mica::ipc::{Channel, ErrorCode};

fn main() {
    let disk = BlockDisk::connect("kvstore").unwrap_or_else(|e| {
        eprintln!("kvstore: {e}");
        exit(1);
    });
    let sectors = disk.sectors();
    let (mut store, report) = Store::open(disk, kvstore::disk::new_store_id()).unwrap_or_else(|e| {
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
