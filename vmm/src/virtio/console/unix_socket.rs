//! [`UnixSocketBackend`]: a port whose host side is a listening Unix stream socket, one client at a
//! time (the pod agent's port, `mica-vmm --agent-socket`).

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::PortBackend;
use crate::error::{Error, Result};
use crate::virtio::Wait;

/// A listening Unix stream socket: one client at a time (others wait in the listen backlog
/// until it leaves); what the client writes is the guest's input, what the guest writes goes to
/// the client. Nothing blocks: the client is accepted, read and written to when the device asks
/// (its writes and [`PortBackend::read_input`] / [`PortBackend::connected`] from
/// [`Console::poll_input`](super::Console::poll_input)). Output the client does not take at once
/// is held, up to [`UnixSocketBackend::MAX_UNSENT`] bytes (then dropped, with a warning); output
/// while no client is connected is dropped. The socket file is removed when the backend is dropped.
#[derive(Debug)]
pub struct UnixSocketBackend {
    path: PathBuf,
    listener: UnixListener,
    client: Option<UnixStream>,
    unsent: Vec<u8>,
}

impl UnixSocketBackend {
    /// The most guest output held for a client that does not read it.
    pub const MAX_UNSENT: usize = 1 << 20;

    /// Listens on `path`. A socket already there (left by an earlier run) is replaced; any other
    /// kind of file is an error.
    pub fn bind(path: impl Into<PathBuf>) -> Result<UnixSocketBackend> {
        let path = path.into();
        let error = |what| {
            let path = path.clone();
            move |source| Error::ConsoleSocket { what, path, source }
        };
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => fs::remove_file(&path).map_err(error("remove the stale"))?,
            Ok(_) => {
                return Err(error("bind")(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(&path).map_err(error("bind"))?;
        listener.set_nonblocking(true).map_err(error("make non-blocking"))?;
        Ok(UnixSocketBackend { path, listener, client: None, unsent: Vec::new() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts a waiting client if none is connected.
    fn accept(&mut self) {
        if self.client.is_some() {
            return;
        }
        match self.listener.accept() {
            Ok((stream, _)) => match stream.set_nonblocking(true) {
                Ok(()) => {
                    log::info!("virtio-console: client connected to {}", self.path.display());
                    self.client = Some(stream);
                }
                Err(e) => log::warn!("virtio-console: client of {} dropped: {e}", self.path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("virtio-console: cannot accept a client on {}: {e}", self.path.display()),
        }
    }

    fn disconnect(&mut self, why: &str) {
        if self.client.take().is_some() {
            log::info!("virtio-console: client of {} gone: {why}", self.path.display());
        }
        self.unsent.clear();
    }

    /// Writes what the client can take of the held output.
    fn flush(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let mut sent = 0;
        let mut failure = None;
        while sent < self.unsent.len() {
            match client.write(&self.unsent[sent..]) {
                Ok(0) => {
                    failure = Some("it takes no more data".to_string());
                    break;
                }
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        self.unsent.drain(..sent);
        if let Some(why) = failure {
            self.disconnect(&why);
        }
    }
}

impl PortBackend for UnixSocketBackend {
    fn write(&mut self, data: &[u8]) {
        self.accept();
        if self.client.is_none() {
            log::debug!("virtio-console: {} bytes of output dropped: no client on {}", data.len(), self.path.display());
            return;
        }
        let room = Self::MAX_UNSENT.saturating_sub(self.unsent.len());
        if data.len() > room {
            log::warn!(
                "virtio-console: the client of {} does not read: {} bytes of output dropped",
                self.path.display(),
                data.len() - room
            );
        }
        self.unsent.extend_from_slice(&data[..data.len().min(room)]);
        self.flush();
    }

    fn read_input(&mut self, buf: &mut [u8]) -> usize {
        self.accept();
        self.flush();
        let Some(client) = self.client.as_mut() else {
            return 0;
        };
        loop {
            match client.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    self.disconnect("end of file");
                    return 0;
                }
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
                Err(e) => {
                    self.disconnect(&e.to_string());
                    return 0;
                }
            }
        }
    }

    fn connected(&mut self) -> bool {
        self.accept();
        self.client.is_some()
    }

    fn waits(&self, want_input: bool) -> Vec<Wait> {
        let wait = |fd: io::Result<OwnedFd>, readable, writable| match fd {
            Ok(fd) => Some(Wait { fd, readable, writable }),
            Err(e) => {
                log::warn!("virtio-console: cannot duplicate a descriptor of {}: {e}", self.path.display());
                None
            }
        };
        let wait = match &self.client {
            // A client waiting to be accepted.
            None => wait(self.listener.try_clone().map(OwnedFd::from), true, false),
            Some(client) if want_input || !self.unsent.is_empty() => {
                wait(client.try_clone().map(OwnedFd::from), want_input, !self.unsent.is_empty())
            }
            // Nothing to do until the guest takes held input: not even a hang-up matters yet.
            Some(_) => None,
        };
        wait.into_iter().collect()
    }
}

impl Drop for UnixSocketBackend {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::debug!("virtio-console: cannot remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Duration;

    use super::UnixSocketBackend;
    use crate::virtio::console::guest::{Guest, MULTIPORT, VERSION_1};
    use crate::virtio::console::{INPUT_BUFFER, MemoryBackend};
    use crate::virtio::spec::virtio_console::event;

    #[test]
    fn the_agent_port_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let backend = UnixSocketBackend::bind(&path).expect("bind");
        assert_eq!(backend.path(), path);
        let mut g = Guest::with(MemoryBackend::new(), (), Box::new(backend));
        assert!(g.d.transport.waits().is_empty(), "nothing to wait on before DRIVER_OK");
        g.start(VERSION_1 | MULTIPORT, 6);
        let waits = g.d.transport.waits();
        assert!(waits.len() == 1 && waits[0].readable && !waits[0].writable, "the listener: {waits:?}");
        g.post_control_buffers(8);
        g.control(0, event::DEVICE_READY, 1);
        g.control(1, event::PORT_READY, 1);
        assert_eq!(g.control_in().last(), Some(&(1, event::PORT_NAME, 1, b"mica.agent".to_vec())), "no client yet");
        g.control(1, event::PORT_OPEN, 1);

        let mut client = UnixStream::connect(&path).expect("connect");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 1, vec![])], "the client counts as the host side");
        let waits = g.d.transport.waits();
        assert!(waits.len() == 1 && waits[0].readable && !waits[0].writable, "the client: {waits:?}");
        client.write_all(b"ping").expect("client write");
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"ping".to_vec()]);
        g.transmit(5, &[b"po", b"ng"]);
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).expect("client read");
        assert_eq!(&reply, b"pong");

        // The client leaves: PORT_OPEN 0; the next one is accepted.
        drop(client);
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 0, vec![])]);
        let mut client = UnixStream::connect(&path).expect("connect again");
        g.d.transport.poll();
        assert_eq!(g.control_in(), [(1, event::PORT_OPEN, 1, vec![])]);
        client.write_all(b"again").expect("client write");
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"again".to_vec()]);

        // A client that writes more than the port holds, while the guest posts no buffers: once
        // the port is full, the client is not waited on (its input would only spin the I/O thread).
        client.write_all(&vec![7u8; INPUT_BUFFER + 100]).expect("client write");
        for _ in 0..100 {
            g.d.transport.poll();
            if g.d.transport.waits().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(g.d.transport.waits().is_empty(), "a full port waits on nothing");
        g.post_rx(4, 4096);
        g.d.notify(4);
        assert_eq!(g.received(4), [vec![7u8; 4096]], "held input goes out as buffers come");
        assert_eq!(g.d.transport.waits().len(), 1, "room again: the client is waited on");

        drop(g);
        assert!(!path.exists(), "the socket file is removed with the backend");
    }

    #[test]
    fn a_departed_client_s_input_is_not_given_to_the_next() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let backend = UnixSocketBackend::bind(&path).expect("bind");
        let mut g = Guest::with(MemoryBackend::new(), (), Box::new(backend));
        g.bring_up();
        // The guest has not opened the port: the first client's bytes are held, then it leaves.
        let mut first = UnixStream::connect(&path).expect("connect");
        first.write_all(b"stale request").expect("write");
        g.d.transport.poll();
        drop(first);
        g.d.transport.poll();
        let mut second = UnixStream::connect(&path).expect("connect again");
        second.write_all(b"fresh").expect("write");
        g.d.transport.poll();
        g.control(1, event::PORT_OPEN, 1);
        g.post_rx(4, 64);
        g.d.transport.poll();
        assert_eq!(g.received(4), [b"fresh".to_vec()]);
    }
    #[test]
    fn socket_paths_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A stale socket is replaced.
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).expect("stale socket"));
        assert!(path.exists());
        UnixSocketBackend::bind(&path).expect("bind over a stale socket");
        // A regular file is not.
        let file = dir.path().join("file");
        fs::write(&file, b"keep me").expect("file");
        let error = UnixSocketBackend::bind(&file).expect_err("a regular file").to_string();
        assert!(error.contains("cannot bind the console port socket") && error.contains("file"), "{error}");
        assert_eq!(fs::read(&file).expect("still there"), b"keep me");
        let error = UnixSocketBackend::bind(dir.path().join("missing/x.sock")).expect_err("no directory").to_string();
        assert!(error.contains("missing/x.sock"), "{error}");
    }
}
