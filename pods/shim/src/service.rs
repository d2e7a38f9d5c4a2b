//! The task service containerd calls: containers and their processes in pod VMs.
//!
//! - A container without a pod (`ctr run`) gets a VM of its own. A CRI pod's sandbox container
//!   *is* the VM (it runs no process), and the pod's other containers run inside it: containerd
//!   gives every container of one pod to the same shim (grouped by
//!   `io.kubernetes.cri.sandbox-id`), so the shim finds the VM in its own memory. The VM boots
//!   with the pod's first Linux container: a pod of wasm containers only has none.
//! - A container's root file system is copied into the guest from containerd's snapshot (the
//!   rootfs mounts of `Create`) when it is created; its process starts at `Start`.
//! - The task pid containerd gets is the VM's hypervisor process.
//! - A container whose entrypoint is a wasm component runs in a Mica VM of its own instead
//!   ([`crate::wasm`]), in a pod or not.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use containerd_shim::api::{self, Status};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use oci_spec::runtime::Spec;

use crate::container::{self, Plan};
use crate::guest::{self, Exit, Guest, Sink};
use crate::vm::{self, Vm};
use crate::wasm::{self, Entrypoint};

/// `io.kubernetes.cri.container-type`: `sandbox` or `container`.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// `io.kubernetes.cri.sandbox-id`: the pod a container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// containerd's events, sent on the shim's behalf.
pub struct Events {
    publisher: Mutex<RemotePublisher>,
    namespace: String,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Events {
        Events { publisher: Mutex::new(publisher), namespace }
    }

    /// Sends `event`. A containerd that restarted has a new event socket: the publisher
    /// reconnects (to `$TTRPC_ADDRESS`, where containerd listens) and tries once more.
    fn publish(&self, event: impl Event + 'static) {
        let topic = event.topic();
        let event: Box<dyn containerd_shim::protos::protobuf::MessageDyn> = Box::new(event);
        let mut publisher = self.publisher.lock().unwrap_or_else(PoisonError::into_inner);
        let send = |publisher: &RemotePublisher| {
            let ctx = containerd_shim::protos::ttrpc::context::with_timeout(5_000_000_000);
            publisher.publish(ctx, &topic, &self.namespace, event.clone_box())
        };
        let Err(first) = send(&publisher) else { return };
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        match RemotePublisher::new(&address) {
            Ok(fresh) => {
                *publisher = fresh;
                if let Err(e) = send(&publisher) {
                    log::error!("publishing {topic}: {first}; again after reconnecting: {e}");
                }
            }
            Err(e) => log::error!("publishing {topic}: {first}; reconnecting to {address}: {e}"),
        }
    }
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

/// Where a process's output goes: a FIFO containerd made, a file (`file://`), or nowhere.
fn open_output(path: &str) -> Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(file) = path.strip_prefix("file://") {
        let out = OpenOptions::new().create(true).append(true).open(file).with_context(|| format!("opening {file}"))?;
        return Ok(Some(out));
    }
    if path.contains("://") {
        anyhow::bail!("log URI {path:?} is not supported by the Mica shim (a FIFO path or file:// is)");
    }
    // Read and write: opening never waits for a reader, and a reader that comes and goes
    // does not end the output.
    let out = OpenOptions::new().read(true).write(true).open(path).with_context(|| format!("opening {path}"))?;
    Ok(Some(out))
}

/// One process: a container's init (id = container id, exec id empty) or an exec.
pub struct Process {
    container: String,
    exec_id: String,
    stdin: String,
    stdout: String,
    stderr: String,
    /// What runs; `None` for a pod sandbox, which is the VM itself.
    command: Option<guest::Command>,
    state: Mutex<ProcState>,
    changed: Condvar,
    events: Arc<Events>,
}

struct ProcState {
    status: Status,
    pid: u32,
    agent_id: Option<u32>,
    exit: Option<(u32, Timestamp)>,
    /// Where output goes; shared so that a write does not hold the state's lock (a FIFO whose
    /// reader is slow would block `State` calls), dropped at the exit to close it.
    out: Option<Arc<File>>,
    err: Option<Arc<File>>,
    /// The signal a kill sent, reported as the exit of a process that is the VM.
    killed_by: Option<u32>,
}

