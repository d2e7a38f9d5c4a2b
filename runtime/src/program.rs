//! Loading and running one component: the artifact checks, the capability-gated linker, the
//! store with its limits, and the outcome of `wasi:cli/run`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};

use crate::config::Instrumentation;
use crate::host::{self, InstanceState, wasi};
use crate::hw::HwPort;
use crate::ipc::IpcPort;
use crate::limits::Limits;
use crate::platform::Platform;

/// One interface the runtime can provide, and how to link it.
struct Interface {
    name: &'static str,
    add: fn(&mut Linker<InstanceState>) -> wasmtime::Result<()>,
}

macro_rules! interface {
    ($name:literal, $($module:ident)::+) => {
        Interface { name: $name, add: |l| $($module)::+::add_to_linker::<InstanceState, HasSelf<InstanceState>>(l, |c| c) }
    };
}

/// Every interface Mica provides, by its unversioned name.
const INTERFACES: &[Interface] = &[
    interface!("wasi:cli/environment", wasi::cli::environment),
    interface!("wasi:cli/exit", wasi::cli::exit),
    interface!("wasi:cli/stdin", wasi::cli::stdin),
    interface!("wasi:cli/stdout", wasi::cli::stdout),
    interface!("wasi:cli/stderr", wasi::cli::stderr),
    interface!("wasi:cli/terminal-input", wasi::cli::terminal_input),
    interface!("wasi:cli/terminal-output", wasi::cli::terminal_output),
    interface!("wasi:cli/terminal-stdin", wasi::cli::terminal_stdin),
    interface!("wasi:cli/terminal-stdout", wasi::cli::terminal_stdout),
    interface!("wasi:cli/terminal-stderr", wasi::cli::terminal_stderr),
    interface!("wasi:clocks/monotonic-clock", wasi::clocks::monotonic_clock),
    interface!("wasi:clocks/wall-clock", wasi::clocks::wall_clock),
    interface!("wasi:filesystem/types", wasi::filesystem::types),
    interface!("wasi:filesystem/preopens", wasi::filesystem::preopens),
    interface!("wasi:io/error", wasi::io::error),
    interface!("wasi:io/poll", wasi::io::poll),
    interface!("wasi:io/streams", wasi::io::streams),
    interface!("wasi:random/random", wasi::random::random),
    interface!("wasi:random/insecure", wasi::random::insecure),
    interface!("wasi:random/insecure-seed", wasi::random::insecure_seed),
    // With `network-error-code` (unstable in the WIT): a socket stream's error names its code.
    Interface {
        name: "wasi:sockets/network",
        add: |l| {
            let mut options = wasi::sockets::network::LinkOptions::default();
            options.network_error_code(true);
            wasi::sockets::network::add_to_linker::<InstanceState, HasSelf<InstanceState>>(l, &options, |c| c)
        },
    },
    interface!("wasi:sockets/instance-network", wasi::sockets::instance_network),
    interface!("wasi:sockets/ip-name-lookup", wasi::sockets::ip_name_lookup),
    interface!("wasi:sockets/tcp", wasi::sockets::tcp),
    interface!("wasi:sockets/tcp-create-socket", wasi::sockets::tcp_create_socket),
    interface!("wasi:sockets/udp", wasi::sockets::udp),
    interface!("wasi:sockets/udp-create-socket", wasi::sockets::udp_create_socket),
    interface!("mica:kernel/log", host::mica::kernel::log),
    interface!("mica:kernel/ipc", host::mica::kernel::ipc),
    interface!("mica:hw/types", host::mica::hw::types),
    interface!("mica:hw/device", host::mica::hw::device),
    interface!("mica:hw/mmio", host::mica::hw::mmio),
    interface!("mica:hw/irq", host::mica::hw::irq),
    interface!("mica:hw/dma", host::mica::hw::dma),
];

/// The unversioned names of every interface the runtime provides.
pub fn provided_interfaces() -> impl Iterator<Item = &'static str> {
    INTERFACES.iter().map(|i| i.name)
}

/// Whether `grant` (an interface like `wasi:cli/stdout`, a package like `wasi:cli`, or a whole
/// namespace like `wasi`) covers the unversioned interface name `interface`.
pub fn grant_covers(grant: &str, interface: &str) -> bool {
    grant == interface
        || interface
            .strip_prefix(grant)
            .is_some_and(|rest| rest.starts_with('/') || (!grant.contains(':') && rest.starts_with(':')))
}

