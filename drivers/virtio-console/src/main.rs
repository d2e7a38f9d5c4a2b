//! The virtio console driver: claims the first granted virtio console device (device id 3) and
//! serves the `mica:device` console protocol on the manifest connection `console`.
//!
//! The device is driven plainly (virtio 1.2, 5.3): feature VIRTIO_F_VERSION_1 only, so no
//! VIRTIO_CONSOLE_F_MULTIPORT and no control queues: there is one port, port 0, with its
//! receive queue (0) and its transmit queue (1). The receive queue is kept full of
//! device-writable buffers of [`RX_BUFFER_BYTES`], each put back as soon as its bytes have been
//! copied out. A write is copied into one transmit DMA buffer of [`MAX_BYTES`], handed to the
//! device as one device-readable buffer, and answered with `Done` once the device has put it in
//! the used ring; only then is the next request taken.
//!
//! Input received is held in the driver until a read takes it (at most [`MAX_PENDING_BYTES`];
//! past that the driver stops taking the device's receive buffers, and the device keeps the
//! rest of its input until it has buffers again). While a read waits for input, or a write for
//! the device, the driver sleeps on the interrupt line with the time left.
//!
//! Several clients may share the connection; their requests are served one at a time, in the
//! order they come, each answered by its reply. It ends with exit code 0 when every client has
//! gone; a device failure ends it with exit code 1 after answering `device-error`, so that the
//! kernel resets the device.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::process::exit;
use std::time::{Duration, Instant};

use mica::hw::{HwError, IrqLine, MappedDma, Window};

use mica_device::console::{self, ConsoleErrorCode, MAX_BYTES, Request, Response};
use mica_virtio::service::{self, Answer};
// Port 0's queues.
use mica_virtio::spec::extra::{VIRTIO_CONSOLE_RECEIVEQ as RX_QUEUE, VIRTIO_CONSOLE_TRANSMITQ as TX_QUEUE};
use mica_virtio::{Buffer, Error, Transport, Virtqueue, claim_first, device_id};

/// Descriptors per queue (each buffer is one descriptor).
const QUEUE_SIZE: u16 = 8;

/// Receive buffers kept posted (at most the receive queue's size).
const RX_BUFFERS: u32 = 4;
/// Bytes per receive buffer; they lie this far apart in one DMA buffer.
const RX_BUFFER_BYTES: u32 = 1024;

/// Input bytes the driver holds for its clients at most.
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// How long the device may take to take the bytes of a write.
const TX_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(RX_BUFFERS <= QUEUE_SIZE as u32);
const _: () = assert!(MAX_PENDING_BYTES >= RX_BUFFER_BYTES as usize);

fn hw(what: &'static str) -> impl FnOnce(HwError) -> Error {
    move |source| Error::Hw { what, source }
}

/// The oldest `max` bytes of `pending` (or all of them, if fewer), taken off it.
fn take_input(pending: &mut VecDeque<u8>, max: usize) -> Vec<u8> {
    let n = max.min(pending.len());
    pending.drain(..n).collect()
}

/// Counters for the closing line.
#[derive(Debug, Default)]
struct Counters {
    written: u64,
    read: u64,
}

/// The initialized console.
struct Console {
    transport: Transport<Window>,
    irq: IrqLine,
    rx: Virtqueue<MappedDma>,
    tx: Virtqueue<MappedDma>,
    /// The receive buffers, [`RX_BUFFER_BYTES`] apart.
    rx_buffers: MappedDma,
    /// The bytes of the write in flight.
    tx_buffer: MappedDma,
    /// For each receive chain head in flight, the slot of its buffer.
    rx_slot_of: Vec<Option<u32>>,
    /// Input received and not yet read, oldest first.
    pending: VecDeque<u8>,
    counters: Counters,
}

impl Console {
    /// Claims, initializes and starts the device, and posts its receive buffers; returns it and
    /// its name.
    fn start() -> Result<(Console, String), Error> {
        let device = claim_first(device_id::CONSOLE)?;
        let mut transport = device.transport;
        // VIRTIO_F_VERSION_1 only: no size, no multiport, no emergency write.
        transport.init(0)?;
        let rx = transport.create_queue(RX_QUEUE, QUEUE_SIZE, MappedDma::allocate)?;
        let tx = transport.create_queue(TX_QUEUE, QUEUE_SIZE, MappedDma::allocate)?;
        let slots = RX_BUFFERS.min(rx.size().into());
        let buffers = MappedDma::allocate(slots * RX_BUFFER_BYTES)
            .and_then(|rx_buffers| Ok((rx_buffers, MappedDma::allocate(MAX_BYTES as u32)?)))
            .map_err(|source| {
                transport.fail();
                Error::Hw { what: "allocating the data buffers", source }
            });
        let (rx_buffers, tx_buffer) = buffers?;
        transport.driver_ok()?;
        let mut console = Console {
            rx_slot_of: vec![None; rx.size().into()],
            transport,
            irq: device.irq,
            rx,
            tx,
            rx_buffers,
            tx_buffer,
            pending: VecDeque::new(),
            counters: Counters::default(),
        };
        for slot in 0..slots {
            console.post_rx(slot)?;
        }
        console.transport.notify(RX_QUEUE)?;
        Ok((console, device.name))
    }

