//! virtio-console (virtio 1.2 section 5.3) with two ports: port 0 a console (the guest's `hvc0`)
//! and port 1 a named port, [`AGENT_PORT_NAME`], the channel to the pod agent (`mica-agent
//! --port-name mica.agent` finds it through `/sys/class/virtio-ports/*/name`).
//!
//! Offered features: `VIRTIO_F_VERSION_1` and `VIRTIO_CONSOLE_F_MULTIPORT`, with `max_nr_ports` =
//! 2 in the configuration space. The queues are laid out as multiport has them (section 5.3.2):
//! 0/1 port 0 receive/transmit, 2/3 control receive/transmit, 4/5 port 1 receive/transmit.
//!
//! With MULTIPORT the ports come up through the control queues (section 5.3.6.2):
//!
//! - the driver's DEVICE_READY is answered with a DEVICE_ADD for each port;
//! - a port's PORT_READY with CONSOLE_PORT (port 0) or PORT_NAME (port 1), then PORT_OPEN if its
//!   host side is connected ([`PortBackend::connected`]); a later change of that connection is
//!   reported with PORT_OPEN 1 or 0 from [`Console::poll_input`];
//! - the driver's PORT_OPEN (a guest process opened or closed the port) is tracked: input is only
//!   given to a port the guest has open ([`Console::guest_open`]).
//!
//! A driver that does not accept MULTIPORT gets port 0 alone, open from the start.
//!
//! The host side of each port is a byte stream, a [`PortBackend`]: [`MemoryBackend`] (shared
//! buffers) or [`UnixSocketBackend`] (one client at a time on a listening socket). What the guest
//! transmits goes to the backend as soon as the driver notifies the transmit queue. Input travels
//! the other way when the VMM calls [`MmioTransport::poll`](super::mmio::MmioTransport::poll)
//! (which calls [`Console::poll_input`]): the device takes what the backend has (up to
//! [`INPUT_BUFFER`] bytes per port held back) and fills the receive buffers the driver posted,
//! and again as the driver posts more. Control messages for which the driver has no receive buffer
//! yet wait (at most [`CONTROL_BACKLOG`] of them) until it posts some.
//!
//! Control messages from the driver that are short, name a port that does not exist, or carry an
//! unknown event are logged and ignored.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::{VirtioDevice, Wait};
use crate::error::{Error, Result};

/// Feature bit: the device has several ports and the control queues (section 5.3.3).
pub const VIRTIO_CONSOLE_F_MULTIPORT: u32 = 1;
/// The console port (`hvc0` in the guest).
pub const CONSOLE_PORT: u32 = 0;
/// The agent's named port.
pub const AGENT_PORT: u32 = 1;
/// The name of port 1, as `mica-agent --port-name` and the QEMU pods (`virtserialport,name=`)
/// call it.
pub const AGENT_PORT_NAME: &str = "mica.agent";
/// The number of ports (`max_nr_ports`).
pub const NR_PORTS: u32 = 2;
/// Each queue's maximum size.
pub const QUEUE_SIZE: u16 = 128;
/// The most host input a port holds back while the guest has no receive buffer for it (or has
/// not opened the port); the backend is not read further until there is room.
pub const INPUT_BUFFER: usize = 64 * 1024;
/// The most control messages waiting for control receive buffers; beyond that the oldest are
/// dropped (a driver that never posts any does not make the device grow).
pub const CONTROL_BACKLOG: usize = 64;

/// Control events (`struct virtio_console_control`'s `event`, section 5.3.6.2).
pub mod event {
    /// Driver: it is ready (value 1) or failed (0).
    pub const DEVICE_READY: u16 = 0;
    /// Device: port `id` exists.
    pub const DEVICE_ADD: u16 = 1;
    /// Device: port `id` is gone.
    pub const DEVICE_REMOVE: u16 = 2;
    /// Driver: port `id` is ready (1) or could not be added (0).
    pub const PORT_READY: u16 = 3;
    /// Device: port `id` is a console.
    pub const CONSOLE_PORT: u16 = 4;
    /// Device: a console's size changed.
    pub const RESIZE: u16 = 5;
    /// Both: port `id` was opened (1) or closed (0) on the sender's side.
    pub const PORT_OPEN: u16 = 6;
    /// Device: port `id`'s name follows the header.
    pub const PORT_NAME: u16 = 7;
}

/// The control message header's size (`id` u32, `event` u16, `value` u16, little-endian).
const CONTROL_HEADER: usize = 8;
/// The configuration space: `cols`, `rows` (u16), `max_nr_ports`, `emerg_wr` (u32).
const CONFIG_SIZE: usize = 12;
/// The control receive and transmit queues.
const CONTROL_RX: usize = 2;
const CONTROL_TX: usize = 3;
/// How much is read from a backend at once.
const READ_CHUNK: usize = 4096;

/// The host side of a port: a byte stream.
pub trait PortBackend: Send + fmt::Debug {
    /// Takes `data`, which the guest transmitted on the port. It must not block; what cannot be
    /// delivered is the backend's to buffer or drop.
    fn write(&mut self, data: &[u8]);

    /// Moves up to `buf.len()` bytes of pending input for the guest into `buf`, without
    /// blocking; returns how many (0: nothing pending now).
    fn read_input(&mut self, buf: &mut [u8]) -> usize;

    /// Whether someone is connected on the host side (reported to the guest with PORT_OPEN;
    /// Linux makes reads of an unconnected port return end of file and writes wait). The
    /// default: always.
    fn connected(&mut self) -> bool {
        true
    }

    /// What to wait on before the backend can have more input (`want_input`: the port has room
    /// for it) or take held output. The default: nothing (a backend whose input, if any, is
    /// pushed by the host program itself).
    fn waits(&self, want_input: bool) -> Vec<Wait> {
        let _ = want_input;
        Vec::new()
    }
}

