//! One component instance's hardware ([`Instance`], its `HwPort`): the devices its manifest
//! grants, the devices it claimed, its DMA buffers, and the `mica:hw` operations on them. The
//! handles it holds to register windows, interrupt lines and DMA buffers are in its one
//! capability space (`crate::ipc::space`), beside its channel ends; devices themselves are in
//! the [registry](super::registry).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use mica_caps::{CapError, Handle, Rights};
use mica_runtime::hw::{self, Bus, DeviceInfo, HwErrorCode, HwFailure, HwHandle, HwPort};

use super::registry::{self, Device, devices};
use crate::arch::clock;
use crate::ipc::blocking::Port;
use crate::ipc::space::{DmaId, Object};
use crate::irq_lock::IrqMutex;
use crate::mem::dma::Region;
use crate::sched;
use crate::wasm::vmem;

/// Instance ids.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A DMA buffer an instance holds.
#[derive(Debug)]
struct Buffer {
    /// Its frames; a linear memory that maps them keeps them too (`vmem::map_device_memory`).
    region: Arc<Region>,
    /// Where it is mapped in the instance's linear memory, if it is.
    mapped_at: Option<u32>,
}

/// What one instance holds of the hardware.
#[derive(Debug)]
struct Table {
    /// Its DMA buffers, by the id their handles name.
    buffers: BTreeMap<DmaId, Buffer>,
    /// The id of its next DMA buffer.
    next_dma: u64,
    /// Bytes of DMA memory it holds.
    dma_bytes: u64,
    /// Devices it claimed (indices into [`devices`]).
    claims: Vec<usize>,
    /// Set when the instance has ended: every call fails.
    ended: bool,
}

/// One component instance's hardware: what it was granted and what it holds.
#[derive(Debug)]
pub struct Instance {
    id: u64,
    component: String,
    granted: Vec<String>,
    dma_limit: u64,
    /// The instance's capability space (its IPC port holds it).
    space: Arc<Port>,
    table: IrqMutex<Table>,
}

fn invalid(handle: HwHandle, e: &CapError) -> HwFailure {
    HwFailure::new(HwErrorCode::InvalidHandle, format!("hardware handle {handle}: {e}"))
}

fn ended() -> HwFailure {
    HwFailure::new(HwErrorCode::InvalidHandle, "this instance has ended")
}

/// The refusal of `handle`, which names `object`, where `wanted` is needed.
fn wrong_kind(handle: HwHandle, object: &Object, wanted: &str) -> HwFailure {
    HwFailure::new(HwErrorCode::InvalidHandle, format!("hardware handle {handle} is {}, not {wanted}", object.kind()))
}

impl Instance {
    /// The hardware of a new instance of `component`, which may claim `granted` and hold
    /// `dma_limit` bytes of DMA memory; its handles go into the capability space of `space`.
    pub fn new(component: &str, granted: Vec<String>, dma_limit: u64, space: Arc<Port>) -> Instance {
        Instance {
            id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            component: String::from(component),
            granted,
            dma_limit,
            space,
            table: IrqMutex::new(Table {
                buffers: BTreeMap::new(),
                next_dma: 1,
                dma_bytes: 0,
                claims: Vec::new(),
                ended: false,
            }),
        }
    }

    /// The instance has ended: resets the devices it claimed (they stop using memory), masks
    /// their lines, releases them and frees its DMA buffers, in that order. Idempotent. (Their
    /// handles go when the instance's capability space is closed.)
    pub fn end(&self) {
        let (claims, buffers) = {
            let mut t = self.table.lock();
            if t.ended {
                return;
            }
            t.ended = true;
            (core::mem::take(&mut t.claims), core::mem::take(&mut t.buffers))
        };
        for &index in &claims {
            registry::reset_and_release(index);
            log::info!("devices: {} reset and released ({} ended)", devices()[index].name, self.component);
        }
        drop(buffers);
    }

    /// Runs `f` on the table, unless the instance has ended.
    fn with<T>(&self, f: impl FnOnce(&mut Table) -> Result<T, HwFailure>) -> Result<T, HwFailure> {
        let mut t = self.table.lock();
        if t.ended {
            return Err(ended());
        }
        f(&mut t)
    }

