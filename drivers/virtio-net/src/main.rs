//! The virtio network driver: claims the first granted virtio-net device (device id 1) and
//! serves the `mica:device` net protocol on the manifest connection `net`.
//!
//! The card is driven plainly (virtio 1.2, 5.1): features VIRTIO_F_VERSION_1 and
//! VIRTIO_NET_F_MAC only (no checksum or segmentation offload, no merged receive buffers), one
//! receive queue (0) and one transmit queue (1). Every buffer, both ways, is the 12-byte
//! `virtio_net_hdr_v1` (with `num_buffers`, as modern devices always have it) followed by the
//! frame. The receive queue is kept full of device-writable buffers of 1526 bytes, each put back
//! as soon as its frame has been copied out; a frame to send is copied behind an all-zero header
//! into a free transmit buffer, which comes back free once the device has sent it.
//!
//! Frames received are queued in the driver until the client's next exchange takes them (at most
//! [`MAX_PENDING`]; past that the device's receive buffers run out and it drops frames). While an
//! exchange waits for a frame, the driver sleeps on the interrupt line with the time left.
//!
//! It serves one client at a time and ends with exit code 0 when its clients have gone; a device
//! failure ends it with exit code 1 after answering `device-error`, so that the kernel resets
//! the device.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::process::exit;
use std::time::{Duration, Instant};

use mica::hw::{HwError, IrqLine, MappedDma, Window};

use mica_device::net::{
    self, Batch, MAX_FRAME_BYTES, MIN_FRAME_BYTES, MTU, NetErrorCode, PushError, Request, Response,
};
use mica_virtio::service::{self, Answer};
// The header before each frame (`virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size,
// csum_start, csum_offset, num_buffers) is all zero on transmit: no offload asked for.
use mica_virtio::spec::extra::{
    VIRTIO_NET_CONFIG_MAC, VIRTIO_NET_HDR_V1_SIZE as NET_HDR_BYTES, VIRTIO_NET_RECEIVEQ as RX_QUEUE,
    VIRTIO_NET_TRANSMITQ as TX_QUEUE,
};
use mica_virtio::spec::feature;
use mica_virtio::spec::virtio_net::VIRTIO_NET_F_MAC;
use mica_virtio::{Buffer, Error, Transport, Virtqueue, claim_first, device_id};

/// Descriptors (and so buffers) per queue; each buffer is one descriptor.
const QUEUE_SIZE: u16 = 16;

/// A receive buffer: the header and the largest frame.
const BUFFER_BYTES: u32 = NET_HDR_BYTES + MAX_FRAME_BYTES as u32;
/// Buffers lie this far apart in their DMA buffer.
const SLOT_STRIDE: u32 = 1536;

/// The MAC address when the device has none: locally administered (bit 1 of the first byte),
/// unicast.
const FALLBACK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// Received frames the driver holds for the client at most.
const MAX_PENDING: usize = 256;

/// How long the device may take to hand back a transmit buffer when all are in flight.
const TX_TIMEOUT: Duration = Duration::from_secs(5);

const _: () = assert!(BUFFER_BYTES <= SLOT_STRIDE);

fn hw(what: &'static str) -> impl FnOnce(HwError) -> Error {
    move |source| Error::Hw { what, source }
}

/// `52:54:00:12:34:56`.
fn format_mac(mac: &[u8; 6]) -> String {
    let mut out = String::with_capacity(17);
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The oldest frames of `pending` that fit in one message, taken off it; the rest stay.
fn take_batch(pending: &mut VecDeque<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut batch = Batch::new();
    while let Some(frame) = pending.pop_front() {
        match batch.push(frame) {
            Ok(()) => {}
            Err((frame, PushError::Full)) => {
                pending.push_front(frame);
                break;
            }
            // Never queued (see `Nic::collect_rx`); dropped all the same.
            Err((_, PushError::BadLength(_))) => {}
        }
    }
    batch.into_frames()
}

/// Counters for the closing line.
#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    received: u64,
    dropped: u64,
}

/// The initialized card.
struct Nic {
    transport: Transport<Window>,
    irq: IrqLine,
    rx: Virtqueue<MappedDma>,
    tx: Virtqueue<MappedDma>,
    /// The receive buffers, one per receive descriptor, [`SLOT_STRIDE`] apart.
    rx_buffers: MappedDma,
    /// The transmit buffers, likewise.
    tx_buffers: MappedDma,
    /// For each receive chain head in flight, the slot of its buffer.
    rx_slot_of: Vec<Option<u32>>,
    /// For each transmit chain head in flight, the slot of its buffer.
    tx_slot_of: Vec<Option<u32>>,
    /// Transmit slots not in flight.
    tx_free: Vec<u32>,
    /// Whether transmit buffers were added since the last notification.
    tx_unnotified: bool,
    /// Frames received and not yet handed to the client, oldest first.
    pending: VecDeque<Vec<u8>>,
    mac: [u8; 6],
    /// Whether the MAC address came from the device.
    device_mac: bool,
    counters: Counters,
}

