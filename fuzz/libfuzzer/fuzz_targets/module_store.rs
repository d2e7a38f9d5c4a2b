//! libFuzzer entry for `mica_fuzz_targets::module_store`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::module_store(data));
