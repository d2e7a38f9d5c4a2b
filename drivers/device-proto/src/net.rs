//! The network protocol (connection [`CONNECTION`]): Ethernet frames in and out of a network card.
//!
//! | message | bytes |
//! |---|---|
//! | [`Request::Info`] | `01` |
//! | [`Request::Exchange`] | `02`, wait: u64 (nanoseconds), count: u32, count x (length: u32, frame) |
//! | [`Request::Subscribe`] | `03` |
//! | [`Response::Info`] | `81`, MAC address: 6 bytes, MTU: u16 |
//! | [`Response::Frames`] | `82`, count: u32, count x (length: u32, frame) |
//! | [`Response::Error`] | `83`, code: u8 ([`NetErrorCode`]), length: u32, UTF-8 message |
//! | [`Response::Ready`] | `84` (a plain message, not a reply) |
//!
//! Integers are little-endian. A frame is a whole Ethernet frame from the destination address
//! through the payload, without the FCS (and without any virtio header): from
//! [`MIN_FRAME_BYTES`] to [`MAX_FRAME_BYTES`] bytes.
//!
//! One [`Request::Exchange`] both sends and receives: the driver transmits its frames, then
//! answers with every frame it has received since the last exchange, as many as fit in one
//! message; when it has none it waits up to `wait_ns` for one (0: it does not wait) and answers
//! with what came, possibly nothing. Frames the answer has no room for stay queued for the next
//! exchange. A client gathers the frames of one message with a [`Batch`], which refuses a frame
//! that would make the message larger than [`MAX_MESSAGE_BYTES`].
//!
//! A client that has more to wait for than the card (a network stack serving other components)
//! does not park in an exchange. It sends [`Request::Subscribe`] once; from then on, whenever
//! frames are waiting and it has not been told since its last exchange, the driver sends it a
//! plain message, [`Response::Ready`], on the connection. The client waits for that message
//! together with everything else (`mica:kernel/ipc.wait`), then takes the frames with an
//! exchange that does not wait.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::wire::{Reader, error_message, put_bytes};
use crate::{DecodeError, MAX_MESSAGE_BYTES};

/// The manifest connection a network driver serves.
pub const CONNECTION: &str = "net";

/// The largest frame: a 1500-byte payload (the [`MTU`]) behind the 14-byte Ethernet header.
pub const MAX_FRAME_BYTES: usize = 1514;

/// The smallest frame: the Ethernet header alone (destination, source, EtherType).
pub const MIN_FRAME_BYTES: usize = 14;

/// The largest IP packet a frame carries.
pub const MTU: u16 = 1500;

/// The longest error message, in bytes (longer ones are cut on a character boundary).
pub use crate::wire::MAX_ERROR_MESSAGE_BYTES;

/// Bytes of an exchange request before its frames: tag, wait, count.
const EXCHANGE_HEADER_BYTES: usize = 1 + 8 + 4;

/// Bytes of a frames response before its frames: tag, count.
const FRAMES_HEADER_BYTES: usize = 1 + 4;

/// The most bytes the frames of one message may take, each counted with its 4-byte length
/// ([`Batch::wire_bytes`]): what is left of an IPC message after the larger of the two headers.
pub const MAX_BATCH_BYTES: usize = MAX_MESSAGE_BYTES - EXCHANGE_HEADER_BYTES;

/// The most frames one message may carry (all of the smallest size).
pub const MAX_FRAMES: usize = MAX_BATCH_BYTES / (4 + MIN_FRAME_BYTES);

const _: () = assert!(EXCHANGE_HEADER_BYTES >= FRAMES_HEADER_BYTES);

const TAG_INFO: u8 = 0x01;
const TAG_EXCHANGE: u8 = 0x02;
const TAG_SUBSCRIBE: u8 = 0x03;
const TAG_INFO_REPLY: u8 = 0x81;
const TAG_FRAMES: u8 = 0x82;
const TAG_ERROR: u8 = 0x83;
const TAG_READY: u8 = 0x84;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The card's MAC address and MTU: answered with [`Response::Info`].
    Info,
    /// Transmits `tx`, then receives: answered with [`Response::Frames`].
    Exchange {
        /// Frames to transmit, in order (at most one [`Batch`]'s worth).
        tx: Vec<Vec<u8>>,
        /// How long to wait for a frame when none has come, in nanoseconds (0: do not wait).
        wait_ns: u64,
    },
    /// Be told when frames come ([`Response::Ready`]); answered with an empty
    /// [`Response::Frames`].
    Subscribe,
}