    /// The object behind `handle` in the instance's capability space.
    fn object(&self, handle: HwHandle) -> Result<Object, HwFailure> {
        match self.space.with_table(|t| t.get(Handle::from_bits(handle), Rights::READ).copied()) {
            Some(Ok(object)) => Ok(object),
            Some(Err(e)) => Err(invalid(handle, &e)),
            None => Err(ended()),
        }
    }

    /// Puts `object` into the instance's capability space.
    fn insert(&self, object: Object) -> Result<Handle, CapError> {
        self.space.with_table(|t| t.insert(object, Rights::READ | Rights::WRITE)).unwrap_or(Err(CapError::OutOfMemory))
    }

    /// Takes `handle` out of the instance's capability space.
    fn remove(&self, handle: Handle) {
        let _ = self.space.with_table(|t| t.remove(handle));
    }

    /// The device behind `handle` if it is a window.
    fn window(&self, handle: HwHandle) -> Result<&'static Device, HwFailure> {
        match self.object(handle)? {
            Object::Window(index) => Ok(&devices()[index]),
            other => Err(wrong_kind(handle, &other, "a register window")),
        }
    }

    /// The device behind `handle` if it is an interrupt line.
    fn line(&self, handle: HwHandle) -> Result<&'static Device, HwFailure> {
        match self.object(handle)? {
            Object::Irq(index) => Ok(&devices()[index]),
            other => Err(wrong_kind(handle, &other, "an interrupt line")),
        }
    }

    /// The buffer behind `handle` (and its id) if it is a DMA buffer.
    fn buffer<'t>(&self, t: &'t Table, handle: HwHandle) -> Result<(DmaId, &'t Region), HwFailure> {
        match self.object(handle)? {
            Object::Dma(id) => t.buffers.get(&id).map(|b| (id, &*b.region)).ok_or_else(ended),
            other => Err(wrong_kind(handle, &other, "a DMA buffer")),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.end();
    }
}

fn bad_access(what: &str, size: u32, offset: u32, width: u8) -> HwFailure {
    hw::check_access(what, size, offset, width)
        .err()
        .unwrap_or_else(|| HwFailure::new(HwErrorCode::OutOfRange, format!("{what}: access refused")))
}

impl HwPort for Instance {
    fn granted(&self) -> Vec<DeviceInfo> {
        devices()
            .iter()
            .filter(|d| self.granted.contains(&d.name))
            .map(|d| DeviceInfo {
                name: d.name.clone(),
                bus: Bus::VirtioMmio,
                device_id: d.device_id,
                window_size: d.window.size(),
            })
            .collect()
    }

    fn claim(&self, name: &str) -> Result<(HwHandle, HwHandle), HwFailure> {
        if !self.granted.iter().any(|g| g == name) {
            return Err(HwFailure::new(
                HwErrorCode::NotGranted,
                format!("device {name} is not granted to {} (its manifest grants: {})", self.component, {
                    if self.granted.is_empty() { String::from("none") } else { self.granted.join(", ") }
                }),
            ));
        }
        let Some(index) = devices().iter().position(|d| d.name == name) else {
            let present: Vec<&str> = devices().iter().map(|d| d.name.as_str()).collect();
            return Err(HwFailure::new(
                HwErrorCode::NotPresent,
                format!(
                    "device {name} is not present on this machine (present: {})",
                    if present.is_empty() { String::from("none") } else { present.join(", ") }
                ),
            ));
        };
        self.with(|t| {
            if let Err(holder) = registry::claim(index, self.id) {
                let who = if holder == self.id { "this instance" } else { "another instance" };
                return Err(HwFailure::new(HwErrorCode::Busy, format!("device {name} is already claimed by {who}")));
            }
            let window = self.insert(Object::Window(index));
            let irq = self.insert(Object::Irq(index));
            let (window, irq) = match (window, irq) {
                (Ok(w), Ok(i)) => (w, i),
                (w, i) => {
                    let e = [&w, &i].into_iter().find_map(|r| r.as_ref().err().cloned());
                    for h in [w, i].into_iter().flatten() {
                        self.remove(h);
                    }
                    registry::unclaim(index);
                    return Err(HwFailure::new(
                        HwErrorCode::OutOfMemory,
                        format!(
                            "the handle table of {} has no room for the device's two handles ({})",
                            self.component,
                            e.map_or_else(String::new, |e| format!("{e}"))
                        ),
                    ));
                }
            };
            t.claims.push(index);
            devices()[index].arm();
            Ok((window.to_bits(), irq.to_bits()))
        })
    }

