//! Which Rust toolchain builds the bare-metal kernel, and the cargo command that does it.
//!
//! Two ways, chosen per machine:
//!
//! - **rustup**: the active rustup toolchain has the targets `x86_64-unknown-none` and
//!   `wasm32-wasip2` and the `rust-src` component. The kernel builds with plain
//!   `cargo build --target x86_64-unknown-none`.
//! - **Debian**: otherwise (rustup on these machines cannot add targets). Debian's `rustc-web`
//!   with its own library source builds `core`/`alloc` from source:
//!   `RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build -Zbuild-std=...`. The inner
//!   cargo must not see what the outer `cargo xtask` (a rustup proxy) put in the environment, or
//!   it would pick rustup's compiler against Debian's library source.

use std::fmt;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use mica_launch::GuestArch;

use crate::setup::Host;

/// Every bare-metal target the kernel builds for (one per [`GuestArch`]).
pub const KERNEL_TARGETS: [&str; 2] = [GuestArch::X86_64.kernel_target(), GuestArch::Aarch64.kernel_target()];
/// The target components build for.
pub const COMPONENT_TARGET: &str = "wasm32-wasip2";
/// Debian's compiler and cargo.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's cargo.
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's clippy (`rust-web-clippy`), run directly: `cargo clippy` would find rustup's
/// `cargo-clippy` in `~/.cargo/bin` first, whose driver has no library source to build `core`.
pub const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
/// The name under which setup links Debian's toolchain into rustup (`cargo +debian-web`).
pub const DEBIAN_TOOLCHAIN_NAME: &str = "debian-web";

/// How the kernel gets built on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// The active rustup toolchain has everything.
    Rustup,
    /// Debian's `rustc-web` with `-Zbuild-std`; why rustup was not enough.
    Debian {
        /// What rustup lacked (or that there is no rustup).
        why: String,
    },
}

impl Toolchain {
    /// Asks rustup (in `root`, so directory overrides apply) whether its active toolchain has
    /// the targets and `rust-src`.
    pub fn detect(host: &dyn Host, root: &Path) -> Result<Toolchain> {
        let Some(rustup) = host.which("rustup") else {
            return Ok(Toolchain::Debian { why: "rustup is not installed".to_owned() });
        };
        let query = |args: &[&str]| -> Result<Option<String>> {
            let out = host.capture(Command::new(&rustup).args(args).current_dir(root))?;
            // A linked toolchain (such as debian-web itself) has no target list: not rustup's way.
            Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
        };
        let targets = query(&["target", "list", "--installed"])?.unwrap_or_default();
        let components = query(&["component", "list", "--installed"])?.unwrap_or_default();
        let missing = missing_pieces(&targets, &components);
        Ok(if missing.is_empty() {
            Toolchain::Rustup
        } else {
            Toolchain::Debian { why: format!("rustup's active toolchain lacks {}", missing.join(", ")) }
        })
    }

    /// The command that builds the kernel, run from the workspace root, with JSON messages on
    /// stdout so the caller can find the artifact.
    pub fn kernel_build(&self, root: &Path, arch: GuestArch, release: bool) -> Command {
        let mut cmd;
        match self {
            Toolchain::Rustup => {
                cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                clear_cargo_run_env(&mut cmd);
                cmd.args(["build", "-p", "mica-kernel", "--target", arch.kernel_target()]);
            }
            Toolchain::Debian { .. } => {
                cmd = Command::new(DEBIAN_CARGO);
                clear_cargo_run_env(&mut cmd);
                clear_toolchain_env(&mut cmd);
                cmd.env("RUSTC_BOOTSTRAP", "1").env("RUSTC", DEBIAN_RUSTC);
                cmd.args(["build", "-p", "mica-kernel", "--target", arch.kernel_target()]);
                cmd.args(["-Zbuild-std=core,alloc,compiler_builtins", "-Zbuild-std-features=compiler-builtins-mem"]);
            }
        }
        if release {
            cmd.arg("--release");
        }
        cmd.arg("--message-format=json-render-diagnostics").current_dir(root);
        cmd
    }
}

impl Toolchain {
    /// The command that runs clippy with `-D warnings` on the bare-metal kernel for `arch` (its
    /// code under `arch/` builds only for bare metal, so the host's clippy never sees it), in
    /// its own target directory.
    pub fn kernel_clippy(&self, root: &Path, arch: GuestArch) -> Command {
        let mut cmd;
        match self {
            Toolchain::Rustup => {
                cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                clear_cargo_run_env(&mut cmd);
                cmd.args(["clippy", "-p", "mica-kernel", "--target", arch.kernel_target()]);
            }
            Toolchain::Debian { .. } => {
                cmd = Command::new(DEBIAN_CARGO_CLIPPY);
                clear_cargo_run_env(&mut cmd);
                clear_toolchain_env(&mut cmd);
                cmd.env("RUSTC_BOOTSTRAP", "1").env("RUSTC", DEBIAN_RUSTC).env("CARGO", DEBIAN_CARGO);
                cmd.args(["clippy", "-p", "mica-kernel", "--target", arch.kernel_target()]);
                cmd.args(["-Zbuild-std=core,alloc,compiler_builtins", "-Zbuild-std-features=compiler-builtins-mem"]);
            }
        }
        cmd.env("CARGO_TARGET_DIR", target_dir(root).join("clippy-kernel"));
        cmd.args(["--", "-D", "warnings"]).current_dir(root);
        cmd
    }

