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
    /// Become a container's process (the agent runs itself this way for a `Spawn` with a root).
    Enter(Enter),
}

/// `--enter ROOT --cwd DIR --uid N --gid N -- PROGRAM ARGS...`: change root, then directory, then
/// user, then run the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enter {
    /// The new root directory.
    pub root: PathBuf,
    /// The working directory inside it.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Program and arguments.
    pub argv: Vec<String>,
}

impl Enter {
    /// The agent's arguments that ask for this (what [`parse`] reads back).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--enter".to_owned(),
            self.root.to_string_lossy().into_owned(),
            "--cwd".to_owned(),
            self.cwd.to_string_lossy().into_owned(),
            "--uid".to_owned(),
            self.uid.to_string(),
            "--gid".to_owned(),
            self.gid.to_string(),
            "--".to_owned(),
        ];
        args.extend(self.argv.iter().cloned());
        args
    }
}

fn parse_enter(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let root = value("--enter", args.next())?.into();
    let mut want = |name: &str| match args.next() {
        Some(arg) if arg == name => value(name, args.next()),
        _ => Err(format!("--enter needs {name} next")),
    };
    let cwd = want("--cwd")?.into();
    let number = |name: &str, v: String| v.parse::<u32>().map_err(|_| format!("{name} {v:?} is not a number"));
    let uid = number("--uid", want("--uid")?)?;
    let gid = number("--gid", want("--gid")?)?;
    match args.next() {
        Some(arg) if arg == "--" => {}
        _ => return Err("--enter needs -- before the program".into()),
    }
    let argv: Vec<String> = args.collect();
    if argv.is_empty() {
        return Err("--enter needs a program after --".into());
    }
    Ok(Parsed::Enter(Enter { root, cwd, uid, gid, argv }))
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut channel = None;
    let mut allow_poweroff = false;
    let mut reconnect = false;
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|first| first == "--enter") {
        args.next();
        return parse_enter(args);
    }
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

    #[test]
    fn enter_reads_back_what_it_writes() {
        let enter = Enter {
            root: "/run/c/rootfs".into(),
            cwd: "/srv".into(),
            uid: 1000,
            gid: 100,
            argv: vec!["/bin/sh".into(), "-c".into(), "--".into()],
        };
        assert_eq!(parse(enter.to_args()), Ok(Parsed::Enter(enter)));
        assert_eq!(p(&["--enter", "/r", "--cwd", "/", "--uid", "x"]), Err("--uid \"x\" is not a number".into()));
        assert_eq!(p(&["--enter", "/r", "--cwd", "/"]), Err("--enter needs --uid next".into()));
        assert_eq!(
            p(&["--enter", "/r", "--cwd", "/", "--uid", "0", "--gid", "0", "--"]),
            Err("--enter needs a program after --".into())
        );
    }
}