    fn mmio_read(&self, window: HwHandle, offset: u32, width: u8) -> Result<u64, HwFailure> {
        self.with(|_| {
            let device = self.window(window)?;
            let what = format!("window of {}", device.name);
            hw::check_access(&what, device.window.size(), offset, width)?;
            device.window.read(offset, width).ok_or_else(|| bad_access(&what, device.window.size(), offset, width))
        })
    }

    fn mmio_write(&self, window: HwHandle, offset: u32, width: u8, value: u64) -> Result<(), HwFailure> {
        self.with(|_| {
            let device = self.window(window)?;
            let what = format!("window of {}", device.name);
            hw::check_access(&what, device.window.size(), offset, width)?;
            if device.window.write(offset, width, value) {
                Ok(())
            } else {
                Err(bad_access(&what, device.window.size(), offset, width))
            }
        })
    }

    fn wait_irq(&self, line: HwHandle, timeout_ns: Option<u64>) -> Result<u32, HwFailure> {
        let device = self.with(|_| self.line(line))?;
        device.unmask_if_quiet();
        let state = device.line();
        let deadline = timeout_ns.map(|ns| clock::monotonic_ns().unwrap_or(0).saturating_add(ns));
        let me = sched::current_id();
        let taken = || state.pending.swap(false, Ordering::SeqCst).then(|| state.cause.swap(0, Ordering::SeqCst));
        loop {
            if let Some(cause) = taken() {
                return Ok(cause);
            }
            if sched::killed() {
                return Err(HwFailure::new(
                    HwErrorCode::TimedOut,
                    format!("the wait for {}'s interrupt was cut short: the instance is being ended", device.name),
                ));
            }
            let expired = deadline.is_some_and(|d| clock::monotonic_ns().unwrap_or(u64::MAX) >= d);
            if expired {
                return Err(HwFailure::new(
                    HwErrorCode::TimedOut,
                    format!("no interrupt from {} within {} ns", device.name, timeout_ns.unwrap_or(0)),
                ));
            }
            state.waiter.store(me + 1, Ordering::SeqCst);
            // An interrupt between the first look and registering would otherwise be missed.
            if let Some(cause) = taken() {
                state.waiter.store(0, Ordering::SeqCst);
                return Ok(cause);
            }
            sched::park(deadline);
            state.waiter.store(0, Ordering::SeqCst);
            // The instance may have ended meanwhile (its device is then reset).
            self.with(|_| Ok(()))?;
        }
    }

    fn dma_allocate(&self, size: u32) -> Result<HwHandle, HwFailure> {
        let pages = u64::from(size).div_ceil(4096).max(1);
        self.with(|t| {
            let bytes = pages * 4096;
            if t.dma_bytes + bytes > self.dma_limit {
                return Err(HwFailure::new(
                    HwErrorCode::OutOfMemory,
                    format!(
                        "a DMA buffer of {bytes} bytes would take {} past its dma_limit of {} bytes ({} in use)",
                        self.component, self.dma_limit, t.dma_bytes
                    ),
                ));
            }
            let region = Region::allocate(size).map_err(|e| {
                HwFailure::new(HwErrorCode::OutOfMemory, format!("no contiguous memory for {bytes} bytes of DMA: {e}"))
            })?;
            let id = DmaId(t.next_dma);
            let handle =
                self.insert(Object::Dma(id)).map_err(|e| HwFailure::new(HwErrorCode::OutOfMemory, format!("{e}")))?;
            t.next_dma += 1;
            t.buffers.insert(id, Buffer { region: Arc::new(region), mapped_at: None });
            t.dma_bytes += bytes;
            Ok(handle.to_bits())
        })
    }

