//! The real devices: [`mica::hw`]'s handles implement [`Regs`], [`Memory`] and [`Irq`], and
//! [`claim_first`] finds, claims and probes a driver's device.

use std::time::Duration;

use mica::hw::{self, DmaBuffer, HwError, IrqLine, MappedDma, Window};

use crate::access::{Irq, Memory, Regs};
use crate::error::Error;
use crate::transport::Transport;

impl Regs for Window {
    fn read(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        Window::read(self, offset, width)
    }

    fn write(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        Window::write(self, offset, width, value)
    }
}

impl Memory for DmaBuffer {
    fn bus_address(&self) -> u64 {
        DmaBuffer::bus_address(self)
    }

    fn size(&self) -> u32 {
        self.len()
    }

    fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        DmaBuffer::read(self, offset, len)
    }

    fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        DmaBuffer::write(self, offset, data)
    }

    fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        DmaBuffer::load(self, offset, width)
    }

    fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        DmaBuffer::store(self, offset, width, value)
    }
}

impl Memory for MappedDma {
    fn bus_address(&self) -> u64 {
        MappedDma::bus_address(self)
    }

    fn size(&self) -> u32 {
        self.len()
    }

    fn read(&self, offset: u32, len: u32) -> Result<Vec<u8>, HwError> {
        MappedDma::read(self, offset, len)
    }

    fn write(&self, offset: u32, data: &[u8]) -> Result<(), HwError> {
        MappedDma::write(self, offset, data)
    }

    fn load(&self, offset: u32, width: u8) -> Result<u64, HwError> {
        MappedDma::load(self, offset, width)
    }

    fn store(&self, offset: u32, width: u8, value: u64) -> Result<(), HwError> {
        MappedDma::store(self, offset, width, value)
    }
}

impl Irq for IrqLine {
    fn wait(&self, timeout: Option<Duration>) -> Result<u32, HwError> {
        IrqLine::wait(self, timeout)
    }
}

/// A claimed virtio device: its name, its probed transport and its interrupt line.
#[derive(Debug)]
pub struct ClaimedDevice {
    /// The name in the manifest, e.g. `virtio-rng.0`.
    pub name: String,
    /// The transport over its register window (probed, not yet initialized).
    pub transport: Transport<Window>,
    /// Its interrupt line.
    pub irq: IrqLine,
}

/// Claims the first granted device with virtio device id `device_id` (see
/// [`crate::device_id`]) and probes its transport.
pub fn claim_first(device_id: u32) -> Result<ClaimedDevice, Error> {
    let granted = hw::granted();
    let Some(info) = granted.iter().find(|d| d.device_id == device_id) else {
        let names: Vec<String> = granted.iter().map(|d| format!("{} (id {})", d.name, d.device_id)).collect();
        let granted = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        return Err(Error::NotGranted { device_id, granted });
    };
    let device = hw::Device::claim(&info.name).map_err(Error::hw("claiming the device"))?;
    let name = device.name().to_string();
    let (window, irq) = device.into_parts();
    let transport = Transport::new(window)?;
    if transport.device_id() != device_id {
        return Err(Error::WrongDevice { expected: device_id, found: transport.device_id() });
    }
    Ok(ClaimedDevice { name, transport, irq })
}