/// Why a request failed.
pub type NetErrorCode = crate::DriverErrorCode;

/// The driver's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The card.
    Info {
        /// Its MAC address.
        mac: [u8; 6],
        /// The largest IP packet a frame carries (always [`MTU`]).
        mtu: u16,
    },
    /// The frames received, oldest first (possibly none).
    Frames(Vec<Vec<u8>>),
    /// Frames are waiting: sent on its own, not as a reply, to a client that subscribed.
    Ready,
    /// The request failed. (A failed exchange may have sent some of its frames.)
    Error {
        /// What kind of failure.
        code: NetErrorCode,
        /// What happened, in words.
        message: String,
    },
}

impl Response {
    /// An [`Error`](Response::Error) response.
    pub fn error(code: NetErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }
}

/// Frames gathered for one message: each from [`MIN_FRAME_BYTES`] to [`MAX_FRAME_BYTES`] bytes,
/// together at most [`MAX_BATCH_BYTES`] with their lengths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    frames: Vec<Vec<u8>>,
    wire_bytes: usize,
}

/// Why [`Batch::push`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The frame is shorter than an Ethernet header or longer than [`MAX_FRAME_BYTES`]: it
    /// fits in no message.
    #[error("a frame of {0} bytes: frames are {MIN_FRAME_BYTES} to {MAX_FRAME_BYTES} bytes")]
    BadLength(usize),
    /// The message is full: the frame goes in the next one.
    #[error("the batch is full")]
    Full,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds `frame` if it is of a valid length and the message has room for it. A refused
    /// frame is handed back with the reason.
    pub fn push(&mut self, frame: Vec<u8>) -> Result<(), (Vec<u8>, PushError)> {
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&frame.len()) {
            let len = frame.len();
            return Err((frame, PushError::BadLength(len)));
        }
        if !self.has_room_for(frame.len()) {
            return Err((frame, PushError::Full));
        }
        self.wire_bytes += 4 + frame.len();
        self.frames.push(frame);
        Ok(())
    }

    /// Whether a frame of `len` bytes (of a valid length) would still fit.
    pub fn has_room_for(&self, len: usize) -> bool {
        self.wire_bytes + 4 + len <= MAX_BATCH_BYTES
    }

    /// The number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The bytes its frames take in a message, lengths included.
    pub fn wire_bytes(&self) -> usize {
        self.wire_bytes
    }

    /// The frames, in the order they were pushed.
    pub fn into_frames(self) -> Vec<Vec<u8>> {
        self.frames
    }
}

/// Appends a count and the frames, each with its length.
fn put_frames(out: &mut Vec<u8>, frames: &[Vec<u8>]) {
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for frame in frames {
        put_bytes(out, frame);
    }
}