impl Process {
    fn new(
        container: &str,
        exec_id: &str,
        stdio: [&str; 3],
        command: Option<guest::Command>,
        pid: u32,
        events: &Arc<Events>,
    ) -> Arc<Process> {
        Arc::new(Process {
            container: container.to_owned(),
            exec_id: exec_id.to_owned(),
            stdin: stdio[0].to_owned(),
            stdout: stdio[1].to_owned(),
            stderr: stdio[2].to_owned(),
            command,
            state: Mutex::new(ProcState {
                status: Status::CREATED,
                pid,
                agent_id: None,
                exit: None,
                out: None,
                err: None,
                killed_by: None,
            }),
            changed: Condvar::new(),
            events: Arc::clone(events),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id containerd knows this process by in events.
    fn event_id(&self) -> &str {
        if self.exec_id.is_empty() { &self.container } else { &self.exec_id }
    }

    /// Opens its output and marks it running (once).
    fn begin(&self) -> Result<()> {
        let mut state = self.lock();
        if state.status != Status::CREATED {
            anyhow::bail!("{} was already started", self.event_id());
        }
        state.out = open_output(&self.stdout).context("opening stdout")?.map(Arc::new);
        state.err = open_output(&self.stderr).context("opening stderr")?.map(Arc::new);
        state.status = Status::RUNNING;
        Ok(())
    }

    /// Marks it exited with `status` (once), closes its output and tells containerd.
    fn finish(&self, status: u32) {
        let (pid, at) = {
            let mut state = self.lock();
            if state.exit.is_some() {
                return;
            }
            // Closing the FIFOs is what ends the readers' copy: before anyone hears of the exit.
            state.out = None;
            state.err = None;
            let at = now();
            state.exit = Some((status, at.clone()));
            state.status = Status::STOPPED;
            (state.pid, at)
        };
        self.events.publish(TaskExit {
            container_id: self.container.clone(),
            id: self.event_id().to_owned(),
            pid,
            exit_status: status,
            exited_at: Some(at).into(),
            ..Default::default()
        });
        self.changed.notify_all();
    }

    fn state_response(&self, bundle: &str) -> api::StateResponse {
        let state = self.lock();
        api::StateResponse {
            id: self.container.clone(),
            bundle: bundle.to_owned(),
            pid: state.pid,
            status: state.status.into(),
            stdin: self.stdin.clone(),
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
            terminal: false,
            exit_status: state.exit.as_ref().map_or(0, |e| e.0),
            exited_at: state.exit.as_ref().map(|e| e.1.clone()).into(),
            exec_id: self.exec_id.clone(),
            ..Default::default()
        }
    }

    /// Blocks until it exited; its status and time.
    fn wait(&self) -> (u32, Timestamp) {
        let mut state = self.lock();
        loop {
            if let Some(exit) = &state.exit {
                return exit.clone();
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Sink for Process {
    fn stdout(&self, data: &[u8]) {
        let out = self.lock().out.clone();
        if let Some(out) = out
            && let Err(e) = (&*out).write_all(data)
        {
            log::warn!("{}: writing stdout: {e}", self.event_id());
        }
    }

    fn stderr(&self, data: &[u8]) {
        let err = self.lock().err.clone();
        if let Some(err) = err
            && let Err(e) = (&*err).write_all(data)
        {
            log::warn!("{}: writing stderr: {e}", self.event_id());
        }
    }

    fn exited(&self, exit: Exit) {
        match &exit {
            Exit::Failed(why) => {
                log::error!("{}: did not start: {why}", self.event_id());
                self.stderr(format!("containerd-shim-mica-v2: {why}\n").as_bytes());
            }
            Exit::Lost(why) => log::warn!("{}: {why}", self.event_id()),
            _ => {}
        }
        let status = match (exit, self.lock().killed_by) {
            (Exit::Lost(_), Some(signal)) => 128 + signal,
            (exit, _) => exit.status(),
        };
        self.finish(status);
    }
}

/// Copies standard input from containerd's FIFO to the guest until the writer's end of file,
/// or until `CloseIO` (`closing`) and the FIFO is drained, or the process's exit; then sends
/// end of file.
fn feed_stdin(path: String, guest: Arc<Guest>, id: u32, closing: Arc<Mutex<bool>>, process: Arc<Process>) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let fifo = match OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(&path)
    {
        Ok(fifo) => fifo,
        Err(e) => {
            log::error!("opening stdin {path}: {e}");
            let _ = guest.stdin(id, Vec::new());
            return;
        }
    };
    let mut buf = vec![0; 64 * 1024];
    loop {
        if process.lock().exit.is_some() {
            return;
        }
        // After CloseIO the writer has written everything: take what is left, then end.
        let drain = *closing.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = Timespec { tv_sec: 0, tv_nsec: if drain { 0 } else { 100_000_000 } };
        let mut fds = [PollFd::new(&fifo, PollFlags::IN)];
        match poll(&mut fds, Some(&wait)) {
            Ok(0) if drain => break,
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => {
                log::error!("waiting for stdin: {e}");
                break;
            }
        }
        match rustix::io::read(&fifo, &mut buf) {
            // The writer closed: end of file.
            Ok(0) => break,
            Ok(n) => {
                if guest.stdin(id, buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(rustix::io::Errno::AGAIN) if drain => break,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => {
                log::error!("reading stdin: {e}");
                break;
            }
        }
    }
    let _ = guest.stdin(id, Vec::new());
}

/// Where a container runs.
#[derive(Clone)]
enum Host {
    /// In a Linux pod VM, through its agent.
    Pod(Arc<Vm>),
    /// As the component of a Mica VM of its own.
    Wasm(Arc<wasm::Machine>),
    /// Nowhere yet: a pod's sandbox before the pod's first Linux container boots its VM.
    Pending,
}

impl Host {
    /// The hypervisor's pid (the shim's own for a sandbox without a VM).
    fn pid(&self) -> u32 {
        match self {
            Host::Pod(vm) => vm.pid(),
            Host::Wasm(machine) => machine.pid(),
            Host::Pending => std::process::id(),
        }
    }

    fn pod(&self) -> Result<&Arc<Vm>> {
        match self {
            Host::Pod(vm) => Ok(vm),
            Host::Wasm(_) => anyhow::bail!("a wasm container runs one component and no other processes"),
            Host::Pending => anyhow::bail!("the pod has no VM yet (it boots with the pod's first Linux container)"),
        }
    }
}

/// A pod's sandbox container, for booting the pod's VM when its first Linux container comes.
#[derive(Clone)]
struct Sandbox {
    /// The sandbox container's id.
    id: String,
    bundle: PathBuf,
    /// Its spec: the VM's size (annotations) and hostname.
    spec: Spec,
}

/// One container.
struct Container {
    bundle: String,
    host: Host,
    /// It started the VM (a sandbox, a container without a pod, a wasm container): the VM goes
    /// with it.
    owns_vm: bool,
    /// Its guest plan; `None` for a sandbox.
    plan: Option<Plan>,
    init: Arc<Process>,
    execs: HashMap<String, Arc<Process>>,
    /// Whether the shim mounted the rootfs at `<bundle>/rootfs`.
    mounted_rootfs: bool,
    /// Per process with open standard input: whether `CloseIO` came.
    stdin_closed: HashMap<String, Arc<Mutex<bool>>>,
}

impl Container {
    /// A container whose VM is its own and that runs no process through an agent (a sandbox,
    /// a wasm container).
    fn owning(bundle: &str, host: Host, init: Arc<Process>) -> Container {
        Container {
            bundle: bundle.to_owned(),
            host,
            owns_vm: true,
            plan: None,
            init,
            execs: HashMap::new(),
            mounted_rootfs: false,
            stdin_closed: HashMap::new(),
        }
    }

    fn process(&self, exec_id: &str) -> TtrpcResult<&Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| not_found(format!("exec {exec_id} of container {}", self.init.container)))
    }
}

fn not_found(what: String) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::Error::NotFoundError(what).into()
}

fn already_exists(what: String) -> containerd_shim::protos::ttrpc::Error {
    use containerd_shim::protos::ttrpc;
    ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::ALREADY_EXISTS, format!("{what} already exists")))
}

fn failed(e: anyhow::Error) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::Error::Other(format!("{e:#}")).into()
}

fn precondition(what: String) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::Error::FailedPreconditionError(what).into()
}

/// The task service of one shim (one pod, or one container without a pod).
pub struct Service {
    events: Arc<Events>,
    exit: Arc<ExitSignal>,
    namespace: String,
    containers: Mutex<HashMap<String, Container>>,
    /// The pod VMs, by sandbox id (a container without a pod is its own sandbox).
    vms: Mutex<HashMap<String, Arc<Vm>>>,
    /// The pods' sandboxes, by sandbox id.
    sandboxes: Mutex<HashMap<String, Sandbox>>,
    /// Held while a pod VM is found or booted: one VM per pod.
    booting: Mutex<()>,
}

impl Service {
    pub fn new(events: Events, exit: Arc<ExitSignal>, namespace: String) -> Service {
        Service {
            events: Arc::new(events),
            exit,
            namespace,
            containers: Mutex::new(HashMap::new()),
            vms: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(HashMap::new()),
            booting: Mutex::new(()),
        }
    }

