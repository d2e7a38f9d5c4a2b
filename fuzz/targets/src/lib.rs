//! Mica's fuzz targets: one function per input surface that takes arbitrary bytes and must
//! neither panic nor hang, whatever they are (a parser that refuses them with an error is
//! right). libFuzzer drives them (`fuzz/libfuzzer`, `cargo xtask fuzz`); `cargo test` runs them
//! over [`seeds`] and the committed corpora and crash reproducers (`fuzz/corpus/TARGET/`,
//! `fuzz/regressions/TARGET/`), so every crash once found stays a regression test.
//!
//! The surfaces so far: the boot bundle and its manifest (what the kernel reads from the boot
//! module), the kernel command line, the boot protocols (PVH start info and its tables, the MP
//! table in low memory, the device tree), the pod protocol's frames (what the host and the
//! agent read from each other) and the agent's session serving them, the key-value store's recovery from any disk, the drivers'
//! virtqueue facing a device that writes whatever it likes into the used ring, the IPC channel
//! table and the handle tables under any sequence of operations, checked against models, the
//! HTTP server's
//! handling of a request from its bytes to its answer, the system manifest a user writes, and the
//! module store (its recovery, the modules protocol, the CPU feature lists in artifact keys),
//! mica-vmm's virtio block and console devices driven by a hostile guest, the file system
//! service under any sequence of requests, and the network stack component under any sequence
//! of socket requests and any frames off the wire.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Cursor;

use kvstore::disk::{MemDisk, SECTOR_SIZE};
use kvstore::log::Store;
use mica::hw::{ErrorCode, HwError};
use mica_bundle::{Bundle, BundleWriter, EntryKind, SystemManifest};
use mica_kernel::aarch64_boot_protocol::boot_info::BootInfo;
use mica_kernel::cmdline::KernelArgs;
use mica_kernel::x86_64_boot_protocol::{mptable, pvh};
use mica_pod_proto::{GuestMsg, HostMsg, decode_payload, encode_frame, read_frame};
use mica_virtio::{Buffer, Memory, Virtqueue};

/// A fuzz target: takes any bytes; a panic is a finding.
pub type Target = fn(&[u8]);

/// Every target, by name (the name of its libFuzzer binary and corpus directory).
pub const TARGETS: [(&str, Target); 18] = [
    ("bundle", bundle),
    ("cmdline", cmdline),
    ("pvh", pvh),
    ("mp_table", mp_table),
    ("device_tree", device_tree),
    ("pod_frames", pod_frames),
    ("kv_recovery", kv_recovery),
    ("virtqueue", virtqueue),
    ("ipc_ops", ipc_ops),
    ("caps_ops", caps_ops),
    ("http_request", http_request),
    ("manifest", manifest),
    ("module_store", module_store),
    ("vmm_block", vmm_block),
    ("vmm_console", vmm_console),
    ("agent_session", agent_session),
    ("files_service", files_service),
    ("network_stack", network_stack),
];

/// Sectors of the file system service's disk in [`files_service`] (1 MiB).
const FILES_SECTORS: u64 = 2048;

/// The next `n` bytes of `input`, taken off it, padded with zeros where it ends.
fn take_padded(n: usize, input: &mut &[u8]) -> Vec<u8> {
    let (taken, rest) = input.split_at(n.min(input.len()));
    *input = rest;
    let mut taken = taken.to_vec();
    taken.resize(n, 0);
    taken
}

/// The file system service (`components/fs`) on a fresh littlefs volume in memory, under any
/// sequence of requests of the files protocol, as a client that sends anything would make
/// them. Each step is a byte that picks the request and the bytes after it that fill it in:
/// names from a small set (so that files, directories and symbolic links meet: links to
/// each other, to themselves, above the root, absolute), the handles opens gave, offsets and
/// sizes; a step of 0xf0 or more is instead a length byte and that many raw bytes, decoded as a
/// request (and answered if they decode). Every answer must decode as itself; none may say the
/// disk failed or the volume is corrupt (the disk is memory and never fails); the service must
/// never be broken; a read of a file must give what the writes the service acknowledged put
/// there.
pub fn files_service(data: &[u8]) {
    use fs::service::Service;
    use fs::volume::Volume;
    use mica_device::files::{APPEND, FsErrorCode, OpenFlags, Request, Response, SetTime};

    const NAMES: [&str; 10] = ["a", "b", "d", "d/a", "d/e", "l", "d/l", "a/b", "", "d/e/f"];
    const TARGETS: [&str; 6] = ["a", "d", "l", "../a", "/abs", "d/l"];
    let (mut volume, formatted) = Volume::open(MemDisk::new(FILES_SECTORS)).expect("a blank memory disk opens");
    let failures = volume.failures.clone();
    let (fs, report) = volume.mount(formatted).expect("a blank disk formats and mounts");
    let mut service = Service::new(&fs, report.blocks, failures);
    let mut handles: Vec<u64> = Vec::new();
    let mut input = data;
    let next = take_padded;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let a = next(3, &mut input);
        let name = |i: u8| NAMES[usize::from(i) % NAMES.len()].to_owned();
        let handle = |i: u8| handles.get(usize::from(i) % handles.len().max(1)).copied().unwrap_or(u64::from(i));
        let request = match op {
            0xf0..=0xff => {
                let raw = next(usize::from(a[0]), &mut input);
                match Request::decode(&raw) {
                    Ok(request) => request,
                    Err(_) => continue,
                }
            }
            _ => match op % 15 {
                0 => Request::Open {
                    flags: OpenFlags::from_bits(u32::from(a[0] & 127)).unwrap_or_default(),
                    path: name(a[1]),
                },
                1 => Request::Read { handle: handle(a[0]), offset: u64::from(a[1]) * 100, len: u32::from(a[2]) * 64 },
                2 => {
                    let offset = if a[1] == 255 { APPEND } else { u64::from(a[1]) * 100 };
                    Request::Write { handle: handle(a[0]), offset, data: vec![a[2]; usize::from(a[2]) * 40] }
                }
                3 => Request::SetSize { handle: handle(a[0]), size: u64::from(a[1]) * 300 },
                4 => Request::Sync { handle: handle(a[0]) },
                5 => Request::Close { handle: handle(a[0]) },
                6 => Request::Stat { path: name(a[0]), follow: a[1].is_multiple_of(2) },
                7 => Request::StatHandle { handle: handle(a[0]) },
                8 => Request::ReadDir { start: u32::from(a[0] % 4), path: name(a[1]) },
                9 => Request::CreateDir { path: name(a[0]) },
                10 => Request::RemoveDir { path: name(a[0]) },
                11 => Request::Unlink { path: name(a[0]) },
                12 => Request::Rename { from: name(a[0]), to: name(a[1]) },
                13 => Request::Symlink { target: TARGETS[usize::from(a[0]) % TARGETS.len()].into(), path: name(a[1]) },
                _ if a[0].is_multiple_of(2) => Request::ReadLink { path: name(a[1]) },
                _ => Request::SetTimes {
                    path: name(a[1]),
                    follow: a[2].is_multiple_of(2),
                    accessed: SetTime::Now,
                    modified: SetTime::At(u64::from(a[2])),
                },
            },
        };
        let response = service.handle(request.clone());
        // An error message over the protocol's limit is cut when encoded: what decodes must
        // encode to the same bytes.
        let bytes = response.encode();
        let decoded = Response::decode(&bytes).unwrap_or_else(|e| panic!("{response:?} does not decode: {e}"));
        assert_eq!(decoded.encode(), bytes, "an answer that does not decode as itself");
        if let Response::Error { code, message } = &response {
            assert!(
                !matches!(code, FsErrorCode::Io | FsErrorCode::Corrupt),
                "{request:?} was answered {code:?} ({message}) on a disk that never fails"
            );
        }
        assert!(service.broken.is_none(), "the service broke on {request:?}: {:?}", service.broken);
        match (&request, &response) {
            (Request::Open { .. }, Response::Opened { handle, .. }) => handles.push(*handle),
            (Request::Close { handle }, Response::Done) => handles.retain(|h| h != handle),
            _ => {}
        }
    }
}

