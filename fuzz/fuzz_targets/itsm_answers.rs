#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| emr_fuzz::targets::itsm_answers(data));
