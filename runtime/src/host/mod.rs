//! The component host: the state of one running component instance ([`InstanceState`], the data
//! of its Wasmtime store) and, one file per interface (the three `wasi:cli` stdio interfaces
//! share `stdio.rs`, the three `wasi:random` ones `random.rs`, and `wasi:filesystem`'s two
//! `filesystem.rs`; `wasi:sockets`' seven `sockets.rs`), the host side of every import
//! in the `mica:host/program` world (`runtime/wit/world.wit`): WASI 0.2, and Mica's own
//! `mica:kernel/log` (`log.rs`), `mica:kernel/ipc` (`ipc.rs`) and the `mica:hw` interfaces (`hw.rs`).
//!
//! What each interface gives is decided here, deny-by-default: no preopened directories and no
//! network without the manifest's `dirs` and `network`, stdin
//! at end of file, the arguments and environment from the manifest, clocks and randomness from
//! the [`Platform`]. Whether an interface links at all is decided by the manifest's grants
//! (see `crate::program`).
#![forbid(unsafe_code)]

pub mod environment;
pub mod error;
pub mod exit;
pub mod filesystem;
pub mod hw;
pub mod ipc;
pub mod log;
pub mod monotonic_clock;
pub mod poll;
pub mod random;
pub mod sockets;
pub mod stdio;
pub mod streams;
pub mod terminal;
pub mod wall_clock;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmtime::component::ResourceTable;

use crate::limits::Limits;
use crate::platform::{OutputKind, Platform};

wasmtime::component::bindgen!({
    path: "wit",
    world: "mica:host/program",
    imports: { default: trappable },
    with: {
        "wasi:io/error.error": crate::host::error::IoError,
        "wasi:io/poll.pollable": crate::host::poll::Pollable,
        "wasi:io/streams.input-stream": crate::host::streams::InputStream,
        "wasi:io/streams.output-stream": crate::host::streams::OutputStream,
        "wasi:filesystem/types.descriptor": crate::host::filesystem::Descriptor,
        "wasi:filesystem/types.directory-entry-stream": crate::host::filesystem::DirectoryEntryStream,
        "wasi:cli/terminal-input.terminal-input": crate::host::terminal::TerminalInput,
        "wasi:cli/terminal-output.terminal-output": crate::host::terminal::TerminalOutput,
        "wasi:sockets/network.network": crate::host::sockets::Network,
        "wasi:sockets/tcp.tcp-socket": crate::host::sockets::TcpSocket,
        "wasi:sockets/udp.udp-socket": crate::host::sockets::UdpSocket,
        "wasi:sockets/udp.incoming-datagram-stream": crate::host::sockets::IncomingDatagramStream,
        "wasi:sockets/udp.outgoing-datagram-stream": crate::host::sockets::OutgoingDatagramStream,
        "wasi:sockets/ip-name-lookup.resolve-address-stream": crate::host::sockets::ResolveAddressStream,
    },
});

/// Output not yet printed because its line is not complete.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Most bytes held before a line is printed anyway.
    const MAX: usize = 4096;

    /// Adds `bytes`, printing every complete line (and over-long partial ones) through `emit`.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\n' {
                emit(&self.pending);
                self.pending.clear();
            } else {
                self.pending.push(b);
                if self.pending.len() >= Self::MAX {
                    emit(&self.pending);
                    self.pending.clear();
                }
            }
        }
    }

    /// Prints what is left (a last line without its newline).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// The host-side state of one running component instance: the data of its Wasmtime store, which
/// every host interface implementation works on.
pub struct InstanceState {
    /// The component's name, for its console prefix and reports.
    pub name: String,
    /// `wasi:cli/environment` arguments (the first is the program name).
    pub args: Vec<String>,
    /// `wasi:cli/environment` variables.
    pub env: Vec<(String, String)>,
    /// Resources handed to the component.
    pub table: ResourceTable,
    /// Clocks, randomness, console, log.
    pub platform: Arc<dyn Platform>,
    /// Memory limits.
    pub limits: Limits,
    /// Pending stdout.
    pub stdout: LineBuffer,
    /// Pending stderr.
    pub stderr: LineBuffer,
    /// Set by `wasi:cli/exit`.
    pub exit_status: Option<u8>,
    /// This instance's IPC port, from the kernel (none when hosted).
    pub ipc: Option<Arc<dyn crate::ipc::IpcPort>>,
    /// This instance's hardware port, from the kernel (none when hosted).
    pub hw: Option<Arc<dyn crate::hw::HwPort>>,
    /// What `mica:kernel/ipc`'s span operations keep between calls.
    pub spans: ipc::SpanState,
    /// Its granted directories and its connections to their file system services.
    pub fs: filesystem::FsState,
    /// Its network grant and its session with the network stack.
    pub net: sockets::NetState,
}

impl core::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InstanceState")
            .field("name", &self.name)
            .field("exit_status", &self.exit_status)
            .finish_non_exhaustive()
    }
}

impl InstanceState {
    /// Sends `bytes` written to `kind` to the console, line by line, prefixed with the name.
    pub fn write_output(&mut self, kind: OutputKind, bytes: &[u8]) {
        let (platform, name) = (&self.platform, &self.name);
        let buffer = match kind {
            OutputKind::Stdout => &mut self.stdout,
            OutputKind::Stderr => &mut self.stderr,
        };
        buffer.push(bytes, |line| platform.console_line(name, kind, line));
    }

    /// Ends the instance with a trap if the platform says it is being ended from outside
    /// ([`Platform::killed`]); called after every host call that may wait.
    pub fn check_killed(&self) -> wasmtime::Result<()> {
        if self.platform.killed() {
            return Err(wasmtime::format_err!("ended by the kernel (killed from outside: fault injection)"));
        }
        Ok(())
    }

    /// Prints any partial last lines.
    pub fn flush_output(&mut self) {
        let (platform, name) = (&self.platform, &self.name);
        self.stdout.flush(|line| platform.console_line(name, OutputKind::Stdout, line));
        self.stderr.flush(|line| platform.console_line(name, OutputKind::Stderr, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_splits_lines() {
        let mut b = LineBuffer::default();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        b.push(b"hel", |l| lines.push(l.to_vec()));
        b.push(b"lo\nwor", |l| lines.push(l.to_vec()));
        b.push(b"ld\n\nx", |l| lines.push(l.to_vec()));
        b.flush(|l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"hello".to_vec(), b"world".to_vec(), b"".to_vec(), b"x".to_vec()]);
    }
}
