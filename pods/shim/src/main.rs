//! `containerd-shim-mica-v2`: containerd's runtime shim v2 for Mica (`io.containerd.mica.v2`).
//!
//! containerd starts it for a container (`ctr run --runtime io.containerd.mica.v2`) or for a
//! Kubernetes pod (a `RuntimeClass` whose handler names the runtime); it runs the containers in
//! Mica micro-VMs, Mica's legacy pods (`mica-cli`): Debian's kernel, an initramfs, and
//! `mica-agent`, through which the container's processes run inside their root file systems.
//! A container whose entrypoint is a wasm component runs as a component of a Mica system in a
//! Mica VM instead ([`wasm`]). See `docs/kubernetes.md`.
//!
//! The shim is also its pods' VMM on the `mica-vmm` backend (`containerd-shim-mica-v2 vmm ...`,
//! as `mica vmm` is for `mica pod`).
#![forbid(unsafe_code)]

mod container;
mod guest;
mod service;
mod vm;
mod wasm;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::synchronous::util::write_address;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use crate::service::{Events, Service};

/// containerd's name for this runtime.
const RUNTIME_ID: &str = "io.containerd.mica.v2";

/// The shim: what containerd runs as `start`, `delete`, or (with no action) the server.
struct MicaShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    bundle: String,
}

impl containerd_shim::Shim for MicaShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        MicaShim { exit: Arc::default(), namespace: args.namespace.clone(), bundle: args.bundle.clone() }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // Every container of a pod goes to the shim of its sandbox. containerd runs `start` in
        // the container's bundle.
        let spec = oci_spec::runtime::Spec::load("config.json").ok();
        let grouping = spec
            .as_ref()
            .and_then(|s| s.annotations().as_ref()?.get(service::SANDBOX_ID).cloned())
            .unwrap_or_else(|| opts.id.clone());
        let (_, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = service::bundle_of(&self.bundle);
        let stopped = vm::clean_up(&bundle).map_err(|e| containerd_shim::Error::Other(format!("{e:#}")))?;
        service::unmount(&bundle.join("rootfs"));
        log::info!("cleaned up {} (stopped a VM: {stopped})", bundle.display());
        Ok(DeleteResponse {
            // What runc's shim reports for a task it cleaned up: killed.
            exit_status: 128 + 9,
            exited_at: Some(containerd_shim::util::timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        Service::new(Events::new(publisher, self.namespace.clone()), Arc::clone(&self.exit), self.namespace.clone())
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    let mut rest = args.peekable();
    if rest.peek().is_some_and(|a| a == "vmm") {
        rest.next();
        return mica_vmm::cli::main(std::iter::once("mica-vmm".into()).chain(rest));
    }
    let _ = Path::new(&program);
    // The shim reaps nothing itself: its children are its helpers (`tar`-less, it runs none)
    // and the pods' hypervisors, which mica-cli waits for or daemonizes.
    let config = Config { no_reaper: true, no_sub_reaper: true, ..Default::default() };
    containerd_shim::run::<MicaShim>(RUNTIME_ID, Some(config));
    ExitCode::SUCCESS
}
