//! `cargo xtask setup`: installs what building and booting Mica needs, idempotently.
//!
//! Setup is a list of steps. Each step first checks (cheaply, without changing anything) and
//! only acts when something is missing, so a second run only checks and takes well under a
//! second. Which steps run depends on the toolchain way ([`Toolchain`]): with rustup's targets
//! only QEMU and wasm-tools are installed; otherwise Debian's `rustc-web` toolchain is installed
//! and wired up the way `-Zbuild-std` and `wasm32-wasip2` need (see [`debian`]).
//!
//! Other commands call [`ensure`]: the same checks, silent when everything is there, and a full
//! setup when not.

mod apt;
mod debian;
mod tools;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::toolchain::Toolchain;

/// What a step found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing to do; a short account of what is there.
    Ready(String),
    /// Something to install or fix; what.
    Missing(String),
}

/// One thing setup makes sure of.
trait Step {
    /// A short name for the progress line.
    fn name(&self) -> &'static str;
    /// Looks without changing anything.
    fn check(&self, ctx: &Ctx) -> Result<State>;
    /// Installs or fixes what `check` found missing; returns a short account. Fails with the
    /// exact command that would fix it when it cannot (not root, no apt-get, ...).
    fn apply(&self, ctx: &Ctx) -> Result<String>;
}

/// What steps need to know.
#[derive(Debug)]
pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// The toolchain way in use.
    pub toolchain: Toolchain,
    /// Whether this process is root.
    pub root_user: bool,
}

fn steps(toolchain: &Toolchain) -> Vec<Box<dyn Step>> {
    let mut steps: Vec<Box<dyn Step>> = Vec::new();
    if let Toolchain::Debian { .. } = toolchain {
        steps.extend(debian::steps());
    }
    steps.push(Box::new(tools::Qemu));
    steps.push(Box::new(tools::WasmTools));
    steps.push(Box::new(tools::PodTools));
    steps
}

/// Runs every step, one progress line each, installing what is missing.
pub fn run(root: &Path) -> Result<Toolchain> {
    let start = Instant::now();
    let ctx = context(root)?;
    line("toolchain", &ctx.toolchain.to_string());
    for step in steps(&ctx.toolchain) {
        match step.check(&ctx).with_context(|| format!("setup: checking {}", step.name()))? {
            State::Ready(detail) => line(step.name(), &detail),
            State::Missing(what) => {
                eprint!("setup: {:<22} {what}: installing ... ", step.name());
                // Progress is best effort; a closed stdout must not stop the install.
                let _ = std::io::stderr().flush();
                let t = Instant::now();
                match step.apply(&ctx) {
                    Ok(done) => eprintln!("{done} ({:.1} s)", t.elapsed().as_secs_f64()),
                    Err(err) => {
                        eprintln!("failed");
                        return Err(err.context(format!("setup: {}", step.name())));
                    }
                }
            }
        }
    }
    eprintln!("setup: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(ctx.toolchain)
}

/// Checks everything quietly; runs the full setup when anything is missing. Returns the
/// toolchain way for building.
pub fn ensure(root: &Path) -> Result<Toolchain> {
    let ctx = context(root)?;
    let mut missing = Vec::new();
    for step in steps(&ctx.toolchain) {
        if let State::Missing(what) = step.check(&ctx).with_context(|| format!("checking {}", step.name()))? {
            missing.push(format!("{}: {what}", step.name()));
        }
    }
    if missing.is_empty() {
        return Ok(ctx.toolchain);
    }
    eprintln!("xtask: setup is incomplete ({}); running `cargo xtask setup`", missing.join("; "));
    run(root)
}

fn context(root: &Path) -> Result<Ctx> {
    Ok(Ctx { root: root.to_owned(), toolchain: Toolchain::detect(root)?, root_user: crate::process::is_root() })
}

fn line(name: &str, detail: &str) {
    eprintln!("setup: {name:<22} {detail}");
}
