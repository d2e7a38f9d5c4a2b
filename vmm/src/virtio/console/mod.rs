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
//!
//! The device is [`Console`] (`device.rs`, with each port's state in `port.rs` and the control
//! messages' encoding in `control.rs`); each backend has a file of its own (`writer.rs`,
//! `memory.rs`, `unix_socket.rs`).

use std::fmt;

use super::Wait;

mod control;
mod device;
#[cfg(test)]
mod guest;
mod memory;
mod port;
mod unix_socket;
mod writer;

pub use device::Console;
pub use memory::MemoryBackend;
pub use unix_socket::UnixSocketBackend;
pub use writer::WriterBackend;

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
