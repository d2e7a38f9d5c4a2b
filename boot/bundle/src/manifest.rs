//! The system manifest as the kernel reads it: what xtask made of the user's TOML manifest,
//! already validated, with each component's artifact and the key it was compiled for.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// What happens when a component ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// It stays ended.
    Never,
    /// It is started again when it fails.
    OnFailure,
    /// It is started again whenever it ends (a service).
    Always,
}

/// How urgent a component's thread is (the scheduler's strict priorities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// Runs only when nothing else is ready.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Runs before everything else.
    High,
}

/// Native code compiled ahead of time, and the key it was compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeCode {
    /// The bundle entry holding the artifact.
    pub artifact: String,
    /// The Wasmtime version the artifact was compiled with.
    pub wasmtime_version: String,
    /// The target it was compiled for.
    pub target: String,
    /// The version of the shared engine settings it was compiled with.
    pub config_version: u32,
    /// Whether its code was compiled with fuel counting (needed by `fuel`).
    pub fuel_instrumented: bool,
    /// Whether its code was compiled with epoch deadline checks (needed by `cpu_time_limit_ms`).
    pub epochs_instrumented: bool,
    /// The CPU features its code may use (Rust names: `sse4.1`, `avx2`, ...).
    pub cpu_features: Vec<String>,
}

/// A component's code, as the bundle carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Code {
    /// Compiled ahead of time on the build host (`cargo xtask run --aot`).
    Native(NativeCode),
    /// Wasm, which the system compiles for the CPU it finds, with the instrumentation its limits
    /// need, in the compiler component ([`SystemManifest::compiler`]).
    Wasm {
        /// The bundle entry holding the wasm.
        entry: String,
        /// The wasm's SHA-256, which names it in the module store (computed once, when the
        /// bundle is made, rather than at every boot).
        sha256: [u8; 32],
        /// Pulley bytecode for the component to start on at once, interpreted, while its native
        /// code compiles (`start = "pulley"`); none to wait for native code.
        pulley: Option<NativeCode>,
    },
}

/// The compiler component, which compiles [`Code::Wasm`] components inside the system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompilerSpec {
    /// Its own code, compiled ahead of time (the one component that must be).
    pub code: NativeCode,
    /// Its linear memory budget in bytes.
    pub memory_limit: u64,
}

/// One component to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// Its name (console prefix, reports).
    pub name: String,
    /// Its code.
    pub code: Code,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Linear memory budget in bytes.
    pub memory_limit: u64,
    /// Fuel budget, if any.
    pub fuel: Option<u64>,
    /// CPU time budget in milliseconds, if any.
    pub cpu_time_limit_ms: Option<u64>,
    /// Restart policy.
    pub restart: Restart,
    /// The interfaces (or whole packages) it may import.
    pub grants: Vec<String>,
    /// The capacity of each instance's handle table.
    pub handles: u16,
    /// Whether it may create channels at run time.
    pub create_channels: bool,
    /// Its thread's priority.
    pub priority: Priority,
    /// The devices it may claim through `mica:hw` (`virtio-blk.0`, ...).
    pub devices: Vec<String>,
    /// The most DMA memory it may hold at once, in bytes.
    pub dma_limit: u64,
    /// The directories it may reach through `wasi:filesystem`, its preopens.
    pub dirs: Vec<DirGrant>,
    /// Its way to the network through `wasi:sockets` (none: no network).
    pub network: Option<NetworkGrant>,
}

/// A component's access to the network through `wasi:sockets`: the network stack's connection
/// (the sockets protocol) and the ports it may listen on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkGrant {
    /// The component's connection to the network stack.
    pub connection: String,
    /// The ports it may listen on (and bind UDP sockets to); it may connect anywhere.
    pub listen: Vec<u16>,
    /// Names `ip-name-lookup` answers for it, beside `localhost` and IP literals: (name, IP
    /// address as text), the names in lowercase.
    pub hosts: Vec<(String, String)>,
}

/// A directory a component may reach through `wasi:filesystem`: a file system service's volume
/// (the files protocol), seen by the component as `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// Where the component finds it: an absolute path such as `/data`.
    pub path: String,
    /// The component's connection to the file system service that serves it.
    pub connection: String,
    /// Whether the component may only read.
    pub read_only: bool,
}

/// A device of the virtual machine the system is meant for (the manifest's `[[device]]`
/// entries): launchers turn these into hypervisor arguments; the kernel finds the devices itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDevice {
    /// `virtio-blk`, `virtio-rng`, `virtio-net` or `virtio-console`.
    pub kind: String,
    /// For a block device: its raw disk image (absolute path), created zeroed when missing.
    pub disk: Option<String>,
    /// For a block device: the size a new disk image gets, in bytes.
    pub disk_size: u64,
    /// For a block device: whether the guest may only read it.
    pub read_only: bool,
    /// For a network device: QEMU user-networking port forwards (`tcp:127.0.0.1:8080-:80`).
    pub hostfwd: Vec<String>,
    /// For a console: the host file its output goes to (absolute path), written afresh each boot.
    pub output: Option<String>,
}

/// A named IPC connection between two components (client `from`, server `to`), by index into
/// [`SystemManifest::components`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The name both sides connect with.
    pub name: String,
    /// The client's index.
    pub from: u32,
    /// The server's index.
    pub to: u32,
}

/// Everything the kernel is to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemManifest {
    /// The components, in start order.
    pub components: Vec<ComponentSpec>,
    /// The IPC connections between them.
    pub connections: Vec<Connection>,
    /// The devices of the machine it is meant for, in the order the machine presents them.
    pub machine: Vec<MachineDevice>,
    /// The compiler component, when any component's code is wasm.
    pub compiler: Option<CompilerSpec>,
    /// The component that is the module store, by index into [`SystemManifest::components`]: the
    /// kernel keeps what it compiles there (connection `modules`, from the kernel to it).
    pub module_store: Option<u32>,
}

/// The manifest entry could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "system manifest cannot be decoded: {}", self.0)
    }
}

impl SystemManifest {
    /// Encodes it for the bundle.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes it from the bundle.
    pub fn decode(bytes: &[u8]) -> Result<SystemManifest, ManifestError> {
        postcard::from_bytes(bytes).map_err(|e| ManifestError(alloc::format!("{e}")))
    }
}
