//! Building a VM: guest memory, the kernel (a PVH ELF or a Linux bzImage) and its boot structures
//! (and the MP table), then KVM (VM, in-kernel irqchip and PIT, COM1's irqfd, the virtio-mmio
//! devices' irqfds, the vCPUs with their CPUID and local APIC wiring, and vCPU 0's entry
//! registers).
//!
//! Everything that depends only on the kernel file and the configuration is done before
//! `/dev/kvm` is opened, so that a bad kernel path or command line is reported the same way on a
//! machine without KVM.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::boot::{self, LoadedKernel};
use crate::cpuid;
use crate::devices::{COM1_GSI, IrqLine, MmioBus, PortBus, SerialOutput, SerialSink, SharedSink};
use crate::error::{Error, Result};
use crate::layout::{
    DEFAULT_MEMORY, MAX_MEMORY, MIB, MIN_MEMORY, VIRTIO_MMIO_GSI_BASE, VIRTIO_MMIO_START, ZERO_PAGE_START,
};
use crate::virtio::block::Block;
use crate::virtio::console::{Console, UnixSocketBackend, WriterBackend};
use crate::virtio::mmio::{self, MMIO_WINDOW_SIZE, MmioTransport};
use crate::{linux, mptable, regs};

/// Where KVM may put the three pages it needs for real-mode emulation on Intel hosts without
/// unrestricted guest support: just below the BIOS area at the top of 4 GiB, where QEMU puts them.
const TSS_ADDRESS: usize = 0xfffb_d000;

/// What to boot, and how.
#[derive(Debug)]
pub struct VmConfig {
    /// The PVH ELF kernel.
    pub kernel: PathBuf,
    /// The kernel command line (printable ASCII, at most 4095 bytes).
    pub cmdline: String,
    /// An initrd: one PVH boot module (Mica's boot bundle), placed at the top of guest RAM.
    pub initrd: Option<PathBuf>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs (1 to [`MAX_VCPUS`]), described to the guest by an MP table.
    pub vcpus: u8,
    /// Where COM1's output goes besides the capture buffer.
    pub serial: SerialOutput,
    /// A raw disk image for a virtio-blk device (virtio-mmio, at
    /// [`VIRTIO_MMIO_START`] with GSI [`VIRTIO_MMIO_GSI_BASE`]).
    pub disk: Option<DiskConfig>,
    /// A Unix socket for the guest agent's channel: a virtio-console device (the next
    /// virtio-mmio slot) whose port 1, `mica.agent`, is this socket and whose port 0 (`hvc0`)
    /// writes where the serial output goes.
    pub agent_socket: Option<PathBuf>,
}

/// A virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image file (or block device).
    pub path: PathBuf,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

impl VmConfig {
    /// A configuration for `kernel` with an empty command line, the default memory size
    /// (128 MiB) and serial output captured only.
    pub fn new(kernel: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            cmdline: String::new(),
            initrd: None,
            memory_mib: DEFAULT_MEMORY / MIB,
            vcpus: 1,
            serial: SerialOutput::Capture,
            disk: None,
            agent_socket: None,
        }
    }

    /// Sets the command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> VmConfig {
        self.cmdline = cmdline.into();
        self
    }

    /// Sets the initrd (one boot module).
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> VmConfig {
        self.initrd = Some(path.into());
        self
    }

    /// Sets the memory size in MiB.
    pub fn memory_mib(mut self, mib: u64) -> VmConfig {
        self.memory_mib = mib;
        self
    }

    /// Sets the number of vCPUs.
    pub fn vcpus(mut self, vcpus: u8) -> VmConfig {
        self.vcpus = vcpus;
        self
    }

    /// Sets where serial output goes.
    pub fn serial(mut self, serial: SerialOutput) -> VmConfig {
        self.serial = serial;
        self
    }

    /// Gives the guest the raw image at `path` as a virtio-blk disk on virtio-mmio, read-only if
    /// `read_only`. The guest is told where it is on its command line
    /// ([`mmio::linux_cmdline_word`], which Linux and the Mica kernel read).
    pub fn disk(mut self, path: impl Into<PathBuf>, read_only: bool) -> VmConfig {
        self.disk = Some(DiskConfig { path: path.into(), read_only });
        self
    }

    /// Gives the guest a virtio-console whose `mica.agent` port is a Unix socket listening at
    /// `path` (one client at a time; a stale socket there is replaced). The guest is told where
    /// the device is on its command line, like the disk.
    pub fn agent_socket(mut self, path: impl Into<PathBuf>) -> VmConfig {
        self.agent_socket = Some(path.into());
        self
    }
}

