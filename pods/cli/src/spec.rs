//! Pod specs: a small TOML subset of a Kubernetes Pod, checked completely before anything starts.
//!
//! ```toml
//! name = "debian"                 # DNS label: a-z, 0-9, '-', at most 63
//! backend = "auto"                # auto | qemu | mica-vmm
//! kernel = "vmlinuz"              # a Linux bzImage (relative paths: to the spec file)
//! initramfs = "initramfs.cpio"    # with mica-agent as its init's last step
//! cmdline = "loglevel=4"          # appended to what Mica sets (console, pod name)
//! vcpus = 1
//! memory_mib = 256
//! command = ["/bin/sh", "-c", "while true; do date; sleep 5; done"]   # optional main process
//! env = { GREETING = "hello" }    # for `command` and every exec
//! [[secrets]]                     # read-only in the guest under /run/secrets/<name>
//! name = "api-token"
//! path = "token.txt"
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The most vCPUs a pod may have.
pub const MAX_VCPUS: u32 = 64;
/// The least memory Debian's kernel boots in with an initramfs.
pub const MIN_MEMORY_MIB: u32 = 64;
/// Memory when the spec gives none.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Secrets, in all, are at most this large (they travel on a small read-only disk).
pub const MAX_SECRETS_BYTES: u64 = 16 << 20;

/// Which hypervisor runs the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The best one that can run here.
    Auto,
    /// `qemu-system-x86_64 -M microvm`, with KVM when hardware-backed, else TCG.
    Qemu,
    /// Mica's own rust-vmm VMM (KVM only).
    MicaVmm,
}

/// One secret: a host file, read-only in the guest at `/run/secrets/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Its file name in the guest.
    pub name: String,
    /// The host file (absolute after [`load`]).
    pub path: PathBuf,
}

/// A checked pod spec. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// The pod's name.
    pub name: String,
    /// Its hypervisor.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// The Linux kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// Extra kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Virtual CPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// The pod's main process, started when the agent is ready (empty: none).
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of `command` and of every exec.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Read-only files under `/run/secrets`.
    #[serde(default)]
    pub secrets: Vec<Secret>,
}

fn default_backend() -> Backend {
    Backend::Auto
}

fn default_vcpus() -> u32 {
    1
}

fn default_memory() -> u32 {
    DEFAULT_MEMORY_MIB
}

/// Reads and checks the spec at `path`.
pub fn load(path: &Path) -> Result<PodSpec> {
    let text = fs::read_to_string(path).with_context(|| format!("pod spec {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base, host_memory_mib()?).with_context(|| format!("pod spec {}", path.display()))
}

/// Parses and checks a spec; relative paths are resolved against `base`; `host_mib` is the
/// host's memory, which a pod may not exceed.
pub fn parse(text: &str, base: &Path, host_mib: u64) -> Result<PodSpec> {
    let mut spec: PodSpec = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    check_name(&spec.name)?;
    spec.kernel = existing_file(base, &spec.kernel, "kernel")?;
    check_bzimage(&spec.kernel)?;
    spec.initramfs = existing_file(base, &spec.initramfs, "initramfs")?;
    if !(1..=MAX_VCPUS).contains(&spec.vcpus) {
        bail!("vcpus = {}: a pod has 1 to {MAX_VCPUS} vCPUs", spec.vcpus);
    }
    if spec.memory_mib < MIN_MEMORY_MIB {
        bail!("memory_mib = {}: Linux needs at least {MIN_MEMORY_MIB} MiB", spec.memory_mib);
    }
    if u64::from(spec.memory_mib) > host_mib {
        bail!("memory_mib = {}: more than this host's {host_mib} MiB of RAM", spec.memory_mib);
    }
    if spec.cmdline.contains(" -- ") || spec.cmdline.starts_with("--") {
        bail!("cmdline {:?}: `--` would hand the rest to init; Mica's init takes no arguments", spec.cmdline);
    }
    for key in spec.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            bail!("env key {key:?} is not a valid variable name");
        }
    }
    if spec.command.first().is_some_and(String::is_empty) {
        bail!("command: the program name is empty");
    }
    let mut total = 0;
    let mut names = BTreeMap::new();
    for secret in &mut spec.secrets {
        check_secret_name(&secret.name)?;
        if names.insert(secret.name.clone(), ()).is_some() {
            bail!("secret {:?} is listed twice", secret.name);
        }
        secret.path = existing_file(base, &secret.path, &format!("secret {:?}", secret.name))?;
        total += fs::metadata(&secret.path).map(|m| m.len()).unwrap_or(0);
    }
    if total > MAX_SECRETS_BYTES {
        bail!("secrets hold {total} bytes; at most {MAX_SECRETS_BYTES} bytes in all");
    }
    Ok(spec)
}

/// A pod name: a DNS label, so it is safe in paths, host names and command lines.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("name {name:?}: a pod name is 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'");
    }
    Ok(())
}

fn check_secret_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!("secret name {name:?}: use letters, digits, '-', '_' and '.' (it becomes a file name)");
    }
    Ok(())
}

