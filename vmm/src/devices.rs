//! The port I/O the guest can reach: COM1 (a vm-superio 16550 whose output is captured and
//! optionally streamed), the exit port (QEMU's `isa-debug-exit` protocol), and nothing else: other
//! ports read as all ones and ignore writes. The PIT (0x40-0x43), the 8259 PICs (0x20, 0xa0) and
//! the speaker port (0x61) never get here, KVM's in-kernel irqchip and PIT handle them.
//!
//! And the MMIO ranges the VMM claims ([`MmioBus`]): the virtio-mmio devices' windows. Other
//! addresses outside guest RAM read as all ones and ignore writes.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use mica_exit::{ExitCode, ISA_DEBUG_EXIT_PORT, ISA_DEBUG_EXIT_SIZE};
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's first port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's eight ports.
pub const COM1_PORTS: std::ops::RangeInclusive<u16> = COM1_BASE..=COM1_BASE + 7;
/// COM1's interrupt line (GSI 4 on the in-kernel PIC and I/O APIC).
pub const COM1_GSI: u32 = 4;

/// Where the guest's console output goes: COM1's, and the virtio console's (`hvc0`) when the VM
/// has one.
pub enum SerialOutput {
    /// Only captured (returned in [`crate::Outcome::serial_output`]).
    Capture,
    /// Captured and written to this writer as it arrives (e.g. stdout).
    Tee(Box<dyn Write + Send>),
    /// Only written to this writer, not kept: for a VM that runs for long (a pod), whose
    /// output would otherwise grow in memory without bound.
    Stream(Box<dyn Write + Send>),
}

impl fmt::Debug for SerialOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialOutput::Capture => f.write_str("Capture"),
            SerialOutput::Tee(_) => f.write_str("Tee(..)"),
            SerialOutput::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The consoles' output: a capture buffer (unless streaming only), and the tee writer if any. A
/// tee that fails (a closed pipe) is dropped with a warning; capture goes on.
pub struct SerialSink {
    captured: Vec<u8>,
    capture: bool,
    tee: Option<Box<dyn Write + Send>>,
}

impl fmt::Debug for SerialSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialSink").field("captured", &self.captured.len()).field("tee", &self.tee.is_some()).finish()
    }
}

impl SerialSink {
    /// A sink for `output`.
    pub fn new(output: SerialOutput) -> SerialSink {
        let (capture, tee) = match output {
            SerialOutput::Capture => (true, None),
            SerialOutput::Tee(w) => (true, Some(w)),
            SerialOutput::Stream(w) => (false, Some(w)),
        };
        SerialSink { captured: Vec::new(), capture, tee }
    }

    /// Everything the guest wrote.
    pub fn captured(&self) -> &[u8] {
        &self.captured
    }

    fn tee_io(&mut self, op: impl FnOnce(&mut dyn Write) -> io::Result<()>) {
        if let Some(w) = self.tee.as_mut()
            && let Err(e) = op(w.as_mut())
        {
            log::warn!("serial output: cannot write to the console any more ({e}); still capturing");
            self.tee = None;
        }
    }
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.capture {
            self.captured.extend_from_slice(buf);
        }
        self.tee_io(|w| w.write_all(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tee_io(|w| w.flush());
        Ok(())
    }
}

/// A [`SerialSink`] shared by the consoles that write to it (COM1, the virtio console's port 0).
#[derive(Clone, Debug)]
pub struct SharedSink(Arc<Mutex<SerialSink>>);

impl SharedSink {
    /// Shares `sink`.
    pub fn new(sink: SerialSink) -> SharedSink {
        SharedSink(Arc::new(Mutex::new(sink)))
    }

    fn lock(&self) -> MutexGuard<'_, SerialSink> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of what was captured so far.
    pub fn captured(&self) -> Vec<u8> {
        self.lock().captured().to_vec()
    }

    /// Flushes the tee and takes what was captured.
    pub fn take_captured(&self) -> Vec<u8> {
        let mut sink = self.lock();
        let _ = sink.flush();
        std::mem::take(&mut sink.captured)
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// Raises COM1's interrupt line through an eventfd that KVM's irqfd turns into GSI 4.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// What the vCPU loop should do after a port write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAction {
    /// Keep running.
    Continue,
    /// The guest wrote this byte to the exit port: end the run.
    Exit(u8),
}

/// The verdict behind a byte written to the exit port, if it is one of [`ExitCode::ALL`].
pub fn decode_exit(byte: u8) -> Option<ExitCode> {
    ExitCode::ALL.into_iter().find(|c| c.code() == byte)
}

fn is_exit_port(port: u16) -> bool {
    (ISA_DEBUG_EXIT_PORT..ISA_DEBUG_EXIT_PORT + ISA_DEBUG_EXIT_SIZE).contains(&port)
}

/// The guest's port I/O space.
pub struct PortBus {
    serial: Serial<IrqLine, NoEvents, SharedSink>,
}

impl fmt::Debug for PortBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortBus").field("serial", self.serial.writer()).finish()
    }
}

