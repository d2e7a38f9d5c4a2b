//! The CPU: identification and features. SSE is enabled by the boot stub. AVX state is enabled
//! by [`enable_avx_state`] when the CPU has AVX (XCR0 = x87 | SSE | AVX through XSAVE), and then
//! every thread switch saves and restores it with `xsave64`/`xrstor64`. Without AVX the kernel
//! never touches XSAVE: `xsetbv`/`xgetbv` are emulation failures under the software KVM
//! (`kvm_pvm`) this project is smoke-tested on (its CPU model has no AVX).

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use raw_cpuid::CpuId;
use x86_64::registers::model_specific::Efer;
use x86_64::registers::model_specific::EferFlags;

/// What the kernel found out about the boot CPU.
#[derive(Clone, Copy, Debug)]
pub struct CpuInfo {
    /// Vendor string, e.g. `GenuineIntel`, `AuthenticAMD`.
    pub vendor: [u8; 12],
    /// Brand string, when the CPU has one.
    pub brand: [u8; 48],
    /// Family, model, stepping.
    pub signature: (u8, u8, u8),
    /// Whether NX is on (EFER.NXE): without it W^X cannot be enforced for data pages.
    pub nx: bool,
    /// Whether the TSC is invariant (constant rate in all power states).
    pub invariant_tsc: bool,
    /// Whether a hypervisor is present, and its vendor signature.
    pub hypervisor: Option<[u8; 12]>,
    /// Features worth reporting, as a bit set of [`FEATURE_NAMES`].
    pub features: u32,
}

/// The features [`CpuInfo::features`] records, in bit order.
pub const FEATURE_NAMES: [&str; 14] = [
    "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "fma", "xsave", "rdrand",
    "rdseed",
];

impl CpuInfo {
    /// Whether the CPU reports the feature named `name` (one of [`FEATURE_NAMES`]).
    pub fn has(&self, name: &str) -> bool {
        FEATURE_NAMES.iter().position(|n| *n == name).is_some_and(|i| self.features & (1 << i) != 0)
    }
}

fn text(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("?").trim()
}

impl fmt::Display for CpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (family, model, stepping) = self.signature;
        write!(
            f,
            "{} \"{}\" family {family:#x} model {model:#x} stepping {stepping}",
            text(&self.vendor),
            text(&self.brand)
        )?;
        if let Some(h) = &self.hypervisor {
            write!(f, ", hypervisor {}", text(h))?;
        }
        write!(f, "; features:")?;
        for (i, name) in FEATURE_NAMES.iter().enumerate() {
            if self.features & (1 << i) != 0 {
                write!(f, " {name}")?;
            }
        }
        write!(f, "{}{}", if self.nx { " nx" } else { "" }, if self.invariant_tsc { " invariant-tsc" } else { "" })
    }
}

/// Identifies the CPU.
pub fn init() -> CpuInfo {
    let cpuid = CpuId::new();
    let mut info = CpuInfo {
        vendor: [0; 12],
        brand: [0; 48],
        signature: (0, 0, 0),
        nx: Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE),
        invariant_tsc: cpuid.get_advanced_power_mgmt_info().is_some_and(|p| p.has_invariant_tsc()),
        hypervisor: None,
        features: 0,
    };
    if let Some(v) = cpuid.get_vendor_info() {
        let s = v.as_str().as_bytes();
        info.vendor[..s.len().min(12)].copy_from_slice(&s[..s.len().min(12)]);
    }
    if let Some(b) = cpuid.get_processor_brand_string() {
        let s = b.as_str().as_bytes();
        info.brand[..s.len().min(48)].copy_from_slice(&s[..s.len().min(48)]);
    }
    if let Some(h) = cpuid.get_hypervisor_info() {
        let mut name = [0u8; 12];
        let id = h.identify();
        let s = match id {
            raw_cpuid::Hypervisor::KVM => "KVM",
            raw_cpuid::Hypervisor::QEMU => "TCG",
            raw_cpuid::Hypervisor::Xen => "Xen",
            raw_cpuid::Hypervisor::HyperV => "Hyper-V",
            raw_cpuid::Hypervisor::VMware => "VMware",
            _ => "unknown",
        };
        name[..s.len()].copy_from_slice(s.as_bytes());
        info.hypervisor = Some(name);
    }
    let mut set = |name: &str, present: bool| {
        if present && let Some(i) = FEATURE_NAMES.iter().position(|n| *n == name) {
            info.features |= 1 << i;
        }
    };
    let mut xsave = false;
    let mut avx = false;
    if let Some(fi) = cpuid.get_feature_info() {
        info.signature = (fi.family_id(), fi.model_id(), fi.stepping_id());
        set("sse2", fi.has_sse2());
        set("sse3", fi.has_sse3());
        set("ssse3", fi.has_ssse3());
        set("sse4.1", fi.has_sse41());
        set("sse4.2", fi.has_sse42());
        set("popcnt", fi.has_popcnt());
        set("fma", fi.has_fma());
        set("rdrand", fi.has_rdrand());
        xsave = fi.has_xsave();
        avx = fi.has_avx();
    }
    set("xsave", xsave);
    set("avx", avx);
    if let Some(ext) = cpuid.get_extended_feature_info() {
        set("avx2", ext.has_avx2());
        set("bmi1", ext.has_bmi1());
        set("bmi2", ext.has_bmi2());
        set("rdseed", ext.has_rdseed());
    }
    info
}

