//! Random text through both assemblers: an error or instructions, never a
//! panic; whatever assembles must also encode and, when its branch targets
//! are valid, decode back to the same instructions.
#![no_main]

use bpfkit_isa::{assemble, encode_all, Program, Syntax};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for syntax in [Syntax::Llvm, Syntax::Ubpf] {
        if let Ok(insns) = assemble(text, syntax) {
            let bytes = encode_all(&insns);
            if let Ok(p) = Program::decode(&bytes) {
                assert_eq!(p.insns(), &insns[..]);
            }
        }
    }
});