    /// The VM a Linux container of pod `pod` runs in, and whether the container owns it: the
    /// pod's VM, booted now from its sandbox's spec if it has none yet; or, for a container
    /// without a pod (`cri` false), a VM of its own, booted from `spec`, its record in `bundle`.
    fn pod_vm(&self, pod: &str, cri: bool, spec: &Spec, bundle: &Path) -> Result<(Arc<Vm>, bool)> {
        let _booting = self.booting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(vm) = self.vms.lock().unwrap_or_else(PoisonError::into_inner).get(pod) {
            return Ok((Arc::clone(vm), false));
        }
        let sandbox = self.sandboxes.lock().unwrap_or_else(PoisonError::into_inner).get(pod).cloned();
        let (spec, bundle) = match (&sandbox, cri) {
            (Some(sandbox), _) => (&sandbox.spec, sandbox.bundle.as_path()),
            (None, true) => anyhow::bail!("pod {pod} has no sandbox in this shim (its sandbox was not created here)"),
            (None, false) => (spec, bundle),
        };
        let vm = vm::boot(&self.namespace, pod, spec).context("starting the pod VM")?;
        // Without its record a shim's death would leave the VM running: none, then.
        if let Err(e) = vm::write_bundle_record(bundle, &vm.dir, vm.pid(), true) {
            vm.stop();
            return Err(e);
        }
        let Some(sandbox) = &sandbox else {
            self.vms.lock().unwrap_or_else(PoisonError::into_inner).insert(pod.to_owned(), Arc::clone(&vm));
            return Ok((vm, true));
        };
        // The sandbox is the VM from now on: its end is the VM's.
        let init = {
            let mut containers = self.containers();
            let Some(container) = containers.get_mut(&sandbox.id).filter(|c| c.init.lock().exit.is_none()) else {
                drop(containers);
                vm.stop();
                vm::remove_bundle_record(bundle);
                anyhow::bail!("pod {pod}'s sandbox has ended");
            };
            container.host = Host::Pod(Arc::clone(&vm));
            Arc::clone(&container.init)
        };
        vm.guest.watch(init)?;
        self.vms.lock().unwrap_or_else(PoisonError::into_inner).insert(pod.to_owned(), Arc::clone(&vm));
        Ok((vm, false))
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> TtrpcResult<T>) -> TtrpcResult<T> {
        let mut containers = self.containers();
        let container = containers.get_mut(id).ok_or_else(|| not_found(format!("container {id}")))?;
        f(container)
    }

