//! The system manifest a user writes (TOML), checked before anything boots.
//!
//! ```toml
//! [[component]]
//! name = "hello"                  # [a-z0-9][a-z0-9-]*, unique; the console prefix
//! wasm = "hello/hello.wasm"       # a component, relative to this file; or `crate = "hello"`
//! args = ["--greet", "world"]     # optional
//! env = { GREETING = "hi" }       # optional
//! memory_limit = "64MiB"          # optional (default 64MiB): bytes, or a number with B/KiB/MiB/GiB
//! fuel = 100_000_000              # optional: a CPU budget in Wasmtime fuel units, or ...
//! cpu_time_limit = "2s"           # ... a CPU time budget (ms or s); at most one of the two
//! restart = "never"               # optional: "never" (default), "on-failure" or "always"
//! priority = "normal"             # optional: "high", "normal" (default) or "low"
//! grants = ["wasi:cli", "wasi:io", "wasi:clocks", "wasi:random", "wasi:filesystem"]
//! handles = 64                    # optional (default 64): the size of its handle table, for channel ends and hardware handles alike (1..=4096)
//! create_channels = false         # optional: whether it may create channels at run time
//! devices = ["virtio-blk.0"]      # optional: devices it may claim through mica:hw (needs that grant)
//! dma_limit = "1MiB"              # optional (default 1MiB): DMA memory it may hold at once
//! aot = false                     # optional: compiled ahead of time even when the system compiles
//!                                 #   the others at boot (late binding): what must run before the
//!                                 #   module store, such as its block driver
//! start = "native"                # optional: with late binding, "native" (default) waits for its
//!                                 #   native code; "pulley" starts at once on Pulley bytecode
//!                                 #   (interpreted) and runs native code from its next start
//! dirs = [{ path = "/data", connection = "files", read_only = false }]
//!                                 # optional: directories it finds through wasi:filesystem (needs
//!                                 #   that grant): `path` (absolute) is served by the file system
//!                                 #   service at the other end of its connection `connection`
//!                                 #   (a `connect` entry from this component)
//! module_store = false            # optional: this component is the system's module store (at most
//!                                 #   one; compiled ahead of time unless it starts on Pulley; the
//!                                 #   kernel connects to it as `modules`, so it needs the grant
//!                                 #   mica:kernel/ipc)
//!
//! # The machine's devices (optional), in the order the machine presents them; the kernel names
//! # them kind.N (N counts devices of one kind): virtio-blk.0, virtio-rng.0, ...
//! [[device]]
//! kind = "virtio-blk"             # virtio-blk, virtio-rng, virtio-net or virtio-console
//! disk = "disk.img"               # virtio-blk: raw image, relative to this file (default: one
//!                                 #   under target/mica/disks/ per system and device); created
//!                                 #   zeroed when missing
//! size = "16MiB"                  # virtio-blk: the size of a new image (default 16MiB)
//! read_only = false               # virtio-blk: whether the guest may only read it
//! hostfwd = ["tcp:127.0.0.1:8080-:80"]  # virtio-net: QEMU user-networking port forwards
//! output = "console.log"          # virtio-console: the file its output goes to, relative to this
//!                                 #   file (default: one under target/mica/consoles/), new each boot
//!
//! # IPC connections (optional): `to` serves, `from` is a client; both call connect("kv").
//! connect = [{ from = "client", to = "kv", name = "kv" }]
//! ```
//!
//! (`connect` is a top-level key, so it goes before the first `[[component]]` table.) Both ends
//! of a connection must be granted `mica:kernel/ipc`; a component may not be both client and
//! server of one connection name, nor have two connections of the same name.
//!
//! `crate = "NAME"` names a component crate in the repository's `components/` (or `drivers/`) directory, which
//! xtask builds for `wasm32-wasip2`; `wasm` names a component built elsewhere. Grants are
//! deny-by-default: an interface (`wasi:cli/stdout`, `mica:kernel/log`), a whole package
//! (`wasi:cli`) or a whole namespace (`wasi`, `mica`) that the runtime provides. Every error names
//! the file, the component and the key.
//!
//! serde reads the text into the model of [`raw`] (which keys each table has, their types, and the
//! closed sets of values: restart policies, priorities, device kinds, sizes, durations); this
//! module checks what depends on more than one value and names the devices.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use raw::{DeviceKind, RawConnection, RawDevice, component_label, device_label};

