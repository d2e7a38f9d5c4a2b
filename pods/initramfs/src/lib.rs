//! Linux initramfs images for Mica's legacy pods and Linux-guest baselines.
//!
//! An [`Initramfs`] is a tree of directories, files, symlinks and device nodes written as one
//! uncompressed `newc` cpio archive, the format the kernel unpacks into its root file system
//! before it runs `/init`. [`Initramfs::busybox`] installs a static busybox with one symlink per
//! applet; [`Initramfs::modules`] copies kernel modules from an unpacked kernel package together
//! with every module they depend on (read from each module's `.modinfo` `depends=` field, since a
//! package's `modules.dep` is only made by `depmod` at install time) and returns the order to
//! load them in.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::{fmt, fs};

use object::{Object, ObjectSection};

/// Where [`Initramfs::modules`] puts modules inside the image.
pub const MODULES_DIR: &str = "lib/modules";

/// What went wrong building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path inside the image is not a clean relative path.
    #[error("bad path {0:?} inside the initramfs: paths are relative, without '.', '..' or empty parts")]
    BadPath(String),
    /// Two different entries were given the same path.
    #[error("{0:?} is already in the initramfs as a {1}")]
    Conflict(String, &'static str),
    /// A file is larger than a newc entry can hold.
    #[error("{0:?} is {1} bytes; a newc cpio entry holds at most 4 GiB")]
    TooLarge(String, usize),
    /// A kernel module asked for is not in the modules tree.
    #[error("kernel module {name:?} not found under {dir} (needed by {needed_by})")]
    ModuleNotFound {
        /// The module's name.
        name: String,
        /// The tree searched.
        dir: PathBuf,
        /// Who asked for it: the caller or another module.
        needed_by: String,
    },
    /// A module file is not an ELF object with a readable `.modinfo`.
    #[error("kernel module {path}: {reason}")]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// One entry of the image.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Dir { .. } => "directory",
            Entry::File { .. } => "file",
            Entry::Symlink { .. } => "symlink",
            Entry::CharDev { .. } => "character device",
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Dir { mode } => write!(f, "Dir({mode:o})"),
            Entry::File { data, mode } => write!(f, "File({} bytes, {mode:o})", data.len()),
            Entry::Symlink { target } => write!(f, "Symlink({target:?})"),
            Entry::CharDev { mode, major, minor } => write!(f, "CharDev({major}:{minor}, {mode:o})"),
        }
    }
}

