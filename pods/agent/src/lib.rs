//! The guest agent of a Mica legacy pod, as a library: the binary (`src/main.rs`, where the
//! agent's behaviour is described) opens the channel and serves sessions; the fuzz targets serve a
//! session over bytes they choose (`fuzz/targets`, `agent_session`).

#![forbid(unsafe_code)]

pub mod args;
pub mod channel;
pub mod enter;
pub mod exec;
pub mod reaper;
pub mod session;

/// Writes one line to standard error (the guest console when running as init).
pub fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("mica-agent: {args}");
}

/// An I/O error for people: its text without the " (os error N)" suffix.
pub fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_drops_the_os_error_suffix() {
        assert_eq!(describe(&std::io::Error::from_raw_os_error(2)), "No such file or directory");
        assert_eq!(describe(&std::io::Error::other("plain (os error 5)")), "plain (os error 5)");
    }
}