    fn create_container(&self, req: &api::CreateTaskRequest) -> Result<Container> {
        if req.terminal {
            anyhow::bail!("a terminal (tty) is not supported by the Mica shim yet");
        }
        let bundle = Path::new(&req.bundle);
        let spec = Spec::load(bundle.join("config.json")).context("reading the bundle's config.json")?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let sandbox = annotations.get(CONTAINER_TYPE).is_some_and(|t| t == "sandbox");
        let pod = annotations.get(SANDBOX_ID).cloned().unwrap_or_else(|| req.id.clone());
        // The root is looked at first: a wasm component's container needs no Linux VM.
        let mut root = None;
        if !sandbox && let Some(process) = spec.process() {
            let (path, mounted) = snapshot_root(&req.rootfs, bundle, &spec)?;
            let found = wasm::entrypoint(&path, process);
            if mounted && !matches!(found, Ok(Entrypoint::Linux)) {
                unmount(&bundle.join("rootfs"));
            }
            match found? {
                Entrypoint::Component { wasm, name } => return self.create_wasm(req, &spec, wasm, name),
                Entrypoint::Linux => root = Some((path, mounted)),
            }
        }
        let unmount_root = |root: &Option<(PathBuf, bool)>| {
            if let Some((_, true)) = root {
                unmount(&bundle.join("rootfs"));
            }
        };
        let stdio = [req.stdin.as_str(), req.stdout.as_str(), req.stderr.as_str()];
        if sandbox {
            // Its VM boots with the pod's first Linux container (`pod_vm`).
            let mut sandboxes = self.sandboxes.lock().unwrap_or_else(PoisonError::into_inner);
            if sandboxes.contains_key(&pod) {
                anyhow::bail!("pod {pod} already has a sandbox");
            }
            let record = Sandbox { id: req.id.clone(), bundle: bundle.to_owned(), spec: spec.clone() };
            sandboxes.insert(pod.clone(), record);
            let init = Process::new(&req.id, "", stdio, None, Host::Pending.pid(), &self.events);
            return Ok(Container::owning(&req.bundle, Host::Pending, init));
        }
        let cri = annotations.contains_key(CONTAINER_TYPE);
        let (vm, owns_vm) = self.pod_vm(&pod, cri, &spec, bundle).inspect_err(|_| unmount_root(&root))?;
        let (root, mounted) = root.context("a container without a process")?;
        let made = self.prepare(req, &spec, &vm, root, mounted);
        match made {
            Ok((plan, mounted_rootfs)) => {
                let process = spec.process().as_ref().context("the spec has no process")?;
                let mut command = container::command(process, &plan.rootfs)?;
                command.stdin = !req.stdin.is_empty();
                let init = Process::new(&req.id, "", stdio, Some(command), vm.pid(), &self.events);
                Ok(Container {
                    bundle: req.bundle.clone(),
                    host: Host::Pod(vm),
                    owns_vm,
                    plan: Some(plan),
                    init,
                    execs: HashMap::new(),
                    mounted_rootfs,
                    stdin_closed: HashMap::new(),
                })
            }
            Err(e) => {
                if owns_vm {
                    self.vms.lock().unwrap_or_else(PoisonError::into_inner).remove(&pod);
                    vm.stop();
                }
                Err(e)
            }
        }
    }

