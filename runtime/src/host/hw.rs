//! `mica:hw`: device access for driver components. Each call is passed to the component's
//! [`HwPort`](crate::hw::HwPort), which the kernel implements; this file only translates WIT
//! values. A component run without a port (hosted on Linux) gets `not-granted`.

use alloc::string::String;
use alloc::vec::Vec;

use super::InstanceState;
use super::mica::hw::device::{self, Claimed, DeviceInfo};
use super::mica::hw::types::{Error, ErrorCode, Handle};
use super::mica::hw::{dma, irq, mmio};
use crate::hw::{self as port, HwFailure, HwPort};

impl From<port::HwErrorCode> for ErrorCode {
    fn from(code: port::HwErrorCode) -> ErrorCode {
        use port::HwErrorCode as C;
        match code {
            C::InvalidHandle => ErrorCode::InvalidHandle,
            C::NotGranted => ErrorCode::NotGranted,
            C::NotPresent => ErrorCode::NotPresent,
            C::Busy => ErrorCode::Busy,
            C::OutOfRange => ErrorCode::OutOfRange,
            C::BadWidth => ErrorCode::BadWidth,
            C::TimedOut => ErrorCode::TimedOut,
            C::OutOfMemory => ErrorCode::OutOfMemory,
        }
    }
}

impl From<HwFailure> for Error {
    fn from(f: HwFailure) -> Error {
        Error { code: f.code.into(), message: f.message }
    }
}

type Answer<T> = wasmtime::Result<Result<T, Error>>;

impl InstanceState {
    /// Runs `f` on the port, or gives the error a component without one gets.
    fn hw<T>(&self, f: impl FnOnce(&dyn HwPort) -> Result<T, HwFailure>) -> Answer<T> {
        Ok(match self.hw.as_deref() {
            Some(port) => f(port).map_err(Error::from),
            None => Err(Error {
                code: ErrorCode::NotGranted,
                message: String::from("hardware is not available here: this component runs without the Mica kernel"),
            }),
        })
    }
}

impl super::mica::hw::types::Host for InstanceState {}

impl device::Host for InstanceState {
    fn granted(&mut self) -> wasmtime::Result<Vec<DeviceInfo>> {
        let devices = self.hw.as_deref().map(HwPort::granted).unwrap_or_default();
        Ok(devices
            .into_iter()
            .map(|d| DeviceInfo {
                name: d.name,
                bus: match d.bus {
                    port::Bus::VirtioMmio => device::Bus::VirtioMmio,
                },
                device_id: d.device_id,
                window_size: d.window_size,
            })
            .collect())
    }

    fn claim(&mut self, name: String) -> Answer<Claimed> {
        self.hw(|p| p.claim(&name).map(|(window, irq)| Claimed { window, irq }))
    }
}

impl mmio::Host for InstanceState {
    fn read(&mut self, window: Handle, offset: u32, width: u8) -> Answer<u64> {
        self.hw(|p| p.mmio_read(window, offset, width))
    }

    fn write(&mut self, window: Handle, offset: u32, width: u8, value: u64) -> Answer<()> {
        self.hw(|p| p.mmio_write(window, offset, width, value))
    }
}

impl irq::Host for InstanceState {
    fn wait(&mut self, line: Handle, timeout_ns: Option<u64>) -> Answer<u32> {
        let answer = self.hw(|p| p.wait_irq(line, timeout_ns));
        self.check_killed()?;
        answer
    }
}

impl dma::Host for InstanceState {
    fn allocate(&mut self, size: u32) -> Answer<Handle> {
        self.hw(|p| p.dma_allocate(size))
    }

    fn bus_address(&mut self, buffer: Handle) -> Answer<u64> {
        self.hw(|p| p.dma_bus_address(buffer))
    }

    fn size(&mut self, buffer: Handle) -> Answer<u32> {
        self.hw(|p| p.dma_size(buffer))
    }

    fn read(&mut self, buffer: Handle, offset: u32, len: u32) -> Answer<Vec<u8>> {
        self.hw(|p| p.dma_read(buffer, offset, len))
    }

    fn write(&mut self, buffer: Handle, offset: u32, data: Vec<u8>) -> Answer<()> {
        self.hw(|p| p.dma_write(buffer, offset, &data))
    }

    fn load(&mut self, buffer: Handle, offset: u32, width: u8) -> Answer<u64> {
        self.hw(|p| p.dma_load(buffer, offset, width))
    }

    fn store(&mut self, buffer: Handle, offset: u32, width: u8, value: u64) -> Answer<()> {
        self.hw(|p| p.dma_store(buffer, offset, width, value))
    }

    fn map_into_memory(&mut self, buffer: Handle, offset: u32) -> Answer<()> {
        self.hw(|p| p.dma_map(buffer, offset))
    }

    fn free(&mut self, buffer: Handle) -> Answer<()> {
        self.hw(|p| p.dma_free(buffer))
    }
}
