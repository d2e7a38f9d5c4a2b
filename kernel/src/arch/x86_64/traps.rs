//! The IDT and the trap path.
//!
//! All 256 vectors enter through one assembly stub each (16 bytes apart, so the table is computed
//! rather than listed), which pushes a uniform [`TrapFrame`] and calls [`trap_dispatch`]. Every
//! gate runs on an IST stack; the interrupts after which the scheduler may switch threads (the
//! timer, the reschedule IPI, device interrupts) move their frame to the interrupted thread's
//! stack first and run there (preemption). An exception the kernel does not expect is reported (vector, error
//! code, CR2, RIP, and for a fault on a guard page, the stack that overflowed) and ends the run
//! with "failed".

use core::fmt::Write;

use mica_exit::ExitCode;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::registers::control::Cr2;
use x86_64::structures::DescriptorTablePointer;

use crate::mem::stacks;

/// The local APIC timer's vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// The TLB-shootdown IPI's vector.
pub const TLB_VECTOR: u8 = 0xf0;
/// The IPI that tells an idle CPU there is work to take.
pub const RESCHEDULE_VECTOR: u8 = 0xf1;
/// The local APIC spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The first of the vectors device interrupt lines are routed to (see `crate::hw`).
pub const DEVICE_VECTOR_BASE: u8 = 0x40;
/// How many device vectors there are, one per device slot.
pub const DEVICE_VECTORS: u8 = crate::hw::MAX_DEVICES as u8;
// Every `microvm` transport can hold a device that gets a slot.
const _: () = assert!(super::microvm::VIRTIO_MMIO_SLOTS <= crate::hw::MAX_DEVICES);

/// Exceptions that push an error code, as a bit mask by vector.
const ERROR_CODE_VECTORS: u32 = (1 << 8) | (0x1f << 10) | (1 << 17) | (1 << 21) | (1 << 29) | (1 << 30);

core::arch::global_asm!(
    r#"
    .section .text.traps, "ax", @progbits
    .balign 16
    .global mica_trap_stubs
mica_trap_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    /* Only exceptions (vectors 0-31) may push an error code. The vector is tested first: the
       assembler's shift by 64 or more wraps (vector 85 would read bit 21, #CP's), which once
       left a device vector's frame without its dummy error code. */
    .if vector > 31
    pushq $0
    .elseif ((({error_code_vectors}) >> vector) & 1) == 0
    pushq $0
    .endif
    pushq $vector
    .if vector == {timer} || vector == {reschedule} || (vector >= {device_base} && vector < {device_end})
    jmp mica_switching_interrupt
    .else
    jmp mica_trap_common
    .endif
    .set vector, vector + 1
    .endr

/* An interrupt after which the scheduler may switch threads arrives on its IST stack (one per
   CPU, with interrupts off until it is left) and moves its frame to the interrupted stack,
   where the rest of the path runs, as if the CPU had pushed it there. That stack is committed
   on demand: a store below the interrupted code's stack pointer may be the first touch of a
   page, whose page fault (on its own IST stack) maps it and returns here to store again. Had
   the CPU pushed the frame there itself, such a fault would have lost the interrupt, already
   taken from the local APIC (its in-service bit then never cleared).
   On entry: vector, error code, RIP, CS, RFLAGS, RSP, SS (7 qwords). Moved: the same, below the
   interrupted RSP aligned down to 16 (as the CPU aligns it), under the interrupted RAX and RCX. */
mica_switching_interrupt:
    pushq %rcx
    pushq %rax
    movq 56(%rsp), %rax         /* the interrupted RSP */
    andq $-16, %rax
    subq $72, %rax              /* RCX, RAX, then the 7 qwords */
    movq (%rsp), %rcx
    movq %rcx, 8(%rax)          /* RAX */
    movq 8(%rsp), %rcx
    movq %rcx, (%rax)           /* RCX */
    .set word, 0
    .rept 7
    movq (16 + 8 * word)(%rsp), %rcx
    movq %rcx, (16 + 8 * word)(%rax)
    .set word, word + 1
    .endr
    movq %rax, %rsp
    popq %rcx
    popq %rax
    jmp mica_trap_common

mica_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call {dispatch}
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp              /* vector and error code */
    iretq
"#,
    error_code_vectors = const ERROR_CODE_VECTORS,
    timer = const TIMER_VECTOR,
    reschedule = const RESCHEDULE_VECTOR,
    device_base = const DEVICE_VECTOR_BASE,
    device_end = const DEVICE_VECTOR_BASE + DEVICE_VECTORS,
    dispatch = sym trap_dispatch,
    options(att_syntax)
);

