//! The protocol between the pod manager on the host and `mica-agent` inside a legacy pod.
//!
//! The two ends talk over a plain byte stream: in the guest a virtio-serial port (for example
//! `/dev/vport0p1`), on the host the Unix socket of the QEMU chardev behind that port. The stream
//! carries frames, each a 4-byte little-endian payload length followed by that many bytes of
//! payload, and each payload is one message encoded with [postcard]:
//!
//! ```text
//! +----------------+---------------------------+
//! | len: u32 (LE)  | postcard(message), len B  |
//! +----------------+---------------------------+
//! ```
//!
//! The host sends [`HostMsg`]s, the guest answers with [`GuestMsg`]s. A payload is at most
//! [`MAX_FRAME_LEN`] bytes. The encoding is positional: new variants and fields may only ever be
//! appended, and both ends must be built from the same protocol version (checked by the host
//! against [`GuestMsg::Ready`]'s `agent_version`).
//!
//! A session goes:
//!
//! 1. The agent sends [`GuestMsg::Ready`] as soon as the channel is open (and again for every
//!    [`HostMsg::Hello`]).
//! 2. The host sends requests; several [`HostMsg::Exec`] may run at once, told apart by the `id`
//!    the host chose. Everything the guest sends about a command carries its id: any number of
//!    [`GuestMsg::Stdout`] and [`GuestMsg::Stderr`] chunks, then exactly one
//!    [`GuestMsg::Exited`] (after the last chunk) — or a single [`GuestMsg::Error`] if the
//!    command could not be started. The id is free for reuse once `Exited` or `Error` arrived.
//! 3. When the host closes the channel, the agent kills everything it started.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Size in bytes of a frame's length prefix.
pub const HEADER_LEN: usize = 4;

/// The largest payload a frame may carry: 1 MiB. Larger frames are refused by both
/// [`write_frame`] and [`read_frame`].
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// A message from the host (pod manager) to the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    /// Asks the agent to (re)announce itself with [`GuestMsg::Ready`].
    Hello,
    /// Liveness check; answered by [`GuestMsg::Pong`] with the same id.
    Ping {
        /// Echoed back in the answer.
        id: u32,
    },
    /// Runs a command in the guest.
    Exec {
        /// The host-chosen id of this command; must not be in use by a running command.
        id: u32,
        /// Program and arguments. The program is looked up in `PATH` (from `env`, or the agent's
        /// default) unless it contains a slash.
        argv: Vec<String>,
        /// The complete environment of the command. The agent passes nothing of its own but a
        /// default `PATH`, which an entry here overrides.
        env: Vec<(String, String)>,
        /// Written to the command's standard input, which is then closed.
        stdin: Vec<u8>,
    },
    /// Sends a signal to the process group of a running command.
    Signal {
        /// The command's id.
        id: u32,
        /// The signal number, as on Linux (15 is SIGTERM).
        signal: i32,
    },
    /// Kills the process group of a running command with SIGKILL.
    Kill {
        /// The command's id.
        id: u32,
    },
    /// Powers the guest off: the agent kills all commands, syncs file systems and calls
    /// `reboot(RB_POWER_OFF)`. Only honoured when the agent runs as PID 1 or was started with
    /// `--allow-poweroff`; otherwise answered by a [`GuestMsg::Error`].
    Shutdown,
    /// Runs a command as a container's process: like [`HostMsg::Exec`], inside a root directory,
    /// from a working directory, as a user, and with its standard input left open for
    /// [`HostMsg::Stdin`] when asked. Answered like `Exec`.
    Spawn {
        /// The host-chosen id of this command; must not be in use by a running command.
        id: u32,
        /// Program and arguments; the program is looked up in the `PATH` of `env` inside `root`.
        argv: Vec<String>,
        /// The complete environment, as for `Exec`.
        env: Vec<(String, String)>,
        /// The directory that becomes the command's `/` (chroot); empty for the guest's own.
        root: String,
        /// The working directory, inside `root`; empty for `/`.
        cwd: String,
        /// The user id the command runs as.
        uid: u32,
        /// The group id the command runs as (it has no supplementary groups).
        gid: u32,
        /// Whether standard input stays open for [`HostMsg::Stdin`] chunks (otherwise it is
        /// closed at once).
        stdin: bool,
    },
    /// A chunk of standard input for a command spawned with `stdin: true`. An empty chunk closes
    /// its standard input.
    Stdin {
        /// The command's id.
        id: u32,
        /// The bytes; empty for end of file.
        data: Vec<u8>,
    },
}