    /// Gives receive buffer `slot` to the device (it sees it after the next notification).
    fn post_rx(&mut self, slot: u32) -> Result<(), Error> {
        let address = self.rx_buffers.bus_address() + u64::from(slot * RX_BUFFER_BYTES);
        let head = self.rx.add(&[Buffer::device_writable(address, RX_BUFFER_BYTES)])?;
        self.rx_slot_of[usize::from(head)] = Some(slot);
        Ok(())
    }

    /// Copies the input the device has received into `pending` (as long as it has room for a
    /// whole buffer), and gives the buffers back to the device.
    fn collect_rx(&mut self) -> Result<(), Error> {
        let mut reposted = false;
        while self.pending.len() + RX_BUFFER_BYTES as usize <= MAX_PENDING_BYTES {
            let Some(used) = self.rx.pop_used()? else { break };
            // Every head in flight has its slot: `post_rx` records it, and the queue returns
            // only heads in flight.
            let Some(slot) = self.rx_slot_of[usize::from(used.head)].take() else { continue };
            let len = used.len.min(RX_BUFFER_BYTES);
            if len > 0 {
                let bytes = self.rx_buffers.read(slot * RX_BUFFER_BYTES, len).map_err(hw("reading received input"))?;
                self.pending.extend(bytes);
            }
            self.post_rx(slot)?;
            reposted = true;
        }
        if reposted {
            self.transport.notify(RX_QUEUE)?;
        }
        Ok(())
    }

    /// Sleeps until the device interrupts, at most `timeout`, then acknowledges the interrupt
    /// (InterruptStatus to InterruptACK, then the line). Returns at once if an interrupt came
    /// since the last acknowledgement; the caller looks at the rings again either way.
    fn wait_interrupt(&self, timeout: Duration) -> Result<(), Error> {
        self.transport.wait_interrupt(&self.irq, Some(timeout)).map(|_| ())
    }

    /// Hands `data` (at most [`MAX_BYTES`], checked by the protocol) to the device and waits
    /// until it has taken it (the used ring has the chain back). Input keeps being collected
    /// meanwhile.
    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.tx_buffer.write(0, data).map_err(hw("writing the bytes to send"))?;
        // The only transmit chain in flight, so the one that comes back (the queue checks that).
        self.tx.add(&[Buffer::device_readable(self.tx_buffer.bus_address(), data.len() as u32)])?;
        self.transport.notify(TX_QUEUE)?;
        let deadline = Instant::now() + TX_TIMEOUT;
        loop {
            self.collect_rx()?;
            if self.tx.pop_used()?.is_some() {
                self.counters.written += data.len() as u64;
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(TX_TIMEOUT));
            }
            self.wait_interrupt(left)?;
        }
    }

    /// The input received, at most `max` bytes, waiting up to `wait` for some when there is
    /// none.
    fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<u8>, Error> {
        // `None`: a wait too long for the clock, as good as forever.
        let deadline = Instant::now().checked_add(wait);
        loop {
            self.collect_rx()?;
            if !self.pending.is_empty() || wait.is_zero() {
                break;
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => wait,
            };
            if left.is_zero() {
                break;
            }
            self.wait_interrupt(left)?;
        }
        let input = take_input(&mut self.pending, max);
        self.counters.read += input.len() as u64;
        // Room was made: take what the device returned meanwhile.
        self.collect_rx()?;
        Ok(input)
    }

    /// The answer to one request; `Err` when the device failed.
    fn serve(&mut self, request: &Request) -> Result<Response, Error> {
        match request {
            Request::Write(data) => self.write(data).map(|()| Response::Done),
            Request::Read { max, wait_ns } => {
                Ok(Response::Data(self.read(*max as usize, Duration::from_nanos(*wait_ns))?))
            }
        }
    }
}

fn main() {
    let (mut console, name) = match Console::start() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("virtio-console: cannot start the device: {e}");
            exit(1);
        }
    };
    println!("virtio-console: {name} ready");
    let served =
        service::serve("virtio-console", console::CONNECTION, |number, request| match Request::decode(request) {
            Ok(request) => match console.serve(&request) {
                Ok(response) => Answer::ok(response.encode()),
                Err(e) => {
                    eprintln!("virtio-console: request {number}: the device failed: {e}");
                    Answer::fatal(
                        Response::error(ConsoleErrorCode::DeviceError, format!("the device failed: {e}")).encode(),
                    )
                }
            },
            Err(e) => {
                Answer::ok(Response::error(ConsoleErrorCode::BadRequest, format!("malformed request: {e}")).encode())
            }
        });
    let c = &console.counters;
    println!("virtio-console: all clients gone after {served} requests ({} bytes written, {} read)", c.written, c.read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_taken_oldest_first_up_to_max() {
        let mut pending: VecDeque<u8> = b"hello world".iter().copied().collect();
        assert_eq!(take_input(&mut pending, 5), b"hello");
        assert_eq!(take_input(&mut pending, 100), b" world", "fewer than max: all of it");
        assert!(pending.is_empty());
        assert!(take_input(&mut pending, 8).is_empty());
    }

    #[test]
    fn buffers_fit_the_dma_limit_of_the_example() {
        // Two queues of a page each, the receive buffers, the transmit buffer: within 128 KiB.
        let pages = |bytes: u32| bytes.div_ceil(4096);
        let queue = pages(Virtqueue::<MappedDma>::memory_size(QUEUE_SIZE));
        let total = 2 * queue + pages(RX_BUFFERS * RX_BUFFER_BYTES) + pages(MAX_BYTES as u32);
        assert_eq!(total, 11);
        assert!(total * 4096 <= 128 * 1024);
    }
}
