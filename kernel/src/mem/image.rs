//! Where the linker put the kernel's sections (every architecture's linker script defines the
//! same symbols).

use crate::mem::range::PhysRange;

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// The kernel image's sections, from the linker script.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage {
    /// Everything from the first to the last byte of the image.
    pub whole: PhysRange,
    /// Code.
    pub text: PhysRange,
    /// Read-only data.
    pub rodata: PhysRange,
    /// Data and bss.
    pub data: PhysRange,
}

/// Where the linker put the kernel's sections.
pub fn kernel_image() -> KernelImage {
    let a = |p: *const u8| p as u64;
    KernelImage {
        whole: PhysRange::new(a(&raw const __kernel_start), a(&raw const __kernel_end)),
        text: PhysRange::new(a(&raw const __text_start), a(&raw const __text_end)),
        rodata: PhysRange::new(a(&raw const __rodata_start), a(&raw const __rodata_end)),
        data: PhysRange::new(a(&raw const __data_start), a(&raw const __kernel_end)),
    }
}