/// File type bits of a cpio `mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// An initramfs under construction. Parent directories are made as needed; entries are written
/// in path order, so a parent always precedes its children and the same inputs give the same
/// bytes.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// The skeleton every Linux userland expects: `/dev` with a `console` node (the kernel opens it
    /// for init's stdio before any devtmpfs is mounted), `/proc`, `/sys`, `/tmp`, `/bin`, `/sbin`,
    /// `/etc`, `/root`.
    pub fn new() -> Self {
        let mut image = Initramfs::default();
        for dir in ["bin", "dev", "etc", "proc", "root", "sbin", "sys", "tmp"] {
            image.dir(dir).expect("skeleton paths are valid");
        }
        image.char_device("dev/console", 0o600, 5, 1).expect("skeleton paths are valid");
        image
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> Result<&mut Self, Error> {
        let path = clean(path)?;
        self.insert(path, Entry::Dir { mode: 0o755 })?;
        Ok(self)
    }

    /// Adds a regular file with permission bits `mode` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<&mut Self, Error> {
        let path = clean(path)?;
        if u32::try_from(data.len()).is_err() {
            return Err(Error::TooLarge(path, data.len()));
        }
        self.insert(path, Entry::File { data, mode: mode & 0o7777 })?;
        Ok(self)
    }

    /// Adds a symbolic link at `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, Error> {
        let path = clean(path)?;
        self.insert(path, Entry::Symlink { target: target.to_owned() })?;
        Ok(self)
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<&mut Self, Error> {
        let path = clean(path)?;
        self.insert(path, Entry::CharDev { mode: mode & 0o7777, major, minor })?;
        Ok(self)
    }

    /// Installs a static busybox as `/bin/busybox` with a symlink `/bin/<applet>` for each applet.
    pub fn busybox(&mut self, binary: Vec<u8>, applets: &[&str]) -> Result<&mut Self, Error> {
        self.file("bin/busybox", binary, 0o755)?;
        for applet in applets {
            self.symlink(&format!("bin/{applet}"), "busybox")?;
        }
        Ok(self)
    }

    /// Copies the kernel modules `names` and every module they depend on from `tree` (an unpacked
    /// `lib/modules/<release>` directory) to `/lib/modules/<name>.ko`, and returns the module
    /// names in an order that loads each one after its dependencies. Names may use `-` or `_`.
    pub fn modules(&mut self, tree: &Path, names: &[&str]) -> Result<Vec<String>, Error> {
        let index = index_modules(tree)?;
        let mut order = Vec::new();
        let mut placed = BTreeSet::new();
        for name in names {
            self.place_module(tree, &index, &normalize(name), "the image's module list", &mut placed, &mut order)?;
        }
        Ok(order)
    }

    fn place_module(
        &mut self,
        tree: &Path,
        index: &BTreeMap<String, PathBuf>,
        name: &str,
        needed_by: &str,
        placed: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), Error> {
        if !placed.insert(name.to_owned()) {
            return Ok(());
        }
        let path = index.get(name).ok_or_else(|| Error::ModuleNotFound {
            name: name.to_owned(),
            dir: tree.to_owned(),
            needed_by: needed_by.to_owned(),
        })?;
        let data = fs::read(path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let depends = module_depends(&data).map_err(|reason| Error::BadModule { path: path.clone(), reason })?;
        for dependency in depends {
            self.place_module(tree, index, &normalize(&dependency), name, placed, order)?;
        }
        self.file(&format!("{MODULES_DIR}/{name}.ko"), data, 0o644)?;
        order.push(name.to_owned());
        Ok(())
    }

    /// Writes the image as an uncompressed `newc` cpio archive.
    pub fn write_to(&self, out: impl Write) -> io::Result<()> {
        let mut out = out;
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(ino + 1).map_err(io::Error::other)?;
            let header = cpio::NewcBuilder::new(path).ino(ino).uid(0).gid(0).nlink(1);
            let (header, body): (_, &[u8]) = match entry {
                Entry::Dir { mode } => (header.mode(S_IFDIR | mode).nlink(2), &[]),
                Entry::File { data, mode } => (header.mode(S_IFREG | mode), data),
                Entry::Symlink { target } => (header.mode(S_IFLNK | 0o777), target.as_bytes()),
                Entry::CharDev { mode, major, minor } => {
                    (header.mode(S_IFCHR | mode).rdev_major(*major).rdev_minor(*minor), &[])
                }
            };
            let size = u32::try_from(body.len()).map_err(io::Error::other)?;
            let mut writer = header.write(out, size);
            writer.write_all(body)?;
            out = writer.finish()?;
        }
        cpio::newc::trailer(out)?;
        Ok(())
    }

    /// The image as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write_to(&mut bytes).expect("writing to a Vec cannot fail");
        bytes
    }

    fn insert(&mut self, path: String, entry: Entry) -> Result<(), Error> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            let parent = parent.to_owned();
            match self.entries.get(&parent) {
                Some(Entry::Dir { .. }) => {}
                Some(other) => return Err(Error::Conflict(parent, other.kind())),
                None => self.insert(parent, Entry::Dir { mode: 0o755 })?,
            }
        }
        match self.entries.get(&path) {
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
            Some(existing) if *existing == entry => Ok(()),
            Some(existing) => Err(Error::Conflict(path, existing.kind())),
        }
    }
}

/// `path` as a clean relative path (a leading `/` is allowed and dropped).
fn clean(path: &str) -> Result<String, Error> {
    let trimmed = path.trim_start_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    if trimmed.is_empty() || parts.iter().any(|part| part.is_empty() || *part == "." || *part == "..") {
        return Err(Error::BadPath(path.to_owned()));
    }
    Ok(trimmed.to_owned())
}

/// Module names are the same with `-` and `_`; the kernel itself uses `_`.
fn normalize(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

/// Every `*.ko` under `tree`, by normalized name.
fn index_modules(tree: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut index = BTreeMap::new();
    let mut pending = vec![tree.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io { path: dir.clone(), source })?;
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(name) = path.file_name().and_then(|name| name.to_str())
                && let Some(stem) = name.strip_suffix(".ko")
            {
                index.insert(normalize(stem), path);
            }
        }
    }
    Ok(index)
}

/// The modules a module depends on: its `.modinfo` section's `depends=` field (comma-separated,
/// empty when it depends on none).
pub fn module_depends(module: &[u8]) -> Result<Vec<String>, String> {
    let file = object::File::parse(module).map_err(|error| format!("not an ELF object: {error}"))?;
    let section =
        file.section_by_name(".modinfo").ok_or_else(|| "no .modinfo section: not a kernel module".to_owned())?;
    let data = section.data().map_err(|error| format!("unreadable .modinfo: {error}"))?;
    let depends =
        data.split(|byte| *byte == 0).filter_map(|field| field.strip_prefix(b"depends=")).next().unwrap_or_default();
    let depends = std::str::from_utf8(depends).map_err(|_| "depends= is not UTF-8".to_owned())?;
    Ok(depends.split(',').filter(|name| !name.is_empty()).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests;