fn existing_file(base: &Path, path: &Path, what: &str) -> Result<PathBuf> {
    let full = base.join(path);
    let meta = fs::metadata(&full).with_context(|| format!("{what} {}", full.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", full.display());
    }
    full.canonicalize().with_context(|| format!("{what} {}", full.display()))
}

/// A bzImage has the Linux boot protocol's `HdrS` signature at offset 0x202.
fn check_bzimage(path: &Path) -> Result<()> {
    let mut header = [0u8; 0x206];
    let read = fs::File::open(path).and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header));
    if read.is_err() || &header[0x202..0x206] != b"HdrS" {
        bail!("kernel {} is not a Linux bzImage (no \"HdrS\" boot header at offset 0x202)", path.display());
    }
    Ok(())
}

/// This host's RAM in MiB (`MemTotal` of `/proc/meminfo`).
fn host_memory_mib() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .context("no MemTotal in /proc/meminfo")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with a fake bzImage, an initramfs and a secret.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut kernel = vec![0u8; 0x400];
        kernel[0x202..0x206].copy_from_slice(b"HdrS");
        fs::write(dir.path().join("vmlinuz"), kernel).unwrap();
        fs::write(dir.path().join("initramfs.cpio"), b"070701").unwrap();
        fs::write(dir.path().join("token.txt"), b"s3cret").unwrap();
        dir
    }

    const MINIMAL: &str = "name = \"web-1\"\nkernel = \"vmlinuz\"\ninitramfs = \"initramfs.cpio\"\n";

    fn error(text: &str) -> String {
        let dir = fixture();
        format!("{:#}", parse(text, dir.path(), 4096).unwrap_err())
    }

    #[test]
    fn a_minimal_spec_gets_defaults_and_absolute_paths() {
        let dir = fixture();
        let spec = parse(MINIMAL, dir.path(), 4096).unwrap();
        assert_eq!(spec.name, "web-1");
        assert_eq!(spec.backend, Backend::Auto);
        assert_eq!((spec.vcpus, spec.memory_mib), (1, DEFAULT_MEMORY_MIB));
        assert!(spec.kernel.is_absolute() && spec.kernel.ends_with("vmlinuz"));
        assert!(spec.command.is_empty() && spec.secrets.is_empty());
    }

    #[test]
    fn a_full_spec_parses() {
        let dir = fixture();
        let text = format!(
            "{MINIMAL}backend = \"qemu\"\nvcpus = 2\nmemory_mib = 512\ncmdline = \"loglevel=4\"\n\
             command = [\"/bin/sh\", \"-c\", \"sleep 1\"]\nenv = {{ A = \"1\" }}\n\
             [[secrets]]\nname = \"api-token\"\npath = \"token.txt\"\n"
        );
        let spec = parse(&text, dir.path(), 4096).unwrap();
        assert_eq!(spec.backend, Backend::Qemu);
        assert_eq!(spec.env["A"], "1");
        assert_eq!(spec.secrets[0].name, "api-token");
        assert!(spec.secrets[0].path.is_absolute());
    }

    #[test]
    fn bad_specs_name_what_is_wrong() {
        assert!(error(&format!("{MINIMAL}colour = \"red\"")).contains("unknown field `colour`"));
        assert!(error(&MINIMAL.replace("web-1", "Web_1")).starts_with("name \"Web_1\": a pod name is"));
        assert!(error(&MINIMAL.replace("vmlinuz", "nope")).starts_with("kernel "));
        assert!(error(&MINIMAL.replace("vmlinuz", "initramfs.cpio")).contains("is not a Linux bzImage"));
        assert!(error(&format!("{MINIMAL}vcpus = 0")).starts_with("vcpus = 0: a pod has 1 to 64 vCPUs"));
        assert_eq!(
            error(&format!("{MINIMAL}memory_mib = 8192")),
            "memory_mib = 8192: more than this host's 4096 MiB of RAM"
        );
        assert!(error(&format!("{MINIMAL}memory_mib = 16")).contains("at least 64 MiB"));
        assert!(error(&format!("{MINIMAL}backend = \"xen\"")).contains("unknown variant `xen`"));
        assert!(error(&format!("{MINIMAL}cmdline = \"quiet -- sh\"")).contains("`--` would hand the rest to init"));
        assert!(error(&format!("{MINIMAL}env = {{ \"A=B\" = \"1\" }}")).contains("env key \"A=B\""));
        let secret = |name: &str, path: &str| format!("{MINIMAL}[[secrets]]\nname = \"{name}\"\npath = \"{path}\"\n");
        assert!(error(&secret("../etc", "token.txt")).starts_with("secret name \"../etc\""));
        assert!(error(&secret("t", "missing.txt")).starts_with("secret \"t\" "));
        let twice = format!("{}[[secrets]]\nname = \"t\"\npath = \"token.txt\"\n", secret("t", "token.txt"));
        assert_eq!(error(&twice), "secret \"t\" is listed twice");
    }
}
