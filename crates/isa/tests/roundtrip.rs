//! Encode/decode round trip over random instruction words.

use bpfkit_isa::{decode_one, encode, Program, RawInsn};
use proptest::prelude::*;

/// Opcode bytes that some instruction uses, so random words hit valid
/// encodings often enough to exercise every decoder arm.
fn opcode() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        (0u8..32).prop_map(|i| (i << 3) | 7),
        (0u8..32).prop_map(|i| (i << 3) | 5)
    ]
}

fn raw() -> impl Strategy<Value = RawInsn> {
    (
        opcode(),
        prop_oneof![0u8..=10, any::<u8>()],
        prop_oneof![0u8..=10, any::<u8>()],
        prop_oneof![
            Just(0i16),
            -4i16..4,
            any::<i16>(),
            Just(8),
            Just(16),
            Just(32)
        ],
        prop_oneof![
            Just(0i32),
            -4i32..70,
            any::<i32>(),
            Just(0xe1),
            Just(0xf1),
            Just(0x41)
        ],
    )
        .prop_map(|(code, d, s, off, imm)| RawInsn::new(code, d & 0xf, s & 0xf, off, imm))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Every slot that decodes re-encodes to exactly the same bytes.
    #[test]
    fn decode_encode_round_trip(a in raw(), b in raw()) {
        if let Ok(insn) = decode_one(a, Some(b)) {
            let (out, n) = encode(&insn);
            prop_assert_eq!(out[0], a);
            if n == 2 {
                prop_assert_eq!(out[1], b);
            }
            prop_assert_eq!(decode_one(out[0], Some(out[1])), Ok(insn));
        }
    }

    /// Random bytes never panic the program decoder, and whatever decodes
    /// re-encodes to the same bytes.
    #[test]
    fn program_decode_never_panics(words in proptest::collection::vec(raw(), 0..16)) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_bytes()).collect();
        if let Ok(p) = Program::decode(&bytes) {
            prop_assert_eq!(p.to_bytes(), bytes);
        }
    }
}

#[test]
fn jump_into_lddw_is_rejected() {
    // ja +1 ; lddw r0, 1 ; exit  -> ja lands on the second lddw slot.
    let words = [
        RawInsn::new(0x05, 0, 0, 1, 0),
        RawInsn::new(0x18, 0, 0, 0, 1),
        RawInsn::new(0, 0, 0, 0, 0),
        RawInsn::new(0x95, 0, 0, 0, 0),
    ];
    let err = Program::decode_raw(&words).unwrap_err();
    assert_eq!(err.to_string(), "insn 0: jump into the middle of lddw at 2");
}

#[test]
fn reserved_fields_are_rejected_with_their_index() {
    // mov r0, 1 ; exit with a nonzero imm.
    let words = [
        RawInsn::new(0xb7, 0, 0, 0, 1),
        RawInsn::new(0x95, 0, 0, 0, 7),
    ];
    let err = Program::decode_raw(&words).unwrap_err();
    assert_eq!(
        err.to_string(),
        "insn 1: opcode 0x95 has an invalid imm field (7)"
    );
    let words = [RawInsn::new(0x8e, 0, 0, 0, 0)];
    let err = Program::decode_raw(&words).unwrap_err();
    assert_eq!(err.to_string(), "insn 0: unknown opcode 0x8e");
    let words = [RawInsn::new(0xbf, 11, 0, 0, 0)];
    assert_eq!(
        Program::decode_raw(&words).unwrap_err().to_string(),
        "insn 0: invalid register r11"
    );
}