/// Why a component was not started.
#[derive(Debug)]
pub enum LoadError {
    /// Wasmtime refused the artifact (another version, other settings, a CPU feature missing,
    /// or not an artifact at all).
    Artifact(String),
    /// The component imports an interface the manifest does not grant.
    NotGranted(String),
    /// The component imports an interface Mica does not provide.
    NotProvided(String),
    /// The component imports `wasi:random/random`, and the machine has no entropy source to
    /// make secure bytes with.
    NoEntropySource(String),
    /// Linking or instantiation failed.
    Instantiate(String),
    /// A CPU limit was asked for, but the component's code was compiled without the
    /// instrumentation that enforces it (running it unlimited instead would be wrong).
    NotInstrumented {
        /// The limit as the manifest sets it: `fuel = 1000`, `cpu_time_limit = 50 ms`.
        limit: String,
        /// What enforces it: `fuel counting` or `epoch checks`.
        needs: &'static str,
        /// What the code was compiled with.
        compiled: Instrumentation,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Artifact(e) => write!(f, "artifact refused: {e}"),
            LoadError::NotGranted(i) => write!(f, "imports {i}, which its manifest does not grant"),
            LoadError::NotProvided(i) => write!(f, "imports {i}, which Mica does not provide"),
            LoadError::NoEntropySource(i) => write!(f, "imports {i}, but {}", crate::platform::NoEntropySource),
            LoadError::Instantiate(e) => write!(f, "cannot instantiate: {e}"),
            LoadError::NotInstrumented { limit, needs, compiled } => write!(
                f,
                "its manifest sets {limit}, but its artifact was compiled without {needs} (instrumentation: {compiled})"
            ),
        }
    }
}

/// Deserializes an AOT artifact.
///
/// # Safety
/// `bytes` must be an artifact produced by Mica's AOT compiler (xtask) for this engine's
/// settings: Wasmtime trusts the machine code inside it. The bundle's checksum and the artifact
/// key checks come first; Wasmtime then checks version, target, settings and CPU features.
pub unsafe fn load(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    // SAFETY: forwarded to the caller.
    unsafe { Component::deserialize(engine, bytes) }.map_err(|e| LoadError::Artifact(format!("{e:#}")))
}

/// The set of interfaces a manifest's grants cover: what a linker for them holds. Components
/// with the same set can share one linker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interfaces(u64);

const _: () = assert!(INTERFACES.len() <= 64, "Interfaces is a 64-bit set");

impl Interfaces {
    /// The interfaces `grants` covers.
    pub fn granted(grants: &[String]) -> Interfaces {
        let bits = INTERFACES
            .iter()
            .enumerate()
            .filter(|(_, i)| grants.iter().any(|g| grant_covers(g, i.name)))
            .fold(0, |bits, (n, _)| bits | 1u64 << n);
        Interfaces(bits)
    }

    fn contains(self, n: usize) -> bool {
        self.0 & (1u64 << n) != 0
    }
}

/// Checks that `component` imports only interfaces Mica provides and `grants` covers, and no
/// `wasi:random/random` unless the platform `has_entropy_source`; returns the set of interfaces
/// its linker must hold.
pub fn check_imports(
    engine: &Engine,
    component: &Component,
    grants: &[String],
    has_entropy_source: bool,
) -> Result<Interfaces, LoadError> {
    for (name, _) in component.component_type().imports(engine) {
        let bare = name.split('@').next().unwrap_or(name);
        if !INTERFACES.iter().any(|i| i.name == bare) {
            return Err(LoadError::NotProvided(name.to_string()));
        }
        if !grants.iter().any(|g| grant_covers(g, bare)) {
            return Err(LoadError::NotGranted(name.to_string()));
        }
        if bare == "wasi:random/random" && !has_entropy_source {
            return Err(LoadError::NoEntropySource(name.to_string()));
        }
    }
    Ok(Interfaces::granted(grants))
}

/// A linker with exactly `interfaces`.
pub fn linker(engine: &Engine, interfaces: Interfaces) -> Result<Linker<InstanceState>, LoadError> {
    let mut linker = Linker::new(engine);
    for (_, interface) in INTERFACES.iter().enumerate().filter(|(n, _)| interfaces.contains(*n)) {
        (interface.add)(&mut linker)
            .map_err(|e| LoadError::Instantiate(format!("linking {}: {e:#}", interface.name)))?;
    }
    Ok(linker)
}

