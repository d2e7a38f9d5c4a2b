//! The boot-test scenarios: what to boot, and what must come out.
//!
//! The verdict is the exit code (through `isa-debug-exit`); the substrings are extra assertions
//! on the serial output, so that a scenario that ends with the right code for the wrong reason
//! (a panic in place of a page fault, say) still fails.

use mica_exit::ExitCode;

/// Under which KVM a scenario runs (every scenario runs under TCG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmUse {
    /// Under any usable KVM, software ones included: a smoke test that KVM boots at all.
    Smoke,
    /// Only under hardware-backed KVM (a software KVM would take minutes and add nothing).
    HardwareOnly,
}

/// One boot test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The trial name after the accelerator: `tcg::NAME`, `kvm::NAME`.
    pub name: &'static str,
    /// The kernel command line.
    pub cmdline: &'static str,
    /// The verdict the kernel must reach.
    pub expect: ExitCode,
    /// Text that must appear in the serial output.
    pub output_contains: &'static [&'static str],
    /// Whether it also runs under KVM.
    pub kvm: KvmUse,
}

/// Every scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "basic_boot",
        cmdline: "",
        expect: ExitCode::Success,
        output_contains: &["mica: ready (tsc_since_entry="],
        kvm: KvmUse::Smoke,
    },
    Scenario {
        name: "panic",
        cmdline: "test=panic",
        expect: ExitCode::Failed,
        output_contains: &["KERNEL PANIC at kernel/src/"],
        kvm: KvmUse::HardwareOnly,
    },
    Scenario {
        name: "page_fault",
        cmdline: "test=page_fault",
        expect: ExitCode::Failed,
        output_contains: &["EXCEPTION #PF", "error_code=", "CR2=0x", "RIP=0x"],
        kvm: KvmUse::HardwareOnly,
    },
    Scenario {
        name: "stack_overflow",
        cmdline: "test=stack_overflow",
        expect: ExitCode::Failed,
        output_contains: &["kernel stack overflow"],
        kvm: KvmUse::HardwareOnly,
    },
    Scenario {
        name: "heap",
        cmdline: "test=heap",
        expect: ExitCode::Success,
        output_contains: &["mica: boot test heap: passed"],
        kvm: KvmUse::HardwareOnly,
    },
    Scenario {
        name: "timer",
        cmdline: "test=timer",
        expect: ExitCode::Success,
        output_contains: &["mica: boot test timer: passed"],
        kvm: KvmUse::HardwareOnly,
    },
    Scenario {
        name: "paging",
        cmdline: "test=paging",
        expect: ExitCode::Success,
        output_contains: &["mica: boot test paging: passed"],
        kvm: KvmUse::HardwareOnly,
    },
    Scenario {
        name: "invalid_cmdline",
        cmdline: "log=loud",
        expect: ExitCode::Failed,
        output_contains: &["log=loud"],
        kvm: KvmUse::HardwareOnly,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_identifiers() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(s.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", s.name);
            assert!(SCENARIOS[..i].iter().all(|t| t.name != s.name), "duplicate {}", s.name);
        }
    }

    #[test]
    fn exactly_basic_boot_is_the_kvm_smoke_test() {
        let smoke: Vec<_> = SCENARIOS.iter().filter(|s| s.kvm == KvmUse::Smoke).map(|s| s.name).collect();
        assert_eq!(smoke, ["basic_boot"]);
    }
}
