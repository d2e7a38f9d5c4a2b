//! The boot tests of x86_64's own state: every vector's gate and stub, and AVX state kept per
//! thread. The kernel's boot-test runner (`scenarios/mod.rs`) asks [`run`] for the names it does
//! not know.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::clock;
use crate::kprintln;

/// This architecture's boot tests, for errors.
pub const NAMES: &str = "avx, vectors";

/// Runs this architecture's boot test `name`, if it has one by that name.
pub fn run(name: &str) -> Option<Result<(), String>> {
    match name {
        "avx" => Some(avx()),
        "vectors" => Some(vectors()),
        _ => None,
    }
}

/// Raises every vector from 0x21 to 0xef in software (`int`) through its real gate and stub: each
/// must return with the stack as it was. Vectors 72, 74-78, 81, 85 (device vectors among them)
/// once lost their dummy error code to an assembler shift that wrapped, and crashed at `iretq`.
fn vectors() -> Result<(), String> {
    let before = super::stack_pointer();
    for vector in 0x21..=0xef_u8 {
        super::traps::raise(vector);
        let after = super::stack_pointer();
        ensure!(after == before, "vector {vector:#x}: the stack pointer moved from {before:#x} to {after:#x}");
    }
    kprintln!("mica: vectors: 0x21 to 0xef raised and returned");
    Ok(())
}

/// Loads `pattern` into YMM0 (all 256 bits).
fn set_ymm0(pattern: &[u64; 4]) {
    // SAFETY: reads 32 bytes from `pattern`; AVX state is enabled (checked by the caller). The
    // kernel is soft-float and never uses vector registers itself, so YMM0 belongs to the test.
    unsafe { core::arch::asm!("vmovdqu ymm0, [{}]", in(reg) pattern.as_ptr(), options(nostack, readonly)) };
}

/// Stores YMM0.
fn ymm0() -> [u64; 4] {
    let mut out = [0u64; 4];
    // SAFETY: writes 32 bytes to `out`; AVX state is enabled (checked by the caller).
    unsafe { core::arch::asm!("vmovdqu [{}], ymm0", in(reg) out.as_mut_ptr(), options(nostack)) };
    out
}

/// AVX state per thread: two threads and the boot thread each keep their own 256-bit YMM0
/// across 50 yields and then across preemption by the timer (2 ticks each of spinning and
/// checking): `xsave64`/`xrstor64` saves the upper halves that `fxsave64` would lose.
fn avx() -> Result<(), String> {
    use core::sync::atomic::{AtomicU32, Ordering};

    use crate::sched;

    static FAILURES: spin::Mutex<Vec<String>> = spin::Mutex::new(Vec::new());
    static DONE: AtomicU32 = AtomicU32::new(0);
    ensure!(super::cpu::avx_state_enabled(), "AVX state is off: this CPU has no AVX (boot with -cpu ...,+xsave,+avx)");
    let pattern = |t: u64| [0x1111 * (t + 1), 0x2222_0000 + t, 0x3333_0000_0000 + t, 0xa5a5_a5a5_0000_0000 | t];
    sched::set_preemption(false);
    for t in 0..2u64 {
        sched::spawn(&format!("avx-{t}"), move || {
            let mine = pattern(t + 1);
            set_ymm0(&mine);
            for round in 0..50 {
                sched::yield_now();
                if ymm0() != mine {
                    FAILURES.lock().push(format!("avx-{t}: YMM0 {:x?} after yield {round}", ymm0()));
                    break;
                }
            }
            // Preempted now and then, never yielding: the timer switches away mid-loop.
            let until = clock::ticks() + 2;
            while clock::ticks() < until {
                if ymm0() != mine {
                    FAILURES.lock().push(format!("avx-{t}: YMM0 {:x?} after preemption", ymm0()));
                    break;
                }
            }
            DONE.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|e| format!("spawning avx-{t}: {e}"))?;
    }
    let mine = pattern(0);
    set_ymm0(&mine);
    for _ in 0..50 {
        sched::yield_now();
        ensure!(ymm0() == mine, "boot thread: YMM0 {:x?} after a yield", ymm0());
    }
    sched::set_preemption(true);
    while DONE.load(Ordering::SeqCst) < 2 {
        ensure!(ymm0() == mine, "boot thread: YMM0 {:x?} after preemption", ymm0());
    }
    let failures = FAILURES.lock().clone();
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    kprintln!("mica: avx: 3 threads kept their own 256-bit YMM0 across 50 yields and preemption");
    Ok(())
}
