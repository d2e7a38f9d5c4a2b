//! The virtio entropy driver: claims the first granted virtio-rng device (device id 4) and
//! serves the `mica:device` entropy protocol on the manifest connection `entropy`.
//!
//! Each request (a byte count from 1 to 4096) is filled from the device: one device-writable
//! buffer of that many bytes in a DMA buffer goes to the device's only queue, again until the
//! device has written them all. It ends when every client has gone. A device failure ends it
//! with exit code 1 after answering the request with no bytes: the device is then in an unknown
//! state, and ending resets it (the kernel resets a driver's devices when it ends).

#![forbid(unsafe_code)]

use std::process::exit;
use std::time::Duration;

use mica::hw::{IrqLine, MappedDma, Window};

use mica_device::entropy;
use mica_virtio::service::{self, Answer};
use mica_virtio::spec::extra::VIRTIO_RNG_REQUESTQ;
use mica_virtio::{Buffer, Error, Transport, Virtqueue, claim_first, device_id};

/// Descriptors in the request queue (one request is in flight at a time).
const QUEUE_SIZE: u16 = 8;

/// How long the device may take to return a buffer.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns of no bytes in a row after which the device counts as broken.
const MAX_EMPTY_RETURNS: u32 = 16;

/// The initialized device.
struct Rng {
    transport: Transport<Window>,
    irq: IrqLine,
    queue: Virtqueue<MappedDma>,
    /// Where the device writes the bytes.
    buffer: MappedDma,
}

impl Rng {
    /// Claims, initializes and starts the device; returns it and its name.
    fn start() -> Result<(Rng, String), Error> {
        let device = claim_first(device_id::ENTROPY)?;
        let mut transport = device.transport;
        transport.init(0)?;
        let queue = transport.create_queue(VIRTIO_RNG_REQUESTQ, QUEUE_SIZE, MappedDma::allocate)?;
        let buffer = MappedDma::allocate(entropy::MAX_BYTES).map_err(|source| {
            transport.fail();
            Error::Hw { what: "allocating the entropy buffer", source }
        })?;
        transport.driver_ok()?;
        Ok((Rng { transport, irq: device.irq, queue, buffer }, device.name))
    }

    /// `len` bytes (at most the buffer's size) from the device.
    fn fill(&mut self, len: u32) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(len as usize);
        let mut empty_returns = 0;
        while (out.len() as u32) < len {
            let want = len - out.len() as u32;
            // The only chain in flight, so the one that comes back (the queue checks that).
            self.queue.add(&[Buffer::device_writable(self.buffer.bus_address(), want)])?;
            self.transport.notify(self.queue.index())?;
            let used = self.queue.wait_used(&self.transport, &self.irq, Some(DEVICE_TIMEOUT))?;
            let got = used.len.min(want);
            if got == 0 {
                empty_returns += 1;
                if empty_returns == MAX_EMPTY_RETURNS {
                    return Err(Error::Timeout(DEVICE_TIMEOUT));
                }
                continue;
            }
            empty_returns = 0;
            let bytes =
                self.buffer.read(0, got).map_err(|source| Error::Hw { what: "reading the entropy buffer", source })?;
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }
}

fn main() {
    let (mut rng, name) = match Rng::start() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("virtio-rng: cannot start the device: {e}");
            exit(1);
        }
    };
    println!("virtio-rng: {name} ready (queue size {})", rng.queue.size());
    let mut bytes = 0u64;
    let served = service::serve("virtio-rng", entropy::CONNECTION, |number, request| {
        let answer = match entropy::decode_request(request) {
            Ok(len) => match rng.fill(len) {
                Ok(random) => Answer::ok(random),
                Err(e) => {
                    eprintln!("virtio-rng: request {number}: the device failed: {e}");
                    Answer::fatal(Vec::new())
                }
            },
            Err(e) => {
                eprintln!("virtio-rng: request {number} refused: {e}");
                Answer::ok(Vec::new())
            }
        };
        bytes += answer.reply.len() as u64;
        answer
    });
    println!("virtio-rng: all clients gone after {served} requests ({bytes} bytes)");
}
