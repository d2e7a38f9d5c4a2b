//! Wasm containers: an image whose entrypoint is a WebAssembly component (the layout runwasi
//! uses: the `.wasm` file in the image's root, named by the entrypoint) runs as a component of
//! a Mica system in a micro-VM of its own, not in a Linux pod VM.
//!
//! - The system is the template `cargo xtask install-shim` built (`pods/shim/wasm-host.toml`:
//!   the block driver and the module store, compiled for the baseline CPU, and the compiler
//!   component) with the container's component added as wasm. The Mica kernel compiles it for
//!   the CPU it finds and keeps the native code in the module store, whose disk is the node's
//!   (`/var/lib/mica/module-store.img`): the next container of the same component on this node
//!   loads it instead of compiling.
//! - The component's standard output and error are the kernel's `[NAME] line` and
//!   `[NAME!] line` console lines; its status is the kernel's `mica: component NAME exited with
//!   status N` (or how else it ended).
//! - QEMU starts paused at `Create` (its pid is the task's) and runs at `Start`, through its
//!   QMP socket.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mica_bundle::{Bundle, BundleWriter, Code, ComponentSpec, EntryKind, MANIFEST_ENTRY, Restart};
use mica_launch::{Accel, AccelChoice, KvmProbe, QemuCommand};
use sha2::{Digest, Sha256};

use crate::guest::{Exit, Sink};

/// Overrides where the Mica kernel and the template bundle are.
pub const IMAGE_DIR_ENV: &str = "MICA_WASM_IMAGE_DIR";
/// Overrides where the node's module store (its disk image) is.
pub const STORE_ENV: &str = "MICA_MODULE_STORE";
/// The node's module store when `MICA_MODULE_STORE` does not say.
pub const DEFAULT_STORE: &str = "/var/lib/mica/module-store.img";
/// The component's linear memory budget when the spec sets no memory limit (the manifest's
/// default).
const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
/// Guest memory for the system beside the bundle, the compiler's budget and a component of the
/// default budget, in MiB (`cargo xtask run`'s).
const SYSTEM_MEMORY_MIB: u32 = 256;
/// The capacity of the component's handle table, and its DMA budget (it claims no devices).
const HANDLES: u16 = 64;
const DMA_LIMIT: u64 = 1 << 20;
/// How long QEMU may take to open its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// The file of the system the VM boots, in its directory.
pub const BUNDLE_FILE: &str = "system.bundle";

/// Where the kernel and the template are: `$MICA_WASM_IMAGE_DIR`, else `../share/mica/wasm`
/// beside this program (where `cargo xtask install-shim` puts them).
pub fn image_dir() -> Result<PathBuf> {
    crate::vm::installed_dir(IMAGE_DIR_ENV, "wasm")
}

/// The node's module store: `$MICA_MODULE_STORE`, else [`DEFAULT_STORE`].
pub fn store_path() -> PathBuf {
    std::env::var_os(STORE_ENV).map_or_else(|| PathBuf::from(DEFAULT_STORE), PathBuf::from)
}

/// `path` (absolute, as the container sees it) inside `root`, its symbolic links followed as
/// they would be with `root` as `/`: never out of `root`.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut todo: Vec<PathBuf> = vec![path.to_owned()];
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(next) = todo.pop() {
        let parts: Vec<Component> = next.components().collect();
        for (i, part) in parts.iter().enumerate() {
            match part {
                Component::RootDir => at = PathBuf::new(),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    at.pop();
                }
                Component::Normal(name) => {
                    let candidate = at.join(name);
                    let host = root.join(&candidate);
                    match fs::symlink_metadata(&host) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            links += 1;
                            if links > 40 {
                                bail!("{}: too many levels of symbolic links", path.display());
                            }
                            let target = fs::read_link(&host).with_context(|| format!("reading {}", host.display()))?;
                            // The rest of the path after the link's target.
                            let rest: PathBuf = parts[i + 1..].iter().collect();
                            todo.push(rest);
                            todo.push(target);
                            break;
                        }
                        _ => at = candidate,
                    }
                }
            }
        }
    }
    Ok(root.join(at))
}