/// A message from the guest agent to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMsg {
    /// The agent is ready for requests.
    Ready {
        /// The agent's version (its crate version).
        agent_version: String,
        /// The guest kernel's release, as `uname -r` prints it.
        kernel_release: String,
    },
    /// Answer to [`HostMsg::Ping`].
    Pong {
        /// The id of the ping.
        id: u32,
    },
    /// A chunk of a command's standard output.
    Stdout {
        /// The command's id.
        id: u32,
        /// The bytes, as the command wrote them.
        data: Vec<u8>,
    },
    /// A chunk of a command's standard error.
    Stderr {
        /// The command's id.
        id: u32,
        /// The bytes, as the command wrote them.
        data: Vec<u8>,
    },
    /// A command finished; sent after its last output chunk. Exactly one of `code` and `signal`
    /// is set.
    Exited {
        /// The command's id.
        id: u32,
        /// The exit code, if the command exited.
        code: Option<i32>,
        /// The number of the signal that killed the command, if one did.
        signal: Option<i32>,
    },
    /// A request failed. For an [`HostMsg::Exec`] it means the command did not start (no
    /// `Exited` follows), for example `exec of "nosuch" failed: No such file or directory`; for
    /// [`HostMsg::Signal`] and [`HostMsg::Kill`] that the signal was not sent (a running command
    /// goes on and still reports its `Exited`).
    Error {
        /// The id of the request it is about, or `None` if it is about no single request (an
        /// undecodable frame, a refused shutdown).
        id: Option<u32>,
        /// What went wrong, for people.
        message: String,
    },
    /// The command took `bytes` more of the standard input sent in [`HostMsg::Stdin`] chunks
    /// (they are in its pipe): the host's credit, so that input the command does not read waits
    /// on the host rather than filling the guest's memory.
    StdinTaken {
        /// The command's id.
        id: u32,
        /// How many bytes it took, since the last `StdinTaken`.
        bytes: u64,
    },
}

/// A message that can travel in a frame: [`HostMsg`] or [`GuestMsg`].
pub trait Message: Serialize + DeserializeOwned {
    /// How errors name this kind of message.
    const KIND: &'static str;
}

impl Message for HostMsg {
    const KIND: &'static str = "host message";
}

