//! How the system names devices: the contract between the manifest (checked by xtask, which
//! names the `[[device]]` entries) and the kernel (which names the devices it finds), so that
//! a component's `devices = ["virtio-blk.0"]` means the same device on both sides.
//!
//! A device is called `kind.N`: its kind (`virtio-blk`, ...) and its index among the devices of
//! that kind, in the order the machine presents them.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The names of devices of `kinds`, given in the order the machine presents them: each is
/// `kind.N`, N counting the devices of that kind before it (`virtio-blk.0`, `virtio-blk.1`, ...).
pub fn device_names<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let kinds: Vec<&str> = kinds.into_iter().collect();
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let ordinal = kinds[..i].iter().filter(|other| *other == kind).count();
            format!("{kind}.{ordinal}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_by_kind_and_order() {
        assert_eq!(
            device_names(["virtio-rng", "virtio-blk", "virtio-blk", "virtio-net", "virtio-77"]),
            ["virtio-rng.0", "virtio-blk.0", "virtio-blk.1", "virtio-net.0", "virtio-77.0"]
        );
        assert!(device_names([]).is_empty());
    }
}