/// The network stack component (`components/netstack`) under any sequence of sockets-protocol
/// requests from two sessions, beside a second stack on the same wire, and any Ethernet frames
/// a hostile network sends it. Each step is a byte that picks what happens and the bytes after
/// it that fill it in: a request of one of the stacks' sessions (ports from a small set, so
/// that binds, listeners, connections and datagrams meet, to the other stack and to the stack's
/// own address), rounds of time with the frames crossing, a session ending, or (0xf0 and over) a
/// length byte and that many raw bytes, decoded as a request or handed to the stack as a
/// frame. Every answer must decode as itself, none may be `unknown` (each failure has its own
/// code), and readiness must answer for every socket asked about.
pub fn network_stack(data: &[u8]) {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    use mica_device::sockets::{Family, Interest, Request, Response, Shutdown, SocketErrorCode};
    use netstack::stack::{NetConfig, Stack};
    use smoltcp::time::Instant;

    const PORTS: [u16; 4] = [7, 80, 0, 49152];
    let config = |last: u8| NetConfig {
        mac: [0x02, 0, 0, 0, 0, last],
        address: Ipv4Addr::new(10, 0, 2, last),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 2, 2),
        random_seed: u64::from(last),
    };
    let mut stacks = [
        Stack::new(config(15), Instant::from_millis(0)).expect("a stack"),
        Stack::new(config(16), Instant::from_millis(0)).expect("a stack"),
    ];
    for stack in &mut stacks {
        stack.open_session(1);
        stack.open_session(2);
    }
    let mut now = 0i64;
    let mut input = data;
    let next = take_padded;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let a = next(3, &mut input);
        let which = usize::from(a[0] & 1);
        let session = u32::from((a[0] >> 1) & 1) + 1;
        let socket = u32::from(a[1] % 6);
        let port = PORTS[usize::from(a[2]) % PORTS.len()];
        // 0: the unspecified address.
        let address = |last: u8| {
            let ip = if last == 0 { Ipv4Addr::UNSPECIFIED } else { Ipv4Addr::new(10, 0, 2, last) };
            SocketAddr::V4(SocketAddrV4::new(ip, port))
        };
        let request = match op {
            0xf0..=0xff => {
                let raw = next(usize::from(a[0]), &mut input);
                match Request::decode(&raw) {
                    Ok(request) => request,
                    Err(_) => {
                        stacks[which].device.rx.push_back(raw);
                        continue;
                    }
                }
            }
            _ => match op % 16 {
                0 => match a[1] % 8 {
                    7 => Request::Tcp(Family::V6),
                    6 => Request::Udp(Family::V6),
                    4 | 5 => Request::Udp(Family::V4),
                    _ => Request::Tcp(Family::V4),
                },
                1 => Request::Bind {
                    socket,
                    address: address(if a[2].is_multiple_of(3) { 0 } else { 15 + which as u8 }),
                },
                2 => Request::Listen { socket, backlog: u32::from(a[2] % 10) },
                3 => Request::Accept { socket },
                4 => Request::Connect { socket, address: address(if a[2].is_multiple_of(2) { 15 } else { 16 }) },
                5 => Request::Connected { socket },
                6 => Request::Send { socket, data: vec![a[2]; usize::from(a[2]) * 97] },
                7 => Request::Receive { socket, max: u32::from(a[2]) * 300 },
                8 => Request::Shutdown {
                    socket,
                    how: [Shutdown::Receive, Shutdown::Send, Shutdown::Both][usize::from(a[2] % 3)],
                },
                9 => Request::Close { socket },
                10 => Request::Addresses { socket },
                11 => {
                    Request::Resolve { name: ["localhost", "10.0.2.16", "example.org"][usize::from(a[2] % 3)].into() }
                }
                12 => {
                    // Time passes, and the frames cross.
                    for _ in 0..=a[2] % 20 {
                        now += 10;
                        for stack in &mut stacks {
                            stack.poll(Instant::from_millis(now));
                        }
                        let [first, second] = &mut stacks;
                        second.device.rx.extend(first.device.tx.drain(..));
                        first.device.rx.extend(second.device.tx.drain(..));
                    }
                    continue;
                }
                13 => {
                    stacks[which].close_session(session);
                    stacks[which].open_session(session);
                    continue;
                }
                14 if a[2].is_multiple_of(2) => Request::ReceiveFrom { socket },
                14 => Request::SendTo {
                    socket,
                    address: address(if a[2].is_multiple_of(3) { 15 } else { 16 }),
                    data: vec![a[1]; usize::from(a[2]) * 256],
                },
                _ => {
                    let interests: Vec<_> = (0..6)
                        .map(|s| (s, if a[2].is_multiple_of(2) { Interest::Readable } else { Interest::Writable }))
                        .collect();
                    let ready = stacks[which].ready(session, &interests);
                    assert!(ready.iter().all(|&i| i < 6) && ready.windows(2).all(|w| w[0] < w[1]), "{ready:?}");
                    continue;
                }
            },
        };
        let response = stacks[which].handle(session, request.clone());
        let bytes = response.encode();
        let decoded = Response::decode(&bytes).unwrap_or_else(|e| panic!("{response:?} does not decode: {e}"));
        assert_eq!(decoded.encode(), bytes, "an answer that does not decode as itself");
        if let Response::Error { code: SocketErrorCode::Unknown, message } = &response {
            panic!("{request:?} was answered `unknown`: {message}");
        }
    }
}

