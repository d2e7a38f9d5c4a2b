//! `hw-misbehave NAME`: bad `mica:hw` calls, each kind of them, from a component granted device
//! NAME (and no driver): every check expects one error code and prints the kernel's message.
//! Afterwards the device must still answer, and the kernel and the other components must not
//! have noticed.
//!
//! The forged, wrong-kind and freed handles go through [`mica::hw::raw`], the unwrapped
//! bindings, which exist for tests like this one.

use std::fmt::Debug;
use std::time::Duration;

use mica::hw::{self, Device, DmaBuffer, ErrorCode, HwError, MappedDma, raw};

/// The virtio-mmio magic value at offset 0 ("virt").
const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// Counts checks that got the right refusal.
struct Checks {
    passed: u32,
}

impl Checks {
    /// Expects `result` to fail with `code`; prints the check and the kernel's message.
    fn expect<T: Debug, E: Into<HwError>>(
        &mut self,
        name: &str,
        result: Result<T, E>,
        code: ErrorCode,
    ) -> Result<(), String> {
        match result.map_err(Into::into) {
            Err(e) if e.code == code => {
                self.passed += 1;
                println!("hw-misbehave: check {name}: ok, {code:?} ({e})");
                Ok(())
            }
            Err(e) => Err(format!("check {name}: expected {code:?}, got {:?}: {e}", e.code)),
            Ok(v) => Err(format!("check {name}: expected {code:?}, but it succeeded: {v:?}")),
        }
    }
}

pub fn run(name: &str) -> Result<(), String> {
    let granted = hw::granted();
    let info = granted.iter().find(|d| d.name == name).ok_or_else(|| {
        let names: Vec<&str> = granted.iter().map(|d| d.name.as_str()).collect();
        format!("{name} is not among the granted, present devices ({})", names.join(", "))
    })?;
    let device = Device::claim(name).map_err(|e| format!("claim {name}: {e} ({:?})", e.code))?;
    let window = device.window();
    let size = info.window_size;
    let mut checks = Checks { passed: 0 };

    // Registers: outside the window, odd widths, misaligned.
    checks.expect("read at the window size", window.read(size, 4), ErrorCode::OutOfRange)?;
    checks.expect("read at 2^31", window.read(1 << 31, 4), ErrorCode::OutOfRange)?;
    checks.expect("read of width 3", window.read(0, 3), ErrorCode::BadWidth)?;
    checks.expect("unaligned 4-byte read", window.read(2, 4), ErrorCode::BadWidth)?;

    // Handles: never issued, of the wrong kind.
    checks.expect("write through handle 999", raw::mmio::write(999, 0, 4, 0), ErrorCode::InvalidHandle)?;
    checks.expect("dma load on the window handle", raw::dma::load(window.handle(), 0, 4), ErrorCode::InvalidHandle)?;

    // One namespace for every kind of handle: a channel end is no register window, and a register
    // window is no channel.
    let (end, _peer) = mica::ipc::Channel::pair().map_err(|e| format!("create a channel: {e:?}"))?;
    checks.expect("mmio read on a channel end", raw::mmio::read(end.raw(), 0, 4), ErrorCode::InvalidHandle)?;
    let window_as_channel = mica::ipc::Channel::from_raw(window.handle());
    let sent = window_as_channel.try_send(b"x");
    // Not dropped: that would close the handle (refused too, but the window stays in use).
    let _ = window_as_channel.into_raw();
    match sent {
        Err(e) if e.code == mica::ipc::ErrorCode::InvalidHandle => {
            checks.passed += 1;
            println!("hw-misbehave: check send on the window handle: ok, InvalidHandle ({})", e.message);
        }
        other => return Err(format!("check send on the window handle: expected InvalidHandle, got {other:?}")),
    }

    // DMA: past a buffer's end, after it was freed, over the limit.
    let buffer = DmaBuffer::allocate(4096).map_err(|e| format!("allocate 4 KiB: {e} ({:?})", e.code))?;
    checks.expect("read past a buffer's end", buffer.read(buffer.len() - 8, 16), ErrorCode::OutOfRange)?;
    let freed = buffer.handle();
    buffer.free().map_err(|e| format!("free the buffer: {e} ({:?})", e.code))?;
    checks.expect("read of a freed buffer", raw::dma::read(freed, 0, 4), ErrorCode::InvalidHandle)?;
    checks.expect("allocate 64 MiB", DmaBuffer::allocate(64 << 20), ErrorCode::OutOfMemory)?;

    mapping(&mut checks)?;

    // Claims: twice, and a device the manifest does not grant.
    checks.expect("claim it again", Device::claim(name), ErrorCode::Busy)?;
    checks.expect("claim virtio-net.7", Device::claim("virtio-net.7"), ErrorCode::NotGranted)?;

    // Interrupts: none came.
    checks.expect("irq wait with timeout 0", device.irq().wait(Some(Duration::ZERO)), ErrorCode::TimedOut)?;

    let magic = window.read32(0).map_err(|e| format!("read the magic value after the refusals: {e} ({:?})", e.code))?;
    if magic != VIRTIO_MAGIC {
        return Err(format!("the magic value reads {magic:#010x} after the refusals, not {VIRTIO_MAGIC:#010x}"));
    }
    println!("hw-misbehave: {} refusals, device still answers", checks.passed);
    Ok(())
}

