//! The CPUID the guest sees: what KVM supports (`KVM_GET_SUPPORTED_CPUID`), checked for what a
//! Mica kernel needs, with XSAVE and everything built on it hidden, and the topology of the VM:
//! one package whose cores are the vCPUs, each vCPU's APIC id its index.
//!
//! XSAVE/AVX are hidden because the kernel does not manage extended state yet, and because the
//! software KVM this project is smoke-tested on (`kvm_pvm`) cannot emulate `xgetbv`: a guest that
//! sees OSXSAVE-capable hardware and probes it stops the VM with an emulation failure.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

use crate::error::{Error, Result};

/// A CPUID register of one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// A feature the guest kernel cannot run without: (name, leaf, register, bit).
pub const REQUIRED: [(&str, u32, Reg, u32); 6] = [
    ("the TSC", 1, Reg::Edx, 4),
    ("an on-chip local APIC", 1, Reg::Edx, 9),
    ("SSE2", 1, Reg::Edx, 26),
    ("NX (no-execute pages)", 0x8000_0001, Reg::Edx, 20),
    ("64-bit long mode", 0x8000_0001, Reg::Edx, 29),
    ("FXSAVE/FXRSTOR", 1, Reg::Edx, 24),
];

/// The leaf 1 ECX bits hidden: FMA (12), XSAVE (26), OSXSAVE (27), AVX (28), F16C (29).
pub const LEAF1_ECX_HIDDEN: u32 = 1 << 12 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 29;

/// Feature bits hidden from the guest: (leaf, subleaf, register, mask). XSAVE and OSXSAVE, and
/// everything that needs XSAVE-managed state (AVX and its successors, AVX-512, AMX, PKU, FMA, F16C,
/// XOP/FMA4).
const HIDDEN: [(u32, u32, Reg, u32); 7] = [
    (1, 0, Reg::Ecx, LEAF1_ECX_HIDDEN),
    // Leaf 7.0 EBX: AVX2 (5), AVX512F (16), DQ (17), IFMA (21), PF (26), ER (27), CD (28), BW (30),
    // VL (31).
    (7, 0, Reg::Ebx, 1 << 5 | 1 << 16 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 30 | 1 << 31),
    // Leaf 7.0 ECX: AVX512_VBMI (1), PKU (3), OSPKE (4), AVX512_VBMI2 (6), VAES (9), VPCLMULQDQ (10),
    // AVX512_VNNI (11), AVX512_BITALG (12), AVX512_VPOPCNTDQ (14).
    (7, 0, Reg::Ecx, 1 << 1 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14),
    // Leaf 7.0 EDX: AVX512_4VNNIW (2), AVX512_4FMAPS (3), AVX512_VP2INTERSECT (8), AMX_BF16 (22),
    // AVX512_FP16 (23), AMX_TILE (24), AMX_INT8 (25).
    (7, 0, Reg::Edx, 1 << 2 | 1 << 3 | 1 << 8 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25),
    // Leaf 7.1 EAX: AVX_VNNI (4), AVX512_BF16 (5), AMX_FP16 (21), AVX_IFMA (23).
    (7, 1, Reg::Eax, 1 << 4 | 1 << 5 | 1 << 21 | 1 << 23),
    // Leaf 7.1 EDX: AVX_VNNI_INT8 (4), AVX_NE_CONVERT (5), AVX_VNNI_INT16 (10), AVX10 (19).
    (7, 1, Reg::Edx, 1 << 4 | 1 << 5 | 1 << 10 | 1 << 19),
    // Leaf 0x8000_0001 ECX: XOP (11), FMA4 (16).
    (0x8000_0001, 0, Reg::Ecx, 1 << 11 | 1 << 16),
];

/// The XSAVE state enumeration leaf, dropped entirely.
const XSAVE_LEAF: u32 = 0xd;
/// The AVX10 leaf, dropped entirely.
const AVX10_LEAF: u32 = 0x24;
/// The hypervisor-present bit, leaf 1 ECX.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// The extended topology leaves.
const TOPOLOGY_LEAVES: [u32; 2] = [0xb, 0x1f];
/// Hyper-threading (really: leaf 1 EBX 23:16 counts the package's logical processors), leaf 1 EDX.
const HTT_BIT: u32 = 1 << 28;

