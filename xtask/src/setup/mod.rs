//! `cargo xtask setup`: installs what building and booting Mica needs, idempotently.
//!
//! Setup is a list of steps, in order. Each step first checks (cheaply, without changing
//! anything) and only acts when something is missing, so a second run only checks and takes well
//! under a second. Which steps run depends on the toolchain way ([`Toolchain`]): with rustup's
//! targets only QEMU and the tools are installed; otherwise Debian's `rustc-web` toolchain is
//! installed and wired up the way `-Zbuild-std` and `wasm32-wasip2` need (see [`debian`]).
//!
//! Other commands call [`ensure`]: the same checks in the same order, silent when everything is
//! there. At the first step that finds something missing it runs the full setup, so a check that
//! needs an earlier step's install (the library source check runs Debian's `rustc`) never runs
//! before that install on a fresh machine. Steps see the machine only through a [`Host`], so the
//! fresh-machine path is tested against a fake one (see `tests`).

pub(crate) mod apt;
pub(crate) mod debian;
mod host;
mod tools;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

pub use host::{Host, RealHost};

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
    /// Looks without changing anything. Whatever an earlier step installs may be absent here
    /// (that step's check then said `Missing`); a step reports that as `Missing`, not an error.
    fn check(&self, env: &Env<'_>) -> Result<State>;
    /// Installs or fixes what `check` found missing; returns a short account. Fails with the
    /// exact command that would fix it when it cannot (not root, no apt-get, ...).
    fn apply(&self, env: &Env<'_>) -> Result<String>;
}

/// What steps work with: the machine, the workspace and the toolchain way.
pub struct Env<'a> {
    /// The machine.
    pub host: &'a dyn Host,
    /// The workspace root.
    pub root: PathBuf,
    /// The toolchain way in use.
    pub toolchain: Toolchain,
}

impl Env<'_> {
    /// Where the absolute system path `path` is on this host.
    fn path(&self, path: &str) -> PathBuf {
        self.host.path(path)
    }
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
    run_on(&RealHost, root)
}

/// [`run`] on `host`.
pub fn run_on(host: &dyn Host, root: &Path) -> Result<Toolchain> {
    let env = env(host, root)?;
    run_steps(&env)?;
    Ok(env.toolchain)
}

fn run_steps(env: &Env<'_>) -> Result<()> {
    let start = Instant::now();
    line("toolchain", &env.toolchain.to_string());
    for step in steps(&env.toolchain) {
        match step.check(env).with_context(|| format!("setup: checking {}", step.name()))? {
            State::Ready(detail) => line(step.name(), &detail),
            State::Missing(what) => {
                eprintln!("setup: {:<22} {what}: installing ...", step.name());
                // Progress is best effort; a closed stderr must not stop the install.
                let _ = std::io::stderr().flush();
                let t = Instant::now();
                match step.apply(env) {
                    Ok(done) => {
                        eprintln!("setup: {:<22} {done} ({:.1} s)", step.name(), t.elapsed().as_secs_f64())
                    }
                    Err(err) => {
                        eprintln!("setup: {:<22} failed", step.name());
                        return Err(err.context(format!("setup: {}", step.name())));
                    }
                }
            }
        }
    }
    eprintln!("setup: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Checks quietly, step by step; at the first step that finds something missing, runs the full
/// setup. Returns the toolchain way for building.
pub fn ensure(root: &Path) -> Result<Toolchain> {
    ensure_on(&RealHost, root)
}

/// [`ensure`] on `host`.
pub fn ensure_on(host: &dyn Host, root: &Path) -> Result<Toolchain> {
    let env = env(host, root)?;
    for step in steps(&env.toolchain) {
        let state = step.check(&env).with_context(|| format!("setup: checking {}", step.name()))?;
        if let State::Missing(what) = state {
            eprintln!("xtask: setup is incomplete ({}: {what}); running `cargo xtask setup`", step.name());
            run_steps(&env)?;
            return Ok(env.toolchain);
        }
    }
    Ok(env.toolchain)
}

fn env<'a>(host: &'a dyn Host, root: &Path) -> Result<Env<'a>> {
    Ok(Env { host, root: root.to_owned(), toolchain: Toolchain::detect(host, root)? })
}

fn line(name: &str, detail: &str) {
    eprintln!("setup: {name:<22} {detail}");
}
