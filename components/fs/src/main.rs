//! `fs`: a file system service. It mounts the littlefs volume on the disk behind the block
//! driver's connection `block` (formatting a blank disk first) and serves connection `files`
//! with the files protocol ([`mica_device::files`]). It ends (exit 0) when every client has
//! gone.
//!
//! At start it prints `fs: mounted a littlefs volume of N blocks of 4096 bytes` (or
//! `fs: formatted a blank disk and mounted ...`). A disk that holds something else is refused
//! (exit 1) and left untouched. A disk failure or a corrupt volume met while serving is
//! answered, then the service ends (exit 1) so that its supervisor starts it on a fresh mount.

use std::process::exit;

use fs::service::Service;
use fs::volume::Volume;
use kvstore::block::BlockDisk;
use mica::ipc::{Channel, ErrorCode};
use mica_device::files::{self, FsErrorCode, Request, Response};

fn main() {
    let disk = BlockDisk::connect("fs").unwrap_or_else(|e| {
        eprintln!("fs: {e}");
        exit(1);
    });
    let (mut volume, formatted) = Volume::open(disk).unwrap_or_else(|e| {
        eprintln!("fs: cannot open the volume: {e}");
        exit(1);
    });
    let failures = volume.failures.clone();
    let (fs, report) = volume.mount(formatted).unwrap_or_else(|e| {
        eprintln!("fs: cannot mount the volume: {e}");
        exit(1);
    });
    println!("fs: {report}");
    let mut service = Service::new(&fs, report.blocks, failures);
    let channel = Channel::connect(files::CONNECTION).unwrap_or_else(|e| {
        eprintln!("fs: cannot connect to connection {:?}: {e}", files::CONNECTION);
        exit(1);
    });
    let mut served = 0u64;
    loop {
        let received = match channel.recv() {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("fs: all clients gone after {served} requests; {} handles left open", service.open_handles());
                return;
            }
            Err(e) => {
                eprintln!("fs: receive failed: {e}");
                exit(1);
            }
        };
        let Some(call) = received.call else { continue };
        served += 1;
        let response = match Request::decode(&received.message.bytes) {
            Ok(request) => service.handle(request),
            Err(e) => Response::error(FsErrorCode::BadRequest, format!("a malformed request: {e}")),
        };
        if let Err(e) = channel.reply(call, &response.encode()) {
            println!("fs: reply to call {call} not delivered: {e}");
        }
        if let Some(failure) = &service.broken {
            eprintln!("fs: the volume failed ({failure}); ending so that a fresh mount takes over");
            exit(1);
        }
    }
}