    /// The command that builds the component crates `crates` (in `root/components`, their own
    /// workspace) for wasm32-wasip2 in release mode, into the shared target directory, with JSON
    /// messages on stdout. `build_std` is what the crates need of the standard library (see
    /// `components`): built from source with Debian's toolchain, prebuilt with rustup's.
    pub fn components_build(&self, root: &Path, crates: &[String], build_std: &[String]) -> Command {
        let mut cmd;
        match self {
            Toolchain::Rustup => {
                cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                clear_cargo_run_env(&mut cmd);
                cmd.args(["build", "--target", COMPONENT_TARGET]);
            }
            Toolchain::Debian { .. } => {
                cmd = Command::new(DEBIAN_CARGO);
                clear_cargo_run_env(&mut cmd);
                clear_toolchain_env(&mut cmd);
                cmd.env("RUSTC_BOOTSTRAP", "1").env("RUSTC", DEBIAN_RUSTC);
                cmd.args(["build", "--target", COMPONENT_TARGET]);
                cmd.arg(format!("-Zbuild-std={}", build_std.join(",")));
            }
        }
        cmd.env("CARGO_TARGET_DIR", target_dir(root));
        for c in crates {
            cmd.args(["-p", c]);
        }
        cmd.args(["--release", "--message-format=json-render-diagnostics"]).current_dir(root.join("components"));
        cmd
    }
}

impl Toolchain {
    /// The start of a `cargo build` of workspace binaries with the standard library for
    /// `target`, a Linux target other than the host's (a Linux guest's static init): rustup's
    /// prebuilt library (`rustup target add TARGET`), or Debian's built from its source. The
    /// caller adds the packages, the profile and the linker.
    pub fn foreign_std_build(&self, root: &Path, target: &str) -> Command {
        let mut cmd;
        match self {
            Toolchain::Rustup => {
                cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                clear_cargo_run_env(&mut cmd);
                cmd.args(["build", "--target", target]);
            }
            Toolchain::Debian { .. } => {
                cmd = Command::new(DEBIAN_CARGO);
                clear_cargo_run_env(&mut cmd);
                clear_toolchain_env(&mut cmd);
                cmd.env("RUSTC_BOOTSTRAP", "1").env("RUSTC", DEBIAN_RUSTC);
                cmd.args(["build", "--target", target, "-Zbuild-std=std,panic_abort"]);
            }
        }
        cmd.current_dir(root);
        cmd
    }
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Toolchain::Rustup => {
                write!(f, "rustup's active toolchain ({}, {COMPONENT_TARGET}, rust-src)", KERNEL_TARGETS.join(", "))
            }
            Toolchain::Debian { why } => write!(f, "Debian's rustc-web with -Zbuild-std ({why})"),
        }
    }
}

/// What the rustup listings lack for the rustup way.
fn missing_pieces(targets: &str, components: &str) -> Vec<&'static str> {
    let has_target = |t: &str| targets.lines().any(|l| l.trim() == t);
    let has_src = components.lines().any(|l| l.trim().starts_with("rust-src"));
    let mut missing = Vec::new();
    for target in KERNEL_TARGETS.into_iter().chain([COMPONENT_TARGET]) {
        if !has_target(target) {
            missing.push(target);
        }
    }
    if !has_src {
        missing.push("rust-src");
    }
    missing
}

/// The target directory builds use: `$CARGO_TARGET_DIR`, or `target/` in the workspace.
pub fn target_dir(root: &Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from)
}

/// Removes what `cargo run` sets for the program it runs (package metadata, `CARGO`), so a
/// nested cargo sees only the user's own settings.
pub fn clear_cargo_run_env(cmd: &mut Command) {
    const USER_SETTINGS: [&str; 9] = [
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_TERM_",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_BUILD_JOBS",
        "CARGO_INCREMENTAL",
    ];
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO") && !USER_SETTINGS.iter().any(|keep| key.starts_with(keep)) {
            cmd.env_remove(key);
        }
    }
}

