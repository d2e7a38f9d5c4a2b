//! The one place that defines how Wasmtime is configured. Everything that compiles components (the
//! AOT compiler on the build host in `cargo xtask`, and the compiler component that compiles them
//! inside Mica for the CPU it finds) and the kernel's runtime that loads them call
//! [`engine_config_for`], so the settings an artifact was compiled with and the settings it is
//! loaded with cannot drift apart; [`ArtifactKey`] names the whole of it.
#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use wasmtime::Config;

/// The Wasmtime version, pinned with `=` in Cargo.toml; artifacts record it and are refused by
/// any other version.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The x86_64 kernel's Rust target.
pub const X86_64_TARGET: &str = "x86_64-unknown-none";
/// The aarch64 kernel's Rust target.
pub const AARCH64_TARGET: &str = "aarch64-unknown-none";
/// Every kernel target artifacts can be compiled for.
pub const KERNEL_TARGETS: [&str; 2] = [X86_64_TARGET, AARCH64_TARGET];

/// The kernel target of the architecture this crate is built for: in the kernel, the kernel's
/// own; on a build host, the host's architecture (x86_64 where it is neither). Artifacts for the
/// running kernel are compiled for it.
pub const KERNEL_TARGET: &str = if cfg!(target_arch = "aarch64") { AARCH64_TARGET } else { X86_64_TARGET };

/// How much native stack a component may use below its entry frame. The kernel runs each
/// component on a stack with at least [`COMPONENT_STACK_BYTES`].
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// The size of the kernel stack a component runs on: its wasm stack plus room for host calls.
pub const COMPONENT_STACK_BYTES: usize = MAX_WASM_STACK + 256 * 1024;

/// The virtual reservation of each linear memory: all of a 32-bit memory's address space, so
/// that no address a wasm load or store can form lies outside it.
pub const MEMORY_RESERVATION: u64 = 1 << 32;

/// The unmapped guard after (and before) each linear memory's reservation: a static offset in
/// a load or store up to this size still lands in it, so its check is elided too.
pub const MEMORY_GUARD: u64 = 32 << 20;

/// A CPU feature that compiled code may use: x86_64's, then aarch64's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuFeature {
    /// SSE3.
    Sse3,
    /// SSSE3.
    Ssse3,
    /// SSE4.1: needed so that float rounding is inline code, never a libcall (the kernel is a
    /// soft-float target, whose float calling convention generated code must not use).
    Sse41,
    /// SSE4.2.
    Sse42,
    /// POPCNT.
    Popcnt,
    /// LZCNT.
    Lzcnt,
    /// BMI1.
    Bmi1,
    /// BMI2.
    Bmi2,
    /// AVX (needs the kernel to enable AVX state).
    Avx,
    /// AVX2.
    Avx2,
    /// FMA.
    Fma,
    /// aarch64: the large-system-extension atomics (ARMv8.1 LSE).
    Lse,
    /// aarch64: pointer authentication.
    Pauth,
    /// aarch64: half-precision floating point.
    Fp16,
    /// aarch64: the dot-product instructions.
    Dotprod,
    /// aarch64: the 8-bit integer matrix multiply instructions.
    I8mm,
}

impl CpuFeature {
    /// Every feature, in a fixed order.
    pub const ALL: [CpuFeature; 16] = [
        CpuFeature::Sse3,
        CpuFeature::Ssse3,
        CpuFeature::Sse41,
        CpuFeature::Sse42,
        CpuFeature::Popcnt,
        CpuFeature::Lzcnt,
        CpuFeature::Bmi1,
        CpuFeature::Bmi2,
        CpuFeature::Avx,
        CpuFeature::Avx2,
        CpuFeature::Fma,
        CpuFeature::Lse,
        CpuFeature::Pauth,
        CpuFeature::Fp16,
        CpuFeature::Dotprod,
        CpuFeature::I8mm,
    ];

