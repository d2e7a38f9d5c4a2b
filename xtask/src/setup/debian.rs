//! The Debian toolchain way: `rustc-web` with its own library source, wired up for
//! `-Zbuild-std` kernels and `wasm32-wasip2` components.
//!
//! Why each step exists:
//! - rustup here cannot add targets, and rustup's compilers refuse Debian's library source, so
//!   the kernel is built by `/usr/bin/rustc` 1.9x against `rust-web-src` of exactly its version.
//! - `rust-web-llvm` makes `/usr/bin/rust-lld` a link to `lld-22` without depending on it.
//! - rustc links `wasm32-wasip2` programs with `libc.a` and `crt1-command.o` from its sysroot's
//!   `self-contained` directory.
//!   - `libc.a` is wasi-libc built for `wasm32-wasip2`, as rustup's target ships it: its
//!     `socket`, `bind`, `accept`, `getaddrinfo` ... are what `std::net` calls, over
//!     `wasi:sockets`. Bookworm's `wasi-libc` (2022) is preview 1 only, without any of them, so a
//!     program that uses `std::net` does not link against it. The library comes from Debian
//!     trixie's `wasi-libc` package ([`WASIP2_LIBC`], pinned by its SHA-256): its `wasm32-wasip2`
//!     `libc.a` is copied here; nothing else of the package is installed (bookworm's stays, for
//!     C components).
//!   - `crt1-command.o` is built here, because Debian's does not call `__wasm_call_ctors` under
//!     lld 22 (wasi-libc's preopen table then stays empty and every file open fails with
//!     "Capabilities insufficient").
//! - `rustup toolchain link debian-web /usr` makes `cargo +debian-web` available.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::apt::{self, Packages};
use super::host::resolves;
use super::{Env, State, Step};
use crate::toolchain::{DEBIAN_RUSTC, DEBIAN_TOOLCHAIN_NAME};

/// Debian's Rust toolchain (with clippy, which lints the bare-metal kernel), its linkers,
/// wasi-libc, QEMU for both architectures, and Python's venv (for wasm-tools), in one apt run.
const PACKAGES: &[&str] = &[
    // C components (`crate::c_component`): clang and its wasm32 builtins.
    "clang-19",
    "libclang-rt-19-dev-wasm32",
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-llvm",
    "lld-22",
    "llvm-22",
    "wasi-libc",
    // Fetches trixie's wasi-libc (`WasiLibc`); `dpkg-deb` unpacks it.
    "curl",
    "rust-web-clippy",
    "qemu-system-x86",
    "qemu-system-arm",
    "python3-venv",
];

/// The library source `-Zbuild-std` compiles.
const LIBRARY_SOURCE: &str = "/usr/lib/rustlib/src/rust/library/core/Cargo.toml";
/// The linker rustc calls for bare-metal and wasm targets.
const RUST_LLD: &str = "/usr/bin/rust-lld";
/// The component linker `wasm32-wasip2` needs.
const COMPONENT_LD: &str = "/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld";
/// Where rustc looks for `libc.a` and `crt1-command.o` for `wasm32-wasip2`.
const SELF_CONTAINED: &str = "/usr/lib/rustlib/wasm32-wasip2/lib/self-contained";
/// A Debian package pinned by its SHA-256, fetched from the archive.
pub(super) struct DebPin {
    /// Its URL.
    pub url: &'static str,
    /// The SHA-256 of the `.deb`, as the suite's `Packages` index gives it.
    pub sha256: &'static str,
}

/// Debian trixie's `wasi-libc`, whose `usr/lib/wasm32-wasip2/libc.a` rustc links `wasm32-wasip2`
/// programs with. From trixie's `main/binary-all/Packages`: `Filename` and `SHA256`.
pub(super) const WASIP2_LIBC: DebPin = DebPin {
    url: "http://deb.debian.org/debian/pool/main/w/wasi-libc/wasi-libc_0.0~git20241209.574b88d-2_all.deb",
    sha256: "b7716260051d289248b7667f81fa2792c125d888ff51da3fa09c6272cc0bd11d",
};
/// Where the package keeps the library.
const WASIP2_LIBC_IN_PACKAGE: &str = "usr/lib/wasm32-wasip2/libc.a";
/// The LLVM compiler that builds `crt1-command.o`.
pub(crate) const LLC: &str = "llc-22";

/// `_start` for WASI commands, as wasi-libc's own: run constructors, then `main`, then the
/// destructors (`atexit` handlers, and C's stdio flushing its buffers), then exit with `main`'s
/// status.
pub(crate) const CRT1_COMMAND_LL: &str = r#"target triple = "wasm32-unknown-wasi"
declare void @__wasm_call_ctors()
declare void @__wasm_call_dtors()
declare i32 @__main_void()
declare void @proc_exit(i32) #1
define void @_start() #0 {
  call void @__wasm_call_ctors()
  %r = call i32 @__main_void()
  call void @__wasm_call_dtors()
  %z = icmp eq i32 %r, 0
  br i1 %z, label %ok, label %fail
