//! Building component crates (`components/`) for wasm32-wasip2.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::process;
use crate::toolchain::Toolchain;

#[derive(Debug, Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// The `.wasm` a cargo JSON message announces, with its crate's name.
fn wasm_artifact(line: &str) -> Option<(String, PathBuf)> {
    let msg: Message = serde_json::from_str(line).ok()?;
    let target = msg.target?;
    if msg.reason != "compiler-artifact" || !target.kind.iter().any(|k| k == "bin") {
        return None;
    }
    let wasm = msg.filenames.into_iter().find(|f| f.extension().is_some_and(|e| e == "wasm"))?;
    Some((target.name, wasm))
}

/// Builds `crates` and returns each one's `.wasm`.
pub fn build(root: &Path, toolchain: &Toolchain, crates: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    if crates.is_empty() {
        return Ok(BTreeMap::new());
    }
    eprintln!("xtask: building components {} for wasm32-wasip2", crates.join(", "));
    let start = Instant::now();
    let mut cmd = toolchain.components_build(root, crates);
    let mut child =
        cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    let stdout = child.stdout.take().context("cargo's stdout was not captured")?;
    let mut built = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        if let Some((name, wasm)) = wasm_artifact(&line.context("reading cargo's messages")?) {
            built.insert(name, wasm);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("building components failed ({status}): `{}`", process::shown(&cmd));
    }
    for c in crates {
        if !built.contains_key(c) {
            bail!("cargo built no `{c}.wasm`: is `{c}` a binary crate in components/?");
        }
    }
    eprintln!("xtask: components built in {:.1} s", start.elapsed().as_secs_f64());
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wasm_in_cargo_messages() {
        let line = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"hello"},"filenames":["/t/wasm32-wasip2/release/hello.wasm"],"fresh":true}"#;
        assert_eq!(wasm_artifact(line), Some(("hello".into(), PathBuf::from("/t/wasm32-wasip2/release/hello.wasm"))));
        let lib =
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"dep"},"filenames":["/t/libdep.rlib"]}"#;
        assert_eq!(wasm_artifact(lib), None);
        assert_eq!(wasm_artifact("not json"), None);
    }
}
