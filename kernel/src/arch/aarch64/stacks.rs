//! aarch64's static stacks: the boot stack (`SP_EL0`, where the kernel's code runs) and the boot
//! CPU's exception stack (`SP_EL1`, where exceptions arrive: `traps.rs`), each a
//! [`GuardedStack`] with an unmapped guard page below it (`mem::stacks` has the stacks of
//! threads and what every architecture shares).

use crate::mem::range::PhysRange;
use crate::mem::stacks::GuardedStack;

/// Size of the boot stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

/// Size of an exception stack.
pub const EXCEPTION_STACK_SIZE: usize = 16 * 1024;

/// The stack the entry stub switches to and `kmain` runs on.
pub static BOOT_STACK: GuardedStack<BOOT_STACK_SIZE> = GuardedStack::new();

/// The boot CPU's exception stack.
pub static EXCEPTION_STACK: GuardedStack<EXCEPTION_STACK_SIZE> = GuardedStack::new();

/// Every static stack: its name, guard page and usable range.
pub fn static_stacks() -> impl Iterator<Item = (&'static str, PhysRange, PhysRange)> + Clone {
    [("boot", BOOT_STACK.guard(), BOOT_STACK.stack()), ("exceptions", EXCEPTION_STACK.guard(), EXCEPTION_STACK.stack())]
        .into_iter()
}