/// Loads an AOT artifact where it lies, without copying it: Wasmtime's in-place load.
///
/// # Safety
/// As for [`load`]; in addition, `memory` must stay mapped, unchanged, for as long as the
/// component (and anything made from it) lives, and must start on a page.
pub unsafe fn load_in_place(engine: &Engine, memory: core::ptr::NonNull<[u8]>) -> Result<Component, LoadError> {
    // SAFETY: forwarded to the caller.
    unsafe { Component::deserialize_raw(engine, memory) }.map_err(|e| LoadError::Artifact(format!("{e:#}")))
}

/// Builds a linker with exactly the interfaces `grants` covers, after checking that `component`
/// imports nothing else (see [`check_imports`]).
pub fn link(
    engine: &Engine,
    component: &Component,
    grants: &[String],
    has_entropy_source: bool,
) -> Result<Linker<InstanceState>, LoadError> {
    linker(engine, check_imports(engine, component, grants, has_entropy_source)?)
}

/// A component resolved against its linker once (Wasmtime's `InstancePre`): every instance of
/// it, its restarts among them, is made from this without loading or linking again.
pub type Prepared = host::ProgramPre<InstanceState>;

/// Resolves `component`'s imports against `linker`.
pub fn prepare(component: &Component, linker: &Linker<InstanceState>) -> Result<Prepared, LoadError> {
    let pre = linker.instantiate_pre(component).map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
    host::ProgramPre::new(pre).map_err(|e| LoadError::Instantiate(format!("{e:#}")))
}

/// Whether code compiled with `compiled` can enforce the CPU limits a manifest sets (`fuel`
/// units, `cpu_time_limit_ms`): a limit without its instrumentation is an error, never silently
/// unlimited. The kernel checks this before it loads an artifact, and [`run_timed`] again.
pub fn check_limits(
    compiled: Instrumentation,
    fuel: Option<u64>,
    cpu_time_limit_ms: Option<u64>,
) -> Result<(), LoadError> {
    if let Some(fuel) = fuel
        && !compiled.fuel
    {
        return Err(LoadError::NotInstrumented { limit: format!("fuel = {fuel}"), needs: "fuel counting", compiled });
    }
    if let Some(ms) = cpu_time_limit_ms
        && !compiled.epochs
    {
        return Err(LoadError::NotInstrumented {
            limit: format!("cpu_time_limit = {ms} ms"),
            needs: "epoch checks",
            compiled,
        });
    }
    Ok(())
}

/// A CPU time limit: as the manifest sets it, and as the engine enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimeLimit {
    /// The manifest's `cpu_time_limit`, in milliseconds.
    pub ms: u64,
    /// The epoch deadline that enforces it, in epochs from the start.
    pub epochs: u64,
}

/// What a component is started with.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Its name.
    pub name: String,
    /// Its arguments (without the program name, which is added).
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Memory budget in bytes.
    pub memory_limit: usize,
    /// Fuel budget (`None`: unlimited).
    pub fuel: Option<u64>,
    /// CPU time limit (`None`: unlimited).
    pub cpu_time: Option<CpuTimeLimit>,
    /// The directories it finds through `wasi:filesystem`.
    pub dirs: Vec<host::filesystem::Preopen>,
    /// Its way to the network through `wasi:sockets` (none: no network).
    pub network: Option<host::sockets::NetworkGrant>,
}

/// How a component ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It returned from `run` or called `exit`, with this status.
    Exited(u8),
    /// It trapped (including a Rust panic, which aborts with `unreachable`).
    Trapped(String),
    /// It ran out of its memory budget.
    OutOfMemory {
        /// Bytes it asked for in all.
        asked: usize,
        /// Its budget.
        limit: usize,
        /// The trap or error it ended with.
        detail: String,
    },
    /// It used up its fuel.
    OutOfFuel(u64),
    /// It ran past its CPU time limit.
    TimeLimit,
}

