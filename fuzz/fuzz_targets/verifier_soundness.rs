//! Verifier soundness: the fuzzer's bytes choose a program
//! (`bpfkit_soundness::gen`); if the verifier accepts it (pruning off,
//! states recorded), runs on random packets and map contents must neither
//! trap nor leave the abstract states recorded at any instruction, and the
//! JIT's unchecked mode must end each of them like the interpreter (`r0`
//! or trap, packet and map bytes afterwards); and a
//! program the verifier accepts with pruning must not be rejected without
//! it (but for the instruction limit).
#![no_main]

use libfuzzer_sys::fuzz_target;

use bpfkit_soundness::{check, gen, Bytes, Outcome, Rng};

fuzz_target!(|data: &[u8]| {
    let mut src = Bytes::new(data);
    let prog = gen(&mut src);
    // Inputs come from the bytes the program did not use, so that a
    // crash reproduces from its input alone.
    let seed = src.rest().iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    match check(&prog, 8, &mut Rng(seed)) {
        Outcome::Unsound(e) => panic!("verifier unsound: {e}"),
        Outcome::PruningDisagrees(m) => panic!(
            "accepted only with pruning (without: {m})\n{}",
            bpfkit_isa::disasm::format_llvm_program(&prog)
        ),
        _ => {}
    }
});