/// What the entrypoint of a container is.
#[derive(Debug, PartialEq, Eq)]
pub enum Entrypoint {
    /// A wasm component: its bytes, and the name the system gives it.
    Component { wasm: Vec<u8>, name: String },
    /// Anything else: a Linux program.
    Linux,
}

/// The layer field of a wasm binary's header: a component's.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Looks at the program the process runs (in `root`, the container's root file system): a wasm
/// component, a core wasm module (refused: Mica runs components), or anything else.
pub fn entrypoint(root: &Path, process: &oci_spec::runtime::Process) -> Result<Entrypoint> {
    let Some(program) = process.args().as_ref().and_then(|a| a.first()) else { return Ok(Entrypoint::Linux) };
    let cwd = process.cwd();
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![cwd.join(program)]
    } else {
        let env = process.env().clone().unwrap_or_default();
        let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/bin:/usr/bin:/bin");
        path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(program)).collect()
    };
    for candidate in candidates {
        let host = resolve_in_root(root, &candidate)?;
        let Ok(mut file) = File::open(&host) else { continue };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let mut header = [0u8; 8];
        if file.read_exact(&mut header).is_err() || header[..4] != COMPONENT_HEADER[..4] {
            return Ok(Entrypoint::Linux);
        }
        if header != COMPONENT_HEADER {
            bail!(
                "{program} is a core WebAssembly module, not a component: Mica runs components (build for \
                 wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
            );
        }
        let mut wasm = header.to_vec();
        file.read_to_end(&mut wasm).with_context(|| format!("reading {program}"))?;
        return Ok(Entrypoint::Component { wasm, name: component_name(&candidate) });
    }
    Ok(Entrypoint::Linux)
}

/// The component's name in the system (its console prefix, its argv[0]): the file's stem made a
/// valid name (`[a-z0-9][a-z0-9-]*`, at most 48 characters), never one of the template's
/// `mica-` names.
pub fn component_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(48).collect();
    let name = name.trim_matches('-');
    if name.is_empty() || name.starts_with("mica-") { "app".to_owned() } else { name.to_owned() }
}

/// How the component ended, from the kernel's line about it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// `exited with status N`.
    Exited(i32),
    /// `trapped: ...` (a Rust panic is one).
    Trapped(String),
    /// `ran out of memory ...`.
    OutOfMemory(String),
    /// `exceeded its CPU limit ...`.
    Exceeded(String),
    /// `refused: ...` (it could not be compiled or linked).
    Refused(String),
}

impl Ending {
    /// Parses the rest of a `mica: component NAME ` line; `None` for other lines about it.
    pub fn parse(rest: &str) -> Option<Ending> {
        // The run time in parentheses at the end is not part of how it ended.
        let rest = rest.rsplit_once(" (").filter(|(_, t)| t.ends_with(" ms)")).map_or(rest, |(r, _)| r);
        if let Some(code) = rest.strip_prefix("exited with status ") {
            return code.trim().parse().ok().map(Ending::Exited);
        }
        let (what, text): (fn(String) -> Ending, _) = if rest.starts_with("trapped") {
            (Ending::Trapped, rest)
        } else if rest.starts_with("ran out of memory") {
            (Ending::OutOfMemory, rest)
        } else if rest.starts_with("exceeded") {
            (Ending::Exceeded, rest)
        } else if let Some(why) = rest.strip_prefix("refused: ") {
            (Ending::Refused, why)
        } else {
            return None;
        };
        Some(what(text.to_owned()))
    }

    /// The container's exit: the status; a trap as SIGABRT (134, as a native program's abort),
    /// memory as SIGKILL (137, as the OOM killer's), the CPU limit as SIGXCPU (152), a refusal
    /// as a program that did not start (127).
    pub fn exit(self) -> Exit {
        match self {
            Ending::Exited(code) => Exit::Code(code),
            Ending::Trapped(_) => Exit::Signal(6),
            Ending::OutOfMemory(_) => Exit::Signal(9),
            Ending::Exceeded(_) => Exit::Signal(24),
            Ending::Refused(why) => Exit::Failed(format!("the Mica system refused the component: {why}")),
        }
    }
}