impl Outcome {
    /// Whether it succeeded (exit status 0).
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exited with status {code}"),
            Outcome::Trapped(e) => write!(f, "trapped: {e}"),
            Outcome::OutOfMemory { asked, limit, detail } => {
                write!(f, "ran out of memory: asked for {asked} bytes, limit {limit} ({detail})")
            }
            Outcome::OutOfFuel(fuel) => write!(f, "exceeded its CPU limit: all {fuel} units of fuel used"),
            Outcome::TimeLimit => write!(f, "exceeded its CPU time limit"),
        }
    }
}

/// The kernel objects one component instance acts through (none when hosted on Linux).
#[derive(Clone, Default)]
pub struct Ports {
    /// Its IPC port (`mica:kernel/ipc`).
    pub ipc: Option<Arc<dyn IpcPort>>,
    /// Its hardware port (`mica:hw`).
    pub hw: Option<Arc<dyn HwPort>>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports").field("ipc", &self.ipc.is_some()).field("hw", &self.hw.is_some()).finish()
    }
}

/// What instantiating and running a component cost, in units of the caller's counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Making the store and instantiating the component.
    pub instantiate: u64,
    /// The `wasi:cli/run` call, including flushing its output.
    pub run: u64,
}

/// Instantiates `component` and runs its `wasi:cli/run` export to the end, measuring its
/// [`Phases`] with `now` (any monotonic counter, e.g. the TSC). Its limits are set only where
/// `engine` has the instrumentation for them ([`check_limits`] refuses the rest); an
/// instrumented engine without a limit gets an unreachable one.
pub fn run_timed(
    prepared: &Prepared,
    platform: Arc<dyn Platform>,
    ports: Ports,
    launch: &Launch,
    now: fn() -> u64,
) -> Result<(Outcome, Phases), LoadError> {
    let engine = prepared.engine();
    let start = now();
    let mut args = Vec::with_capacity(launch.args.len() + 1);
    args.push(launch.name.clone());
    args.extend(launch.args.iter().cloned());
    let mut store = new_store(engine, platform, ports, launch, args)?;

    let mut instantiated = None;
    let result = prepared.instantiate(&mut store).map_err(|e| (true, e)).and_then(|program| {
        instantiated = Some(now());
        program.wasi_cli_run().call_run(&mut store).map_err(|e| (false, e))
    });
    store.data_mut().flush_output();
    // Its sockets close as a process's do at exit: what it wrote is sent first (unless it is
    // being ended from outside, which stops that too).
    if let Err(e) = store.data_mut().close_sockets() {
        log::debug!("component {}: closing its sockets: {e:#}", launch.name);
    }
    let end = now();
    let instantiated = instantiated.unwrap_or(end);
    let phases = Phases { instantiate: instantiated.wrapping_sub(start), run: end.wrapping_sub(instantiated) };
    let outcome = match result {
        Ok(Ok(())) => Outcome::Exited(0),
        Ok(Err(())) => Outcome::Exited(1),
        Err((during_instantiation, e)) => ended(&store, launch, &e, during_instantiation)?,
    };
    Ok((outcome, phases))
}

/// A store for one instance of `launch` in `engine`, with its limits. Its limits are set only
/// where `engine` has the instrumentation for them ([`check_limits`] refuses the rest); an
/// instrumented engine without a limit gets an unreachable one.
pub(crate) fn new_store(
    engine: &Engine,
    platform: Arc<dyn Platform>,
    ports: Ports,
    launch: &Launch,
    args: Vec<String>,
) -> Result<Store<InstanceState>, LoadError> {
    let instrumentation = Instrumentation::of(engine);
    check_limits(instrumentation, launch.fuel, launch.cpu_time.map(|t| t.ms))?;
    let ctx = InstanceState {
        name: launch.name.clone(),
        args,
        env: launch.env.clone(),
        table: ResourceTable::new(),
        platform,
        limits: Limits::new(launch.memory_limit),
        stdout: host::LineBuffer::default(),
        stderr: host::LineBuffer::default(),
        exit_status: None,
        ipc: ports.ipc,
        spans: Default::default(),
        hw: ports.hw,
        fs: host::filesystem::FsState::new(launch.dirs.clone()),
        net: host::sockets::NetState::new(launch.network.clone()),
    };
    let mut store = Store::new(engine, ctx);
    store.limiter(|c| &mut c.limits);
    if instrumentation.fuel {
        store.set_fuel(launch.fuel.unwrap_or(u64::MAX)).map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
    }
    if instrumentation.epochs {
        store.set_epoch_deadline(launch.cpu_time.map_or(u64::MAX / 2, |t| t.epochs));
    }
    Ok(store)
}