/// The virtio-mmio slots in use, in order: the disk, then the console.
fn virtio_slots(config: &VmConfig) -> u32 {
    u32::from(config.disk.is_some()) + u32::from(config.agent_socket.is_some())
}

/// The register window and GSI of virtio-mmio slot `slot`.
fn slot_address(slot: u32) -> (u64, u32) {
    (VIRTIO_MMIO_START + u64::from(slot) * crate::layout::VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_GSI_BASE + slot)
}

/// The command line the guest gets: `cmdline`, and the word that tells its virtio-mmio driver
/// about each of `devices` devices (Linux and the Mica kernel both read it; there are no
/// firmware tables to find them in).
fn guest_cmdline(cmdline: &str, devices: u32) -> String {
    let mut words: Vec<String> = Vec::new();
    if !cmdline.trim().is_empty() {
        words.push(cmdline.trim().to_owned());
    }
    for slot in 0..devices {
        let (base, gsi) = slot_address(slot);
        words.push(mmio::linux_cmdline_word(base, gsi));
    }
    words.join(" ")
}

/// The most vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 64;

/// A VM with its vCPUs, ready to enter its kernel: a PVH ELF (the Mica kernel) or a Linux bzImage
/// (a legacy pod), whichever [`VmConfig::new`] named. Run it once with [`Vm::run`].
///
/// The fields are declared so that the vCPUs and the VM are dropped (closed) before the guest
/// memory they point into is unmapped.
#[derive(Debug)]
pub struct Vm {
    /// vCPU `i` has local APIC id `i`; vCPU 0 is the bootstrap processor, the others wait for
    /// INIT and STARTUP from it (KVM's in-kernel local APIC does that).
    pub(crate) vcpus: Vec<VcpuFd>,
    // Held for the VM's lifetime: closing it would tear the VM down.
    _vm: VmFd,
    pub(crate) memory: GuestMemoryMmap,
    /// Port I/O and MMIO, shared by the vCPU threads.
    pub(crate) ports: Mutex<PortBus>,
    pub(crate) mmio: Mutex<MmioBus>,
    /// The virtio console, shared with the I/O thread that moves host input into it.
    pub(crate) console: Option<Arc<Mutex<MmioTransport<Console>>>>,
    kernel: LoadedKernel,
    setup: Duration,
}

