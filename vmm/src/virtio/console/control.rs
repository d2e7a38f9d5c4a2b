//! The control messages of the multiport protocol (virtio 1.2 section 5.3.6.2), as bytes: a
//! header (`struct virtio_console_control`) and, for PORT_NAME, the name after it.

use crate::virtio::spec::virtio_console::CONTROL_SIZE;

/// A control message: the header, then `extra` (a port name).
pub(super) fn control_message(id: u32, event: u16, value: u16, extra: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTROL_SIZE + extra.len());
    message.extend_from_slice(&id.to_le_bytes());
    message.extend_from_slice(&event.to_le_bytes());
    message.extend_from_slice(&value.to_le_bytes());
    message.extend_from_slice(extra);
    message
}

/// A control message header's `id`, `event` and `value`.
pub(super) fn decode_header(header: [u8; CONTROL_SIZE]) -> (u32, u16, u16) {
    let id = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let event = u16::from_le_bytes([header[4], header[5]]);
    let value = u16::from_le_bytes([header[6], header[7]]);
    (id, event, value)
}