// `int $n; ret` for every vector, 4 bytes apart: software interrupts for the `vectors` boot test,
// which raises each device vector and more through its real gate and stub.
core::arch::global_asm!(
    r#"
    .section .text.traps, "ax", @progbits
    .balign 4
mica_int_stubs:
    .set vector, 0
    .rept 256
    .balign 4
    int $vector
    ret
    .set vector, vector + 1
    .endr
"#,
    options(att_syntax)
);

// Where an exception raised by wasm code returns to: on the faulting thread's own stack (below
// the red zone, 16-byte aligned as a call expects), it calls the function in rax with the
// arguments `redirect_to_thread` left in rdi, rsi, rdx and rcx. That function never returns.
core::arch::global_asm!(
    r#"
    .section .text.traps, "ax", @progbits
    .balign 16
mica_fault_trampoline:
    subq $128, %rsp
    andq $-16, %rsp
    callq *%rax
    ud2
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// Where [`redirect_to_thread`] makes an exception return to.
    static mica_fault_trampoline: u8;
    /// The first of the 256 trap stubs, each 16 bytes long.
    static mica_trap_stubs: [u8; 256 * 16];
    /// The first of the 256 `int $n; ret` stubs, each 4 bytes long.
    static mica_int_stubs: [u8; 256 * 4];
}

/// Raises interrupt `vector` in software (`int`), through its gate, stub and dispatcher, as the
/// `vectors` boot test does. Only vectors 32 and up: an exception raised by `int` pushes no error
/// code where the hardware would, so raising one would not test what the hardware does.
pub fn raise(vector: u8) {
    if vector < 32 {
        return;
    }
    let stub = (&raw const mica_int_stubs) as usize + 4 * usize::from(vector);
    // SAFETY: `stub` is the `int $vector; ret` stub for this vector inside `mica_int_stubs`,
    // called as a function with no arguments; the interrupt's handler returns through `iretq` to
    // the `ret`. Vectors 32 and up have no error code, which is what `int` pushes.
    let f: extern "C" fn() = unsafe { core::mem::transmute::<usize, extern "C" fn()>(stub) };
    f();
}

