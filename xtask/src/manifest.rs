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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Memory budget when the manifest gives none.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    connect: Vec<RawConnection>,
    #[serde(default)]
    component: Vec<RawComponent>,
    #[serde(default)]
    device: Vec<RawDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    kind: String,
    disk: Option<PathBuf>,
    size: Option<toml::Value>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    hostfwd: Vec<String>,
    output: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    from: String,
    to: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    wasm: Option<PathBuf>,
    #[serde(rename = "crate")]
    krate: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    memory_limit: Option<toml::Value>,
    fuel: Option<u64>,
    cpu_time_limit: Option<String>,
    restart: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
    handles: Option<u16>,
    #[serde(default)]
    create_channels: bool,
    priority: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
    dma_limit: Option<toml::Value>,
}

/// Where a component's `.wasm` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file (absolute, resolved against the manifest's directory).
    Wasm(PathBuf),
    /// A crate in `components/`, built by xtask.
    Crate(String),
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
/// The device kinds a manifest may ask for.
pub const DEVICE_KINDS: [&str; 4] = ["virtio-blk", "virtio-rng", "virtio-net", "virtio-console"];

/// Handle table capacity when the manifest gives none.
pub const DEFAULT_HANDLES: u16 = 64;
/// The largest handle table a manifest may ask for.
pub const MAX_HANDLES: u16 = 4096;

struct Ctx<'a> {
    file: &'a Path,
    component: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: &str, msg: impl fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: component '{}': {key}: {msg}", self.file.display(), self.component)
    }
}

/// Parses a size such as `65536`, `"512KiB"`, `"64MiB"`, `"1GiB"`.
pub fn parse_size(value: &toml::Value) -> Result<u64, String> {
    let expected = "a number of bytes or a string like \"512KiB\", \"64MiB\", \"1GiB\"";
    match value {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| format!("{s:?} is not {expected}"))?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return Err(format!("{s:?} has unknown unit {unit:?}: expected {expected}")),
            };
            n.checked_mul(mult).filter(|b| *b > 0).ok_or_else(|| format!("{s:?} is not {expected}"))
        }
        other => Err(format!("{other} is not {expected}")),
    }
}

