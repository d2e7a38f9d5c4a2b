//! One component instance's hardware ([`Instance`], its `HwPort`): the devices its manifest
//! grants, the handles it holds to their register windows and interrupt lines and to its DMA
//! buffers, and the `mica:hw` operations on them. Devices themselves are in the
//! [registry](super::registry).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use mica_caps::{CapError, Handle, HandleTable, Rights};
use mica_runtime::hw::{self, Bus, DeviceInfo, HwErrorCode, HwFailure, HwHandle, HwPort};

use super::registry::{self, Device, devices};
use crate::arch::clock;
use crate::arch::dma::Region;
use crate::arch::irq_lock::IrqMutex;
use crate::sched;

/// Instance ids.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// What a handle in a hardware table names.
#[derive(Debug)]
enum Object {
    /// A claimed device's register window (index into [`devices`]).
    Window(usize),
    /// A claimed device's interrupt line (index into [`devices`]).
    Irq(usize),
    /// A DMA buffer.
    Dma(Region),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Window(_) => "a register window",
            Object::Irq(_) => "an interrupt line",
            Object::Dma(_) => "a DMA buffer",
        }
    }
}

/// One instance's table.
#[derive(Debug)]
struct Table {
    objects: HandleTable<Object>,
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
    table: IrqMutex<Table>,
}

/// Handle table size: two per device plus DMA buffers.
const TABLE_CAPACITY: u16 = 256;

fn invalid(handle: HwHandle, e: &CapError) -> HwFailure {
    HwFailure::new(HwErrorCode::InvalidHandle, format!("hardware handle {handle}: {e}"))
}

impl Instance {
    /// The hardware table of a new instance of `component`, which may claim `granted` and hold
    /// `dma_limit` bytes of DMA memory.
    pub fn new(component: &str, granted: Vec<String>, dma_limit: u64) -> Instance {
        Instance {
            id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            component: String::from(component),
            granted,
            dma_limit,
            table: IrqMutex::new(Table {
                objects: HandleTable::new(TABLE_CAPACITY),
                dma_bytes: 0,
                claims: Vec::new(),
                ended: false,
            }),
        }
    }

    /// The instance has ended: resets the devices it claimed (they stop using memory), masks
    /// their lines, releases them and frees its DMA buffers, in that order. Idempotent.
    pub fn end(&self) {
        let (claims, objects) = {
            let mut t = self.table.lock();
            if t.ended {
                return;
            }
            t.ended = true;
            let objects: Vec<Object> = t.objects.drain().map(|(_, object, _)| object).collect();
            (core::mem::take(&mut t.claims), objects)
        };
        for &index in &claims {
            registry::reset_and_release(index);
            log::info!("devices: {} reset and released ({} ended)", devices()[index].name, self.component);
        }
        drop(objects);
    }

    /// Runs `f` on the table, unless the instance has ended.
    fn with<T>(&self, f: impl FnOnce(&mut Table) -> Result<T, HwFailure>) -> Result<T, HwFailure> {
        let mut t = self.table.lock();
        if t.ended {
            return Err(HwFailure::new(HwErrorCode::InvalidHandle, "this instance has ended"));
        }
        f(&mut t)
    }

