//! Building the kernel and finding the built image.
//!
//! The path comes from cargo's own JSON messages (`compiler-artifact` for the `mica-kernel`
//! binary), so target-directory settings (`CARGO_TARGET_DIR`, `build.target-dir`) need no
//! guessing here. x86_64 boots the ELF itself (PVH); aarch64 boots a Linux arm64 `Image`, the
//! ELF's loadable segments laid out flat, written beside it as `mica-kernel.Image`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use mica_launch::GuestArch;
use object::{Object, ObjectSegment};

use crate::process;
use crate::toolchain::Toolchain;

/// The kernel binary's name.
const KERNEL_BIN: &str = "mica-kernel";

/// Where the arm64 `Image` header keeps its magic, and the magic.
const IMAGE_MAGIC_OFFSET: usize = 56;
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";

/// Builds the `arch` kernel (cargo's progress goes to stderr) and returns the absolute path of
/// the image QEMU boots.
pub fn build(root: &Path, toolchain: &Toolchain, arch: GuestArch, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let first = !crate::toolchain::target_dir(root).join(arch.kernel_target()).join(profile).join(KERNEL_BIN).exists();
    let expect = if first { "; the first build takes a few minutes on 2 cores, later ones seconds" } else { "" };
    eprintln!("xtask: building the {arch} kernel ({profile}) with {toolchain}{expect}");
    let start = Instant::now();
    let mut cmd = toolchain.kernel_build(root, arch, release);
    let artifacts = crate::cargo_json::build(&mut cmd, "the kernel build")?;
    let kernel = artifacts
        .into_iter()
        .filter(|(target, _)| target.name == KERNEL_BIN && target.kind.iter().any(|k| k == "bin"))
        .find_map(|(_, msg)| msg.executable)
        .with_context(|| format!("cargo built no `{KERNEL_BIN}` executable: `{}`", process::shown(&cmd)))?;
    let image = match arch {
        GuestArch::X86_64 => kernel,
        GuestArch::Aarch64 => {
            let elf = std::fs::read(&kernel).with_context(|| format!("reading {}", kernel.display()))?;
            let image = kernel.with_extension("Image");
            let flat = flat_image(&elf).with_context(|| format!("making an arm64 Image of {}", kernel.display()))?;
            std::fs::write(&image, flat).with_context(|| format!("writing {}", image.display()))?;
            image
        }
    };
    eprintln!("xtask: kernel built in {:.1} s", start.elapsed().as_secs_f64());
    Ok(image)
}

/// The loadable segments of the ELF `elf`, laid out flat from the lowest address (what a loader
/// of a raw image copies), checked to start with an arm64 `Image` header.
pub fn flat_image(elf: &[u8]) -> Result<Vec<u8>> {
    let file = object::File::parse(elf).context("not an ELF file")?;
    let mut segments = Vec::new();
    for segment in file.segments() {
        let data = segment.data().context("a segment's bytes")?;
        if !data.is_empty() {
            segments.push((segment.address(), data));
        }
    }
    let image = flatten(&segments)?;
    ensure!(
        image.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) == Some(IMAGE_MAGIC),
        "the first loadable byte is not an arm64 Image header (no \"ARM\\x64\" magic at offset {IMAGE_MAGIC_OFFSET})"
    );
    Ok(image)
}

/// `segments` (address, bytes) laid out from the lowest address, gaps zero-filled.
fn flatten(segments: &[(u64, &[u8])]) -> Result<Vec<u8>> {
    let Some(base) = segments.iter().map(|(a, _)| *a).min() else { bail!("no loadable segment") };
    let end = segments.iter().map(|(a, d)| a + d.len() as u64).max().unwrap_or(base);
    ensure!(end - base <= 256 << 20, "loadable segments span {} MiB; a kernel image is smaller", (end - base) >> 20);
    let mut image = vec![0u8; (end - base) as usize];
    for (addr, data) in segments {
        let at = (addr - base) as usize;
        let slot = &mut image[at..at + data.len()];
        ensure!(slot.iter().all(|b| *b == 0), "segments overlap at {addr:#x}");
        slot.copy_from_slice(data);
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_laid_out_from_the_lowest_address() {
        let image = flatten(&[(0x4020_1000, b"data"), (0x4020_0000, b"text")]).expect("flat");
        assert_eq!(image.len(), 0x1004);
        assert_eq!(&image[..4], b"text");
        assert!(image[4..0x1000].iter().all(|b| *b == 0));
        assert_eq!(&image[0x1000..], b"data");
        assert!(flatten(&[]).is_err());
        assert!(flatten(&[(0, b"ab"), (1, b"cd")]).is_err(), "overlap");
    }

    #[test]
    fn an_elf_without_an_image_header_is_refused() {
        let err = flat_image(b"not an elf").expect_err("refused");
        assert!(err.to_string().contains("ELF"), "{err}");
        // This very test binary is an ELF, but not an arm64 Image.
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        let err = flat_image(&me).expect_err("no header");
        assert!(format!("{err:#}").contains("Image header"), "{err:#}");
    }
}