    /// A wasm container: its Mica VM, started paused.
    fn create_wasm(&self, req: &api::CreateTaskRequest, spec: &Spec, wasm: Vec<u8>, name: String) -> Result<Container> {
        let process = spec.process().as_ref().context("the spec has no process")?;
        let args = process.args().clone().unwrap_or_default();
        let env = process
            .env()
            .iter()
            .flatten()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let memory_limit = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref()?.memory().as_ref()?.limit())
            .and_then(|limit| u64::try_from(limit).ok())
            .filter(|limit| *limit > 0);
        let launch =
            wasm::Launch { id: &req.id, wasm, name, args: args.into_iter().skip(1).collect(), env, memory_limit };
        let dir = mica_cli::state::state_dir().join("wasm").join(vm::pod_name(&self.namespace, &req.id));
        log::info!(
            "{}: a wasm component ({} bytes): a Mica VM of its own, in {}",
            req.id,
            launch.wasm.len(),
            dir.display()
        );
        let machine = wasm::Machine::create(dir, &launch).context("starting the wasm container's Mica VM")?;
        if let Err(e) = vm::write_bundle_record(Path::new(&req.bundle), &machine.dir, machine.pid(), true) {
            machine.remove();
            return Err(e);
        }
        let stdio = [req.stdin.as_str(), req.stdout.as_str(), req.stderr.as_str()];
        let init = Process::new(&req.id, "", stdio, None, machine.pid(), &self.events);
        Ok(Container::owning(&req.bundle, Host::Wasm(machine), init))
    }

