//! The file system service's volumes on the host: [`build`] one from a directory, [`list`] and
//! [`extract`] one. Every operation goes through [`fs_service::service::Service`], the code the `fs`
//! component serves with, on [`FileDisk`], a disk image file.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use fs_service::service::Service;
use fs_service::volume::{Mounted, Volume};
use kvstore::disk::{Disk, SECTOR_SIZE};
use mica_device::files::{Kind, MAX_DATA_BYTES, OpenFlags, Request, Response, SetTime};

/// A disk image file.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    sectors: u64,
}

impl FileDisk {
    /// The image at `path`, opened for reading and writing.
    pub fn open(path: &Path) -> Result<FileDisk, String> {
        let file =
            OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        if len % SECTOR_SIZE as u64 != 0 {
            return Err(format!("{}: {len} bytes is not a whole number of {SECTOR_SIZE}-byte sectors", path.display()));
        }
        Ok(FileDisk { file, sectors: len / SECTOR_SIZE as u64 })
    }
}

impl Disk for FileDisk {
    type Error = String;

    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
        let mut data = vec![0; count as usize * SECTOR_SIZE];
        self.file.seek(SeekFrom::Start(sector * SECTOR_SIZE as u64)).map_err(|e| e.to_string())?;
        self.file.read_exact(&mut data).map_err(|e| format!("reading {count} sectors at {sector}: {e}"))?;
        Ok(data)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        self.file.seek(SeekFrom::Start(sector * SECTOR_SIZE as u64)).map_err(|e| e.to_string())?;
        self.file.write_all(data).map_err(|e| format!("writing at sector {sector}: {e}"))
    }

    fn flush(&mut self) -> Result<(), String> {
        self.file.sync_data().map_err(|e| format!("flush: {e}"))
    }
}

/// `1048576`, `512KiB`, `16MiB` or `1GiB` in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(format!("size {text:?}: give bytes, or a number with KiB, MiB or GiB")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("size {text:?}: give bytes, or a number with KiB, MiB or GiB"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("size {text:?} is too large"))
}

/// Runs `body` on a service over the volume on the image at `image`.
fn with_volume<R>(
    image: &Path,
    body: impl FnOnce(&mut Service<'_, '_, Mounted<FileDisk>>) -> Result<R, String>,
) -> Result<R, String> {
    let (mut volume, formatted) =
        Volume::open(FileDisk::open(image)?).map_err(|e| format!("{}: {e}", image.display()))?;
    let failures = volume.failures.clone();
    let (fs, report) = volume.mount(formatted).map_err(|e| format!("{}: {e}", image.display()))?;
    let mut service = Service::new(&fs, report.blocks, failures);
    body(&mut service)
}

/// `request`'s answer, or its error in words.
fn ask(s: &mut Service<'_, '_, Mounted<FileDisk>>, request: Request) -> Result<Response, String> {
    let what = format!("{request:?}");
    match s.handle(request) {
        Response::Error { code, message } => {
            Err(format!("{}: {code:?}: {message}", what.chars().take(120).collect::<String>()))
        }
        response => Ok(response),
    }
}

/// A new image at `image` of `size` bytes holding the files and directories under `dir`.
pub fn build(dir: &Path, image: &Path, size: u64) -> Result<(), String> {
    if image.exists() {
        return Err(format!("{} exists; give a new path (a volume is built from nothing)", image.display()));
    }
    if !size.is_multiple_of(SECTOR_SIZE as u64) {
        return Err(format!("size {size} is not a whole number of {SECTOR_SIZE}-byte sectors"));
    }
    let file = File::create_new(image).map_err(|e| format!("{}: {e}", image.display()))?;
    file.set_len(size).map_err(|e| format!("{}: {e}", image.display()))?;
    drop(file);
    let built = with_volume(image, |s| copy_in(s, dir, ""));
    if built.is_err() {
        let _ = fs::remove_file(image);
    }
    built
}