impl Message for GuestMsg {
    const KIND: &'static str = "guest message";
}

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("frame I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The payload is larger than [`MAX_FRAME_LEN`].
    #[error("frame payload of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The payload length (announced by the header when reading).
        len: usize,
        /// [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame {part}: got {got} of {expected} bytes")]
    Truncated {
        /// `"header"` or `"payload"`.
        part: &'static str,
        /// How many bytes that part has.
        expected: usize,
        /// How many of them arrived.
        got: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode {kind}: {source}")]
    Encode {
        /// [`Message::KIND`] of the message.
        kind: &'static str,
        /// What postcard said.
        source: postcard::Error,
    },
    /// The payload is not a valid message.
    #[error("frame payload of {len} bytes does not decode as a {kind}: {source}")]
    Decode {
        /// [`Message::KIND`] of the expected message.
        kind: &'static str,
        /// The payload length.
        len: usize,
        /// What postcard said.
        source: postcard::Error,
    },
    /// The payload holds a message followed by bytes that belong to none.
    #[error("frame payload of {len} bytes holds a {kind} of {used} bytes followed by garbage")]
    TrailingBytes {
        /// [`Message::KIND`] of the decoded message.
        kind: &'static str,
        /// The payload length.
        len: usize,
        /// How many bytes the message took.
        used: usize,
    },
}

impl FrameError {
    /// Whether the stream is still at a frame boundary after this error, so that the next frame
    /// can be read. True for payloads that do not decode (the frame was consumed whole), false
    /// for I/O errors, truncation and oversize frames (whose payload was not read).
    pub fn stream_usable(&self) -> bool {
        matches!(self, FrameError::Decode { .. } | FrameError::TrailingBytes { .. } | FrameError::Encode { .. })
    }
}

/// Encodes `msg` as a complete frame, length prefix included.
pub fn encode_frame<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0; HEADER_LEN];
    frame = postcard::to_extend(msg, frame).map_err(|source| FrameError::Encode { kind: M::KIND, source })?;
    let len = frame.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_LEN });
    }
    let header = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max: MAX_FRAME_LEN })?.to_le_bytes();
    frame[..HEADER_LEN].copy_from_slice(&header);
    Ok(frame)
}

/// Decodes a frame payload (without its length prefix) as one message.
pub fn decode_payload<M: Message>(payload: &[u8]) -> Result<M, FrameError> {
    let len = payload.len();
    let (msg, rest) =
        postcard::take_from_bytes(payload).map_err(|source| FrameError::Decode { kind: M::KIND, len, source })?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { kind: M::KIND, len, used: len - rest.len() });
    }
    Ok(msg)
}

/// Writes `msg` as one frame with a single `write_all`, then flushes.
pub fn write_frame<M: Message>(w: &mut impl Write, msg: &M) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame and decodes it. Returns `Ok(None)` if the stream ends cleanly before the
/// frame's first byte; a stream that ends later is [`FrameError::Truncated`].
pub fn read_frame<M: Message>(r: &mut impl Read) -> Result<Option<M>, FrameError> {
    let mut header = [0; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(None),
        HEADER_LEN => {}
        got => return Err(FrameError::Truncated { part: "header", expected: HEADER_LEN, got }),
    }
    let len = usize::try_from(u32::from_le_bytes(header)).unwrap_or(usize::MAX);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_LEN });
    }
    let mut payload = vec![0; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(FrameError::Truncated { part: "payload", expected: len, got });
    }
    decode_payload(&payload).map(Some)
}

