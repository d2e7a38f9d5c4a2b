//! The virtio block driver: claims the first granted virtio-blk device (device id 2) and serves
//! the `mica:device` block protocol on the manifest connection `block`.
//!
//! Each read, write or flush is one three-part chain on the device's request queue (virtio 1.2,
//! 5.2.6): a 16-byte header the device reads (type, reserved, sector), the data (the device
//! writes it for a read, reads it for a write; absent for a flush) and a one-byte status the
//! device writes. Ranges and the read-only flag are checked before the device is touched. One
//! request is in flight at a time.
//!
//! The rings, the header and the data live in DMA buffers mapped into the driver's own memory
//! (`MappedDma`): the driver writes descriptors and reads the used ring with plain loads and
//! stores, and a read is answered straight from the data buffer the device wrote (the response's
//! five header bytes are written right before the data), so its bytes are copied once, by the
//! kernel, from the device's memory to the client. It ends when every client has gone; a device failure ends it
//! with exit code 1 after answering `device-error`, so that the kernel resets the device.
//!
//! Fault injection for the supervision tests: with `CRASH_AFTER=N` in its environment, the
//! first instance (`MICA_RESTARTS=0`) panics on its N-th request after handing it to the
//! device and before answering it, as a driver with a bug would, mid-request.

#![forbid(unsafe_code)]

use std::process::exit;
use std::time::Duration;

use mica::hw::{HwError, IrqLine, MappedDma, Window};

use mica_device::block::{
    self, BlockErrorCode, DATA_HEADER_BYTES, MAX_DATA_BYTES, Request, RequestRef, Response, SECTOR_SIZE,
};
use mica_virtio::service::{self, Answer, Reply};
use mica_virtio::spec::extra::{VIRTIO_BLK_CONFIG_CAPACITY, VIRTIO_BLK_OUTHDR_SIZE, VIRTIO_BLK_REQUESTQ};
use mica_virtio::spec::feature;
use mica_virtio::spec::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use mica_virtio::{Buffer, Error, Transport, Virtqueue, claim_first, device_id};

/// Written to the status byte before a request: a device that completes it writes another.
const STATUS_UNWRITTEN: u8 = 0xff;

/// Where the status byte lives in the header buffer (right after the request header).
const STATUS_OFFSET: u32 = VIRTIO_BLK_OUTHDR_SIZE;

/// Where the data lies in the data buffer: after one page, whose last bytes hold a read
/// response's header.
const DATA_AT: u32 = 4096;

/// Descriptors in the request queue (a request needs at most 3).
const QUEUE_SIZE: u16 = 16;

/// How long the device may take to complete a request.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// The initialized disk.
struct Disk {
    transport: Transport<Window>,
    irq: IrqLine,
    queue: Virtqueue<MappedDma>,
    /// The request header at 0 and the status byte at [`STATUS_OFFSET`].
    header: MappedDma,
    /// The data of one request at [`DATA_AT`], a read response's header right before it.
    data: MappedDma,
    sectors: u64,
    read_only: bool,
    flush: bool,
    /// Panic once the next request is handed to the device (`CRASH_AFTER`).
    crash_after_submit: bool,
}

/// The outcome of a request that failed: an answer for the client, and whether the device is
/// now in an unknown state (the driver then ends).
struct Failure {
    response: Response,
    fatal: bool,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            response: Response::error(BlockErrorCode::DeviceError, format!("the device failed: {e}")),
            fatal: true,
        }
    }
}

fn refuse(code: BlockErrorCode, message: String) -> Failure {
    Failure { response: Response::Error { code, message }, fatal: false }
}

fn hw(what: &'static str) -> impl FnOnce(HwError) -> Error {
    move |source| Error::Hw { what, source }
}

impl Disk {
    /// Claims, initializes and starts the device; returns it and its name.
    fn start() -> Result<(Disk, String), Error> {
        let device = claim_first(device_id::BLOCK)?;
        let mut transport = device.transport;
        let features = transport.init(feature(VIRTIO_BLK_F_RO) | feature(VIRTIO_BLK_F_FLUSH))?;
        let queue = transport.create_queue(VIRTIO_BLK_REQUESTQ, QUEUE_SIZE, MappedDma::allocate)?;
        let buffers = MappedDma::allocate(4096)
            .and_then(|header| Ok((header, MappedDma::allocate(DATA_AT + MAX_DATA_BYTES as u32)?)))
            .map_err(|source| {
                transport.fail();
                Error::Hw { what: "allocating the request buffers", source }
            });
        let (header, data) = buffers?;
        let sectors = transport.config_read64(VIRTIO_BLK_CONFIG_CAPACITY)?;
        transport.driver_ok()?;
        let disk = Disk {
            transport,
            irq: device.irq,
            queue,
            header,
            data,
            sectors,
            read_only: features & feature(VIRTIO_BLK_F_RO) != 0,
            flush: features & feature(VIRTIO_BLK_F_FLUSH) != 0,
            crash_after_submit: false,
        };
        Ok((disk, device.name))
    }

