//! The kernel command line, checked on the host before booting.
//!
//! The kernel refuses a `log=` value it does not know (and exits "failed"); a host tool should
//! catch the typo before it spends a boot on it. Only what the host can know for sure is checked
//! here: the log levels and that each word stays one word. Other keys (`test=`, ...) belong to the
//! kernel, which reports bad values itself.

use crate::LaunchError;

/// The levels the kernel accepts for `log=`, most quiet first.
pub const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `log=` value.
pub fn check_log_level(value: &str) -> Result<(), LaunchError> {
    if LOG_LEVELS.contains(&value) { Ok(()) } else { Err(LaunchError::InvalidLogLevel { value: value.to_owned() }) }
}

/// A kernel command line built from checked words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    words: Vec<String>,
}

impl KernelCmdline {
    /// An empty command line.
    pub fn new() -> KernelCmdline {
        KernelCmdline::default()
    }

    /// Appends `key=value`, checking the value when the key is `log`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, LaunchError> {
        self.push(&format!("{key}={value}"))
    }

    /// Appends one word (`key=value`, or a bare flag).
    pub fn push(&mut self, word: &str) -> Result<&mut Self, LaunchError> {
        let invalid = |why| LaunchError::InvalidCmdlineWord { word: word.to_owned(), why };
        if word.is_empty() {
            return Err(invalid("it is empty"));
        }
        if word.chars().any(char::is_whitespace) {
            return Err(invalid("the kernel splits its command line at whitespace"));
        }
        if word.starts_with('=') {
            return Err(invalid("it has no key before `=`"));
        }
        if let Some(level) = word.strip_prefix("log=") {
            check_log_level(level)?;
        }
        self.words.push(word.to_owned());
        Ok(self)
    }

    /// The value of the last `key=` word, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words.iter().rev().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// The command line as QEMU's `-append` takes it.
    pub fn as_string(&self) -> String {
        self.words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_checked() {
        for level in LOG_LEVELS {
            check_log_level(level).expect("known level");
        }
        let err = check_log_level("loud").expect_err("unknown level");
        assert_eq!(err.to_string(), "invalid log level `loud`: expected one of off, error, warn, info, debug, trace");
        assert!(check_log_level("INFO").is_err(), "levels are lowercase, as the kernel reads them");
    }

    #[test]
    fn words_are_joined_and_checked() {
        let mut line = KernelCmdline::new();
        line.set("log", "debug").expect("ok").push("test=heap").expect("ok");
        assert_eq!(line.as_string(), "log=debug test=heap");
        assert_eq!(line.get("test"), Some("heap"));
        assert_eq!(line.get("tes"), None);

        assert!(line.push("log=loud").is_err());
        assert!(line.push("a b").is_err());
        assert!(line.push("").is_err());
        assert!(line.push("=x").is_err());
        assert_eq!(line.as_string(), "log=debug test=heap", "refused words are not added");
    }
}
