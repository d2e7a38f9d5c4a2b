//! [`MemoryBackend`]: a port whose host side is a pair of shared buffers (tests, and programs that
//! drive the guest themselves).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::PortBackend;

/// A backend in memory: what the guest wrote accumulates, and input is whatever was pushed. Its
/// clones share the buffers, so one can be given to the device and another kept.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    state: Arc<Mutex<MemoryState>>,
}

#[derive(Debug)]
struct MemoryState {
    output: Vec<u8>,
    input: VecDeque<u8>,
    connected: bool,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// An empty, connected backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend {
            state: Arc::new(Mutex::new(MemoryState { output: Vec::new(), input: VecDeque::new(), connected: true })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `data` as input for the guest.
    pub fn push_input(&self, data: &[u8]) {
        self.lock().input.extend(data);
    }

    /// The input not yet taken by the device.
    pub fn pending_input(&self) -> usize {
        self.lock().input.len()
    }

    /// Takes what the guest wrote so far.
    pub fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().output)
    }

    /// Sets whether the host side counts as connected.
    pub fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
    }
}

impl PortBackend for MemoryBackend {
    fn write(&mut self, data: &[u8]) {
        self.lock().output.extend_from_slice(data);
    }

    fn read_input(&mut self, buf: &mut [u8]) -> usize {
        let mut state = self.lock();
        let len = buf.len().min(state.input.len());
        for (byte, input) in buf.iter_mut().zip(state.input.drain(..len)) {
            *byte = input;
        }
        len
    }

    fn connected(&mut self) -> bool {
        self.lock().connected
    }
}