    /// The kernel target whose CPUs may have it.
    pub const fn target(self) -> &'static str {
        match self {
            CpuFeature::Lse | CpuFeature::Pauth | CpuFeature::Fp16 | CpuFeature::Dotprod | CpuFeature::I8mm => {
                AARCH64_TARGET
            }
            _ => X86_64_TARGET,
        }
    }

    /// The name Rust (`is_x86_feature_detected!`, `is_aarch64_feature_detected!`) and Wasmtime's
    /// `detect_host_feature` use.
    pub const fn name(self) -> &'static str {
        match self {
            CpuFeature::Sse3 => "sse3",
            CpuFeature::Ssse3 => "ssse3",
            CpuFeature::Sse41 => "sse4.1",
            CpuFeature::Sse42 => "sse4.2",
            CpuFeature::Popcnt => "popcnt",
            CpuFeature::Lzcnt => "lzcnt",
            CpuFeature::Bmi1 => "bmi1",
            CpuFeature::Bmi2 => "bmi2",
            CpuFeature::Avx => "avx",
            CpuFeature::Avx2 => "avx2",
            CpuFeature::Fma => "fma",
            CpuFeature::Lse => "lse",
            CpuFeature::Pauth => "paca",
            CpuFeature::Fp16 => "fp16",
            CpuFeature::Dotprod => "dotprod",
            CpuFeature::I8mm => "i8mm",
        }
    }

    /// Cranelift's ISA flag for it.
    pub const fn cranelift_flag(self) -> &'static str {
        match self {
            CpuFeature::Sse3 => "has_sse3",
            CpuFeature::Ssse3 => "has_ssse3",
            CpuFeature::Sse41 => "has_sse41",
            CpuFeature::Sse42 => "has_sse42",
            CpuFeature::Popcnt => "has_popcnt",
            CpuFeature::Lzcnt => "has_lzcnt",
            CpuFeature::Bmi1 => "has_bmi1",
            CpuFeature::Bmi2 => "has_bmi2",
            CpuFeature::Avx => "has_avx",
            CpuFeature::Avx2 => "has_avx2",
            CpuFeature::Fma => "has_fma",
            CpuFeature::Lse => "has_lse",
            CpuFeature::Pauth => "has_pauth",
            CpuFeature::Fp16 => "has_fp16",
            CpuFeature::Dotprod => "has_dotprod",
            CpuFeature::I8mm => "has_i8mm",
        }
    }

    /// The feature called `name` (as in [`CpuFeature::name`]).
    pub fn from_name(name: &str) -> Option<CpuFeature> {
        CpuFeature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The features `target`'s CPUs may have.
    pub fn of_target(target: &str) -> impl Iterator<Item = CpuFeature> + '_ {
        CpuFeature::ALL.into_iter().filter(move |f| f.target() == target)
    }
}

/// The CPU features an artifact is compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CpuProfile {
    /// A label: `baseline`, `host`, or `custom`.
    pub name: String,
    /// The features, sorted and without duplicates.
    pub features: Vec<CpuFeature>,
}

/// A CPU profile could not be understood: a name that is no feature of the target's CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFeature {
    /// The name.
    pub name: String,
    /// The target whose features were expected.
    pub target: String,
}

impl fmt::Display for UnknownFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown CPU feature '{}' for {} (known:", self.name, self.target)?;
        for feature in CpuFeature::of_target(&self.target) {
            write!(f, " {}", feature.name())?;
        }
        write!(f, ")")
    }
}

impl CpuProfile {
    /// x86-64-v2 (SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT): what every x86_64 CPU of the last
    /// fifteen years has, and what Mica asks QEMU's CPU model to expose under TCG and KVM.
    pub fn baseline() -> CpuProfile {
        CpuProfile::new(
            "baseline",
            [CpuFeature::Sse3, CpuFeature::Ssse3, CpuFeature::Sse41, CpuFeature::Sse42, CpuFeature::Popcnt],
        )
    }

    /// No features: what a Pulley artifact, which runs on every CPU, is compiled for.
    pub fn portable() -> CpuProfile {
        CpuProfile { name: "portable".to_string(), features: Vec::new() }
    }