/// Reads a count and that many frames, checking each frame's length and their total.
fn frames(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let count = r.u32("frame count")?;
    if count as usize > MAX_FRAMES {
        return Err(DecodeError::Oversized { field: "frame count", len: count.into(), max: MAX_FRAMES as u64 });
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut wire_bytes = 0;
    for _ in 0..count {
        let frame = r.bytes("frame", MAX_FRAME_BYTES)?;
        if frame.len() < MIN_FRAME_BYTES {
            return Err(DecodeError::Invalid {
                field: "frame",
                reason: format!("{} bytes is shorter than an Ethernet header ({MIN_FRAME_BYTES} bytes)", frame.len()),
            });
        }
        wire_bytes += 4 + frame.len();
        if wire_bytes > MAX_BATCH_BYTES {
            return Err(DecodeError::Oversized {
                field: "frames",
                len: wire_bytes as u64,
                max: MAX_BATCH_BYTES as u64,
            });
        }
        out.push(frame.to_vec());
    }
    Ok(out)
}

fn encode_frames(tag: u8, fixed: &[u8], frames: &[Vec<u8>]) -> Vec<u8> {
    let len = 1 + fixed.len() + 4 + frames.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(tag);
    out.extend_from_slice(fixed);
    put_frames(&mut out, frames);
    out
}

impl Request {
    /// The request as bytes. (Frames of a bad length, or more than one [`Batch`] holds,
    /// encode, and [`decode`](Request::decode) then refuses them.)
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Info => vec![TAG_INFO],
            Request::Exchange { tx, wait_ns } => encode_frames(TAG_EXCHANGE, &wait_ns.to_le_bytes(), tx),
            Request::Subscribe => vec![TAG_SUBSCRIBE],
        }
    }

    /// Decodes and checks a request: known tag, every field present, no bytes left over, each
    /// frame from [`MIN_FRAME_BYTES`] to [`MAX_FRAME_BYTES`] bytes, at most [`MAX_BATCH_BYTES`]
    /// of frames.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = match r.tag()? {
            TAG_INFO => Request::Info,
            TAG_EXCHANGE => {
                let wait_ns = r.u64("wait")?;
                Request::Exchange { tx: frames(&mut r)?, wait_ns }
            }
            TAG_SUBSCRIBE => Request::Subscribe,
            tag => return Err(DecodeError::UnknownTag { kind: "net request", tag }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The response as bytes. An error message longer than [`MAX_ERROR_MESSAGE_BYTES`] is cut
    /// short (at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Info { mac, mtu } => {
                let mut out = vec![TAG_INFO_REPLY];
                out.extend_from_slice(mac);
                out.extend_from_slice(&mtu.to_le_bytes());
                out
            }
            Response::Frames(frames) => encode_frames(TAG_FRAMES, &[], frames),
            Response::Ready => vec![TAG_READY],
            Response::Error { code, message } => error_message(TAG_ERROR, *code as u8, message),
        }
    }

    /// Decodes and checks a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let response = match r.tag()? {
            TAG_INFO_REPLY => {
                let mut mac = [0; 6];
                mac.copy_from_slice(r.take("MAC address", 6)?);
                let mut mtu = [0; 2];
                mtu.copy_from_slice(r.take("MTU", 2)?);
                Response::Info { mac, mtu: u16::from_le_bytes(mtu) }
            }
            TAG_FRAMES => Response::Frames(frames(&mut r)?),
            TAG_READY => Response::Ready,
            TAG_ERROR => {
                let (code, message) = r.error("net", NetErrorCode::from_u8)?;
                Response::Error { code, message }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "net response", tag }),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// As many frames of `len` bytes as one batch holds.
    fn full_batch(len: usize) -> Vec<Vec<u8>> {
        let mut batch = Batch::new();
        let mut seed = 0;
        while batch.push(frame(len, seed)).is_ok() {
            seed = seed.wrapping_add(1);
        }
        batch.into_frames()
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Info,
            Request::Subscribe,
            Request::Exchange { tx: vec![], wait_ns: 0 },
            Request::Exchange { tx: vec![frame(60, 1), frame(MAX_FRAME_BYTES, 2)], wait_ns: 100_000_000 },
            Request::Exchange { tx: vec![frame(MIN_FRAME_BYTES, 3)], wait_ns: u64::MAX },
            Request::Exchange { tx: full_batch(MAX_FRAME_BYTES), wait_ns: 1 },
            Request::Exchange { tx: full_batch(MIN_FRAME_BYTES), wait_ns: 1 },
        ];
        for request in requests {
            let bytes = request.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
            assert_eq!(Request::decode(&bytes), Ok(request));
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            Response::Info { mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56], mtu: MTU },
            Response::Ready,
            Response::Frames(vec![]),
            Response::Frames(vec![frame(42, 9)]),
            Response::Frames(full_batch(MAX_FRAME_BYTES)),
            Response::Frames(full_batch(64)),
            Response::error(NetErrorCode::BadRequest, "frame count is 9999"),
            Response::error(NetErrorCode::DeviceError, "ünïcödé"),
            Response::error(NetErrorCode::DeviceError, ""),
        ];
        for response in responses {
            let bytes = response.encode();
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
            assert_eq!(Response::decode(&bytes), Ok(response));
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let tx = vec![frame(14, 0)];
        let mut expected = vec![0x02, 0x10, 0x27, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 14, 0, 0, 0];
        expected.extend_from_slice(&tx[0]);
        assert_eq!(Request::Exchange { tx, wait_ns: 10_000 }.encode(), expected);
        assert_eq!(Request::Info.encode(), [0x01]);
        assert_eq!(
            Response::Info { mac: [2, 0, 0, 0, 0, 1], mtu: 1500 }.encode(),
            [0x81, 2, 0, 0, 0, 0, 1, 0xdc, 0x05]
        );
        assert_eq!(Response::Frames(vec![]).encode(), [0x82, 0, 0, 0, 0]);
        assert_eq!(Response::error(NetErrorCode::DeviceError, "x").encode(), [0x83, 2, 1, 0, 0, 0, b'x']);
    }

    #[test]
    fn a_batch_fills_one_message_exactly() {
        let big = full_batch(MAX_FRAME_BYTES);
        assert_eq!(big.len(), MAX_BATCH_BYTES / (4 + MAX_FRAME_BYTES));
        assert_eq!(big.len(), 43);
        let small = full_batch(MIN_FRAME_BYTES);
        assert_eq!(small.len(), MAX_FRAMES);
        // The largest messages of each kind still fit in one IPC message.
        for frames in [big, small] {
            assert!(Request::Exchange { tx: frames.clone(), wait_ns: 0 }.encode().len() <= MAX_MESSAGE_BYTES);
            assert!(Response::Frames(frames).encode().len() <= MAX_MESSAGE_BYTES);
        }
        let mut batch = Batch::new();
        assert!(batch.is_empty());
        batch.push(frame(100, 0)).expect("room");
        assert_eq!((batch.len(), batch.wire_bytes()), (1, 104));
        assert!(batch.has_room_for(MAX_FRAME_BYTES));
    }

    #[test]
    fn a_batch_refuses_bad_frames_and_overflow() {
        let mut batch = Batch::new();
        for len in [0, 1, MIN_FRAME_BYTES - 1, MAX_FRAME_BYTES + 1, 9000] {
            let (back, why) = batch.push(vec![0; len]).expect_err("bad length");
            assert_eq!((back.len(), why), (len, PushError::BadLength(len)));
        }
        assert!(batch.is_empty());
        for _ in 0..43 {
            batch.push(frame(MAX_FRAME_BYTES, 0)).expect("room");
        }
        let (back, why) = batch.push(frame(MAX_FRAME_BYTES, 7)).expect_err("full");
        assert_eq!((back, why), (frame(MAX_FRAME_BYTES, 7), PushError::Full));
        // A smaller frame may still fit where a large one did not.
        let room = MAX_BATCH_BYTES - batch.wire_bytes();
        assert!(room >= 4 + MIN_FRAME_BYTES, "{room}");
        batch.push(frame(room - 4, 1)).expect("exactly the rest");
        assert_eq!(batch.wire_bytes(), MAX_BATCH_BYTES);
        assert_eq!(batch.push(frame(MIN_FRAME_BYTES, 0)).map_err(|(_, why)| why), Err(PushError::Full));
        assert_eq!(PushError::BadLength(3).to_string(), "a frame of 3 bytes: frames are 14 to 1514 bytes");
    }

    #[test]
    fn every_truncation_is_refused() {
        let messages = [
            (true, Request::Exchange { tx: vec![frame(20, 1), frame(30, 2)], wait_ns: 5 }.encode()),
            (false, Response::Info { mac: [1, 2, 3, 4, 5, 6], mtu: 1500 }.encode()),
            (false, Response::Frames(vec![frame(60, 3), frame(14, 4)]).encode()),
            (false, Response::error(NetErrorCode::DeviceError, "gone").encode()),
        ];
        for (i, (request, bytes)) in messages.iter().enumerate() {
            for cut in 0..bytes.len() {
                let short = &bytes[..cut];
                let error = if *request { Request::decode(short).err() } else { Response::decode(short).err() };
                match error {
                    Some(DecodeError::Empty) => assert_eq!(cut, 0),
                    Some(DecodeError::Truncated { .. }) => {}
                    other => panic!("message {i} cut to {cut} bytes: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn oversized_and_undersized_frames_are_refused() {
        let big = Request::Exchange { tx: vec![frame(MAX_FRAME_BYTES + 1, 0)], wait_ns: 0 }.encode();
        assert_eq!(
            Request::decode(&big),
            Err(DecodeError::Oversized { field: "frame", len: 1515, max: MAX_FRAME_BYTES as u64 })
        );
        let jumbo = Response::Frames(vec![frame(60, 0), frame(9000, 0)]).encode();
        assert!(matches!(Response::decode(&jumbo), Err(DecodeError::Oversized { field: "frame", len: 9000, .. })));
        let runt = Request::Exchange { tx: vec![frame(13, 0)], wait_ns: 0 }.encode();
        let e = Request::decode(&runt).expect_err("runt");
        assert_eq!(e.to_string(), "invalid frame: 13 bytes is shorter than an Ethernet header (14 bytes)");
        let empty = Response::Frames(vec![vec![]]).encode();
        assert!(matches!(Response::decode(&empty), Err(DecodeError::Invalid { field: "frame", .. })));
    }

    #[test]
    fn too_many_frames_for_one_message_are_refused() {
        // One frame more than a batch holds: the total is over the limit.
        let mut frames = full_batch(MAX_FRAME_BYTES);
        frames.push(frame(MAX_FRAME_BYTES, 0));
        let bytes = Request::Exchange { tx: frames.clone(), wait_ns: 0 }.encode();
        assert!(bytes.len() > MAX_MESSAGE_BYTES);
        assert!(matches!(Request::decode(&bytes), Err(DecodeError::Oversized { field: "frames", .. })));
        assert!(matches!(
            Response::decode(&Response::Frames(frames).encode()),
            Err(DecodeError::Oversized { field: "frames", .. })
        ));
        // A count beyond any message is refused before anything is allocated.
        let mut huge = vec![TAG_FRAMES];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Response::decode(&huge),
            Err(DecodeError::Oversized { field: "frame count", len: u32::MAX.into(), max: MAX_FRAMES as u64 })
        );
        let mut many = vec![TAG_EXCHANGE];
        many.extend_from_slice(&0u64.to_le_bytes());
        many.extend_from_slice(&(MAX_FRAMES as u32 + 1).to_le_bytes());
        assert!(matches!(Request::decode(&many), Err(DecodeError::Oversized { field: "frame count", .. })));
        // A count that claims more frames than the message has.
        let mut lying = Response::Frames(vec![frame(20, 0)]).encode();
        lying[1] = 2;
        assert!(matches!(Response::decode(&lying), Err(DecodeError::Truncated { field: "frame", .. })));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Request::decode(&[0x42]), Err(DecodeError::UnknownTag { kind: "net request", tag: 0x42 }));
        assert_eq!(Request::decode(&[0x82]), Err(DecodeError::UnknownTag { kind: "net request", tag: 0x82 }));
        assert_eq!(Response::decode(&[0x01]), Err(DecodeError::UnknownTag { kind: "net response", tag: 0x01 }));
        assert_eq!(Request::decode(&[TAG_INFO, 0]), Err(DecodeError::TrailingBytes { count: 1 }));
        let mut exchange = Request::Exchange { tx: vec![frame(20, 0)], wait_ns: 0 }.encode();
        exchange.extend_from_slice(&[1, 2]);
        assert_eq!(Request::decode(&exchange), Err(DecodeError::TrailingBytes { count: 2 }));
        let mut error = Response::error(NetErrorCode::BadRequest, "x").encode();
        error[1] = 9;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error code", .. })));
        let mut error = Response::error(NetErrorCode::BadRequest, "x").encode();
        *error.last_mut().expect("message") = 0xff;
        assert!(matches!(Response::decode(&error), Err(DecodeError::Invalid { field: "error message", .. })));
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let Ok(Response::Error { message, .. }) =
            Response::decode(&Response::error(NetErrorCode::DeviceError, long).encode())
        else {
            panic!("an error response");
        };
        assert_eq!(message, "é".repeat(MAX_ERROR_MESSAGE_BYTES / 2));
    }
}