/// Copies the directory `dir` to `to` on the volume (`""`: its root).
fn copy_in(s: &mut Service<'_, '_, Mounted<FileDisk>>, dir: &Path, to: &str) -> Result<(), String> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let host = entry.path();
        let name = entry.file_name().into_string().map_err(|_| format!("{}: the name is not UTF-8", host.display()))?;
        if !name.is_ascii() {
            return Err(format!("{}: the volume takes ASCII names only", host.display()));
        }
        let path = if to.is_empty() { name } else { format!("{to}/{name}") };
        let kind = entry.file_type().map_err(|e| format!("{}: {e}", host.display()))?;
        if kind.is_dir() {
            ask(s, Request::CreateDir { path: path.clone() })?;
            copy_in(s, &host, &path)?;
        } else if kind.is_file() {
            let bytes = fs::read(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE;
            let Response::Opened { handle, .. } = ask(s, Request::Open { flags, path: path.clone() })? else {
                return Err(format!("{}: the service did not open it", host.display()));
            };
            for (i, chunk) in bytes.chunks(MAX_DATA_BYTES).enumerate() {
                let offset = (i * MAX_DATA_BYTES) as u64;
                ask(s, Request::Write { handle, offset, data: chunk.to_vec() })?;
            }
            ask(s, Request::Close { handle })?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| format!("{}: the target is not UTF-8", host.display()))?;
            ask(s, Request::Symlink { target, path: path.clone() })?;
        } else {
            return Err(format!("{}: only files, directories and symbolic links go on a volume", host.display()));
        }
        // The host's times come along.
        let meta = fs::symlink_metadata(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        let ns = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok())
                .map_or(SetTime::Now, SetTime::At)
        };
        let (accessed, modified) = (ns(meta.accessed()), ns(meta.modified()));
        ask(s, Request::SetTimes { path, follow: false, accessed, modified })?;
    }
    Ok(())
}

/// Every path on the volume at `image`, sorted, with a file's size (`None` for a directory).
pub fn list(image: &Path) -> Result<Vec<(String, Option<u64>)>, String> {
    with_volume(image, |s| {
        let mut out = Vec::new();
        walk(s, "", &mut |path, kind, size| {
            out.push((path.to_owned(), (kind != Kind::Directory).then_some(size)));
            Ok(())
        })?;
        out.sort();
        Ok(out)
    })
}

/// Calls `visit` for every path under `dir` on the volume.
fn walk(
    s: &mut Service<'_, '_, Mounted<FileDisk>>,
    dir: &str,
    visit: &mut dyn FnMut(&str, Kind, u64) -> Result<(), String>,
) -> Result<(), String> {
    let mut entries = Vec::new();
    loop {
        match ask(s, Request::ReadDir { start: entries.len() as u32, path: dir.to_owned() })? {
            Response::Entries { entries: page, end } => {
                let empty = page.is_empty();
                entries.extend(page);
                if end || empty {
                    break;
                }
            }
            other => return Err(format!("listing {dir:?}: {}", other.brief())),
        }
    }
    for entry in entries {
        let path = if dir.is_empty() { entry.name } else { format!("{dir}/{}", entry.name) };
        visit(&path, entry.kind, entry.size)?;
        if entry.kind == Kind::Directory {
            walk(s, &path, visit)?;
        }
    }
    Ok(())
}

