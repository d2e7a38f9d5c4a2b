//! `mica-agent --enter`: how a container's process starts. The agent cannot change root between
//! `fork` and `exec` without unsafe code, so for a `Spawn` with a root it runs itself with
//! `--enter`, and this process changes root, directory and user, then becomes the program.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::args::Enter;
use crate::describe;

/// Enters `enter.root` and executes the program; returns only on failure, with what failed and
/// the exit status a shell would give (127 for a missing program, 126 otherwise).
pub fn run(enter: &Enter) -> (String, u8) {
    let failed = |what: String, e: &io::Error| {
        let status = if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
        (format!("{what}: {}", describe(e)), status)
    };
    if let Err(e) = std::os::unix::fs::chroot(&enter.root) {
        return failed(format!("cannot change root to {}", enter.root.display()), &e);
    }
    if let Err(e) = std::env::set_current_dir(&enter.cwd) {
        return failed(format!("cannot change to the working directory {}", enter.cwd.display()), &e);
    }
    let program = &enter.argv[0];
    let e = Command::new(program).args(&enter.argv[1..]).uid(enter.uid).gid(enter.gid).exec();
    failed(format!("exec of {program:?} failed"), &e)
}
