//! Command-line parsing.

use std::path::PathBuf;

/// Where the protocol channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    /// Standard input and output.
    Stdio,
    /// A character device, or a Unix socket, at this path.
    Port(PathBuf),
    /// The virtio-serial port with this name.
    PortName(String),
}

/// The agent's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Where the channel is.
    pub channel: ChannelSpec,
    /// Honour Shutdown although not PID 1.
    pub allow_poweroff: bool,
    /// Reopen the port when the host goes away.
    pub reconnect: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Serve with these options.
    Run(Args),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut channel = None;
    let mut allow_poweroff = false;
    let mut reconnect = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let spec = match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--allow-poweroff" => {
                allow_poweroff = true;
                continue;
            }
            "--reconnect" => {
                reconnect = true;
                continue;
            }
            "--stdio" => ChannelSpec::Stdio,
            "--port" => ChannelSpec::Port(value(&arg, args.next())?.into()),
            "--port-name" => ChannelSpec::PortName(value(&arg, args.next())?),
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        if channel.replace(spec).is_some() {
            return Err("give only one of --port, --port-name and --stdio".into());
        }
    }
    let channel = channel.ok_or("no channel given: pass --port PATH, --port-name NAME or --stdio")?;
    Ok(Parsed::Run(Args { channel, allow_poweroff, reconnect }))
}

fn value(option: &str, value: Option<String>) -> Result<String, String> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("{option} needs a value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn channels() {
        assert_eq!(
            p(&["--port", "/dev/vport0p1"]),
            Ok(Parsed::Run(Args {
                channel: ChannelSpec::Port("/dev/vport0p1".into()),
                allow_poweroff: false,
                reconnect: false
            }))
        );
        assert_eq!(
            p(&["--allow-poweroff", "--port-name", "mica.agent", "--reconnect"]),
            Ok(Parsed::Run(Args {
                channel: ChannelSpec::PortName("mica.agent".into()),
                allow_poweroff: true,
                reconnect: true
            }))
        );
        assert!(matches!(p(&["--stdio"]), Ok(Parsed::Run(Args { channel: ChannelSpec::Stdio, .. }))));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(p(&[]), Err("no channel given: pass --port PATH, --port-name NAME or --stdio".into()));
        assert_eq!(p(&["--port"]), Err("--port needs a value".into()));
        assert_eq!(p(&["--stdio", "--port", "x"]), Err("give only one of --port, --port-name and --stdio".into()));
        assert_eq!(p(&["--stdio", "extra"]), Err("unknown argument \"extra\"".into()));
        assert_eq!(p(&["--stdio", "--help"]), Ok(Parsed::Help));
    }
}