    /// The baseline of `target`'s CPUs: [`CpuProfile::baseline`] on x86_64; on aarch64 (ARMv8.0,
    /// whose FP and Advanced SIMD are not optional) no optional feature; Pulley has none.
    pub fn baseline_for(target: &str) -> CpuProfile {
        if target == X86_64_TARGET {
            CpuProfile::baseline()
        } else {
            CpuProfile { name: "baseline".to_string(), features: Vec::new() }
        }
    }

    /// An x86_64 profile with exactly `features` (SSE4.1 is always added: see
    /// [`CpuFeature::Sse41`]).
    pub fn new(name: &str, features: impl IntoIterator<Item = CpuFeature>) -> CpuProfile {
        CpuProfile::for_target(X86_64_TARGET, name, features)
    }

    /// A profile of `target` with exactly `features` (on x86_64, SSE4.1 is always added).
    pub fn for_target(target: &str, name: &str, features: impl IntoIterator<Item = CpuFeature>) -> CpuProfile {
        let always: &[CpuFeature] = if target == X86_64_TARGET { &[CpuFeature::Sse41] } else { &[] };
        let mut features: Vec<CpuFeature> = features.into_iter().chain(always.iter().copied()).collect();
        features.sort();
        features.dedup();
        CpuProfile { name: name.to_string(), features }
    }

    /// Parses a comma-separated x86_64 feature list such as `sse4.2,popcnt,avx2`.
    pub fn parse_list(list: &str) -> Result<CpuProfile, UnknownFeature> {
        CpuProfile::parse_list_for(X86_64_TARGET, list)
    }

    /// Parses a comma-separated feature list of `target`'s CPUs (`lse,fp16` on aarch64).
    pub fn parse_list_for(target: &str, list: &str) -> Result<CpuProfile, UnknownFeature> {
        let features = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                CpuFeature::from_name(s)
                    .filter(|f| f.target() == target)
                    .ok_or_else(|| UnknownFeature { name: s.to_string(), target: target.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CpuProfile::for_target(target, "custom", features))
    }

    /// The features as a comma-separated list.
    pub fn feature_list(&self) -> String {
        let names: Vec<&str> = self.features.iter().map(|f| f.name()).collect();
        names.join(",")
    }
}

/// The CPU-limit instrumentation compiled into an artifact. Each costs time in every loop and
/// call of the component (a sieve, counted with callgrind: 36 M instructions without either,
/// 80 M with epoch checks, 95 M with both), so it is compiled in only for components whose
/// manifest sets the limit that needs it: [`Instrumentation::for_limits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instrumentation {
    /// Fuel counting (Wasmtime's `consume_fuel`): needed by a `fuel` budget.
    pub fuel: bool,
    /// Epoch deadline checks (Wasmtime's `epoch_interruption`): needed by a CPU time limit.
    pub epochs: bool,
}

impl Instrumentation {
    /// No instrumentation: the component runs at full speed and cannot be stopped by a CPU limit.
    pub const NONE: Instrumentation = Instrumentation { fuel: false, epochs: false };

    /// Every variant, in the order of [`Instrumentation::index`].
    pub const ALL: [Instrumentation; 4] = [
        Instrumentation::NONE,
        Instrumentation { fuel: true, epochs: false },
        Instrumentation { fuel: false, epochs: true },
        Instrumentation { fuel: true, epochs: true },
    ];

    /// What a component with these limits needs: fuel counting for a fuel budget, epoch checks
    /// for a CPU time limit, nothing for neither.
    pub const fn for_limits(fuel: bool, cpu_time_limit: bool) -> Instrumentation {
        Instrumentation { fuel, epochs: cpu_time_limit }
    }

    /// Its position in [`Instrumentation::ALL`] (0..4), e.g. to index a table of engines.
    pub const fn index(self) -> usize {
        self.fuel as usize | (self.epochs as usize) << 1
    }

    /// The instrumentation `engine` was configured with.
    pub fn of(engine: &wasmtime::Engine) -> Instrumentation {
        Instrumentation { fuel: engine.get_consume_fuel(), epochs: engine.get_epoch_interruption() }
    }

