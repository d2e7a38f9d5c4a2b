//! An echo server. It serves the manifest connection `echo`: every request (`call`) is answered
//! with the same bytes and the same handles; a plain message is counted and dropped. It ends,
//! successfully, when all its clients have gone (its receive sees `peer-closed`).

use mica::ipc::{Channel, ErrorCode, Message};

fn main() {
    let service = match Channel::connect("echo") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect: {e}");
            std::process::exit(1);
        }
    };
    let (mut calls, mut messages) = (0u64, 0u64);
    loop {
        match service.recv() {
            Ok(r) => match r.call {
                Some(call) => {
                    calls += 1;
                    let Message { bytes, handles } = r.message;
                    if let Err(e) = service.reply_message(call, Message { bytes, handles }) {
                        // The caller gave up or ended: its problem, not the server's.
                        println!("reply to call {call} not delivered: {e}");
                    }
                }
                None => messages += 1,
            },
            Err(e) if e.code == ErrorCode::PeerClosed => {
                println!("all clients gone; answered {calls} calls and dropped {messages} messages");
                return;
            }
            Err(e) => {
                eprintln!("receive failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
