//! Random bytes through the decoder: never a panic, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use bpfkit_isa::Program;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Program::decode(data) {
        assert_eq!(p.to_bytes(), data);
    }
});
