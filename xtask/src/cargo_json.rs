//! Running cargo builds, and the parts of cargo's `--message-format=json` output that xtask
//! reads: which artifacts a build produced.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::process;

/// One JSON message from cargo.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `compiler-artifact`, `build-finished`, ...
    pub reason: String,
    /// The target an artifact belongs to.
    #[serde(default)]
    pub target: Option<Target>,
    /// The executable, for a binary target.
    #[serde(default)]
    pub executable: Option<PathBuf>,
    /// Every file the artifact consists of.
    #[serde(default)]
    pub filenames: Vec<PathBuf>,
}

/// A cargo target.
#[derive(Debug, Deserialize)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// `bin`, `lib`, `cdylib`, ...
    pub kind: Vec<String>,
}

/// The artifact a line of cargo's output announces: `(target, message)` for a
/// `compiler-artifact` message, `None` for anything else.
pub fn artifact(line: &str) -> Option<(Target, Message)> {
    let mut msg: Message = serde_json::from_str(line).ok()?;
    if msg.reason != "compiler-artifact" {
        return None;
    }
    let target = msg.target.take()?;
    Some((target, msg))
}

/// Runs the cargo build `cmd` (which must ask for `--message-format=json-render-diagnostics`)
/// and returns every artifact it announced. Cargo's own lines (what it compiles, warnings,
/// errors) are passed on to stderr as they come, so a long build shows its progress even when
/// two builds run at once; cargo's "Blocking waiting for file lock" lines, which only say that
/// the other build holds a lock for a moment, are left out. Fails, naming the command, when the
/// build fails.
pub fn build(cmd: &mut Command, what: &str) -> Result<Vec<(Target, Message)>> {
    if std::io::stderr().is_terminal() {
        // Piped, cargo would drop its colours; it shows plain lines instead of a progress bar,
        // which is what two builds sharing one terminal need.
        cmd.arg("--color=always");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", process::shown(cmd)))?;
    let stdout = child.stdout.take().context("cargo's stdout was not captured")?;
    let stderr = child.stderr.take().context("cargo's stderr was not captured")?;
    let forward = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !line.contains("Blocking waiting for file lock") {
                eprintln!("{line}");
            }
        }
    });
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(artifact) = artifact(&line.context("reading cargo's messages")?) {
            artifacts.push(artifact);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    let _ = forward.join();
    if !status.success() {
        bail!("{what} failed ({status}): `{}`", process::shown(cmd));
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_artifacts_in_cargo_messages() {
        let kernel = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"mica-kernel","src_path":"/w/kernel/src/main.rs"},"executable":"/w/target/x86_64-unknown-none/debug/mica-kernel","fresh":true}"#;
        let (target, msg) = artifact(kernel).expect("an artifact");
        assert_eq!((target.name.as_str(), target.kind.as_slice()), ("mica-kernel", ["bin".to_owned()].as_slice()));
        assert_eq!(msg.executable, Some(PathBuf::from("/w/target/x86_64-unknown-none/debug/mica-kernel")));
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"mica_kernel"},"executable":null}"#;
        assert_eq!(artifact(lib).map(|(_, m)| m.executable), Some(None));
        assert!(artifact(r#"{"reason":"build-finished","success":true}"#).is_none());
        assert!(artifact("not json").is_none());
    }
}
