//! libFuzzer entry point of [`callfold_fuzz::signature_header`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callfold_fuzz::signature_header(data));
