//! The manifest as written, as serde reads it: the keys each table may have, their types, and
//! the closed sets of values (restart policies, priorities, device kinds, sizes, durations). What
//! depends on more than one value (a crate that must exist, a device a component claims, grants
//! the runtime provides) is checked in the parent module.
//!
//! A serde error is reported with the entry and the key it is about, found from where the error
//! is in the text ([`read`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use mica_bundle::{Priority, Restart};
use serde::Deserialize;
use toml::Spanned;

/// A manifest file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub connect: Vec<RawConnection>,
    #[serde(default)]
    pub component: Vec<RawComponent>,
    #[serde(default)]
    pub device: Vec<RawDevice>,
}

/// A `[[device]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub kind: DeviceKind,
    pub disk: Option<PathBuf>,
    pub size: Option<Size>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub hostfwd: Vec<String>,
    pub output: Option<PathBuf>,
}

/// The device kinds a manifest may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[expect(clippy::enum_variant_names, reason = "serde derives the manifest's names (virtio-blk, ...) from these")]
pub(super) enum DeviceKind {
    VirtioBlk,
    VirtioRng,
    VirtioNet,
    VirtioConsole,
}

impl DeviceKind {
    /// Every kind.
    #[cfg(test)]
    pub const ALL: [DeviceKind; 4] =
        [DeviceKind::VirtioBlk, DeviceKind::VirtioRng, DeviceKind::VirtioNet, DeviceKind::VirtioConsole];

    /// Its name in a manifest, which is also the first half of its devices' kernel names.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::VirtioBlk => "virtio-blk",
            DeviceKind::VirtioRng => "virtio-rng",
            DeviceKind::VirtioNet => "virtio-net",
            DeviceKind::VirtioConsole => "virtio-console",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked [`super::Device`] keeps its kind by name.
impl PartialEq<DeviceKind> for String {
    fn eq(&self, kind: &DeviceKind) -> bool {
        self == kind.as_str()
    }
}

/// A `connect` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    pub from: String,
    pub to: String,
    pub name: String,
}

/// A component's `network` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub connection: String,
    #[serde(default)]
    pub listen: Vec<u16>,
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
}

