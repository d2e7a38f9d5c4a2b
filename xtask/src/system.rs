//! Turning a system manifest into a boot bundle: build the component crates, then either compile
//! every component ahead of time for the CPU profile (cached), with fuel counting or epoch checks
//! only where its manifest sets a limit that needs them, or leave it wasm for the system to compile
//! for the CPU it finds (late binding, with the compiler component compiled ahead of time for the
//! baseline profile); and pack manifest, artifacts and wasm.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mica_bundle::{
    BundleWriter, Code, CompilerSpec, ComponentSpec, Connection, EntryKind, MANIFEST_ENTRY, MachineDevice, NativeCode,
    SystemManifest,
};
use mica_runtime::config::{self, CpuProfile, Instrumentation};
use sha2::{Digest, Sha256};

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

/// The crate of the compiler component (`components/compiler`).
pub const COMPILER_CRATE: &str = "compiler";

/// The compiler component's linear memory budget: Cranelift compiling a component of a few
/// hundred KiB needs tens of MiB; this leaves room for large ones.
pub const COMPILER_MEMORY_LIMIT: u64 = 384 << 20;

/// Who compiles the components of a system to native code.
#[derive(Clone, Debug)]
pub enum Binding {
    /// The build host, ahead of time, for this CPU profile.
    Aot(CpuProfile),
    /// The system itself, at boot, for the CPU it finds (the compiler component does it).
    Late,
}

/// Builds the bundle for the manifest at `path`, every component compiled ahead of time for
/// `profile`; returns the bundle's path (`target/mica/bundles/<manifest stem>.bundle`).
pub fn prepare(root: &Path, toolchain: &Toolchain, path: &Path, profile: &CpuProfile) -> Result<PathBuf> {
    prepare_with(root, toolchain, path, &Binding::Aot(profile.clone()), None)
}

