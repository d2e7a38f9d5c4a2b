//! x86_64's static stacks: the boot stack and the seven interrupt stacks the TSS's IST slots
//! name, each a [`GuardedStack`] with an unmapped guard page below it (`mem::stacks` has the
//! stacks of threads and what every architecture shares).

use crate::mem::range::PhysRange;
use crate::mem::stacks::GuardedStack;

/// Size of the boot stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
/// Size of each interrupt stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Number of interrupt stacks (the TSS has seven IST slots).
pub const IST_COUNT: usize = 7;

/// The stack the boot stub switches to and `kmain` runs on.
pub static BOOT_STACK: GuardedStack<BOOT_STACK_SIZE> = GuardedStack::new();

/// The interrupt stacks, one per IST slot (IST1 is `IST_STACKS[0]`).
pub static IST_STACKS: [GuardedStack<IST_STACK_SIZE>; IST_COUNT] = [const { GuardedStack::new() }; IST_COUNT];

/// Names of the IST stacks, for reports.
pub const IST_NAMES: [&str; IST_COUNT] = [
    "ist1-double-fault",
    "ist2-nmi",
    "ist3-machine-check",
    "ist4-page-fault",
    "ist5-exceptions",
    "ist6-interrupts",
    "ist7-debug",
];

/// Every static stack: its name, guard page and usable range.
pub fn static_stacks() -> impl Iterator<Item = (&'static str, PhysRange, PhysRange)> + Clone {
    core::iter::once(("boot", BOOT_STACK.guard(), BOOT_STACK.stack()))
        .chain(IST_STACKS.iter().zip(IST_NAMES).map(|(s, name)| (name, s.guard(), s.stack())))
}
