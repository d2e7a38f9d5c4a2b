//! Bringing up the other CPUs (application processors, APs).
//!
//! How many CPUs the machine has comes from QEMU's firmware configuration device (`fw_cfg`,
//! key `FW_CFG_NB_CPUS`), which `-M microvm` provides, with APIC ids taken to be 0..N-1 as QEMU
//! numbers them for a flat topology; without fw_cfg, from an MP table ([`super::mptable`], which
//! `mica-vmm` writes), with the APIC ids it lists; without either, Mica runs on the boot CPU alone
//! and says so.
//!
//! Each AP is started in turn with INIT and STARTUP IPIs at the real-mode trampoline below,
//! copied to physical [`TRAMPOLINE`] (low memory, which the frame allocator never hands out). The
//! trampoline switches to protected mode, enables PAE, long mode and NX, turns on paging with the
//! boot stub's identity map of the first 4 GiB, and jumps to 64-bit kernel code, which loads the
//! kernel's own page tables and a stack the boot CPU made for it and calls [`ap_entry`]. There
//! the AP loads a GDT and TSS of its own (with its own guarded IST stacks), the shared IDT,
//! enables its local APIC and its vector state (SSE, and AVX state when the boot CPU enabled it),
//! starts its timer at the boot CPU's rate, reports in, and joins the scheduler as an idle thread:
//! from its next tick on it runs threads from its own run queue or takes them from the others'.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::{apic, clock, cpu, gdt, traps};
use crate::mem::stacks::KernelStack;

/// Where the trampoline runs: physical page 8, the STARTUP IPI vector 0x08.
const TRAMPOLINE: u64 = 0x8000;
/// The most CPUs Mica brings up.
pub const MAX_CPUS: u32 = crate::percpu::MAX_CPUS as u32;
/// Each AP's first stack.
const AP_STACK_BYTES: u64 = 64 * 1024;

/// fw_cfg's selector and data ports on x86.
const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
/// fw_cfg keys: the signature ("QEMU") and the number of CPUs.
const FW_CFG_SIGNATURE: u16 = 0x0000;
const FW_CFG_NB_CPUS: u16 = 0x0005;

// Handed from the boot CPU to the AP being started (one at a time).
#[unsafe(no_mangle)]
static MICA_AP_CR3: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static MICA_AP_STACK: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static MICA_AP_INDEX: AtomicU64 = AtomicU64::new(0);
/// EFER bits the AP sets besides LME: NXE when the boot CPU has it on.
#[unsafe(no_mangle)]
static MICA_AP_EFER_EXTRA: AtomicU32 = AtomicU32::new(0);

/// How many CPUs have reported in (the boot CPU included once [`start_aps`] runs).
static ONLINE: AtomicU32 = AtomicU32::new(1);

core::arch::global_asm!(
    r#"
    .section .text.ap_trampoline, "ax", @progbits
    .code16
    .global mica_ap_trampoline_start
    .global mica_ap_trampoline_end
mica_ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (mica_ap_gdt_ptr - mica_ap_trampoline_start + {base})
    movl %cr0, %eax
    orl $1, %eax                /* PE */
    movl %eax, %cr0
    ljmpl $0x08, $(mica_ap_pm32 - mica_ap_trampoline_start + {base})

    .code32
mica_ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x620, %eax            /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $mica_boot_pml4, %eax  /* the boot stub's identity map of the first 4 GiB */
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER */
    rdmsr
    orl $0x100, %eax            /* LME */
    orl MICA_AP_EFER_EXTRA, %eax
    wrmsr
    movl %cr0, %eax
    andl $0xfffffffb, %eax      /* clear EM */
    orl $0x80010003, %eax       /* PG | WP | MP | PE */
    movl %eax, %cr0
    ljmpl $0x18, $mica_ap_long

    .balign 8
mica_ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
mica_ap_gdt_end:
mica_ap_gdt_ptr:
    .word mica_ap_gdt_end - mica_ap_gdt - 1
    .long mica_ap_gdt - mica_ap_trampoline_start + {base}
mica_ap_trampoline_end:

    .section .text.mica_ap_long, "ax", @progbits
    .code64
mica_ap_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq MICA_AP_CR3(%rip), %rax
    movq %rax, %cr3
    movq MICA_AP_STACK(%rip), %rsp
    xorl %ebp, %ebp
    movq MICA_AP_INDEX(%rip), %rdi
    call {entry}
1:  cli
    hlt
    jmp 1b
"#,
    base = const TRAMPOLINE,
    entry = sym ap_entry,
    options(att_syntax)
);

