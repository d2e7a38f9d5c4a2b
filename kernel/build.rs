//! Links the bare-metal kernel with its architecture's linker script (host builds, unit tests and
//! clippy, need none), and says whether the architecture offers the whole `arch` API.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(arch_complete)");
    let target = std::env::var("TARGET").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // The aarch64 port is under way (docs/aarch64-plan.md): until it has threads, paging and
    // interrupts, the kernel built for it stops after the phases it has.
    if arch == "x86_64" {
        println!("cargo::rustc-cfg=arch_complete");
    }
    let script = match target.as_str() {
        "x86_64-unknown-none" => "src/arch/x86_64/linker.ld",
        "aarch64-unknown-none" => "src/arch/aarch64/linker.ld",
        _ => return,
    };
    println!("cargo::rerun-if-changed={script}");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo::rustc-link-arg-bins=-T{dir}/{script}");
    println!("cargo::rustc-link-arg-bins=-zmax-page-size=4096");
}
