//! Links the bare-metal kernel with its architecture's linker script (host builds, unit tests and
//! clippy, need none).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
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
