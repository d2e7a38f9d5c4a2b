//! Setup against a fake machine: a temporary root for the system's files and a command runner
//! that answers as Debian's tools do, installing packages by creating the files that matter.
//!
//! The fresh machine is the one a newcomer has: rustup stable without the bare-metal or wasm
//! targets, and none of the Debian packages. `cargo xtask run` on such a machine once failed in
//! its check of the library source, which ran Debian's `rustc` before anything had installed it.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use anyhow::{Result, bail};

use super::*;

/// The files a package brings that setup looks at (relative to the root), and symlinks as
/// (link, target) pairs.
fn package_files(package: &str) -> (&'static [&'static str], &'static [(&'static str, &'static str)]) {
    match package {
        "rustc-web" => (&["usr/bin/rustc"], &[]),
        "cargo-web" => (&["usr/bin/cargo"], &[]),
        "rust-web-src" => (&["usr/lib/rustlib/src/rust/library/core/Cargo.toml", "usr/src/rustc-1.96.0/README"], &[]),
        "rust-web-llvm" => (
            &["usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"],
            // A link to lld-22 that dangles until lld-22 is installed, as on Debian.
            &[("usr/bin/rust-lld", "lld-22")],
        ),
        "lld-22" => (&["usr/bin/lld-22"], &[]),
        "llvm-22" => (&["usr/bin/llc-22"], &[]),
        "wasi-libc" => (&["usr/lib/wasm32-wasi/libc.a"], &[]),
        "qemu-system-x86" => (&["usr/bin/qemu-system-x86_64"], &[]),
        "qemu-system-arm" => (&["usr/bin/qemu-system-aarch64"], &[]),
        "rust-web-clippy" => (&["usr/bin/cargo-clippy", "usr/bin/clippy-driver"], &[]),
        "e2fsprogs" => (&["usr/sbin/mke2fs"], &[]),
        "busybox-static" => (&["bin/busybox"], &[]),
        "containerd" => (&["usr/bin/containerd", "usr/bin/ctr"], &[]),
        "runc" => (&["usr/sbin/runc"], &[]),
        "protobuf-compiler" => (&["usr/bin/protoc"], &[]),
        "python3-venv" => (&["usr/bin/python3"], &[]),
        _ => (&[], &[]),
    }
}

/// A Debian machine in a temporary directory.
struct FakeHost {
    root: tempfile::TempDir,
    root_user: bool,
    installed: RefCell<BTreeSet<String>>,
    /// Every command run, as `program-name args...`.
    log: RefCell<Vec<String>>,
}

impl FakeHost {
    /// A machine with rustup (stable, no extra targets) and none of the packages.
    fn fresh() -> FakeHost {
        let host = FakeHost {
            root: tempfile::tempdir().expect("tempdir"),
            root_user: true,
            installed: RefCell::default(),
            log: RefCell::default(),
        };
        for tool in ["usr/bin/dpkg-query", "usr/bin/apt-get", "root/.cargo/bin/rustup"] {
            host.touch(tool);
        }
        host
    }

    fn touch(&self, rel: &str) {
        let path = self.root.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, b"").expect("write");
    }

    fn install(&self, package: &str) {
        let (files, links) = package_files(package);
        for file in files {
            self.touch(file);
        }
        for (link, target) in links {
            let link = self.root.path().join(link);
            fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).expect("symlink");
        }
        self.installed.borrow_mut().insert(package.to_owned());
    }

    fn commands(&self, program: &str) -> Vec<String> {
        self.log.borrow().iter().filter(|c| c.split(' ').next() == Some(program)).cloned().collect()
    }
}

fn done(stdout: impl Into<Vec<u8>>, code: i32) -> Result<Output> {
    Ok(Output { status: ExitStatus::from_raw(code << 8), stdout: stdout.into(), stderr: Vec::new() })
}