/// Adds the artifact of `artifact` to the bundle (once however many components use it, named after
/// the first) and returns what the manifest says of it.
fn add_artifact(
    writer: &mut BundleWriter,
    added: &mut BTreeMap<PathBuf, String>,
    name: &str,
    artifact: &aot::Artifact,
) -> Result<NativeCode> {
    let entry = match added.get(&artifact.path) {
        Some(entry) => entry.clone(),
        None => {
            let entry = format!("{name}.cwasm");
            let bytes = fs::read(&artifact.path).with_context(|| format!("reading {}", artifact.path.display()))?;
            writer.add(EntryKind::Artifact, &entry, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
            added.insert(artifact.path.clone(), entry.clone());
            entry
        }
    };
    Ok(NativeCode {
        artifact: entry,
        wasmtime_version: artifact.key.wasmtime.into(),
        target: artifact.key.target.into(),
        config_version: artifact.key.config_version,
        fuel_instrumented: artifact.key.instrumentation.fuel,
        epochs_instrumented: artifact.key.instrumentation.epochs,
        cpu_features: artifact.key.cpu.features.iter().map(|f| f.name().to_owned()).collect(),
    })
}

/// Builds the bundle for the manifest at `path` with `binding`; returns the bundle's path:
/// `target/mica/bundles/<name>.bundle`, where `name` defaults to the manifest's file stem.
pub fn prepare_with(
    root: &Path,
    toolchain: &Toolchain,
    path: &Path,
    binding: &Binding,
    name: Option<&str>,
) -> Result<PathBuf> {
    prepare_for(root, toolchain, path, binding, name, config::X86_64_TARGET)
}

/// [`prepare_with`] for the kernel target `kernel_target` (one of `config::KERNEL_TARGETS`): what is
/// compiled ahead of time is compiled for it (a [`Binding::Aot`] profile names its CPU features).
pub fn prepare_for(
    root: &Path,
    toolchain: &Toolchain,
    path: &Path,
    binding: &Binding,
    name: Option<&str>,
    kernel_target: &'static str,
) -> Result<PathBuf> {
    let manifest = manifest::load(path, &root.join("components"))?;
    let late = matches!(binding, Binding::Late);
    let crates: Vec<String> = manifest
        .components
        .iter()
        .filter_map(|c| match &c.source {
            Source::Crate(name) => Some(name.clone()),
            Source::Wasm(_) | Source::C(_) => None,
        })
        .chain(late.then(|| COMPILER_CRATE.to_owned()))
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
            Source::C(dir) => crate::c_component::build(root, dir)?,
        };
        let aot_profile = match binding {
            Binding::Aot(profile) => Some(profile.clone()),
            // What must run before the module store does is compiled ahead of time for the
            // baseline CPU, so that it runs anywhere.
            Binding::Late if c.aot => Some(CpuProfile::baseline_for(kernel_target)),
            Binding::Late => None,
        };
        let code = match aot_profile {
            Some(profile) => {
                let profile = &profile;
                let artifact = aot::compile_for(&cache, &wasm, kernel_target, profile, instrumentation(c))?;
                eprintln!(
                    "xtask: component {}: {} ({})",
                    c.name,
                    if artifact.cached { "cached artifact" } else { "compiled" },
                    artifact.key
                );
                Code::Native(add_artifact(&mut writer, &mut added, &c.name, &artifact)?)
            }
            None => {
                let bytes = fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
                let sha256: [u8; 32] = Sha256::digest(&bytes).into();
                let entry = match added.get(&wasm) {
                    Some(entry) => entry.clone(),
                    None => {
                        let entry = format!("{}.wasm", c.name);
                        writer.add(EntryKind::Wasm, &entry, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
                        added.insert(wasm.clone(), entry.clone());
                        entry
                    }
                };
                let pulley = if c.pulley_first {
                    let artifact = aot::compile_pulley(&cache, &wasm, instrumentation(c))?;
                    eprintln!(
                        "xtask: component {}: wasm, compiled by the system at boot; starts on Pulley bytecode ({})",
                        c.name,
                        if artifact.cached { "cached" } else { "compiled" }
                    );
                    let name = format!("{}-pulley", c.name);
                    Some(add_artifact(&mut writer, &mut added, &name, &artifact)?)
                } else {
                    eprintln!("xtask: component {}: wasm, compiled by the system at boot", c.name);
                    None
                };
                Code::Wasm { entry, sha256, pulley }
            }
        };
        specs.push(ComponentSpec {
            name: c.name.clone(),
            code,
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
            dirs: c.dirs.clone(),
            network: c.network.clone(),
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
    let compiler = match binding {
        Binding::Aot(_) => None,
        Binding::Late => {
            // The one component compiled ahead of time: for the baseline CPU, so it runs anywhere.
            let wasm = &built[COMPILER_CRATE];
            let started = std::time::Instant::now();
            let artifact = aot::compile_for(
                &cache,
                wasm,
                kernel_target,
                &CpuProfile::baseline_for(kernel_target),
                Instrumentation::NONE,
            )?;
            eprintln!(
                "xtask: the compiler component: {} ({}, {:.1} s)",
                if artifact.cached { "cached artifact" } else { "compiled" },
                artifact.key,
                started.elapsed().as_secs_f64()
            );
            let code = add_artifact(&mut writer, &mut added, COMPILER_CRATE, &artifact)?;
            Some(CompilerSpec { code, memory_limit: COMPILER_MEMORY_LIMIT })
        }
    };
    let module_store = manifest.components.iter().position(|c| c.module_store).map(|i| i as u32);
    let system = SystemManifest { components: specs, connections, machine, compiler, module_store };
    writer.add(EntryKind::Manifest, MANIFEST_ENTRY, system.encode()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = target.join("mica").join("bundles");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("{}.bundle", name.unwrap_or(stem)));
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

    /// The versions of each package in the `Cargo.lock` at `path` whose name `pick` accepts.
    fn locked(path: &Path, pick: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<String>> {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lock: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for package in lock["package"].as_array().expect("packages") {
            let name = package["name"].as_str().expect("name");
            if pick(name) {
                versions.entry(name.to_owned()).or_default().push(package["version"].as_str().expect("version").into());
            }
        }
        versions
    }

    /// The compiler component and the host's AOT compiler make the same artifact from the same
    /// wasm only if they are built from the same code generator: every Wasmtime, Cranelift,
    /// Pulley and register-allocator package both lock files share is locked at the same version
    /// (a patch release of the x64 assembler slipped into the components' lock once).
    #[test]
    fn the_compiler_component_builds_the_host_compilers_code_generator() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let pick = |name: &str| {
            name.starts_with("wasmtime")
                || name.starts_with("cranelift-")
                || name.starts_with("pulley-")
                || name == "regalloc2"
        };
        let host = locked(&root.join("Cargo.lock"), pick);
        let components = locked(&root.join("components").join("Cargo.lock"), pick);
        assert!(components.contains_key("cranelift-codegen"), "the compiler component builds Cranelift");
        let mut compared = 0;
        for (name, versions) in &components {
            if let Some(host_versions) = host.get(name) {
                assert_eq!(versions, host_versions, "{name}: components/Cargo.lock and Cargo.lock differ");
                compared += 1;
            }
        }
        assert!(compared >= 20, "only {compared} packages compared");
    }

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