/// What the agent answered, as far as the session's model cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AgentAnswer {
    Ready,
    Pong(u32),
    Error(Option<u32>),
    Other(String),
}

impl AgentAnswer {
    fn of(msg: &GuestMsg) -> AgentAnswer {
        match msg {
            GuestMsg::Ready { .. } => AgentAnswer::Ready,
            GuestMsg::Pong { id } => AgentAnswer::Pong(*id),
            GuestMsg::Error { id, .. } => AgentAnswer::Error(*id),
            other => AgentAnswer::Other(format!("{other:?}")),
        }
    }
}

/// Bytes written through clones of one buffer.
#[derive(Clone, Default)]
struct SharedBytes(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The host's bytes as the fuzzed session gets them, and the answers it must give, in order.
/// Every `Exec` is rewritten to run a program that does not exist (so that nothing is ever
/// started on the fuzzing machine: its spawn fails and is reported); every other byte passes as
/// it is.
fn agent_script(data: &[u8]) -> (Vec<u8>, Vec<AgentAnswer>) {
    const NO_PROGRAM: &str = "/nonexistent/mica-fuzz-agent-exec";
    let mut input = Vec::new();
    let mut expected = vec![AgentAnswer::Ready];
    let mut rest = data;
    loop {
        let before = rest;
        let frame = read_frame::<HostMsg>(&mut rest);
        let raw = &before[..before.len() - rest.len()];
        match frame {
            Ok(None) => break,
            Ok(Some(HostMsg::Exec { id, env, stdin, .. })) => {
                let exec = HostMsg::Exec { id, argv: vec![NO_PROGRAM.into()], env, stdin };
                match encode_frame(&exec) {
                    Ok(frame) => input.extend(frame),
                    Err(_) => return (input, expected),
                }
                expected.push(AgentAnswer::Error(Some(id)));
            }
            Ok(Some(HostMsg::Spawn { id, env, cwd, uid, gid, stdin, .. })) => {
                // No root: the agent would run itself (the fuzzer) to enter one.
                let spawn = HostMsg::Spawn {
                    id,
                    argv: vec![NO_PROGRAM.into()],
                    env,
                    root: String::new(),
                    cwd,
                    uid,
                    gid,
                    stdin,
                };
                match encode_frame(&spawn) {
                    Ok(frame) => input.extend(frame),
                    Err(_) => return (input, expected),
                }
                expected.push(AgentAnswer::Error(Some(id)));
            }
            Ok(Some(msg)) => {
                input.extend_from_slice(raw);
                expected.push(match msg {
                    HostMsg::Hello => AgentAnswer::Ready,
                    HostMsg::Ping { id } => AgentAnswer::Pong(id),
                    // No command ever runs, so every signal names none.
                    HostMsg::Signal { id, .. }
                    | HostMsg::Kill { id }
                    | HostMsg::Exec { id, .. }
                    | HostMsg::Spawn { id, .. }
                    | HostMsg::Stdin { id, .. } => AgentAnswer::Error(Some(id)),
                    // Refused: the fuzzed agent is never allowed to power off.
                    HostMsg::Shutdown => AgentAnswer::Error(None),
                });
            }
            Err(e) => {
                input.extend_from_slice(raw);
                expected.push(AgentAnswer::Error(None));
                if !e.stream_usable() {
                    // The session reports the broken stream and ends: nothing after it counts.
                    return (input, expected);
                }
            }
        }
    }
    (input, expected)
}

/// The pod agent's session (`mica-agent` in a pod's guest), served whatever the host sends:
/// frames of any length and content, requests of every kind, malformed and truncated ones. It
/// must write only well-formed frames and answer as the protocol says, in order: `Ready` first
/// and for each `Hello`, `Pong` with the id of each `Ping`, an error with the id for each
/// `Exec` (rewritten to a program that does not exist, see [`agent_script`]) and each signal or
/// kill of a command that does not run, an error without one for `Shutdown` (not allowed here),
/// for a frame it cannot decode, and for a broken stream, after which the session ends.
pub fn agent_session(data: &[u8]) {
    use mica_agent::session::{Config, End, serve};

    let (input, expected) = agent_script(data);
    let Ok(reaper) = mica_agent::reaper::Reaper::get() else { return };
    let output = SharedBytes::default();
    let end = serve(Box::new(Cursor::new(input)), Box::new(output.clone()), &Config { allow_poweroff: false }, reaper);
    assert!(matches!(end, End::Eof | End::Failed(_)), "the session ended with {end}");
    let written = std::mem::take(&mut *output.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let mut answers = Vec::new();
    let mut reader = written.as_slice();
    loop {
        match read_frame::<GuestMsg>(&mut reader) {
            Ok(Some(msg)) => answers.push(AgentAnswer::of(&msg)),
            Ok(None) => break,
            Err(e) => panic!("the agent wrote a malformed frame: {e}"),
        }
    }
    assert_eq!(answers, expected, "the agent's answers differ from the protocol's");
}

/// The boot bundle: its directory, every entry's data (checksummed), the manifest entry, and
/// the same bytes as a manifest alone.
pub fn bundle(data: &[u8]) {
    if let Ok(bundle) = Bundle::parse(data) {
        for entry in bundle.entries() {
            let _ = entry.data();
        }
        if let Ok(Ok(manifest)) = bundle.manifest() {
            // What decodes must encode and decode to the same.
            let again = SystemManifest::decode(&manifest.encode()).expect("a decoded manifest re-encodes");
            assert_eq!(again, manifest, "a manifest changed through encode and decode");
        }
    }
    let _ = SystemManifest::decode(data);
}

/// The kernel command line (what the boot loader passes; the kernel reads it as text).
pub fn cmdline(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = KernelArgs::parse(line);
    }
}

/// PVH: the start info, a memory-map entry and a module entry from the same bytes.
pub fn pvh(data: &[u8]) {
    let _ = pvh::StartInfo::parse(data);
    let _ = pvh::MemoryEntry::parse(data);
    let _ = pvh::Module::parse(data);
}

/// Where the MP floating pointer is put in low memory (the BIOS area the kernel searches).
const MP_AT: u64 = 0xf_0000;

/// The MP table: `data` at 0xf0000 in otherwise zeroed low memory, searched as the kernel
/// searches it.
pub fn mp_table(data: &[u8]) {
    let mut low = vec![0u8; (mptable::LOW_END - mptable::LOW_BASE) as usize];
    let start = (MP_AT - mptable::LOW_BASE) as usize;
    let len = data.len().min(low.len() - start);
    low[start..start + len].copy_from_slice(&data[..len]);
    let _ = mptable::processors(&low);
}

/// The device tree, as the aarch64 kernel reads it from QEMU's `virt` (or a damaged one).
pub fn device_tree(data: &[u8]) {
    if let Ok(info) = BootInfo::parse(0x4000_0000, data) {
        let _ = info.summary().virtio_transports().count();
        let _ = info.boot_structures();
        let _ = info.record();
    }
}

/// The pod protocol: frames one after another as the host reads the agent's and the agent the
/// host's, and the bytes as one payload.
pub fn pod_frames(data: &[u8]) {
    let mut host_side = Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<GuestMsg>(&mut host_side) {}
    let mut guest_side = Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<HostMsg>(&mut guest_side) {}
    let _ = decode_payload::<GuestMsg>(data);
    let _ = decode_payload::<HostMsg>(data);
}

/// The key-value store's disk in sectors: enough for a header and some log.
const KV_SECTORS: usize = 16;

/// The key-value store opened on a disk holding `data` (zero-padded to [`KV_SECTORS`]): it must
/// open or refuse, never panic. When it opens, a write it acknowledges must be there after a
/// power cut, whatever the disk held before.
pub fn kv_recovery(data: &[u8]) {
    let mut image = data[..data.len().min(KV_SECTORS * SECTOR_SIZE)].to_vec();
    image.resize(KV_SECTORS * SECTOR_SIZE, 0);
    let Ok((mut store, _)) = Store::open(MemDisk::from_image(image), 1) else { return };
    if store.put("fuzz", "acknowledged").is_err() {
        return;
    }
    let after = store.disk().crashed();
    let (store, _) = Store::open(after, 2).expect("a store that acknowledged a write opens after a power cut");
    assert_eq!(store.get("fuzz"), Some("acknowledged"), "an acknowledged write was lost in a power cut");
}

/// The IPC channel table (`mica-ipc`, what the kernel keeps channels in) under any sequence of
/// sends, receives, calls, replies, cancelled waits and closes on two channels, each result
/// checked against a plain model, and every handle and waiter accounted for at the end
/// ([`mica_ipc::check::run_bytes`]).
pub fn ipc_ops(data: &[u8]) {
    mica_ipc::check::run_bytes(data);
}

/// The HTTP server's handling of what a client sent on a connection (`components/httpd`): the
/// head parsed from the bytes, the route chosen, the body's length checked, and the answer made
/// (with an in-memory key-value store behind `/kv/`). Every answer must be a well-formed HTTP/1.1
/// response, and a head that parses must parse the same with only its own bytes, and not at
/// all from any shorter prefix (no answer before the head has ended).
pub fn http_request(data: &[u8]) {
    use httpd::http::{self, Head};
    use httpd::kv::fake::Fake;
    use httpd::routes;

    let answer = match http::parse(data) {
        Head::Incomplete => return,
        Head::Bad(status, why) => http::Answer::error(status, &why),
        Head::Request(request) => {
            assert!(request.head_len <= data.len(), "the head is longer than the bytes");
            assert_eq!(
                http::parse(&data[..request.head_len]),
                Head::Request(request.clone()),
                "the body changed the head"
            );
            if request.head_len > 1 {
                assert!(
                    !matches!(http::parse(&data[..request.head_len - 1]), Head::Request(_)),
                    "a head parsed before its end"
                );
            }
            let route = routes::route(&request.line, true);
            match routes::body_length(&route, &request) {
                Err(answer) => answer,
                Ok(len) => {
                    let body = &data[request.head_len..];
                    let body = &body[..len.min(body.len())];
                    let mut store = Fake::default();
                    routes::respond(&route, request.line.method == "HEAD", body, 1, Some(&mut store))
                }
            }
        }
    };
    let bytes = answer.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 ") && text.contains("\r\n\r\n"), "a malformed answer: {text:?}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a blank line");
    assert!(head.split("\r\n").all(|l| !l.contains('\n')), "a bare newline in the head: {head:?}");
    if !answer.head_only {
        assert_eq!(body.len(), answer.body.len(), "the body is not what Content-Length says");
    }
}

/// The system manifest a user writes (TOML, `mica-manifest`), read and checked as `cargo xtask`
/// does before anything is built: it is accepted or refused with an error that says something;
/// never a panic. Paths point nowhere, so a `wasm =` file or a `crate =` directory is refused as
/// missing.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let at = std::path::Path::new("/nonexistent/mica-fuzz/system.toml");
    if let Err(e) = mica_manifest::parse(text, at, std::path::Path::new("/nonexistent/mica-fuzz/components")) {
        assert!(!format!("{e:#}").is_empty(), "an error that says nothing");
    }
}