/// Fills `buf` unless the stream ends first; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn host_msgs() -> Vec<HostMsg> {
        vec![
            HostMsg::Hello,
            HostMsg::Ping { id: 7 },
            HostMsg::Exec {
                id: u32::MAX,
                argv: vec!["sh".into(), "-c".into(), "echo ünïcode".into()],
                env: vec![("PATH".into(), "/bin".into()), ("EMPTY".into(), String::new())],
                stdin: (0..=255).collect(),
            },
            HostMsg::Exec { id: 0, argv: vec![], env: vec![], stdin: vec![] },
            HostMsg::Signal { id: 3, signal: 15 },
            HostMsg::Signal { id: 3, signal: -1 },
            HostMsg::Kill { id: 4 },
            HostMsg::Shutdown,
            HostMsg::Spawn {
                id: 9,
                argv: vec!["/bin/echo".into(), "hi".into()],
                env: vec![("PATH".into(), "/bin".into())],
                root: "/run/mica/containers/c1/rootfs".into(),
                cwd: "/tmp".into(),
                uid: 1000,
                gid: u32::MAX,
                stdin: true,
            },
            HostMsg::Stdin { id: 9, data: b"input".to_vec() },
            HostMsg::Stdin { id: 9, data: vec![] },
        ]
    }

    fn guest_msgs() -> Vec<GuestMsg> {
        vec![
            GuestMsg::Ready { agent_version: "0.1.0".into(), kernel_release: "6.12.0-amd64".into() },
            GuestMsg::Pong { id: 7 },
            GuestMsg::Stdout { id: 1, data: b"hello\n".to_vec() },
            GuestMsg::Stderr { id: 1, data: vec![0, 0xff, 10] },
            GuestMsg::Exited { id: 1, code: Some(3), signal: None },
            GuestMsg::StdinTaken { id: 9, bytes: 262_144 },
            GuestMsg::Exited { id: 2, code: None, signal: Some(9) },
            GuestMsg::Error { id: Some(5), message: "exec of \"nosuch\" failed: No such file or directory".into() },
            GuestMsg::Error { id: None, message: String::new() },
        ]
    }

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(msgs: &[M]) {
        let mut stream = Vec::new();
        for msg in msgs {
            write_frame(&mut stream, msg).unwrap();
        }
        let mut r = Cursor::new(stream);
        for msg in msgs {
            assert_eq!(read_frame::<M>(&mut r).unwrap().as_ref(), Some(msg));
        }
        assert!(read_frame::<M>(&mut r).unwrap().is_none(), "clean EOF after the last frame");
    }

    #[test]
    fn host_messages_round_trip() {
        round_trip(&host_msgs());
    }

    #[test]
    fn guest_messages_round_trip() {
        round_trip(&guest_msgs());
    }

    #[test]
    fn empty_stream_is_clean_eof() {
        assert!(read_frame::<HostMsg>(&mut Cursor::new(Vec::new())).unwrap().is_none());
    }

    /// The wire format is part of the contract between separately built host and guest.
    #[test]
    fn wire_format_is_stable() {
        assert_eq!(encode_frame(&HostMsg::Ping { id: 1 }).unwrap(), [2, 0, 0, 0, 1, 1]);
        assert_eq!(encode_frame(&HostMsg::Kill { id: 300 }).unwrap(), [3, 0, 0, 0, 4, 0xac, 0x02]);
        assert_eq!(
            encode_frame(&GuestMsg::Exited { id: 2, code: Some(3), signal: None }).unwrap(),
            [5, 0, 0, 0, 4, 2, 1, 6, 0]
        );
    }

    #[test]
    fn largest_frame_passes_and_one_more_byte_is_refused() {
        // Exec{id: 0, argv: [], env: [], stdin}: variant, id, two empty lengths, a 3-byte length.
        let overhead = 1 + 1 + 1 + 1 + 3;
        let msg = HostMsg::Exec { id: 0, argv: vec![], env: vec![], stdin: vec![0xaa; MAX_FRAME_LEN - overhead] };
        let frame = encode_frame(&msg).unwrap();
        assert_eq!(frame.len(), HEADER_LEN + MAX_FRAME_LEN);
        assert_eq!(read_frame::<HostMsg>(&mut Cursor::new(frame)).unwrap(), Some(msg));

        let msg = HostMsg::Exec { id: 0, argv: vec![], env: vec![], stdin: vec![0xaa; MAX_FRAME_LEN - overhead + 1] };
        let mut out = Vec::new();
        let err = write_frame(&mut out, &msg).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: MAX_FRAME_LEN } if len == MAX_FRAME_LEN + 1), "{err}");
        assert!(out.is_empty(), "nothing written for a refused frame");
    }

    #[test]
    fn oversize_header_is_refused_without_reading_the_payload() {
        let mut stream = u32::MAX.to_le_bytes().to_vec();
        stream.extend_from_slice(&[0; 16]);
        let err = read_frame::<HostMsg>(&mut Cursor::new(stream)).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u32::MAX as usize), "{err:?}");
        assert!(!err.stream_usable());
        assert_eq!(err.to_string(), "frame payload of 4294967295 bytes exceeds the maximum of 1048576 bytes");

        let len = u32::try_from(MAX_FRAME_LEN + 1).unwrap();
        let err = read_frame::<HostMsg>(&mut Cursor::new(len.to_le_bytes())).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn truncated_header() {
        let err = read_frame::<GuestMsg>(&mut Cursor::new(vec![5, 0])).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { part: "header", expected: 4, got: 2 }), "{err:?}");
        assert_eq!(err.to_string(), "stream ended inside a frame header: got 2 of 4 bytes");
        assert!(!err.stream_usable());
    }

    #[test]
    fn truncated_payload() {
        let mut frame = encode_frame(&GuestMsg::Stdout { id: 1, data: vec![1; 100] }).unwrap();
        let len = frame.len() - HEADER_LEN;
        frame.truncate(frame.len() - 10);
        let err = read_frame::<GuestMsg>(&mut Cursor::new(frame)).unwrap_err();
        match err {
            FrameError::Truncated { part: "payload", expected, got } => {
                assert_eq!((expected, got), (len, len - 10));
            }
            other => panic!("expected a truncated payload, got {other:?}"),
        }
    }

    #[test]
    fn garbage_payload_is_a_decode_error_and_the_stream_goes_on() {
        let mut stream = Vec::new();
        for payload in [&[0xff, 0xff, 0xff][..], &[], &[2, 0x80]] {
            stream.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
            stream.extend_from_slice(payload);
        }
        write_frame(&mut stream, &HostMsg::Ping { id: 9 }).unwrap();
        let mut r = Cursor::new(stream);
        for len in [3, 0, 2] {
            let err = read_frame::<HostMsg>(&mut r).unwrap_err();
            assert!(matches!(err, FrameError::Decode { kind: "host message", len: l, .. } if l == len), "{err:?}");
            assert!(err.stream_usable());
            assert!(err.to_string().starts_with(&format!("frame payload of {len} bytes does not decode as a host")));
        }
        assert_eq!(read_frame::<HostMsg>(&mut r).unwrap(), Some(HostMsg::Ping { id: 9 }));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut stream = vec![3, 0, 0, 0, 1, 1, 0xee];
        stream.extend_from_slice(&encode_frame(&HostMsg::Hello).unwrap());
        let mut r = Cursor::new(stream);
        let err = read_frame::<HostMsg>(&mut r).unwrap_err();
        assert!(matches!(err, FrameError::TrailingBytes { len: 3, used: 2, .. }), "{err:?}");
        assert!(err.stream_usable());
        assert_eq!(read_frame::<HostMsg>(&mut r).unwrap(), Some(HostMsg::Hello));
    }

    #[test]
    fn guest_frames_do_not_pass_for_host_frames_by_accident() {
        // Same variant index, different shape: Stdout{id, data} read as Exec{id, argv, ...}.
        let frame = encode_frame(&GuestMsg::Stdout { id: 1, data: vec![200; 3] }).unwrap();
        assert!(read_frame::<HostMsg>(&mut Cursor::new(frame)).is_err());
    }

    /// A reader that hands out one byte per call and is interrupted before each.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        interrupt: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let Some(&b) = self.data.get(self.pos) else { return Ok(0) };
            buf[0] = b;
            self.pos += 1;
            Ok(1)
        }
    }

    #[test]
    fn short_and_interrupted_reads_are_retried() {
        let mut data = Vec::new();
        for msg in guest_msgs() {
            write_frame(&mut data, &msg).unwrap();
        }
        let mut r = Trickle { data, pos: 0, interrupt: false };
        for msg in guest_msgs() {
            assert_eq!(read_frame::<GuestMsg>(&mut r).unwrap(), Some(msg));
        }
        assert_eq!(read_frame::<GuestMsg>(&mut r).unwrap(), None);
    }

    #[test]
    fn io_errors_are_passed_on() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
        }
        let err = read_frame::<HostMsg>(&mut Broken).unwrap_err();
        assert!(matches!(&err, FrameError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe), "{err:?}");
        assert_eq!(err.to_string(), "frame I/O failed: gone");
    }
}