unsafe extern "C" {
    static mica_ap_trampoline_start: u8;
    static mica_ap_trampoline_end: u8;
}

/// The number of CPUs QEMU's fw_cfg reports, if it is there.
fn fw_cfg_cpus() -> Option<u32> {
    let mut selector: Port<u16> = Port::new(FW_CFG_SELECTOR);
    let mut data: Port<u8> = Port::new(FW_CFG_DATA);
    // SAFETY: fw_cfg's ports only select and read configuration items; where there is no fw_cfg,
    // port reads return all ones and writes are ignored.
    unsafe {
        selector.write(FW_CFG_SIGNATURE);
        let signature = [data.read(), data.read(), data.read(), data.read()];
        if signature != *b"QEMU" {
            return None;
        }
        selector.write(FW_CFG_NB_CPUS);
        Some(u32::from(u16::from_le_bytes([data.read(), data.read()])))
    }
}

/// Where the CPU count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// QEMU's fw_cfg.
    FwCfg,
    /// An MP table.
    MpTable,
    /// Neither: the boot CPU alone.
    Unknown,
}

impl core::fmt::Display for CpuSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CpuSource::FwCfg => "fw_cfg",
            CpuSource::MpTable => "the MP table",
            CpuSource::Unknown => "nothing",
        })
    }
}

/// How CPU bring-up went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmpReport {
    /// CPUs the machine has, or 1 when it cannot say.
    pub present: u32,
    /// CPUs that reported in, the boot CPU included.
    pub online: u32,
    /// Where `present` came from.
    pub source: CpuSource,
}

/// The other CPUs' APIC ids, and where they came from.
fn other_cpus(boot_apic_id: u32) -> (alloc::vec::Vec<u32>, CpuSource) {
    if let Some(n) = fw_cfg_cpus().filter(|n| *n >= 1) {
        return ((0..n.min(MAX_CPUS)).filter(|&id| id != boot_apic_id).collect(), CpuSource::FwCfg);
    }
    // The identity map covers low memory where the memory map says RAM (below 640 KiB, on a
    // PC): the view stops at the first page that is not mapped.
    let (base, end) = (super::mptable::LOW_BASE, super::mptable::LOW_END);
    let mapped = (base..end)
        .step_by(4096)
        .take_while(|&page| crate::mem::paging::translate(page).is_some_and(|t| t.phys == page))
        .count();
    let len = mapped * 4096;
    // The identity map never changes for low memory, and the frame allocator never hands out the
    // first MiB, so nothing writes it while this view lives (the AP trampoline at 0x8000 is below).
    // SAFETY: every page of LOW_BASE..LOW_BASE + len is identity-mapped (checked above), unchanging.
    let low = unsafe { core::slice::from_raw_parts(base as *const u8, len) };
    match super::mptable::processors(low) {
        Ok(ids) => {
            let ids: alloc::vec::Vec<u32> = ids.into_iter().map(u32::from).collect();
            if !ids.contains(&boot_apic_id) {
                log::warn!("smp: the MP table does not list the boot CPU (APIC {boot_apic_id}): {ids:?}");
            }
            let others = ids.into_iter().filter(|&id| id != boot_apic_id).take(MAX_CPUS as usize - 1).collect();
            (others, CpuSource::MpTable)
        }
        Err(e) => {
            log::debug!("smp: no fw_cfg, and {e}");
            (alloc::vec::Vec::new(), CpuSource::Unknown)
        }
    }
}