/// How an instance of `launch` that failed with `e` ended; an error if it failed while it was
/// being instantiated (`during_instantiation`) for a reason other than its limits.
pub(crate) fn ended(
    store: &Store<InstanceState>,
    launch: &Launch,
    e: &wasmtime::Error,
    during_instantiation: bool,
) -> Result<Outcome, LoadError> {
    // A trap's short description; the full error (with the wasm backtrace) goes to the debug log.
    let describe = |e: &wasmtime::Error| match e.downcast_ref::<Trap>() {
        Some(trap) => {
            log::debug!("component {}: {e:?}", launch.name);
            format!("{trap}")
        }
        None => format!("{e:#}"),
    };
    Ok(if let Some(host::exit::Exited(code)) = e.downcast_ref::<host::exit::Exited>() {
        Outcome::Exited(*code)
    } else if let Some((asked, limit)) = store.data().limits.refused {
        Outcome::OutOfMemory { asked, limit, detail: describe(e) }
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Outcome::OutOfFuel(launch.fuel.unwrap_or(u64::MAX)),
            Some(Trap::Interrupt) => Outcome::TimeLimit,
            _ if during_instantiation => return Err(LoadError::Instantiate(format!("{e:#}"))),
            _ => Outcome::Trapped(describe(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_cover_interfaces_and_packages() {
        assert!(grant_covers("wasi:cli", "wasi:cli/stdout"));
        assert!(grant_covers("wasi:cli/stdout", "wasi:cli/stdout"));
        assert!(!grant_covers("wasi:cli/std", "wasi:cli/stdout"));
        assert!(!grant_covers("wasi:cl", "wasi:cli/stdout"));
        assert!(!grant_covers("wasi:cli/stdout", "wasi:cli/stderr"));
        assert!(grant_covers("wasi", "wasi:io/streams"));
        assert!(!grant_covers("was", "wasi:io/streams"));
        assert!(!grant_covers("wasi:", "wasi:io/streams"));
    }

    #[test]
    fn equal_grants_share_a_linker_set() {
        let grants = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Spelled differently, the same interfaces: one set, so one shared linker.
        assert_eq!(Interfaces::granted(&grants(&["wasi"])), Interfaces::granted(&grants(&["wasi:cli", "wasi"])));
        let wasi = Interfaces::granted(&grants(&["wasi"]));
        let clocks = Interfaces::granted(&grants(&["wasi:clocks"]));
        assert_ne!(wasi, clocks);
        assert_eq!(Interfaces::granted(&[]), Interfaces(0));
        for (n, interface) in INTERFACES.iter().enumerate() {
            assert_eq!(wasi.contains(n), interface.name.starts_with("wasi:"), "{}", interface.name);
            assert_eq!(clocks.contains(n), interface.name.starts_with("wasi:clocks/"), "{}", interface.name);
        }
    }

    #[test]
    fn limits_need_their_instrumentation() {
        let none = Instrumentation::NONE;
        let fuel = Instrumentation::for_limits(true, false);
        let epochs = Instrumentation::for_limits(false, true);
        let both = Instrumentation::for_limits(true, true);
        for compiled in Instrumentation::ALL {
            assert!(check_limits(compiled, None, None).is_ok(), "{compiled}");
        }
        assert!(check_limits(fuel, Some(5), None).is_ok());
        assert!(check_limits(epochs, None, Some(3)).is_ok());
        assert!(check_limits(both, Some(5), Some(3)).is_ok());

        let e = check_limits(none, Some(5), None).expect_err("no fuel counting");
        assert_eq!(
            e.to_string(),
            "its manifest sets fuel = 5, but its artifact was compiled without fuel counting (instrumentation: none)"
        );
        let e = check_limits(fuel, None, Some(3)).expect_err("no epoch checks");
        assert_eq!(
            e.to_string(),
            "its manifest sets cpu_time_limit = 3 ms, but its artifact was compiled without epoch checks (instrumentation: fuel)"
        );
        assert!(check_limits(epochs, Some(5), Some(3)).is_err());
    }

    #[test]
    fn every_provided_interface_is_named_once() {
        let mut names: Vec<&str> = provided_interfaces().collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