impl Vm {
    /// Builds the VM for `config`: checks the memory size and the command line, loads the kernel,
    /// writes the boot structures, then sets up KVM.
    pub fn new(config: VmConfig) -> Result<Vm> {
        let started = Instant::now();
        let bytes = memory_bytes(config.memory_mib)?;
        if !(1..=MAX_VCPUS).contains(&config.vcpus) {
            return Err(Error::VcpuCount { vcpus: u32::from(config.vcpus), max: u32::from(MAX_VCPUS) });
        }
        boot::check_cmdline(&config.cmdline)?;
        let disk = config.disk.as_ref().map(|d| Block::open(&d.path, d.read_only)).transpose()?;
        let agent = config.agent_socket.as_ref().map(UnixSocketBackend::bind).transpose()?;
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes as usize)])
            .map_err(|source| Error::MemoryAlloc { mib: config.memory_mib, source })?;
        regs::write_gdt(&memory)?;
        mptable::write(&memory, config.vcpus)?;
        let is_linux = linux::is_bzimage(&config.kernel)?;
        let cmdline = guest_cmdline(&config.cmdline, virtio_slots(&config));
        let (kernel, entry_regs) = if is_linux {
            let kernel = linux::load(&memory, &config.kernel, config.initrd.as_deref(), &cmdline)?;
            log::debug!(
                "bzImage {} loaded at {:#x} (with its decompression area up to {:#x}); zero page at {:#x}",
                config.kernel.display(),
                kernel.entry.raw_value(),
                kernel.end,
                ZERO_PAGE_START.raw_value()
            );
            (kernel, regs::linux_regs(kernel.entry, ZERO_PAGE_START))
        } else {
            let kernel = boot::load_kernel(&memory, &config.kernel)?;
            let initrd = config.initrd.as_deref().map(|p| boot::load_initrd(&memory, p, kernel.end)).transpose()?;
            let start_info = boot::write_boot_info(&memory, &cmdline, initrd)?;
            log::debug!(
                "kernel {} loaded up to {:#x}, PVH entry {:#x}; start info at {:#x}",
                config.kernel.display(),
                kernel.end,
                kernel.entry.raw_value(),
                start_info.raw_value()
            );
            (kernel, regs::pvh_regs(kernel.entry, start_info))
        };

        let kvm = Kvm::new().map_err(|e| Error::kvm_open(&e))?;
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
            (Cap::Pit2, "an in-kernel PIT (KVM_CAP_PIT2)"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::KvmCapability(name));
            }
        }
        let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
        let kvm_max = kvm.get_max_vcpus();
        if usize::from(config.vcpus) > kvm_max {
            return Err(Error::VcpuCount { vcpus: u32::from(config.vcpus), max: kvm_max as u32 });
        }
        map_memory(&vm, &memory)?;
        if let Err(e) = vm.set_tss_address(TSS_ADDRESS) {
            // Only Intel hosts without unrestricted guest need it; others may refuse it.
            log::debug!("KVM_SET_TSS_ADDR refused ({e}); going on without it");
        }
        vm.create_irq_chip().map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
        let irq = EventFd::new(EFD_NONBLOCK).map_err(Error::host("eventfd for COM1"))?;
        vm.register_irqfd(&irq, COM1_GSI).map_err(Error::kvm("KVM_IRQFD"))?;
        let sink = SharedSink::new(SerialSink::new(config.serial));
        let ports = PortBus::new(IrqLine(irq), sink.clone());
        let mut mmio = MmioBus::default();
        let mut slot = 0;
        // An irqfd pulses its line: edge-triggered, as ISA lines on the PIC and I/O APIC are.
        let mut next_slot = |what: &'static str| -> Result<(u64, EventFd)> {
            let (base, gsi) = slot_address(slot);
            slot += 1;
            let irq = EventFd::new(EFD_NONBLOCK).map_err(Error::host(what))?;
            vm.register_irqfd(&irq, gsi).map_err(Error::kvm("KVM_IRQFD"))?;
            Ok((base, irq))
        };
        if let Some(block) = disk {
            let (base, irq) = next_slot("eventfd for the virtio-blk disk")?;
            let transport = MmioTransport::new(block, memory.clone(), Box::new(irq))?;
            mmio.insert(base, MMIO_WINDOW_SIZE, Box::new(transport));
        }
        let mut console = None;
        if let Some(agent) = agent {
            let (base, irq) = next_slot("eventfd for the virtio console")?;
            let device = Console::new(Box::new(WriterBackend::new(Box::new(sink))), Box::new(agent));
            let transport = Arc::new(Mutex::new(MmioTransport::new(device, memory.clone(), Box::new(irq))?));
            mmio.insert(base, MMIO_WINDOW_SIZE, Box::new(transport.clone()));
            console = Some(transport);
        }

        let supported =
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let vcpus = (0..config.vcpus)
            .map(|index| setup_vcpu(&vm, &supported, index, config.vcpus, (index == 0).then_some(&entry_regs)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Vm {
            vcpus,
            _vm: vm,
            memory,
            ports: Mutex::new(ports),
            mmio: Mutex::new(mmio),
            console,
            kernel,
            setup: started.elapsed(),
        })
    }

    /// The kernel's PVH entry point.
    pub fn entry(&self) -> GuestAddress {
        self.kernel.entry
    }

    /// How long [`Vm::new`] took (memory, kernel load, KVM setup).
    pub fn setup_duration(&self) -> Duration {
        self.setup
    }
}

