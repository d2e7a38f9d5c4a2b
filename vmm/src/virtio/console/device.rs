//! The virtio-console device, [`Console`]: feature negotiation and configuration space, the
//! control queues that bring the ports up, and the ports' receive and transmit queues.

use std::collections::VecDeque;
use std::io::{Read, Write};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::control::{control_message, decode_header};
use super::port::{Port, port_queues};
use super::{AGENT_PORT_NAME, CONTROL_BACKLOG, INPUT_BUFFER, NR_PORTS, PortBackend, QUEUE_SIZE};
use crate::virtio::spec::virtio_console::{
    CONFIG_MAX_NR_PORTS, CONFIG_SIZE, CONTROL_SIZE, VIRTIO_CONSOLE_F_MULTIPORT, event,
};
use crate::virtio::{VirtioDevice, Wait};

/// The control receive and transmit queues.
const CONTROL_RX: usize = 2;
const CONTROL_TX: usize = 3;

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
    /// [`MmioTransport::poll`](crate::virtio::mmio::MmioTransport::poll), periodically or when a
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
            let mut header = [0u8; CONTROL_SIZE];
            match Reader::new(memory, chain) {
                Ok(mut reader) => match reader.read_exact(&mut header) {
                    Ok(()) => self.control(header),
                    Err(_) => log::warn!(
                        "virtio-console: control message in buffer {head} ignored: {} bytes, not {CONTROL_SIZE}",
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
    fn control(&mut self, header: [u8; CONTROL_SIZE]) {
        let (id, kind, value) = decode_header(header);
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
        config[CONFIG_MAX_NR_PORTS..][..4].copy_from_slice(&NR_PORTS.to_le_bytes());
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
    use virtio_bindings::virtio_mmio::{
        VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_QUEUE_NUM_MAX,
        VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_STATUS,
    };

    use super::*;
    use crate::virtio::console::guest::{Guest, MULTIPORT, VERSION_1};
    use crate::virtio::mmio::INT_USED_BUFFER;

    #[test]
    fn identification_features_config_and_queues() {
        let mut g = Guest::new();
        assert_eq!(g.d.read32(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_CONSOLE);
        assert_eq!(g.d.device_features(), VERSION_1 | MULTIPORT);
        assert_eq!(g.d.read32(VIRTIO_MMIO_CONFIG), 0, "cols and rows");
        assert_eq!(g.d.read32(VIRTIO_MMIO_CONFIG + 4), 2, "max_nr_ports");
        assert_eq!(g.d.read32(VIRTIO_MMIO_CONFIG + 8), 0, "emerg_wr");
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
        assert!(g.device().control_out.iter().all(|m| m.len() == CONTROL_SIZE));
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
}
