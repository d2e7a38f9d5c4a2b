//! The wit-bindgen bindings of the `guest` world (`wit/world.wit`). Generated code, and the only
//! unsafe code in this crate (see `[lints.rust]` in Cargo.toml).
#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "guest",
    path: "wit",
    generate_all,
});