    /// Copies the root (`mounted`: at `<bundle>/rootfs` by the shim) and the bind mounts' sources
    /// into the guest and makes the mounts there.
    fn prepare(
        &self,
        req: &api::CreateTaskRequest,
        spec: &Spec,
        vm: &Vm,
        root: PathBuf,
        mounted: bool,
    ) -> Result<(Plan, bool)> {
        let bundle = Path::new(&req.bundle);
        let checked = spec.process().as_ref().map_or(Ok(()), |p| container::command(p, "/").map(drop));
        let plan = checked.and_then(|()| container::plan(&req.id, spec));
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                if mounted {
                    unmount(&bundle.join("rootfs"));
                }
                return Err(e);
            }
        };
        for skipped in &plan.skipped {
            log::info!("{}: left out {skipped}", req.id);
        }
        log::info!("{}: copying {} into the pod VM", req.id, root.display());
        let copied =
            vm::copy_in(&vm.guest, &root, &plan.rootfs).context("copying the root file system into the pod VM");
        let copied = copied.and_then(|()| {
            for copy in &plan.copies {
                // Held while copying: a second container of the pod waits for the first copy.
                let mut volumes = vm.volumes.lock().unwrap_or_else(PoisonError::into_inner);
                if volumes.contains(&copy.host) {
                    continue;
                }
                vm::copy_in(&vm.guest, &copy.host, &copy.guest)
                    .with_context(|| format!("copying {} into the pod VM", copy.host.display()))?;
                volumes.insert(copy.host.clone());
            }
            log::info!("{}: making its mounts", req.id);
            let setup = guest::Command::plain(&["/bin/sh", "-c", &plan.setup]);
            vm.guest.run(&setup, None)?.check("making the container's mounts")?;
            log::info!("{}: ready in the pod VM", req.id);
            Ok(())
        });
        if let Err(e) = copied {
            if mounted {
                unmount(&bundle.join("rootfs"));
            }
            return Err(e);
        }
        Ok((plan, mounted))
    }

    fn start_process(&self, container: &mut Container, exec_id: &str) -> Result<u32> {
        let process = Arc::clone(container.process(exec_id).map_err(|e| anyhow!("{e:?}"))?);
        if let Host::Wasm(machine) = &container.host {
            process.begin()?;
            let events = Arc::clone(&self.events);
            let id = process.container.clone();
            let oom = Box::new(move || events.publish(TaskOOM { container_id: id, ..Default::default() }));
            if let Err(e) = machine.start(process.clone(), oom) {
                process.lock().status = Status::CREATED;
                return Err(e);
            }
            return Ok(process.lock().pid);
        }
        let Some(command) = &process.command else {
            // A sandbox runs as long as its VM (or until it is killed, while it has none).
            let mut state = process.lock();
            state.status = Status::RUNNING;
            return Ok(state.pid);
        };
        let vm = Arc::clone(container.host.pod()?);
        process.begin()?;
        let id = match vm.guest.spawn(command, process.clone()) {
            Ok(id) => id,
            Err(e) => {
                process.lock().status = Status::CREATED;
                return Err(e);
            }
        };
        process.lock().agent_id = Some(id);
        if command.stdin {
            let closed = Arc::new(Mutex::new(false));
            container.stdin_closed.insert(exec_id.to_owned(), Arc::clone(&closed));
            let (path, guest) = (process.stdin.clone(), Arc::clone(&vm.guest));
            let fed = Arc::clone(&process);
            thread::Builder::new()
                .name(format!("stdin-{}", process.event_id()))
                .spawn(move || feed_stdin(path, guest, id, closed, fed))
                .context("starting the stdin thread")?;
        }
        Ok(process.lock().pid)
    }

    /// Removes a container: its guest files, or the whole VM if it owns it.
    fn remove(&self, id: &str, container: Container) {
        self.sandboxes.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| s.id != id);
        match &container.host {
            Host::Wasm(machine) => machine.remove(),
            Host::Pod(vm) => self.remove_from_pod(id, &container, vm),
            Host::Pending => {}
        }
        if container.mounted_rootfs {
            unmount(&Path::new(&container.bundle).join("rootfs"));
        }
        vm::remove_bundle_record(Path::new(&container.bundle));
    }

    /// Removes a container of a pod VM: its guest files, or the whole VM if it owns it.
    fn remove_from_pod(&self, id: &str, container: &Container, vm: &Arc<Vm>) {
        if container.owns_vm {
            let pod = self
                .vms
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(_, v)| Arc::ptr_eq(v, vm))
                .map(|(k, _)| k.clone());
            if let Some(pod) = pod {
                self.vms.lock().unwrap_or_else(PoisonError::into_inner).remove(&pod);
            }
            vm.stop();
        } else if let Some(plan) = &container.plan
            && vm.guest.ended().is_none()
        {
            let teardown = guest::Command::plain(&["/bin/sh", "-c", &plan.teardown]);
            match vm.guest.run(&teardown, None).and_then(|o| o.check("removing the container")) {
                Ok(_) => {}
                Err(e) => log::warn!("{id}: {e:#}"),
            }
        }
    }
}

