//! The GDT and the TSS. Every IST slot of the TSS points at its own guarded stack, so that every
//! exception and interrupt runs on a known-good stack, never on the interrupted one.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::{CS, DS, ES, SS, Segment, SegmentSelector};
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use super::stacks::{IST_COUNT, IST_STACKS};

/// The segment selectors the kernel runs with.
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    /// Kernel code.
    pub code: SegmentSelector,
    /// Kernel data.
    pub data: SegmentSelector,
    /// The task state segment.
    pub tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Loads the GDT and TSS and reloads the segment registers. Returns the selectors.
pub fn init() -> Selectors {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let mut ist = [VirtAddr::zero(); IST_COUNT];
        for (slot, stack) in ist.iter_mut().zip(IST_STACKS.iter()) {
            *slot = VirtAddr::new(stack.top());
        }
        tss.interrupt_stack_table = ist;
        tss
    });
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives for 'static:
    // a 64-bit code segment, a data segment and an available TSS.
    unsafe {
        CS::set_reg(selectors.code);
        SS::set_reg(selectors.data);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
    *selectors
}

/// Gives an AP a GDT and TSS of its own, with IST stacks of its own (guarded kernel stacks that
/// live as long as the CPU), and loads them. Returns the selectors (the same values as the boot
/// CPU's).
pub fn init_ap() -> Result<Selectors, crate::mem::stacks::StackError> {
    let mut tss = TaskStateSegment::new();
    let mut ist = [VirtAddr::zero(); IST_COUNT];
    for slot in ist.iter_mut() {
        let stack = crate::mem::stacks::KernelStack::new(super::stacks::IST_STACK_SIZE as u64)?;
        *slot = VirtAddr::new(stack.top());
        // The CPU uses it for good.
        core::mem::forget(stack);
    }
    tss.interrupt_stack_table = ist;
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    let gdt: &'static GlobalDescriptorTable = alloc::boxed::Box::leak(alloc::boxed::Box::new(gdt));
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which is leaked ('static):
    // a 64-bit code segment, a data segment and an available TSS of this CPU's own.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_selector);
    }
    Ok(Selectors { code, data, tss: tss_selector })
}