    /// Its name in artifact keys: `none`, `fuel`, `epochs` or `fuel+epochs`.
    pub const fn name(self) -> &'static str {
        match (self.fuel, self.epochs) {
            (false, false) => "none",
            (true, false) => "fuel",
            (false, true) => "epochs",
            (true, true) => "fuel+epochs",
        }
    }
}

impl fmt::Display for Instrumentation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that decides whether an artifact can be loaded: the cache key of the AOT side.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    /// Wasmtime's version.
    pub wasmtime: &'static str,
    /// The compilation target.
    pub target: &'static str,
    /// A version of [`engine_config`]'s settings; bump it whenever they change.
    pub config_version: u32,
    /// The CPU-limit instrumentation compiled in (an engine with exactly this loads it).
    pub instrumentation: Instrumentation,
    /// The CPU features.
    pub cpu: CpuProfile,
}

/// Bump whenever [`engine_config`] changes what it sets.
pub const CONFIG_VERSION: u32 = 4;

impl ArtifactKey {
    /// The key for `cpu` and `instrumentation` with this build's settings.
    pub fn new(cpu: CpuProfile, instrumentation: Instrumentation) -> ArtifactKey {
        ArtifactKey::for_target(KERNEL_TARGET, cpu, instrumentation)
    }

    /// The key of a Pulley artifact with `instrumentation`.
    pub fn pulley(instrumentation: Instrumentation) -> ArtifactKey {
        ArtifactKey::for_target(PULLEY_TARGET, CpuProfile::portable(), instrumentation)
    }

    /// The key for `target` (one of [`TARGETS`]), `cpu` and `instrumentation`.
    pub fn for_target(target: &'static str, cpu: CpuProfile, instrumentation: Instrumentation) -> ArtifactKey {
        ArtifactKey { wasmtime: WASMTIME_VERSION, target, config_version: CONFIG_VERSION, instrumentation, cpu }
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wasmtime-{}/{}/config-{}/instrument-{}/cpu-{}",
            self.wasmtime,
            self.target,
            self.config_version,
            self.instrumentation,
            self.cpu.feature_list()
        )
    }
}

/// The Wasmtime configuration shared by the AOT compiler and the kernel, with `instrumentation`
/// compiled in (an artifact loads only into an engine with the same). On the AOT side the
/// caller then adds the Cranelift flags of the CPU profile ([`enable_cpu_features`]); on the
/// kernel side it adds its code memory and its CPU feature detection.
pub fn engine_config(instrumentation: Instrumentation) -> Config {
    engine_config_for(KERNEL_TARGET, instrumentation).expect("the kernel target is known to Wasmtime")
}

/// A compilation target Mica does not know, or a CPU feature its CPUs cannot have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTarget(pub String);

impl fmt::Display for UnknownTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown target '{}' (Mica compiles for: {})", self.0, TARGETS.join(", "))
    }
}

/// A compile configuration that cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The target is unknown.
    Target(UnknownTarget),
    /// The CPU profile names a feature of another architecture's CPUs.
    ForeignFeature {
        /// The feature.
        feature: CpuFeature,
        /// The target compiled for.
        target: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Target(e) => write!(f, "{e}"),
            ConfigError::ForeignFeature { feature, target } => {
                write!(f, "CPU feature '{}' is one of {}'s, not of {target}'s CPUs", feature.name(), feature.target())
            }
        }
    }
}

impl From<UnknownTarget> for ConfigError {
    fn from(e: UnknownTarget) -> Self {
        ConfigError::Target(e)
    }
}

/// Wasmtime's portable interpreter, Pulley (64-bit): one artifact for every CPU, run by the
/// interpreter inside the kernel, for a component to start at once while its native code compiles.
pub const PULLEY_TARGET: &str = "pulley64";

/// The targets artifacts can be compiled for: the kernels', and Pulley.
pub const TARGETS: [&str; 3] = [X86_64_TARGET, AARCH64_TARGET, PULLEY_TARGET];

