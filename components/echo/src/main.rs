//! An echo server. It serves the manifest connection `echo`: every request (`call`) is answered
//! with the same bytes and the same handles; a plain message is counted and dropped. It ends,
//! successfully, when all its clients have gone (its receive sees `peer-closed`).

use mica::ipc::{Channel, ErrorCode, Message};

/// Room for the usual request; a longer one makes the buffer grow.
const BUFFER: usize = 4096;

fn main() {
    let service = match Channel::connect("echo") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect: {e}");
            std::process::exit(1);
        }
    };
    let (mut calls, mut messages) = (0u64, 0u64);
    let mut buffer = vec![0u8; BUFFER];
    // A request of bytes only is answered together with the wait for the next one.
    let mut answer: Option<(u64, usize)> = None;
    loop {
        let received = match answer.take() {
            Some((call, len)) => {
                let (replied, received) = service.reply_and_recv_into(call, len, &mut buffer, None);
                if let Err(e) = replied {
                    // The caller gave up or ended: its problem, not the server's.
                    println!("reply to call {call} not delivered: {e}");
                }
                received
            }
            None => service.recv_into(&mut buffer, None),
        };
        match received {
            Ok(r) => match r.call {
                Some(call) => {
                    calls += 1;
                    if r.handles.is_empty() {
                        answer = Some((call, r.len));
                    } else {
                        let message = Message { bytes: buffer[..r.len].to_vec(), handles: r.handles };
                        if let Err(e) = service.reply_message(call, message) {
                            println!("reply to call {call} not delivered: {e}");
                        }
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
