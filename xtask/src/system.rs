//! Turning a system manifest into a boot bundle: build the component crates, compile every
//! component ahead of time for the CPU profile (cached), with fuel counting or epoch checks only
//! where its manifest sets a limit that needs them, and pack manifest and artifacts.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mica_bundle::{BundleWriter, ComponentSpec, Connection, EntryKind, MANIFEST_ENTRY, MachineDevice, SystemManifest};
use mica_runtime::config::{CpuProfile, Instrumentation};

use crate::manifest::{self, Source};
use crate::toolchain::Toolchain;
use crate::{aot, components};

/// The default system manifest, relative to the workspace root.
pub const DEFAULT_MANIFEST: &str = "components/default.toml";

/// The example system of IPC services, booted by a test too.
pub const IPC_EXAMPLE_MANIFEST: &str = "components/ipc.toml";

/// The example system of driver components, booted by a test too.
pub const DRIVERS_EXAMPLE_MANIFEST: &str = "components/drivers.toml";

/// The CPU-limit instrumentation component `c` is compiled with: exactly what its limits need.
pub fn instrumentation(c: &manifest::Component) -> Instrumentation {
    Instrumentation::for_limits(c.fuel.is_some(), c.cpu_time_limit_ms.is_some())
}

/// Builds the bundle for the manifest at `path`; returns the bundle's path.
pub fn prepare(root: &Path, toolchain: &Toolchain, path: &Path, profile: &CpuProfile) -> Result<PathBuf> {
    let manifest = manifest::load(path, &root.join("components"))?;
    let crates: Vec<String> = manifest
        .components
        .iter()
        .filter_map(|c| match &c.source {
            Source::Crate(name) => Some(name.clone()),
            Source::Wasm(_) => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let built = components::build(root, toolchain, &crates)?;
    let target = root.join("target");
    let cache = aot::cache_dir(&target);
    let mut writer = BundleWriter::new();
    let mut specs = Vec::new();
    let mut added: BTreeMap<PathBuf, String> = BTreeMap::new();
    for c in &manifest.components {
        let wasm = match &c.source {
            Source::Wasm(p) => p.clone(),
            Source::Crate(name) => built[name].clone(),
        };
        let instrumentation = instrumentation(c);
        let artifact = aot::compile(&cache, &wasm, profile, instrumentation)?;
        eprintln!(
            "xtask: component {}: {} ({})",
            c.name,
            if artifact.cached { "cached artifact" } else { "compiled" },
            artifact.key
        );
        let entry = match added.get(&artifact.path) {
            Some(entry) => entry.clone(),
            None => {
                let entry = format!("{}.cwasm", c.name);
                let bytes = fs::read(&artifact.path).with_context(|| format!("reading {}", artifact.path.display()))?;
                writer.add(EntryKind::Artifact, &entry, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
                added.insert(artifact.path.clone(), entry.clone());
                entry
            }
        };
        specs.push(ComponentSpec {
            name: c.name.clone(),
            artifact: entry,
            wasmtime_version: artifact.key.wasmtime.into(),
            target: artifact.key.target.into(),
            config_version: artifact.key.config_version,
            fuel_instrumented: artifact.key.instrumentation.fuel,
            epochs_instrumented: artifact.key.instrumentation.epochs,
            cpu_features: artifact.key.cpu.features.iter().map(|f| f.name().to_owned()).collect(),
            args: c.args.clone(),
            env: c.env.clone(),
            memory_limit: c.memory_limit,
            fuel: c.fuel,
            cpu_time_limit_ms: c.cpu_time_limit_ms,
            restart: c.restart,
            grants: c.grants.clone(),
            handles: c.handles,
            create_channels: c.create_channels,
            priority: c.priority,
            devices: c.devices.clone(),
            dma_limit: c.dma_limit,
        });
    }
    let index = |name: &str| manifest.components.iter().position(|c| c.name == name).map(|i| i as u32);
    let connections = manifest
        .connections
        .iter()
        .map(|c| {
            let (Some(from), Some(to)) = (index(&c.from), index(&c.to)) else {
                anyhow::bail!("connection {:?}: unknown component (the manifest check lets none through)", c.name);
            };
            Ok(Connection { name: c.name.clone(), from, to })
        })
        .collect::<Result<Vec<_>>>()?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("system");
    let machine = manifest
        .devices
        .iter()
        .map(|d| MachineDevice {
            kind: d.kind.clone(),
            disk: (d.kind == "virtio-blk").then(|| {
                let disk = d.disk.clone().unwrap_or_else(|| default_disk(&target, stem, &d.name));
                disk.to_string_lossy().into_owned()
            }),
            disk_size: d.disk_size,
            read_only: d.read_only,
            hostfwd: d.hostfwd.clone(),
            output: (d.kind == "virtio-console").then(|| {
                let output = d.output.clone().unwrap_or_else(|| default_console(&target, stem, &d.name));
                output.to_string_lossy().into_owned()
            }),
        })
        .collect();
    let system = SystemManifest { components: specs, connections, machine };
    writer.add(EntryKind::Manifest, MANIFEST_ENTRY, system.encode()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = target.join("mica").join("bundles");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("{stem}.bundle"));
    fs::write(&out, writer.finish()).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// Where a block device's image lives when the manifest names none: one per system and device,
/// kept between runs (so what a system stores survives a reboot).
pub fn default_disk(target: &Path, system: &str, device: &str) -> PathBuf {
    target.join("mica").join("disks").join(format!("{system}-{device}.img"))
}

/// Where a console's output goes when the manifest names no file: one per system and device.
pub fn default_console(target: &Path, system: &str, device: &str) -> PathBuf {
    target.join("mica").join("consoles").join(format!("{system}-{device}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_get_the_instrumentation_their_limits_need() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let path = root.join("qemu-tests").join("systems").join("components.toml");
        let m = manifest::load(&path, &root.join("components")).unwrap_or_else(|e| panic!("{e:#}"));
        let of = |name: &str| {
            let c = m.components.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name}"));
            instrumentation(c)
        };
        assert_eq!(of("hello"), Instrumentation::NONE);
        assert_eq!(of("spinner-fuel"), Instrumentation { fuel: true, epochs: false });
        assert_eq!(of("spinner-time"), Instrumentation { fuel: false, epochs: true });
        let mut both = m.components[0].clone();
        both.fuel = Some(1);
        both.cpu_time_limit_ms = Some(1);
        assert_eq!(instrumentation(&both), Instrumentation { fuel: true, epochs: true });
    }
}
