//! libFuzzer entry point of [`callfold_fuzz::envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callfold_fuzz::envelope(data));
