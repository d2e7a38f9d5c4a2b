//! Each component instance's capability space: its one handle table, which holds every kind of
//! kernel object the instance may name (channel ends, device register windows, interrupt lines,
//! DMA buffers), whichever interface (`mica:kernel/ipc` or `mica:hw`) gave it the handle. An
//! operation on a handle checks the kind of object behind it: a channel operation on a register
//! window, or a hardware operation on a channel end, is refused with `invalid-handle`.

use alloc::collections::BTreeMap;

use mica_caps::{HandleTable, Rights};
use mica_ipc::ChannelEnd;
use mica_runtime::ipc::{ErrorCode, IpcFailure};

use super::errors::{INSTANCE_ENDED, fail};

/// A kernel object a handle can name. Each names the object in the subsystem that keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// One end of a channel.
    End(ChannelEnd),
    /// A claimed device's register window (by index into the device registry).
    Window(usize),
    /// A claimed device's interrupt line (by index into the device registry).
    Irq(usize),
    /// A DMA buffer (by its id among its instance's buffers).
    Dma(DmaId),
}

impl Object {
    /// What it is, for error messages: "a channel end", "a DMA buffer", ...
    pub fn kind(&self) -> &'static str {
        match self {
            Object::End(_) => "a channel end",
            Object::Window(_) => "a register window",
            Object::Irq(_) => "an interrupt line",
            Object::Dma(_) => "a DMA buffer",
        }
    }
}

/// Names one DMA buffer among those of its component instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DmaId(pub u64);

/// An object with rights, as it travels in a message.
pub type Transfer = (Object, Rights);

/// Names one component instance's space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpaceId(u64);

/// One component instance's handles.
#[derive(Debug)]
pub(super) struct Space {
    /// Its component (index into the manifest's components).
    pub(super) component: usize,
    /// Its handles.
    pub(super) table: HandleTable<Object>,
    /// Whether it may create channels.
    pub(super) may_create: bool,
}

/// Every open space.
#[derive(Debug)]
pub(super) struct Spaces {
    open: BTreeMap<SpaceId, Space>,
    next: u64,
}

impl Spaces {
    /// No spaces yet.
    pub(super) fn new() -> Spaces {
        Spaces { open: BTreeMap::new(), next: 1 }
    }

    /// A new, empty space of `capacity` handles for an instance of component `component`.
    pub(super) fn open(&mut self, component: usize, capacity: u16, may_create: bool) -> SpaceId {
        let id = SpaceId(self.next);
        self.next += 1;
        self.open.insert(id, Space { component, table: HandleTable::new(capacity), may_create });
        id
    }

    /// Closes `id`, handing back its space (`None` if it was closed already).
    pub(super) fn close(&mut self, id: SpaceId) -> Option<Space> {
        self.open.remove(&id)
    }

    /// Space `id`, or the error its ended instance gets.
    pub(super) fn get(&mut self, id: SpaceId) -> Result<&mut Space, IpcFailure> {
        self.open.get_mut(&id).ok_or_else(|| fail(ErrorCode::InvalidHandle, INSTANCE_ENDED))
    }

    /// Space `id`, if it is open.
    pub(super) fn find(&mut self, id: SpaceId) -> Option<&mut Space> {
        self.open.get_mut(&id)
    }

    /// The component of space `id`, if it is open.
    pub(super) fn component(&self, id: SpaceId) -> Option<usize> {
        self.open.get(&id).map(|s| s.component)
    }

    /// How many handles space `id` holds.
    pub(super) fn handle_count(&self, id: SpaceId) -> usize {
        self.open.get(&id).map_or(0, |s| s.table.len())
    }
}