    fn dma_bus_address(&self, buffer: HwHandle) -> Result<u64, HwFailure> {
        self.with(|t| Ok(self.buffer(t, buffer)?.1.bus_address()))
    }

    fn dma_size(&self, buffer: HwHandle) -> Result<u32, HwFailure> {
        self.with(|t| Ok(self.buffer(t, buffer)?.1.len()))
    }

    fn dma_read(&self, buffer: HwHandle, offset: u32, len: u32) -> Result<Vec<u8>, HwFailure> {
        self.with(|t| {
            let (_, region) = self.buffer(t, buffer)?;
            hw::check_range("DMA buffer", region.len(), offset, len)?;
            let mut out = alloc::vec![0; len as usize];
            region.read(offset, &mut out);
            Ok(out)
        })
    }

    fn dma_write(&self, buffer: HwHandle, offset: u32, data: &[u8]) -> Result<(), HwFailure> {
        self.with(|t| {
            let (_, region) = self.buffer(t, buffer)?;
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            hw::check_range("DMA buffer", region.len(), offset, len)?;
            region.write(offset, data);
            Ok(())
        })
    }

    fn dma_load(&self, buffer: HwHandle, offset: u32, width: u8) -> Result<u64, HwFailure> {
        self.with(|t| {
            let (_, region) = self.buffer(t, buffer)?;
            hw::check_access("DMA buffer", region.len(), offset, width)?;
            region.load(offset, width).ok_or_else(|| bad_access("DMA buffer", region.len(), offset, width))
        })
    }

    fn dma_store(&self, buffer: HwHandle, offset: u32, width: u8, value: u64) -> Result<(), HwFailure> {
        self.with(|t| {
            let (_, region) = self.buffer(t, buffer)?;
            hw::check_access("DMA buffer", region.len(), offset, width)?;
            if region.store(offset, width, value) {
                Ok(())
            } else {
                Err(bad_access("DMA buffer", region.len(), offset, width))
            }
        })
    }

    fn dma_map(&self, buffer: HwHandle, offset: u32) -> Result<(), HwFailure> {
        self.with(|t| {
            let (id, _) = self.buffer(t, buffer)?;
            let entry = t.buffers.get_mut(&id).ok_or_else(ended)?;
            let region = entry.region.clone();
            if let Some(at) = entry.mapped_at {
                return Err(HwFailure::new(
                    HwErrorCode::Busy,
                    format!("DMA buffer {buffer} is already mapped at offset {at:#x} of the linear memory"),
                ));
            }
            let pages = u64::from(region.len()) / 4096;
            let frames: vmem::KeepAlive = region.clone();
            vmem::map_device_memory(sched::current_id(), offset, region.bus_address(), pages, frames).map_err(|e| {
                HwFailure::new(
                    HwErrorCode::OutOfRange,
                    format!("mapping DMA buffer {buffer} into the linear memory: {e}"),
                )
            })?;
            entry.mapped_at = Some(offset);
            Ok(())
        })
    }

    fn dma_free(&self, buffer: HwHandle) -> Result<(), HwFailure> {
        let freed = self.with(|t| {
            let (id, _) = self.buffer(t, buffer)?;
            if let Some(at) = t.buffers.get(&id).and_then(|b| b.mapped_at) {
                vmem::unmap_device_memory(sched::current_id(), at).map_err(|e| {
                    HwFailure::new(
                        HwErrorCode::OutOfRange,
                        format!("unmapping DMA buffer {buffer} from the linear memory: {e}"),
                    )
                })?;
            }
            self.remove(Handle::from_bits(buffer));
            let freed = t.buffers.remove(&id);
            if let Some(b) = &freed {
                t.dma_bytes -= u64::from(b.region.len());
            }
            Ok(freed)
        })?;
        drop(freed);
        Ok(())
    }
}
