//! libFuzzer entry for `mica_fuzz_targets::http_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::http_request(data));