/// An output-only backend: what the guest writes goes to a writer (the VMM's stdout, a log
/// file); it has no input. A writer that fails is dropped with a warning, and later output with it.
pub struct WriterBackend {
    writer: Option<Box<dyn Write + Send>>,
}

impl fmt::Debug for WriterBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterBackend").field("open", &self.writer.is_some()).finish()
    }
}

impl WriterBackend {
    /// Output to `writer`.
    pub fn new(writer: Box<dyn Write + Send>) -> WriterBackend {
        WriterBackend { writer: Some(writer) }
    }
}

impl PortBackend for WriterBackend {
    fn write(&mut self, data: &[u8]) {
        if let Some(writer) = self.writer.as_mut()
            && let Err(e) = writer.write_all(data).and_then(|()| writer.flush())
        {
            log::warn!("virtio-console: console output stopped: {e}");
            self.writer = None;
        }
    }

    fn read_input(&mut self, _buf: &mut [u8]) -> usize {
        0
    }
}

/// A backend in memory: what the guest wrote accumulates, and input is whatever was pushed. Its
/// clones share the buffers, so one can be given to the device and another kept.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    state: Arc<Mutex<MemoryState>>,
}

#[derive(Debug)]
struct MemoryState {
    output: Vec<u8>,
    input: VecDeque<u8>,
    connected: bool,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// An empty, connected backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend {
            state: Arc::new(Mutex::new(MemoryState { output: Vec::new(), input: VecDeque::new(), connected: true })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `data` as input for the guest.
    pub fn push_input(&self, data: &[u8]) {
        self.lock().input.extend(data);
    }

    /// The input not yet taken by the device.
    pub fn pending_input(&self) -> usize {
        self.lock().input.len()
    }

    /// Takes what the guest wrote so far.
    pub fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().output)
    }

    /// Sets whether the host side counts as connected.
    pub fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
    }
}

impl PortBackend for MemoryBackend {
    fn write(&mut self, data: &[u8]) {
        self.lock().output.extend_from_slice(data);
    }

    fn read_input(&mut self, buf: &mut [u8]) -> usize {
        let mut state = self.lock();
        let len = buf.len().min(state.input.len());
        for (byte, input) in buf.iter_mut().zip(state.input.drain(..len)) {
            *byte = input;
        }
        len
    }

    fn connected(&mut self) -> bool {
        self.lock().connected
    }
}

/// A listening Unix stream socket: one client at a time (others wait in the listen backlog
/// until it leaves); what the client writes is the guest's input, what the guest writes goes to
/// the client. Nothing blocks: the client is accepted, read and written to when the device asks
/// (its writes and [`PortBackend::read_input`] / [`PortBackend::connected`] from
/// [`Console::poll_input`]). Output the client does not take at once is held, up to
/// [`UnixSocketBackend::MAX_UNSENT`] bytes (then dropped, with a warning); output while no client
/// is connected is dropped. The socket file is removed when the backend is dropped.
#[derive(Debug)]
pub struct UnixSocketBackend {
    path: PathBuf,
    listener: UnixListener,
    client: Option<UnixStream>,
    unsent: Vec<u8>,
}

impl UnixSocketBackend {
    /// The most guest output held for a client that does not read it.
    pub const MAX_UNSENT: usize = 1 << 20;

