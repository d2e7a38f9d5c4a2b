//! `cargo xtask volume`: the file system service's volumes on this host. It runs `fs-volume`
//! (`components/fs-volume`), which builds, lists and extracts littlefs disk images through the
//! same code the `fs` component serves with.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::{process, toolchain};

/// What to do with a volume.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// A new disk image holding a host directory's files and directories (a `[[device]]`'s
    /// `disk`).
    Build {
        /// The directory to copy.
        #[arg(long)]
        from: PathBuf,
        /// The image to make (it must not exist).
        #[arg(long)]
        image: PathBuf,
        /// Its size: bytes, or a number with KiB, MiB or GiB.
        #[arg(long, default_value = "16MiB")]
        size: String,
    },
    /// Every path on the volume, with file sizes.
    List {
        /// The image.
        image: PathBuf,
    },
    /// Copies the volume's files and directories into a new directory.
    Extract {
        /// The image.
        image: PathBuf,
        /// The directory to make.
        #[arg(long)]
        to: PathBuf,
    },
}

/// Runs `fs-volume` for `command`, built for this host.
pub fn run(root: &Path, command: &VolumeCommand) -> Result<ExitCode> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    match command {
        VolumeCommand::Build { from, image, size } => {
            args.extend(["build".into(), from.into(), image.into(), size.into()]);
        }
        VolumeCommand::List { image } => args.extend(["list".into(), image.into()]),
        VolumeCommand::Extract { image, to } => args.extend(["extract".into(), image.into(), to.into()]),
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    toolchain::clear_cargo_run_env(&mut cmd);
    cmd.current_dir(root)
        .env("CARGO_TARGET_DIR", toolchain::target_dir(root).join("host-components"))
        .args(["run", "--quiet", "--manifest-path", "components/Cargo.toml", "-p", "fs-volume", "--"])
        .args(args);
    let status = cmd.status().with_context(|| format!("cannot run `{}`", process::shown(&cmd)))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