/// Removes what would make Debian's cargo use another compiler or other flags: rustup's
/// toolchain choice, compiler wrappers, and `RUSTFLAGS` (which would replace the kernel's
/// `-C relocation-model=static` from `.cargo/config.toml`).
fn clear_toolchain_env(cmd: &mut Command) {
    for key in [
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTC_BOOTSTRAP",
    ] {
        cmd.env_remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustup_listings_decide_the_way() {
        let targets = "x86_64-unknown-linux-gnu\nx86_64-unknown-none\naarch64-unknown-none\nwasm32-wasip2\n";
        let components = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(missing_pieces(targets, components).is_empty());
        assert_eq!(
            missing_pieces("x86_64-unknown-linux-gnu\n", "rustc-x86_64-unknown-linux-gnu\n"),
            ["x86_64-unknown-none", "aarch64-unknown-none", "wasm32-wasip2", "rust-src"]
        );
        // Without the aarch64 target, rustup's way cannot build every kernel.
        let x86_only = "x86_64-unknown-none\nwasm32-wasip2\n";
        assert_eq!(missing_pieces(x86_only, components), ["aarch64-unknown-none"]);
        assert_eq!(missing_pieces(targets, ""), ["rust-src"]);
    }

    #[test]
    fn debian_build_uses_debian_rustc_and_build_std() {
        let debian = Toolchain::Debian { why: "test".into() };
        let cmd = debian.kernel_build(Path::new("/ws"), GuestArch::X86_64, true);
        assert_eq!(cmd.get_program(), DEBIAN_CARGO);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&"-Zbuild-std=core,alloc,compiler_builtins".to_owned()), "{args:?}");
        assert!(args.contains(&"--release".to_owned()));
        assert!(args.windows(2).any(|w| w == ["--target", "x86_64-unknown-none"]), "{args:?}");
        let arm = debian.kernel_build(Path::new("/ws"), GuestArch::Aarch64, false);
        let arm_args: Vec<_> = arm.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(arm_args.windows(2).any(|w| w == ["--target", "aarch64-unknown-none"]), "{arm_args:?}");
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&("RUSTC".as_ref(), Some(DEBIAN_RUSTC.as_ref()))));
        assert!(envs.contains(&("RUSTC_BOOTSTRAP".as_ref(), Some("1".as_ref()))));
        assert!(envs.contains(&("RUSTUP_TOOLCHAIN".as_ref(), None)), "rustup's choice is removed");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/ws")));
    }

    #[test]
    fn foreign_linux_builds_take_std_from_the_toolchain_way() {
        let debian = Toolchain::Debian { why: "test".into() };
        let cmd = debian.foreign_std_build(Path::new("/ws"), "aarch64-unknown-linux-gnu");
        assert_eq!(cmd.get_program(), DEBIAN_CARGO);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w == ["--target", "aarch64-unknown-linux-gnu"]), "{args:?}");
        assert!(args.contains(&"-Zbuild-std=std,panic_abort".to_owned()), "{args:?}");
        assert!(cmd.get_envs().any(|e| e == ("RUSTC_BOOTSTRAP".as_ref(), Some("1".as_ref()))));
        let cmd = Toolchain::Rustup.foreign_std_build(Path::new("/ws"), "aarch64-unknown-linux-gnu");
        assert!(!cmd.get_args().any(|a| a.to_string_lossy().starts_with("-Z")), "rustup's std is prebuilt");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/ws")));
    }

    #[test]
    fn components_build_std_follows_the_crates() {
        let debian = Toolchain::Debian { why: "test".into() };
        let crates = ["logger".to_owned()];
        let cmd = debian.components_build(Path::new("/ws"), &crates, &["core".into(), "alloc".into()]);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&"-Zbuild-std=core,alloc".to_owned()), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["-p", "logger"]), "{args:?}");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/ws/components")));
        let cmd = Toolchain::Rustup.components_build(Path::new("/ws"), &crates, &["core".into()]);
        assert!(!cmd.get_args().any(|a| a.to_string_lossy().starts_with("-Z")), "rustup's sysroot is prebuilt");
    }

    #[test]
    fn kernel_clippy_runs_debians_clippy_directly() {
        let debian = Toolchain::Debian { why: "test".into() };
        let cmd = debian.kernel_clippy(Path::new("/ws"), GuestArch::Aarch64);
        assert_eq!(cmd.get_program(), DEBIAN_CARGO_CLIPPY);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w == ["--target", "aarch64-unknown-none"]), "{args:?}");
        assert!(args.ends_with(&["--".to_owned(), "-D".to_owned(), "warnings".to_owned()]), "{args:?}");
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&("CARGO".as_ref(), Some(DEBIAN_CARGO.as_ref()))), "{envs:?}");
        let rustup = Toolchain::Rustup.kernel_clippy(Path::new("/ws"), GuestArch::X86_64);
        let args: Vec<_> = rustup.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[..5], ["clippy", "-p", "mica-kernel", "--target", "x86_64-unknown-none"]);
    }

    #[test]
    fn rustup_build_is_plain() {
        let cmd = Toolchain::Rustup.kernel_build(Path::new("/ws"), GuestArch::X86_64, false);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!args.iter().any(|a| a.starts_with("-Z")), "{args:?}");
        assert!(!args.contains(&"--release".to_owned()));
        assert!(!cmd.get_envs().any(|(k, _)| k == "RUSTC_BOOTSTRAP"));
    }
}