    /// Listens on `path`. A socket already there (left by an earlier run) is replaced; any other
    /// kind of file is an error.
    pub fn bind(path: impl Into<PathBuf>) -> Result<UnixSocketBackend> {
        let path = path.into();
        let error = |what| {
            let path = path.clone();
            move |source| Error::ConsoleSocket { what, path, source }
        };
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => fs::remove_file(&path).map_err(error("remove the stale"))?,
            Ok(_) => {
                return Err(error("bind")(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(&path).map_err(error("bind"))?;
        listener.set_nonblocking(true).map_err(error("make non-blocking"))?;
        Ok(UnixSocketBackend { path, listener, client: None, unsent: Vec::new() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts a waiting client if none is connected.
    fn accept(&mut self) {
        if self.client.is_some() {
            return;
        }
        match self.listener.accept() {
            Ok((stream, _)) => match stream.set_nonblocking(true) {
                Ok(()) => {
                    log::info!("virtio-console: client connected to {}", self.path.display());
                    self.client = Some(stream);
                }
                Err(e) => log::warn!("virtio-console: client of {} dropped: {e}", self.path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("virtio-console: cannot accept a client on {}: {e}", self.path.display()),
        }
    }

    fn disconnect(&mut self, why: &str) {
        if self.client.take().is_some() {
            log::info!("virtio-console: client of {} gone: {why}", self.path.display());
        }
        self.unsent.clear();
    }

    /// Writes what the client can take of the held output.
    fn flush(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let mut sent = 0;
        let mut failure = None;
        while sent < self.unsent.len() {
            match client.write(&self.unsent[sent..]) {
                Ok(0) => {
                    failure = Some("it takes no more data".to_string());
                    break;
                }
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        self.unsent.drain(..sent);
        if let Some(why) = failure {
            self.disconnect(&why);
        }
    }
}

impl PortBackend for UnixSocketBackend {
    fn write(&mut self, data: &[u8]) {
        self.accept();
        if self.client.is_none() {
            log::debug!("virtio-console: {} bytes of output dropped: no client on {}", data.len(), self.path.display());
            return;
        }
        let room = Self::MAX_UNSENT.saturating_sub(self.unsent.len());
        if data.len() > room {
            log::warn!(
                "virtio-console: the client of {} does not read: {} bytes of output dropped",
                self.path.display(),
                data.len() - room
            );
        }
        self.unsent.extend_from_slice(&data[..data.len().min(room)]);
        self.flush();
    }

    fn read_input(&mut self, buf: &mut [u8]) -> usize {
        self.accept();
        self.flush();
        let Some(client) = self.client.as_mut() else {
            return 0;
        };
        loop {
            match client.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    self.disconnect("end of file");
                    return 0;
                }
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
                Err(e) => {
                    self.disconnect(&e.to_string());
                    return 0;
                }
            }
        }
    }

    fn connected(&mut self) -> bool {
        self.accept();
        self.client.is_some()
    }

    fn waits(&self, want_input: bool) -> Vec<Wait> {
        let wait = |fd: io::Result<OwnedFd>, readable, writable| match fd {
            Ok(fd) => Some(Wait { fd, readable, writable }),
            Err(e) => {
                log::warn!("virtio-console: cannot duplicate a descriptor of {}: {e}", self.path.display());
                None
            }
        };
        let wait = match &self.client {
            // A client waiting to be accepted.
            None => wait(self.listener.try_clone().map(OwnedFd::from), true, false),
            Some(client) if want_input || !self.unsent.is_empty() => {
                wait(client.try_clone().map(OwnedFd::from), want_input, !self.unsent.is_empty())
            }
            // Nothing to do until the guest takes held input: not even a hang-up matters yet.
            Some(_) => None,
        };
        wait.into_iter().collect()
    }
}

impl Drop for UnixSocketBackend {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::debug!("virtio-console: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// One port: its backend and what the driver said about it.
#[derive(Debug)]
struct Port {
    backend: Box<dyn PortBackend>,
    name: Option<&'static str>,
    is_console: bool,
    /// The driver sent PORT_READY 1.
    ready: bool,
    /// A guest process has the port open (PORT_OPEN from the driver).
    guest_open: bool,
    /// The host connection state last reported with PORT_OPEN.
    host_open_reported: bool,
    /// The host side was connected when last polled.
    was_connected: bool,
    /// Host input not yet in a receive buffer.
    input: VecDeque<u8>,
}

impl Port {
    fn new(backend: Box<dyn PortBackend>, name: Option<&'static str>, is_console: bool) -> Port {
        Port {
            backend,
            name,
            is_console,
            ready: false,
            guest_open: false,
            host_open_reported: false,
            was_connected: false,
            input: VecDeque::new(),
        }
    }

    /// The driver's state of the port goes (held input stays for the next driver).
    fn reset(&mut self) {
        self.ready = false;
        self.guest_open = false;
        self.host_open_reported = false;
    }

    /// Reads what the backend has, up to [`INPUT_BUFFER`] bytes held.
    fn pull_input(&mut self) {
        let mut chunk = [0u8; READ_CHUNK];
        while self.input.len() < INPUT_BUFFER {
            let room = (INPUT_BUFFER - self.input.len()).min(READ_CHUNK);
            let n = self.backend.read_input(&mut chunk[..room]);
            if n == 0 {
                break;
            }
            self.input.extend(&chunk[..n.min(room)]);
        }
    }
}

/// The receive and transmit queues of port `port` (section 5.3.2).
fn port_queues(port: u32) -> (usize, usize) {
    let rx = if port == 0 { 0 } else { 2 + 2 * port as usize };
    (rx, rx + 1)
}

/// A control message: the header, then `extra` (a port name).
fn control_message(id: u32, event: u16, value: u16, extra: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTROL_HEADER + extra.len());
    message.extend_from_slice(&id.to_le_bytes());
    message.extend_from_slice(&event.to_le_bytes());
    message.extend_from_slice(&value.to_le_bytes());
    message.extend_from_slice(extra);
    message
}

/// Whether the driver should hear about buffers used in `queue`.
fn notify_driver(queue: &mut Queue, memory: &GuestMemoryMmap) -> bool {
    queue.needs_notification(memory).unwrap_or(true)
}

/// The virtio-console device: a console port and the agent's port.
#[derive(Debug)]
pub struct Console {
    ports: Vec<Port>,
    multiport: bool,
    /// Control messages waiting for a control receive buffer.
    control_out: VecDeque<Vec<u8>>,
}

impl Console {
    /// A console whose port 0 (the console, `hvc0`) is `console` on the host side and port 1
    /// ([`AGENT_PORT_NAME`]) is `agent`.
    pub fn new(console: Box<dyn PortBackend>, agent: Box<dyn PortBackend>) -> Console {
        Console {
            ports: vec![Port::new(console, None, true), Port::new(agent, Some(AGENT_PORT_NAME), false)],
            multiport: false,
            control_out: VecDeque::new(),
        }
    }

    /// Whether the driver accepted MULTIPORT.
    pub fn multiport(&self) -> bool {
        self.multiport
    }

    /// Whether the driver said port `port` is ready (PORT_READY); port 0 without MULTIPORT is.
    pub fn port_ready(&self, port: u32) -> bool {
        self.ports.get(port as usize).is_some_and(|p| p.ready)
    }

    /// Whether the guest has port `port` open (PORT_OPEN; port 0 without MULTIPORT always).
    pub fn guest_open(&self, port: u32) -> bool {
        self.ports.get(port as usize).is_some_and(|p| p.guest_open)
    }

    /// Moves host input into the guest: for each port, reads what its backend has and fills the
    /// receive buffers the driver posted (only for ports the guest has open), and reports changes
    /// of the backends' connections with PORT_OPEN. Returns whether the driver should be
    /// interrupted. The VMM calls it through
    /// [`MmioTransport::poll`](super::mmio::MmioTransport::poll), periodically or when a
    /// backend has input; it never blocks.
    pub fn poll_input(&mut self, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        let mut interrupt = false;
        for id in 0..self.ports.len() {
            self.ports[id].pull_input();
            let port = &mut self.ports[id];
            let connected = port.backend.connected();
            if !connected && port.was_connected && !port.input.is_empty() {
                // The host side that sent it is gone: its input must not reach whoever connects
                // next (a new agent session would read the old one's requests).
                log::debug!(
                    "virtio-console: port {id}: {} bytes of a departed client's input dropped",
                    port.input.len()
                );
                port.input.clear();
            }
            port.was_connected = connected;
            if self.multiport && port.ready && connected != port.host_open_reported {
                port.host_open_reported = connected;
                self.send_control(control_message(id as u32, event::PORT_OPEN, u16::from(connected), &[]));
            }
            interrupt |= self.fill_receive(id, queues, memory);
        }
        interrupt | self.flush_control(queues, memory)
    }

    /// Queues a control message for the driver.
    fn send_control(&mut self, message: Vec<u8>) {
        if self.control_out.len() >= CONTROL_BACKLOG {
            log::warn!("virtio-console: the driver posts no control receive buffers: oldest control message dropped");
            self.control_out.pop_front();
        }
        self.control_out.push_back(message);
    }

    /// Puts waiting control messages in the driver's control receive buffers.
    fn flush_control(&mut self, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(CONTROL_RX).filter(|q| q.ready()) else {
            return false;
        };
        let mut used = false;
        while !self.control_out.is_empty() {
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                break;
            };
            let head = chain.head_index();
            let message = self.control_out.pop_front().unwrap_or_default();
            let len = match Writer::new(memory, chain) {
                Ok(mut writer) if writer.available_bytes() >= message.len() => match writer.write_all(&message) {
                    Ok(()) => message.len(),
                    Err(e) => {
                        log::warn!("virtio-console: control message lost: cannot write buffer {head}: {e}");
                        writer.bytes_written()
                    }
                },
                Ok(writer) => {
                    log::warn!(
                        "virtio-console: control message of {} bytes lost: buffer {head} has {} writable bytes",
                        message.len(),
                        writer.available_bytes()
                    );
                    0
                }
                Err(e) => {
                    log::warn!("virtio-console: control message lost: buffer {head}: {e}");
                    0
                }
            };
            if let Err(e) = queue.add_used(memory, head, len as u32) {
                log::warn!("virtio-console: cannot return control receive buffer {head}: {e}");
                break;
            }
            used = true;
        }
        used && notify_driver(queue, memory)
    }

    /// Fills port `id`'s receive buffers with its held input, if the guest has it open.
    fn fill_receive(&mut self, id: usize, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        let port = &mut self.ports[id];
        if !port.guest_open || port.input.is_empty() {
            return false;
        }
        let (rx, _) = port_queues(id as u32);
        let Some(queue) = queues.get_mut(rx).filter(|q| q.ready()) else {
            return false;
        };
        let mut used = false;
        while !port.input.is_empty() {
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                break;
            };
            let head = chain.head_index();
            let len = match Writer::new(memory, chain) {
                Ok(mut writer) => {
                    let len = writer.available_bytes().min(port.input.len());
                    let (front, back) = port.input.as_slices();
                    let (front, back) = (&front[..len.min(front.len())], &back[..len - len.min(front.len())]);
                    match writer.write_all(front).and_then(|()| writer.write_all(back)) {
                        Ok(()) => {}
                        Err(e) => log::warn!("virtio-console: port {id}: cannot fill receive buffer {head}: {e}"),
                    }
                    let written = writer.bytes_written();
                    port.input.drain(..written);
                    if written == 0 {
                        log::warn!("virtio-console: port {id}: receive buffer {head} has no writable bytes");
                    }
                    written
                }
                Err(e) => {
                    log::warn!("virtio-console: port {id}: receive buffer {head} returned unused: {e}");
                    0
                }
            };
            if let Err(e) = queue.add_used(memory, head, len as u32) {
                log::warn!("virtio-console: port {id}: cannot return receive buffer {head}: {e}");
                break;
            }
            used = true;
        }
        used && notify_driver(queue, memory)
    }

    /// Hands what the guest transmitted on port `id` to its backend.
    fn transmit(&mut self, id: usize, queue: &mut Queue, memory: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            match Reader::new(memory, chain) {
                Ok(mut reader) => {
                    let mut data = vec![0u8; reader.available_bytes()];
                    match reader.read_exact(&mut data) {
                        Ok(()) => self.ports[id].backend.write(&data),
                        Err(e) => log::warn!("virtio-console: port {id}: cannot read transmit buffer {head}: {e}"),
                    }
                }
                Err(e) => log::warn!("virtio-console: port {id}: transmit buffer {head} skipped: {e}"),
            }
            if let Err(e) = queue.add_used(memory, head, 0) {
                log::warn!("virtio-console: port {id}: cannot return transmit buffer {head}: {e}");
                break;
            }
            used = true;
        }
        used && notify_driver(queue, memory)
    }

    /// Takes the driver's control messages and acts on them.
    fn receive_control(&mut self, queue: &mut Queue, memory: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let mut header = [0u8; CONTROL_HEADER];
            match Reader::new(memory, chain) {
                Ok(mut reader) => match reader.read_exact(&mut header) {
                    Ok(()) => self.control(header),
                    Err(_) => log::warn!(
                        "virtio-console: control message in buffer {head} ignored: {} bytes, not {CONTROL_HEADER}",
                        reader.bytes_read() + reader.available_bytes()
                    ),
                },
                Err(e) => log::warn!("virtio-console: control buffer {head} ignored: {e}"),
            }
            if let Err(e) = queue.add_used(memory, head, 0) {
                log::warn!("virtio-console: cannot return control transmit buffer {head}: {e}");
                break;
            }
            used = true;
        }
        used && notify_driver(queue, memory)
    }

    /// Acts on one control message from the driver.
    fn control(&mut self, header: [u8; CONTROL_HEADER]) {
        let id = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let kind = u16::from_le_bytes([header[4], header[5]]);
        let value = u16::from_le_bytes([header[6], header[7]]);
        if kind == event::DEVICE_READY {
            if value != 1 {
                log::warn!("virtio-console: the driver failed to initialize (DEVICE_READY {value})");
                return;
            }
            for port in 0..NR_PORTS {
                self.send_control(control_message(port, event::DEVICE_ADD, 1, &[]));
            }
            return;
        }
        let Some(port) = self.ports.get_mut(id as usize) else {
            log::warn!("virtio-console: control event {kind} for port {id}, which does not exist, ignored");
            return;
        };
        match kind {
            event::PORT_READY if value == 1 => {
                port.ready = true;
                let mut messages = Vec::new();
                if port.is_console {
                    messages.push(control_message(id, event::CONSOLE_PORT, 1, &[]));
                }
                if let Some(name) = port.name {
                    messages.push(control_message(id, event::PORT_NAME, 1, name.as_bytes()));
                }
                port.host_open_reported = port.backend.connected();
                if port.host_open_reported {
                    messages.push(control_message(id, event::PORT_OPEN, 1, &[]));
                }
                for message in messages {
                    self.send_control(message);
                }
            }
            event::PORT_READY => log::warn!("virtio-console: the driver could not add port {id} (PORT_READY {value})"),
            event::PORT_OPEN => {
                port.guest_open = value != 0;
                log::debug!("virtio-console: port {id} {} by the guest", if value != 0 { "opened" } else { "closed" });
            }
            other => log::warn!("virtio-console: control event {other} (value {value}) for port {id} ignored"),
        }
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_CONSOLE_F_MULTIPORT
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2 + 2 * NR_PORTS as usize]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_SIZE];
        config[4..8].copy_from_slice(&NR_PORTS.to_le_bytes());
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn ack_features(&mut self, features: u64) {
        self.multiport = features & 1 << VIRTIO_CONSOLE_F_MULTIPORT != 0;
        if !self.multiport {
            // Port 0 alone, without control messages: it is there and open from the start.
            self.ports[0].ready = true;
            self.ports[0].guest_open = true;
        }
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        match index {
            CONTROL_RX | CONTROL_TX if !self.multiport => {
                log::warn!("virtio-console: notification of control queue {index} without MULTIPORT ignored");
                false
            }
            CONTROL_RX => self.flush_control(queues, memory),
            CONTROL_TX => {
                let interrupt = self.receive_control(&mut queues[CONTROL_TX], memory);
                let mut opened = false;
                for id in 0..self.ports.len() {
                    opened |= self.fill_receive(id, queues, memory);
                }
                interrupt | opened | self.flush_control(queues, memory)
            }
            _ => {
                let port = if index < CONTROL_RX { 0 } else { (index - 2) / 2 };
                if port >= self.ports.len() || (port > 0 && !self.multiport) {
                    log::warn!("virtio-console: notification of queue {index}, no port's without MULTIPORT, ignored");
                    return false;
                }
                if index.is_multiple_of(2) {
                    self.fill_receive(port, queues, memory)
                } else {
                    self.transmit(port, &mut queues[index], memory)
                }
            }
        }
    }

    fn poll(&mut self, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        self.poll_input(queues, memory)
    }

    fn waits(&self) -> Vec<Wait> {
        self.ports.iter().flat_map(|port| port.backend.waits(port.input.len() < INPUT_BUFFER)).collect()
    }

    fn reset(&mut self) {
        self.multiport = false;
        self.control_out.clear();
        for port in &mut self.ports {
            port.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{Read as _, Write as _};
    use std::time::Duration;

    use virtio_bindings::virtio_mmio::{
        VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_SEL,
        VIRTIO_MMIO_STATUS,
    };
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::mmio::INT_USED_BUFFER;
    use crate::virtio::testing::{Driver, F_WRITE, Ring};

    const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
    const MULTIPORT: u64 = 1 << VIRTIO_CONSOLE_F_MULTIPORT;
    /// Where the test driver's buffers start (above the rings).
    const BUFFERS: u64 = 0x8_0000;

    /// A control message as the driver sees it: id, event, value, what follows the header.
    type Control = (u32, u16, u16, Vec<u8>);

    /// A guest driving the console as Linux's virtio_console does.
    struct Guest<B = MemoryBackend> {
        d: Driver<Console>,
        rings: Vec<Ring>,
        console: MemoryBackend,
        agent: B,
        /// (queue, head) to the buffer's address.
        buffers: HashMap<(u32, u16), u64>,
        next_buffer: u64,
    }

    impl Guest {
        fn new() -> Guest {
            let (console, agent) = (MemoryBackend::new(), MemoryBackend::new());
            Guest::with(console.clone(), agent.clone(), Box::new(agent))
        }
    }

    impl<B> Guest<B> {
        fn with(console: MemoryBackend, agent: B, agent_backend: Box<dyn PortBackend>) -> Guest<B> {
            let d = Driver::new(Console::new(Box::new(console.clone()), agent_backend));
            Guest { d, rings: Vec::new(), console, agent, buffers: HashMap::new(), next_buffer: BUFFERS }
        }

        fn device(&self) -> &Console {
            self.d.transport.device()
        }

        /// Negotiates `features` and sets up the first `queues` queues (16 entries each).
        fn start(&mut self, features: u64, queues: u32) {
            assert!(self.d.negotiate(|offered| offered & features), "FEATURES_OK kept");
            self.rings = (0..queues).map(|q| self.d.setup_ring(q, 16)).collect();
            self.d.driver_ok();
        }

        fn alloc(&mut self, len: u32) -> u64 {
            let addr = self.next_buffer;
            self.next_buffer += u64::from(len).next_multiple_of(16);
            assert!(self.next_buffer < 0x10_0000, "test buffers fit guest memory");
            addr
        }

        /// Posts a device-writable buffer of `len` bytes (filled with 0xee) to `queue`.
        fn post_rx(&mut self, queue: u32, len: u32) -> u16 {
            let addr = self.alloc(len);
            self.d.fill(addr, len as usize, 0xee);
            let head = self.d.post_to(&mut self.rings[queue as usize], &[(addr, len, F_WRITE)]);
            self.buffers.insert((queue, head), addr);
            head
        }

        /// Posts `parts` as one chain of device-readable buffers to `queue` and notifies it.
        fn transmit(&mut self, queue: u32, parts: &[&[u8]]) -> u16 {
            let mut descs = Vec::new();
            for part in parts {
                let addr = self.alloc(part.len().max(1) as u32);
                self.d.memory.write_slice(part, GuestAddress(addr)).expect("write buffer");
                descs.push((addr, part.len() as u32, 0));
            }
            let head = self.d.post_to(&mut self.rings[queue as usize], &descs);
            self.d.notify(queue);
            head
        }

        /// The buffers of `queue` the device used since the last call: their contents up to the
        /// used length.
        fn received(&mut self, queue: u32) -> Vec<Vec<u8>> {
            let used = self.d.take_used_from(&mut self.rings[queue as usize]);
            used.into_iter()
                .map(|(head, len)| {
                    let addr = self.buffers[&(queue, head as u16)];
                    self.d.bytes(addr, len as usize)
                })
                .collect()
        }

        /// Sends a control message on the control transmit queue; checks it was returned with
        /// used length 0.
        fn control(&mut self, id: u32, event: u16, value: u16) {
            let message = control_message(id, event, value, &[]);
            let head = self.transmit(3, &[&message]);
            assert_eq!(self.d.take_used_from(&mut self.rings[3]), [(u32::from(head), 0)], "control message taken");
        }

        /// The control messages the device sent since the last call.
        fn control_in(&mut self) -> Vec<Control> {
            self.received(2)
                .into_iter()
                .map(|m| {
                    assert!(m.len() >= CONTROL_HEADER, "control message of {} bytes", m.len());
                    let id = u32::from_le_bytes(m[0..4].try_into().expect("4 bytes"));
                    let event = u16::from_le_bytes([m[4], m[5]]);
                    let value = u16::from_le_bytes([m[6], m[7]]);
                    (id, event, value, m[CONTROL_HEADER..].to_vec())
                })
                .collect()
        }

        /// Posts `count` control receive buffers and notifies.
        fn post_control_buffers(&mut self, count: usize) {
            for _ in 0..count {
                self.post_rx(2, 256);
            }
            self.d.notify(2);
        }

        /// MULTIPORT, the six queues, control receive buffers, DEVICE_READY, PORT_READY for both
        /// ports; the answers are checked and consumed.
        fn bring_up(&mut self) {
            self.start(VERSION_1 | MULTIPORT, 6);
            self.post_control_buffers(8);
            self.control(0, event::DEVICE_READY, 1);
            assert_eq!(self.control_in(), [(0, event::DEVICE_ADD, 1, vec![]), (1, event::DEVICE_ADD, 1, vec![])]);
            self.control(0, event::PORT_READY, 1);
            self.control(1, event::PORT_READY, 1);
            self.control_in();
            self.post_control_buffers(8);
        }
    }

    #[test]
    fn identification_features_config_and_queues() {
        let mut g = Guest::new();
        assert_eq!(g.d.read32(VIRTIO_MMIO_DEVICE_ID), 3);
        assert_eq!(g.d.device_features(), VERSION_1 | MULTIPORT);
        assert_eq!(g.d.read32(0x100), 0, "cols and rows");
        assert_eq!(g.d.read32(0x104), 2, "max_nr_ports");
        assert_eq!(g.d.read32(0x108), 0, "emerg_wr");
        for (queue, max) in [(0, 128), (5, 128), (6, 0)] {
            g.d.write32(VIRTIO_MMIO_QUEUE_SEL, queue);
            assert_eq!(g.d.read32(VIRTIO_MMIO_QUEUE_NUM_MAX), max, "queue {queue}");
        }
    }

    #[test]
    fn ports_come_up_through_the_control_queues() {
        let mut g = Guest::new();
        g.start(VERSION_1 | MULTIPORT, 6);
        assert!(g.device().multiport());
        g.post_control_buffers(8);
        assert!(g.control_in().is_empty(), "nothing before DEVICE_READY");
        g.control(0, event::DEVICE_READY, 1);
        assert_eq!(g.control_in(), [(0, event::DEVICE_ADD, 1, vec![]), (1, event::DEVICE_ADD, 1, vec![])]);
        assert_eq!(g.d.read32(VIRTIO_MMIO_INTERRUPT_STATUS), INT_USED_BUFFER);
        assert!(!g.device().port_ready(0) && !g.device().port_ready(1));
        g.control(0, event::PORT_READY, 1);
        assert_eq!(g.control_in(), [(0, event::CONSOLE_PORT, 1, vec![]), (0, event::PORT_OPEN, 1, vec![])]);
        g.control(1, event::PORT_READY, 1);
        assert_eq!(
            g.control_in(),
            [(1, event::PORT_NAME, 1, b"mica.agent".to_vec()), (1, event::PORT_OPEN, 1, vec![])]
        );
        assert!(g.device().port_ready(0) && g.device().port_ready(1));
        assert!(!g.device().guest_open(0) && !g.device().guest_open(1));
        // Linux opens the console port itself on CONSOLE_PORT; a process opens the agent's.
        g.control(0, event::PORT_OPEN, 1);
        assert!(g.device().guest_open(0) && !g.device().guest_open(1));
        g.control(1, event::PORT_OPEN, 1);
        assert!(g.device().guest_open(1));
        g.control(1, event::PORT_OPEN, 0);
        assert!(!g.device().guest_open(1), "closed again");
        assert!(g.control_in().is_empty(), "PORT_OPEN from the guest needs no answer");
    }

    #[test]
    fn control_messages_wait_for_receive_buffers() {
        let mut g = Guest::new();
        g.start(VERSION_1 | MULTIPORT, 6);
        g.control(0, event::DEVICE_READY, 1);
        g.post_rx(2, 256);
        g.d.notify(2);
        assert_eq!(g.control_in(), [(0, event::DEVICE_ADD, 1, vec![])], "one buffer, one message");
        g.post_control_buffers(2);
        assert_eq!(g.control_in(), [(1, event::DEVICE_ADD, 1, vec![])], "then the other");
    }

    #[test]
    fn guest_output_reaches_the_backends() {
        let mut g = Guest::new();
        g.bring_up();
        g.control(1, event::PORT_OPEN, 1);
        let head = g.transmit(5, &[b"hello ", b"agent"]);
        assert_eq!(g.agent.take_output(), b"hello agent");
        assert_eq!(g.d.take_used_from(&mut g.rings[5]), [(u32::from(head), 0)], "transmit buffers used with 0");
        let head = g.transmit(1, &[b"console line\n"]);
        assert_eq!(g.console.take_output(), b"console line\n");
        assert_eq!(g.d.take_used_from(&mut g.rings[1]), [(u32::from(head), 0)]);
        assert!(g.agent.take_output().is_empty(), "each port to its own backend");
    }

    #[test]
    fn backend_input_fills_the_posted_receive_buffers() {
        let mut g = Guest::new();
        g.bring_up();
        g.control(1, event::PORT_OPEN, 1);
        g.agent.push_input(b"0123456789");
        g.post_rx(4, 4);
        g.post_rx(4, 4);
        let raised = g.d.irq.counts().0;
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"0123".to_vec(), b"4567".to_vec()]);
        assert_eq!(g.d.irq.counts().0, raised + 1, "the guest was interrupted");
        assert_eq!(g.agent.pending_input(), 0, "the rest is held by the device");
        // The rest goes as soon as the driver posts another buffer, with its length as used length.
        let head = g.post_rx(4, 64);
        g.d.notify(4);
        assert_eq!(g.d.take_used_from(&mut g.rings[4]), [(u32::from(head), 2)]);
        assert_eq!(g.d.bytes(g.buffers[&(4, head)], 3), b"89\xee", "only 2 bytes written");
        // Nothing pending: polling uses no buffer.
        g.d.transport.poll();
        assert!(g.received(4).is_empty());
        // Port 0 input goes to queue 0 (Linux opened the console port).
        g.control(0, event::PORT_OPEN, 1);
        g.console.push_input(b"ls\r");
        g.post_rx(0, 64);
        g.d.transport.poll();
        assert_eq!(g.received(0), [b"ls\r".to_vec()]);
        assert!(g.received(4).is_empty());
    }

    #[test]
    fn a_port_the_guest_has_not_opened_gets_no_input() {
        let mut g = Guest::new();
        g.bring_up();
        g.agent.push_input(b"early");
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert!(g.received(4).is_empty(), "not open: nothing pushed");
        // Opening the port delivers what was held.
        g.control(1, event::PORT_OPEN, 1);
        assert_eq!(g.received(4), [b"early".to_vec()]);
        // Closed again: held again.
        g.control(1, event::PORT_OPEN, 0);
        g.agent.push_input(b"late");
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert!(g.received(4).is_empty());
    }

    #[test]
    fn host_connection_changes_are_reported_with_port_open() {
        let mut g = Guest::new();
        g.agent.set_connected(false);
        g.start(VERSION_1 | MULTIPORT, 6);
        g.post_control_buffers(8);
        g.control(0, event::DEVICE_READY, 1);
        g.control_in();
        g.control(1, event::PORT_READY, 1);
        assert_eq!(g.control_in(), [(1, event::PORT_NAME, 1, b"mica.agent".to_vec())], "no host yet: no PORT_OPEN");
        g.d.transport.poll();
        assert!(g.control_in().is_empty(), "still none");
        g.agent.set_connected(true);
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 1, vec![])]);
        g.agent.set_connected(false);
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 0, vec![])]);
    }

    #[test]
    fn malformed_control_messages_are_ignored() {
        let mut g = Guest::new();
        g.start(VERSION_1 | MULTIPORT, 6);
        g.post_control_buffers(8);
        // Too short to be a header.
        let head = g.transmit(3, &[&[0, 0, 0, 0]]);
        assert_eq!(g.d.take_used_from(&mut g.rings[3]), [(u32::from(head), 0)]);
        // A header split over two descriptors is fine, an empty chain and a writable-only one are not.
        let head = g.transmit(3, &[&[7, 0, 0, 0], &[event::PORT_READY as u8, 0, 1, 0]]);
        assert_eq!(g.d.take_used_from(&mut g.rings[3]), [(u32::from(head), 0)]);
        g.post_rx(3, 8);
        g.d.notify(3);
        assert_eq!(g.d.take_used_from(&mut g.rings[3]).len(), 1);
        // Ports that do not exist, unknown events, failures, device-only events.
        g.control(7, event::PORT_READY, 1);
        g.control(u32::MAX, event::PORT_OPEN, 1);
        g.control(1, 99, 1);
        g.control(1, event::PORT_NAME, 1);
        g.control(0, event::DEVICE_READY, 0);
        g.control(1, event::PORT_READY, 0);
        assert!(g.control_in().is_empty(), "no answers");
        assert!(!g.device().port_ready(1) && !g.device().guest_open(1));
        // A control receive buffer too small for the message gets used length 0, and the
        // device goes on with the next.
        let mut g = Guest::new();
        g.start(VERSION_1 | MULTIPORT, 6);
        g.post_rx(2, 4);
        g.post_control_buffers(2);
        g.control(0, event::DEVICE_READY, 1);
        assert_eq!(g.received(2), [vec![], control_message(1, event::DEVICE_ADD, 1, &[])], "port 0's was lost");
        // Everything still works.
        g.control(1, event::PORT_READY, 1);
        g.post_control_buffers(4);
        assert_eq!(g.control_in()[0], (1, event::PORT_NAME, 1, b"mica.agent".to_vec()));
    }

    #[test]
    fn control_messages_without_buffers_are_bounded() {
        let mut g = Guest::new();
        g.start(VERSION_1 | MULTIPORT, 6);
        for _ in 0..CONTROL_BACKLOG {
            g.control(0, event::DEVICE_READY, 1);
        }
        assert_eq!(g.device().control_out.len(), CONTROL_BACKLOG);
        assert!(g.device().control_out.iter().all(|m| m.len() == CONTROL_HEADER));
    }

    #[test]
    fn without_multiport_port_0_is_a_plain_open_console() {
        let mut g = Guest::new();
        g.start(VERSION_1, 2);
        assert!(!g.device().multiport());
        assert!(g.device().guest_open(0) && !g.device().guest_open(1));
        g.transmit(1, &[b"boot log"]);
        assert_eq!(g.console.take_output(), b"boot log");
        g.console.push_input(b"x");
        g.agent.push_input(b"not for this guest");
        g.post_rx(0, 16);
        g.d.transport.poll();
        assert_eq!(g.received(0), [b"x".to_vec()]);
        assert!(g.agent.take_output().is_empty());
    }

    #[test]
    fn reset_forgets_what_the_driver_said() {
        let mut g = Guest::new();
        g.bring_up();
        g.control(1, event::PORT_OPEN, 1);
        g.d.write32(VIRTIO_MMIO_STATUS, 0);
        let device = g.device();
        assert!(!device.multiport() && !device.port_ready(1) && !device.guest_open(1));
        // Before DRIVER_OK polling does nothing.
        g.agent.push_input(b"held");
        g.d.transport.poll();
        assert_eq!(g.agent.pending_input(), 4);
        // A new driver brings the ports up again.
        g.bring_up();
        assert!(g.device().port_ready(1));
    }

    #[test]
    fn the_agent_port_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let backend = UnixSocketBackend::bind(&path).expect("bind");
        assert_eq!(backend.path(), path);
        let mut g = Guest::with(MemoryBackend::new(), (), Box::new(backend));
        assert!(g.d.transport.waits().is_empty(), "nothing to wait on before DRIVER_OK");
        g.start(VERSION_1 | MULTIPORT, 6);
        let waits = g.d.transport.waits();
        assert!(waits.len() == 1 && waits[0].readable && !waits[0].writable, "the listener: {waits:?}");
        g.post_control_buffers(8);
        g.control(0, event::DEVICE_READY, 1);
        g.control(1, event::PORT_READY, 1);
        assert_eq!(g.control_in().last(), Some(&(1, event::PORT_NAME, 1, b"mica.agent".to_vec())), "no client yet");
        g.control(1, event::PORT_OPEN, 1);

        let mut client = UnixStream::connect(&path).expect("connect");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 1, vec![])], "the client counts as the host side");
        let waits = g.d.transport.waits();
        assert!(waits.len() == 1 && waits[0].readable && !waits[0].writable, "the client: {waits:?}");
        client.write_all(b"ping").expect("client write");
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"ping".to_vec()]);
        g.transmit(5, &[b"po", b"ng"]);
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).expect("client read");
        assert_eq!(&reply, b"pong");

        // The client leaves: PORT_OPEN 0; the next one is accepted.
        drop(client);
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 0, vec![])]);
        let mut client = UnixStream::connect(&path).expect("connect again");
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 1, vec![])]);
        client.write_all(b"again").expect("client write");
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"again".to_vec()]);

        // A client that writes more than the port holds, while the guest posts no buffers: once
        // the port is full, the client is not waited on (its input would only spin the I/O thread).
        client.write_all(&vec![7u8; INPUT_BUFFER + 100]).expect("client write");
        for _ in 0..100 {
            g.d.transport.poll();
            if g.d.transport.waits().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(g.d.transport.waits().is_empty(), "a full port waits on nothing");
        g.post_rx(4, 4096);
        g.d.notify(4);
        assert_eq!(g.received(4), [vec![7u8; 4096]], "held input goes out as buffers come");
        assert_eq!(g.d.transport.waits().len(), 1, "room again: the client is waited on");

        drop(g);
        assert!(!path.exists(), "the socket file is removed with the backend");
    }

    #[test]
    fn a_departed_client_s_input_is_not_given_to_the_next() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let backend = UnixSocketBackend::bind(&path).expect("bind");
        let mut g = Guest::with(MemoryBackend::new(), (), Box::new(backend));
        g.bring_up();
        // The guest has not opened the port: the first client's bytes are held, then it leaves.
        let mut first = UnixStream::connect(&path).expect("connect");
        first.write_all(b"stale request").expect("write");
        g.d.transport.poll();
        drop(first);
        g.d.transport.poll();
        let mut second = UnixStream::connect(&path).expect("connect again");
        second.write_all(b"fresh").expect("write");
        g.d.transport.poll();
        g.control(1, event::PORT_OPEN, 1);
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"fresh".to_vec()]);
    }

    #[test]
    fn console_output_goes_to_a_writer() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let console = Box::new(WriterBackend::new(Box::new(out.clone())));
        let d = Driver::new(Console::new(console, Box::new(MemoryBackend::new())));
        let mut g = Guest {
            d,
            rings: Vec::new(),
            console: MemoryBackend::new(),
            agent: (),
            buffers: HashMap::new(),
            next_buffer: BUFFERS,
        };
        g.start(VERSION_1, 2);
        g.transmit(1, &[b"hvc0: ", b"hello\n"]);
        assert_eq!(*out.0.lock().expect("lock"), b"hvc0: hello\n");
        assert!(g.d.transport.waits().is_empty(), "a writer has no input to wait on");
    }

    #[test]
    fn socket_paths_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A stale socket is replaced.
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).expect("stale socket"));
        assert!(path.exists());
        UnixSocketBackend::bind(&path).expect("bind over a stale socket");
        // A regular file is not.
        let file = dir.path().join("file");
        fs::write(&file, b"keep me").expect("file");
        let error = UnixSocketBackend::bind(&file).expect_err("a regular file").to_string();
        assert!(error.contains("cannot bind the console port socket") && error.contains("file"), "{error}");
        assert_eq!(fs::read(&file).expect("still there"), b"keep me");
        let error = UnixSocketBackend::bind(dir.path().join("missing/x.sock")).expect_err("no directory").to_string();
        assert!(error.contains("missing/x.sock"), "{error}");
    }
}
