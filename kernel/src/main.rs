//! The Mica kernel image. All of the kernel is in the library; its PVH entry point (in
//! `arch::boot`) is what the linker script names as the entry.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use mica_kernel as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("mica-kernel runs on bare metal: build and boot it with `cargo xtask run`");
    std::process::exit(2);
}
