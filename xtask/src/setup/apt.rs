//! Debian packages: which are installed (`dpkg-query`), and installing the missing ones.
//!
//! `apt-get` runs only when something is missing, and only as root; otherwise the error gives
//! the exact command to run.

use std::process::Command;

use anyhow::{Result, bail};

use super::{Env, Host, State, Step};

/// A set of Debian packages that must be installed.
#[derive(Debug)]
pub struct Packages {
    /// The progress-line name.
    pub name: &'static str,
    /// The packages.
    pub packages: &'static [&'static str],
}

impl Step for Packages {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, env: &Env<'_>) -> Result<State> {
        let missing = missing(env.host, self.packages)?;
        Ok(if missing.is_empty() {
            State::Ready(format!("all {} installed", self.packages.len()))
        } else {
            State::Missing(format!("{} not installed", missing.join(" ")))
        })
    }

    fn apply(&self, env: &Env<'_>) -> Result<String> {
        let missing = missing(env.host, self.packages)?;
        install(env.host, &missing)?;
        Ok(format!("installed {}", missing.join(" ")))
    }
}

/// The packages of `wanted` that are not installed.
pub fn missing(host: &dyn Host, wanted: &[&'static str]) -> Result<Vec<&'static str>> {
    let Some(dpkg_query) = host.which("dpkg-query") else {
        bail!(
            "dpkg-query not found: this is not a Debian system. Install {} with your package \
             manager, or give rustup's active toolchain the targets (`rustup target add \
             x86_64-unknown-none aarch64-unknown-none wasm32-wasip2 && rustup component add rust-src`)",
            wanted.join(" ")
        );
    };
    // Exit status 1 only means that some package is unknown to dpkg: it is then missing.
    let out =
        host.capture(Command::new(dpkg_query).args(["-W", "-f", "${Package} ${db:Status-Status}\\n"]).args(wanted))?;
    Ok(missing_from_listing(wanted, &String::from_utf8_lossy(&out.stdout)))
}

fn missing_from_listing(wanted: &[&'static str], listing: &str) -> Vec<&'static str> {
    let installed = |pkg: &str| {
        listing.lines().any(|l| {
            let mut words = l.split_whitespace();
            // dpkg-query shows multi-arch packages as `name:arch`.
            let name = words.next().map(|n| n.split(':').next().unwrap_or(n));
            name == Some(pkg) && words.next() == Some("installed")
        })
    };
    wanted.iter().copied().filter(|p| !installed(p)).collect()
}

/// The command that installs `packages`.
pub fn install_command(packages: &[&str]) -> String {
    format!("apt-get update && apt-get install -y --no-install-recommends {}", packages.join(" "))
}

/// Installs `packages` with apt-get, or explains what to run. apt's own lines (one or two per
/// package: fetched, unpacked, set up) are shown as it goes.
pub fn install(host: &dyn Host, packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let Some(apt_get) = host.which("apt-get") else {
        bail!("apt-get not found: install the Debian packages {} by other means", packages.join(" "));
    };
    if !host.is_root() {
        bail!("installing {} needs root; run: sudo sh -c '{}'", packages.join(" "), install_command(packages));
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(&apt_get);
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        host.stream(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_parsed() {
        let listing = "qemu-system-x86 installed\nlld-22 config-files\nlibc6:amd64 installed\n";
        assert_eq!(
            missing_from_listing(&["qemu-system-x86", "lld-22", "libc6", "wasi-libc"], listing),
            ["lld-22", "wasi-libc"]
        );
    }

    #[test]
    fn install_command_is_exact() {
        assert_eq!(
            install_command(&["qemu-system-x86", "python3-venv"]),
            "apt-get update && apt-get install -y --no-install-recommends qemu-system-x86 python3-venv"
        );
    }
}
