//! libFuzzer entry for `mica_fuzz_targets::network_stack`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::network_stack(data));
