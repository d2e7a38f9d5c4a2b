//! One port of the device: its backend, what the driver said about it, and the host input it holds.

use std::collections::VecDeque;

use super::{INPUT_BUFFER, PortBackend};

/// How much is read from a backend at once.
const READ_CHUNK: usize = 4096;

/// One port: its backend and what the driver said about it.
#[derive(Debug)]
pub(super) struct Port {
    pub(super) backend: Box<dyn PortBackend>,
    pub(super) name: Option<&'static str>,
    pub(super) is_console: bool,
    /// The driver sent PORT_READY 1.
    pub(super) ready: bool,
    /// A guest process has the port open (PORT_OPEN from the driver).
    pub(super) guest_open: bool,
    /// The host connection state last reported with PORT_OPEN.
    pub(super) host_open_reported: bool,
    /// The host side was connected when last polled.
    pub(super) was_connected: bool,
    /// Host input not yet in a receive buffer.
    pub(super) input: VecDeque<u8>,
}

impl Port {
    pub(super) fn new(backend: Box<dyn PortBackend>, name: Option<&'static str>, is_console: bool) -> Port {
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
    pub(super) fn reset(&mut self) {
        self.ready = false;
        self.guest_open = false;
        self.host_open_reported = false;
    }

    /// Reads what the backend has, up to [`INPUT_BUFFER`] bytes held.
    pub(super) fn pull_input(&mut self) {
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
pub(super) fn port_queues(port: u32) -> (usize, usize) {
    let rx = if port == 0 { 0 } else { 2 + 2 * port as usize };
    (rx, rx + 1)
}