impl PortBus {
    /// A bus with COM1 raising `irq` and writing to `sink`.
    pub fn new(irq: IrqLine, sink: SharedSink) -> PortBus {
        PortBus { serial: Serial::new(irq, sink) }
    }

    /// A guest `in` of `data.len()` bytes from `port`.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        let len = data.len();
        for (i, byte) in data.iter_mut().enumerate() {
            let p = port.wrapping_add(i as u16);
            *byte = if COM1_PORTS.contains(&p) {
                self.serial.read((p - COM1_BASE) as u8)
            } else {
                if i == 0 {
                    log::debug!("port read from unclaimed {port:#06x} ({len} bytes): all ones");
                }
                0xff
            };
        }
    }

    /// A guest `out` of `data` to `port`.
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> PortAction {
        if is_exit_port(port) {
            return PortAction::Exit(data.first().copied().unwrap_or(0));
        }
        for (i, byte) in data.iter().enumerate() {
            let p = port.wrapping_add(i as u16);
            if COM1_PORTS.contains(&p) {
                if let Err(e) = self.serial.write((p - COM1_BASE) as u8, *byte) {
                    log::warn!("serial: {e:?}");
                }
            } else if i == 0 {
                log::debug!("port write to unclaimed {port:#06x}: {data:02x?} ignored");
            }
        }
        PortAction::Continue
    }

    /// Everything the guest wrote to its consoles so far (if captured).
    pub fn serial_output(&self) -> Vec<u8> {
        self.serial.writer().captured()
    }

    /// Takes the consoles' captured output.
    pub fn into_serial_output(self) -> Vec<u8> {
        self.serial.into_writer().take_captured()
    }
}

/// A device in the guest's physical address space: loads and stores at offsets within its window.
pub trait MmioDevice: fmt::Debug + Send {
    /// A guest load of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest store of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared with another thread (the VMM's I/O thread, which polls a console for host
/// input): each access holds its lock.
impl<T: MmioDevice> MmioDevice for Arc<Mutex<T>> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write(offset, data);
    }
}

/// The MMIO windows the VMM claims, each a device at a base address.
#[derive(Debug, Default)]
pub struct MmioBus {
    windows: Vec<(std::ops::Range<u64>, Box<dyn MmioDevice>)>,
}

impl MmioBus {
    /// Puts `device` at `base..base + size`.
    ///
    /// # Panics
    ///
    /// If the window overlaps one already claimed: the VMM's own layout is wrong.
    pub fn insert(&mut self, base: u64, size: u64, device: Box<dyn MmioDevice>) {
        let window = base..base.checked_add(size).expect("MMIO window within the address space");
        if let Some((other, _)) = self.windows.iter().find(|(w, _)| w.start < window.end && window.start < w.end) {
            panic!("MMIO window {window:#x?} overlaps {other:#x?}");
        }
        self.windows.push((window, device));
    }

    /// The device whose window holds all of `addr..addr + len`, and the offset of `addr` in it.
    fn find(&mut self, addr: u64, len: usize) -> Option<(&mut Box<dyn MmioDevice>, u64)> {
        let end = addr.checked_add(len as u64)?;
        self.windows
            .iter_mut()
            .find(|(w, _)| w.start <= addr && end <= w.end)
            .map(|(w, device)| (device, addr - w.start))
    }

