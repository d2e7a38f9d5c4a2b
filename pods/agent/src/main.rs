//! `mica-agent`: the guest agent of a Mica legacy pod.
//!
//! It runs inside the pod's Linux guest, talks [`mica_pod_proto`] with the pod manager over a
//! virtio-serial port and runs commands on its behalf (see [`USAGE`]):
//!
//! - Every command runs in its own process group, with exactly the environment of its request
//!   plus a default `PATH`, its standard input fed from the request and then closed, and its
//!   output streamed back in chunks.
//! - All children are reaped by one thread ([`reaper`]), which also reaps the orphans the agent
//!   adopts as PID 1, or as the child subreaper it makes itself otherwise.
//! - When the host goes away (end of file or an error on the channel) every command's process
//!   group is killed with SIGKILL and reaped. Then the agent exits, or, as PID 1 or with
//!   `--reconnect`, reopens the port and waits for the next host.
//! - `Shutdown` powers the machine off only as PID 1 or with `--allow-poweroff`.
//!
//! In a QEMU guest the port is a `virtserialport` (QEMU: `-device virtio-serial-device -chardev
//! socket,id=agent,path=...,server=on,wait=off -device virtserialport,chardev=agent,
//! name=mica.agent`; guest: `mica-agent --port-name mica.agent`). Such a port reads end
//! of file while no host is connected to the chardev, and its writes wait until one is, so the
//! agent's first `Ready` doubles as waiting for the host.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use mica_agent::args::{self, ChannelSpec, Parsed};
use mica_agent::reaper::Reaper;
use mica_agent::session::{self, Config, End};
use mica_agent::{channel, log};
use rustix::process::{getpid, set_child_subreaper};

/// `--help` text.
const USAGE: &str = "\
usage: mica-agent (--port PATH | --port-name NAME | --stdio) [--allow-poweroff] [--reconnect]

Serves the Mica pod protocol on a byte channel:
  --port PATH       a character device (virtio-serial port such as /dev/vport0p1, or a console
                    such as /dev/hvc1, which is switched to raw mode) or a Unix socket to connect to
  --port-name NAME  the virtio-serial port QEMU named NAME (virtserialport,name=NAME), found
                    through /sys/class/virtio-ports
  --stdio           standard input and output (for tests)
  --allow-poweroff  honour Shutdown requests although not running as PID 1
  --reconnect       reopen the port when the host goes away instead of exiting (implied as PID 1)
";

/// How long to wait before reopening the port after the host went away.
const REOPEN_DELAY: Duration = Duration::from_millis(50);

/// How long to wait for killed commands to be reaped before exiting.
const FINAL_REAP: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Enter(enter)) => {
            let (message, status) = mica_agent::enter::run(&enter);
            eprintln!("mica-agent: {message}");
            return ExitCode::from(status);
        }
        Ok(Parsed::Version) => {
            println!("mica-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mica-agent: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let pid1 = getpid().is_init();
    if !pid1 {
        // Orphans of the commands we run are ours to reap, as they would be PID 1's.
        if let Err(e) = set_child_subreaper(Some(getpid())) {
            log(format_args!("cannot become a child subreaper: {e}"));
        }
    }
    let reaper = match Reaper::get() {
        Ok(reaper) => reaper,
        Err(e) => {
            log(format_args!("{e}"));
            return ExitCode::FAILURE;
        }
    };
    let config = Config { allow_poweroff: pid1 || args.allow_poweroff };
    let reconnect = (pid1 || args.reconnect) && args.channel != ChannelSpec::Stdio;
    loop {
        let end = match channel::open(&args.channel) {
            Ok((reader, writer)) => session::serve(reader, writer, &config, reaper),
            Err(e) => End::Open(e),
        };
        // With reconnection a host going away is routine (every `mica pod exec` does it): only
        // failures are logged then.
        if !(reconnect && matches!(end, End::Eof)) {
            log(format_args!("{end}"));
        }
        if reconnect {
            thread::sleep(if matches!(end, End::Open(_)) { Duration::from_secs(1) } else { REOPEN_DELAY });
            continue;
        }
        if pid1 {
            // PID 1 must not exit, and a standard-input channel does not come back.
            log(format_args!("powering off: {}", session::power_off()));
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        reaper.reap_remaining(FINAL_REAP);
        return match end {
            End::Eof => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        };
    }
}
