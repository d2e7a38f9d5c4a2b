//! The VMM's error type: everything that can stop a VM from being built or from running, as
//! opposed to how a run that did start ended (that is [`crate::Ending`]).

use std::io;
use std::path::PathBuf;

/// What went wrong while setting up or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {reason}")]
    KvmUnavailable {
        /// Why, in words (missing module, permissions, ...).
        reason: String,
    },
    /// A KVM ioctl failed.
    #[error("KVM: {what} failed: {source}")]
    Kvm {
        /// The operation, e.g. `KVM_CREATE_VM`.
        what: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The host's KVM lacks a capability the VMM relies on.
    #[error("KVM lacks {0}, which mica-vmm needs")]
    KvmCapability(&'static str),
    /// The host CPU (as KVM reports it) lacks a feature the guest needs.
    #[error("the CPU that KVM offers lacks {0}, which the guest kernel needs")]
    CpuFeatureMissing(&'static str),
    /// The kernel file could not be opened or read.
    #[error("cannot read kernel {path}: {source}")]
    KernelUnreadable {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel file is not a 64-bit little-endian ELF.
    #[error("kernel {path} is not an x86_64 ELF file ({detail})")]
    NotElf {
        /// The path given.
        path: PathBuf,
        /// What the loader found.
        detail: String,
    },
    /// The ELF has no `XEN_ELFNOTE_PHYS32_ENTRY` note, so there is no PVH entry point.
    #[error(
        "kernel {path} has no PVH entry point (no XEN_ELFNOTE_PHYS32_ENTRY note in a PT_NOTE segment); \
         mica-vmm boots PVH kernels only"
    )]
    NoPvhNote {
        /// The path given.
        path: PathBuf,
    },
    /// The ELF could not be loaded into guest memory.
    #[error("cannot load kernel {path} into {memory_mib} MiB of guest memory: {detail}")]
    KernelLoad {
        /// The path given.
        path: PathBuf,
        /// The guest memory size.
        memory_mib: u64,
        /// What the loader said, with a hint.
        detail: String,
    },
    /// The initrd could not be opened or read.
    #[error("cannot read initrd {path}: {source}")]
    InitrdUnreadable {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The initrd does not fit between the kernel and the end of guest memory.
    #[error(
        "initrd {path} ({size} bytes) does not fit between the kernel's end ({kernel_end:#x}) and the end of \
         {memory_mib} MiB of guest memory: try a larger --memory-mib"
    )]
    InitrdTooLarge {
        /// The path given.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Where the kernel ends.
        kernel_end: u64,
        /// The guest memory size.
        memory_mib: u64,
    },
    /// The requested guest memory size is out of range.
    #[error("guest memory of {mib} MiB is out of range: {min_mib} MiB to {max_mib} MiB")]
    MemorySize {
        /// The size asked for.
        mib: u64,
        /// The least accepted.
        min_mib: u64,
        /// The most accepted.
        max_mib: u64,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    MemoryAlloc {
        /// The size asked for.
        mib: u64,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// The command line is not acceptable.
    #[error("bad kernel command line: {0}")]
    Cmdline(String),
    /// The boot structures could not be written into guest memory.
    #[error("cannot write the boot structures into guest memory: {0}")]
    BootParams(String),
    /// The disk image of a virtio-blk device could not be opened or measured.
    #[error("cannot open disk image {path}{}: {source}", if *.read_only { " read-only" } else { " read-write" })]
    DiskImage {
        /// The path given.
        path: PathBuf,
        /// Whether it was to be opened read-only.
        read_only: bool,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The Unix socket behind a virtio-console port could not be set up.
    #[error("cannot {what} the console port socket {path}: {source}")]
    ConsoleSocket {
        /// What was being done ("bind", "remove the stale", ...).
        what: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The requested number of vCPUs is out of range.
    #[error("{vcpus} vCPUs: mica-vmm runs 1 to {max}")]
    VcpuCount {
        /// The number asked for.
        vcpus: u32,
        /// The most accepted.
        max: u32,
    },
    /// The MP table could not be written.
    #[error("cannot write the MP table: {0}")]
    MpTable(&'static str),
    /// A virtio-blk block size that is not a power of two of at least 512 bytes.
    #[error("virtio-blk block size {0} is not a power of two of at least 512 bytes")]
    BlockSize(u32),
    /// A virtio device declared a queue size the virtio-queue crate refuses (a bug in the device
    /// model, not in the guest).
    #[error("virtio device {device_id}: queue {index} has maximum size {max_size}, not a power of two from 1 to 32768")]
    VirtioQueueSize {
        /// The device ID.
        device_id: u32,
        /// The queue's index.
        index: usize,
        /// The size declared.
        max_size: u16,
    },
    /// A host-side resource (eventfd, signal handler, thread) could not be set up.
    #[error("host: {what}: {source}")]
    Host {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a failed KVM ioctl.
    pub(crate) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { what, source }
    }

    /// Explains why `/dev/kvm` did not open, from the errno.
    pub(crate) fn kvm_open(err: &kvm_ioctls::Error) -> Error {
        let reason = match err.errno() {
            libc::ENOENT => "it does not exist: the kvm module is not loaded, or this machine (or the VM it \
                             runs in) has no hardware virtualization"
                .to_string(),
            libc::EACCES | libc::EPERM => "permission denied: run as root or join the group that owns /dev/kvm \
                                           (usually `kvm`)"
                .to_string(),
            libc::ENXIO | libc::ENODEV => "no KVM device behind it: the kvm module is loaded but has no backend \
                                           (kvm_intel, kvm_amd)"
                .to_string(),
            _ => format!("{err}"),
        };
        Error::KvmUnavailable { reason }
    }

    /// Wraps a host OS error.
    pub(crate) fn host(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Host { what, source }
    }
}
