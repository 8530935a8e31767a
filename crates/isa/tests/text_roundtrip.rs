//! Every decodable instruction prints and assembles back to itself, in
//! both syntaxes (random instruction words, as in roundtrip.rs).

use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::disasm::{format_llvm, format_ubpf};
use bpfkit_isa::{decode_one, HelperId, Insn, RawInsn};
use proptest::prelude::*;

/// Opcode bytes biased towards valid ones.
fn opcode() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        (0u8..32).prop_map(|i| (i << 3) | 7),
        (0u8..32).prop_map(|i| (i << 3) | 4),
        (0u8..32).prop_map(|i| (i << 3) | 5),
        (0u8..32).prop_map(|i| (i << 3) | 6),
        (0u8..32).prop_map(|i| (i << 3) | 1),
        (0u8..32).prop_map(|i| (i << 3) | 2),
        (0u8..32).prop_map(|i| (i << 3) | 3),
        Just(0x18u8),
    ]
}

fn raw() -> impl Strategy<Value = RawInsn> {
    (
        opcode(),
        0u8..=10,
        prop_oneof![0u8..=10, 0u8..=6],
        prop_oneof![
            Just(0i16),
            -4i16..4,
            any::<i16>(),
            Just(8),
            Just(16),
            Just(32),
            Just(1)
        ],
        prop_oneof![
            Just(0i32),
            -4i32..70,
            any::<i32>(),
            Just(0xe1),
            Just(0xf1),
            Just(0x41),
            Just(16),
            Just(32),
            Just(64)
        ],
    )
        .prop_map(|(code, d, s, off, imm)| RawInsn::new(code, d, s, off, imm))
}

fn one(text: &str, syntax: Syntax) -> Result<Insn, String> {
    let insns = assemble(text, syntax).map_err(|e| e.to_string())?;
    match insns.as_slice() {
        [i] => Ok(*i),
        other => Err(format!("{} instructions", other.len())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn ubpf_text_round_trips(a in raw(), b in (any::<i32>(), prop_oneof![Just(0u8), any::<u8>()])) {
        let next = RawInsn::new(0, 0, 0, 0, if b.1 == 0 { 0 } else { b.0 });
        if let Ok(insn) = decode_one(a, Some(next)) {
            let text = format_ubpf(&insn);
            prop_assert_eq!(one(&text, Syntax::Ubpf), Ok(insn), "{}", text);
        }
    }

    /// llvm text is exact except that it cannot tell local and kfunc calls
    /// from helper calls (`call N` for all three).
    #[test]
    fn llvm_text_round_trips(a in raw(), b in (any::<i32>(), prop_oneof![Just(0u8), any::<u8>()])) {
        let next = RawInsn::new(0, 0, 0, 0, if b.1 == 0 { 0 } else { b.0 });
        if let Ok(insn) = decode_one(a, Some(next)) {
            let text = format_llvm(&insn);
            let expected = match insn {
                Insn::CallLocal(imm) => Insn::Call(HelperId(imm as u32)),
                Insn::CallKfunc { btf_id, .. } => Insn::Call(HelperId(btf_id as u32)),
                other => other,
            };
            prop_assert_eq!(one(&text, Syntax::Llvm), Ok(expected), "{}", text);
        }
    }
}
