//! Ahead-of-time compilation of components with Wasmtime's Cranelift, for a CPU profile and a
//! CPU-limit instrumentation, into a content-addressed cache (`target/mica/aot/<key>.cwasm`).
//! The key covers the component's bytes and everything in [`ArtifactKey`] (Wasmtime version,
//! target, engine settings version, instrumentation, CPU features), so an unchanged component is
//! never compiled again and a changed setting never reuses a stale artifact.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mica_runtime::config::{self, ArtifactKey, CpuFeature, CpuProfile, Instrumentation};
use mica_runtime::wasmtime::Engine;
use sha2::{Digest, Sha256};

/// The AOT cache directory under the target directory.
pub fn cache_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("mica").join("aot")
}

/// A compiled component.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The `.cwasm` file.
    pub path: PathBuf,
    /// What it was compiled for.
    pub key: ArtifactKey,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Resolves the `--cpu` option for the kernel target `target`: `baseline`, `host` (only where
/// the host is of that architecture), or a comma-separated list of its CPUs' features.
pub fn profile_for(target: &str, spec: &str) -> Result<CpuProfile> {
    match spec {
        "baseline" => Ok(CpuProfile::baseline_for(target)),
        "host" if target == config::KERNEL_TARGET => Ok(host_profile()),
        "host" => anyhow::bail!("--cpu host: this host's CPU is not one of {target}'s; name its features instead"),
        list => CpuProfile::parse_list_for(target, list).map_err(|e| anyhow::anyhow!("--cpu {list}: {e}")),
    }
}

/// Whether the machine xtask runs on has `feature`.
fn host_has(feature: CpuFeature) -> bool {
    #[cfg(target_arch = "x86_64")]
    let has = match feature {
        CpuFeature::Sse3 => std::is_x86_feature_detected!("sse3"),
        CpuFeature::Ssse3 => std::is_x86_feature_detected!("ssse3"),
        CpuFeature::Sse41 => std::is_x86_feature_detected!("sse4.1"),
        CpuFeature::Sse42 => std::is_x86_feature_detected!("sse4.2"),
        CpuFeature::Popcnt => std::is_x86_feature_detected!("popcnt"),
        CpuFeature::Lzcnt => std::is_x86_feature_detected!("lzcnt"),
        CpuFeature::Bmi1 => std::is_x86_feature_detected!("bmi1"),
        CpuFeature::Bmi2 => std::is_x86_feature_detected!("bmi2"),
        CpuFeature::Avx => std::is_x86_feature_detected!("avx"),
        CpuFeature::Avx2 => std::is_x86_feature_detected!("avx2"),
        CpuFeature::Fma => std::is_x86_feature_detected!("fma"),
        CpuFeature::Lse | CpuFeature::Pauth | CpuFeature::Fp16 | CpuFeature::Dotprod | CpuFeature::I8mm => false,
    };
    #[cfg(target_arch = "aarch64")]
    let has = match feature {
        CpuFeature::Lse => std::arch::is_aarch64_feature_detected!("lse"),
        CpuFeature::Pauth => std::arch::is_aarch64_feature_detected!("paca"),
        CpuFeature::Fp16 => std::arch::is_aarch64_feature_detected!("fp16"),
        CpuFeature::Dotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
        CpuFeature::I8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
        _ => false,
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let has = {
        let _ = feature;
        false
    };
    has
}

/// The features of the machine xtask runs on.
pub fn host_profile() -> CpuProfile {
    let target = config::KERNEL_TARGET;
    CpuProfile::for_target(target, "host", CpuFeature::of_target(target).filter(|f| host_has(*f)))
}

fn cache_name(key: &ArtifactKey, wasm: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(key.to_string().as_bytes());
    h.update([0]);
    h.update(wasm);
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles the component in `wasm` for the kernel target `target` (one of
/// [`config::KERNEL_TARGETS`]) and `profile` with `instrumentation`, or returns the cached
/// artifact.
pub fn compile_for(
    cache: &Path,
    wasm: &Path,
    target: &'static str,
    profile: &CpuProfile,
    instrumentation: Instrumentation,
) -> Result<Artifact> {
    let bytes = fs::read(wasm).with_context(|| format!("reading component {}", wasm.display()))?;
    compile_key(cache, &bytes, ArtifactKey::for_target(target, profile.clone(), instrumentation))
        .with_context(|| format!("compiling {} for {target}", wasm.display()))
}

/// Compiles the component in `wasm` to Pulley bytecode (one artifact for every CPU) with
/// `instrumentation`, or returns the cached artifact.
pub fn compile_pulley(cache: &Path, wasm: &Path, instrumentation: Instrumentation) -> Result<Artifact> {
    let bytes = fs::read(wasm).with_context(|| format!("reading component {}", wasm.display()))?;
    compile_key(cache, &bytes, ArtifactKey::pulley(instrumentation))
        .with_context(|| format!("compiling {} to Pulley bytecode", wasm.display()))
}

/// Compiles component `bytes` for `key`, or returns the cached artifact.
fn compile_key(cache: &Path, bytes: &[u8], key: ArtifactKey) -> Result<Artifact> {
    let profile = &key.cpu;
    let instrumentation = key.instrumentation;
    let path = cache.join(format!("{}.cwasm", cache_name(&key, bytes)));
    if path.is_file() {
        return Ok(Artifact { path, key, cached: true });
    }
    let cfg = config::compile_config(key.target, instrumentation, profile).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("configuring Wasmtime: {e:#}"))?;
    let artifact = engine.precompile_component(bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let tmp = path.with_extension("cwasm.tmp");
    fs::write(&tmp, &artifact).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("moving {} into place", tmp.display()))?;
    Ok(Artifact { path, key, cached: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the component-model preamble and nothing else.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    const NONE: Instrumentation = Instrumentation::NONE;

    /// Compiles component `bytes` for x86_64 and `profile` with `instrumentation`, or returns the
    /// cached artifact.
    fn compile_bytes(
        cache: &Path,
        bytes: &[u8],
        profile: &CpuProfile,
        instrumentation: Instrumentation,
    ) -> Result<Artifact> {
        compile_key(cache, bytes, ArtifactKey::for_target(config::X86_64_TARGET, profile.clone(), instrumentation))
    }

    fn profile(spec: &str) -> Result<CpuProfile> {
        profile_for(config::X86_64_TARGET, spec)
    }

    #[test]
    fn unchanged_components_are_never_recompiled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = compile_bytes(dir.path(), EMPTY_COMPONENT, &CpuProfile::baseline(), NONE).expect("compiles");
        assert!(!first.cached);
        let modified = fs::metadata(&first.path).and_then(|m| m.modified()).expect("mtime");
        let second = compile_bytes(dir.path(), EMPTY_COMPONENT, &CpuProfile::baseline(), NONE).expect("cached");
        assert!(second.cached);
        assert_eq!(first.path, second.path);
        assert_eq!(fs::metadata(&second.path).and_then(|m| m.modified()).expect("mtime"), modified);
        // Another CPU profile is another artifact.
        let avx =
            compile_bytes(dir.path(), EMPTY_COMPONENT, &profile("avx2").expect("profile"), NONE).expect("compiles");
        assert!(!avx.cached);
        assert_ne!(avx.path, first.path);
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 2);
    }

    /// A component that loops: `(func (loop (br 0)))`, which fuel counting and epoch checks
    /// instrument, in a component that exports nothing.
    fn looping_component() -> Vec<u8> {
        let module: &[u8] = &[
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // core module header
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
            0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
            0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // code: loop br 0 end end
        ];
        let mut component = EMPTY_COMPONENT.to_vec();
        component.push(0x01); // core module section
        component.push(u8::try_from(module.len()).expect("small"));
        component.extend_from_slice(module);
        component
    }

    #[test]
    fn each_instrumentation_is_its_own_artifact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wasm = looping_component();
        let artifacts: Vec<Artifact> = Instrumentation::ALL
            .into_iter()
            .map(|i| compile_bytes(dir.path(), &wasm, &CpuProfile::baseline(), i).expect("compiles"))
            .collect();
        for (i, artifact) in Instrumentation::ALL.into_iter().zip(&artifacts) {
            assert!(!artifact.cached);
            assert_eq!(artifact.key.instrumentation, i);
            assert!(artifact.key.to_string().contains(&format!("/instrument-{i}/")), "{}", artifact.key);
        }
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 4);
        // The instrumentation is really compiled in: each adds code to the loop.
        let size = |i: Instrumentation| fs::metadata(&artifacts[i.index()].path).expect("artifact").len();
        let [none, fuel, epochs, both] = Instrumentation::ALL;
        assert!(size(none) < size(fuel) && size(none) < size(epochs), "sizes {:?}", Instrumentation::ALL.map(size));
        assert!(size(fuel) < size(both) && size(epochs) < size(both), "sizes {:?}", Instrumentation::ALL.map(size));
    }

    #[test]
    fn profiles_parse() {
        assert_eq!(profile("baseline").expect("ok"), CpuProfile::baseline());
        assert!(host_profile().features.contains(&CpuFeature::Sse41));
        assert!(profile("sse4.2,warp-drive").is_err());
    }

    /// The ELF machine of an artifact (Wasmtime's `.cwasm` is an ELF file).
    fn elf_machine(path: &Path) -> u16 {
        let bytes = fs::read(path).expect("artifact");
        assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF artifact");
        u16::from_le_bytes([bytes[18], bytes[19]])
    }

    #[test]
    fn components_compile_for_aarch64_on_this_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wasm = dir.path().join("loop.wasm");
        fs::write(&wasm, looping_component()).expect("write");
        let arm = config::AARCH64_TARGET;
        let baseline = compile_for(dir.path(), &wasm, arm, &profile_for(arm, "baseline").expect("ok"), NONE)
            .expect("compiles for aarch64");
        assert_eq!(elf_machine(&baseline.path), 183, "EM_AARCH64");
        assert_eq!(baseline.key.to_string(), format!("wasmtime-48.0.8/{arm}/config-4/instrument-none/cpu-"));
        let lse = compile_for(dir.path(), &wasm, arm, &profile_for(arm, "lse,fp16").expect("ok"), NONE)
            .expect("compiles for aarch64 with LSE");
        assert!(lse.key.to_string().ends_with("/cpu-lse,fp16"), "{}", lse.key);
        assert_ne!(lse.path, baseline.path);
        let x86 = compile_for(dir.path(), &wasm, config::X86_64_TARGET, &CpuProfile::baseline(), NONE).expect("x86");
        assert_eq!(elf_machine(&x86.path), 62, "EM_X86_64");
        // A feature of the other architecture is refused by name, not ignored.
        let mut mixed = CpuProfile::baseline_for(arm);
        mixed.features.push(CpuFeature::Avx2);
        let e = compile_for(dir.path(), &wasm, arm, &mixed, NONE).expect_err("avx2 on aarch64");
        assert!(format!("{e:#}").contains("CPU feature 'avx2' is one of x86_64-unknown-none's"), "{e:#}");
        assert!(profile_for(arm, "avx2").is_err());
        assert!(profile_for(arm, "host").is_err(), "this host is not an aarch64 machine");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = compile_bytes(dir.path(), b"not wasm", &CpuProfile::baseline(), NONE).expect_err("refused");
        assert!(!e.to_string().is_empty());
    }
}
