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
//! [`MAX_PENDING`]; past that the device's receive buffers run out and it drops frames).
//!
//! The driver waits on its connection and its interrupt line at once (`mica:kernel/ipc.wait`):
//! an exchange that waits for a frame is held (at most one; a second one answers the first
//! with what there is) while other requests are served, and answered when a frame comes or its
//! wait ends. A client that subscribed is sent `ready` when frames wait for it.
//!
//! It ends with exit code 0 when its clients have gone; a device failure ends it with exit code
//! 1 after answering `device-error`, so that the kernel resets the device.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::process::exit;
use std::time::{Duration, Instant};

use mica::hw::{HwError, IrqLine, MappedDma, Window};
use mica::ipc::{self, Channel, ErrorCode};

use mica_device::net::{
    self, Batch, MAX_FRAME_BYTES, MIN_FRAME_BYTES, MTU, NetErrorCode, PushError, Request, Response,
};
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

    /// Sends `tx`, then takes in what the device has received and sent.
    fn transmit(&mut self, tx: &[Vec<u8>]) -> Result<(), Error> {
        for frame in tx {
            self.send(frame)?;
        }
        self.notify_tx()?;
        self.collect_rx()?;
        self.reclaim_tx()
    }
}

/// An exchange held until a frame comes or its wait ends.
struct Held {
    call: u64,
    /// `None`: a wait too long for the clock, as good as forever.
    deadline: Option<Instant>,
}

/// The driver's side of the connection: the card, the exchange held, the subscription.
struct Server {
    nic: Nic,
    channel: Channel,
    held: Option<Held>,
    /// A client asked to be told when frames come.
    subscribed: bool,
    /// It was told, and has not exchanged since.
    told: bool,
    served: u64,
    /// The last answer, sent with the next wait.
    outgoing: Option<(u64, Vec<u8>)>,
}

/// How the serving loop ends.
enum End {
    /// Every client has gone.
    ClientsGone,
    /// The device failed (answered where a request was waiting).
    Device(Error),
}

impl Server {
    /// Answers `call` with the next wait (an answer already waiting to go goes now); a caller
    /// that has gone is its own problem.
    fn reply(&mut self, call: u64, response: &Response) {
        if let Some((earlier, bytes)) = self.outgoing.replace((call, response.encode()))
            && let Err(e) = self.channel.reply(earlier, &bytes)
        {
            println!("virtio-net: reply to call {earlier} not delivered: {e}");
        }
    }

    /// Sends the answer still waiting to go, if any.
    fn flush(&mut self) {
        if let Some((call, bytes)) = self.outgoing.take()
            && let Err(e) = self.channel.reply(call, &bytes)
        {
            println!("virtio-net: reply to call {call} not delivered: {e}");
        }
    }

    /// Answers the held exchange with what has come, if anything has or its wait is over;
    /// else tells a subscribed client that frames wait.
    fn deliver(&mut self) {
        let due = self.held.as_ref().is_some_and(|h| h.deadline.is_some_and(|d| Instant::now() >= d));
        if let Some(held) = self.held.take_if(|_| !self.nic.pending.is_empty() || due) {
            let frames = take_batch(&mut self.nic.pending);
            self.reply(held.call, &Response::Frames(frames));
            self.told = false;
        }
        if self.held.is_none() && self.subscribed && !self.told && !self.nic.pending.is_empty() {
            match self.channel.try_send(&Response::Ready.encode()) {
                Ok(()) => self.told = true,
                // A full queue already tells it; a client gone is seen at the next receive.
                Err(e) if matches!(e.code, ErrorCode::Full | ErrorCode::PeerClosed) => {}
                Err(e) => println!("virtio-net: cannot tell the client that frames wait: {e}"),
            }
        }
    }

