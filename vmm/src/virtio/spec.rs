//! The standard virtio constants that `virtio-bindings` does not carry: the one place in
//! `mica-vmm` where a virtio constant is named (the ones the kernel and the drivers share come
//! from `mica-virtio-spec`). Every other register offset, feature
//! bit, status bit, device ID, descriptor flag and request code comes from `virtio-bindings`.
//!
//! The modules follow the crate's (`virtio_mmio`, `virtio_blk`, and `virtio_console`, for which it
//! has none), so that a constant the crate gains later can replace its line here.

/// virtio-mmio (virtio 1.2 section 4.2.2): register values (`virtio_bindings::virtio_mmio` has the
/// register offsets only), from `mica-virtio-spec`, shared with the kernel and the drivers.
pub mod virtio_mmio {
    pub use mica_virtio_spec::extra::{VIRTIO_MMIO_MAGIC as MAGIC_VALUE, VIRTIO_MMIO_VERSION_MODERN as VERSION_MODERN};
}

/// virtio-blk (virtio 1.2 section 5.2).
pub mod virtio_blk {
    /// The sector size of virtio-blk addressing: a request's `sector` and the `capacity` in the
    /// configuration space count these, whatever the device's `blk_size`.
    pub const SECTOR_SIZE: u64 = 512;
}

/// virtio-console (virtio 1.2 section 5.3; Linux's `include/uapi/linux/virtio_console.h`).
pub mod virtio_console {
    /// Feature bit: the device has several ports and the control queues (section 5.3.3).
    pub const VIRTIO_CONSOLE_F_MULTIPORT: u32 = 1;
    /// The size of `struct virtio_console_config`: `cols`, `rows` (u16), `max_nr_ports`,
    /// `emerg_wr` (u32).
    pub const CONFIG_SIZE: usize = 12;
    /// The offset of `max_nr_ports` in the configuration space.
    pub const CONFIG_MAX_NR_PORTS: usize = 4;
    /// The size of `struct virtio_console_control`, a control message's header: `id` (u32),
    /// `event`, `value` (u16), little-endian.
    pub const CONTROL_SIZE: usize = 8;

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
}
