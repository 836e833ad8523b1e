#![no_main]
//! Receive and send on a live segment that the fuzzer mutates (see fuzz/harness.rs).
use libfuzzer_sys::fuzz_target;

include!("../harness.rs");

fuzz_target!(|data: &[u8]| harness::receive_mutated(data));