    /// Serves one request.
    fn serve(&mut self, call: u64, bytes: &[u8]) -> Result<(), Error> {
        self.served += 1;
        let request = match Request::decode(bytes) {
            Ok(request) => request,
            Err(e) => {
                let response = Response::error(NetErrorCode::BadRequest, format!("malformed request: {e}"));
                self.reply(call, &response);
                return Ok(());
            }
        };
        match request {
            Request::Info => self.reply(call, &Response::Info { mac: self.nic.mac, mtu: MTU }),
            Request::Subscribe => {
                self.subscribed = true;
                self.told = false;
                self.reply(call, &Response::Frames(Vec::new()));
            }
            Request::Exchange { tx, wait_ns } => {
                // A second exchange while one is held: the first gets what there is.
                if let Some(held) = self.held.take() {
                    let frames = take_batch(&mut self.nic.pending);
                    self.reply(held.call, &Response::Frames(frames));
                }
                self.nic.transmit(&tx)?;
                self.told = false;
                if self.nic.pending.is_empty() && wait_ns > 0 {
                    let deadline = Instant::now().checked_add(Duration::from_nanos(wait_ns));
                    self.held = Some(Held { call, deadline });
                } else {
                    let frames = take_batch(&mut self.nic.pending);
                    self.reply(call, &Response::Frames(frames));
                }
            }
        }
        Ok(())
    }

    /// Serves until every client has gone or the device fails.
    fn run(&mut self) -> End {
        let handles = [self.channel.raw(), self.nic.irq.handle()];
        loop {
            if let Err(e) = self.nic.collect_rx().and_then(|()| self.nic.reclaim_tx()) {
                return End::Device(e);
            }
            self.deliver();
            let timeout =
                self.held.as_ref().and_then(|h| h.deadline).map(|d| d.saturating_duration_since(Instant::now()));
            // The last answer goes out with the wait, which then hands the CPU to its caller.
            let waited = match self.outgoing.take() {
                Some((call, bytes)) => {
                    let (replied, ready) = self.channel.reply_and_wait(call, &bytes, &handles, timeout);
                    if let Err(e) = replied {
                        println!("virtio-net: reply to call {call} not delivered: {e}");
                    }
                    ready
                }
                None => ipc::wait(&handles, timeout),
            };
            let ready = match waited {
                Ok(ready) => ready,
                Err(e) => {
                    eprintln!("virtio-net: waiting failed: {e}");
                    exit(1);
                }
            };
            if ready.contains(&1)
                && let Err(e) = self.nic.wait_interrupt(Duration::ZERO)
            {
                return End::Device(e);
            }
            if !ready.contains(&0) {
                continue;
            }
            let received = match self.channel.try_recv() {
                Ok(received) => received,
                Err(e) if e.code == ErrorCode::Empty => continue,
                Err(e) if e.code == ErrorCode::PeerClosed => return End::ClientsGone,
                Err(e) => {
                    eprintln!("virtio-net: receive failed: {e}");
                    exit(1);
                }
            };
            let Some(call) = received.call else { continue };
            if let Err(e) = self.serve(call, &received.message.bytes) {
                let response = Response::error(NetErrorCode::DeviceError, format!("the device failed: {e}"));
                self.reply(call, &response);
                self.flush();
                return End::Device(e);
            }
        }
    }
}

fn main() {
    let (nic, name) = match Nic::start() {
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
    let channel = match Channel::connect(net::CONNECTION) {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("virtio-net: cannot connect {:?}: {e}", net::CONNECTION);
            exit(1);
        }
    };
    let mut server = Server { nic, channel, held: None, subscribed: false, told: false, served: 0, outgoing: None };
    match server.run() {
        End::ClientsGone => {
            let c = &server.nic.counters;
            println!(
                "virtio-net: all clients gone after {} requests ({} frames sent, {} received, {} dropped)",
                server.served, c.sent, c.received, c.dropped
            );
        }
        End::Device(e) => {
            if let Some(held) = server.held.take() {
                server.reply(held.call, &Response::error(NetErrorCode::DeviceError, format!("the device failed: {e}")));
            }
            server.flush();
            eprintln!("virtio-net: the device failed: {e}; ending, so that the device is reset");
            exit(1);
        }
    }
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
