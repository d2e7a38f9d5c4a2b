//! Building component crates (`components/`) for wasm32-wasip2.
//!
//! A component crate is either a binary (an ordinary `std` program, `src/main.rs`) or a
//! `cdylib` (typically `#![no_std]` with wit-bindgen exporting `wasi:cli/run`); cargo names the
//! `.wasm` of either in its JSON messages. All the crates of a system build in one cargo run.
//! Where the standard library is built from source (Debian's toolchain, `-Zbuild-std`), that run
//! builds what the crates ask for together: `std,panic_abort` by default, or the list a crate gives
//! in its Cargo.toml:
//!
//! ```toml
//! [package.metadata.mica]
//! build-std = ["core", "alloc"]   # a #![no_std] component: no std is built for it
//! ```
//!
//! A `#![no_std]` crate links only `core` and `alloc` even when `std` is built in the same run
//! for another component, so mixing them in one system is fine.
//!
//! A crate that compiles C for wasm (through the `cc` crate, as `littlefs2-sys` does) says so:
//!
//! ```toml
//! [package.metadata.mica]
//! c = true   # the build needs clang and wasi-libc: installed first if missing
//! ```
//!
//! Every components build points `cc` and bindgen at Debian's clang with wasi-libc's headers
//! ([`crate::c_component::cc_env`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cargo_json::{Message, Target};
use crate::toolchain::Toolchain;

/// The `.wasm` a cargo artifact message announces (a `bin` or `cdylib` target), with its target's
/// name (for a `cdylib`, the crate's name with `-` as `_`).
fn wasm_artifact((target, msg): (Target, Message)) -> Option<(String, PathBuf)> {
    if !target.kind.iter().any(|k| k == "bin" || k == "cdylib") {
        return None;
    }
    let wasm = msg.filenames.into_iter().find(|f| f.extension().is_some_and(|e| e == "wasm"))?;
    Some((target.name, wasm))
}

/// What a crate needs built when the standard library is built from source (`-Zbuild-std`), unless
/// it says otherwise.
const DEFAULT_BUILD_STD: [&str; 2] = ["std", "panic_abort"];

