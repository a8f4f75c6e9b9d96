#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| emr_fuzz::targets::genesys_answers(data));
