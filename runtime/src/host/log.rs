//! `mica:kernel/log`: a component's log records, each one console line with its name and level.
//!
//! The runtime makes every record one bounded line (control characters such as line breaks are
//! escaped, so a component cannot start a console line of its own; messages past
//! [`MAX_MESSAGE_BYTES`] are cut short and say so); the [`Platform`](crate::platform::Platform)
//! prints it, or drops it when the level is below its log level.

use alloc::string::String;
use core::fmt::Write;

use super::InstanceState;
use super::mica::kernel::log::{Host, Level};

/// The longest message printed, in bytes of UTF-8 (after escaping); the rest is left out.
pub const MAX_MESSAGE_BYTES: usize = 1024;

impl From<Level> for ::log::Level {
    fn from(level: Level) -> ::log::Level {
        match level {
            Level::Error => ::log::Level::Error,
            Level::Warn => ::log::Level::Warn,
            Level::Info => ::log::Level::Info,
            Level::Debug => ::log::Level::Debug,
            Level::Trace => ::log::Level::Trace,
        }
    }
}

/// `message` as one console line of at most [`MAX_MESSAGE_BYTES`] (plus a note that says how
/// long it was when it had to be cut): control characters are escaped (`\n`, `\u{1b}`).
pub fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES));
    let mut escaped = String::new();
    for c in message.chars() {
        escaped.clear();
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
        if line.len() + escaped.len() > MAX_MESSAGE_BYTES {
            // Writing to a String cannot fail.
            let _ = write!(line, " [truncated: {} bytes in all]", message.len());
            break;
        }
        line.push_str(&escaped);
    }
    line
}

impl Host for InstanceState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.platform.component_log(&self.name, level.into(), &one_line(&message));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use std::sync::Mutex;

    use wasmtime::component::ResourceTable;

    use super::*;
    use crate::host::LineBuffer;
    use crate::limits::Limits;
    use crate::platform::{NoEntropySource, OutputKind, Platform};

    #[test]
    fn short_messages_pass_unchanged() {
        assert_eq!(one_line("hello, Mica ✓"), "hello, Mica ✓");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn control_characters_cannot_start_a_line() {
        assert_eq!(one_line("a\nmica: forged\r\t\u{1b}[31m"), "a\\nmica: forged\\r\\t\\u{1b}[31m");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary_and_say_so() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let line = one_line(&long);
        let (kept, note) = line.split_at(line.find(" [truncated").expect("a note"));
        assert_eq!(kept, "é".repeat(MAX_MESSAGE_BYTES / 2));
        assert_eq!(note, format!(" [truncated: {} bytes in all]", 2 * MAX_MESSAGE_BYTES));
        let exact = "x".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(one_line(&exact), exact, "a message of exactly the limit is whole");
        let escapes = "\n".repeat(MAX_MESSAGE_BYTES);
        assert!(one_line(&escapes).starts_with(&"\\n".repeat(MAX_MESSAGE_BYTES / 2)));
    }

    /// Records what it is asked to log.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(String, ::log::Level, String)>>);

    impl Platform for Recorder {
        fn monotonic_ns(&self) -> u64 {
            0
        }
        fn monotonic_resolution_ns(&self) -> u64 {
            1
        }
        fn wall_clock(&self) -> (u64, u32) {
            (0, 0)
        }
        fn sleep_until(&self, _: u64) {}
        fn random_bytes(&self, _: &mut [u8]) -> Result<(), NoEntropySource> {
            Err(NoEntropySource)
        }
        fn insecure_random_bytes(&self, _: &mut [u8]) {}
        fn has_entropy_source(&self) -> bool {
            false
        }
        fn console_line(&self, _: &str, _: OutputKind, _: &[u8]) {}
        fn component_log(&self, name: &str, level: ::log::Level, message: &str) {
            self.0.lock().expect("not poisoned").push((name.into(), level, message.into()));
        }
    }

    #[test]
    fn records_reach_the_platform_with_name_and_level() {
        let recorder = Arc::new(Recorder::default());
        let mut ctx = InstanceState {
            name: "logger".into(),
            args: Vec::new(),
            env: Vec::new(),
            table: ResourceTable::new(),
            platform: recorder.clone(),
            limits: Limits::new(1 << 20),
            stdout: LineBuffer::default(),
            stderr: LineBuffer::default(),
            exit_status: None,
            ipc: None,
            spans: Default::default(),
            hw: None,
            fs: Default::default(),
            net: Default::default(),
        };
        ctx.log(Level::Warn, "two\nlines".into()).expect("logged");
        ctx.log(Level::Trace, "fine detail".into()).expect("logged");
        let records = recorder.0.lock().expect("not poisoned");
        assert_eq!(
            *records,
            [
                ("logger".into(), ::log::Level::Warn, "two\\nlines".into()),
                ("logger".into(), ::log::Level::Trace, "fine detail".into())
            ]
        );
    }
}
