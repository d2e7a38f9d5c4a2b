//! The parts of cargo's `--message-format=json` output that xtask reads: which artifacts a build
//! produced.

use std::path::PathBuf;

use serde::Deserialize;

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
