//! Random programs (from the JIT crate's generator, seeded by the fuzzer's
//! bytes) on the JIT and the interpreter: same return value or trap, same
//! memory.
#![no_main]

use bpfkit_jit::fuzzing::{check_case, gen_case, Rng};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = gen_case(&mut Rng::from_bytes(data));
    if let Err(diff) = check_case(&case) {
        panic!("JIT and interpreter disagree: {diff}");
    }
});
