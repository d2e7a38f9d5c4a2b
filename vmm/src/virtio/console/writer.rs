//! [`WriterBackend`]: a port whose output goes to a writer and which has no input.

use std::fmt;
use std::io::Write;

use super::PortBackend;

/// An output-only backend: what the guest writes goes to a writer (the VMM's stdout, a log
/// file); it has no input. A writer that fails is dropped with a warning, and later output with it.
pub struct WriterBackend {
    writer: Option<Box<dyn Write + Send>>,
}

impl fmt::Debug for WriterBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterBackend").field("open", &self.writer.is_some()).finish()
    }
}

impl WriterBackend {
    /// Output to `writer`.
    pub fn new(writer: Box<dyn Write + Send>) -> WriterBackend {
        WriterBackend { writer: Some(writer) }
    }
}

impl PortBackend for WriterBackend {
    fn write(&mut self, data: &[u8]) {
        if let Some(writer) = self.writer.as_mut()
            && let Err(e) = writer.write_all(data).and_then(|()| writer.flush())
        {
            log::warn!("virtio-console: console output stopped: {e}");
            self.writer = None;
        }
    }

    fn read_input(&mut self, _buf: &mut [u8]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::WriterBackend;
    use crate::virtio::console::guest::{Guest, VERSION_1};

    #[test]
    fn console_output_goes_to_a_writer() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let console = Box::new(WriterBackend::new(Box::new(out.clone())));
        let mut g = Guest::with_console(console);
        g.start(VERSION_1, 2);
        g.transmit(1, &[b"hvc0: ", b"hello\n"]);
        assert_eq!(*out.0.lock().expect("lock"), b"hvc0: hello\n");
        assert!(g.d.transport.waits().is_empty(), "a writer has no input to wait on");
    }
}
