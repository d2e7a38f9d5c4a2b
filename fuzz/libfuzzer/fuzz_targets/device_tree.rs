//! libFuzzer entry for `mica_fuzz_targets::device_tree`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::device_tree(data));