/// The standard library crates the component crate whose Cargo.toml is `text` (read from `path`)
/// needs built: `[package.metadata.mica] build-std`, or [`DEFAULT_BUILD_STD`].
fn build_std_of(text: &str, path: &Path) -> Result<Vec<String>> {
    let Some(list) = mica_metadata(text, path)?.and_then(|m| m.get("build-std").cloned()) else {
        return Ok(DEFAULT_BUILD_STD.map(String::from).to_vec());
    };
    let expected = "a list of standard library crates such as [\"core\", \"alloc\"]";
    let list = list
        .as_array()
        .with_context(|| format!("{}: package.metadata.mica.build-std: expected {expected}", path.display()))?;
    let names: Vec<String> = list
        .iter()
        .map(|v| v.as_str().filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')))
        .map(|s| s.map(str::to_owned))
        .collect::<Option<_>>()
        .with_context(|| format!("{}: package.metadata.mica.build-std: expected {expected}", path.display()))?;
    if names.is_empty() {
        bail!("{}: package.metadata.mica.build-std: expected {expected}, not an empty list", path.display());
    }
    Ok(names)
}

/// The `[package.metadata.mica]` table of the Cargo.toml `text` (read from `path`), if it has one.
fn mica_metadata(text: &str, path: &Path) -> Result<Option<toml::Value>> {
    let table: toml::Table = toml::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(table.get("package").and_then(|p| p.get("metadata")).and_then(|m| m.get("mica")).cloned())
}

/// Whether the crate whose Cargo.toml is `text` compiles C: `[package.metadata.mica] c = true`.
fn needs_c(text: &str, path: &Path) -> Result<bool> {
    match mica_metadata(text, path)?.and_then(|m| m.get("c").cloned()) {
        None => Ok(false),
        Some(toml::Value::Boolean(c)) => Ok(c),
        Some(other) => bail!("{}: package.metadata.mica.c: expected true or false, not {other}", path.display()),
    }
}

/// What one cargo run building `crates` (in `components_dir`) needs: the standard library
/// crates it builds from source (everything any of them asks for, in order, each once), and
/// whether any compiles C.
fn needs(components_dir: &Path, crates: &[String]) -> Result<(Vec<String>, bool)> {
    let mut all: Vec<String> = Vec::new();
    let mut c_sources = false;
    for c in crates {
        let dir = crate::manifest::crate_dir(components_dir, c).unwrap_or_else(|| components_dir.join(c));
        let path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for name in build_std_of(&text, &path)? {
            if !all.contains(&name) {
                all.push(name);
            }
        }
        c_sources |= needs_c(&text, &path)?;
    }
    Ok((all, c_sources))
}

/// Builds `crates` and returns each one's `.wasm`.
pub fn build(root: &Path, toolchain: &Toolchain, crates: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    if crates.is_empty() {
        return Ok(BTreeMap::new());
    }
    let release = crate::toolchain::target_dir(root).join(crate::toolchain::COMPONENT_TARGET).join("release");
    let first = !release.exists();
    let expect =
        if first { " (the first build compiles the standard library for wasm too: a few minutes)" } else { "" };
    eprintln!("xtask: building components {} for wasm32-wasip2{expect}", crates.join(", "));
    let start = Instant::now();
    let (build_std, c_sources) = needs(&root.join("components"), crates)?;
    if c_sources {
        crate::c_component::ensure_packages().context("building components that compile C")?;
    }
    let mut cmd = toolchain.components_build(root, crates, &build_std);
    cmd.envs(crate::c_component::cc_env());
    let wasms: BTreeMap<String, PathBuf> =
        crate::cargo_json::build(&mut cmd, "building components")?.into_iter().filter_map(wasm_artifact).collect();
    let mut built: BTreeMap<String, PathBuf> = BTreeMap::new();
    for c in crates {
        // A bin target is named like its crate; a cdylib like its crate with `-` as `_`.
        let Some(wasm) = wasms.get(c).or_else(|| wasms.get(&c.replace('-', "_"))) else {
            bail!("cargo built no `{c}.wasm`: is `{c}` a binary or cdylib crate in components/?");
        };
        built.insert(c.clone(), wasm.clone());
    }
    eprintln!("xtask: components built in {:.1} s", start.elapsed().as_secs_f64());
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wasm_in_cargo_messages() {
        let wasm = |line: &str| crate::cargo_json::artifact(line).and_then(wasm_artifact);
        let line = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"hello"},"filenames":["/t/wasm32-wasip2/release/hello.wasm"],"fresh":true}"#;
        assert_eq!(wasm(line), Some(("hello".into(), PathBuf::from("/t/wasm32-wasip2/release/hello.wasm"))));
        let lib =
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"dep"},"filenames":["/t/libdep.rlib"]}"#;
        assert_eq!(wasm(lib), None);
        assert_eq!(wasm("not json"), None);
        let cdylib = r#"{"reason":"compiler-artifact","target":{"kind":["cdylib"],"name":"no_std_thing"},"filenames":["/t/wasm32-wasip2/release/no_std_thing.wasm"]}"#;
        assert_eq!(
            wasm(cdylib),
            Some(("no_std_thing".into(), PathBuf::from("/t/wasm32-wasip2/release/no_std_thing.wasm")))
        );
    }

    #[test]
    fn build_std_comes_from_crate_metadata() {
        let path = Path::new("c/Cargo.toml");
        let plain = "[package]\nname = \"hello\"\n";
        assert_eq!(build_std_of(plain, path).expect("default"), ["std", "panic_abort"]);
        let other = "[package]\nname = \"x\"\n[package.metadata.docs]\nall = true\n";
        assert_eq!(build_std_of(other, path).expect("default"), ["std", "panic_abort"]);
        let no_std = "[package]\nname = \"logger\"\n[package.metadata.mica]\nbuild-std = [\"core\", \"alloc\"]\n";
        assert_eq!(build_std_of(no_std, path).expect("listed"), ["core", "alloc"]);
        for bad in ["\"core\"", "[]", "[\"core,std\"]", "[1]"] {
            let text = format!("[package]\nname = \"x\"\n[package.metadata.mica]\nbuild-std = {bad}\n");
            let e = format!("{:#}", build_std_of(&text, path).expect_err(bad));
            assert!(e.contains("c/Cargo.toml: package.metadata.mica.build-std: expected"), "{e}");
        }
    }

    #[test]
    fn one_run_builds_what_every_crate_asks_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            std::fs::create_dir_all(dir.path().join(name)).expect("mkdir");
            std::fs::write(dir.path().join(name).join("Cargo.toml"), text).expect("write");
        };
        write("hello", "[package]\nname = \"hello\"\n");
        write("logger", "[package]\nname = \"logger\"\n[package.metadata.mica]\nbuild-std = [\"core\", \"alloc\"]\n");
        write("fs", "[package]\nname = \"fs\"\n[package.metadata.mica]\nc = true\n");
        write("bad", "[package]\nname = \"bad\"\n[package.metadata.mica]\nc = \"yes\"\n");
        let crates = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let std_only = |v: Vec<&str>| (v.into_iter().map(String::from).collect::<Vec<_>>(), false);
        assert_eq!(needs(dir.path(), &crates(&["logger"])).expect("read"), std_only(vec!["core", "alloc"]));
        assert_eq!(
            needs(dir.path(), &crates(&["hello", "logger"])).expect("read"),
            std_only(vec!["std", "panic_abort", "core", "alloc"])
        );
        let (_, c_sources) = needs(dir.path(), &crates(&["hello", "fs"])).expect("read");
        assert!(c_sources, "fs compiles C");
        let e = format!("{:#}", needs(dir.path(), &crates(&["bad"])).expect_err("c = \"yes\""));
        assert!(e.contains("package.metadata.mica.c: expected true or false"), "{e}");
        assert!(needs(dir.path(), &crates(&["missing"])).is_err());
    }
}
