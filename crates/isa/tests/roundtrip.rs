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

/// Typed instructions of every kind, with field values the encoding allows.
fn typed_insn() -> impl Strategy<Value = bpfkit_isa::Insn> {
    use bpfkit_isa::*;
    let reg = || (0u8..=10).prop_map(|n| Reg::new(n).unwrap());
    let width = || prop_oneof![Just(Width::W32), Just(Width::W64)];
    let src = move || prop_oneof![reg().prop_map(Src::Reg), any::<i32>().prop_map(Src::Imm)];
    let size = || prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W), Just(Size::DW)];
    let alu_op = prop_oneof![
        Just(AluOp::Add),
        Just(AluOp::Sub),
        Just(AluOp::Mul),
        Just(AluOp::Div),
        Just(AluOp::Sdiv),
        Just(AluOp::Or),
        Just(AluOp::And),
        Just(AluOp::Lsh),
        Just(AluOp::Rsh),
        Just(AluOp::Mod),
        Just(AluOp::Smod),
        Just(AluOp::Xor),
        Just(AluOp::Mov),
        Just(AluOp::Arsh),
    ];
    let imm64 = prop_oneof![
        any::<u64>().prop_map(Imm64::Value),
        any::<i32>().prop_map(Imm64::MapFd),
        (any::<i32>(), any::<u32>()).prop_map(|(fd, off)| Imm64::MapValue { fd, off }),
        (any::<i32>(), any::<i32>()).prop_map(|(id, btf_fd)| Imm64::BtfId { id, btf_fd }),
        any::<i32>().prop_map(Imm64::Func),
        any::<i32>().prop_map(Imm64::MapIdx),
        (any::<i32>(), any::<u32>()).prop_map(|(idx, off)| Imm64::MapIdxValue { idx, off }),
    ];
    let atomic = prop_oneof![
        (
            prop_oneof![
                Just(AtomicOp::Add),
                Just(AtomicOp::Or),
                Just(AtomicOp::And),
                Just(AtomicOp::Xor)
            ],
            any::<bool>()
        ),
        Just((AtomicOp::Xchg, true)),
        Just((AtomicOp::Cmpxchg, true)),
    ];
    prop_oneof![
        (width(), alu_op, reg(), src()).prop_map(|(width, op, dst, src)| Insn::Alu {
            width,
            op,
            dst,
            src
        }),
        (
            width(),
            prop_oneof![Just(SignExtFrom::B8), Just(SignExtFrom::B16)],
            reg(),
            reg()
        )
            .prop_map(|(width, from, dst, s)| Insn::Alu {
                width,
                op: AluOp::MovSx(from),
                dst,
                src: Src::Reg(s)
            }),
        (reg(), reg()).prop_map(|(dst, s)| Insn::Alu {
            width: Width::W64,
            op: AluOp::MovSx(SignExtFrom::B32),
            dst,
            src: Src::Reg(s)
        }),
        (width(), reg()).prop_map(|(width, dst)| Insn::Neg { width, dst }),
        (
            prop_oneof![
                Just(ByteOrder::ToLe),
                Just(ByteOrder::ToBe),
                Just(ByteOrder::Swap)
            ],
            prop_oneof![
                Just(SwapBits::B16),
                Just(SwapBits::B32),
                Just(SwapBits::B64)
            ],
            reg()
        )
            .prop_map(|(order, bits, dst)| Insn::Endian { order, bits, dst }),
        (reg(), imm64).prop_map(|(dst, imm)| Insn::LoadImm64 { dst, imm }),
        (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Insn::Load {
            size,
            sign_extend: false,
            dst,
            src,
            off
        }),
        (
            prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W)],
            reg(),
            reg(),
            any::<i16>()
        )
            .prop_map(|(size, dst, src, off)| Insn::Load {
                size,
                sign_extend: true,
                dst,
                src,
                off
            }),
        (size(), reg(), any::<i16>(), src()).prop_map(|(size, dst, off, src)| Insn::Store {
            size,
            dst,
            off,
            src
        }),
        (
            prop_oneof![Just(Size::W), Just(Size::DW)],
            atomic,
            reg(),
            reg(),
            any::<i16>()
        )
            .prop_map(|(size, (op, fetch), dst, src, off)| Insn::Atomic {
                size,
                op,
                fetch,
                dst,
                src,
                off
            }),
        (
            prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W)],
            any::<i32>()
        )
            .prop_map(|(size, imm)| Insn::LoadAbs { size, imm }),
        (
            prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W)],
            reg(),
            any::<i32>()
        )
            .prop_map(|(size, src, imm)| Insn::LoadInd { size, src, imm }),
        any::<i16>().prop_map(|off| Insn::Ja {
            off: off as i32,
            long: false
        }),
        any::<i32>().prop_map(|off| Insn::Ja { off, long: true }),
        (
            width(),
            proptest::sample::select(Cond::ALL.to_vec()),
            reg(),
            src(),
            any::<i16>()
        )
            .prop_map(|(width, cond, dst, src, off)| Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off
            }),
        any::<u32>().prop_map(|h| Insn::Call(HelperId(h))),
        any::<i32>().prop_map(Insn::CallLocal),
        (any::<i32>(), any::<i16>()).prop_map(|(btf_id, off)| Insn::CallKfunc { btf_id, off }),
        reg().prop_map(Insn::Callx),
        Just(Insn::Exit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Every typed instruction encodes to slots that decode back to it.
    /// (The random-word test above only checks words that happen to decode;
    /// this one makes sure no valid instruction is rejected.)
    #[test]
    fn every_typed_insn_round_trips(insn in typed_insn()) {
        let (raw, n) = encode(&insn);
        let next = if n == 2 { Some(raw[1]) } else { None };
        prop_assert_eq!(decode_one(raw[0], next), Ok(insn));
    }
}

#[test]
fn map_table_references_become_fds_for_the_kernel() {
    use bpfkit_isa::{Imm64, Insn, Program, Reg};
    let prog = Program::from_insns(vec![
        Insn::LoadImm64 {
            dst: Reg::R1,
            imm: Imm64::MapIdx(1),
        },
        Insn::LoadImm64 {
            dst: Reg::R2,
            imm: Imm64::MapIdxValue { idx: 0, off: 8 },
        },
        Insn::LoadImm64 {
            dst: Reg::R3,
            imm: Imm64::Value(0x1234),
        },
        Insn::Exit,
    ])
    .unwrap();
    let bytes = prog.to_bytes_with_map_fds(|i| 100 + i);
    let back = Program::decode(&bytes).unwrap();
    assert_eq!(
        back.insns(),
        &[
            Insn::LoadImm64 {
                dst: Reg::R1,
                imm: Imm64::MapFd(101),
            },
            Insn::LoadImm64 {
                dst: Reg::R2,
                imm: Imm64::MapValue { fd: 100, off: 8 },
            },
            Insn::LoadImm64 {
                dst: Reg::R3,
                imm: Imm64::Value(0x1234),
            },
            Insn::Exit,
        ]
    );
}
