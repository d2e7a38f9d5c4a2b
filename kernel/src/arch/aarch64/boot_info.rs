//! What the loader handed over, from the flattened device tree (through the `flat_device_tree` crate, a fork of `fdt` that returns errors where `fdt` panics): the RAM
//! (`device_type = "memory"` nodes), the reserved ranges (the header's reservation block and
//! `/reserved-memory`), the command line (`/chosen` `bootargs`), the boot module (the initrd,
//! `/chosen` `linux,initrd-start` and `-end`), and the platform: the CPUs and how to start them
//! (PSCI), the interrupt controller, the timer's interrupts, the virtio-mmio transports and the
//! seed `/chosen` `rng-seed` carries. All of it is copied, so that nothing below depends on where
//! the loader put the device tree.

use core::fmt;

use flat_device_tree::Fdt;

use crate::boot_record::{BootRecord, MemoryRange, Module, RecordError};
use crate::mem::range::PhysRange;
/// The largest device tree read.
const MAX_DTB: usize = 2 << 20;
/// The most CPUs recorded.
pub const MAX_CPUS: usize = 16;
/// The most virtio-mmio transports recorded.
pub const MAX_VIRTIO_MMIO: usize = 32;
/// The most bytes of `rng-seed` kept.
pub const MAX_SEED: usize = 64;

/// Why the boot information cannot be used.
#[derive(Clone, Copy, Debug)]
pub enum BootInfoError {
    /// No device tree where `x0` pointed, or a malformed one.
    DeviceTree(u64, flat_device_tree::Error),
    /// The device tree is larger than Mica reads.
    TooLarge(u64),
    /// A node is missing or malformed.
    Malformed(&'static str),
    /// What does not fit in the boot record.
    Record(RecordError),
}

impl From<RecordError> for BootInfoError {
    fn from(e: RecordError) -> Self {
        BootInfoError::Record(e)
    }
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::DeviceTree(at, e) => write!(f, "no valid device tree at {at:#x}: {e:?}"),
            BootInfoError::TooLarge(size) => write!(f, "device tree of {size} bytes; Mica reads at most {MAX_DTB}"),
            BootInfoError::Malformed(what) => write!(f, "device tree: {what}"),
            BootInfoError::Record(e) => write!(f, "{e}"),
        }
    }
}

/// What a memory map entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// RAM the kernel may use.
    Ram,
    /// RAM the firmware keeps (a reservation).
    Reserved,
}

/// One memory range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEntry {
    /// Physical start.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: MemoryKind,
}

impl MemoryRange for MemoryEntry {
    fn range(&self) -> PhysRange {
        PhysRange::sized(self.addr, self.size)
    }

    fn is_ram(&self) -> bool {
        self.kind == MemoryKind::Ram
    }

    fn is_reservation(&self) -> bool {
        self.kind == MemoryKind::Reserved
    }
}

/// How PSCI calls reach the firmware or hypervisor (`/psci` `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `hvc #0`.
    Hvc,
    /// `smc #0`.
    Smc,
}

/// The generic interrupt controller (`arm,cortex-a15-gic` and kin: v2; `arm,gic-v3`: v3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    /// 2 or 3.
    pub version: u8,
    /// The distributor's registers.
    pub distributor: PhysRange,
    /// The CPU interface's registers (v2) or the redistributors' (v3).
    pub cpu: PhysRange,
}

/// One virtio-mmio transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Its registers.
    pub regs: PhysRange,
    /// Its interrupt, as the GIC numbers it (SPI n is INTID 32 + n).
    pub intid: u32,
}

/// The machine, as the device tree describes it.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    /// Each CPU's `MPIDR` affinity (its `reg`), boot CPU first as the tree lists them.
    pub cpus: [Option<u64>; MAX_CPUS],
    /// How many CPUs the tree lists (more than [`MAX_CPUS`] are counted, not kept).
    pub cpus_listed: usize,
    /// PSCI's conduit and the newest version the tree says it speaks (`arm,psci-1.0` is 10).
    pub psci: Option<(PsciConduit, u8)>,
    /// The interrupt controller.
    pub gic: Option<Gic>,
    /// The generic timer's interrupts: secure physical, physical, virtual, hypervisor (INTIDs).
    pub timer: Option<[u32; 4]>,
    /// The virtio-mmio transports.
    pub virtio: [Option<VirtioMmio>; MAX_VIRTIO_MMIO],
    /// The console UART's registers.
    pub uart: Option<PhysRange>,
    /// The PL031 real-time clock's registers.
    pub rtc: Option<PhysRange>,
    /// `/chosen` `rng-seed`: random bytes from the loader.
    pub seed: [u8; MAX_SEED],
    /// How many of them.
    pub seed_len: usize,
}

