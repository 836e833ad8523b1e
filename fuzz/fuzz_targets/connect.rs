#![no_main]
//! `connect` on arbitrary segment bytes (see fuzz/harness.rs).
use libfuzzer_sys::fuzz_target;

include!("../harness.rs");

fuzz_target!(|data: &[u8]| harness::connect_segment(data));
