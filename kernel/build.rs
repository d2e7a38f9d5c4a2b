//! Links the bare-metal kernel with its linker script; host builds (unit tests, clippy) need none.

fn main() {
    println!("cargo:rerun-if-changed=src/arch/x86_64/linker.ld");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-T{dir}/src/arch/x86_64/linker.ld");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