/// Starts every AP; returns how many CPUs are online. Needs the heap, paging, the local APIC
/// and the clock.
pub fn start_aps(boot_apic_id: u32) -> SmpReport {
    let (others, source) = other_cpus(boot_apic_id);
    let present = others.len() as u32 + 1;
    if present == 1 {
        return SmpReport { present, online: 1, source };
    }
    let code_start = (&raw const mica_ap_trampoline_start) as u64;
    let code_end = (&raw const mica_ap_trampoline_end) as u64;
    let len = (code_end - code_start) as usize;
    // SAFETY: the trampoline is a few hundred bytes of kernel text; physical TRAMPOLINE..+len lies
    // in the first MiB, which is identity-mapped, writable and reserved from the frame allocator,
    // so nothing else lives there. The APs are not running yet.
    unsafe { core::ptr::copy_nonoverlapping(code_start as *const u8, TRAMPOLINE as *mut u8, len) };
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    MICA_AP_CR3.store(cr3, Ordering::SeqCst);
    let efer = x86_64::registers::model_specific::Efer::read();
    let nxe = efer.contains(x86_64::registers::model_specific::EferFlags::NO_EXECUTE_ENABLE);
    MICA_AP_EFER_EXTRA.store(if nxe { 0x800 } else { 0 }, Ordering::SeqCst);

    let init_delay_us = init_delay_us();
    for (index, apic_id) in (1u32..).zip(others) {
        let stack = match KernelStack::new(AP_STACK_BYTES) {
            Ok(stack) => stack,
            Err(e) => {
                log::error!("smp: no stack for CPU {index} (APIC {apic_id}): {e}");
                break;
            }
        };
        MICA_AP_STACK.store(stack.top(), Ordering::SeqCst);
        MICA_AP_INDEX.store(u64::from(index), Ordering::SeqCst);
        // The AP's stack lives as long as the AP: never freed.
        core::mem::forget(stack);
        let before = ONLINE.load(Ordering::SeqCst);
        apic::send_init(apic_id);
        spin_us(init_delay_us);
        let vector = (TRAMPOLINE >> 12) as u8;
        let mut up = false;
        for _ in 0..2 {
            apic::send_startup(apic_id, vector);
            // Linux waits up to 10 s; a software KVM on a busy host takes some 400 ms per CPU.
            if crate::percpu::wait_online(&ONLINE, before, 1000) {
                up = true;
                break;
            }
        }
        if !up {
            log::error!("smp: CPU {index} (APIC {apic_id}) did not start");
            break;
        }
    }
    SmpReport { present, online: ONLINE.load(Ordering::SeqCst), source }
}

/// How long to wait between INIT and STARTUP. The MP specification's 10 ms is for the external
/// APICs of the 1990s; processors since Intel's family 6 and AMD's family 0Fh, and every virtual
/// CPU, need none, which is what Linux assumes too: 10 µs for those, 10 ms for the rest.
fn init_delay_us() -> u64 {
    let id = raw_cpuid::CpuId::new();
    let virtual_cpu = id.get_hypervisor_info().is_some();
    let family = id.get_feature_info().map_or(0, |f| f.family_id());
    let amd = id.get_vendor_info().is_some_and(|v| v.as_str() == "AuthenticAMD");
    if virtual_cpu || (amd && family >= 0xf) || (!amd && family >= 6) { 10 } else { 10_000 }
}

/// Busy-waits `us` microseconds on the TSC clock.
fn spin_us(us: u64) {
    let end = clock::monotonic_ns().unwrap_or(0) + us * 1_000;
    while clock::monotonic_ns().unwrap_or(u64::MAX) < end {
        core::hint::spin_loop();
    }
}

/// How many CPUs are online.
pub fn online() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// The first Rust code on an AP: on the stack the boot CPU made for it, with the kernel's page
/// tables, interrupts off.
extern "C" fn ap_entry(index: u64) -> ! {
    crate::percpu::init(index as usize);
    crate::percpu::this().hw_id.store(apic::id(), Ordering::Relaxed);
    let selectors = gdt::init_ap().unwrap_or_else(|e| {
        log::error!("smp: CPU {index}: no stacks for its TSS: {e}");
        super::halt_forever()
    });
    traps::init(selectors.code.0);
    cpu::enable_ap_state();
    apic::init_ap();
    clock::start_ap_timer();
    log::info!("smp: CPU {index} (APIC {}) online", apic::id());
    // Counted online once it can answer TLB shootdowns: from here on it spins on kernel locks
    // (which answer them) or runs with interrupts on.
    ONLINE.fetch_add(1, Ordering::SeqCst);
    crate::sched::join(index as usize)
}
