//! libFuzzer entry for `mica_fuzz_targets::files_service`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::files_service(data));