/// Creates vCPU `index` of `count`: its CPUID (APIC id `index`), its local APIC's LINT0 as
/// ExtINT and LINT1 as NMI (virtual wire mode, as the MP table says), and for the bootstrap
/// processor (`regs` given) the entry state: flat 32-bit protected mode (what both PVH and
/// Linux's 32-bit boot protocol expect) with `regs` (entry point, and `%ebx` at the start info or
/// `%esi` at the zero page), the FPU at its power-on defaults. The others wait for the guest's
/// INIT and STARTUP.
fn setup_vcpu(
    vm: &VmFd,
    supported: &kvm_bindings::CpuId,
    index: u8,
    count: u8,
    regs: Option<&kvm_bindings::kvm_regs>,
) -> Result<VcpuFd> {
    let vcpu = vm.create_vcpu(u64::from(index)).map_err(Error::kvm("KVM_CREATE_VCPU"))?;
    let guest_cpuid = cpuid::guest_cpuid(supported, index, count)?;
    vcpu.set_cpuid2(&guest_cpuid).map_err(Error::kvm("KVM_SET_CPUID2"))?;
    if index == 0 {
        check_cpuid_applied(&vcpu, &guest_cpuid);
    }
    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
    regs::set_lint_virtual_wire(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(Error::kvm("KVM_SET_LAPIC"))?;
    let Some(regs) = regs else { return Ok(vcpu) };
    let sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&regs::pvh_sregs(sregs)).map_err(Error::kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    let mut fpu = vcpu.get_fpu().map_err(Error::kvm("KVM_GET_FPU"))?;
    // The x87 control word and MXCSR at their power-on defaults (all exceptions masked).
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    vcpu.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))?;
    Ok(vcpu)
}

/// Reads the CPUID back and says so when KVM did not keep what was set. The software KVM
/// `kvm_pvm` accepts `KVM_SET_CPUID2` but reads back (and shows the guest) feature bits derived
/// from the host CPU, so XSAVE and AVX stay visible to the guest there.
fn check_cpuid_applied(vcpu: &VcpuFd, set: &kvm_bindings::CpuId) {
    let Ok(back) = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES) else { return };
    let leaf1 =
        |c: &kvm_bindings::CpuId| c.as_slice().iter().find(|e| e.function == 1 && e.index == 0).map_or(0, |e| e.ecx);
    let leaked = leaf1(&back) & cpuid::LEAF1_ECX_HIDDEN & !leaf1(set);
    if leaked != 0 {
        log::info!(
            "KVM did not keep the CPUID the VMM set: leaf 1 ECX reads back with hidden bits {leaked:#x} (XSAVE, AVX, \
             ...) set, so the guest sees them (backend: {})",
            crate::kvm_backend().unwrap_or("unknown")
        );
    }
}

/// Checks a memory size in MiB and converts it to bytes.
pub fn memory_bytes(mib: u64) -> Result<u64> {
    let bytes = mib.checked_mul(MIB).filter(|b| (MIN_MEMORY..=MAX_MEMORY).contains(b));
    bytes.ok_or(Error::MemorySize { mib, min_mib: MIN_MEMORY / MIB, max_mib: MAX_MEMORY / MIB })
}