impl Host for FakeHost {
    fn capture(&self, cmd: &mut Command) -> Result<Output> {
        let program = PathBuf::from(cmd.get_program());
        let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        self.log
            .borrow_mut()
            .push(std::iter::once(name.clone()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" "));
        // A program given by path must exist, as `Command::output` requires.
        if program.is_absolute() && !program.exists() {
            bail!("cannot run `{}`: No such file or directory (os error 2)", program.display());
        }
        match name.as_str() {
            "dpkg-query" => {
                let installed = self.installed.borrow();
                let wanted: Vec<&String> = args.iter().skip(3).collect();
                let listing: String = wanted
                    .iter()
                    .filter(|p| installed.contains(p.as_str()))
                    .map(|p| format!("{p} installed\n"))
                    .collect();
                done(listing, if wanted.iter().all(|p| installed.contains(p.as_str())) { 0 } else { 1 })
            }
            "apt-get" if args.first().map(String::as_str) == Some("update") => done("", 0),
            "apt-get" if args.first().map(String::as_str) == Some("install") => {
                for package in args.iter().skip(1).filter(|a| !a.starts_with('-')) {
                    self.install(package);
                }
                done("", 0)
            }
            "rustc" if args == ["-V"] => done("rustc 1.96.0 (debian 2026-11-01)\n", 0),
            "rustup" => match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["target", "list", "--installed"] => done("x86_64-unknown-linux-gnu\n", 0),
                ["component", "list", "--installed"] => {
                    done("cargo-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n", 0)
                }
                ["toolchain", "list"] => {
                    let linked = self.commands("rustup").iter().any(|c| c.starts_with("rustup toolchain link"));
                    done(
                        format!(
                            "stable-x86_64-unknown-linux-gnu (default){}\n",
                            if linked { "\ndebian-web" } else { "" }
                        ),
                        0,
                    )
                }
                ["toolchain", "link", "debian-web", _] => done("", 0),
                other => bail!("unexpected rustup {other:?}"),
            },
            "llc-22" => {
                let out = args.iter().position(|a| a == "-o").and_then(|i| args.get(i + 1)).expect("-o");
                fs::write(out, b"\0asm").expect("write crt1");
                done("", 0)
            }
            "qemu-system-x86_64" | "qemu-system-aarch64" => {
                done("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u16)\n", 0)
            }
            "python3" => {
                let venv = Path::new(args.last().expect("venv dir"));
                fs::create_dir_all(venv.join("bin")).expect("mkdir");
                fs::write(venv.join("bin/pip"), b"").expect("pip");
                done("", 0)
            }
            "pip" => {
                let bin = program.parent().expect("venv bin");
                fs::write(bin.join("wasm-tools"), b"").expect("wasm-tools");
                done("", 0)
            }
            "wasm-tools" => done("wasm-tools 1.241.2\n", 0),
            "dpkg-deb" => {
                // `dpkg-deb -x DEB DIR`: the one file setup takes from trixie's wasi-libc.
                let lib = Path::new(&args[2]).join("usr/lib/wasm32-wasip2/libc.a");
                fs::create_dir_all(lib.parent().expect("parent")).expect("mkdir");
                fs::write(&lib, b"wasip2 libc").expect("write libc.a");
                done("", 0)
            }
            other => bail!("the fake machine has no `{other}`"),
        }
    }

    fn stream(&self, cmd: &mut Command) -> Result<()> {
        let out = self.capture(cmd)?;
        if !out.status.success() {
            bail!("`{}` failed ({})", crate::process::shown(cmd), out.status);
        }
        Ok(())
    }

    fn which(&self, name: &str) -> Option<PathBuf> {
        ["usr/local/bin", "usr/bin", "usr/sbin", "root/.cargo/bin"]
            .iter()
            .map(|dir| self.root.path().join(dir).join(name))
            .find(|p| p.is_file())
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    fn is_root(&self) -> bool {
        self.root_user
    }

    fn fetch(&self, url: &str, sha256: &str, dest: &Path) -> Result<()> {
        self.log.borrow_mut().push(format!("fetch {url} {sha256}"));
        fs::write(dest, b"!<arch>\n").expect("write the package");
        Ok(())
    }
}

/// Every step of the Debian way reports ready on `host`.
fn all_ready(host: &FakeHost) -> bool {
    let env = env(host, Path::new("/ws")).expect("env");
    steps(&env.toolchain).iter().all(|s| matches!(s.check(&env), Ok(State::Ready(_))))
}

#[test]
fn ensure_sets_up_a_fresh_machine() {
    // MICA_TOOLS_PREFIX and MICA_BIN_DIR are not set in tests: wasm-tools goes into the fake root.
    let host = FakeHost::fresh();
    let toolchain = ensure_on(&host, Path::new("/ws")).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(matches!(toolchain, Toolchain::Debian { ref why } if why.contains("wasm32-wasip2")), "{toolchain:?}");
    // Packages first: Debian's rustc was installed before anything ran it.
    let log = host.log.borrow().clone();
    let install = log.iter().position(|c| c.starts_with("apt-get install")).expect("apt-get install ran");
    let first_rustc = log.iter().position(|c| c.starts_with("rustc")).expect("rustc -V ran");
    assert!(install < first_rustc, "rustc ran before it was installed: {log:#?}");
    for package in [
        "rustc-web",
        "rust-web-src",
        "lld-22",
        "llvm-22",
        "wasi-libc",
        "qemu-system-x86",
        "qemu-system-arm",
        "rust-web-clippy",
        "e2fsprogs",
        "busybox-static",
        "containerd",
        "runc",
        "protobuf-compiler",
    ] {
        assert!(host.installed.borrow().contains(package), "{package} not installed: {log:#?}");
    }
    // The wasm32-wasip2 libc (with std::net's sockets) from the pinned package, not bookworm's.
    let wasi_libc = host.path("/usr/lib/rustlib/wasm32-wasip2/lib/self-contained/libc.a");
    assert_eq!(fs::read(&wasi_libc).expect("libc.a"), b"wasip2 libc");
    assert!(
        host.log
            .borrow()
            .iter()
            .any(|c| c == &format!("fetch {} {}", debian::WASIP2_LIBC.url, debian::WASIP2_LIBC.sha256)),
        "{log:#?}"
    );
    assert!(!host.path("/var/cache/mica/wasi-libc").exists(), "the download is left behind");
    assert!(host.path("/usr/lib/rustlib/wasm32-wasip2/lib/self-contained/crt1-command.o").is_file());
    assert!(host.commands("rustup").iter().any(|c| c.starts_with("rustup toolchain link debian-web")), "{log:#?}");
    assert!(all_ready(&host), "something is still missing after ensure: {log:#?}");
}