/// Where the container's root file system is on the host: the snapshot's directory itself when
/// containerd's mount is a bind mount (the native snapshotter), else the snapshot mounted at
/// `<bundle>/rootfs` (overlayfs and the like), else the spec's root. Says whether it mounted.
fn snapshot_root(
    mounts: &[containerd_shim::protos::types::mount::Mount],
    bundle: &Path,
    spec: &Spec,
) -> Result<(PathBuf, bool)> {
    let spec_root = match spec.root() {
        Some(root) if root.path().is_absolute() => root.path().clone(),
        Some(root) => bundle.join(root.path()),
        None => bundle.join("rootfs"),
    };
    match mounts {
        [] => Ok((spec_root, false)),
        [m] if m.type_ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") => {
            Ok((PathBuf::from(&m.source), false))
        }
        [m] => {
            use rustix::mount::{MountFlags, mount};
            let target = bundle.join("rootfs");
            let flags = if m.options.iter().any(|o| o == "ro") { MountFlags::RDONLY } else { MountFlags::empty() };
            let data: Vec<&str> = m.options.iter().map(String::as_str).filter(|o| !matches!(*o, "ro" | "rw")).collect();
            let data = std::ffi::CString::new(data.join(",")).context("mount options with a NUL byte")?;
            mount(m.source.as_str(), &target, m.type_.as_str(), flags, Some(data.as_c_str()))
                .with_context(|| format!("mounting the container's snapshot ({} {})", m.type_, m.source))?;
            Ok((target, true))
        }
        _ => anyhow::bail!("the container's snapshot has {} mounts; the Mica shim takes one", mounts.len()),
    }
}

/// Unmounts the snapshot the shim mounted (containerd does too, when it removes the bundle).
pub fn unmount(target: &Path) {
    if let Err(e) = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)
        && e != rustix::io::Errno::INVAL
        && e != rustix::io::Errno::NOENT
    {
        log::warn!("unmounting {}: {e}", target.display());
    }
}