/// [`engine_config`] for the kernel target `target`, one of [`TARGETS`].
pub fn engine_config_for(target: &str, instrumentation: Instrumentation) -> Result<Config, UnknownTarget> {
    if !TARGETS.contains(&target) {
        return Err(UnknownTarget(target.to_string()));
    }
    let pulley = target == PULLEY_TARGET;
    let mut config = Config::new();
    // The target is set on both sides: when the kernel loads an artifact, Wasmtime compares
    // the artifact's architecture and operating system with the engine's.
    config.target(target).map_err(|_| UnknownTarget(target.to_string()))?;
    config
        .wasm_component_model(true)
        // Guard regions instead of bounds checks: every 32-bit linear memory sits in a 4 GiB
        // reservation with a guard on either side, so no wasm address can reach past it and
        // Cranelift elides the explicit check on every load and store. An access beyond the
        // accessible part faults (#PF), a trapping instruction raises #UD or #DE, and the
        // kernel hands each to Wasmtime's trap handler (`signals_based_traps`). Wasmtime checks
        // at load that an artifact was compiled with exactly these, so both sides must agree.
        // Pulley's interpreter checks every access itself: its loads are the kernel's own code,
        // whose faults are kernel faults, never wasm traps.
        .signals_based_traps(!pulley)
        // Data segments laid out page-aligned in the artifact, so that the kernel maps them into
        // each new linear memory copy-on-write (`wasmtime_memory_image_*`) instead of copying.
        .memory_init_cow(true)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(MEMORY_GUARD)
        .guard_before_linear_memory(true)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        // CPU limits: fuel for exact instruction budgets, epochs for time limits; each only
        // where a limit needs it, since the checks slow every loop down.
        .consume_fuel(instrumentation.fuel)
        .epoch_interruption(instrumentation.epochs)
        .max_wasm_stack(MAX_WASM_STACK);
    if target == X86_64_TARGET {
        // SAFETY: the x86_64 kernel target is soft-float; with SSE4.1 in every profile,
        // Cranelift emits no float libcalls whose calling convention could differ. (The aarch64
        // kernel target is hard-float, as Cranelift's code is.)
        unsafe {
            config.x86_float_abi_ok(true);
        }
    }
    Ok(config)
}

/// Enables the Cranelift ISA flags for `profile` (AOT side).
#[cfg(feature = "compile")]
pub fn enable_cpu_features(config: &mut Config, profile: &CpuProfile) {
    for feature in &profile.features {
        // SAFETY: compiling for features the target may lack is safe; the kernel checks each
        // one against the running CPU (cpuid) before it loads the artifact.
        unsafe {
            config.cranelift_flag_enable(feature.cranelift_flag());
        }
    }
}

