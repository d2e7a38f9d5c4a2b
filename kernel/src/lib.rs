//! The Mica microkernel.
//!
//! The modules that are plain logic (command line, PVH structures, ranges and frames, clock
//! arithmetic) build on any target and are unit-tested on the host. Everything that touches the
//! hardware builds only for bare metal (`target_os = "none"`), where `main.rs` links it into the
//! kernel image.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

/// Asserts a condition, else returns the formatted message as the error (the boot tests'
/// `Result<(), String>`).
#[cfg(target_os = "none")]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

pub mod boot_record;
pub mod cmdline;
pub mod hw;
pub mod ipc;
pub mod mem;
pub mod runqueue;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod irq_lock;
#[cfg(target_os = "none")]
pub mod percpu;

/// x86_64's boot-protocol parsers (the PVH structures, the MP table) and `microvm`'s device
/// layout live with their platform in `arch/x86_64`; they are plain logic, unit-tested here on
/// the host, and public with the `host-parsers` feature for the fuzzers (`fuzz/`).
#[cfg(all(any(test, feature = "host-parsers"), not(target_os = "none"), target_arch = "x86_64"))]
#[path = "arch/x86_64"]
pub mod x86_64_boot_protocol {
    pub mod microvm;
    pub mod mptable;
    pub mod pvh;
}
/// aarch64's boot protocol (the device tree) lives with its platform in `arch/aarch64`; it is
/// plain logic, unit-tested here on the host, and public with the `host-parsers` feature for the
/// fuzzers (`fuzz/`).
#[cfg(all(any(test, feature = "host-parsers"), not(target_os = "none")))]
#[path = "arch/aarch64"]
#[allow(dead_code, reason = "the kernel reads the tree from memory; the host tests parse blobs")]
pub mod aarch64_boot_protocol {
    pub mod boot_info;
}
/// Both architectures' page-table entry formats (`arch/*/pte.rs`) are plain logic: they are
/// unit-tested here on the host, against the same properties.
#[cfg(all(test, not(target_os = "none")))]
#[path = "arch"]
mod page_entry_formats {
    #[path = "aarch64/pte.rs"]
    #[allow(dead_code, reason = "the tests use what mem::paging uses, not every item")]
    mod aarch64;
    #[path = "x86_64/pte.rs"]
    #[allow(dead_code, reason = "as above")]
    mod x86_64;

    use crate::mem::Protection;

    /// Every protection `mem::paging` may ask for: readable, any of write, execute and uncached,
    /// never write with execute.
    fn protections() -> impl Iterator<Item = Protection> {
        (0u8..8).filter_map(|bits| {
            let mut p = Protection::READ;
            for (bit, right) in [(1, Protection::WRITE), (2, Protection::EXEC), (4, Protection::UNCACHED)] {
                if bits & bit != 0 {
                    p = p | right;
                }
            }
            p.check().ok()
        })
    }

    macro_rules! format_properties {
        ($format:ident, $tests:ident) => {
            mod $tests {
                use super::protections;
                use super::$format::*;

                #[test]
                fn leaves_say_their_frame_size_and_rights() {
                    for prot in protections() {
                        for (frame, large) in [(0x1234_5000u64, false), (0x7fe0_0000, true), (0xffff_ffff_f000, false)]
                        {
                            let e = leaf(frame, large, prot);
                            assert_ne!(e & VALID, 0, "{prot:?}");
                            assert_eq!(address(e), frame, "{prot:?} {large}");
                            assert_eq!(protection(e), prot, "{prot:?} {large}");
                            assert_eq!(is_block(e, 2), large, "{prot:?}");
                            assert!(!is_block(e, 1), "a leaf-table entry is never a block");
                            for other in protections() {
                                let changed = with_protection(e, other);
                                assert_eq!((address(changed), protection(changed)), (frame, other));
                                assert_eq!(is_block(changed, 2), large);
                            }
                            // The software bits change nothing the hardware reads.
                            for soft in [LAZY, BORROWED, COW, COW_WRITABLE] {
                                let marked = e | soft;
                                assert_eq!((address(marked), protection(marked)), (frame, prot));
                                assert_eq!(is_block(marked, 2), large);
                                assert_eq!(with_protection(marked, prot) & soft, soft, "rights keep the marks");
                            }
                        }
                    }
                }

                #[test]
                fn committed_entries_are_not_valid_and_keep_their_rights() {
                    for prot in protections() {
                        let lazy = (leaf(0, false, prot) & !VALID) | LAZY;
                        assert_eq!(lazy & VALID, 0);
                        assert_eq!(protection(lazy), prot);
                    }
                }

                #[test]
                fn tables_limit_nothing_and_are_not_blocks() {
                    let t = table(0x4000_1000);
                    assert_ne!(t & VALID, 0);
                    assert_eq!(address(t), 0x4000_1000);
                    for level in 2..=4 {
                        assert!(!is_block(t, level));
                    }
                    assert_eq!(table_rights(t), (true, true));
                    let bits = [LAZY, BORROWED, COW, COW_WRITABLE];
                    assert_eq!(bits.iter().fold(0, |a, b| a | b).count_ones(), 4, "four distinct software bits");
                }
            }
        };
    }

    format_properties!(aarch64, aarch64_entries);
    format_properties!(x86_64, x86_64_entries);
}
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod context;
#[cfg(target_os = "none")]
mod kmain;
#[cfg(target_os = "none")]
mod panic;

#[cfg(target_os = "none")]
pub mod interrupts;
#[cfg(target_os = "none")]
mod scenarios;
#[cfg(target_os = "none")]
pub mod sched;
#[cfg(target_os = "none")]
pub mod wasm;