/// Copies every file and directory on the volume at `image` into `dir`, which must not exist.
pub fn extract(image: &Path, dir: &Path) -> Result<(), String> {
    if dir.exists() {
        return Err(format!("{} exists; give a new directory", dir.display()));
    }
    fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    with_volume(image, |s| {
        let (mut files, mut links) = (Vec::new(), Vec::new());
        walk(s, "", &mut |path, kind, _| {
            let host = dir.join(path);
            match kind {
                Kind::Directory => fs::create_dir(&host).map_err(|e| format!("{}: {e}", host.display())),
                Kind::File => {
                    files.push(path.to_owned());
                    Ok(())
                }
                Kind::Symlink => {
                    links.push(path.to_owned());
                    Ok(())
                }
            }
        })?;
        for path in links {
            let Response::Data(target) = ask(s, Request::ReadLink { path: path.clone() })? else {
                return Err(format!("{path}: the service did not read the link"));
            };
            let target = String::from_utf8(target).map_err(|_| format!("{path}: the link's target is not UTF-8"))?;
            let host = dir.join(&path);
            std::os::unix::fs::symlink(&target, &host).map_err(|e| format!("{}: {e}", host.display()))?;
        }
        for path in files {
            let Response::Opened { handle, .. } = ask(s, Request::Open { flags: OpenFlags::READ, path: path.clone() })?
            else {
                return Err(format!("{path}: the service did not open it"));
            };
            let mut bytes = Vec::new();
            loop {
                let read = Request::Read { handle, offset: bytes.len() as u64, len: MAX_DATA_BYTES as u32 };
                match ask(s, read)? {
                    Response::Data(data) if data.is_empty() => break,
                    Response::Data(data) => bytes.extend(data),
                    other => return Err(format!("reading {path}: {}", other.brief())),
                }
            }
            ask(s, Request::Close { handle })?;
            let host = dir.join(&path);
            fs::write(&host, bytes).map_err(|e| format!("{}: {e}", host.display()))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_goes_onto_a_volume_and_comes_back_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("docs/deep")).expect("mkdir");
        fs::write(src.join("hello.txt"), b"hello\n").expect("write");
        fs::write(src.join("docs/empty"), b"").expect("write");
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(src.join("docs/deep/big.bin"), &big).expect("write");
        std::os::unix::fs::symlink("deep/big.bin", src.join("docs/link")).expect("symlink");
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        fs::File::options().write(true).open(src.join("hello.txt")).expect("open").set_modified(old).expect("mtime");
        let image = tmp.path().join("volume.img");
        build(&src, &image, parse_size("2MiB").expect("size")).expect("built");
        assert_eq!(fs::metadata(&image).expect("image").len(), 2 << 20);
        let expected = vec![
            ("docs".to_owned(), None),
            ("docs/deep".to_owned(), None),
            ("docs/deep/big.bin".to_owned(), Some(100_000)),
            ("docs/empty".to_owned(), Some(0)),
            ("docs/link".to_owned(), Some(12)),
            ("hello.txt".to_owned(), Some(6)),
        ];
        assert_eq!(list(&image).expect("listed"), expected);
        let out = tmp.path().join("out");
        extract(&image, &out).expect("extracted");
        assert_eq!(fs::read(out.join("hello.txt")).expect("read"), b"hello\n");
        assert_eq!(fs::read(out.join("docs/deep/big.bin")).expect("read"), big);
        assert_eq!(fs::read(out.join("docs/empty")).expect("read"), b"");
        // The link comes back a link, and the file's time came onto the volume.
        assert_eq!(fs::read_link(out.join("docs/link")).expect("a link"), Path::new("deep/big.bin"));
        let stat = with_volume(&image, |s| ask(s, Request::Stat { path: "hello.txt".into(), follow: true }));
        let Ok(Response::Stat { modified, .. }) = stat else { panic!("{stat:?}") };
        assert_eq!(modified, Some(1_000_000_000_000_000_000));
    }

    #[test]
    fn what_cannot_go_on_a_volume_is_refused_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        fs::write(src.join("caf\u{e9}.txt"), b"x").expect("write");
        let image = tmp.path().join("v.img");
        let e = build(&src, &image, 1 << 20).expect_err("a non-ASCII name");
        assert!(e.contains("caf\u{e9}.txt: the volume takes ASCII names only"), "{e}");
        assert!(!image.exists(), "a failed build leaves no image");
        fs::remove_file(src.join("caf\u{e9}.txt")).expect("rm");
        fs::write(src.join("big"), vec![1u8; 300_000]).expect("write");
        let e = build(&src, &image, 256 << 10).expect_err("too small");
        assert!(e.contains("NoSpace"), "{e}");
        fs::write(&image, b"taken").expect("write");
        let e = build(&src, &image, 1 << 20).expect_err("an existing image");
        assert!(e.contains("exists"), "{e}");
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("16MB").is_err());
        let e = list(&image).expect_err("not an image");
        assert!(e.contains("not a whole number of 512-byte sectors"), "{e}");
    }
}
