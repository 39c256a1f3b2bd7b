//! Arbitrary bytes through the FrameDecoder in input-drawn chunk sizes,
//! every complete frame parsed. The invariants live in the library.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| avm::codec::fuzzing::frame_decoder(data));