/// Parses a duration such as `"500ms"` or `"2s"` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let expected = "a duration like \"500ms\" or \"2s\"";
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else {
        return Err(format!("{s:?} is not {expected}"));
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|ms| *ms > 0)
        .ok_or(format!("{s:?} is not {expected}"))
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
    let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.component.is_empty() {
        bail!("{}: no [[component]] entries", path.display());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let devices = check_devices(path, base, file.device)?;
    let provided: Vec<&str> = mica_runtime::program::provided_interfaces().collect();
    let mut components: Vec<Component> = Vec::new();
    for raw in file.component {
        let cx = Ctx { file: path, component: &raw.name };
        if !valid_name(&raw.name) {
            return Err(cx.err("name", "must match [a-z0-9][a-z0-9-]* (at most 48 characters)"));
        }
        if components.iter().any(|c| c.name == raw.name) {
            return Err(cx.err("name", "another component has this name"));
        }
        let source = match (raw.wasm, raw.krate) {
            (Some(_), Some(_)) => return Err(cx.err("wasm", "give `wasm` or `crate`, not both")),
            (None, None) => return Err(cx.err("wasm", "missing: give `wasm = \"path.wasm\"` or `crate = \"name\"`")),
            (Some(wasm), None) => {
                let full = base.join(&wasm);
                if !full.is_file() {
                    return Err(cx.err("wasm", format!("{} does not exist", full.display())));
                }
                Source::Wasm(full)
            }
            (None, Some(krate)) => {
                if crate_dir(components_dir, &krate).is_none() {
                    return Err(cx.err(
                        "crate",
                        format!(
                            "no component crate {krate} in {} or {}",
                            components_dir.display(),
                            drivers_dir(components_dir).display()
                        ),
                    ));
                }
                Source::Crate(krate)
            }
        };
        let memory_limit = match &raw.memory_limit {
            None => DEFAULT_MEMORY_LIMIT,
            Some(v) => parse_size(v).map_err(|e| cx.err("memory_limit", e))?,
        };
        if raw.fuel.is_some() && raw.cpu_time_limit.is_some() {
            return Err(cx.err("fuel", "give `fuel` or `cpu_time_limit`, not both"));
        }
        if raw.fuel == Some(0) {
            return Err(cx.err("fuel", "must be more than 0"));
        }
        let cpu_time_limit_ms = raw
            .cpu_time_limit
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| cx.err("cpu_time_limit", e))?;
        let restart = match raw.restart.as_deref() {
            None | Some("never") => mica_bundle::Restart::Never,
            Some("on-failure") => mica_bundle::Restart::OnFailure,
            Some("always") => mica_bundle::Restart::Always,
            Some(other) => {
                return Err(cx.err("restart", format!("{other:?}: expected \"never\", \"on-failure\" or \"always\"")));
            }
        };
        for g in &raw.grants {
            if !provided.iter().any(|i| mica_runtime::program::grant_covers(g, i)) {
                return Err(cx.err(
                    "grants",
                    format!("{g:?} is not an interface or package Mica provides (provided: {})", provided.join(", ")),
                ));
            }
        }
        let handles = raw.handles.unwrap_or(DEFAULT_HANDLES);
        if !(1..=MAX_HANDLES).contains(&handles) {
            return Err(cx.err("handles", format!("{handles} is out of range: give 1 to {MAX_HANDLES}")));
        }
        let priority = match raw.priority.as_deref() {
            None | Some("normal") => mica_bundle::Priority::Normal,
            Some("high") => mica_bundle::Priority::High,
            Some("low") => mica_bundle::Priority::Low,
            Some(other) => {
                return Err(cx.err("priority", format!("{other:?}: expected \"high\", \"normal\" or \"low\"")));
            }
        };
        for d in &raw.devices {
            if !devices.iter().any(|m| m.name == *d) {
                let known: Vec<&str> = devices.iter().map(|m| m.name.as_str()).collect();
                return Err(cx.err(
                    "devices",
                    format!(
                        "{d:?} is not a device of this manifest's machine (its [[device]] entries: {})",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
            if let Some(other) = components.iter().find(|c| c.devices.contains(d)) {
                return Err(cx.err("devices", format!("{d:?} is already granted to component '{}'", other.name)));
            }
        }
        if !raw.devices.is_empty()
            && !raw.grants.iter().any(|g| mica_runtime::program::grant_covers(g, "mica:hw/device"))
        {
            return Err(cx.err("devices", "claiming a device needs the grant \"mica:hw\" (or \"mica:hw/device\")"));
        }
        let dma_limit = match &raw.dma_limit {
            None => DEFAULT_DMA_LIMIT,
            Some(v) => parse_size(v).map_err(|e| cx.err("dma_limit", e))?,
        };
        components.push(Component {
            name: raw.name,
            source,
            args: raw.args,
            env: raw.env.into_iter().collect(),
            memory_limit,
            fuel: raw.fuel,
            cpu_time_limit_ms,
            restart,
            grants: raw.grants,
            handles,
            create_channels: raw.create_channels,
            priority,
            devices: raw.devices,
            dma_limit,
        });
    }
    let connections = check_connections(path, &components, file.connect)?;
    Ok(Manifest { path: path.to_owned(), components, connections, devices })
}

/// Checks the `[[device]]` entries and names them as the kernel will: kind.N
/// ([`mica_bundle::device_names`]).
fn check_devices(path: &Path, base: &Path, raw: Vec<RawDevice>) -> Result<Vec<Device>> {
    let names = mica_bundle::device_names(raw.iter().map(|d| d.kind.as_str()));
    let mut devices: Vec<Device> = Vec::new();
    for ((i, d), name) in raw.into_iter().enumerate().zip(names) {
        let err =
            |key: &str, msg: String| anyhow::anyhow!("{}: device {} ({}): {key}: {msg}", path.display(), i + 1, d.kind);
        if !DEVICE_KINDS.contains(&d.kind.as_str()) {
            return Err(err("kind", format!("unknown device kind (known: {})", DEVICE_KINDS.join(", "))));
        }
        let block = d.kind == "virtio-blk";
        if !block && (d.disk.is_some() || d.size.is_some() || d.read_only) {
            return Err(err("disk", "`disk`, `size` and `read_only` are for virtio-blk devices only".to_owned()));
        }
        if d.kind != "virtio-console" && d.output.is_some() {
            return Err(err("output", "`output` is for virtio-console devices only".to_owned()));
        }
        if d.kind != "virtio-net" && !d.hostfwd.is_empty() {
            return Err(err("hostfwd", "port forwards are for virtio-net devices only".to_owned()));
        }
        for f in &d.hostfwd {
            if !(f.starts_with("tcp:") || f.starts_with("udp:")) || !f.contains('-') {
                return Err(err("hostfwd", format!("{f:?}: expected QEMU's form, e.g. \"tcp:127.0.0.1:8080-:80\"")));
            }
        }
        let disk_size = match &d.size {
            None => DEFAULT_DISK_SIZE,
            Some(v) => parse_size(v).map_err(|e| err("size", e))?,
        };
        if block && (disk_size == 0 || disk_size % 512 != 0) {
            return Err(err("size", format!("{disk_size} bytes is not a positive multiple of 512")));
        }
        devices.push(Device {
            name,
            disk: d.disk.as_ref().map(|p| base.join(p)),
            kind: d.kind,
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
            if !component.grants.iter().any(|g| mica_runtime::program::grant_covers(g, "mica:kernel/ipc")) {
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
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Manifest> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.wasm"), b"\0asm").expect("write");
        std::fs::create_dir_all(dir.path().join("comps/hello")).expect("mkdir");
        std::fs::write(dir.path().join("comps/hello/Cargo.toml"), "").expect("write");
        parse(text, &dir.path().join("system.toml"), &dir.path().join("comps"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", check(text).expect_err("refused"))
    }

    /// Three components granted IPC, and `extra` lines at the top.
    fn ipc_system(connect: &str) -> String {
        let mut text = format!("connect = [{connect}]\n");
        for name in ["client", "kv", "other"] {
            text += &format!("[[component]]\nname = \"{name}\"\nwasm = \"a.wasm\"\ngrants = [\"mica:kernel/ipc\"]\n");
        }
        text += "[[component]]\nname = \"plain\"\nwasm = \"a.wasm\"\nhandles = 8\ncreate_channels = true\n";
        text
    }

    #[test]
    fn connections_are_checked() {
        let m = check(&ipc_system(
            r#"{ from = "client", to = "kv", name = "kv" }, { from = "other", to = "kv", name = "kv" }"#,
        ))
        .expect("two clients of one service");
        assert_eq!(m.connections.len(), 2);
        assert_eq!(m.components[0].handles, DEFAULT_HANDLES);
        assert_eq!((m.components[3].handles, m.components[3].create_channels), (8, true));
        let cases = [
            (r#"{ from = "client", to = "db", name = "kv" }"#, "to: no component is named \"db\""),
            (
                r#"{ from = "plain", to = "kv", name = "kv" }"#,
                "from: component \"plain\" is not granted mica:kernel/ipc",
            ),
            (r#"{ from = "kv", to = "kv", name = "kv" }"#, "a component cannot connect to itself"),
            (r#"{ from = "client", to = "kv", name = "Kv" }"#, "name: must match"),
            (
                r#"{ from = "client", to = "kv", name = "kv" }, { from = "client", to = "kv", name = "kv" }"#,
                "this connection is given twice",
            ),
            (
                r#"{ from = "client", to = "kv", name = "kv" }, { from = "client", to = "other", name = "kv" }"#,
                "component \"client\" already has a connection named \"kv\" (client -> kv)",
            ),
            (
                r#"{ from = "client", to = "kv", name = "kv" }, { from = "kv", to = "other", name = "kv" }"#,
                "component \"kv\" already has a connection named \"kv\"",
            ),
            (r#"{ from = "client", to = "kv" }"#, "missing field `name`"),
        ];
        for (connect, expected) in cases {
            let e = err(&ipc_system(connect));
            assert!(e.contains(expected), "{connect}: {e}");
        }
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\npriority = \"urgent\"\n");
        assert!(e.contains("component 'x': priority: \"urgent\": expected \"high\", \"normal\" or \"low\""), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nhandles = 0\n");
        assert!(e.contains("component 'x': handles: 0 is out of range: give 1 to 4096"), "{e}");
    }

    #[test]
    fn full_entry() {
        let m = check(
            r#"
            [[component]]
            name = "hello"
            crate = "hello"
            args = ["a", "b"]
            env = { K = "V" }
            memory_limit = "16MiB"
            cpu_time_limit = "250ms"
            restart = "on-failure"
            priority = "high"
            grants = ["wasi:cli", "wasi:io/streams"]

            [[component]]
            name = "second-1"
            wasm = "a.wasm"
            fuel = 1000
            "#,
        )
        .expect("valid");
        let c = &m.components[0];
        assert_eq!(c.source, Source::Crate("hello".into()));
        assert_eq!(c.memory_limit, 16 << 20);
        assert_eq!(c.cpu_time_limit_ms, Some(250));
        assert_eq!(c.env, vec![("K".into(), "V".into())]);
        assert_eq!(c.restart, mica_bundle::Restart::OnFailure);
        assert_eq!(
            (c.priority, m.components[1].priority),
            (mica_bundle::Priority::High, mica_bundle::Priority::Normal)
        );
        assert_eq!(m.components[1].fuel, Some(1000));
        assert_eq!(m.components[1].memory_limit, DEFAULT_MEMORY_LIMIT);
    }

    #[test]
    fn errors_name_file_component_and_key() {
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ncolour = \"red\"\n");
        assert!(e.contains("system.toml") && e.contains("unknown field `colour`"), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"missing.wasm\"\n");
        assert!(e.contains("component 'x': wasm:") && e.contains("missing.wasm does not exist"), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nmemory_limit = \"12 parsecs\"\n");
        assert!(e.contains("component 'x': memory_limit:"), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nfuel = 5\ncpu_time_limit = \"1s\"\n");
        assert!(e.contains("component 'x': fuel: give `fuel` or `cpu_time_limit`, not both"), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ncpu_time_limit = \"soon\"\n");
        assert!(e.contains("cpu_time_limit:"), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nrestart = \"sometimes\"\n");
        assert!(
            e.contains("component 'x': restart: \"sometimes\": expected \"never\", \"on-failure\" or \"always\""),
            "{e}"
        );
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ngrants = [\"wasi:sockets/tcp\"]\n");
        assert!(e.contains("component 'x': grants: \"wasi:sockets/tcp\" is not an interface"), "{e}");
        let e = err("[[component]]\nname = \"Bad_Name\"\nwasm = \"a.wasm\"\n");
        assert!(e.contains("component 'Bad_Name': name:"), "{e}");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
        assert!(e.contains("another component has this name"), "{e}");
        let e = err("[[component]]\nname = \"x\"\ncrate = \"nope\"\n");
        assert!(e.contains("crate: no component crate nope in"), "{e}");
        let e = err("[[component]]\nname = \"x\"\n");
        assert!(e.contains("wasm: missing"), "{e}");
        let e = err("");
        assert!(e.contains("no [[component]] entries"), "{e}");
    }

    #[test]
    fn mica_interfaces_can_be_granted() {
        for grant in ["mica:kernel/log", "mica:kernel/ipc", "mica:kernel", "mica"] {
            let m = check(&format!("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ngrants = [\"{grant}\"]\n"))
                .unwrap_or_else(|e| panic!("{grant}: {e:#}"));
            assert_eq!(m.components[0].grants, [grant]);
        }
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ngrants = [\"mica:kernel/caps\"]\n");
        assert!(e.contains("\"mica:kernel/caps\" is not an interface") && e.contains("mica:kernel/ipc"), "{e}");
    }

    #[test]
    fn the_repository_system_manifests_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let mut manifests = [
            "default.toml",
            "ipc.toml",
            "drivers.toml",
            "net.toml",
            "services.toml",
            "bench.toml",
            "bench-ipc.toml",
            "bench-io.toml",
        ]
        .map(|m| root.join("components").join(m))
        .to_vec();
        let systems = root.join("qemu-tests").join("systems");
        for entry in std::fs::read_dir(&systems).expect("qemu-tests/systems") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|x| x == "toml") {
                manifests.push(path);
            }
        }
        for path in &manifests {
            load(path, &root.join("components")).unwrap_or_else(|e| panic!("{e:#}"));
        }
        let nostd = load(&systems.join("nostd.toml"), &root.join("components")).expect("valid");
        assert_eq!(nostd.components[0].grants, ["mica:kernel/log"]);
    }

    #[test]
    fn devices_are_checked() {
        let machine = "[[device]]\nkind = \"virtio-rng\"\n[[device]]\nkind = \"virtio-blk\"\nsize = \"1MiB\"\n\
                       [[device]]\nkind = \"virtio-blk\"\ndisk = \"d.img\"\nread_only = true\n";
        let driver = |devices: &str, grants: &str| {
            format!(
                "{machine}[[component]]\nname = \"drv\"\nwasm = \"a.wasm\"\ndevices = [{devices}]\ngrants = [{grants}]\n"
            )
        };
        let m = check(&driver("\"virtio-blk.1\", \"virtio-rng.0\"", "\"mica:hw\"")).expect("valid");
        let names: Vec<&str> = m.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["virtio-rng.0", "virtio-blk.0", "virtio-blk.1"]);
        assert_eq!(m.devices[1].disk_size, 1 << 20);
        assert_eq!(m.devices[0].disk_size, DEFAULT_DISK_SIZE);
        assert!(m.devices[2].read_only && m.devices[2].disk.as_ref().is_some_and(|d| d.ends_with("d.img")));
        assert_eq!(m.components[0].devices, ["virtio-blk.1", "virtio-rng.0"]);
        assert_eq!(m.components[0].dma_limit, DEFAULT_DMA_LIMIT);

        let e = err(&driver("\"virtio-net.0\"", "\"mica:hw\""));
        assert!(e.contains("component 'drv': devices: \"virtio-net.0\" is not a device of this manifest's machine (its [[device]] entries: virtio-rng.0, virtio-blk.0, virtio-blk.1)"), "{e}");
        let e = err(&driver("\"virtio-rng.0\"", "\"wasi\""));
        assert!(e.contains("component 'drv': devices: claiming a device needs the grant \"mica:hw\""), "{e}");
        let twice = driver("\"virtio-rng.0\"", "\"mica\"")
            + "[[component]]\nname = \"two\"\nwasm = \"a.wasm\"\ndevices = [\"virtio-rng.0\"]\ngrants = [\"mica\"]\n";
        let e = err(&twice);
        assert!(e.contains("component 'two': devices: \"virtio-rng.0\" is already granted to component 'drv'"), "{e}");
        let e = err("[[device]]\nkind = \"virtio-gpu\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
        assert!(
            e.contains(
                "device 1 (virtio-gpu): kind: unknown device kind (known: virtio-blk, virtio-rng, virtio-net, virtio-console)"
            ),
            "{e}"
        );
        let e =
            err("[[device]]\nkind = \"virtio-rng\"\ndisk = \"x\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
        assert!(
            e.contains("device 1 (virtio-rng): disk: `disk`, `size` and `read_only` are for virtio-blk devices only"),
            "{e}"
        );
        let e = err("[[device]]\nkind = \"virtio-blk\"\nsize = 1000\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
        assert!(e.contains("size: 1000 bytes is not a positive multiple of 512"), "{e}");
        let e = err(
            "[[device]]\nkind = \"virtio-net\"\nhostfwd = [\"8080:80\"]\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n",
        );
        assert!(e.contains("hostfwd: \"8080:80\": expected QEMU's form"), "{e}");
        let e = err(
            "[[device]]\nkind = \"virtio-rng\"\noutput = \"o.log\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n",
        );
        assert!(e.contains("device 1 (virtio-rng): output: `output` is for virtio-console devices only"), "{e}");
        let m = check("[[device]]\nkind = \"virtio-console\"\noutput = \"o.log\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n")
            .expect("valid");
        assert!(m.devices[0].output.as_ref().is_some_and(|o| o.ends_with("o.log")), "{:?}", m.devices[0]);
        assert_eq!(m.devices[0].name, "virtio-console.0");
        let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ndma_limit = \"lots\"\n");
        assert!(e.contains("component 'x': dma_limit:"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size(&toml::Value::Integer(4096)), Ok(4096));
        assert_eq!(parse_size(&toml::Value::String("512KiB".into())), Ok(512 << 10));
        assert_eq!(parse_size(&toml::Value::String("2GiB".into())), Ok(2 << 30));
        assert!(parse_size(&toml::Value::String("0MiB".into())).is_err());
        assert!(parse_size(&toml::Value::Integer(-1)).is_err());
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("15ms"), Ok(15));
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("2h").is_err());
    }
}