/// The registers saved on entry to a trap, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector number (pushed by the stub).
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// One 16-byte IDT gate.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// A present ring-0 interrupt gate (interrupts stay disabled in the handler).
    fn interrupt(handler: u64, selector: u16, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// The IST slot (1-based) each vector runs on; 0 for none.
fn ist_for(vector: u8) -> u8 {
    match vector {
        // The timer, the reschedule IPI and device interrupts arrive on the interrupts' IST
        // stack and move to the interrupted thread's own stack at once
        // (`mica_switching_interrupt`), where the scheduler can switch threads from them (an IST
        // stack is one per vector and CPU and would be reused by the next interrupt while the
        // switched-away thread still lived on it). A device interrupt switches to the driver it
        // woke at once.
        TIMER_VECTOR | RESCHEDULE_VECTOR => 6,
        v if (DEVICE_VECTOR_BASE..DEVICE_VECTOR_BASE + DEVICE_VECTORS).contains(&v) => 6,
        8 => 1,      // double fault
        2 => 2,      // NMI
        18 => 3,     // machine check
        14 => 4,     // page fault: its own stack, so a stack overflow can be reported
        1 | 3 => 7,  // debug, breakpoint
        0..=31 => 5, // other exceptions
        _ => 6,      // interrupts
    }
}

/// Builds and loads the IDT.
pub fn init(code_selector: u16) {
    let stubs = (&raw const mica_trap_stubs) as u64;
    let idt = IDT.call_once(|| {
        let mut gates = [Gate::default(); 256];
        for (vector, gate) in gates.iter_mut().enumerate() {
            *gate = Gate::interrupt(stubs + 16 * vector as u64, code_selector, ist_for(vector as u8));
        }
        Idt(gates)
    });
    let pointer =
        DescriptorTablePointer { limit: (size_of::<Idt>() - 1) as u16, base: VirtAddr::new(idt as *const Idt as u64) };
    // SAFETY: the IDT is a 'static table of valid gates, each pointing at a trap stub that saves
    // the registers and returns with iretq; the code selector is the kernel's 64-bit code segment.
    unsafe { lidt(&pointer) };
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack-segment fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

/// Called by the common stub with interrupts disabled, on an IST stack (the timer: on the
/// interrupted thread's stack).
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        v if v == u64::from(TIMER_VECTOR) => crate::interrupts::on_timer(super::apic::end_of_interrupt),
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        v if v == u64::from(TLB_VECTOR) => {
            super::paging::service_flush();
            super::apic::end_of_interrupt();
        }
        v if v == u64::from(RESCHEDULE_VECTOR) => crate::interrupts::on_reschedule(super::apic::end_of_interrupt),
        v if (u64::from(DEVICE_VECTOR_BASE)..u64::from(DEVICE_VECTOR_BASE + DEVICE_VECTORS)).contains(&v) => {
            let slot = (v - u64::from(DEVICE_VECTOR_BASE)) as usize;
            crate::interrupts::on_device(slot, super::apic::end_of_interrupt);
        }
        // A page fault the kernel resolves itself (error code bit 0: the page was present; bit 1:
        // a write); the instruction then runs again.
        14 if crate::interrupts::resolve_page_fault(
            Cr2::read_raw(),
            frame.error_code & 1 != 0,
            frame.error_code & 2 != 0,
        ) => {}
        // #DE, #UD and #PF raised by wasm code are wasm traps: Wasmtime takes them, on the
        // faulting thread, after this exception has returned.
        0 | 6 | 14 if crate::wasm::traps::is_wasm_code(frame.rip) => {
            let addr = if frame.vector == 14 { Cr2::read_raw() } else { u64::MAX };
            redirect_to_thread(frame, crate::wasm::traps::on_fault, addr);
        }
        // The NMI another CPU sends when the kernel fails there: stop here for good.
        2 if crate::panic::stopping() => crate::panic::park_this_cpu(),
        v if v < 32 => unexpected_exception(frame),
        v => {
            log::warn!("unexpected interrupt on vector {v}");
            super::apic::end_of_interrupt();
        }
    }
}

/// Makes the exception in `frame` return, with the interrupted thread's stack and interrupt
/// state, into `target(rip, rbp, addr, vector)` instead of the faulting instruction. The handler
/// of a wasm trap unwinds the thread's stack and never returns; running it in thread context,
/// rather than on this exception's stack with interrupts off, keeps both intact.
fn redirect_to_thread(frame: &mut TrapFrame, target: extern "C" fn(u64, u64, u64, u64) -> !, addr: u64) {
    frame.rdi = frame.rip;
    frame.rsi = frame.rbp;
    frame.rdx = addr;
    frame.rcx = frame.vector;
    frame.rax = target as usize as u64;
    frame.rip = (&raw const mica_fault_trampoline) as u64;
}

/// Reports an exception the kernel did not expect and ends the run.
fn unexpected_exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector as usize;
    let name = EXCEPTION_NAMES[vector];
    let short = name.split(' ').next().unwrap_or(name);
    let cr2 = Cr2::read_raw();
    let mut out = crate::console::EmergencyWriter::new();
    let _ = writeln!(
        out,
        "EXCEPTION {short} (vector {vector}) error_code={:#x} CR2={cr2:#x} RIP={:#x} RSP={:#x} RFLAGS={:#x}",
        frame.error_code, frame.rip, frame.rsp, frame.rflags
    );
    let _ = writeln!(out, "  {name}");
    if vector == 14 {
        let e = frame.error_code;
        let _ = writeln!(
            out,
            "  page fault: {} of a {} page in {} mode{}",
            if e & 0x10 != 0 {
                "instruction fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 1 != 0 { "present (protection violation)" } else { "non-present" },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
        );
        if let Some(stack) = stacks::guard_page_owner(cr2) {
            let _ = writeln!(out, "  kernel stack overflow: hit the guard page below the '{stack}' stack");
        }
    }
    let _ = writeln!(
        out,
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    super::exit(ExitCode::Failed)
}