/// A `dirs` entry of a component.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDir {
    pub path: String,
    pub connection: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A `[[component]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub name: String,
    pub wasm: Option<PathBuf>,
    #[serde(rename = "crate")]
    pub krate: Option<String>,
    /// A directory of C sources.
    pub c: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub memory_limit: Option<Size>,
    pub fuel: Option<u64>,
    pub cpu_time_limit: Option<Millis>,
    #[serde(default = "never", with = "RestartName")]
    pub restart: Restart,
    #[serde(default)]
    pub grants: Vec<String>,
    pub handles: Option<u16>,
    #[serde(default)]
    pub create_channels: bool,
    #[serde(default, with = "PriorityName")]
    pub priority: Priority,
    #[serde(default)]
    pub devices: Vec<String>,
    pub dma_limit: Option<Size>,
    #[serde(default)]
    pub aot: bool,
    #[serde(default)]
    pub module_store: bool,
    #[serde(default)]
    pub start: Start,
    #[serde(default)]
    pub dirs: Vec<RawDir>,
    #[serde(default)]
    pub network: Option<RawNetwork>,
}

/// How a component whose code the system compiles starts before its native code is ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// It waits for its native code.
    #[default]
    Native,
    /// It starts at once on Pulley bytecode (interpreted) and runs native code from its next start.
    Pulley,
}

/// The restart policies as a manifest names them.
#[derive(Deserialize)]
#[serde(remote = "Restart", rename_all = "kebab-case")]
enum RestartName {
    Never,
    OnFailure,
    Always,
}

/// The default restart policy.
fn never() -> Restart {
    Restart::Never
}

/// The priorities as a manifest names them.
#[derive(Deserialize)]
#[serde(remote = "Priority", rename_all = "kebab-case")]
enum PriorityName {
    High,
    Normal,
    Low,
}

/// A size in bytes, written as a number of bytes or a string such as `"64MiB"` ([`parse_size`]).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "toml::Value")]
pub(super) struct Size(pub u64);

impl TryFrom<toml::Value> for Size {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Size, String> {
        parse_size(&value).map(Size)
    }
}

/// A duration in milliseconds, written as `"500ms"` or `"2s"` ([`parse_duration_ms`]).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct Millis(pub u64);

impl TryFrom<String> for Millis {
    type Error = String;

    fn try_from(text: String) -> Result<Millis, String> {
        parse_duration_ms(&text).map(Millis)
    }
}

/// Parses a size such as `65536`, `"512KiB"`, `"64MiB"`, `"1GiB"`.
fn parse_size(value: &toml::Value) -> Result<u64, String> {
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
fn parse_duration_ms(s: &str) -> Result<u64, String> {
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

/// How errors name a component entry.
pub(super) fn component_label(name: &str) -> String {
    format!("component '{name}'")
}

/// How errors name the `index`th (from 0) device entry.
pub(super) fn device_label(index: usize, kind: impl fmt::Display) -> String {
    format!("device {} ({kind})", index + 1)
}

/// Reads manifest `text`. An error names `path`, and the entry and key it is about when its place
/// in the text shows them; otherwise it is toml's, with the line.
pub(super) fn read(text: &str, path: &Path) -> anyhow::Result<File> {
    toml::from_str(text).map_err(|error| match error.span().and_then(|span| locate(text, span)) {
        Some((entry, Some(key))) => anyhow::anyhow!("{}: {entry}: {key}: {}", path.display(), error.message()),
        Some((entry, None)) => anyhow::anyhow!("{}: {entry}: {}", path.display(), error.message()),
        None => anyhow::anyhow!("{}: {error}", path.display()),
    })
}

/// Each entry of a manifest with where its keys and values are, values unchecked: what [`locate`]
/// finds an error's place in.
#[derive(Deserialize)]
struct Outline {
    #[serde(default)]
    connect: Vec<OutlineEntry>,
    #[serde(default)]
    component: Vec<OutlineEntry>,
    #[serde(default)]
    device: Vec<OutlineEntry>,
}

/// An entry (its span: its `[[...]]` header, or the whole inline table), its keys and values.
type OutlineEntry = Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>;

/// The entry (as errors name it) and the key whose key or value holds `at` in `text`; the entry
/// alone for its header (a missing key). None if `at` is in no entry or `text` has no outline.
fn locate(text: &str, at: Range<usize>) -> Option<(String, Option<String>)> {
    let outline: Outline = toml::from_str(text).ok()?;
    let within = |span: Range<usize>| span.start <= at.start && at.end <= span.end;
    let string = |entry: &OutlineEntry, key: &str| {
        entry.get_ref().get(key).and_then(|value| value.get_ref().as_str().map(str::to_owned))
    };
    let components = outline.component.iter().enumerate().map(|(i, entry)| {
        let label = string(entry, "name").map_or_else(|| format!("component {}", i + 1), |name| component_label(&name));
        (label, entry)
    });
    let devices = outline.device.iter().enumerate().map(|(i, entry)| {
        let label = string(entry, "kind").map_or_else(|| format!("device {}", i + 1), |kind| device_label(i, kind));
        (label, entry)
    });
    let connections = outline.connect.iter().enumerate().map(|(i, entry)| (format!("connect[{i}]"), entry));
    for (label, entry) in components.chain(devices).chain(connections) {
        if let Some((key, _)) = entry.get_ref().iter().find(|(key, value)| within(key.span()) || within(value.span())) {
            return Some((label, Some(key.get_ref().clone())));
        }
        if within(entry.span()) {
            return Some((label, None));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_kinds_are_read_by_their_names() {
        for kind in DeviceKind::ALL {
            let read: DeviceKind = toml::Value::String(kind.as_str().into()).try_into().expect("a kind");
            assert_eq!(read, kind);
            assert!(kind.as_str().to_owned() == kind);
        }
    }

    #[test]
    fn errors_are_placed_in_their_entry_and_key() {
        let path = Path::new("system.toml");
        let cases = [
            (
                "[[component]]\nname = \"a\"\n[[device]]\nkind = \"virtio-rng\"\n[[component]]\nname = \"b\"\nrestart = \"x\"\n",
                "system.toml: component 'b': restart: unknown variant `x`",
            ),
            (
                "[[component]]\nname = \"a\"\nenv = { K = 5 }\n",
                "system.toml: component 'a': env: invalid type: integer `5`",
            ),
            ("[[component]]\nwasm = \"a.wasm\"\n", "system.toml: component 1: missing field `name`"),
            (
                "[[device]]\nkind = \"virtio-blk\"\nsize = \"1TB\"\n",
                "system.toml: device 1 (virtio-blk): size: \"1TB\"",
            ),
            ("[[device]]\ndisk = \"d.img\"\n", "system.toml: device 1: missing field `kind`"),
            ("connect = [{ from = \"a\", to = 5, name = \"b\" }]\n", "system.toml: connect[0]: to: invalid type"),
        ];
        for (text, expected) in cases {
            let e = read(text, path).expect_err("refused").to_string();
            assert!(e.starts_with(expected), "{text}: {e}");
        }
        // Outside any entry: toml's own message, with the line.
        let e = read("colour = \"red\"\n", path).expect_err("refused").to_string();
        assert!(
            e.starts_with("system.toml: TOML parse error at line 1") && e.contains("unknown field `colour`"),
            "{e}"
        );
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