mod raw;

/// Memory budget when the manifest gives none.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

/// Where a component's `.wasm` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file (absolute, resolved against the manifest's directory).
    Wasm(PathBuf),
    /// A crate in `components/`, built by xtask.
    Crate(String),
    /// A directory of C sources (absolute, resolved against the manifest's directory), built by
    /// xtask with clang and wasi-libc (`xtask/src/c_component.rs`).
    C(PathBuf),
}

/// One checked component entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// Its name.
    pub name: String,
    /// Its code.
    pub source: Source,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment, sorted by name.
    pub env: Vec<(String, String)>,
    /// Memory budget in bytes.
    pub memory_limit: u64,
    /// Fuel budget.
    pub fuel: Option<u64>,
    /// CPU time budget in milliseconds.
    pub cpu_time_limit_ms: Option<u64>,
    /// Restart policy.
    pub restart: mica_bundle::Restart,
    /// Grants.
    pub grants: Vec<String>,
    /// Handle table capacity.
    pub handles: u16,
    /// May create channels.
    pub create_channels: bool,
    /// Thread priority.
    pub priority: mica_bundle::Priority,
    /// Devices it may claim.
    pub devices: Vec<String>,
    /// DMA memory it may hold, in bytes.
    pub dma_limit: u64,
    /// Whether it is compiled ahead of time even in a late-binding bundle.
    pub aot: bool,
    /// Whether it is the system's module store.
    pub module_store: bool,
    /// Whether it starts on Pulley bytecode while its native code compiles (`start = "pulley"`).
    pub pulley_first: bool,
    /// The directories it finds through `wasi:filesystem`.
    pub dirs: Vec<mica_bundle::DirGrant>,
    /// Its way to the network through `wasi:sockets`.
    pub network: Option<mica_bundle::NetworkGrant>,
}

/// One checked machine device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its kernel name: kind.N.
    pub name: String,
    /// Its kind (`virtio-blk`, ...).
    pub kind: String,
    /// A block device's image, if the manifest names one (absolute).
    pub disk: Option<PathBuf>,
    /// A new block image's size in bytes.
    pub disk_size: u64,
    /// Read-only block device.
    pub read_only: bool,
    /// Port forwards of a network device.
    pub hostfwd: Vec<String>,
    /// Where a console's output goes, if the manifest names a file (absolute).
    pub output: Option<PathBuf>,
}

/// One checked IPC connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The client.
    pub from: String,
    /// The server.
    pub to: String,
    /// The name both connect with.
    pub name: String,
}

/// A checked manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The file it came from.
    pub path: PathBuf,
    /// Its components, in order.
    pub components: Vec<Component>,
    /// Its IPC connections.
    pub connections: Vec<Connection>,
    /// The machine's devices.
    pub devices: Vec<Device>,
}

/// DMA memory a component may hold when the manifest gives no `dma_limit`.
pub const DEFAULT_DMA_LIMIT: u64 = 1 << 20;
/// Size of a new disk image when the manifest gives none.
pub const DEFAULT_DISK_SIZE: u64 = 16 << 20;

/// Handle table capacity when the manifest gives none.
pub const DEFAULT_HANDLES: u16 = 64;
/// The largest handle table a manifest may ask for.
pub const MAX_HANDLES: u16 = 4096;

/// The entry of a manifest file that an error is about: errors made here name the file, the entry
/// and the key.
struct EntrySite<'a> {
    file: &'a Path,
    /// The entry as errors name it: `component 'hello'`, `device 1 (virtio-blk)`.
    entry: String,
}

impl EntrySite<'_> {
    fn component<'a>(file: &'a Path, name: &str) -> EntrySite<'a> {
        EntrySite { file, entry: component_label(name) }
    }

    fn device(file: &Path, index: usize, kind: DeviceKind) -> EntrySite<'_> {
        EntrySite { file, entry: device_label(index, kind) }
    }

    fn err(&self, key: &str, msg: impl fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {}: {key}: {msg}", self.file.display(), self.entry)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 48
}

