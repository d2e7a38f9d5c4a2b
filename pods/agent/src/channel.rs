//! Opening the byte channel to the host.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use rustix::termios::{OptionalActions, isatty, tcgetattr, tcsetattr};

use crate::args::ChannelSpec;

/// The receiving half of the channel.
pub type Reader = Box<dyn Read + Send>;
/// The sending half of the channel.
pub type Writer = Box<dyn Write + Send>;

/// Where virtio-serial ports list their names.
const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";

/// Opens the channel; errors name the path or port.
pub fn open(spec: &ChannelSpec) -> io::Result<(Reader, Writer)> {
    match spec {
        ChannelSpec::Stdio => {
            let input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
            let output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
            Ok((Box::new(input), Box::new(output)))
        }
        ChannelSpec::Port(path) => open_path(path),
        ChannelSpec::PortName(name) => open_path(&find_port(Path::new(VIRTIO_PORTS), name)?),
    }
}

fn open_path(path: &Path) -> io::Result<(Reader, Writer)> {
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()));
    let meta = fs::metadata(path).map_err(|e| context("open", e))?;
    if meta.file_type().is_socket() {
        let stream = UnixStream::connect(path).map_err(|e| context("connect to", e))?;
        let reader = stream.try_clone()?;
        return Ok((Box::new(reader), Box::new(stream)));
    }
    // NOCTTY: as PID 1 (a session leader) the agent would otherwise take a console port as its
    // controlling terminal.
    let no_ctty = i32::try_from(OFlags::NOCTTY.bits()).unwrap_or(0);
    let file =
        OpenOptions::new().read(true).write(true).custom_flags(no_ctty).open(path).map_err(|e| context("open", e))?;
    if isatty(&file) {
        // A console (hvc) port: no echo, no line editing, no CR/LF translation.
        let mut termios = tcgetattr(&file).map_err(|e| context("read terminal settings of", e.into()))?;
        termios.make_raw();
        tcsetattr(&file, OptionalActions::Now, &termios).map_err(|e| context("set raw mode on", e.into()))?;
    }
    let reader = file.try_clone()?;
    Ok((Box::new(reader), Box::new(file)))
}

/// Finds the device of the virtio-serial port called `name` (QEMU's `virtserialport,name=`).
fn find_port(class_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let entries = fs::read_dir(class_dir).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot list virtio-serial ports in {}: {e}", class_dir.display()))
    })?;
    for entry in entries {
        let entry = entry?;
        // Ports without a name have an empty or missing `name` file.
        if fs::read_to_string(entry.path().join("name")).is_ok_and(|n| n.trim_end() == name) {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no virtio-serial port named {name:?} in {}", class_dir.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_resolve_to_devices() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p1", "org.other\n"), ("vport0p2", "mica.agent\n"), ("vport0p3", "")] {
            fs::create_dir(dir.path().join(port)).unwrap();
            fs::write(dir.path().join(port).join("name"), name).unwrap();
        }
        fs::create_dir(dir.path().join("vport1p1")).unwrap();
        assert_eq!(find_port(dir.path(), "mica.agent").unwrap(), Path::new("/dev/vport0p2"));
        let err = find_port(dir.path(), "org.none").unwrap_err();
        assert_eq!(err.to_string(), format!("no virtio-serial port named \"org.none\" in {}", dir.path().display()));
    }

    #[test]
    fn missing_port_path_is_named() {
        let err = open(&ChannelSpec::Port("/nonexistent/vport9p9".into())).err().unwrap();
        assert!(err.to_string().starts_with("cannot open /nonexistent/vport9p9: "), "{err}");
    }

    #[test]
    fn sockets_are_connected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (mut reader, mut writer) = open(&ChannelSpec::Port(path)).unwrap();
        let (mut host, _) = listener.accept().unwrap();
        writer.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        host.write_all(b"pong").unwrap();
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}
