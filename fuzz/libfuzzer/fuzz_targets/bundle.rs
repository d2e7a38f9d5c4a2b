//! libFuzzer entry for `mica_fuzz_targets::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::bundle(data));