/// The size of a thread's saved vector state when XSAVE is on: the standard-format area for x87,
/// SSE and AVX is 832 bytes; contexts reserve this much.
pub const XSAVE_AREA_BYTES: usize = 1024;

/// Whether [`enable_avx_state`] turned XSAVE and AVX state on.
static AVX_STATE: AtomicBool = AtomicBool::new(false);

/// Whether AVX state is enabled (and so saved with every thread).
pub fn avx_state_enabled() -> bool {
    AVX_STATE.load(Ordering::Relaxed)
}

/// Why AVX state stayed off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvxState {
    /// On: XCR0 = x87 | SSE | AVX; each thread's state area is this many bytes of
    /// [`XSAVE_AREA_BYTES`].
    Enabled(u32),
    /// The CPU has no AVX (or no XSAVE).
    NoAvx,
    /// The CPU's XSAVE area for x87/SSE/AVX is larger than contexts reserve.
    AreaTooLarge(u32),
}

/// Turns on XSAVE (CR4.OSXSAVE) and the AVX state component (XCR0 bit 2) when the CPU has AVX,
/// so that compiled components may use AVX and AVX2. Call once, before any thread is made.
pub fn enable_avx_state() -> AvxState {
    let cpuid = CpuId::new();
    let has = cpuid.get_feature_info().is_some_and(|f| f.has_xsave() && f.has_avx());
    if !has {
        return AvxState::NoAvx;
    }
    // The standard-format area size for the features XCR0 will hold, from CPUID leaf 0xD: legacy
    // region (512) + header (64) + AVX (256 at offset 576).
    // Subleaf 2 describes the AVX component: EAX its size, EBX its offset.
    let avx = raw_cpuid::cpuid!(0xd, 2);
    let size = avx.ebx + avx.eax;
    if size as usize > XSAVE_AREA_BYTES {
        return AvxState::AreaTooLarge(size);
    }
    turn_on_avx_state();
    AVX_STATE.store(true, Ordering::Relaxed);
    AvxState::Enabled(size)
}

/// Gives an AP the vector state the boot CPU has: AVX state when [`enable_avx_state`] turned it on
/// (SSE is on from the trampoline).
pub fn enable_ap_state() {
    if avx_state_enabled() {
        turn_on_avx_state();
    }
}

/// Sets CR4.OSXSAVE and XCR0 = x87 | SSE | AVX on this CPU. Only for CPUs that report XSAVE and
/// AVX: [`enable_avx_state`] checks, and every CPU of a machine is the same model.
fn turn_on_avx_state() {
    // The boot CPU turns it on before any thread exists, an AP before it runs any; threads' vector
    // state is saved with `xsave64` from then on (see `context`).
    // SAFETY: the CPU reports XSAVE (the callers' contract), so CR4.OSXSAVE may be set; then XCR0
    // may hold x87 | SSE | AVX, which it supports (AVX reported).
    unsafe {
        let mut cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        cr4 |= 1 << 18;
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") 0b111u32, in("edx") 0u32, options(nomem, nostack));
    }
}

