//! A network card as two queues of whole Ethernet frames, for smoltcp: the caller moves the
//! frames between the queues and the network driver, so a stack runs in host tests too; and the
//! smoltcp interface on it ([`interface`]).

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use mica_device::net::{Batch, PushError};
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

/// The largest frame, Ethernet header included (an IP MTU of 1500).
pub const MAX_FRAME_BYTES: usize = 1514;

/// Frames waiting to be sent at most; past that smoltcp holds its packets back.
pub const MAX_TX_QUEUE: usize = 256;

/// `rx` for smoltcp to read, `tx` for what it sends.
#[derive(Debug, Default)]
pub struct FrameDevice {
    /// Frames received, oldest first.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames to send, oldest first.
    pub tx: VecDeque<Vec<u8>>,
}

/// A received frame, handed to smoltcp.
pub struct FrameRx(Vec<u8>);

/// Room for one frame to send.
pub struct FrameTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for FrameRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for FrameTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

impl Device for FrameDevice {
    type RxToken<'a> = FrameRx;
    type TxToken<'a> = FrameTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(FrameRx, FrameTx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((FrameRx(frame), FrameTx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<FrameTx<'_>> {
        (self.tx.len() < MAX_TX_QUEUE).then_some(FrameTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME_BYTES;
        caps
    }
}

impl FrameDevice {
    /// The oldest frames queued to send that fit in one message of the net protocol, taken off
    /// the queue; a frame no message can carry is dropped, and `who` says so on stderr.
    pub fn take_batch(&mut self, who: &str) -> Vec<Vec<u8>> {
        let mut batch = Batch::new();
        while let Some(frame) = self.tx.pop_front() {
            match batch.push(frame) {
                Ok(()) => {}
                Err((frame, PushError::Full)) => {
                    self.tx.push_front(frame);
                    break;
                }
                Err((frame, PushError::BadLength(len))) => {
                    eprintln!(
                        "{who}: dropping a frame of {len} bytes that no message can carry ({:02x?}...)",
                        &frame[..len.min(14)]
                    );
                }
            }
        }
        batch.into_frames()
    }
}

/// Where the interface lives on its network.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// The card's MAC address.
    pub mac: [u8; 6],
    /// The interface's address.
    pub address: Ipv4Addr,
    /// Its network's prefix length.
    pub prefix_len: u8,
    /// The default gateway.
    pub gateway: Ipv4Addr,
    /// Seeds TCP initial sequence numbers.
    pub random_seed: u64,
}

/// Fails when smoltcp's fixed-size tables are too small for the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The interface's address table is full.
    #[error("the interface cannot take the address {0}")]
    Address(IpCidr),
    /// The route table is full.
    #[error("the route table cannot take the default route via {0}")]
    Route(Ipv4Addr),
}

/// A smoltcp interface on `device` with `config`'s address and default route.
pub fn interface(config: &NetConfig, device: &mut FrameDevice, now: Instant) -> Result<Interface, SetupError> {
    let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
    iface_config.random_seed = config.random_seed;
    let mut iface = Interface::new(iface_config, device, now);
    let cidr = IpCidr::new(config.address.into(), config.prefix_len);
    let mut pushed = Ok(());
    iface.update_ip_addrs(|addrs| pushed = addrs.push(cidr).map_err(|_| SetupError::Address(cidr)));
    pushed?;
    iface.routes_mut().add_default_ipv4_route(config.gateway).map_err(|_| SetupError::Route(config.gateway))?;
    Ok(iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_hands_frames_through_and_bounds_its_queue() {
        let mut device = FrameDevice::default();
        device.rx.push_back(vec![1, 2, 3]);
        let (rx, tx) = device.receive(Instant::from_millis(0)).expect("a frame");
        assert_eq!(rx.consume(|f| f.to_vec()), vec![1, 2, 3]);
        tx.consume(4, |f| f.copy_from_slice(&[9, 8, 7, 6]));
        assert_eq!(device.tx.pop_front(), Some(vec![9, 8, 7, 6]));
        assert!(device.receive(Instant::from_millis(0)).is_none());
        for _ in 0..MAX_TX_QUEUE {
            device.transmit(Instant::from_millis(0)).expect("room").consume(14, |_| ());
        }
        assert!(device.transmit(Instant::from_millis(0)).is_none(), "full");
        assert_eq!(device.capabilities().max_transmission_unit, 1514);
    }
}
