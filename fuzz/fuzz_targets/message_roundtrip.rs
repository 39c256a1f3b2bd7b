//! Structured messages built from the input: encode, frame, decode, compare.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| avm::codec::fuzzing::message_roundtrip(data));