fail:
  call void @proc_exit(i32 %r)
  unreachable
ok:
  ret void
}
attributes #0 = { "wasm-export-name"="_start" }
attributes #1 = { "wasm-import-module"="wasi_snapshot_preview1" "wasm-import-name"="proc_exit" }
"#;

/// The steps of the Debian way, in order.
pub(super) fn steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(Packages { name: "apt packages", packages: PACKAGES }),
        Box::new(LibrarySource),
        Box::new(Linkers),
        Box::new(WasiLibc),
        Box::new(Crt1Command),
        Box::new(RustupLink),
    ]
}

/// The "needs root" error for a step that writes into the system's Rust sysroot.
fn needs_root(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} needs root: run `cargo xtask setup` as root (e.g. `sudo -E env PATH=\"$PATH\" cargo xtask setup`)"
    )
}

/// `rust-web-src` must be the library source of exactly `/usr/bin/rustc`'s version.
pub(super) struct LibrarySource;

impl LibrarySource {
    fn version(env: &Env<'_>) -> Result<String> {
        let out = env.host.output(env.host.command(DEBIAN_RUSTC).arg("-V"))?;
        out.split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .with_context(|| format!("unexpected `{DEBIAN_RUSTC} -V` output: {out}"))
    }
}

impl Step for LibrarySource {
    fn name(&self) -> &'static str {
        "rust-web-src"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        if !env.path(DEBIAN_RUSTC).is_file() {
            return Ok(State::Missing(format!("{DEBIAN_RUSTC} is not installed (rustc-web)")));
        }
        let version = Self::version(env)?;
        let versioned = format!("/usr/src/rustc-{version}");
        Ok(if env.path(LIBRARY_SOURCE).is_file() && env.path(&versioned).is_dir() {
            State::Ready(format!("library source matches {DEBIAN_RUSTC} {version}"))
        } else {
            State::Missing(format!("no library source for {DEBIAN_RUSTC} {version} ({versioned})"))
        })
    }

    fn apply(&self, _env: &Env<'_>) -> Result<String> {
        bail!(
            "rust-web-src does not match {DEBIAN_RUSTC} (a partial upgrade?); run: {}",
            apt::install_command(&["rustc-web", "cargo-web", "rust-web-src", "rust-web-llvm"])
        )
    }
}

/// `rust-lld` must resolve (to `lld-22`), and `wasm-component-ld` must be there.
struct Linkers;

impl Step for Linkers {
    fn name(&self) -> &'static str {
        "rust-lld, component-ld"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let lld = resolves(&env.path(RUST_LLD));
        let component_ld = resolves(&env.path(COMPONENT_LD));
        Ok(match (lld, component_ld) {
            (true, true) => State::Ready(format!("{RUST_LLD} and wasm-component-ld present")),
            (false, _) => State::Missing(format!("{RUST_LLD} is missing or dangling")),
            (true, false) => State::Missing(format!("{COMPONENT_LD} is missing")),
        })
    }

    fn apply(&self, _env: &Env<'_>) -> Result<String> {
        bail!(
            "the linkers come with rust-web-llvm (wasm-component-ld; rust-lld as a link) and \
             lld-22 (its target); run: apt-get install -y --reinstall rust-web-llvm lld-22"
        )
    }
}

/// `self-contained/libc.a` is [`WASIP2_LIBC`]'s `wasm32-wasip2` library, with a stamp beside it
/// naming the package it came from.
struct WasiLibc;

impl WasiLibc {
    fn lib(env: &Env<'_>) -> std::path::PathBuf {
        env.path(SELF_CONTAINED).join("libc.a")
    }

    fn stamp(env: &Env<'_>) -> std::path::PathBuf {
        env.path(SELF_CONTAINED).join("libc.a.source")
    }

    /// What the stamp says once the library is in place.
    fn stamp_text() -> String {
        format!("{} sha256:{}\n", WASIP2_LIBC.url, WASIP2_LIBC.sha256)
    }
}