/// Sectors of the module store's disk in [`module_store`].
const MODULE_STORE_SECTORS: usize = 64;

/// The module store (`components/modstore`), where compiled code is kept across boots under its
/// artifact key: the first byte picks what the rest is.
/// - Even: a disk image (zero-padded to [`MODULE_STORE_SECTORS`] sectors) the store opens or
///   refuses; when it opens, an entry it stores must read back after a power cut.
/// - Odd: requests of the modules protocol, each a length byte and that many bytes, answered by
///   the service on a fresh store. An answer must decode as what it is; an entry read back must
///   be the bytes stored under its key (or missing, evicted); after a power cut the store opens
///   and what it returns is still right.
///
/// Either way the bytes are also read as the CPU feature list of an artifact key, for every
/// target (`CpuProfile::parse_list_for`).
pub fn module_store(data: &[u8]) {
    use mica_device::modules::{Request, Response};
    use modstore::service::Service;
    use modstore::store::ModuleStore;

    let (&mode, rest) = data.split_first().unwrap_or((&0, &[]));
    if let Ok(text) = std::str::from_utf8(rest) {
        for target in mica_engine::TARGETS {
            let _ = mica_engine::CpuProfile::parse_list_for(target, text);
        }
    }
    if mode % 2 == 0 {
        let mut image = rest[..rest.len().min(MODULE_STORE_SECTORS * SECTOR_SIZE)].to_vec();
        image.resize(MODULE_STORE_SECTORS * SECTOR_SIZE, 0);
        let Ok((mut store, _)) = ModuleStore::open(MemDisk::from_image(image), 1) else { return };
        if store.put("fuzz-key", b"compiled code").is_err() {
            return;
        }
        let (mut store, _) = ModuleStore::open(store.into_disk().crashed(), 2)
            .expect("a store that stored an entry opens after a power cut");
        assert_eq!(
            store.get("fuzz-key").ok().flatten().as_deref(),
            Some(&b"compiled code"[..]),
            "a stored entry was lost"
        );
        return;
    }
    let Ok((store, _)) = ModuleStore::open(MemDisk::new(MODULE_STORE_SECTORS as u64), 1) else { return };
    let mut service = Service::new(store);
    // What each key's stored bytes are, from the Puts the service answered `Stored`, and the
    // Puts under way.
    let mut stored: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut partial: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut input = rest;
    while let Some((&len, after)) = input.split_first() {
        let (message, next) = after.split_at(usize::from(len).min(after.len()));
        input = next;
        let (response, _) = service.answer(message);
        assert_eq!(
            Response::decode(&response.encode()).as_ref(),
            Ok(&response),
            "an answer that does not decode as itself"
        );
        match (Request::decode(message), &response) {
            (Ok(Request::Put { key, offset, data, .. }), Response::Accepted | Response::Stored) => {
                let bytes = partial.entry(key.clone()).or_default();
                bytes.truncate(usize::try_from(offset).unwrap_or(usize::MAX));
                bytes.extend_from_slice(&data);
                if response == Response::Stored {
                    stored.insert(key.clone(), partial.remove(&key).unwrap_or_default());
                }
            }
            (Ok(Request::Get { key, offset }), Response::Chunk { total, data }) => {
                if let Some(bytes) = stored.get(&key) {
                    assert_eq!(*total, bytes.len() as u64, "entry {key:?} came back with another size");
                    let at = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                    assert_eq!(
                        &bytes[at..at + data.len().min(bytes.len() - at)],
                        &data[..],
                        "entry {key:?} came back changed"
                    );
                }
            }
            _ => {}
        }
    }
    let (mut store, _) = ModuleStore::open(service.into_store().into_disk().crashed(), 2)
        .expect("the module store opens after a power cut, whatever it was asked");
    for (key, bytes) in &stored {
        if let Ok(Some(back)) = store.get(key) {
            assert_eq!(&back, bytes, "entry {key:?} changed across a power cut");
        }
    }
}

