//! `cargo xtask install-shim`: Mica as a containerd runtime on this node.
//!
//! Builds `containerd-shim-mica-v2` (release) and the pod image, and installs, under a prefix
//! (default `/usr/local`):
//!
//! - `bin/containerd-shim-mica-v2`, where containerd finds it on its `PATH` for the runtime type
//!   `io.containerd.mica.v2`;
//! - `share/mica/pods/{vmlinuz,initramfs.cpio}`, the pod image the shim boots (it looks in
//!   `../share/mica/pods` beside itself);
//! - `share/mica/wasm/{kernel,template.bundle}`, the Mica kernel (release) and the template
//!   system (`pods/shim/wasm-host.toml`, late binding: its block driver and module store compiled
//!   for the baseline CPU, and the compiler component) that wasm containers run in;
//! - `share/mica/containerd-mica.toml`, the snippet that registers the runtime with containerd's
//!   CRI plugin under the handler `mica`, which it also prints.
//!
//! The `RuntimeClass` that names that handler is `docs/kubernetes/runtimeclass.yaml`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{kernel, pod_image, process, setup, system, toolchain};

/// The template system of wasm containers.
pub const WASM_HOST_MANIFEST: &str = "pods/shim/wasm-host.toml";

/// The Mica kernel and the template bundle wasm containers run in (the shim's
/// `MICA_WASM_IMAGE_DIR`): both from this tree, since the kernel accepts only bundles and
/// artifacts of its own Wasmtime and engine configuration.
#[derive(Debug)]
pub struct WasmImage {
    /// The directory holding `kernel` and `template.bundle`.
    pub dir: PathBuf,
}

/// Builds the template bundle for `kernel` (already built) and puts both into
/// `target/mica/shim-wasm/<debug|release>`.
pub fn wasm_image(root: &Path, toolchain: &toolchain::Toolchain, kernel: &Path, release: bool) -> Result<WasmImage> {
    let bundle = system::prepare_with(
        root,
        toolchain,
        &root.join(WASM_HOST_MANIFEST),
        &system::Binding::Late,
        Some("shim-template"),
    )?;
    let dir = root.join("target/mica/shim-wasm").join(if release { "release" } else { "debug" });
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (from, name) in [(kernel, "kernel"), (bundle.as_path(), "template.bundle")] {
        let to = dir.join(name);
        fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(WasmImage { dir })
}

/// `cargo xtask install-shim`'s options.
#[derive(Debug, Args)]
pub struct InstallShimArgs {
    /// Where to install (`bin/`, `share/mica/`).
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Install the debug build (faster to build; for trying it out).
    #[arg(long)]
    debug: bool,
}

/// The shim's binary name: containerd derives it from the runtime type `io.containerd.mica.v2`.
pub const SHIM: &str = "containerd-shim-mica-v2";

/// What goes where under `prefix`: (source, destination) pairs.
pub fn layout(shim: &Path, image: &pod_image::PodImage, wasm: &WasmImage, prefix: &Path) -> Vec<(PathBuf, PathBuf)> {
    let pods = prefix.join("share/mica/pods");
    let wasm_dir = prefix.join("share/mica/wasm");
    vec![
        (shim.to_owned(), prefix.join("bin").join(SHIM)),
        (image.kernel.clone(), pods.join("vmlinuz")),
        (image.initramfs.clone(), pods.join("initramfs.cpio")),
        (wasm.dir.join("kernel"), wasm_dir.join("kernel")),
        (wasm.dir.join("template.bundle"), wasm_dir.join("template.bundle")),
    ]
}

/// containerd's configuration for the runtime (version 2 config, as containerd 1.6 and 1.7
/// read it): the CRI runtime handler `mica`.
pub fn containerd_snippet() -> &'static str {
    r#"# Mica as a containerd runtime: merge into /etc/containerd/config.toml (version = 2), then
# restart containerd. Pods whose RuntimeClass has `handler: mica` run in Mica micro-VMs.
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.mica]
  runtime_type = "io.containerd.mica.v2"
  # One pod VM per pod; the shim boots it from ../share/mica/pods beside its binary.
  pod_annotations = ["io.mica.pod.*"]
"#
}

/// Runs `cargo xtask install-shim`.
pub fn run(root: &Path, args: &InstallShimArgs) -> Result<ExitCode> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    toolchain::clear_cargo_run_env(&mut cmd);
    cmd.current_dir(root).args(["build", "-p", SHIM]);
    if !args.debug {
        cmd.arg("--release");
    }
    eprintln!("xtask: {}", process::shown(&cmd));
    let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    if !status.success() {
        bail!("building {SHIM} failed ({status})");
    }
    let shim = root.join("target").join(if args.debug { "debug" } else { "release" }).join(SHIM);
    let image = pod_image::build(root)?;
    let toolchain = setup::ensure(root)?;
    let release = !args.debug;
    let kernel = kernel::build(root, &toolchain, mica_launch::GuestArch::X86_64, release)?;
    let wasm = wasm_image(root, &toolchain, &kernel, release)?;
    for (from, to) in layout(&shim, &image, &wasm, &args.prefix) {
        let dir = to.parent().context("an install path without a directory")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Through a temporary name: a running shim keeps its binary, and nothing is half-written.
        let tmp = to.with_extension("new");
        fs::copy(&from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
        fs::rename(&tmp, &to).with_context(|| format!("installing {}", to.display()))?;
        eprintln!("xtask: installed {}", to.display());
    }
    let snippet = args.prefix.join("share/mica/containerd-mica.toml");
    fs::write(&snippet, containerd_snippet()).with_context(|| format!("writing {}", snippet.display()))?;
    eprintln!("xtask: installed {}", snippet.display());
    println!("{}", containerd_snippet());
    println!("# Then: kubectl apply -f {}", root.join("docs/kubernetes/runtimeclass.yaml").display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_lands_on_path_beside_its_pod_image() {
        let image = pod_image::PodImage { kernel: "/t/vmlinuz".into(), initramfs: "/t/initramfs.cpio".into() };
        let wasm = WasmImage { dir: "/t/shim-wasm".into() };
        let layout = layout(Path::new("/t/release/containerd-shim-mica-v2"), &image, &wasm, Path::new("/usr/local"));
        let to: Vec<_> = layout.iter().map(|(_, to)| to.display().to_string()).collect();
        assert_eq!(
            to,
            [
                "/usr/local/bin/containerd-shim-mica-v2",
                "/usr/local/share/mica/pods/vmlinuz",
                "/usr/local/share/mica/pods/initramfs.cpio",
                "/usr/local/share/mica/wasm/kernel",
                "/usr/local/share/mica/wasm/template.bundle",
            ]
        );
        // The shim looks for its image at ../share/mica/pods from its own directory.
        let bin = Path::new(&to[0]).parent().unwrap();
        assert_eq!(bin.parent().unwrap().join("share/mica/pods/vmlinuz").display().to_string(), to[1]);
        assert_eq!(bin.parent().unwrap().join("share/mica/wasm/kernel").display().to_string(), to[3]);
    }

    #[test]
    fn the_snippet_is_containerd_toml_naming_the_runtime() {
        let config: toml::Table = toml::from_str(containerd_snippet()).expect("TOML");
        let mica = &config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["mica"];
        assert_eq!(mica["runtime_type"].as_str(), Some("io.containerd.mica.v2"));
    }
}