    /// The answer to one request.
    fn serve(&mut self, request: &RequestRef<'_>) -> Result<Reply, Failure> {
        let response = match request {
            RequestRef::Info => {
                Response::Info { sectors: self.sectors, sector_size: SECTOR_SIZE, read_only: self.read_only }
            }
            RequestRef::Read { sector, count } => {
                self.check_range(*sector, u64::from(*count))?;
                let len = count * SECTOR_SIZE;
                let buffer = Buffer::device_writable(self.data.bus_address() + u64::from(DATA_AT), len);
                self.submit(VIRTIO_BLK_T_IN, *sector, Some(buffer))?;
                // The response is the header written right before the data the device wrote.
                let header_at = DATA_AT - DATA_HEADER_BYTES;
                self.data.write(header_at, &block::data_header(len)).map_err(hw("writing the response header"))?;
                let span = self.data.span(header_at, DATA_HEADER_BYTES + len).map_err(hw("the response's span"))?;
                return Ok(Reply::Span(span));
            }
            RequestRef::Write { sector, data } => {
                if self.read_only {
                    return Err(refuse(BlockErrorCode::ReadOnly, "the disk is read-only".into()));
                }
                self.check_range(*sector, (data.len() / SECTOR_SIZE as usize) as u64)?;
                self.data.write(DATA_AT, data).map_err(hw("writing the data buffer"))?;
                let buffer = Buffer::device_readable(self.data.bus_address() + u64::from(DATA_AT), data.len() as u32);
                self.submit(VIRTIO_BLK_T_OUT, *sector, Some(buffer))?;
                Response::Done
            }
            // Without VIRTIO_BLK_F_FLUSH the device has no write cache: a completed write is
            // already durable.
            RequestRef::Flush if !self.flush => Response::Done,
            RequestRef::Flush => {
                self.submit(VIRTIO_BLK_T_FLUSH, 0, None)?;
                Response::Done
            }
        };
        Ok(Reply::Bytes(response.encode()))
    }

    /// Refuses sectors `sector..sector + count` unless they lie on the disk.
    fn check_range(&self, sector: u64, count: u64) -> Result<(), Failure> {
        match sector.checked_add(count) {
            Some(end) if end <= self.sectors => Ok(()),
            _ => Err(refuse(
                BlockErrorCode::OutOfRange,
                format!(
                    "{count} sector(s) from sector {sector} go past the end of the disk ({} sectors)",
                    self.sectors
                ),
            )),
        }
    }

    /// Hands one request to the device and waits for it; the status decides the outcome.
    fn submit(&mut self, kind: u32, sector: u64, data: Option<Buffer>) -> Result<(), Failure> {
        let mut header = [0u8; VIRTIO_BLK_OUTHDR_SIZE as usize];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.header.write(0, &header).map_err(hw("writing the request header"))?;
        self.header.store(STATUS_OFFSET, 1, STATUS_UNWRITTEN.into()).map_err(hw("writing the status byte"))?;
        let base = self.header.bus_address();
        let mut chain = vec![Buffer::device_readable(base, VIRTIO_BLK_OUTHDR_SIZE)];
        chain.extend(data);
        chain.push(Buffer::device_writable(base + u64::from(STATUS_OFFSET), 1));
        // The only chain in flight, so the one that comes back (the queue checks that).
        self.queue.add(&chain)?;
        self.transport.notify(self.queue.index())?;
        if self.crash_after_submit {
            panic!("virtio-blk: crashing on purpose (CRASH_AFTER) with a request at the device");
        }
        self.queue.wait_used(&self.transport, &self.irq, Some(DEVICE_TIMEOUT))?;
        let status = self.header.load(STATUS_OFFSET, 1).map_err(hw("reading the status byte"))? as u32;
        match status {
            VIRTIO_BLK_S_OK => Ok(()),
            VIRTIO_BLK_S_IOERR => Err(refuse(BlockErrorCode::DeviceError, format!("I/O error at sector {sector}"))),
            VIRTIO_BLK_S_UNSUPP => {
                Err(refuse(BlockErrorCode::Unsupported, format!("the device does not support request type {kind}")))
            }
            other => Err(Failure {
                response: Response::error(
                    BlockErrorCode::DeviceError,
                    format!("the device answered status {other:#x}"),
                ),
                fatal: true,
            }),
        }
    }
}

fn main() {
    // A component that is never restarted has no `MICA_RESTARTS`: its one instance is the first.
    let first_instance = std::env::var("MICA_RESTARTS").map_or(true, |n| n == "0");
    let crash_after: Option<u64> =
        std::env::var("CRASH_AFTER").ok().and_then(|v| v.parse().ok()).filter(|_| first_instance);
    let (mut disk, name) = match Disk::start() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("virtio-blk: cannot start the device: {e}");
            exit(1);
        }
    };
    println!("virtio-blk: {name} ready: {} sectors of {SECTOR_SIZE} bytes", disk.sectors);
    if disk.read_only {
        println!("virtio-blk: {name} is read-only");
    }
    let served = service::serve("virtio-blk", block::CONNECTION, |number, request| {
        let crash = crash_after == Some(number);
        if crash {
            println!("virtio-blk: request {number}: crashing on purpose (CRASH_AFTER={number}) before answering");
        }
        disk.crash_after_submit = crash;
        let (reply, fatal) = match Request::decode_borrowed(request) {
            Ok(request) => match disk.serve(&request) {
                Ok(reply) => (reply, false),
                Err(Failure { response, fatal }) => {
                    if let (true, Response::Error { message, .. }) = (fatal, &response) {
                        eprintln!("virtio-blk: request {number}: {message}");
                    }
                    (Reply::Bytes(response.encode()), fatal)
                }
            },
            Err(e) => {
                let response = Response::error(BlockErrorCode::BadRequest, format!("malformed request: {e}"));
                (Reply::Bytes(response.encode()), false)
            }
        };
        if crash {
            // The request did not reach the device (an info request, or one refused): crash
            // before answering all the same.
            panic!("virtio-blk: crashing on purpose (CRASH_AFTER) before answering");
        }
        Answer { reply, fatal }
    });
    println!("virtio-blk: all clients gone after {served} requests");
}