impl Task for Service {
    fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        log::info!("create {} in {}", req.id, req.bundle);
        if self.containers().contains_key(&req.id) {
            return Err(already_exists(format!("container {}", req.id)));
        }
        let container = self.create_container(&req).map_err(|e| {
            log::error!("create {}: {e:#}", req.id);
            failed(e)
        })?;
        let pid = container.init.lock().pid;
        self.containers().insert(req.id.clone(), container);
        self.events.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(containerd_shim::protos::events::task::TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        });
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        log::info!("start {} {}", req.id, req.exec_id);
        let pid = self.with(&req.id, |container| self.start_process(container, &req.exec_id).map_err(failed))?;
        if req.exec_id.is_empty() {
            self.events.publish(TaskStart { container_id: req.id.clone(), pid, ..Default::default() });
        } else {
            self.events.publish(TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
                ..Default::default()
            });
        }
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        self.with(&req.id, |container| Ok(container.process(&req.exec_id)?.state_response(&container.bundle)))
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let process = self.with(&req.id, |container| Ok(Arc::clone(container.process(&req.exec_id)?)))?;
        let (exit_status, exited_at) = process.wait();
        Ok(api::WaitResponse { exit_status, exited_at: Some(exited_at).into(), ..Default::default() })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        log::info!("kill {} {} signal {}", req.id, req.exec_id, req.signal);
        let (process, host, owns_vm) =
            self.with(&req.id, |c| Ok((Arc::clone(c.process(&req.exec_id)?), c.host.clone(), c.owns_vm)))?;
        let (agent_id, status) = {
            let mut state = process.lock();
            if state.exit.is_none() {
                state.killed_by = Some(req.signal);
            }
            (state.agent_id, state.status)
        };
        let vm = match host {
            Host::Pod(vm) => vm,
            // A sandbox without a VM: it ends here, and its pod boots none any more.
            Host::Pending => {
                self.sandboxes.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| s.id != req.id);
                if status != Status::STOPPED {
                    process.finish(128 + req.signal);
                }
                return Ok(api::Empty::new());
            }
            Host::Wasm(machine) => {
                match status {
                    Status::STOPPED => {}
                    // Never started: it ends here (its VM goes at `Delete`).
                    Status::CREATED => process.finish(128 + req.signal),
                    _ => machine.signal(req.signal),
                }
                return Ok(api::Empty::new());
            }
        };
        match (status, agent_id, &process.command) {
            (Status::STOPPED, ..) => {}
            // The sandbox is the VM: stopping it ends the pod.
            (_, _, None) => {
                if owns_vm {
                    let vm = Arc::clone(&vm);
                    thread::spawn(move || vm.stop());
                }
            }
            (_, Some(id), Some(_)) => vm.guest.signal(id, req.signal).map_err(failed)?,
            // Never started: it ends here.
            (_, None, Some(_)) => process.finish(128 + req.signal),
        }
        // `all` reaches every exec of the container too.
        if req.all && req.exec_id.is_empty() {
            let execs: Vec<_> = self.with(&req.id, |c| Ok(c.execs.values().cloned().collect()))?;
            for exec in execs {
                let id = exec.lock().agent_id;
                if let Some(id) = id {
                    let _ = vm.guest.signal(id, req.signal);
                }
            }
        }
        Ok(api::Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        log::info!("exec {} {}", req.id, req.exec_id);
        if req.terminal {
            return Err(failed(anyhow!("a terminal (tty) is not supported by the Mica shim yet")));
        }
        let process: oci_spec::runtime::Process = serde_json::from_slice(&req.spec.value)
            .map_err(|e| failed(anyhow!("the exec's process spec does not decode: {e}")))?;
        self.with(&req.id, |container| {
            if container.execs.contains_key(&req.exec_id) {
                return Err(already_exists(format!("exec {}", req.exec_id)));
            }
            if let Host::Wasm(_) = container.host {
                return Err(precondition("a wasm container runs one component and no other processes".into()));
            }
            let plan = container.plan.as_ref().ok_or_else(|| precondition("a pod sandbox runs no processes".into()))?;
            let vm = container.host.pod().map_err(|e| precondition(e.to_string()))?;
            let mut command = container::command(&process, &plan.rootfs).map_err(failed)?;
            command.stdin = !req.stdin.is_empty();
            let stdio = [req.stdin.as_str(), req.stdout.as_str(), req.stderr.as_str()];
            let exec = Process::new(&req.id, &req.exec_id, stdio, Some(command), vm.pid(), &self.events);
            container.execs.insert(req.exec_id.clone(), exec);
            Ok(())
        })?;
        self.events.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(api::Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        // The stdin thread drains the FIFO and then ends the process's input.
        let closing = self.with(&req.id, |c| {
            c.process(&req.exec_id)?;
            Ok(c.stdin_closed.get(&req.exec_id).cloned())
        })?;
        if let Some(closing) = closing {
            *closing.lock().unwrap_or_else(PoisonError::into_inner) = true;
        }
        Ok(api::Empty::new())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        log::info!("delete {} {}", req.id, req.exec_id);
        let process = self.with(&req.id, |c| Ok(Arc::clone(c.process(&req.exec_id)?)))?;
        let (status, pid, exit) = {
            let state = process.lock();
            (state.status, state.pid, state.exit.clone())
        };
        if status == Status::RUNNING {
            return Err(precondition(format!("{} is running: kill it first", process.event_id())));
        }
        let (exit_status, exited_at) = exit.unwrap_or_else(|| (0, now()));
        if req.exec_id.is_empty() {
            let container = self.containers().remove(&req.id);
            if let Some(container) = container {
                self.remove(&req.id, container);
            }
            self.events.publish(TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status,
                exited_at: Some(exited_at.clone()).into(),
                ..Default::default()
            });
        } else {
            self.with(&req.id, |c| {
                c.execs.remove(&req.exec_id);
                c.stdin_closed.remove(&req.exec_id);
                Ok(())
            })?;
        }
        Ok(api::DeleteResponse { pid, exit_status, exited_at: Some(exited_at).into(), ..Default::default() })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let pid = self.with(&req.id, |c| Ok(c.host.pid()))?;
        let info = containerd_shim::protos::types::task::ProcessInfo { pid, ..Default::default() };
        Ok(api::PidsResponse { processes: vec![info], ..Default::default() })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let host = self.with(&req.id, |c| Ok(c.host.clone()))?;
        let metrics = match host {
            Host::Pod(vm) => vm::metrics(vm.pid(), vm.memory_mib()),
            Host::Wasm(machine) => vm::metrics(machine.pid(), machine.memory_mib),
            Host::Pending => vm::metrics(std::process::id(), 0),
        };
        let metrics = metrics.map_err(failed)?;
        let stats = containerd_shim::util::convert_to_any(Box::new(metrics)).map_err(|e| failed(anyhow!("{e}")))?;
        Ok(api::StatsResponse { stats: Some(stats).into(), ..Default::default() })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.with(&req.id, |c| Ok(c.host.pid()))?;
        Ok(api::ConnectResponse { shim_pid: std::process::id(), task_pid, ..Default::default() })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.containers().is_empty() {
            log::info!("no containers left: shutting the shim down");
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

/// How long `delete` (containerd's cleanup of a dead shim) waits for a VM to go.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The bundle path of a `delete` action (its working directory when not given).
pub fn bundle_of(flag: &str) -> PathBuf {
    if flag.is_empty() { std::env::current_dir().unwrap_or_default() } else { PathBuf::from(flag) }
}