/// Guest memory of [`vmm_block`].
const VMM_MEMORY: usize = 64 * 1024;
/// The disk image of [`vmm_block`].
const VMM_DISK: u64 = 64 * 1024;

/// An interrupt line that goes nowhere.
struct NoInterrupt;

impl mica_vmm::virtio::InterruptLine for NoInterrupt {
    fn raise(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `data` as operations on a mica-vmm device behind its virtio-mmio transport, as a hostile
/// guest would drive it: write a register (any offset of the window, any value), read one (of
/// any width), write any bytes anywhere in guest memory (descriptor tables, rings, requests),
/// poll the device. With `host_ops` > 0, `op % (4 + host_ops)` of 4 and above are the host's
/// side, handed to `host` with the operation's number from 0 and the input to take bytes from.
fn drive_mmio<D: mica_vmm::virtio::VirtioDevice>(
    device: D,
    data: &[u8],
    host_ops: u8,
    mut host: impl FnMut(u8, &mut dyn FnMut() -> Option<u8>),
) {
    use mica_vmm::virtio::mmio::MmioTransport;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), VMM_MEMORY)]).expect("guest memory");
    let Ok(mut transport) = MmioTransport::new(device, memory.clone(), Box::new(NoInterrupt)) else { return };
    let mut input = data.iter().copied();
    let mut byte = move || input.next();
    while let Some(op) = byte() {
        match op % (4 + host_ops) {
            0 => {
                let offset = u64::from(byte().unwrap_or(0)) * 4;
                let value = [0; 4].map(|_| byte().unwrap_or(0));
                transport.write(offset, &value);
            }
            1 => {
                let offset = u64::from(byte().unwrap_or(0));
                let mut value = [0u8; 8];
                let width = [1, 2, 4, 8][usize::from(op / 4 % 4)];
                transport.read(offset, &mut value[..width]);
            }
            2 => {
                let at = u64::from(u16::from_le_bytes([byte().unwrap_or(0), byte().unwrap_or(0)]));
                let len = usize::from(byte().unwrap_or(0));
                let bytes: Vec<u8> = (0..len).map_while(|_| byte()).collect();
                let _ = memory.write_slice(&bytes, GuestAddress(at));
            }
            3 => transport.poll(),
            host_op => host(host_op - 4, &mut byte),
        }
    }
}

/// mica-vmm's virtio-blk device behind its virtio-mmio transport, driven as a hostile guest
/// would ([`drive_mmio`]), as Firecracker fuzzes its devices. The device must refuse what is
/// wrong (a bad descriptor chain, a request past the disk, an address outside guest memory) and
/// go on, never panic, and never touch the disk outside its image.
pub fn vmm_block(data: &[u8]) {
    use mica_vmm::virtio::block::Block;

    static IMAGE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let image = IMAGE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("mica-fuzz-vmm-block-{}.img", std::process::id()));
        let file = std::fs::File::create(&path).expect("the fuzzed disk image");
        file.set_len(VMM_DISK).expect("its size");
        path
    });
    let Ok(block) = Block::open(image, false) else { return };
    drive_mmio(block, data, 0, |_, _| {});
    let disk = std::fs::metadata(image).map(|m| m.len()).unwrap_or(0);
    assert_eq!(disk, VMM_DISK, "the device changed its image's size");
}

/// mica-vmm's multiport virtio-console device (the console port and the agent's port, with the
/// control queues that bring them up) behind its virtio-mmio transport, driven as a hostile
/// guest would ([`drive_mmio`]) while the host side pushes input into either port and connects
/// or disconnects it (input past what a port holds back, [`INPUT_BUFFER`], included). Control
/// messages that are short, name no port or carry an unknown event, descriptor chains of any
/// shape, queues used before they are ready or without MULTIPORT: the device must ignore or
/// refuse each and go on, never panic and never hang.
///
/// [`INPUT_BUFFER`]: mica_vmm::virtio::console::INPUT_BUFFER
pub fn vmm_console(data: &[u8]) {
    vmm_console_run(data);
}