/// Whether compiled code may use the feature Rust and Wasmtime call `name` (`"sse4.1"`, ...):
/// the CPU reports it and, for AVX-class features, the kernel has enabled their state
/// ([`enable_avx_state`]; AVX-512 state is never enabled). `None` for names this function does
/// not know.
pub fn code_may_use(name: &str) -> Option<bool> {
    let cpuid = CpuId::new();
    let f = cpuid.get_feature_info();
    let e = cpuid.get_extended_feature_info();
    let ext = cpuid.get_extended_processor_and_feature_identifiers();
    let has = |b: Option<bool>| Some(b.unwrap_or(false));
    match name {
        "sse3" => has(f.as_ref().map(|f| f.has_sse3())),
        "ssse3" => has(f.as_ref().map(|f| f.has_ssse3())),
        "sse4.1" => has(f.as_ref().map(|f| f.has_sse41())),
        "sse4.2" => has(f.as_ref().map(|f| f.has_sse42())),
        "popcnt" => has(f.as_ref().map(|f| f.has_popcnt())),
        "cmpxchg16b" => has(f.as_ref().map(|f| f.has_cmpxchg16b())),
        "lzcnt" => has(ext.as_ref().map(|x| x.has_lzcnt())),
        "bmi1" => has(e.as_ref().map(|e| e.has_bmi1())),
        "bmi2" => has(e.as_ref().map(|e| e.has_bmi2())),
        // VEX-encoded code needs the AVX state enabled in XCR0, or it faults.
        "avx" => Some(avx_state_enabled() && f.as_ref().is_some_and(|f| f.has_avx())),
        "fma" => Some(avx_state_enabled() && f.as_ref().is_some_and(|f| f.has_fma())),
        "avx2" => Some(avx_state_enabled() && e.as_ref().is_some_and(|e| e.has_avx2())),
        // AVX-512 and AVX-VNNI state or encodings: not enabled.
        "avx512f" | "avx512vl" | "avx512dq" | "avx512bitalg" | "avx512vbmi" | "avxvnni" => Some(false),
        _ => None,
    }
}

/// The SSE control and status register.
pub fn mxcsr() -> u32 {
    let mut value: u32 = 0;
    // SAFETY: `stmxcsr` stores 4 bytes to the local it is given; SSE is enabled at boot.
    unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &raw mut value, options(nostack, preserves_flags)) };
    value
}

/// Sets the SSE control and status register (rounding mode, exception masks).
pub fn set_mxcsr(value: u32) {
    // Reserved bits set would raise #GP: keep only the architectural ones (0..=15).
    let value = value & 0xffff;
    // SAFETY: `ldmxcsr` reads 4 bytes from the local it is given; reserved bits are cleared.
    unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &raw const value, options(nostack, preserves_flags)) };
}

/// The FP control register as the kernel's boot tests see it: MXCSR.
pub fn fp_control() -> u64 {
    u64::from(mxcsr())
}

/// Sets the FP control register ([`fp_control`]).
pub fn set_fp_control(value: u64) {
    set_mxcsr(value as u32);
}

/// `control` with rounding mode `mode` (0 to 3: nearest, down, up, toward zero): MXCSR's
/// rounding-control bits 13 and 14.
pub const fn with_rounding(control: u64, mode: u64) -> u64 {
    (control & !(0b11 << 13)) | ((mode & 0b11) << 13)
}

/// Machine code of a function that returns 42 (`mov eax, 42; ret`), for the boot test that
/// publishes code read-execute.
pub const RETURN_42: [u8; 6] = [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];

/// Makes code just written at `start..start + len` visible to instruction fetches: nothing to do
/// on x86, whose instruction caches snoop stores (other CPUs serialize on the interrupt that
/// flushes their TLBs when the page turns executable).
pub fn sync_code(_start: u64, _len: u64) {}

/// Lowers the stack pointer by `by` bytes (a multiple of 16) without storing anything there,
/// waits for the next timer tick, and puts the stack pointer back: the tick's interrupt frame is
/// then the first store into those stack pages (a boot test's way to make that happen at will).
/// Interrupts must be on.
pub fn wait_for_tick_below_stack(by: u64) {
    let ticks = super::clock::ticks_word();
    let start = ticks.load(core::sync::atomic::Ordering::SeqCst);
    // The stack pointer goes down by `by` and comes back before the block ends; nothing is
    // stored below it here, and an interrupt taken meanwhile saves its frame below it and
    // restores everything (that is what the test is about). The tick counter is read with plain
    // aligned 64-bit loads, atomic on x86_64.
    // SAFETY: as said above: the stack pointer is restored and only the tick counter is read.
    unsafe {
        core::arch::asm!(
            "mov {saved}, rsp",
            "sub rsp, {by}",
            "2: hlt",
            "mov {now}, qword ptr [{ticks}]",
            "cmp {now}, {start}",
            "je 2b",
            "mov rsp, {saved}",
            saved = out(reg) _,
            now = out(reg) _,
            by = in(reg) by,
            ticks = in(reg) ticks.as_ptr(),
            start = in(reg) start,
        );
    }
}
