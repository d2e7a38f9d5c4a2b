//! A guest driving the console as Linux's virtio_console does, for the tests of the device and of
//! its backends.

use std::collections::HashMap;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{Bytes, GuestAddress};

use super::control::control_message;
use super::{Console, MemoryBackend, PortBackend};
use crate::virtio::spec::virtio_console::{CONTROL_SIZE, VIRTIO_CONSOLE_F_MULTIPORT, event};
use crate::virtio::testing::{Driver, F_WRITE, Ring};

/// The VERSION_1 feature bit.
pub(super) const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
/// The MULTIPORT feature bit.
pub(super) const MULTIPORT: u64 = 1 << VIRTIO_CONSOLE_F_MULTIPORT;
/// Where the test driver's buffers start (above the rings).
const BUFFERS: u64 = 0x8_0000;

/// A control message as the driver sees it: id, event, value, what follows the header.
pub(super) type Control = (u32, u16, u16, Vec<u8>);

/// A guest driving the console as Linux's virtio_console does.
pub(super) struct Guest<B = MemoryBackend> {
    pub(super) d: Driver<Console>,
    pub(super) rings: Vec<Ring>,
    pub(super) console: MemoryBackend,
    pub(super) agent: B,
    /// (queue, head) to the buffer's address.
    pub(super) buffers: HashMap<(u32, u16), u64>,
    next_buffer: u64,
}

impl Guest {
    pub(super) fn new() -> Guest {
        let (console, agent) = (MemoryBackend::new(), MemoryBackend::new());
        Guest::with(console.clone(), agent.clone(), Box::new(agent))
    }
}

impl Guest<()> {
    /// A guest whose console port is `console` on the host side (`self.console` is then a
    /// backend the device does not use) and whose agent port is a backend of its own.
    pub(super) fn with_console(console: Box<dyn PortBackend>) -> Guest<()> {
        let d = Driver::new(Console::new(console, Box::new(MemoryBackend::new())));
        Guest {
            d,
            rings: Vec::new(),
            console: MemoryBackend::new(),
            agent: (),
            buffers: HashMap::new(),
            next_buffer: BUFFERS,
        }
    }
}

impl<B> Guest<B> {
    pub(super) fn with(console: MemoryBackend, agent: B, agent_backend: Box<dyn PortBackend>) -> Guest<B> {
        let d = Driver::new(Console::new(Box::new(console.clone()), agent_backend));
        Guest { d, rings: Vec::new(), console, agent, buffers: HashMap::new(), next_buffer: BUFFERS }
    }

    pub(super) fn device(&self) -> &Console {
        self.d.transport.device()
    }

    /// Negotiates `features` and sets up the first `queues` queues (16 entries each).
    pub(super) fn start(&mut self, features: u64, queues: u32) {
        assert!(self.d.negotiate(|offered| offered & features), "FEATURES_OK kept");
        self.rings = (0..queues).map(|q| self.d.setup_ring(q, 16)).collect();
        self.d.driver_ok();
    }

    pub(super) fn alloc(&mut self, len: u32) -> u64 {
        let addr = self.next_buffer;
        self.next_buffer += u64::from(len).next_multiple_of(16);
        assert!(self.next_buffer < 0x10_0000, "test buffers fit guest memory");
        addr
    }

    /// Posts a device-writable buffer of `len` bytes (filled with 0xee) to `queue`.
    pub(super) fn post_rx(&mut self, queue: u32, len: u32) -> u16 {
        let addr = self.alloc(len);
        self.d.fill(addr, len as usize, 0xee);
        let head = self.d.post_to(&mut self.rings[queue as usize], &[(addr, len, F_WRITE)]);
        self.buffers.insert((queue, head), addr);
        head
    }

    /// Posts `parts` as one chain of device-readable buffers to `queue` and notifies it.
    pub(super) fn transmit(&mut self, queue: u32, parts: &[&[u8]]) -> u16 {
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
    pub(super) fn received(&mut self, queue: u32) -> Vec<Vec<u8>> {
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
    pub(super) fn control(&mut self, id: u32, event: u16, value: u16) {
        let message = control_message(id, event, value, &[]);
        let head = self.transmit(3, &[&message]);
        assert_eq!(self.d.take_used_from(&mut self.rings[3]), [(u32::from(head), 0)], "control message taken");
    }

    /// The control messages the device sent since the last call.
    pub(super) fn control_in(&mut self) -> Vec<Control> {
        self.received(2)
            .into_iter()
            .map(|m| {
                assert!(m.len() >= CONTROL_SIZE, "control message of {} bytes", m.len());
                let id = u32::from_le_bytes(m[0..4].try_into().expect("4 bytes"));
                let event = u16::from_le_bytes([m[4], m[5]]);
                let value = u16::from_le_bytes([m[6], m[7]]);
                (id, event, value, m[CONTROL_SIZE..].to_vec())
            })
            .collect()
    }

    /// Posts `count` control receive buffers and notifies.
    pub(super) fn post_control_buffers(&mut self, count: usize) {
        for _ in 0..count {
            self.post_rx(2, 256);
        }
        self.d.notify(2);
    }

    /// MULTIPORT, the six queues, control receive buffers, DEVICE_READY, PORT_READY for both
    /// ports; the answers are checked and consumed.
    pub(super) fn bring_up(&mut self) {
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