/// [`vmm_console`], returning the host side of its two ports.
pub fn vmm_console_run(data: &[u8]) -> [mica_vmm::virtio::console::MemoryBackend; 2] {
    use mica_vmm::virtio::console::{Console, INPUT_BUFFER, MemoryBackend};

    let ports = [MemoryBackend::new(), MemoryBackend::new()];
    let device = Console::new(Box::new(ports[0].clone()), Box::new(ports[1].clone()));
    drive_mmio(device, data, 2, |op, byte| {
        let port = usize::from(byte().unwrap_or(0) % 2);
        match op {
            0 => {
                // Host input: up to 255 bytes, or 64 KiB of one byte at once (past the buffer).
                let len = byte().unwrap_or(0);
                let input: Vec<u8> = if len == 255 {
                    vec![byte().unwrap_or(0); INPUT_BUFFER + 1]
                } else {
                    (0..len).map_while(|_| byte()).collect()
                };
                ports[port].push_input(&input);
            }
            _ => ports[port].set_connected(byte().unwrap_or(0) % 2 == 0),
        }
    });
    ports
}

/// Operations for [`drive_mmio`], written as a guest driver's steps.
#[derive(Default)]
struct GuestOps(Vec<u8>);

impl GuestOps {
    /// Writes `value` to the register at `offset`.
    fn reg(&mut self, offset: u8, value: u32) {
        self.0.extend([0, offset / 4]);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes `bytes` (at most 255) to guest memory at `at`.
    fn mem(&mut self, at: u16, bytes: &[u8]) {
        self.0.push(2);
        self.0.extend_from_slice(&at.to_le_bytes());
        self.0.push(bytes.len() as u8);
        self.0.extend_from_slice(bytes);
    }

    /// Negotiates VERSION_1 and the device features `low` (bits 0 to 31), sets up each queue
    /// `q` of `queues` with 8 entries (descriptors at `0x1000 + q * 0x800`, available ring 0x200
    /// and used ring 0x400 after them), then sets DRIVER_OK.
    fn set_up(&mut self, low: u32, queues: u32) {
        // Status: ACKNOWLEDGE, DRIVER; VERSION_1 (feature bit 32) and `low`; FEATURES_OK.
        self.reg(0x70, 1);
        self.reg(0x70, 3);
        self.reg(0x24, 1);
        self.reg(0x20, 1);
        self.reg(0x24, 0);
        self.reg(0x20, low);
        self.reg(0x70, 0xb);
        for q in 0..queues {
            let base = Self::queue_base(q);
            self.reg(0x30, q);
            self.reg(0x38, 8);
            self.reg(0x80, u32::from(base));
            self.reg(0x90, u32::from(base) + 0x200);
            self.reg(0xa0, u32::from(base) + 0x400);
            self.reg(0x44, 1);
        }
        self.reg(0x70, 0xf);
    }

    fn queue_base(q: u32) -> u16 {
        0x1000 + q as u16 * 0x800
    }

    /// Puts descriptors `(address, length, flags, next)` in queue `q`'s table from entry 0,
    /// makes the first `heads` of them available (entries 0 to heads - 1), and notifies.
    fn post(&mut self, q: u32, descriptors: &[(u64, u32, u16, u16)], heads: u16) {
        let mut table = Vec::new();
        for &(addr, len, flags, next) in descriptors {
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&next.to_le_bytes());
        }
        let base = Self::queue_base(q);
        self.mem(base, &table);
        let mut avail = vec![0, 0];
        avail.extend_from_slice(&heads.to_le_bytes());
        (0..heads).for_each(|h| avail.extend_from_slice(&h.to_le_bytes()));
        self.mem(base + 0x200, &avail);
        self.reg(0x50, q);
    }
}

/// The guest's side of a virtio-blk read of sector 0, as [`vmm_block`]'s operations: set the
/// device up, put a request in guest memory, notify, poll.
fn vmm_block_seed() -> Vec<u8> {
    let mut ops = GuestOps::default();
    ops.set_up(0, 1);
    // The request: header (type IN, sector 0), 512 bytes of data, status byte.
    ops.mem(0x4000, &[0; 16]);
    ops.post(0, &[(0x4000, 16, 1, 1), (0x5000, 512, 3, 2), (0x6000, 1, 2, 0)], 1);
    ops.0.push(3);
    ops.0
}

/// The guest's side of a multiport console coming up, as [`vmm_console`]'s operations:
/// MULTIPORT negotiated, every queue set up, four control receive buffers posted,
/// DEVICE_READY and the agent port's PORT_READY sent, `hello` transmitted on the console, a
/// receive buffer posted on it, host input pushed, a poll.
fn vmm_console_seed() -> Vec<u8> {
    let control = |id: u32, event: u16, value: u16| {
        let mut m = id.to_le_bytes().to_vec();
        m.extend_from_slice(&event.to_le_bytes());
        m.extend_from_slice(&value.to_le_bytes());
        m
    };
    let mut ops = GuestOps::default();
    ops.set_up(1 << 1, 6);
    ops.post(2, &(0..4).map(|i| (0x8000 + i * 16, 16, 2, 0)).collect::<Vec<_>>(), 4);
    ops.mem(0x9000, &control(0, 0, 1));
    ops.mem(0x9010, &control(1, 3, 1));
    ops.post(3, &[(0x9000, 8, 0, 0)], 1);
    ops.post(3, &[(0x9000, 8, 0, 0), (0x9010, 8, 0, 0)], 2);
    ops.mem(0xa000, b"hello");
    ops.post(1, &[(0xa000, 5, 0, 0)], 1);
    ops.post(0, &[(0xb000, 64, 2, 0)], 1);
    // Host input "hi\n" for port 0, then a poll.
    ops.0.extend([4, 0, 3, b'h', b'i', b'\n', 3]);
    ops.0
}

/// The handle tables (`mica-caps`, every component's table of channel ends and hardware
/// handles) under any sequence of inserts, lookups, duplicates, removals and transfers between
/// two tables, with made-up and near-miss handles among them: each result must equal a plain
/// model's, no handle is ever issued twice, and no handle gains rights its object did not start
/// with ([`mica_caps::check::run_bytes`]).
pub fn caps_ops(data: &[u8]) {
    mica_caps::check::run_bytes(data);
}

/// Plain memory standing for a virtqueue's DMA buffer, checked as the kernel checks one: an
/// access outside it, or of a bad width, is an error value.
#[derive(Debug)]
struct RingMemory(RefCell<Vec<u8>>);