impl Nic {
    /// Claims, initializes and starts the device, and fills its receive queue; returns it and
    /// its name.
    fn start() -> Result<(Nic, String), Error> {
        let device = claim_first(device_id::NET)?;
        let mut transport = device.transport;
        let features = transport.init(feature(VIRTIO_NET_F_MAC))?;
        let rx = transport.create_queue(RX_QUEUE, QUEUE_SIZE, MappedDma::allocate)?;
        let tx = transport.create_queue(TX_QUEUE, QUEUE_SIZE, MappedDma::allocate)?;
        let buffers = MappedDma::allocate(u32::from(rx.size()) * SLOT_STRIDE)
            .and_then(|rx_buffers| Ok((rx_buffers, MappedDma::allocate(u32::from(tx.size()) * SLOT_STRIDE)?)))
            .map_err(|source| {
                transport.fail();
                Error::Hw { what: "allocating the frame buffers", source }
            });
        let (rx_buffers, tx_buffers) = buffers?;
        let device_mac = features & feature(VIRTIO_NET_F_MAC) != 0;
        let mut mac = FALLBACK_MAC;
        if device_mac {
            for (i, byte) in mac.iter_mut().enumerate() {
                *byte = transport.config_read8(VIRTIO_NET_CONFIG_MAC + i as u32)?;
            }
        }
        transport.driver_ok()?;
        let mut nic = Nic {
            rx_slot_of: vec![None; rx.size().into()],
            tx_slot_of: vec![None; tx.size().into()],
            tx_free: (0..u32::from(tx.size())).rev().collect(),
            transport,
            irq: device.irq,
            rx,
            tx,
            rx_buffers,
            tx_buffers,
            tx_unnotified: false,
            pending: VecDeque::new(),
            mac,
            device_mac,
            counters: Counters::default(),
        };
        for slot in 0..u32::from(nic.rx.size()) {
            nic.post_rx(slot)?;
        }
        nic.transport.notify(RX_QUEUE)?;
        Ok((nic, device.name))
    }

    /// Gives receive buffer `slot` to the device (it sees it after the next notification).
    fn post_rx(&mut self, slot: u32) -> Result<(), Error> {
        let address = self.rx_buffers.bus_address() + u64::from(slot * SLOT_STRIDE);
        let head = self.rx.add(&[Buffer::device_writable(address, BUFFER_BYTES)])?;
        self.rx_slot_of[usize::from(head)] = Some(slot);
        Ok(())
    }

    /// Copies the frames the device has received into `pending` (as long as it has room), and
    /// gives their buffers back to the device.
    fn collect_rx(&mut self) -> Result<(), Error> {
        let mut reposted = false;
        while self.pending.len() < MAX_PENDING {
            let Some(used) = self.rx.pop_used()? else { break };
            // Every head in flight has its slot: `post_rx` records it, and the queue returns
            // only heads in flight.
            let Some(slot) = self.rx_slot_of[usize::from(used.head)].take() else { continue };
            let len = used.len.min(BUFFER_BYTES).saturating_sub(NET_HDR_BYTES);
            if len as usize >= MIN_FRAME_BYTES {
                let frame = self
                    .rx_buffers
                    .read(slot * SLOT_STRIDE + NET_HDR_BYTES, len)
                    .map_err(hw("reading a received frame"))?;
                self.pending.push_back(frame);
                self.counters.received += 1;
            } else {
                self.counters.dropped += 1;
            }
            self.post_rx(slot)?;
            reposted = true;
        }
        if reposted {
            self.transport.notify(RX_QUEUE)?;
        }
        Ok(())
    }

    /// Takes back the transmit buffers the device is done with.
    fn reclaim_tx(&mut self) -> Result<(), Error> {
        while let Some(used) = self.tx.pop_used()? {
            if let Some(slot) = self.tx_slot_of[usize::from(used.head)].take() {
                self.tx_free.push(slot);
            }
        }
        Ok(())
    }

