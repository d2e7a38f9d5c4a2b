//! Components written in C: a manifest's `c = "DIR"` names a directory of C sources, built here
//! into a `wasm32-wasip2` component with Debian's clang and wasi-libc.
//!
//! Each `.c` file is compiled for `wasm32-wasi` (WASI preview 1, what wasi-libc implements);
//! `wasm-component-ld` (the linker rustc uses for `wasm32-wasip2`) links them with wasi-libc
//! through `wasm-ld` and turns the preview 1 module into a component with its built-in adapter,
//! so the component imports WASI 0.2 interfaces and exports `wasi:cli/run`, as a Rust `std`
//! program's does. `_start` is Mica's own (`CRT1_COMMAND_LL`, built with `llc`): Debian's
//! `crt1-command.o` does not run constructors under lld 22.
//!
//! Mica's own interfaces (`mica:kernel/ipc`, `mica:hw`, ...) reach C through bindings that
//! `wit-bindgen`'s C generator makes from the guest SDK's world (`sdk/wit`), into the build
//! directory: a source includes `mica.h`. The generated code and its component-type object are
//! linked into every C component; `wasm-component-ld` keeps only the imports the program calls,
//! so a program that includes nothing from it imports no Mica interface.
//!
//! The tools are Debian packages ([`PACKAGES`]), which `cargo xtask setup` installs on the
//! Debian toolchain way; elsewhere the build installs them (as root) or says what to run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;
use crate::setup::debian::{CRT1_COMMAND_LL, LLC};

/// The C compiler.
const CLANG: &str = "clang-19";
/// The Debian packages C components need: the compiler, its wasm32 builtins, the C library,
/// `wasm-ld` and `llc`.
pub const PACKAGES: [&str; 5] = ["clang-19", "libclang-rt-19-dev-wasm32", "wasi-libc", "lld-22", "llvm-22"];
/// Where wasi-libc's `libc.a` is.
const WASI_LIBC_DIR: &str = "/usr/lib/wasm32-wasi";
/// clang's runtime builtins for wasm32.
const BUILTINS: &str = "/usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a";
/// The core-module linker `wasm-component-ld` runs.
const WASM_LD: &str = "/usr/lib/llvm-22/bin/wasm-ld";
/// What every source is compiled with: no warning is let through.
const CFLAGS: [&str; 6] = ["--target=wasm32-wasi", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror"];

/// Installs what of [`PACKAGES`] is missing.
pub fn ensure_packages() -> Result<()> {
    let missing = crate::setup::apt::missing(&crate::setup::RealHost, &PACKAGES)?;
    crate::setup::apt::install(&crate::setup::RealHost, &missing)
}

/// The environment that points the `cc` crate and bindgen, in a Rust component's build, at
/// clang with wasi-libc's headers. Both would otherwise call `clang` (not on `PATH` with
/// Debian's versioned packages) with `--target=wasm32-wasip2`, for which Debian's clang has no
/// headers: wasi-libc's are under `wasm32-wasi`, which `--target=wasm32-wasi` (given last, so it
/// wins) finds. bindgen also needs `-fvisibility=default`: for wasm, clang makes declarations
/// hidden by default, and bindgen skips hidden functions.
pub fn cc_env() -> [(&'static str, &'static str); 3] {
    [
        ("CC_wasm32_wasip2", CLANG),
        ("CFLAGS_wasm32_wasip2", "--target=wasm32-wasi"),
        ("BINDGEN_EXTRA_CLANG_ARGS_wasm32_wasip2", "--target=wasm32-wasi -fvisibility=default"),
    ]
}

/// Builds the C sources in `dir` into a component; its path (`target/mica/c/NAME.wasm`, NAME
/// being the directory's name).
pub fn build(root: &Path, dir: &Path) -> Result<PathBuf> {
    ensure_packages().with_context(|| format!("building the C component in {}", dir.display()))?;
    let name = dir.file_name().and_then(|n| n.to_str()).context("a C component's directory has no name")?;
    let out = crate::toolchain::target_dir(root).join("mica").join("c").join(name);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let ll = out.join("crt1-command.ll");
    fs::write(&ll, CRT1_COMMAND_LL).with_context(|| format!("writing {}", ll.display()))?;
    let crt1 = out.join("crt1-command.o");
    process::output(Command::new(LLC).args(["-filetype=obj", "-o"]).arg(&crt1).arg(&ll))
        .context("building _start for the C component")?;

    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("{} has no .c files", dir.display());
    }
    let bindings = generate_bindings(root, &out.join("bindings"))?;
    let mut objects = vec![bindings.component_type.clone()];
    let generated = out.join("bindings").join("mica.o");
    // The generated code is compiled without -Werror: its warnings are wit-bindgen's to fix.
    process::output(Command::new(CLANG).args(&CFLAGS[..3]).arg("-c").arg(&bindings.source).arg("-o").arg(&generated))
        .context("compiling the generated C bindings")?;
    objects.push(generated);
    for source in &sources {
        let object = out.join(source.file_stem().context("a source without a name")?).with_extension("o");
        let mut compile = Command::new(CLANG);
        compile.args(CFLAGS).arg("-I").arg(&bindings.include).arg("-c").arg(source).arg("-o").arg(&object);
        process::output(&mut compile).with_context(|| format!("compiling {}", source.display()))?;
        objects.push(object);
    }
    let wasm = out.with_extension("wasm");
    let mut link = Command::new(component_linker()?);
    link.args(["--wasm-ld-path", WASM_LD, "-o"]).arg(&wasm).arg(&crt1).args(&objects);
    link.arg(format!("-L{WASI_LIBC_DIR}")).arg("-lc").arg(BUILTINS);
    process::output(&mut link).with_context(|| format!("linking the C component {name}"))?;
    eprintln!("xtask: C component {name}: built from {} source(s)", sources.len());
    Ok(wasm)
}