/// The bus address the fuzzed device sees the ring memory at.
const RING_BUS: u64 = 0x10_0000;

impl RingMemory {
    fn range(&self, offset: u32, len: u64) -> Result<std::ops::Range<usize>, HwError> {
        let end = u64::from(offset) + len;
        if end > self.0.borrow().len() as u64 {
            return Err(HwError::new(ErrorCode::OutOfRange, format!("{len} bytes at {offset}")));
        }
        Ok(offset as usize..end as usize)
    }

    fn aligned(offset: u32, width: u8) -> Result<(), HwError> {
        if ![1, 2, 4, 8].contains(&width) || !offset.is_multiple_of(u32::from(width)) {
            return Err(HwError::new(ErrorCode::BadWidth, format!("width {width} at {offset}")));
        }
        Ok(())
    }
}

impl Memory for RingMemory {
    fn bus_address(&self) -> u64 {
        RING_BUS
    }

    fn size(&self) -> u32 {
        self.0.borrow().len() as u32
    }

    fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        let range = self.range(offset, len.into())?;
        Ok(self.0.borrow()[range].to_vec())
    }

    fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        let range = self.range(offset, data.len() as u64)?;
        self.0.borrow_mut()[range].copy_from_slice(data);
        Ok(())
    }

    fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        Self::aligned(offset, width)?;
        let mut bytes = [0u8; 8];
        bytes[..usize::from(width)].copy_from_slice(&Memory::read(self, offset, width.into())?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        Self::aligned(offset, width)?;
        Memory::write(self, offset, &value.to_le_bytes()[..usize::from(width)])
    }
}

/// The drivers' virtqueue (`mica-virtio`) against a device that writes whatever it likes into
/// the used ring: the bytes are a queue size, then operations (the driver adds a chain, the
/// device returns an entry of its choosing or moves the used index anywhere, the driver takes
/// what came back). The queue must refuse what is wrong with an error, never panic, only ever
/// hand back a chain it has in flight, and never lose or double a descriptor.
pub fn virtqueue(data: &[u8]) {
    let mut input = data.iter().copied();
    let size = 1u16 << (input.next().unwrap_or(3) % 9);
    let memory = RingMemory(RefCell::new(vec![0; Virtqueue::<&RingMemory>::memory_size(size) as usize]));
    let Ok(mut queue) = Virtqueue::new(0, size, &memory) else { return };
    let used = (queue.device_address() - RING_BUS) as u32;
    // Chains in flight, as the driver's side sees them: head -> descriptors.
    let mut in_flight: BTreeMap<u16, u16> = BTreeMap::new();
    // The device's own next used index.
    let mut device_used = 0u16;
    while let Some(op) = input.next() {
        match op % 4 {
            0 => {
                let n = 1 + input.next().unwrap_or(0) % 4;
                let buffers: Vec<Buffer> =
                    (0..u64::from(n)).map(|i| Buffer::device_writable(0x20_0000 + 64 * i, 64)).collect();
                if let Ok(head) = queue.add(&buffers) {
                    assert!(in_flight.insert(head, n.into()).is_none(), "chain {head} handed out twice");
                }
            }
            1 => {
                // One used element of the device's choosing, then the index past it.
                let id = u32::from_le_bytes([0; 4].map(|_| input.next().unwrap_or(0)));
                let len = u32::from(input.next().unwrap_or(0));
                let slot = used + 4 + 8 * u32::from(device_used % size);
                let mut element = id.to_le_bytes().to_vec();
                element.extend_from_slice(&len.to_le_bytes());
                Memory::write(&memory, slot, &element).expect("inside the ring");
                device_used = device_used.wrapping_add(1);
                memory.store16(used + 2, device_used).expect("inside the ring");
            }
            2 => {
                device_used = u16::from_le_bytes([input.next().unwrap_or(0), input.next().unwrap_or(0)]);
                memory.store16(used + 2, device_used).expect("inside the ring");
            }
            _ => {
                if let Ok(Some(back)) = queue.pop_used() {
                    assert!(
                        in_flight.remove(&back.head).is_some(),
                        "chain {} came back but was not in flight",
                        back.head
                    );
                }
            }
        }
        let held: u16 = in_flight.values().sum();
        assert_eq!(queue.num_free() + held, size, "descriptors lost or doubled");
        assert_eq!(queue.in_flight(), in_flight.len(), "the queue and its driver disagree on what is in flight");
    }
}