fn reg_mut(e: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

fn reg(e: &kvm_cpuid_entry2, reg: Reg) -> u32 {
    match reg {
        Reg::Eax => e.eax,
        Reg::Ebx => e.ebx,
        Reg::Ecx => e.ecx,
        Reg::Edx => e.edx,
    }
}

/// Checks that `entries` offer every [`REQUIRED`] feature.
pub fn check_required(entries: &[kvm_cpuid_entry2]) -> Result<()> {
    for (name, leaf, r, bit) in REQUIRED {
        let present =
            entries.iter().filter(|e| e.function == leaf && e.index == 0).any(|e| reg(e, r) & (1 << bit) != 0);
        if !present {
            return Err(Error::CpuFeatureMissing(name));
        }
    }
    Ok(())
}

/// Filters KVM's supported CPUID into vCPU `cpu`'s of `cpus`: hides XSAVE and what depends on
/// it, says a hypervisor is present, and describes the topology (one package of `cpus` cores,
/// one thread each; this vCPU's APIC id is `cpu`).
pub fn filter(entries: &[kvm_cpuid_entry2], cpu: u8, cpus: u8) -> Vec<kvm_cpuid_entry2> {
    let cpus = cpus.max(1);
    // Bits of the x2APIC id that number the cores of the package.
    let core_bits = u32::from(cpus).next_power_of_two().trailing_zeros();
    let mut out: Vec<kvm_cpuid_entry2> =
        entries.iter().copied().filter(|e| e.function != XSAVE_LEAF && e.function != AVX10_LEAF).collect();
    for e in &mut out {
        for (leaf, subleaf, r, mask) in HIDDEN {
            if e.function == leaf && e.index == subleaf {
                *reg_mut(e, r) &= !mask;
            }
        }
        if e.function == 1 {
            e.ecx |= HYPERVISOR_BIT;
            // EBX: initial APIC id (31:24), logical processors in the package (23:16), CLFLUSH
            // line size and brand index kept. EDX.HTT says the count is meaningful.
            e.ebx = (e.ebx & 0x0000_ffff) | u32::from(cpu) << 24 | u32::from(cpus) << 16;
            if cpus > 1 {
                e.edx |= HTT_BIT;
            } else {
                e.edx &= !HTT_BIT;
            }
        }
    }
    // Extended topology, whatever subleaves KVM listed: level 0 threads (one per core), level 1
    // cores (the vCPUs), then the invalid level that ends the list; EDX is this vCPU's x2APIC id.
    for leaf in TOPOLOGY_LEAVES {
        if out.iter().any(|e| e.function == leaf) {
            out.retain(|e| e.function != leaf);
            for (index, eax, ebx, ecx) in [(0, 0, 1, 1 << 8), (1, core_bits, u32::from(cpus), 2 << 8 | 1), (2, 0, 0, 2)]
            {
                out.push(kvm_cpuid_entry2 {
                    function: leaf,
                    index,
                    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    eax,
                    ebx,
                    ecx,
                    edx: u32::from(cpu),
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// Builds vCPU `cpu`'s CPUID (of `cpus`) from what KVM supports: checks the required features,
/// then filters.
pub fn guest_cpuid(supported: &CpuId, cpu: u8, cpus: u8) -> Result<CpuId> {
    check_required(supported.as_slice())?;
    let entries = filter(supported.as_slice(), cpu, cpus);
    CpuId::from_entries(&entries).map_err(|_| Error::KvmCapability("room for the guest's CPUID entries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, eax, ebx, ecx, edx, ..Default::default() }
    }

    /// A plausible modern CPU: everything required, plus XSAVE, AVX, AVX2 and AVX-512.
    fn host() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            entry(1, 0, 0x806f8, 0x0804_0800, 0xfffa_3223, 0x178b_fbff),
            entry(7, 0, 0, 0xf1bf_07ab, 0x1b40_5f5e, 0xbc18_4410),
            entry(7, 1, 0x0000_1c30, 0, 0, 0),
            entry(0xb, 0, 1, 1, 0x100, 7),
            entry(0xd, 0, 0x2e7, 0xa88, 0xa88, 0),
            entry(0xd, 1, 0xf, 0, 0, 0),
            entry(0x8000_0001, 0, 0, 0, 0x0000_0121, 0x2c10_0800),
        ]
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries.iter().find(|e| e.function == function && e.index == index).expect("leaf present")
    }

    #[test]
    fn hides_xsave_and_avx() {
        let guest = filter(&host(), 0, 1);
        let leaf1 = find(&guest, 1, 0);
        for bit in [26, 27, 28, 12, 29] {
            assert_eq!(leaf1.ecx & (1 << bit), 0, "leaf 1 ecx bit {bit}");
        }
        assert_ne!(leaf1.ecx & HYPERVISOR_BIT, 0);
        assert_ne!(leaf1.ecx & 1, 0, "SSE3 kept");
        assert_eq!(leaf1.edx, 0x178b_fbff & !HTT_BIT, "leaf 1 edx untouched but for HTT (one CPU)");
        let leaf7 = find(&guest, 7, 0);
        assert_eq!(leaf7.ebx & (1 << 5 | 1 << 16 | 1 << 31), 0, "AVX2, AVX-512 hidden");
        assert_ne!(leaf7.ebx & (1 << 3 | 1 << 8), 0, "BMI1, BMI2 kept");
        assert_eq!(find(&guest, 7, 1).eax & (1 << 4 | 1 << 5), 0);
        assert!(guest.iter().all(|e| e.function != 0xd), "XSAVE leaf dropped");
    }

    #[test]
    fn describes_one_cpu_with_apic_id_zero() {
        let guest = filter(&host(), 0, 1);
        let leaf1 = find(&guest, 1, 0);
        assert_eq!(leaf1.ebx >> 24, 0, "initial APIC id");
        assert_eq!((leaf1.ebx >> 16) & 0xff, 1, "logical processors");
        assert_eq!(leaf1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_eq!(leaf1.edx & HTT_BIT, 0, "no HTT for one CPU");
        assert_eq!(find(&guest, 0xb, 0).edx, 0, "x2APIC id");
        assert_eq!(find(&guest, 0xb, 1).ebx, 1, "one core");
    }

    #[test]
    fn describes_each_vcpu_of_a_package() {
        for cpu in 0..3 {
            let guest = filter(&host(), cpu, 3);
            let leaf1 = find(&guest, 1, 0);
            assert_eq!(leaf1.ebx >> 24, u32::from(cpu), "initial APIC id");
            assert_eq!((leaf1.ebx >> 16) & 0xff, 3, "logical processors");
            assert_ne!(leaf1.edx & HTT_BIT, 0, "HTT: the count means something");
            let levels: Vec<(u32, u32, u32, u32)> =
                (0..3).map(|i| find(&guest, 0xb, i)).map(|e| (e.eax, e.ebx, e.ecx, e.edx)).collect();
            let id = u32::from(cpu);
            assert_eq!(levels, [(0, 1, 0x100, id), (2, 3, 0x201, id), (0, 0, 2, id)], "threads, cores, end");
            assert!(guest.iter().filter(|e| e.function == 0xb).all(|e| e.flags == KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
        }
    }

    #[test]
    fn requires_long_mode_nx_sse2_apic_tsc() {
        assert!(check_required(&host()).is_ok());
        for (name, leaf, r, bit) in REQUIRED {
            let mut entries = host();
            for e in entries.iter_mut().filter(|e| e.function == leaf) {
                *reg_mut(e, r) &= !(1 << bit);
            }
            match check_required(&entries) {
                Err(Error::CpuFeatureMissing(missing)) => assert_eq!(missing, name),
                other => panic!("without {name}: {other:?}"),
            }
        }
        let no_extended: Vec<_> = host().into_iter().filter(|e| e.function < 0x8000_0000).collect();
        assert!(matches!(check_required(&no_extended), Err(Error::CpuFeatureMissing(_))));
    }

    #[test]
    fn guest_cpuid_round_trips_through_the_fam_wrapper() {
        let supported = CpuId::from_entries(&host()).expect("CpuId");
        let guest = guest_cpuid(&supported, 0, 1).expect("guest cpuid");
        // Two XSAVE subleaves dropped, two topology subleaves added.
        assert_eq!(guest.as_slice().len(), host().len());
    }
}