/// Registers every guest memory region with KVM, one slot each.
fn map_memory(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in memory.iter().enumerate() {
        let host = region.as_ptr() as u64;
        let descriptor = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host,
        };
        // SAFETY: the region is a live anonymous mapping of exactly `memory_size` bytes owned by
        // `memory`, which `Vm` keeps (and drops only after the VM and vCPU fds are closed), so
        // KVM never sees the host range unmapped while the guest can touch it.
        unsafe { vm.set_user_memory_region(descriptor) }.map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_size_bounds() {
        assert_eq!(memory_bytes(128).expect("128 MiB"), 128 * MIB);
        assert_eq!(memory_bytes(2).expect("2 MiB"), 2 * MIB);
        assert_eq!(memory_bytes(3072).expect("3 GiB"), 3072 * MIB);
        for bad in [0, 1, 3073, u64::MAX] {
            let e = memory_bytes(bad).expect_err("out of range");
            assert!(e.to_string().contains("2 MiB to 3072 MiB"), "{e}");
        }
    }

    #[test]
    fn config_errors_come_before_kvm() {
        let e = Vm::new(VmConfig::new("/nonexistent/mica-kernel")).expect_err("no kernel");
        assert!(matches!(e, Error::KernelUnreadable { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/mica-kernel"), "{e}");
        let e = Vm::new(VmConfig::new("/nonexistent").memory_mib(1 << 20)).expect_err("too big");
        assert!(matches!(e, Error::MemorySize { .. }), "{e}");
        let e = Vm::new(VmConfig::new("/nonexistent").cmdline("a\nb")).expect_err("bad cmdline");
        assert!(matches!(e, Error::Cmdline(_)), "{e}");
        let e = Vm::new(VmConfig::new("/nonexistent").disk("/nonexistent/disk.img", false)).expect_err("no disk");
        assert!(matches!(e, Error::DiskImage { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
    }

    #[test]
    fn the_guest_is_told_where_the_disk_is() {
        let config = VmConfig::new("bzImage").cmdline("console=ttyS0").disk("disk.img", true);
        assert_eq!(config.disk, Some(DiskConfig { path: "disk.img".into(), read_only: true }));
        assert_eq!(
            guest_cmdline("console=ttyS0 root=/dev/vda", 1),
            "console=ttyS0 root=/dev/vda virtio_mmio.device=512@0xd0000000:5"
        );
        assert_eq!(guest_cmdline("  ", 1), "virtio_mmio.device=512@0xd0000000:5");
        assert_eq!(guest_cmdline("", 2), "virtio_mmio.device=512@0xd0000000:5 virtio_mmio.device=512@0xd0001000:6");
        assert_eq!(guest_cmdline("console=ttyS0", 0), "console=ttyS0", "no disk, no word");
        let both = VmConfig::new("bzImage").disk("disk.img", true).agent_socket("agent.sock");
        assert_eq!(virtio_slots(&both), 2);
        assert_eq!(virtio_slots(&VmConfig::new("bzImage").agent_socket("agent.sock")), 1);
        assert_eq!(slot_address(1), (0xd000_1000, 6));
    }

    #[test]
    fn vcpu_counts_are_checked_before_kvm() {
        for bad in [0, MAX_VCPUS + 1] {
            let e = Vm::new(VmConfig::new("/nonexistent/kernel").vcpus(bad)).expect_err("bad count");
            assert!(matches!(e, Error::VcpuCount { .. }), "{e}");
            assert!(e.to_string().contains("mica-vmm runs 1 to 64"), "{e}");
        }
    }

    #[test]
    fn a_bad_agent_socket_is_refused_before_kvm() {
        let scratch = tempfile::tempdir().expect("scratch");
        let in_the_way = scratch.path().join("agent.sock");
        std::fs::write(&in_the_way, b"not a socket").expect("file");
        let e = Vm::new(VmConfig::new("/nonexistent/kernel").agent_socket(&in_the_way))
            .expect_err("a regular file in the way");
        assert!(matches!(e, Error::ConsoleSocket { .. }), "{e}");
        assert!(e.to_string().contains("agent.sock"), "{e}");
        assert_eq!(std::fs::read(&in_the_way).expect("still there"), b"not a socket", "the file is left alone");
    }
}