/// One line of the console, for component `name`.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Its standard output.
    Stdout(&'a str),
    /// Its standard error.
    Stderr(&'a str),
    /// How it ended.
    Ended(Ending),
    /// The kernel's or another component's.
    Other(&'a str),
}

/// Sorts one console line (without its line end).
pub fn classify<'a>(name: &str, line: &'a str) -> Line<'a> {
    let line = line.trim_end_matches('\r');
    let strip = |prefix: String| line.strip_prefix(prefix.as_str());
    if let Some(text) = strip(format!("[{name}] ")) {
        return Line::Stdout(text);
    }
    if line == format!("[{name}]") {
        return Line::Stdout("");
    }
    if let Some(text) = strip(format!("[{name}!] ")) {
        return Line::Stderr(text);
    }
    if line == format!("[{name}!]") {
        return Line::Stderr("");
    }
    if let Some(rest) = strip(format!("mica: component {name} "))
        && let Some(ending) = Ending::parse(rest)
    {
        return Line::Ended(ending);
    }
    Line::Other(line)
}

/// What the component gets from the OCI process.
pub struct Launch<'a> {
    /// The container's id (for the log).
    pub id: &'a str,
    pub wasm: Vec<u8>,
    pub name: String,
    /// Arguments after argv[0].
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Its linear memory budget (the spec's memory limit, else the default).
    pub memory_limit: Option<u64>,
}

/// The system bundle for `launch`: the template's entries, the component as wasm, and the
/// template's manifest with the component and the store's disk `store`. Returns it and the VM's
/// memory in MiB.
pub fn system_bundle(template: &[u8], launch: &Launch<'_>, store: &Path) -> Result<(Vec<u8>, u32)> {
    let bundle = Bundle::parse(template).map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?;
    let mut manifest = bundle
        .manifest()
        .map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?
        .map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?;
    if manifest.compiler.is_none() || manifest.module_store.is_none() {
        bail!("the template bundle has no compiler or no module store: rebuild it with `cargo xtask install-shim`");
    }
    let mut writer = BundleWriter::new();
    for entry in bundle.entries().iter().filter(|e| e.name != MANIFEST_ENTRY) {
        let data = entry.data().map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?;
        writer.add(entry.kind, entry.name, data.to_vec()).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if manifest.components.iter().any(|c| c.name == launch.name) {
        bail!("the component's name {:?} is taken by the system's own", launch.name);
    }
    let entry = format!("{}.wasm", launch.name);
    let sha256: [u8; 32] = Sha256::digest(&launch.wasm).into();
    writer.add(EntryKind::Wasm, &entry, launch.wasm.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let memory_limit = launch.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
    manifest.components.push(ComponentSpec {
        name: launch.name.clone(),
        code: Code::Wasm { entry, sha256, pulley: None },
        args: launch.args.clone(),
        env: launch.env.clone(),
        memory_limit,
        fuel: None,
        cpu_time_limit_ms: None,
        restart: Restart::Never,
        grants: vec!["wasi".to_owned()],
        handles: HANDLES,
        create_channels: false,
        priority: mica_bundle::Priority::Normal,
        devices: Vec::new(),
        dma_limit: DMA_LIMIT,
        dirs: Vec::new(),
        network: None,
    });
    let disk = manifest
        .machine
        .iter_mut()
        .find(|d| d.kind == "virtio-blk")
        .context("the template bundle has no block device for the module store")?;
    disk.disk = Some(store.to_string_lossy().into_owned());
    disk.read_only = false;
    writer.add(EntryKind::Manifest, MANIFEST_ENTRY, manifest.encode()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = writer.finish();
    let mib = |bytes: u64| u32::try_from(bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
    let compiler = manifest.compiler.as_ref().map_or(0, |c| c.memory_limit);
    let memory = SYSTEM_MEMORY_MIB
        .saturating_add(mib(bytes.len() as u64))
        .saturating_add(mib(compiler))
        .saturating_add(mib(memory_limit.saturating_sub(DEFAULT_MEMORY_LIMIT)));
    Ok((bytes, memory))
}

/// Copies the store image `from` to `to`, leaving its zeroed MiBs holes.
fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let mut src = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let len = src.metadata()?.len();
    let mut dst = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            dst.seek(SeekFrom::Start(at))?;
            dst.write_all(&buf[..n])?;
        }
        at += n as u64;
    }
    Ok(())
}

/// The node's store for one VM: the store itself, locked for the VM's life, or, while another
/// VM holds it, a copy of it (the component's native code is found there too; what this VM
/// compiles is not kept).
fn take_store(dir: &Path, disk_size: u64) -> Result<(PathBuf, Option<File>)> {
    let store = store_path();
    if let Some(parent) = store.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&store)
        .with_context(|| format!("opening the module store {}", store.display()))?;
    if file.metadata()?.len() == 0 {
        file.set_len(disk_size).with_context(|| format!("sizing the module store {}", store.display()))?;
    }
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok((store, Some(file))),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let copy = dir.join("module-store.img");
            log::info!("the module store {} is in use by another VM: this one gets a copy", store.display());
            copy_sparse(&store, &copy)?;
            Ok((copy, None))
        }
        Err(e) => Err(e).with_context(|| format!("locking the module store {}", store.display())),
    }
}