/// The drivers' directory beside `components_dir` (`drivers/`: driver components live there).
pub fn drivers_dir(components_dir: &Path) -> PathBuf {
    components_dir.parent().unwrap_or(Path::new(".")).join("drivers")
}

/// The directory of component crate `name`: in `components_dir`, else in the drivers' directory.
pub fn crate_dir(components_dir: &Path, name: &str) -> Option<PathBuf> {
    [components_dir.join(name), drivers_dir(components_dir).join(name)]
        .into_iter()
        .find(|dir| dir.join("Cargo.toml").is_file())
}

/// Reads and checks the manifest at `path`. `components_dir` is where `crate = ...` entries live.
pub fn load(path: &Path, components_dir: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading system manifest {}", path.display()))?;
    parse(&text, path, components_dir)
}

/// Checks manifest text (`path` is used in errors and to resolve relative paths).
pub fn parse(text: &str, path: &Path, components_dir: &Path) -> Result<Manifest> {
    let file = raw::read(text, path)?;
    if file.component.is_empty() {
        bail!("{}: no [[component]] entries", path.display());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let devices = check_devices(path, base, file.device)?;
    let provided: Vec<&str> = mica_runtime::program::provided_interfaces().collect();
    let mut components: Vec<Component> = Vec::new();
    for raw in file.component {
        let site = EntrySite::component(path, &raw.name);
        if !valid_name(&raw.name) {
            return Err(site.err("name", "must match [a-z0-9][a-z0-9-]* (at most 48 characters)"));
        }
        if components.iter().any(|c| c.name == raw.name) {
            return Err(site.err("name", "another component has this name"));
        }
        let source = check_source(&site, raw.wasm, raw.krate, raw.c, base, components_dir)?;
        if raw.fuel.is_some() && raw.cpu_time_limit.is_some() {
            return Err(site.err("fuel", "give `fuel` or `cpu_time_limit`, not both"));
        }
        if raw.fuel == Some(0) {
            return Err(site.err("fuel", "must be more than 0"));
        }
        check_grants(&site, &raw.grants, &provided)?;
        let handles = raw.handles.unwrap_or(DEFAULT_HANDLES);
        if !(1..=MAX_HANDLES).contains(&handles) {
            return Err(site.err("handles", format!("{handles} is out of range: give 1 to {MAX_HANDLES}")));
        }
        for d in &raw.devices {
            if !devices.iter().any(|m| m.name == *d) {
                let known: Vec<&str> = devices.iter().map(|m| m.name.as_str()).collect();
                return Err(site.err(
                    "devices",
                    format!(
                        "{d:?} is not a device of this manifest's machine (its [[device]] entries: {})",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
            if let Some(other) = components.iter().find(|c| c.devices.contains(d)) {
                return Err(site.err("devices", format!("{d:?} is already granted to component '{}'", other.name)));
            }
        }
        if !raw.devices.is_empty()
            && !raw.grants.iter().any(|g| mica_runtime::program::grant_covers(g, "mica:hw/device"))
        {
            return Err(site.err("devices", "claiming a device needs the grant \"mica:hw\" (or \"mica:hw/device\")"));
        }
        let dirs = check_dirs(&site, raw.dirs, &raw.grants)?;
        let network = check_network(&site, raw.network, &raw.grants)?;
        if raw.aot && raw.start == raw::Start::Pulley {
            bail!(
                "{}: component '{}': aot = true and start = \"pulley\" contradict: code compiled ahead of time \
                 starts native",
                path.display(),
                raw.name
            );
        }
        components.push(Component {
            name: raw.name,
            source,
            args: raw.args,
            env: raw.env.into_iter().collect(),
            memory_limit: raw.memory_limit.map_or(DEFAULT_MEMORY_LIMIT, |size| size.0),
            fuel: raw.fuel,
            cpu_time_limit_ms: raw.cpu_time_limit.map(|ms| ms.0),
            restart: raw.restart,
            grants: raw.grants,
            handles,
            create_channels: raw.create_channels,
            priority: raw.priority,
            devices: raw.devices,
            dma_limit: raw.dma_limit.map_or(DEFAULT_DMA_LIMIT, |size| size.0),
            // The store runs before it can answer for its own code: compiled ahead of time,
            // unless it starts on (portable) Pulley bytecode.
            aot: raw.aot || (raw.module_store && raw.start != raw::Start::Pulley),
            module_store: raw.module_store,
            pulley_first: raw.start == raw::Start::Pulley,
            dirs,
            network,
        });
    }
    let stores: Vec<&str> = components.iter().filter(|c| c.module_store).map(|c| c.name.as_str()).collect();
    if stores.len() > 1 {
        bail!(
            "{}: module_store: components {} are all marked; a system has one module store",
            path.display(),
            stores.join(", ")
        );
    }
    if let Some(store) = components.iter().find(|c| c.module_store)
        && !store.grants.iter().any(|g| mica_runtime::program::grant_covers(g, "mica:kernel/ipc"))
    {
        bail!(
            "{}: component '{}': module_store: the module store serves the kernel over IPC, so it needs the grant \
             \"mica:kernel/ipc\"",
            path.display(),
            store.name
        );
    }
    let connections = check_connections(path, &components, file.connect)?;
    for c in &components {
        for d in &c.dirs {
            if !connections.iter().any(|k| k.from == c.name && k.name == d.connection) {
                bail!(
                    "{}: component '{}': dirs: {:?} is served over connection {:?}, but no `connect` entry \
                     gives it one (add {{ from = {:?}, to = \"<the file system service>\", name = {:?} }})",
                    path.display(),
                    c.name,
                    d.path,
                    d.connection,
                    c.name,
                    d.connection
                );
            }
        }
        if let Some(n) = &c.network
            && !connections.iter().any(|k| k.from == c.name && k.name == n.connection)
        {
            bail!(
                "{}: component '{}': network: the network stack is reached over connection {:?}, but no `connect` \
                 entry gives it one (add {{ from = {:?}, to = \"<the network stack>\", name = {:?} }})",
                path.display(),
                c.name,
                n.connection,
                c.name,
                n.connection
            );
        }
    }
    Ok(Manifest { path: path.to_owned(), components, connections, devices })
}

/// Checks a component's `wasm`, `crate` or `c` (exactly one of them, naming a file, a component
/// crate or a directory of C sources).
fn check_source(
    site: &EntrySite<'_>,
    wasm: Option<PathBuf>,
    krate: Option<String>,
    c: Option<PathBuf>,
    base: &Path,
    components_dir: &Path,
) -> Result<Source> {
    let (wasm, krate) = match (wasm, krate, c) {
        (None, None, Some(dir)) => {
            let full = base.join(&dir);
            let has_sources = std::fs::read_dir(&full)
                .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "c")))
                .unwrap_or(false);
            if !has_sources {
                return Err(site.err("c", format!("{} is not a directory with .c files", full.display())));
            }
            return Ok(Source::C(full.canonicalize().unwrap_or(full)));
        }
        (wasm, krate, None) => (wasm, krate),
        (_, _, Some(_)) => return Err(site.err("c", "give one of `wasm`, `crate` and `c`, not several")),
    };
    match (wasm, krate) {
        (Some(_), Some(_)) => Err(site.err("wasm", "give `wasm` or `crate`, not both")),
        (None, None) => Err(site.err(
            "wasm",
            "missing: give `wasm = \"path.wasm\"`, `crate = \"name\"` or `c = \"directory of C sources\"`",
        )),
        (Some(wasm), None) => {
            let full = base.join(&wasm);
            if !full.is_file() {
                return Err(site.err("wasm", format!("{} does not exist", full.display())));
            }
            Ok(Source::Wasm(full))
        }
        (None, Some(krate)) => {
            if crate_dir(components_dir, &krate).is_none() {
                return Err(site.err(
                    "crate",
                    format!(
                        "no component crate {krate} in {} or {}",
                        components_dir.display(),
                        drivers_dir(components_dir).display()
                    ),
                ));
            }
            Ok(Source::Crate(krate))
        }
    }
}

/// Checks a component's `dirs`: absolute paths without `.`, `..` or empty components, each
/// once, served over connections (checked with the `connect` entries), with the grant
/// `wasi:filesystem`.
fn check_dirs(site: &EntrySite<'_>, raw: Vec<raw::RawDir>, grants: &[String]) -> Result<Vec<mica_bundle::DirGrant>> {
    if !raw.is_empty() && !grants.iter().any(|g| mica_runtime::program::grant_covers(g, "wasi:filesystem/preopens")) {
        return Err(site.err("dirs", "directories need the grant \"wasi:filesystem\" (or \"wasi\")"));
    }
    let mut dirs: Vec<mica_bundle::DirGrant> = Vec::new();
    for d in raw {
        // `/` itself is a path too: the program then sees the volume as its root directory.
        let components: Option<Vec<&str>> = match d.path.strip_prefix('/') {
            Some("") => Some(Vec::new()),
            Some(p) => Some(p.split('/').collect()),
            None => None,
        };
        if components.is_none_or(|cs| cs.iter().any(|c| c.is_empty() || *c == "." || *c == "..")) {
            return Err(site.err(
                "dirs",
                format!("path {:?}: give an absolute path such as \"/data\", without `.`, `..` or `//`", d.path),
            ));
        }
        if dirs.iter().any(|other| other.path == d.path) {
            return Err(site.err("dirs", format!("path {:?} is given twice", d.path)));
        }
        dirs.push(mica_bundle::DirGrant { path: d.path, connection: d.connection, read_only: d.read_only });
    }
    Ok(dirs)
}

/// Checks a component's `network`: the grant `wasi:sockets`, each port to listen on once and not
/// 0, and each of `hosts` a host name and an IP address (its connection is checked with the
/// `connect` entries).
fn check_network(
    site: &EntrySite<'_>,
    raw: Option<raw::RawNetwork>,
    grants: &[String],
) -> Result<Option<mica_bundle::NetworkGrant>> {
    let Some(raw) = raw else { return Ok(None) };
    if !grants.iter().any(|g| mica_runtime::program::grant_covers(g, "wasi:sockets/tcp")) {
        return Err(site.err("network", "the network needs the grant \"wasi:sockets\" (or \"wasi\")"));
    }
    let mut listen: Vec<u16> = Vec::new();
    for port in raw.listen {
        if port == 0 {
            return Err(site.err("network", "listen: port 0 is not a port to listen on"));
        }
        if listen.contains(&port) {
            return Err(site.err("network", format!("listen: port {port} is given twice")));
        }
        listen.push(port);
    }
    let mut hosts = Vec::new();
    for (name, ip) in raw.hosts {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.parse::<std::net::IpAddr>().is_err()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid || name.eq_ignore_ascii_case("localhost") {
            return Err(site.err(
                "network",
                format!("hosts: {name:?} is not a host name to give (letters, digits, `-` and `.`; not localhost)"),
            ));
        }
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(site.err("network", format!("hosts: {name:?} = {ip:?} is not an IP address")));
        }
        let name = name.to_ascii_lowercase();
        if hosts.iter().any(|(n, _)| *n == name) {
            return Err(site.err("network", format!("hosts: {name:?} is given twice")));
        }
        hosts.push((name, ip));
    }
    Ok(Some(mica_bundle::NetworkGrant { connection: raw.connection, listen, hosts }))
}

/// Checks that each of `grants` covers something the runtime provides (`provided`).
fn check_grants(site: &EntrySite<'_>, grants: &[String], provided: &[&str]) -> Result<()> {
    for g in grants {
        if !provided.iter().any(|i| mica_runtime::program::grant_covers(g, i)) {
            return Err(site.err(
                "grants",
                format!("{g:?} is not an interface or package Mica provides (provided: {})", provided.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Checks the `[[device]]` entries and names them as the kernel will: kind.N
/// ([`mica_bundle::device_names`]).
fn check_devices(path: &Path, base: &Path, raw: Vec<RawDevice>) -> Result<Vec<Device>> {
    let names = mica_bundle::device_names(raw.iter().map(|d| d.kind.as_str()));
    let mut devices: Vec<Device> = Vec::new();
    for ((i, d), name) in raw.into_iter().enumerate().zip(names) {
        let site = EntrySite::device(path, i, d.kind);
        let block = d.kind == DeviceKind::VirtioBlk;
        if !block && (d.disk.is_some() || d.size.is_some() || d.read_only) {
            return Err(site.err("disk", "`disk`, `size` and `read_only` are for virtio-blk devices only"));
        }
        if d.kind != DeviceKind::VirtioConsole && d.output.is_some() {
            return Err(site.err("output", "`output` is for virtio-console devices only"));
        }
        if d.kind != DeviceKind::VirtioNet && !d.hostfwd.is_empty() {
            return Err(site.err("hostfwd", "port forwards are for virtio-net devices only"));
        }
        for f in &d.hostfwd {
            if !(f.starts_with("tcp:") || f.starts_with("udp:")) || !f.contains('-') {
                return Err(
                    site.err("hostfwd", format!("{f:?}: expected QEMU's form, e.g. \"tcp:127.0.0.1:8080-:80\""))
                );
            }
        }
        let disk_size = d.size.map_or(DEFAULT_DISK_SIZE, |size| size.0);
        if block && (disk_size == 0 || disk_size % 512 != 0) {
            return Err(site.err("size", format!("{disk_size} bytes is not a positive multiple of 512")));
        }
        devices.push(Device {
            name,
            disk: d.disk.as_ref().map(|p| base.join(p)),
            kind: d.kind.to_string(),
            disk_size,
            read_only: d.read_only,
            hostfwd: d.hostfwd,
            output: d.output.as_ref().map(|p| base.join(p)),
        });
    }
    Ok(devices)
}

/// Checks the `connect` entries against the components.
fn check_connections(path: &Path, components: &[Component], raw: Vec<RawConnection>) -> Result<Vec<Connection>> {
    let mut out: Vec<Connection> = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let err = |msg: String| {
            anyhow::anyhow!("{}: connect[{i}] ({} -> {}, {:?}): {msg}", path.display(), c.from, c.to, c.name)
        };
        if !valid_name(&c.name) {
            return Err(err("name: must match [a-z0-9][a-z0-9-]* (at most 48 characters)".into()));
        }
        for (key, who) in [("from", &c.from), ("to", &c.to)] {
            let Some(component) = components.iter().find(|k| k.name == *who) else {
                return Err(err(format!("{key}: no component is named {who:?}")));
            };
            // A client whose connection serves its directories reaches it through the runtime's
            // wasi:filesystem, without IPC of its own.
            let for_dirs = key == "from"
                && (component.dirs.iter().any(|d| d.connection == c.name)
                    || component.network.as_ref().is_some_and(|n| n.connection == c.name));
            if !for_dirs && !component.grants.iter().any(|g| mica_runtime::program::grant_covers(g, "mica:kernel/ipc"))
            {
                return Err(err(format!(
                    "{key}: component {who:?} is not granted mica:kernel/ipc (add it to its `grants`)"
                )));
            }
        }
        if c.from == c.to {
            return Err(err("a component cannot connect to itself".into()));
        }
        // Each component sees each of its connections by name: no name twice, except the one
        // service a server offers to several clients.
        for other in &out {
            let same_service = other.to == c.to && other.name == c.name;
            if same_service && other.from == c.from {
                return Err(err("this connection is given twice".into()));
            }
            let clash = |who: &str| {
                other.name == c.name && (other.from == who || other.to == who) && !(same_service && other.to == who)
            };
            for who in [&c.from, &c.to] {
                if clash(who) {
                    return Err(err(format!(
                        "component {who:?} already has a connection named {:?} ({} -> {})",
                        c.name, other.from, other.to
                    )));
                }
            }
        }
        out.push(Connection { from: c.from, to: c.to, name: c.name });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