impl Platform {
    const fn empty() -> Platform {
        Platform {
            cpus: [None; MAX_CPUS],
            cpus_listed: 0,
            psci: None,
            gic: None,
            timer: None,
            virtio: [None; MAX_VIRTIO_MMIO],
            uart: None,
            rtc: None,
            seed: [0; MAX_SEED],
            seed_len: 0,
        }
    }

    /// The virtio-mmio transports.
    pub fn virtio_transports(&self) -> impl Iterator<Item = VirtioMmio> + '_ {
        self.virtio.iter().flatten().copied()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device tree: {} CPUs (MPIDR", self.cpus_listed)?;
        for mpidr in self.cpus.iter().flatten() {
            write!(f, " {mpidr:#x}")?;
        }
        write!(f, ")")?;
        match self.psci {
            Some((conduit, version)) => {
                let via = if conduit == PsciConduit::Hvc { "hvc" } else { "smc" };
                write!(f, ", PSCI {}.{} over {via}", version / 10, version % 10)?;
            }
            None => write!(f, ", no PSCI")?,
        }
        match self.gic {
            Some(g) => write!(
                f,
                ", GICv{} (distributor {:#x}, {} {:#x})",
                g.version,
                g.distributor.start,
                if g.version == 2 { "CPU interface" } else { "redistributors" },
                g.cpu.start
            )?,
            None => write!(f, ", no GIC")?,
        }
        if let Some(t) = self.timer {
            write!(f, ", timer INTIDs {} (physical) {} (virtual)", t[1], t[2])?;
        }
        let mut virtio = self.virtio_transports();
        match virtio.next() {
            Some(first) => write!(
                f,
                ", {} virtio-mmio transports (first {:#x}, INTID {})",
                1 + virtio.count(),
                first.regs.start,
                first.intid
            )?,
            None => write!(f, ", no virtio-mmio")?,
        }
        if let Some(uart) = self.uart {
            write!(f, ", PL011 {:#x}", uart.start)?;
        }
        write!(f, ", {} bytes of rng-seed", self.seed_len)
    }
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// The machine as the boot CPU's device tree described it (once [`BootInfo::read`] has run).
pub fn platform() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// The boot information, copied out of the device tree.
#[derive(Debug)]
pub struct BootInfo {
    /// Where the device tree is.
    pub dtb: PhysRange,
    /// The memory ranges, the boot module and the command line.
    record: BootRecord<MemoryEntry>,
    /// The machine.
    pub platform: Platform,
}

/// A property's value as one address or size (one or two cells).
fn cells(value: &[u8]) -> Option<u64> {
    match value.len() {
        4 => Some(u64::from(u32::from_be_bytes(value.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

impl BootInfo {
    /// Reads the device tree at `addr`.
    ///
    /// # Safety
    /// `addr` must be what the loader passed in `x0`, with the boot stub's identity map of RAM
    /// still active.
    pub unsafe fn read(addr: u64) -> Result<BootInfo, BootInfoError> {
        // SAFETY: the header is 40 bytes of RAM the loader wrote (guaranteed by the caller).
        let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
        let size = u64::from(u32::from_be_bytes([header[4], header[5], header[6], header[7]]));
        if size > MAX_DTB as u64 {
            return Err(BootInfoError::TooLarge(size));
        }
        // SAFETY: as above; the loader's device tree is `size` bytes and never written again.
        let blob = unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) };
        let info = Self::parse(addr, blob)?;
        PLATFORM.call_once(|| info.platform);
        Ok(info)
    }

    /// Parses the device tree `blob`, which was at `addr`.
    pub fn parse(addr: u64, blob: &[u8]) -> Result<BootInfo, BootInfoError> {
        let fdt = Fdt::new(blob).map_err(|e| BootInfoError::DeviceTree(addr, e))?;
        check_structure(blob).map_err(BootInfoError::Malformed)?;
        let mut info = BootInfo {
            dtb: PhysRange::sized(addr, fdt.total_size() as u64),
            record: BootRecord::new(),
            platform: Platform::empty(),
        };
        info.platform = read_platform(&fdt)?;
        let record = &mut info.record;
        for node in fdt.all_nodes() {
            if node.property("device_type").and_then(|p| p.as_str()) != Some("memory") {
                continue;
            }
            for r in node.reg() {
                let size = r.size.ok_or(BootInfoError::Malformed("a memory range without a size"))? as u64;
                record.push_memory(MemoryEntry { addr: r.starting_address as u64, size, kind: MemoryKind::Ram })?;
            }
        }
        for r in fdt.memory_reservations() {
            record.push_memory(MemoryEntry {
                addr: r.address() as u64,
                size: r.size() as u64,
                kind: MemoryKind::Reserved,
            })?;
        }
        if let Some(reserved) = fdt.find_node("/reserved-memory") {
            for child in reserved.children() {
                for r in child.reg() {
                    let size = r.size.unwrap_or(0) as u64;
                    record.push_memory(MemoryEntry {
                        addr: r.starting_address as u64,
                        size,
                        kind: MemoryKind::Reserved,
                    })?;
                }
            }
        }
        if let Some(chosen) = fdt.find_node("/chosen") {
            if let Some(args) = chosen.property("bootargs").and_then(|p| p.as_str()) {
                record.set_cmdline(args.as_bytes())?;
            }
            let start = chosen.property("linux,initrd-start").map(|p| cells(p.value));
            let end = chosen.property("linux,initrd-end").map(|p| cells(p.value));
            match (start, end) {
                (None, None) => {}
                (Some(Some(start)), Some(Some(end))) if end >= start => {
                    record.push_module(Module { paddr: start, size: end - start })?;
                }
                _ => return Err(BootInfoError::Malformed("/chosen has a malformed initrd range")),
            }
        }
        Ok(info)
    }

    /// What the device tree says about the machine, for the boot log.
    pub fn summary(&self) -> &Platform {
        &self.platform
    }

    /// Where the loader's own structures lie (the device tree): memory the frame allocator must
    /// not hand out while they are read.
    pub fn boot_structures(&self) -> [PhysRange; 3] {
        [self.dtb, PhysRange::default(), PhysRange::default()]
    }

    /// The memory ranges, the boot module and the command line.
    pub fn record(&self) -> &BootRecord<MemoryEntry> {
        &self.record
    }
}

/// A big-endian word of `b` at `at`.
fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// Checks that the strings block and the memory reservation block lie inside the blob, and that
/// the structure block is a well-formed token stream (inside the blob, nodes balanced and at most
/// 16 deep, properties inside their node and the block, one end), before the parser walks them:
/// it slices the blob at the header's offsets and its node iterator counts depth without checks,
/// so a reservation block past the end (found by the `device_tree` fuzzer), a stray node end or a
/// tree deeper than 64 would be a kernel panic.
fn check_structure(blob: &[u8]) -> Result<(), &'static str> {
    const BEGIN_NODE: u32 = 1;
    const END_NODE: u32 = 2;
    const PROP: u32 = 3;
    const NOP: u32 = 4;
    const END: u32 = 9;
    // Deeper than any real machine's tree.
    const MAX_DEPTH: usize = 16;
    let header = |i: usize| be32(blob, i * 4).ok_or("a truncated header");
    let (total, start, len) = (header(1)? as usize, header(2)? as usize, header(9)? as usize);
    let end = total.min(blob.len());
    let (strings, strings_len) = (header(3)? as usize, header(8)? as usize);
    strings.checked_add(strings_len).filter(|e| *e <= end).ok_or("the strings block lies outside the blob")?;
    // Reservations are (address, size) pairs of 64 bits, up to one of zeros.
    let mut reservation = header(4)? as usize;
    loop {
        let entry = reservation
            .checked_add(16)
            .filter(|e| *e <= end)
            .map(|e| &blob[reservation..e])
            .ok_or("the memory reservation block runs past the blob")?;
        if entry.iter().all(|b| *b == 0) {
            break;
        }
        reservation += 16;
    }
    let block = start
        .checked_add(len)
        .filter(|end| *end <= total.min(blob.len()))
        .map(|end| &blob[start..end])
        .ok_or("the structure block lies outside the blob")?;
    let (mut at, mut depth) = (0usize, 0usize);
    loop {
        let token = be32(block, at).ok_or("the structure block ends without an end token")?;
        at += 4;
        match token {
            BEGIN_NODE => {
                let name = block.get(at..).ok_or("a node name outside the block")?;
                let len = name.iter().position(|b| *b == 0).ok_or("a node name without an end")?;
                at = (at + len + 1).next_multiple_of(4);
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err("nodes nested more than 16 deep");
                }
            }
            END_NODE => depth = depth.checked_sub(1).ok_or("more node ends than nodes")?,
            PROP => {
                let len = be32(block, at).ok_or("a truncated property")? as usize;
                at = at.checked_add(8 + len).filter(|end| *end <= block.len()).ok_or("a property outside the block")?;
                if depth == 0 {
                    return Err("a property outside every node");
                }
                at = at.next_multiple_of(4);
            }
            NOP => {}
            END if depth == 0 => return Ok(()),
            END => return Err("the structure block ends inside a node"),
            _ => return Err("an unknown token in the structure block"),
        }
    }
}

/// A GIC interrupt specifier (`<type number flags>`) as an INTID: SPI n is 32 + n, PPI n 16 + n.
fn intid(cells: &[u8]) -> Option<u32> {
    let word = |i: usize| cells.get(i * 4..i * 4 + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let number = word(1)?;
    match word(0)? {
        0 => number.checked_add(32),
        1 => number.checked_add(16),
        _ => None,
    }
}

/// The first `reg` range of `node`.
fn first_reg(node: &flat_device_tree::node::FdtNode<'_, '_>) -> Option<PhysRange> {
    let r = node.reg().next()?;
    Some(PhysRange::sized(r.starting_address as u64, r.size? as u64))
}

/// The platform nodes.
fn read_platform(fdt: &Fdt<'_>) -> Result<Platform, BootInfoError> {
    let mut p = Platform::empty();
    if let Some(cpus) = fdt.find_node("/cpus") {
        for cpu in cpus.children().filter(|c| c.name.split('@').next() == Some("cpu")) {
            let mpidr = cpu
                .property("reg")
                .and_then(|r| cells(r.value))
                .ok_or(BootInfoError::Malformed("a CPU without a `reg`"))?;
            if let Some(slot) = p.cpus.get_mut(p.cpus_listed) {
                *slot = Some(mpidr);
            }
            p.cpus_listed += 1;
        }
    }
    if let Some(psci) = fdt.find_node("/psci") {
        let conduit = match psci.property("method").and_then(|m| m.as_str()) {
            Some("hvc") => PsciConduit::Hvc,
            Some("smc") => PsciConduit::Smc,
            _ => return Err(BootInfoError::Malformed("/psci has no `method` of hvc or smc")),
        };
        let versions = psci.compatible().map(|c| {
            c.all()
                .filter_map(|v| match v {
                    "arm,psci-1.0" => Some(10),
                    "arm,psci-0.2" => Some(2),
                    "arm,psci" => Some(1),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        });
        p.psci = Some((conduit, versions.unwrap_or(0)));
    }
    for node in fdt.all_nodes() {
        let Some(compatible) = node.compatible() else { continue };
        let is = |name: &str| compatible.all().any(|c| c == name);
        if is("arm,gic-v3") || is("arm,cortex-a15-gic") || is("arm,gic-400") {
            let mut regs = node.reg();
            let mut next =
                || regs.next().and_then(|r| Some(PhysRange::sized(r.starting_address as u64, r.size? as u64)));
            let (Some(distributor), Some(cpu)) = (next(), next()) else {
                return Err(BootInfoError::Malformed("a GIC without its two register ranges"));
            };
            p.gic = Some(Gic { version: if is("arm,gic-v3") { 3 } else { 2 }, distributor, cpu });
        } else if is("arm,armv8-timer") {
            let spec = node.property("interrupts").ok_or(BootInfoError::Malformed("a timer without `interrupts`"))?;
            let mut t = [0u32; 4];
            for (i, slot) in t.iter_mut().enumerate() {
                *slot = spec
                    .value
                    .get(i * 12..i * 12 + 12)
                    .and_then(intid)
                    .ok_or(BootInfoError::Malformed("a timer's `interrupts` are not four GIC PPIs"))?;
            }
            p.timer = Some(t);
        } else if is("arm,pl031") {
            p.rtc = first_reg(&node);
        } else if is("virtio,mmio") {
            let regs = first_reg(&node).ok_or(BootInfoError::Malformed("a virtio-mmio node without a `reg`"))?;
            let spec = node
                .property("interrupts")
                .and_then(|i| intid(i.value))
                .ok_or(BootInfoError::Malformed("a virtio-mmio node without a GIC interrupt"))?;
            if let Some(slot) = p.virtio.iter_mut().find(|s| s.is_none()) {
                *slot = Some(VirtioMmio { regs, intid: spec });
            }
        }
    }
    if let Some(chosen) = fdt.find_node("/chosen") {
        if let Some(seed) = chosen.property("rng-seed") {
            let n = seed.value.len().min(MAX_SEED);
            p.seed[..n].copy_from_slice(&seed.value[..n]);
            p.seed_len = n;
        }
        if let Some(path) = chosen.property("stdout-path").and_then(|s| s.as_str()) {
            p.uart = path.split(':').next().and_then(|path| fdt.find_node(path)).and_then(|n| first_reg(&n));
        }
    }
    Ok(p)
}

/// The base of the PL011 UART the device tree names for stdout (`/chosen` `stdout-path`), read
/// from the device tree at `dtb` before the boot information is.
pub fn stdout_pl011(dtb: u64) -> Option<u64> {
    // The booting protocol puts the device tree on an 8-byte boundary; the stub stored u64::MAX
    // before it knew better.
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return None;
    }
    // SAFETY: `dtb` is what the loader passed in x0; `read`'s checks apply to the header only,
    // so the size is bounded here too before the whole blob is read.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if size > MAX_DTB {
        return None;
    }
    // SAFETY: as above: the loader's device tree, `size` bytes of RAM.
    let fdt = Fdt::new(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) }).ok()?;
    let chosen = fdt.find_node("/chosen")?;
    let path = chosen.property("stdout-path")?.as_str()?;
    // "serial0:115200n8" names an alias with options after the colon.
    let node = fdt.find_node(path.split(':').next()?)?;
    node.compatible()?.all().any(|c| c == "arm,pl011").then_some(())?;
    Some(node.reg().next()?.starting_address as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's `virt` with 256 MiB, 2 CPUs, `-append "log=debug test=x"` and a 300000-byte
    /// initrd (`-M virt,dumpdtb=...`, its total size cut to what the blocks use).
    const VIRT: &[u8] = include_bytes!("testdata/virt-256m-2cpu.dtb");
    const AT: u64 = 0x4800_0000 + 0x10_0000;

    #[test]
    fn qemu_virt_boot_information() {
        let info = BootInfo::parse(AT, VIRT).expect("QEMU's tree parses");
        let record = info.record();
        assert_eq!(record.cmdline(), "log=debug test=x");
        assert_eq!(info.dtb, PhysRange::sized(AT, VIRT.len() as u64));
        let ram: Vec<_> = record.ram().expect("ranges").iter().collect();
        assert_eq!(ram, [PhysRange::sized(0x4000_0000, 256 << 20)]);
        assert_eq!(record.modules().collect::<Vec<_>>(), [Module { paddr: 0x4800_0000, size: 300_000 }]);
        assert_eq!(info.boot_structures()[0], info.dtb);
    }

    #[test]
    fn qemu_virt_platform() {
        let p = BootInfo::parse(AT, VIRT).expect("parses").platform;
        assert_eq!(p.cpus_listed, 2);
        assert_eq!(p.cpus[..3], [Some(0), Some(1), None]);
        assert_eq!(p.psci, Some((PsciConduit::Hvc, 10)));
        let gic = p.gic.expect("a GIC");
        assert_eq!((gic.version, gic.distributor.start, gic.cpu.start), (2, 0x0800_0000, 0x0801_0000));
        assert_eq!(p.timer, Some([29, 30, 27, 26]));
        let virtio: Vec<_> = p.virtio_transports().collect();
        assert_eq!(virtio.len(), 32);
        assert_eq!(
            virtio.iter().find(|v| v.regs.start == 0x0a00_0000).map(|v| (v.regs.len(), v.intid)),
            Some((0x200, 48))
        );
        assert_eq!(p.uart, Some(PhysRange::sized(0x0900_0000, 0x1000)));
        assert_eq!(p.rtc, Some(PhysRange::sized(0x0901_0000, 0x1000)));
        assert_eq!(p.seed_len, 32);
        let line = p.to_string();
        assert!(line.starts_with("device tree: 2 CPUs (MPIDR 0x0 0x1), PSCI 1.0 over hvc, GICv2"), "{line}");
        assert!(line.contains("32 virtio-mmio transports"), "{line}");
    }

    #[test]
    fn bad_trees_are_refused_by_name() {
        let err = BootInfo::parse(0x4000, &[0u8; 64]).expect_err("no magic");
        assert!(err.to_string().starts_with("no valid device tree at 0x4000"), "{err}");
        let err = BootInfo::parse(0x4000, &VIRT[..VIRT.len() / 2]).expect_err("cut short");
        assert!(err.to_string().contains("no valid device tree"), "{err}");
    }

    #[test]
    fn damaged_trees_end_in_an_answer() {
        // Each of many single-byte changes to the structure and strings blocks either parses or
        // is refused; a panic here would be a kernel panic at boot.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut tree = VIRT.to_vec();
            let at = 64 + (x as usize % (tree.len() - 64));
            tree[at] = (x >> 32) as u8;
            let _ = std::panic::catch_unwind(|| BootInfo::parse(AT, &tree).map(|i| i.platform.cpus_listed))
                .unwrap_or_else(|_| panic!("byte {at} set to {:#x} panics the parser", (x >> 32) as u8));
        }
    }
}