/// The C bindings of the guest SDK's world.
#[derive(Debug)]
struct Bindings {
    /// The directory holding `mica.h`.
    include: PathBuf,
    /// `mica.c`: the imports' wrappers and the canonical ABI's helpers.
    source: PathBuf,
    /// The object whose custom section carries the world's component type.
    component_type: PathBuf,
}

/// The world C components import Mica's interfaces through, and the directory holding it.
const WORLD: (&str, &str) = ("sdk/wit", "guest");

/// Generates the C bindings of [`WORLD`] (named `mica` in C: `mica.h`, functions such as
/// `mica_hw_mmio_read`) into `dir`.
fn generate_bindings(root: &Path, dir: &Path) -> Result<Bindings> {
    let wit = root.join(WORLD.0);
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_path(&wit).with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(WORLD.1))?;
    let mut files = wit_bindgen_core::Files::default();
    let opts = wit_bindgen_c::Opts { rename_world: Some("mica".into()), ..Default::default() };
    opts.build()
        .generate(&mut resolve, world, &mut files)
        .with_context(|| format!("generating C bindings for the world {} in {}", WORLD.1, wit.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, contents) in files.iter() {
        let path = dir.join(name);
        // Unchanged files keep their times, so nothing downstream sees a change.
        if fs::read(&path).is_ok_and(|old| old == contents) {
            continue;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    let bindings = Bindings {
        include: dir.to_path_buf(),
        source: dir.join("mica.c"),
        component_type: dir.join("mica_component_type.o"),
    };
    for file in [&bindings.source, &bindings.component_type, &dir.join("mica.h")] {
        if !file.is_file() {
            bail!("wit-bindgen's C generator did not write {}", file.display());
        }
    }
    Ok(bindings)
}

/// `wasm-component-ld`: on `PATH`, or beside Debian's rustc (`rust-web-llvm`), or in the active
/// rustup toolchain's sysroot.
fn component_linker() -> Result<PathBuf> {
    const NAME: &str = "wasm-component-ld";
    if let Some(path) = process::which(NAME) {
        return Ok(path);
    }
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut sysroots = vec![PathBuf::from("/usr")];
    if let Ok(out) = process::output(Command::new("rustc").args(["--print", "sysroot"])) {
        sysroots.push(PathBuf::from(out.trim()));
    }
    sysroots
        .iter()
        .map(|s| s.join("lib").join("rustlib").join(&host).join("bin").join(NAME))
        .find(|p| p.is_file())
        .with_context(|| format!("{NAME} not found (it comes with Debian's rust-web-llvm, or with rustup's toolchain)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's root (xtask's parent directory).
    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
    }

    #[test]
    fn bindings_declare_mica_interfaces_as_c_functions() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bindings = generate_bindings(&root(), dir.path()).expect("bindings");
        let header = fs::read_to_string(bindings.include.join("mica.h")).expect("mica.h");
        for declaration in [
            "extern bool mica_hw_device_claim(mica_string_t *name, mica_hw_device_claimed_t *ret, mica_hw_device_error_t *err);",
            "extern bool mica_hw_mmio_read(mica_hw_mmio_handle_t window, uint32_t offset, uint8_t width, uint64_t *ret, mica_hw_mmio_error_t *err);",
            "extern bool mica_hw_dma_map_into_memory(",
            "extern void mica_kernel_ipc_reply_receive(",
            "#define MICA_KERNEL_IPC_ERROR_CODE_PEER_CLOSED 3",
        ] {
            assert!(header.contains(declaration), "mica.h lacks {declaration}");
        }
        // The object carries the world's type in a custom section that wasm-component-ld reads.
        let object = fs::read(&bindings.component_type).expect("the component-type object");
        assert_eq!(&object[..4], b"\0asm");
        assert!(object.windows(14).any(|w| w == b"component-type"), "no component-type section");
        // A second run rewrites nothing.
        let before = fs::metadata(&bindings.source).and_then(|m| m.modified()).expect("mtime");
        generate_bindings(&root(), dir.path()).expect("bindings again");
        assert_eq!(fs::metadata(&bindings.source).and_then(|m| m.modified()).expect("mtime"), before);
    }

    #[test]
    fn a_world_that_does_not_parse_is_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::create_dir_all(dir.path().join("sdk/wit")).expect("mkdir");
        fs::write(dir.path().join("sdk/wit/world.wit"), "package mica:guest@0.1.0;\nworld guest { import nope; }\n")
            .expect("write");
        let e = generate_bindings(dir.path(), &dir.path().join("out")).expect_err("a broken world");
        assert!(format!("{e:#}").contains("sdk/wit"), "{e:#}");
    }
}
