//! libFuzzer entry for `mica_fuzz_targets::vmm_console`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::vmm_console(data));
