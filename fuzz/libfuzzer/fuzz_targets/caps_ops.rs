//! libFuzzer entry for `mica_fuzz_targets::caps_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::caps_ops(data));
