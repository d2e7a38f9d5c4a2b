//! A small shadow stack (64 KiB instead of Rust's 1 MiB): an idle component needs little, and
//! its linear memory's initial size, every page of which the kernel promises a frame, follows
//! from it.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=65536");
    }
}