/// A Mica VM running one wasm container.
pub struct Machine {
    /// The component's name.
    pub name: String,
    /// Its directory (the bundle, QEMU's QMP socket and log).
    pub dir: PathBuf,
    pid: u32,
    /// VM memory, MiB.
    pub memory_mib: u32,
    child: Mutex<Option<Child>>,
    qmp: Mutex<Option<BufReader<UnixStream>>>,
    /// Set once QEMU has exited (before it is reaped): its pid is not signalled after.
    exited: Mutex<bool>,
    /// The lock on the node's store, held while the VM runs.
    store_lock: Mutex<Option<File>>,
}

/// The CPU features the template's native code needs (its block driver, store and compiler
/// were compiled ahead of time for the baseline CPU).
pub fn needed_features(template: &mica_bundle::SystemManifest) -> Vec<String> {
    let mut features: Vec<String> = template
        .components
        .iter()
        .filter_map(|c| match &c.code {
            Code::Native(native) => Some(native.cpu_features.clone()),
            Code::Wasm { .. } => None,
        })
        .chain(template.compiler.iter().map(|c| c.code.cpu_features.clone()))
        .flatten()
        .collect();
    features.sort();
    features.dedup();
    features
}

/// The accelerator and CPU model: KVM with the host's CPU where KVM is usable (the component is
/// compiled for it), else TCG with QEMU's model plus the `features` the template needs.
fn accel(features: &[String]) -> Result<(Accel, String)> {
    let decision = mica_launch::resolve(AccelChoice::Auto, &KvmProbe::detect())?;
    Ok(match decision.accel {
        Accel::Kvm => (Accel::Kvm, "host".to_owned()),
        Accel::Tcg => {
            let features: Vec<&str> = features.iter().map(String::as_str).collect();
            (Accel::Tcg, mica_launch::cpu_model(&features))
        }
    })
}

