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

/// Builds the C sources in `dir` into a component; its path (`target/mica/c/NAME.wasm`, NAME
/// being the directory's name).
pub fn build(root: &Path, dir: &Path) -> Result<PathBuf> {
    let missing = crate::setup::apt::missing(&crate::setup::RealHost, &PACKAGES)?;
    crate::setup::apt::install(&crate::setup::RealHost, &missing)
        .with_context(|| format!("building the C component in {}", dir.display()))?;
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
    let mut objects = Vec::new();
    for source in &sources {
        let object = out.join(source.file_stem().context("a source without a name")?).with_extension("o");
        process::output(Command::new(CLANG).args(CFLAGS).arg("-c").arg(source).arg("-o").arg(&object))
            .with_context(|| format!("compiling {}", source.display()))?;
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
