//! `modstore`: the module store service. It keeps its entries on the disk behind the block
//! driver's connection `block` (see [`modstore::store`]) and serves the kernel on connection
//! `modules` (see [`modstore::service`]): a put is answered `stored` only once its entry is
//! written and flushed. It ends (exit 0) when the kernel has loaded every component it compiles
//! and closed its connection.
//!
//! At start it prints `modstore: opened: N entries (R records), U of T KiB used`, with
//! ` (discarded a torn record at sector X)` when a crash tore the last write (preceded by
//! `modstore: formatted a blank disk of N sectors` for a blank disk). A disk that holds something
//! else is refused (exit 1) and left untouched; the kernel then compiles without keeping.

use std::process::exit;

use kvstore::block::BlockDisk;
use kvstore::disk::Disk;
use mica::ipc::{Channel, ErrorCode};
use mica_device::modules::CONNECTION;
use modstore::service::Service;
use modstore::store::ModuleStore;

fn main() {
    let disk = BlockDisk::connect("modstore").unwrap_or_else(|e| {
        eprintln!("modstore: {e}");
        exit(1);
    });
    let sectors = disk.sectors();
    let (store, report) = ModuleStore::open(disk, kvstore::disk::new_store_id()).unwrap_or_else(|e| {
        eprintln!("modstore: cannot open the store: {e}");
        exit(1);
    });
    if report.formatted {
        println!("modstore: formatted a blank disk of {sectors} sectors");
    }
    println!("modstore: opened: {report}");
    let channel = Channel::connect(CONNECTION).unwrap_or_else(|e| {
        eprintln!("modstore: cannot connect to connection \"{CONNECTION}\": {e}");
        exit(1);
    });
    let mut service = Service::new(store);
    loop {
        let received = match channel.recv() {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("modstore: the kernel is done; {} entries", service.store().len());
                return;
            }
            Err(e) => {
                eprintln!("modstore: receive failed: {e}");
                exit(1);
            }
        };
        let Some(call) = received.call else { continue };
        let (response, line) = service.answer(&received.message.bytes);
        if let Some(line) = line {
            println!("{line}");
        }
        if let Err(e) = channel.reply(call, &response.encode()) {
            println!("modstore: reply to call {call} not delivered: {e}");
        }
    }
}