impl Machine {
    /// Builds the system for `launch` and starts its VM, paused.
    pub fn create(dir: PathBuf, launch: &Launch<'_>) -> Result<Arc<Machine>> {
        let images = image_dir()?;
        let (kernel, template) = (images.join("kernel"), images.join("template.bundle"));
        for file in [&kernel, &template] {
            if !file.is_file() {
                bail!(
                    "the Mica system for wasm containers ({}) is missing: run `cargo xtask install-shim`, or set \
                     {IMAGE_DIR_ENV}",
                    file.display()
                );
            }
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing the old {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = Self::boot(&dir, &kernel, &template, launch);
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    fn boot(dir: &Path, kernel: &Path, template: &Path, launch: &Launch<'_>) -> Result<Arc<Machine>> {
        let store_lock = &mut None;
        let template = fs::read(template).with_context(|| format!("reading {}", template.display()))?;
        let (bytes, memory_mib, features) = {
            let parsed = Bundle::parse(&template).map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?;
            let manifest = parsed
                .manifest()
                .map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?
                .map_err(|e| anyhow::anyhow!("the template bundle: {e}"))?;
            let disk_size = manifest.machine.iter().find(|d| d.kind == "virtio-blk").map_or(256 << 20, |d| d.disk_size);
            let (store, lock) = take_store(dir, disk_size)?;
            *store_lock = lock;
            let (bytes, memory_mib) = system_bundle(&template, launch, &store)?;
            (bytes, memory_mib, needed_features(&manifest))
        };
        let bundle = dir.join(BUNDLE_FILE);
        fs::write(&bundle, &bytes).with_context(|| format!("writing {}", bundle.display()))?;
        let machine = mica_launch::devices::of_bundle(&bundle)?;
        let (accel, cpu) = accel(&features)?;
        let qmp = dir.join("qmp.sock");
        let command = QemuCommand::new(mica_launch::find_qemu()?, kernel, accel)
            .cpu(cpu)
            .initrd(&bundle)
            .memory_mib(memory_mib)
            .extra_args(mica_launch::devices::qemu_args(&machine))
            .extra_args(["-S".to_owned(), "-qmp".to_owned(), format!("unix:{},server=on,wait=off", qmp.display())]);
        log::info!("{}: {}", launch.id, command.display());
        let log = File::create(dir.join("qemu.log")).context("creating QEMU's log")?;
        let mut child = command
            .command()?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting QEMU")?;
        let pid = child.id();
        let connected = Self::connect_qmp(&qmp, &mut child, dir);
        let stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Arc::new(Machine {
            name: launch.name.clone(),
            dir: dir.to_owned(),
            pid,
            memory_mib,
            child: Mutex::new(Some(child)),
            qmp: Mutex::new(Some(stream)),
            exited: Mutex::new(false),
            store_lock: Mutex::new(store_lock.take()),
        }))
    }

    /// Connects to QEMU's QMP socket and leaves its capabilities negotiation done.
    fn connect_qmp(path: &Path, child: &mut Child, dir: &Path) -> Result<BufReader<UnixStream>> {
        let deadline = Instant::now() + QMP_TIMEOUT;
        let stream = loop {
            if let Ok(stream) = UnixStream::connect(path) {
                break stream;
            }
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
                bail!("QEMU exited at start ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("QEMU did not open its QMP socket {} in {} s", path.display(), QMP_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream.set_read_timeout(Some(QMP_TIMEOUT))?;
        let mut stream = BufReader::new(stream);
        let mut greeting = String::new();
        stream.read_line(&mut greeting).context("reading QMP's greeting")?;
        qmp_execute(&mut stream, "qmp_capabilities")?;
        Ok(stream)
    }

    /// QEMU's pid: the task's.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the VM run; its console goes to `sink` line by line until it ends. `oom` is called
    /// when the component ran out of memory.
    pub fn start(self: &Arc<Self>, sink: Arc<dyn Sink>, oom: Box<dyn FnOnce() + Send>) -> Result<()> {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .context("the wasm container's VM was already started")?;
        let stdout = child.stdout.take().context("QEMU's console")?;
        {
            let mut qmp = self.qmp.lock().unwrap_or_else(PoisonError::into_inner);
            let stream = qmp.as_mut().context("QEMU's QMP connection is gone")?;
            qmp_execute(stream, "cont").context("letting the VM run")?;
            // Nothing more to say to QEMU: its end is seen on the console.
            *qmp = None;
        }
        let machine = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("console-{}", self.name))
            .spawn(move || machine.follow(child, stdout, sink, oom))
            .context("starting the console thread")?;
        Ok(())
    }

    /// Copies the console to `sink` and reports the end.
    fn follow(
        &self,
        mut child: Child,
        stdout: std::process::ChildStdout,
        sink: Arc<dyn Sink>,
        oom: Box<dyn FnOnce() + Send>,
    ) {
        let mut ending = None;
        let mut tail: Vec<String> = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("{}: reading the console: {e}", self.name);
                    break;
                }
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches('\n');
            match classify(&self.name, line) {
                Line::Stdout(text) => sink.stdout(format!("{text}\n").as_bytes()),
                Line::Stderr(text) => sink.stderr(format!("{text}\n").as_bytes()),
                Line::Ended(end) => {
                    log::info!("{}: {line}", self.name);
                    ending = Some(end);
                }
                Line::Other(text) => {
                    if text.starts_with("mica: ") {
                        log::info!("{}: {text}", self.name);
                    } else {
                        log::debug!("{}: {text}", self.name);
                    }
                    tail.push(text.to_owned());
                    if tail.len() > 8 {
                        tail.remove(0);
                    }
                }
            }
        }
        // Exited, not yet reaped: from here on its pid is not signalled.
        let _ = rustix::process::waitid(
            rustix::process::WaitId::Pid(rustix::process::Pid::from_child(&child)),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        );
        *self.exited.lock().unwrap_or_else(PoisonError::into_inner) = true;
        let status = child.wait();
        self.store_lock.lock().unwrap_or_else(PoisonError::into_inner).take();
        log::info!("{}: the VM ended ({status:?})", self.name);
        let exit = match ending {
            Some(Ending::OutOfMemory(why)) => {
                log::warn!("{}: {why}", self.name);
                oom();
                Ending::OutOfMemory(why).exit()
            }
            Some(ending) => ending.exit(),
            None => {
                let log = fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
                Exit::Lost(format!(
                    "the Mica VM ended ({}) before the component did; its last lines: {}{}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    tail.join(" | "),
                    if log.trim().is_empty() { String::new() } else { format!("; QEMU: {}", log.trim()) }
                ))
            }
        };
        sink.exited(exit);
    }

    /// Sends `signal` to QEMU, unless it has exited (SIGTERM and SIGINT make it power the VM
    /// off; SIGKILL stops it at once).
    pub fn signal(&self, signal: u32) {
        let exited = self.exited.lock().unwrap_or_else(PoisonError::into_inner);
        if *exited {
            return;
        }
        let (Some(pid), Some(signal)) = (
            rustix::process::Pid::from_raw(self.pid as i32),
            i32::try_from(signal).ok().and_then(rustix::process::Signal::from_named_raw),
        ) else {
            return;
        };
        if let Err(e) = rustix::process::kill_process(pid, signal) {
            log::warn!("{}: signalling QEMU: {e}", self.name);
        }
    }

    /// Whether QEMU has exited.
    pub fn ended(&self) -> bool {
        *self.exited.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the VM (if it runs) and removes its directory.
    pub fn remove(&self) {
        // Never started: QEMU is still the shim's paused child.
        if let Some(mut child) = self.child.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = child.kill();
            let _ = child.wait();
            *self.exited.lock().unwrap_or_else(PoisonError::into_inner) = true;
        }
        if !self.ended() {
            self.signal(9);
            let deadline = Instant::now() + crate::service::CLEANUP_TIMEOUT;
            while !self.ended() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("removing {}: {e}", self.dir.display());
        }
    }
}

/// Runs QMP command `command` and waits for its answer (skipping events).
fn qmp_execute(stream: &mut BufReader<UnixStream>, command: &str) -> Result<()> {
    stream.get_mut().write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).with_context(|| format!("waiting for QMP's answer to {command}"))? == 0 {
            bail!("QEMU closed QMP before answering {command}");
        }
        let answer: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("QMP's answer {line:?} is not JSON"))?;
        if answer.get("return").is_some() {
            return Ok(());
        }
        if let Some(error) = answer.get("error") {
            bail!("QMP {command}: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_sorted_by_the_components_prefix() {
        assert_eq!(classify("hello", "[hello] hi there\r"), Line::Stdout("hi there"));
        assert_eq!(classify("hello", "[hello]"), Line::Stdout(""));
        assert_eq!(classify("hello", "[hello!] oops"), Line::Stderr("oops"));
        assert_eq!(classify("hello", "[hello-2] other"), Line::Other("[hello-2] other"));
        assert_eq!(classify("hello", "[mica-store] opened"), Line::Other("[mica-store] opened"));
        assert_eq!(
            classify("hello", "mica: component hello exited with status 3 (12 ms)"),
            Line::Ended(Ending::Exited(3))
        );
        assert_eq!(
            classify("hello", "mica: component hello: compiled in 5 ms for x"),
            Line::Other("mica: component hello: compiled in 5 ms for x")
        );
        assert_eq!(
            classify("hello", "mica: component hellox exited with status 0"),
            Line::Other("mica: component hellox exited with status 0")
        );
    }

    #[test]
    fn endings_become_container_statuses() {
        let status = |line: &str| Ending::parse(line).map(|e| e.exit().status());
        assert_eq!(status("exited with status 0 (3 ms)"), Some(0));
        assert_eq!(status("exited with status 7"), Some(7));
        assert_eq!(status("trapped: wasm `unreachable` instruction executed (1 ms)"), Some(134));
        assert_eq!(status("ran out of memory: 64 MiB"), Some(137));
        assert_eq!(status("exceeded its CPU limit: all 10 units of fuel used"), Some(152));
        assert_eq!(status("refused: compiling it failed: not a valid component"), Some(127));
        assert_eq!(status("started"), None);
        match Ending::parse("refused: compiling it failed: bad").map(Ending::exit) {
            Some(Exit::Failed(why)) => assert!(why.contains("compiling it failed: bad"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn component_names_are_valid_and_never_the_systems() {
        assert_eq!(component_name(Path::new("/hello.wasm")), "hello");
        assert_eq!(component_name(Path::new("/srv/My_App.v2.wasm")), "my-app-v2");
        assert_eq!(component_name(Path::new("/mica-store.wasm")), "app");
        assert_eq!(component_name(Path::new("/__.wasm")), "app");
        assert_eq!(component_name(Path::new(&format!("/{}.wasm", "a".repeat(60)))).len(), 48);
    }

    #[test]
    fn links_are_followed_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        fs::write(root.path().join("usr/bin/app.wasm"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        // An absolute link is the container's absolute path, not the host's.
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("escape.wasm")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", root.path().join("up.wasm")).unwrap();
        let r = |p: &str| resolve_in_root(root.path(), Path::new(p)).unwrap();
        assert_eq!(r("/bin/app.wasm"), root.path().join("usr/bin/app.wasm"));
        assert_eq!(r("/escape.wasm"), root.path().join("etc/passwd"));
        assert_eq!(r("/up.wasm"), root.path().join("etc/passwd"));
        std::os::unix::fs::symlink("loop", root.path().join("loop")).unwrap();
        assert!(resolve_in_root(root.path(), Path::new("/loop")).is_err());
    }

    fn process(args: &[&str]) -> oci_spec::runtime::Process {
        let mut p = oci_spec::runtime::Process::default();
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        p.set_env(Some(vec!["PATH=/bin".to_owned()]));
        p
    }

    #[test]
    fn a_component_entrypoint_is_told_from_a_module_and_a_program() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("bin")).unwrap();
        let mut component = COMPONENT_HEADER.to_vec();
        component.extend(b"rest");
        fs::write(root.path().join("bin/app.wasm"), &component).unwrap();
        fs::write(root.path().join("module.wasm"), [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]).unwrap();
        fs::write(root.path().join("bin/sh"), b"\x7fELF....").unwrap();
        let found = entrypoint(root.path(), &process(&["app.wasm", "x"])).unwrap();
        assert_eq!(found, Entrypoint::Component { wasm: component.clone(), name: "app".into() });
        assert_eq!(
            entrypoint(root.path(), &process(&["/bin/app.wasm"])).unwrap(),
            Entrypoint::Component { wasm: component, name: "app".into() }
        );
        assert_eq!(entrypoint(root.path(), &process(&["sh"])).unwrap(), Entrypoint::Linux);
        assert_eq!(entrypoint(root.path(), &process(&["/missing"])).unwrap(), Entrypoint::Linux);
        let err = entrypoint(root.path(), &process(&["/module.wasm"])).unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module, not a component"), "{err}");
    }

    /// A template as `cargo xtask install-shim` makes it, in shape: a store's block device, the
    /// module store, the compiler, and their (here fake) artifacts.
    fn template() -> Vec<u8> {
        use mica_bundle::{CompilerSpec, MachineDevice, NativeCode, SystemManifest};
        let code = |artifact: &str| NativeCode {
            artifact: artifact.into(),
            wasmtime_version: "w".into(),
            target: "t".into(),
            config_version: 1,
            fuel_instrumented: false,
            epochs_instrumented: false,
            cpu_features: vec!["sse4.2".into(), "popcnt".into()],
        };
        let spec = |name: &str| ComponentSpec {
            name: name.into(),
            code: Code::Native(code(&format!("{name}.cwasm"))),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: 1 << 20,
            fuel: None,
            cpu_time_limit_ms: None,
            restart: Restart::Never,
            grants: vec!["wasi".into()],
            handles: 8,
            create_channels: false,
            priority: mica_bundle::Priority::High,
            devices: Vec::new(),
            dma_limit: 0,
            dirs: Vec::new(),
            network: None,
        };
        let manifest = SystemManifest {
            components: vec![spec("mica-blk"), spec("mica-store")],
            connections: Vec::new(),
            machine: vec![MachineDevice {
                kind: "virtio-blk".into(),
                disk: Some("/build/host/disk.img".into()),
                disk_size: 256 << 20,
                read_only: false,
                hostfwd: Vec::new(),
                output: None,
            }],
            compiler: Some(CompilerSpec { code: code("compiler.cwasm"), memory_limit: 384 << 20 }),
            module_store: Some(1),
        };
        let mut writer = BundleWriter::new();
        for name in ["mica-blk.cwasm", "mica-store.cwasm", "compiler.cwasm"] {
            writer.add(EntryKind::Artifact, name, vec![7; 5000]).unwrap();
        }
        writer.add(EntryKind::Manifest, MANIFEST_ENTRY, manifest.encode()).unwrap();
        writer.finish()
    }

    #[test]
    fn the_system_is_the_template_with_the_component_and_the_nodes_store() {
        let wasm = COMPONENT_HEADER.to_vec();
        let launch = Launch {
            id: "c1",
            wasm: wasm.clone(),
            name: "hello".into(),
            args: vec!["a".into(), "b".into()],
            env: vec![("K".into(), "v".into())],
            memory_limit: Some(128 << 20),
        };
        let (bytes, memory) = system_bundle(&template(), &launch, Path::new("/var/lib/mica/store.img")).unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        let names: Vec<&str> = bundle.entries().iter().map(|e| e.name).collect();
        assert_eq!(names, ["mica-blk.cwasm", "mica-store.cwasm", "compiler.cwasm", "hello.wasm", MANIFEST_ENTRY]);
        assert_eq!(bundle.entry("hello.wasm").unwrap().data().unwrap(), &wasm[..]);
        let manifest = bundle.manifest().unwrap().unwrap();
        let hello = manifest.components.last().unwrap();
        assert_eq!(hello.name, "hello");
        let sha256: [u8; 32] = Sha256::digest(&wasm).into();
        assert_eq!(hello.code, Code::Wasm { entry: "hello.wasm".into(), sha256, pulley: None });
        assert_eq!(
            (hello.args.clone(), hello.env.clone()),
            (vec!["a".into(), "b".into()], vec![("K".into(), "v".into())])
        );
        assert_eq!(
            (hello.memory_limit, hello.restart, hello.grants.clone()),
            (128 << 20, Restart::Never, vec!["wasi".into()])
        );
        assert_eq!(manifest.module_store, Some(1), "the store stays the store");
        // QEMU's CPU must offer what the template's native code was compiled for.
        assert_eq!(needed_features(&manifest), ["popcnt", "sse4.2"]);
        assert_eq!(manifest.machine[0].disk.as_deref(), Some("/var/lib/mica/store.img"));
        // 256 MiB, the bundle (under 1 MiB here), the compiler's 384 MiB, 64 MiB beyond the default.
        assert_eq!(memory, 256 + 1 + 384 + 64);
        // The system's own names are not the component's.
        let taken = Launch { name: "mica-store".into(), ..launch };
        let err = system_bundle(&template(), &taken, Path::new("/s")).unwrap_err().to_string();
        assert!(err.contains("taken by the system's own"), "{err}");
        let err = system_bundle(b"not a bundle", &taken, Path::new("/s")).unwrap_err().to_string();
        assert!(err.contains("the template bundle"), "{err}");
    }

    #[test]
    fn sparse_copies_keep_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        let mut data = vec![0u8; 3 << 20];
        data[(1 << 20) + 5] = 7;
        data[(3 << 20) - 1] = 9;
        fs::write(&from, &data).unwrap();
        copy_sparse(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), data);
    }
}
