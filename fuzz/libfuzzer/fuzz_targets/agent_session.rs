//! libFuzzer entry for `mica_fuzz_targets::agent_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mica_fuzz_targets::agent_session(data));