    /// The device behind `handle` if it is a window.
    fn window(t: &Table, handle: HwHandle) -> Result<&'static Device, HwFailure> {
        match t.objects.get(Handle::from_bits(handle), Rights::READ).map_err(|e| invalid(handle, &e))? {
            Object::Window(index) => Ok(&devices()[*index]),
            other => Err(HwFailure::new(
                HwErrorCode::InvalidHandle,
                format!("hardware handle {handle} is {}, not a register window", other.kind()),
            )),
        }
    }

    fn line(t: &Table, handle: HwHandle) -> Result<&'static Device, HwFailure> {
        match t.objects.get(Handle::from_bits(handle), Rights::READ).map_err(|e| invalid(handle, &e))? {
            Object::Irq(index) => Ok(&devices()[*index]),
            other => Err(HwFailure::new(
                HwErrorCode::InvalidHandle,
                format!("hardware handle {handle} is {}, not an interrupt line", other.kind()),
            )),
        }
    }

    fn buffer(t: &Table, handle: HwHandle) -> Result<&Region, HwFailure> {
        match t.objects.get(Handle::from_bits(handle), Rights::READ).map_err(|e| invalid(handle, &e))? {
            Object::Dma(region) => Ok(region),
            other => Err(HwFailure::new(
                HwErrorCode::InvalidHandle,
                format!("hardware handle {handle} is {}, not a DMA buffer", other.kind()),
            )),
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
            let rights = Rights::READ | Rights::WRITE;
            let window = t.objects.insert(Object::Window(index), rights);
            let irq = t.objects.insert(Object::Irq(index), rights);
            let (window, irq) = match (window, irq) {
                (Ok(w), Ok(i)) => (w, i),
                (w, i) => {
                    for h in [w, i].into_iter().flatten() {
                        let _ = t.objects.remove(h);
                    }
                    registry::unclaim(index);
                    return Err(HwFailure::new(HwErrorCode::OutOfMemory, "the hardware handle table is full"));
                }
            };
            t.claims.push(index);
            devices()[index].arm();
            Ok((window.to_bits(), irq.to_bits()))
        })
    }

    fn mmio_read(&self, window: HwHandle, offset: u32, width: u8) -> Result<u64, HwFailure> {
        self.with(|t| {
            let device = Self::window(t, window)?;
            let what = format!("window of {}", device.name);
            hw::check_access(&what, device.window.size(), offset, width)?;
            device.window.read(offset, width).ok_or_else(|| bad_access(&what, device.window.size(), offset, width))
        })
    }

    fn mmio_write(&self, window: HwHandle, offset: u32, width: u8, value: u64) -> Result<(), HwFailure> {
        self.with(|t| {
            let device = Self::window(t, window)?;
            let what = format!("window of {}", device.name);
            hw::check_access(&what, device.window.size(), offset, width)?;
            if device.window.write(offset, width, value) {
                Ok(())
            } else {
                Err(bad_access(&what, device.window.size(), offset, width))
            }
        })
    }

    fn wait_irq(&self, line: HwHandle, timeout_ns: Option<u64>) -> Result<(), HwFailure> {
        let device = self.with(|t| Self::line(t, line))?;
        let state = device.line();
        let deadline = timeout_ns.map(|ns| clock::monotonic_ns().unwrap_or(0).saturating_add(ns));
        let me = sched::current_id();
        loop {
            if state.pending.swap(false, Ordering::SeqCst) {
                return Ok(());
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
            if state.pending.swap(false, Ordering::SeqCst) {
                state.waiter.store(0, Ordering::SeqCst);
                return Ok(());
            }
            sched::park(deadline);
            state.waiter.store(0, Ordering::SeqCst);
            // The instance may have ended meanwhile (its device is then reset).
            self.with(|_| Ok(()))?;
        }
    }

    fn ack_irq(&self, line: HwHandle) -> Result<(), HwFailure> {
        self.with(|t| {
            let device = Self::line(t, line)?;
            device.set_masked(false);
            Ok(())
        })
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
            let handle = t
                .objects
                .insert(Object::Dma(region), Rights::READ | Rights::WRITE)
                .map_err(|e| HwFailure::new(HwErrorCode::OutOfMemory, format!("{e}")))?;
            t.dma_bytes += bytes;
            Ok(handle.to_bits())
        })
    }

    fn dma_bus_address(&self, buffer: HwHandle) -> Result<u64, HwFailure> {
        self.with(|t| Ok(Self::buffer(t, buffer)?.bus_address()))
    }

    fn dma_size(&self, buffer: HwHandle) -> Result<u32, HwFailure> {
        self.with(|t| Ok(Self::buffer(t, buffer)?.len()))
    }

    fn dma_read(&self, buffer: HwHandle, offset: u32, len: u32) -> Result<Vec<u8>, HwFailure> {
        self.with(|t| {
            let region = Self::buffer(t, buffer)?;
            hw::check_range("DMA buffer", region.len(), offset, len)?;
            let mut out = alloc::vec![0; len as usize];
            region.read(offset, &mut out);
            Ok(out)
        })
    }

    fn dma_write(&self, buffer: HwHandle, offset: u32, data: &[u8]) -> Result<(), HwFailure> {
        self.with(|t| {
            let region = Self::buffer(t, buffer)?;
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            hw::check_range("DMA buffer", region.len(), offset, len)?;
            region.write(offset, data);
            Ok(())
        })
    }

    fn dma_load(&self, buffer: HwHandle, offset: u32, width: u8) -> Result<u64, HwFailure> {
        self.with(|t| {
            let region = Self::buffer(t, buffer)?;
            hw::check_access("DMA buffer", region.len(), offset, width)?;
            region.load(offset, width).ok_or_else(|| bad_access("DMA buffer", region.len(), offset, width))
        })
    }

    fn dma_store(&self, buffer: HwHandle, offset: u32, width: u8, value: u64) -> Result<(), HwFailure> {
        self.with(|t| {
            let region = Self::buffer(t, buffer)?;
            hw::check_access("DMA buffer", region.len(), offset, width)?;
            if region.store(offset, width, value) {
                Ok(())
            } else {
                Err(bad_access("DMA buffer", region.len(), offset, width))
            }
        })
    }

    fn dma_free(&self, buffer: HwHandle) -> Result<(), HwFailure> {
        let region = self.with(|t| {
            Self::buffer(t, buffer)?;
            let (object, _) = t.objects.remove(Handle::from_bits(buffer)).map_err(|e| invalid(buffer, &e))?;
            if let Object::Dma(region) = &object {
                t.dma_bytes -= u64::from(region.len());
            }
            Ok(object)
        })?;
        drop(region);
        Ok(())
    }
}
