//! Mica's kernel interfaces for Rust components built for `wasm32-wasip2`.
//!
//! - [`ipc`]: channels between components. A [`Channel`](ipc::Channel) owns one handle and
//!   closes it when dropped; errors are values ([`Error`](ipc::Error)) that say what went wrong.
//! - [`log`]: structured records to the kernel console.
//! - [`hw`]: devices for drivers: register windows, interrupt lines and DMA buffers as owned
//!   handles ([`Device`](hw::Device), [`DmaBuffer`](hw::DmaBuffer), and
//!   [`MappedDma`](hw::MappedDma) for buffers mapped into the component's memory); errors are
//!   [`HwError`](hw::HwError) values.
//!
//! ```no_run
//! use mica::ipc::Channel;
//!
//! // The manifest has `connect = [{ from = "me", to = "kv", name = "kv" }]`.
//! let kv = Channel::connect("kv")?;
//! let reply = kv.call(b"get colour")?;
//! # Ok::<(), mica::ipc::Error>(())
//! ```

mod bindings;
mod mapped;

pub mod hw;
pub mod ipc;

/// The interfaces exactly as the WIT declares them, without the owned handles and checks of
/// [`ipc`] and [`hw`]: raw handle numbers, spans given as offsets, any sizes. For programs that
/// test the kernel's own checks (the hostile component in `components/hostile`); a driver or a
/// service wants [`ipc`] and [`hw`].
pub mod raw {
    pub use crate::bindings::mica::hw::{device, dma, irq, mmio};
    pub use crate::bindings::mica::kernel::ipc;
}

/// Structured log records (`mica:kernel/log`).
pub mod log {
    pub use crate::bindings::mica::kernel::log::{Level, log};
}