/// DMA buffers mapped into this component's memory: the mapping is the buffer (what plain stores
/// write, the kernel's copy reads, and back), and bad offsets, a second mapping and overlaps are
/// refused; a freed mapping leaves ordinary zeroed memory behind.
fn mapping(checks: &mut Checks) -> Result<(), String> {
    fn fail(what: &'static str) -> impl Fn(HwError) -> String {
        move |e| format!("{what}: {e} ({:?})", e.code)
    }
    let mapped = MappedDma::allocate(8192).map_err(fail("allocate a mapped buffer"))?;
    mapped.write(4090, b"through memory").map_err(fail("write the mapped buffer"))?;
    let seen = raw::dma::read(mapped.handle(), 4090, 14).map_err(|e| format!("dma read: {}", e.message))?;
    if seen != b"through memory" {
        return Err(format!("the kernel's copy of the buffer reads {seen:?}, not what the mapping wrote"));
    }
    raw::dma::write(mapped.handle(), 100, b"through the kernel").map_err(|e| format!("dma write: {}", e.message))?;
    let seen = mapped.read(100, 18).map_err(fail("read the mapped buffer"))?;
    if seen != b"through the kernel" {
        return Err(format!("the mapping reads {seen:?}, not what the kernel wrote into the buffer"));
    }
    println!("hw-misbehave: a mapped buffer is the buffer, both ways");
    let at = mapped.memory_offset();
    checks.expect("map it a second time", raw::dma::map_into_memory(mapped.handle(), at + 8192), ErrorCode::Busy)?;
    let other = DmaBuffer::allocate(4096).map_err(fail("allocate a second buffer"))?;
    checks.expect("map at an odd offset", raw::dma::map_into_memory(other.handle(), 100), ErrorCode::OutOfRange)?;
    checks.expect(
        "map past the memory",
        raw::dma::map_into_memory(other.handle(), u32::MAX - 4095),
        ErrorCode::OutOfRange,
    )?;
    checks.expect(
        "map over a mapped buffer",
        raw::dma::map_into_memory(other.handle(), at + 4096),
        ErrorCode::OutOfRange,
    )?;
    checks.expect("a mapped buffer's end", mapped.read(8190, 4), ErrorCode::OutOfRange)?;
    drop(other);
    // Freed: unmapped, the block is the allocator's again, and the handle is gone.
    let handle = mapped.handle();
    drop(mapped);
    checks.expect("read of a freed mapped buffer", raw::dma::read(handle, 0, 4), ErrorCode::InvalidHandle)?;
    let reused = vec![1u8; 64 * 1024];
    if reused.iter().any(|&b| b != 1) {
        return Err("memory allocated after a mapped buffer was freed does not hold what was written".into());
    }
    Ok(())
}