/// The configuration that compiles artifacts with `key` (its target, instrumentation and CPU
/// features; its Wasmtime version and settings version are this build's): the same for the host's
/// AOT compiler and the compiler component, so both make the same artifact from the same wasm.
#[cfg(feature = "compile")]
pub fn compile_config(target: &str, instrumentation: Instrumentation, cpu: &CpuProfile) -> Result<Config, ConfigError> {
    if let Some(feature) = cpu.features.iter().find(|f| f.target() != target) {
        return Err(ConfigError::ForeignFeature { feature: *feature, target: target.into() });
    }
    let mut config = engine_config_for(target, instrumentation)?;
    enable_cpu_features(&mut config, cpu);
    Ok(config)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn profiles() {
        let b = CpuProfile::baseline();
        assert_eq!(b.feature_list(), "sse3,ssse3,sse4.1,sse4.2,popcnt");
        let c = CpuProfile::parse_list("avx2, popcnt,,avx2").expect("parses");
        assert_eq!(c.feature_list(), "sse4.1,popcnt,avx2");
        let e = CpuProfile::parse_list("sse9").expect_err("unknown");
        assert!(e.to_string().starts_with("unknown CPU feature 'sse9' for x86_64-unknown-none (known: sse3"));
    }

    #[test]
    fn aarch64_profiles() {
        assert!(CpuProfile::baseline_for(AARCH64_TARGET).features.is_empty());
        assert_eq!(CpuProfile::baseline_for(X86_64_TARGET), CpuProfile::baseline());
        let p = CpuProfile::parse_list_for(AARCH64_TARGET, "fp16,lse").expect("aarch64 features");
        assert_eq!(p.feature_list(), "lse,fp16", "no SSE4.1 on aarch64");
        let e = CpuProfile::parse_list_for(AARCH64_TARGET, "lse,avx2").expect_err("an x86 feature");
        assert_eq!(
            e.to_string(),
            "unknown CPU feature 'avx2' for aarch64-unknown-none (known: lse paca fp16 dotprod i8mm)"
        );
        assert!(CpuProfile::parse_list("lse").is_err(), "an aarch64 feature in an x86_64 list");
        let all: usize = KERNEL_TARGETS.iter().map(|t| CpuFeature::of_target(t).count()).sum();
        assert_eq!(all, CpuFeature::ALL.len(), "every feature belongs to one kernel target");
    }

    #[test]
    fn key_names_everything() {
        let k = ArtifactKey::new(CpuProfile::baseline(), Instrumentation::NONE);
        assert_eq!(
            k.to_string(),
            "wasmtime-48.0.8/x86_64-unknown-none/config-4/instrument-none/cpu-sse3,ssse3,sse4.1,sse4.2,popcnt"
        );
        let f = ArtifactKey::new(CpuProfile::baseline(), Instrumentation::for_limits(true, true));
        assert_eq!(
            f.to_string(),
            "wasmtime-48.0.8/x86_64-unknown-none/config-4/instrument-fuel+epochs/cpu-sse3,ssse3,sse4.1,sse4.2,popcnt"
        );
        // Keys (and so cache names) differ for every instrumentation.
        let mut names: Vec<String> =
            Instrumentation::ALL.iter().map(|i| ArtifactKey::new(CpuProfile::baseline(), *i).to_string()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn instrumentation_only_for_the_limits_set() {
        assert_eq!(Instrumentation::for_limits(false, false), Instrumentation::NONE);
        assert_eq!(Instrumentation::for_limits(true, false), Instrumentation { fuel: true, epochs: false });
        assert_eq!(Instrumentation::for_limits(false, true), Instrumentation { fuel: false, epochs: true });
        assert_eq!(Instrumentation::for_limits(true, true), Instrumentation { fuel: true, epochs: true });
        for (i, instrumentation) in Instrumentation::ALL.into_iter().enumerate() {
            assert_eq!(instrumentation.index(), i);
        }
        let names: Vec<&str> = Instrumentation::ALL.iter().map(|i| i.name()).collect();
        assert_eq!(names, ["none", "fuel", "epochs", "fuel+epochs"]);
    }

    #[test]
    fn pulley_is_a_target_of_its_own() {
        let k = ArtifactKey::pulley(Instrumentation::NONE);
        assert_eq!(k.to_string(), "wasmtime-48.0.8/pulley64/config-4/instrument-none/cpu-");
        let config = engine_config_for(PULLEY_TARGET, Instrumentation::NONE).expect("pulley");
        let engine = wasmtime::Engine::new(&config).expect("a pulley engine");
        assert!(engine.is_pulley());
        assert_eq!(
            engine_config_for("riscv64gc-unknown-none-elf", Instrumentation::NONE).err().map(|e| e.to_string()),
            Some(
                "unknown target 'riscv64gc-unknown-none-elf' (Mica compiles for: x86_64-unknown-none, \
                 aarch64-unknown-none, pulley64)"
                    .into()
            )
        );
    }

    #[test]
    fn engine_config_compiles_in_exactly_the_instrumentation() {
        for instrumentation in Instrumentation::ALL {
            let engine = wasmtime::Engine::new(&engine_config(instrumentation)).expect("engine");
            assert_eq!(Instrumentation::of(&engine), instrumentation);
        }
    }
}