    /// Tells the device about transmit buffers added since the last time.
    fn notify_tx(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.tx_unnotified) {
            self.transport.notify(TX_QUEUE)?;
        }
        Ok(())
    }

    /// Sleeps until the device interrupts, at most `timeout`, then acknowledges the interrupt
    /// (InterruptStatus to InterruptACK, then the line). Returns at once if an interrupt came
    /// since the last acknowledgement; the caller looks at the rings again either way.
    fn wait_interrupt(&self, timeout: Duration) -> Result<(), Error> {
        self.transport.wait_interrupt(&self.irq, Some(timeout)).map(|_| ())
    }

    /// Hands one frame (checked by the protocol: 14 to 1514 bytes) to the device, waiting for a
    /// free transmit buffer when all are in flight.
    fn send(&mut self, frame: &[u8]) -> Result<(), Error> {
        let deadline = Instant::now() + TX_TIMEOUT;
        let slot = loop {
            self.reclaim_tx()?;
            if let Some(slot) = self.tx_free.pop() {
                break slot;
            }
            self.notify_tx()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(TX_TIMEOUT));
            }
            self.wait_interrupt(left)?;
            // Keep the receive queue going meanwhile.
            self.collect_rx()?;
        };
        let mut buffer = vec![0; NET_HDR_BYTES as usize + frame.len()];
        buffer[NET_HDR_BYTES as usize..].copy_from_slice(frame);
        let offset = slot * SLOT_STRIDE;
        if let Err(e) = self.tx_buffers.write(offset, &buffer) {
            self.tx_free.push(slot);
            return Err(hw("writing a frame to send")(e));
        }
        let address = self.tx_buffers.bus_address() + u64::from(offset);
        let head = match self.tx.add(&[Buffer::device_readable(address, buffer.len() as u32)]) {
            Ok(head) => head,
            Err(e) => {
                self.tx_free.push(slot);
                return Err(e);
            }
        };
        self.tx_slot_of[usize::from(head)] = Some(slot);
        self.tx_unnotified = true;
        self.counters.sent += 1;
        Ok(())
    }

    /// Sends `tx`, then returns the frames received that fit in one message, waiting up to
    /// `wait` for one when there are none.
    fn exchange(&mut self, tx: &[Vec<u8>], wait: Duration) -> Result<Vec<Vec<u8>>, Error> {
        for frame in tx {
            self.send(frame)?;
        }
        self.notify_tx()?;
        // `None`: a wait too long for the clock, as good as forever.
        let deadline = Instant::now().checked_add(wait);
        loop {
            self.collect_rx()?;
            self.reclaim_tx()?;
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
        Ok(take_batch(&mut self.pending))
    }

    /// The answer to one request; `Err` when the device failed.
    fn serve(&mut self, request: &Request) -> Result<Response, Error> {
        match request {
            Request::Info => Ok(Response::Info { mac: self.mac, mtu: MTU }),
            Request::Exchange { tx, wait_ns } => {
                Ok(Response::Frames(self.exchange(tx, Duration::from_nanos(*wait_ns))?))
            }
        }
    }
}

fn main() {
    let (mut nic, name) = match Nic::start() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("virtio-net: cannot start the device: {e}");
            exit(1);
        }
    };
    if !nic.device_mac {
        println!("virtio-net: {name} has no MAC address (no VIRTIO_NET_F_MAC): using a locally administered one");
    }
    println!("virtio-net: {name} ready: mac {}", format_mac(&nic.mac));
    let served = service::serve("virtio-net", net::CONNECTION, |number, request| match Request::decode(request) {
        Ok(request) => match nic.serve(&request) {
            Ok(response) => Answer::ok(response.encode()),
            Err(e) => {
                eprintln!("virtio-net: request {number}: the device failed: {e}");
                Answer::fatal(Response::error(NetErrorCode::DeviceError, format!("the device failed: {e}")).encode())
            }
        },
        Err(e) => Answer::ok(Response::error(NetErrorCode::BadRequest, format!("malformed request: {e}")).encode()),
    });
    let c = &nic.counters;
    println!(
        "virtio-net: all clients gone after {served} requests ({} frames sent, {} received, {} dropped)",
        c.sent, c.received, c.dropped
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_print_as_colon_separated_hex() {
        assert_eq!(format_mac(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]), "52:54:00:12:34:56");
        assert_eq!(format_mac(&FALLBACK_MAC), "02:00:00:00:00:01");
        assert_eq!(FALLBACK_MAC[0] & 0b11, 0b10, "locally administered, unicast");
    }

    #[test]
    fn buffers_fit_their_slots() {
        assert_eq!(BUFFER_BYTES, 1526);
        assert!(u32::from(QUEUE_SIZE) * SLOT_STRIDE <= 6 * 4096, "a queue's buffers take six pages");
    }

    #[test]
    fn a_batch_takes_the_oldest_frames_that_fit() {
        let mut pending: VecDeque<Vec<u8>> = (0..100u8).map(|i| vec![i; MAX_FRAME_BYTES]).collect();
        let first = take_batch(&mut pending);
        assert_eq!(first.len(), 43);
        assert_eq!(first[0][0], 0);
        assert_eq!(first[42][0], 42);
        assert_eq!(pending.front().map(|f| f[0]), Some(43), "the rest stay, in order");
        let second = take_batch(&mut pending);
        assert_eq!(second.len(), 43);
        let third = take_batch(&mut pending);
        assert_eq!(third.len(), 14);
        assert!(pending.is_empty());
        assert!(take_batch(&mut pending).is_empty());
    }
}