    /// A guest load at `addr`; false if no device claims it (then `data` is left alone).
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some((device, offset)) = self.find(addr, data.len()) else { return false };
        device.read(offset, data);
        true
    }

    /// A guest store at `addr`; false if no device claims it.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some((device, offset)) = self.find(addr, data.len()) else { return false };
        device.write(offset, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    fn bus(output: SerialOutput) -> PortBus {
        let irq = IrqLine(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        PortBus::new(irq, SharedSink::new(SerialSink::new(output)))
    }

    fn print(bus: &mut PortBus, s: &str) {
        for b in s.bytes() {
            assert_eq!(bus.io_out(0x3f8, &[b]), PortAction::Continue);
        }
    }

    #[test]
    fn exit_port_decodes_with_mica_exit() {
        assert_eq!(decode_exit(0x10), Some(ExitCode::Success));
        assert_eq!(decode_exit(0x11), Some(ExitCode::Failed));
        assert_eq!(decode_exit(0), None);
        assert_eq!(decode_exit(0x12), None);
        let mut b = bus(SerialOutput::Capture);
        assert_eq!(b.io_out(0xf4, &[0x10]), PortAction::Exit(0x10));
        assert_eq!(b.io_out(0xf4, &[0x11, 0, 0, 0]), PortAction::Exit(0x11));
        assert_eq!(b.io_out(0xf7, &[0x42]), PortAction::Exit(0x42), "the whole 4-port window");
        assert_eq!(b.io_out(0xf8, &[0x10]), PortAction::Continue, "outside the window");
        assert_eq!(b.io_out(0xf3, &[0x10]), PortAction::Continue);
    }

    #[test]
    fn serial_output_is_captured() {
        let mut b = bus(SerialOutput::Capture);
        print(&mut b, "mica: ready\n");
        assert_eq!(b.serial_output(), b"mica: ready\n");
        assert_eq!(b.into_serial_output(), b"mica: ready\n");
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn serial_output_is_teed() {
        let shared = Shared::default();
        let mut b = bus(SerialOutput::Tee(Box::new(shared.clone())));
        print(&mut b, "hello");
        assert_eq!(&*shared.0.lock().expect("lock"), b"hello");
        assert_eq!(b.serial_output(), b"hello");
    }

    #[test]
    fn streamed_output_is_not_kept() {
        let shared = Shared::default();
        let mut b = bus(SerialOutput::Stream(Box::new(shared.clone())));
        print(&mut b, "a long-running guest");
        assert_eq!(&*shared.0.lock().expect("lock"), b"a long-running guest");
        assert_eq!(b.serial_output(), b"");
        assert_eq!(b.into_serial_output(), b"");
    }

    #[test]
    fn loopback_and_scratch_work_like_a_16550() {
        // What uart_16550's self-test does: scratch register, then loopback mode (MCR bit 4).
        let mut b = bus(SerialOutput::Capture);
        b.io_out(0x3ff, &[0x5a]);
        let mut data = [0];
        b.io_in(0x3ff, &mut data);
        assert_eq!(data, [0x5a]);
        b.io_out(0x3fc, &[0x1e]);
        b.io_out(0x3f8, &[0xae]);
        b.io_in(0x3fd, &mut data);
        assert_eq!(data[0] & 1, 1, "LSR: data ready");
        b.io_in(0x3f8, &mut data);
        assert_eq!(data, [0xae]);
        assert_eq!(b.serial_output(), b"", "looped-back bytes are not output");
    }

    /// Accesses a [`Probe`] saw: ('r' or 'w', offset, data).
    type Accesses = Arc<Mutex<Vec<(char, u64, Vec<u8>)>>>;

    /// A window that records its accesses; it reads as 0x5a.
    #[derive(Debug, Default)]
    struct Probe(Accesses);

    impl MmioDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(0x5a);
            self.0.lock().expect("lock").push(('r', offset, data.to_vec()));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.lock().expect("lock").push(('w', offset, data.to_vec()));
        }
    }

    #[test]
    fn mmio_accesses_reach_the_window_that_holds_them() {
        let (first, second) = (Probe::default(), Probe::default());
        let (log1, log2) = (first.0.clone(), second.0.clone());
        let mut bus = MmioBus::default();
        bus.insert(0xd000_0000, 0x200, Box::new(first));
        bus.insert(0xd000_1000, 0x200, Box::new(second));
        let mut data = [0u8; 4];
        assert!(bus.read(0xd000_0070, &mut data));
        assert_eq!(data, [0x5a; 4]);
        assert!(bus.write(0xd000_11fc, &[1, 2, 3, 4]), "the last word of the second window");
        assert_eq!(*log1.lock().expect("lock"), [('r', 0x70, vec![0x5a; 4])]);
        assert_eq!(*log2.lock().expect("lock"), [('w', 0x1fc, vec![1, 2, 3, 4])]);
        let mut data = [0u8; 4];
        assert!(!bus.read(0xd000_0200, &mut data), "past the first window");
        assert!(!bus.write(0xd000_01fe, &[0; 4]), "straddling the end of a window");
        assert!(!bus.read(0xcfff_fffc, &mut data));
        assert!(!bus.write(u64::MAX - 1, &[0; 4]), "wrapping around");
        assert_eq!((log1.lock().expect("lock").len(), log2.lock().expect("lock").len()), (1, 1));
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlapping_mmio_windows_are_a_layout_bug() {
        let mut bus = MmioBus::default();
        bus.insert(0x1000, 0x200, Box::new(Probe::default()));
        bus.insert(0x11ff, 0x200, Box::new(Probe::default()));
    }

    #[test]
    fn unclaimed_ports_read_all_ones() {
        let mut b = bus(SerialOutput::Capture);
        let mut data = [0u8; 4];
        b.io_in(0x80, &mut data);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(b.io_out(0x80, &[1, 2]), PortAction::Continue);
    }
}