#[test]
fn ensure_on_a_set_up_machine_only_checks() {
    let host = FakeHost::fresh();
    ensure_on(&host, Path::new("/ws")).unwrap_or_else(|e| panic!("{e:#}"));
    host.log.borrow_mut().clear();
    ensure_on(&host, Path::new("/ws")).unwrap_or_else(|e| panic!("{e:#}"));
    let log = host.log.borrow();
    assert!(
        log.iter().all(|c| !c.starts_with("apt-get") && !c.starts_with("llc-22") && !c.starts_with("pip")),
        "a second ensure installed something: {log:#?}"
    );
}

#[test]
fn missing_rustc_is_missing_not_an_error() {
    let host = FakeHost::fresh();
    let env = env(&host, Path::new("/ws")).expect("env");
    let state = debian::LibrarySource.check(&env).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(matches!(state, State::Missing(ref what) if what.contains("/usr/bin/rustc")), "{state:?}");
}

#[test]
fn without_root_the_error_gives_the_command() {
    let mut host = FakeHost::fresh();
    host.root_user = false;
    let err = format!("{:#}", ensure_on(&host, Path::new("/ws")).expect_err("needs root"));
    assert!(err.contains("needs root; run: sudo sh -c 'apt-get update && apt-get install -y"), "{err}");
    assert!(host.commands("apt-get").is_empty(), "apt-get ran without root");
}

#[test]
fn a_partial_upgrade_is_named() {
    let host = FakeHost::fresh();
    ensure_on(&host, Path::new("/ws")).unwrap_or_else(|e| panic!("{e:#}"));
    // Debian's rustc moved on without its library source.
    fs::remove_dir_all(host.path("/usr/src/rustc-1.96.0")).expect("rm");
    let err = format!("{:#}", ensure_on(&host, Path::new("/ws")).expect_err("mismatch"));
    assert!(err.contains("rust-web-src does not match /usr/bin/rustc"), "{err}");
}

#[test]
fn a_machine_linked_to_bookworms_wasi_libc_gets_the_wasip2_one() {
    // What an earlier setup left: libc.a a link to bookworm's preview-1 wasi-libc.
    let host = FakeHost::fresh();
    ensure_on(&host, Path::new("/ws")).unwrap_or_else(|e| panic!("{e:#}"));
    let lib = host.path("/usr/lib/rustlib/wasm32-wasip2/lib/self-contained/libc.a");
    fs::remove_file(&lib).expect("rm");
    fs::remove_file(lib.with_file_name("libc.a.source")).expect("rm stamp");
    std::os::unix::fs::symlink(host.path("/usr/lib/wasm32-wasi/libc.a"), &lib).expect("symlink");
    assert!(!all_ready(&host));
    host.log.borrow_mut().clear();
    ensure_on(&host, Path::new("/ws")).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(fs::symlink_metadata(&lib).expect("libc.a").file_type().is_file());
    assert_eq!(fs::read(&lib).expect("libc.a"), b"wasip2 libc");
    assert!(host.log.borrow().iter().any(|c| c.starts_with("fetch ")));
    assert!(all_ready(&host));
}

#[test]
fn a_download_is_checked_against_its_pinned_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    fs::write(&file, b"abc").expect("write");
    // SHA-256("abc"), FIPS 180-2's first example.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    super::host::verify_sha256(&file, abc).expect("matches");
    super::host::verify_sha256(&file, &abc.to_ascii_uppercase()).expect("hex case does not matter");
    let err = format!("{:#}", super::host::verify_sha256(&file, &"0".repeat(64)).expect_err("mismatch"));
    assert!(err.contains(abc) && err.contains("expected 0000"), "{err}");
}