/// Valid inputs to start each target from (the fuzzer mutates them), by target name.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        // Make `d`, a file `d/a` through a link `l` to `d`, write, read it back, list, rename.
        "files_service" => vec![vec![
            9, 2, 0, 0, // mkdir d
            13, 1, 5, 0, // symlink l -> d
            0, 7, 3, 0, // open d/a read, write, create
            2, 0, 0, 9, // write 360 bytes at 0
            1, 0, 0, 9, // read
            8, 0, 2, 0, // list d
            12, 3, 4, 0, // rename d/a to d/e
            6, 5, 1, 0, // stat l without following
            5, 0, 0, 0, // close
        ]],
        // Listen on port 7 (ports[0]) in the first stack, connect from the second, let the
        // frames cross, accept, send and receive.
        "network_stack" => vec![
            vec![
                0, 0, 0, 0, // first stack, session 1: socket 0
                1, 0, 0, 0, // bind 0.0.0.0:7
                2, 0, 0, 4, // listen, backlog 4
                0, 1, 0, 0, // second stack: socket 0
                4, 1, 0, 0, // connect to 10.0.2.15:7
                12, 0, 0, 5, // six rounds
                5, 1, 0, 0, // connected?
                3, 0, 0, 0, // accept: socket 1
                6, 1, 0, 3, // send 291 bytes
                12, 0, 0, 2, // three rounds
                7, 0, 1, 9, // receive
            ],
            // A UDP socket on port 80 in the first stack, a datagram to it from the second.
            vec![
                0, 0, 4, 0, // first stack, session 1: UDP socket 0
                1, 0, 0, 9, // bind 0.0.0.0:80
                0, 1, 4, 0, // second stack: UDP socket 0
                14, 1, 0, 9, // send 2,304 bytes to 10.0.2.15:80
                12, 0, 0, 5, // six rounds
                14, 0, 0, 0, // receive from
            ],
        ],
        "bundle" => {
            let mut writer = BundleWriter::new();
            let _ = writer.add(EntryKind::Wasm, "hello.wasm", b"\0asm\x0d\0\x01\0".to_vec());
            vec![writer.finish()]
        }
        "cmdline" => ["", "log=debug test=heap tick_hz=250 quiet", "virtio_mmio.device=512@0xfeb00e00:12 mica.x=y"]
            .map(|s| s.as_bytes().to_vec())
            .to_vec(),
        "pvh" => {
            let mut start = vec![0u8; pvh::START_INFO_SIZE];
            start[0..4].copy_from_slice(&pvh::START_INFO_MAGIC.to_le_bytes());
            start[4..8].copy_from_slice(&1u32.to_le_bytes());
            start[12..16].copy_from_slice(&1u32.to_le_bytes());
            start[48..52].copy_from_slice(&3u32.to_le_bytes());
            vec![start]
        }
        "mp_table" => vec![mp_table_bytes(&[(0, 3), (1, 1), (2, 0)])],
        "device_tree" => vec![include_bytes!("../../../kernel/src/arch/aarch64/testdata/virt-256m-2cpu.dtb").to_vec()],
        "pod_frames" => {
            let mut frames = Vec::new();
            for msg in [HostMsg::Hello, HostMsg::Ping { id: 7 }] {
                frames.extend(encode_frame(&msg).expect("encodes"));
            }
            let mut answers = encode_frame(&GuestMsg::Pong { id: 7 }).expect("encodes");
            answers.extend(
                encode_frame(&GuestMsg::Ready { agent_version: "0.1.0".into(), kernel_release: "6.1".into() })
                    .expect("encodes"),
            );
            vec![frames, answers]
        }
        "kv_recovery" => {
            // A store with two records, as the store itself writes it.
            let Ok((mut store, _)) = Store::open(MemDisk::new(KV_SECTORS as u64), 7) else { return Vec::new() };
            let written = store.put("colour", "blue").and_then(|()| store.put("shape", "round"));
            if written.is_err() {
                return Vec::new();
            }
            vec![store.disk().durable().to_vec(), Vec::new()]
        }
        // Size 8: add two chains, the device returns the first, the driver takes it; then a
        // bogus id, an index far ahead, and takes.
        "virtqueue" => vec![vec![3, 0, 1, 0, 2, 1, 0, 0, 0, 0, 64, 3, 1, 9, 9, 0, 0, 8, 3, 2, 200, 0, 3]],
        // Capacity 1 and 2; a send on each end, a blocking receive, a call, a reply, a close.
        "ipc_ops" => {
            vec![vec![0x15, 0x06, 0, 0x40, 0, 0, 1, 0x02, 0, 8, 0x00, 2, 16, 0x20, 1, 20, 0x02, 0, 0, 26, 0x00]]
        }
        "http_request" => [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 4\r\n\r\nblue",
            b"DELETE /kv/colour HTTP/1.0\n\n",
            b"PUT /kv/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        ]
        .map(<[u8]>::to_vec)
        .to_vec(),
        "manifest" => [
            include_str!("../../../components/drivers.toml"),
            include_str!("../../../components/services.toml"),
            include_str!("../../../qemu-tests/systems/c-hello.toml"),
        ]
        .map(|text| text.as_bytes().to_vec())
        .to_vec(),
        "module_store" => {
            use mica_device::modules::Request;
            let mut requests = vec![1u8];
            for request in [
                Request::Put { key: "wasmtime-48/x/cpu-sse3".into(), total: 6, offset: 0, data: b"abc".to_vec() },
                Request::Put { key: "wasmtime-48/x/cpu-sse3".into(), total: 6, offset: 3, data: b"def".to_vec() },
                Request::Get { key: "wasmtime-48/x/cpu-sse3".into(), offset: 1 },
                Request::Keep { keys: vec!["wasmtime-48/x/cpu-sse3".into()] },
            ] {
                let bytes = request.encode();
                requests.push(bytes.len() as u8);
                requests.extend(bytes);
            }
            vec![requests, b"\x00sse3,ssse3,sse4.1,popcnt".to_vec()]
        }
        "vmm_block" => vec![vmm_block_seed()],
        "vmm_console" => vec![vmm_console_seed()],
        "agent_session" => {
            let mut frames = Vec::new();
            for msg in [
                HostMsg::Hello,
                HostMsg::Ping { id: 7 },
                HostMsg::Exec { id: 1, argv: vec!["true".into()], env: vec![("A".into(), "b".into())], stdin: vec![1] },
                HostMsg::Signal { id: 1, signal: 15 },
                HostMsg::Kill { id: 2 },
                HostMsg::Spawn {
                    id: 3,
                    argv: vec!["true".into()],
                    env: vec![],
                    root: "/".into(),
                    cwd: "/tmp".into(),
                    uid: 0,
                    gid: 0,
                    stdin: true,
                },
                HostMsg::Stdin { id: 3, data: b"in".to_vec() },
                HostMsg::Shutdown,
            ] {
                frames.extend(encode_frame(&msg).expect("encodes"));
            }
            vec![frames]
        }
        // Capacities 3 and 2, slots retiring after 2 generations; inserts, a duplicate, a
        // transfer, a forged handle, a drain.
        "caps_ops" => {
            vec![vec![3, 2, 3, 0, 7, 0, 2, 0, 3, 0, 2, 8, 3, 0, 2, 13, 7, 0, 2, 4, 1, 0, 0, 9, 9, 9, 9, 15, 0, 0, 2]]
        }
        _ => Vec::new(),
    }
}

/// An MP floating pointer at [`MP_AT`] followed by its configuration table listing `cpus`
/// (APIC id, flags: bit 0 enabled, bit 1 bootstrap).
fn mp_table_bytes(cpus: &[(u8, u8)]) -> Vec<u8> {
    let mut entries = Vec::new();
    for &(apic, flags) in cpus {
        let mut e = [0u8; 20];
        e[1] = apic;
        e[2] = 0x14;
        e[3] = flags;
        entries.extend_from_slice(&e);
    }
    let mut table = b"PCMP".to_vec();
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]);
    table.extend_from_slice(b"MICA    MICA-FUZZ   ");
    table.extend_from_slice(&[0; 6]);
    table.extend_from_slice(&(cpus.len() as u16).to_le_bytes());
    table.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    table.extend_from_slice(&[0; 4]);
    table.extend_from_slice(&entries);
    table[7] = table.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
    let mut floating = b"_MP_".to_vec();
    floating.extend_from_slice(&((MP_AT + 16) as u32).to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    floating[10] = floating.iter().fold(0u8, |s, b| s.wrapping_add(*b)).wrapping_neg();
    floating.extend_from_slice(&table);
    floating
}