impl Step for WasiLibc {
    fn name(&self) -> &'static str {
        "wasip2 libc.a"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let lib = Self::lib(env);
        let is_file = fs::symlink_metadata(&lib).is_ok_and(|m| m.file_type().is_file());
        let stamped = fs::read_to_string(Self::stamp(env)).is_ok_and(|s| s == Self::stamp_text());
        let package = WASIP2_LIBC.url.rsplit('/').next().unwrap_or(WASIP2_LIBC.url);
        Ok(match (is_file, stamped) {
            (true, true) => State::Ready(format!("from {package}")),
            (false, _) if fs::symlink_metadata(&lib).is_ok() => {
                State::Missing("a link to bookworm's preview-1 wasi-libc (no sockets for std::net)".to_owned())
            }
            (false, _) => State::Missing("missing".to_owned()),
            (true, false) => State::Missing(format!("not from {package}")),
        })
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        if !env.host.is_root() {
            return Err(needs_root(&format!("writing {}", Self::lib(env).display())));
        }
        let scratch = env.path("/var/cache/mica/wasi-libc");
        if scratch.exists() {
            fs::remove_dir_all(&scratch).with_context(|| format!("clearing {}", scratch.display()))?;
        }
        fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let deb = scratch.join("wasi-libc.deb");
        env.host.fetch(WASIP2_LIBC.url, WASIP2_LIBC.sha256, &deb)?;
        let unpacked = scratch.join("unpacked");
        env.host.output(env.host.command("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        let built = unpacked.join(WASIP2_LIBC_IN_PACKAGE);
        if !built.is_file() {
            bail!("{} has no {WASIP2_LIBC_IN_PACKAGE}", WASIP2_LIBC.url);
        }
        fs::create_dir_all(env.path(SELF_CONTAINED)).with_context(|| format!("creating {SELF_CONTAINED}"))?;
        let lib = Self::lib(env);
        if fs::symlink_metadata(&lib).is_ok() {
            fs::remove_file(&lib).with_context(|| format!("removing {}", lib.display()))?;
        }
        fs::copy(&built, &lib).with_context(|| format!("copying {} to {}", built.display(), lib.display()))?;
        fs::write(Self::stamp(env), Self::stamp_text())
            .with_context(|| format!("writing {}", Self::stamp(env).display()))?;
        fs::remove_dir_all(&scratch).with_context(|| format!("clearing {}", scratch.display()))?;
        Ok("installed trixie's wasm32-wasip2 wasi-libc".to_owned())
    }
}

/// `self-contained/crt1-command.o`, built from [`CRT1_COMMAND_LL`] with `llc-22`.
struct Crt1Command;

impl Crt1Command {
    fn ll(env: &Env<'_>) -> std::path::PathBuf {
        env.path(SELF_CONTAINED).join("crt1-command.ll")
    }

    fn obj(env: &Env<'_>) -> std::path::PathBuf {
        env.path(SELF_CONTAINED).join("crt1-command.o")
    }
}

impl Step for Crt1Command {
    fn name(&self) -> &'static str {
        "wasip2 crt1-command.o"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let source_current = fs::read_to_string(Self::ll(env)).is_ok_and(|s| s == CRT1_COMMAND_LL);
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        let obj_current = match (mtime(&Self::ll(env)), mtime(&Self::obj(env))) {
            (Some(ll), Some(obj)) => obj >= ll,
            _ => false,
        };
        Ok(if source_current && obj_current {
            State::Ready("built (calls __wasm_call_ctors)".to_owned())
        } else {
            State::Missing("missing or stale".to_owned())
        })
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        if !env.host.is_root() {
            return Err(needs_root(&format!("writing {}", Self::obj(env).display())));
        }
        let Some(llc) = env.host.which(LLC) else {
            bail!("{LLC} not found; run: {}", apt::install_command(&["llvm-22"]));
        };
        fs::create_dir_all(env.path(SELF_CONTAINED)).with_context(|| format!("creating {SELF_CONTAINED}"))?;
        let ll = Self::ll(env);
        fs::write(&ll, CRT1_COMMAND_LL).with_context(|| format!("writing {}", ll.display()))?;
        env.host.output(
            Command::new(llc)
                .args(["-mtriple=wasm32-unknown-wasi", "-filetype=obj"])
                .arg(&ll)
                .arg("-o")
                .arg(Self::obj(env)),
        )?;
        Ok("built".to_owned())
    }
}

/// `rustup toolchain link debian-web /usr`, when rustup is installed.
struct RustupLink;

impl Step for RustupLink {
    fn name(&self) -> &'static str {
        "rustup debian-web"
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let Some(rustup) = env.host.which("rustup") else {
            return Ok(State::Ready("no rustup: nothing to link".to_owned()));
        };
        let list = env.host.output(Command::new(rustup).args(["toolchain", "list"]).current_dir(&env.root))?;
        let linked = list.lines().any(|l| l.split_whitespace().next() == Some(DEBIAN_TOOLCHAIN_NAME));
        Ok(if linked {
            State::Ready(format!("`cargo +{DEBIAN_TOOLCHAIN_NAME}` is /usr's toolchain"))
        } else {
            State::Missing(format!("toolchain {DEBIAN_TOOLCHAIN_NAME} not linked"))
        })
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        let rustup = env.host.which("rustup").context("rustup vanished")?;
        env.host
            .output(Command::new(rustup).args(["toolchain", "link", DEBIAN_TOOLCHAIN_NAME]).arg(env.path("/usr")))?;
        Ok(format!("linked {DEBIAN_TOOLCHAIN_NAME} to /usr"))
    }
}
