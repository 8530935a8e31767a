//! Semantics (RFC 9669 pitfalls from the conformance README) and every trap
//! kind, with pc and kind asserted.

use super::*;
use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::{HelperId, Reg, Size};
use bpfkit_runtime::{Access, HelperAbort, RegionKind};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).expect("assembles")).expect("valid")
}

fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register(1, |_env, a| Ok(a[0].wrapping_add(a[1])));
    h.register(5, |_env, a| match a[0] {
        0 => Err(HelperAbort::Stop { r0: 0 }),
        x => Ok(x),
    });
    h.register(6, |env, a| {
        let [b] = env.guest().load::<1>(a[0])?;
        Ok(b as u64)
    });
    h.register(7, |_env, _a| Err(HelperAbort::Failed("boom".into())));
    h
}

/// Runs `text` with r1 = address of a writable copy of `mem` (0 if empty),
/// r2 = its length.
fn run_mem(text: &str, mem: &[u8]) -> Result<u64, Trap> {
    let mut vm = Interpreter::new(&prog(text), &helpers()).unwrap();
    let mut buf = mem.to_vec();
    let mut m = Memory::new();
    let addr = if buf.is_empty() {
        0
    } else {
        m.add(RegionKind::Other, &mut buf)
    };
    let len = mem.len() as u64;
    vm.run(&mut m, &[addr, len])
}

fn run(text: &str) -> Result<u64, Trap> {
    run_mem(text, &[])
}

fn trap_kind(text: &str) -> (Pc, TrapKind) {
    let t = run(text).expect_err("traps");
    (t.pc, t.kind)
}

#[test]
fn alu32_zero_extends() {
    assert_eq!(
        run("lddw %r0, 0xffffffff00000001\nadd32 %r0, 1\nexit"),
        Ok(2)
    );
    assert_eq!(
        run("lddw %r1, 0x1122334455667788\nmov32 %r0, %r1\nexit"),
        Ok(0x55667788)
    );
    assert_eq!(run("mov32 %r0, -1\nexit"), Ok(0xffff_ffff));
    assert_eq!(run("mov %r0, -1\nneg32 %r0\nexit"), Ok(1));
}

#[test]
fn shifts_are_masked() {
    assert_eq!(run("mov %r0, 1\nlsh %r0, 65\nexit"), Ok(2));
    assert_eq!(run("mov %r0, 1\nlsh32 %r0, 33\nexit"), Ok(2));
    assert_eq!(
        run("mov %r0, 1\nmov %r1, -1\nlsh %r0, %r1\nexit"),
        Ok(1 << 63)
    );
    assert_eq!(
        run("mov32 %r0, 0x80000000\nmov %r1, -1\nrsh32 %r0, %r1\nexit"),
        Ok(1)
    );
    assert_eq!(
        run("mov32 %r0, 0x80000000\narsh32 %r0, 35\nexit"),
        Ok(0xf000_0000)
    );
    assert_eq!(run("mov %r0, -16\narsh %r0, 66\nexit"), Ok(-4i64 as u64));
}

#[test]
fn division_by_zero() {
    assert_eq!(run("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit"), Ok(0));
    assert_eq!(run("mov %r0, 7\ndiv %r0, 0\nexit"), Ok(0));
    assert_eq!(run("mov %r0, 7\ndiv32 %r0, 0\nexit"), Ok(0));
    assert_eq!(run("mov %r0, 7\nmov %r1, 0\nsdiv32 %r0, %r1\nexit"), Ok(0));
    assert_eq!(run("mov %r0, -7\nsdiv %r0, 0\nexit"), Ok(0));
    // Modulo by zero leaves dst; the 32-bit forms still zero the upper half.
    assert_eq!(
        run("mov %r0, -7\nmov %r1, 0\nmod %r0, %r1\nexit"),
        Ok(-7i64 as u64)
    );
    assert_eq!(run("mov %r0, -7\nmod %r0, 0\nexit"), Ok(-7i64 as u64));
    assert_eq!(run("mov %r0, -7\nsmod %r0, 0\nexit"), Ok(-7i64 as u64));
    assert_eq!(
        run("mov %r0, -7\nmov %r1, 0\nmod32 %r0, %r1\nexit"),
        Ok(-7i32 as u32 as u64)
    );
    assert_eq!(
        run("mov %r0, -7\nmod32 %r0, 0\nexit"),
        Ok(-7i32 as u32 as u64)
    );
    assert_eq!(
        run("mov %r0, -7\nsmod32 %r0, 0\nexit"),
        Ok(-7i32 as u32 as u64)
    );
    assert_eq!(
        run("mov %r0, -7\nmov %r1, 0\nsmod32 %r0, %r1\nexit"),
        Ok(-7i32 as u32 as u64)
    );
}

#[test]
fn signed_division_overflow() {
    let min64 = "lddw %r0, 0x8000000000000000\n";
    assert_eq!(run(&format!("{min64}sdiv %r0, -1\nexit")), Ok(1 << 63));
    assert_eq!(
        run(&format!("{min64}mov %r1, -1\nsdiv %r0, %r1\nexit")),
        Ok(1 << 63)
    );
    assert_eq!(run(&format!("{min64}smod %r0, -1\nexit")), Ok(0));
    assert_eq!(
        run(&format!("{min64}mov %r1, -1\nsmod %r0, %r1\nexit")),
        Ok(0)
    );
    assert_eq!(
        run("mov32 %r0, 0x80000000\nsdiv32 %r0, -1\nexit"),
        Ok(0x8000_0000)
    );
    assert_eq!(run("mov32 %r0, 0x80000000\nsmod32 %r0, -1\nexit"), Ok(0));
    assert_eq!(run("mov %r0, -7\nsmod %r0, 2\nexit"), Ok(-1i64 as u64));
    assert_eq!(run("mov %r0, 7\nsmod32 %r0, -2\nexit"), Ok(1));
    assert_eq!(
        run("mov %r0, -7\nsdiv32 %r0, 2\nexit"),
        Ok(-3i32 as u32 as u64)
    );
}

#[test]
fn imm64_sign_extended() {
    assert_eq!(run("mov %r0, -1\nexit"), Ok(u64::MAX));
    assert_eq!(run("mov %r0, 0\nsub %r0, 1\nexit"), Ok(u64::MAX));
    assert_eq!(
        run("lddw %r0, 0xffffffffffffffff\nand %r0, -2\nexit"),
        Ok(!1)
    );
    // 64-bit jumps compare with the sign-extended immediate.
    assert_eq!(
        run("mov %r1, -1\nmov %r0, 1\njeq %r1, -1, +1\nmov %r0, 2\nexit"),
        Ok(1)
    );
    assert_eq!(
        run("mov32 %r1, -1\nmov %r0, 1\njeq %r1, -1, +1\nmov %r0, 2\nexit"),
        Ok(2)
    );
    assert_eq!(
        run("mov %r1, 5\nmov %r0, 1\njgt %r1, -1, +1\nmov %r0, 2\nexit"),
        Ok(2)
    );
    // div with a negative immediate divides by a huge unsigned value.
    assert_eq!(run("mov %r0, -1\ndiv %r0, -1\nexit"), Ok(1));
}

#[test]
fn byte_order() {
    let v = "lddw %r0, 0x1122334455667788\n";
    assert_eq!(run(&format!("{v}le16 %r0\nexit")), Ok(0x7788));
    assert_eq!(run(&format!("{v}le32 %r0\nexit")), Ok(0x55667788));
    assert_eq!(run(&format!("{v}le64 %r0\nexit")), Ok(0x1122334455667788));
    assert_eq!(run(&format!("{v}be16 %r0\nexit")), Ok(0x8877));
    assert_eq!(run(&format!("{v}be32 %r0\nexit")), Ok(0x88776655));
    assert_eq!(run(&format!("{v}be64 %r0\nexit")), Ok(0x8877665544332211));
    assert_eq!(run(&format!("{v}bswap16 %r0\nexit")), Ok(0x8877));
    assert_eq!(run(&format!("{v}bswap32 %r0\nexit")), Ok(0x88776655));
    assert_eq!(
        run(&format!("{v}bswap64 %r0\nexit")),
        Ok(0x8877665544332211)
    );
}

#[test]
fn jmp32_compares_low_half() {
    assert_eq!(
        run("lddw %r1, 0x100000005\nmov %r0, 1\njeq32 %r1, 5, +1\nmov %r0, 2\nexit"),
        Ok(1)
    );
    assert_eq!(
        run("lddw %r1, 0x100000005\nmov %r0, 1\njeq %r1, 5, +1\nmov %r0, 2\nexit"),
        Ok(2)
    );
    assert_eq!(
        run("mov32 %r1, 0xffffffff\nmov %r0, 1\njslt32 %r1, 0, +1\nmov %r0, 2\nexit"),
        Ok(1)
    );
    assert_eq!(
        run("lddw %r1, 0x1ffffffff\nmov %r2, -1\nmov %r0, 1\njne32 %r1, %r2, +1\nmov %r0, 2\nexit"),
        Ok(2)
    );
}

#[test]
fn sign_extension_moves_and_loads() {
    assert_eq!(
        run("mov %r1, 0x80\nmovsx864 %r0, %r1\nexit"),
        Ok(-128i64 as u64)
    );
    assert_eq!(
        run("mov %r1, 0x80\nmovsx832 %r0, %r1\nexit"),
        Ok(0xffff_ff80)
    );
    assert_eq!(
        run("mov %r1, 0x8000\nmovsx1664 %r0, %r1\nexit"),
        Ok(-32768i64 as u64)
    );
    assert_eq!(
        run("mov32 %r1, 0x80000000\nmovsx3264 %r0, %r1\nexit"),
        Ok(0xffff_ffff_8000_0000)
    );
    let m = [0x80, 0x80, 0xff, 0x7f];
    assert_eq!(run_mem("ldxsb %r0, [%r1]\nexit", &m), Ok(-128i64 as u64));
    assert_eq!(run_mem("ldxsh %r0, [%r1]\nexit", &m), Ok(-32640i64 as u64));
    assert_eq!(run_mem("ldxsw %r0, [%r1]\nexit", &m), Ok(0x7fff8080));
    assert_eq!(run_mem("ldxh %r0, [%r1+2]\nexit", &m), Ok(0x7fff));
}

#[test]
fn gotol_and_stack() {
    assert_eq!(run("mov %r0, 1\nja32 +1\nmov %r0, 2\nexit"), Ok(1));
    assert_eq!(
        run("stdw [%r10-8], -2\nldxdw %r0, [%r10-8]\nstb [%r10-8], 1\nldxb %r1, [%r10-8]\nadd %r0, %r1\nexit"),
        Ok(u64::MAX)
    );
}

#[test]
fn atomics() {
    let m = [0u8; 16];
    assert_eq!(
        run_mem(
            "stdw [%r1], 10\nmov %r2, 5\nlock fetch add [%r1], %r2\nldxdw %r0, [%r1]\nadd %r0, %r2\nexit",
            &m
        ),
        Ok(25)
    );
    assert_eq!(
        run_mem(
            "stdw [%r1], 10\nmov %r0, 10\nmov %r2, 7\nlock cmpxchg [%r1], %r2\nldxdw %r1, [%r1]\nlsh %r0, 8\nor %r0, %r1\nexit",
            &m
        ),
        Ok(10 << 8 | 7)
    );
    assert_eq!(
        run_mem(
            "lddw %r2, 0x1ffffffff\nstw [%r1], 3\nlock xchg32 [%r1], %r2\nldxw %r0, [%r1]\nlsh %r0, 32\nor %r0, %r2\nexit",
            &m
        ),
        Ok(0xffff_ffff_0000_0003)
    );
    // 32-bit cmpxchg compares the low half of r0 and zero-extends r0.
    assert_eq!(
        run_mem(
            "stw [%r1], 3\nlddw %r0, 0x100000003\nmov %r2, 9\nlock cmpxchg32 [%r1], %r2\nldxw %r1, [%r1]\nlsh %r1, 8\nor %r0, %r1\nexit",
            &m
        ),
        Ok(9 << 8 | 3)
    );
    assert_eq!(
        run("stdw [%r10-8], 6\nmov %r2, 3\nlock and [%r10-8], %r2\nldxdw %r0, [%r10-8]\nexit"),
        Ok(2)
    );
}

#[test]
fn local_calls_preserve_callee_saved_and_have_own_stack() {
    let p = "mov %r6, 6\nstdw [%r10-8], 1\nmov %r1, 20\ncall local f\n\
             ldxdw %r1, [%r10-8]\nadd %r0, %r1\nadd %r0, %r6\nexit\n\
             f:\nmov %r6, 100\nstdw [%r10-8], 50\nldxdw %r0, [%r10-8]\nadd %r0, %r1\nexit";
    assert_eq!(run(p), Ok(70 + 1 + 6));
}

#[test]
fn helpers_and_callx() {
    assert_eq!(run("mov %r1, 40\nmov %r2, 2\ncall 1\nexit"), Ok(42));
    // Helper 5 returning 0 stops the program with r0 = 0.
    assert_eq!(run("mov %r1, 0\ncall 5\nmov %r0, 2\nexit"), Ok(0));
    assert_eq!(run("mov %r1, -1\ncall 5\nmov %r0, 2\nexit"), Ok(2));
    // callx with a helper id (uBPF convention).
    assert_eq!(run("mov %r1, 1\nmov %r2, 5\ncall %r2\nexit"), Ok(1));
    // callx with a function address from lddw (src 4).
    let insns = vec![
        Insn::LoadImm64 {
            dst: Reg::R3,
            imm: Imm64::Func(3),
        },
        Insn::Callx(Reg::R3),
        Insn::Exit,
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Mov,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(33),
        },
        Insn::Exit,
    ];
    let p = Program::from_insns(insns).unwrap();
    let mut vm = Interpreter::new(&p, &Helpers::new()).unwrap();
    assert_eq!(vm.run(&mut Memory::new(), &[]), Ok(33));
}

#[test]
fn data_reaches_helpers_and_executed_is_exact() {
    let mut h = Helpers::new();
    h.register(9, |env, _| {
        let n = env
            .data_mut::<u64>()
            .ok_or(HelperAbort::Failed("no".into()))?;
        *n += 1;
        Ok(*n)
    });
    let p = prog("mov %r6, 3\nloop:\ncall 9\nsub %r6, 1\njne %r6, 0, loop\nexit");
    let mut vm = Interpreter::new(&p, &h).unwrap();
    let mut n = 10u64;
    assert_eq!(vm.run_with_data(&mut Memory::new(), &[], &mut n), Ok(13));
    assert_eq!(vm.executed(), 1 + 3 * 3 + 1);
    // A forward jump skips instructions.
    let p = prog("mov %r0, 1\nja +3\nmov %r0, 2\nmov %r0, 2\nmov %r0, 2\nexit");
    let mut vm = Interpreter::new(&p, &h).unwrap();
    assert_eq!(vm.run(&mut Memory::new(), &[]), Ok(1));
    assert_eq!(vm.executed(), 3);
}

#[test]
fn legacy_packet_loads() {
    let p =
        prog("ldabsh 1\nmov %r6, %r0\nmov %r1, 2\nldindw %r1, 1\nlsh %r6, 32\nor %r0, %r6\nexit");
    let mut vm = Interpreter::new(&p, &Helpers::new()).unwrap();
    let mut pkt = [0x10u8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16];
    let mut m = Memory::new();
    m.add(RegionKind::Packet, &mut pkt);
    assert_eq!(vm.run(&mut m, &[]), Ok(0x1112_0000_0000 | 0x13141516));
    // Out of range ends the program with r0 = 0, as in the kernel.
    let p = prog("mov %r0, 7\nldabsw 4\nmov %r0, 9\nexit");
    let mut vm = Interpreter::new(&p, &Helpers::new()).unwrap();
    assert_eq!(vm.run(&mut m, &[]), Ok(0));
    let p = prog("mov %r1, -1\nldindb %r1, 0\nmov %r0, 9\nexit");
    let mut vm = Interpreter::new(&p, &Helpers::new()).unwrap();
    assert_eq!(vm.run(&mut m, &[]), Ok(0));
    // No packet region at all: a trap.
    assert_eq!(
        vm.run(&mut Memory::new(), &[]),
        Err(Trap::new(Pc(1), TrapKind::NoPacket))
    );
}

#[test]
fn trap_out_of_bounds() {
    let t = run_mem("mov %r0, 0\nldxw %r0, [%r1+2]\nexit", &[1, 2, 3, 4]).unwrap_err();
    assert_eq!(t.pc, Pc(1));
    assert!(matches!(
        t.kind,
        TrapKind::OutOfBounds {
            size: 4,
            access: Access::Read,
            ..
        }
    ));
    let (pc, kind) = trap_kind("mov %r0, 0\nstxdw [%r10], %r0\nexit");
    assert_eq!(pc, Pc(1));
    assert!(matches!(
        kind,
        TrapKind::OutOfBounds {
            size: 8,
            access: Access::Write,
            ..
        }
    ));
    let (pc, kind) = trap_kind("lddw %r1, 0x10\nldxb %r0, [%r1]\nexit");
    assert_eq!(pc, Pc(2));
    assert_eq!(
        kind,
        TrapKind::OutOfBounds {
            addr: 0x10,
            size: 1,
            access: Access::Read
        }
    );
    // Writes to a read-only region trap; reads do not.
    let ro = [7u8; 4];
    let mut m = Memory::new();
    let a = m.add_readonly(RegionKind::ReadOnlyData, &ro);
    let mut vm = Interpreter::new(
        &prog("ldxb %r0, [%r1]\nstb [%r1], 1\nexit"),
        &Helpers::new(),
    )
    .unwrap();
    let t = vm.run(&mut m, &[a]).unwrap_err();
    assert_eq!(
        t,
        Trap::new(
            Pc(1),
            TrapKind::OutOfBounds {
                addr: a,
                size: 1,
                access: Access::Write
            }
        )
    );
    // Atomics are writes.
    let (pc, kind) = trap_kind("mov %r1, 0\nmov %r2, 1\nlock add [%r1+8], %r2\nexit");
    assert_eq!(pc, Pc(2));
    assert_eq!(
        kind,
        TrapKind::OutOfBounds {
            addr: 8,
            size: 8,
            access: Access::Write
        }
    );
}

#[test]
fn trap_budget() {
    let p = prog("mov %r0, 0\nloop:\nadd %r0, 1\nja loop\nexit");
    let mut vm = Interpreter::builder()
        .budget(100)
        .build(&p, &Helpers::new())
        .unwrap();
    let t = vm.run(&mut Memory::new(), &[]).unwrap_err();
    assert_eq!(
        t,
        Trap::new(Pc(2), TrapKind::BudgetExhausted { budget: 100 })
    );
    assert_eq!(vm.executed(), 101);
    // Within budget: fine.
    let p = prog("mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 10, loop\nexit");
    let mut vm = Interpreter::builder()
        .budget(22)
        .build(&p, &Helpers::new())
        .unwrap();
    assert_eq!(vm.run(&mut Memory::new(), &[]), Ok(10));
    assert_eq!(vm.executed(), 22);
}

#[test]
fn trap_call_depth() {
    let (pc, kind) = trap_kind("call local f\nexit\nf:\ncall local f\nexit");
    assert_eq!(pc, Pc(2));
    assert_eq!(kind, TrapKind::CallDepthExceeded { max: 8 });
    // Eight frames (main + 7 nested) are fine.
    let mut text = String::new();
    for i in 0..7 {
        text.push_str(&format!("call local f{i}\nexit\nf{i}:\n"));
    }
    text.push_str("mov %r0, 5\nexit");
    assert_eq!(run(&text), Ok(5));
}

#[test]
fn trap_helpers() {
    assert_eq!(
        trap_kind("mov %r0, 0\ncall 99\nexit"),
        (Pc(1), TrapKind::UnknownHelper { id: HelperId(99) })
    );
    assert_eq!(
        trap_kind("mov %r0, 0\ncall 7\nexit"),
        (
            Pc(1),
            TrapKind::Helper {
                id: HelperId(7),
                message: "boom".into()
            }
        )
    );
    assert_eq!(
        trap_kind("mov %r1, 3\ncall 6\nexit"),
        (
            Pc(1),
            TrapKind::OutOfBounds {
                addr: 3,
                size: 1,
                access: Access::Read
            }
        )
    );
    // A helper reads the stack through the same checks.
    assert_eq!(
        run("stb [%r10-1], 77\nmov %r1, %r10\nsub %r1, 1\ncall 6\nexit"),
        Ok(77)
    );
    assert_eq!(
        trap_kind("mov %r2, 1000\ncall %r2\nexit"),
        (Pc(1), TrapKind::BadCallTarget { target: 1000 })
    );
}

/// Straight-line code of every length up to a few power-of-two op table
/// sizes, made of fused groups (a pair, and a ten-instruction byte-load
/// group), runs off the end onto the sentinel with the exact count, however
/// the groups end relative to the table's padding.
#[test]
fn falls_off_after_fused_groups_at_every_length() {
    let le32 = "ldxb %r2, [%r1+1]\nlsh32 %r2, 8\nldxb %r3, [%r1]\nor32 %r2, %r3\n\
                ldxb %r3, [%r1+2]\nlsh32 %r3, 16\nor32 %r2, %r3\nldxb %r3, [%r1+3]\n\
                lsh32 %r3, 24\nor32 %r2, %r3\n";
    for n in 1..=70usize {
        let mut text = String::new();
        let mut len = 0;
        while len + 10 <= n {
            text.push_str(le32);
            len += 10;
        }
        while len + 2 <= n {
            text.push_str("mov32 %r4, %r2\nand32 %r4, 0xff\n");
            len += 2;
        }
        if len < n {
            text.push_str("mov %r0, 1\n");
        }
        let p = prog(&text);
        assert_eq!(p.insns().len(), n);
        let mut vm = Interpreter::new(&p, &helpers()).unwrap();
        assert!(n < 10 || matches!(vm.ops[0], Op::LdxLe32Bytes { .. }));
        assert!(n % 10 < 2 || matches!(vm.ops[n / 10 * 10], Op::Mov32And32I { .. }));
        let mut buf = [1u8, 2, 3, 4];
        let mut m = Memory::new();
        let addr = m.add(RegionKind::Other, &mut buf);
        let fell = Err(Trap::new(Pc(n), TrapKind::FellOffEnd));
        assert_eq!(vm.run(&mut m, &[addr]), fell, "{n} instructions");
        assert_eq!(vm.executed(), n as u64, "{n} instructions");
        let mut steps = 0;
        let traced = vm.run_traced(&mut m, &[addr], None, &mut |_, _, _| steps += 1);
        assert_eq!(traced, fell, "{n} instructions, traced");
        assert_eq!(vm.executed(), n as u64, "{n} instructions, traced");
        assert_eq!(steps, n + 1, "{n} instructions, traced (and the sentinel)");
    }
}

#[test]
fn trap_fell_off_unsupported_unresolved() {
    assert_eq!(trap_kind("mov %r0, 1"), (Pc(1), TrapKind::FellOffEnd));
    assert_eq!(
        trap_kind("lddw %r0, 1\njeq %r0, 2, -1"),
        (Pc(3), TrapKind::FellOffEnd)
    );
    let kfunc =
        Program::from_insns(vec![Insn::CallKfunc { btf_id: 1, off: 0 }, Insn::Exit]).unwrap();
    let mut vm = Interpreter::new(&kfunc, &Helpers::new()).unwrap();
    assert_eq!(
        vm.run(&mut Memory::new(), &[]),
        Err(Trap::new(
            Pc(0),
            TrapKind::Unsupported { what: "kfunc call" }
        ))
    );
    let map = Program::from_insns(vec![
        Insn::Exit,
        Insn::LoadImm64 {
            dst: Reg::R1,
            imm: Imm64::MapFd(3),
        },
        Insn::Exit,
    ])
    .unwrap();
    let p = Program::from_insns(
        [
            vec![Insn::Ja {
                off: 0,
                long: false,
            }],
            map.insns()[1..].to_vec(),
        ]
        .concat(),
    )
    .unwrap();
    let mut vm = Interpreter::new(&p, &Helpers::new()).unwrap();
    assert_eq!(
        vm.run(&mut Memory::new(), &[]),
        Err(Trap::new(
            Pc(1),
            TrapKind::UnresolvedImm64 {
                imm: Imm64::MapFd(3)
            }
        ))
    );
    // With a resolver, the same program loads the resolved value.
    let resolver = |_pc: Pc, imm: &Imm64| match imm {
        Imm64::MapFd(fd) => Some(0x1000 + *fd as u64),
        _ => None,
    };
    let mut vm = Interpreter::builder()
        .resolver(&resolver)
        .build(&p, &Helpers::new())
        .unwrap();
    let mut seen = Vec::new();
    let r = vm.run_traced(&mut Memory::new(), &[], None, &mut |pc, _insn, regs| {
        seen.push((pc, regs[1]))
    });
    assert_eq!(r, Ok(0));
    assert_eq!(seen, vec![(Pc(0), 0), (Pc(1), 0), (Pc(3), 0x1003)]);
    let _ = Size::B;
}

/// Random slot sequences that decode run without panicking, whatever they
/// do (a tiny fuzzer; the `fuzz/` targets go further).
#[test]
fn random_programs_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Opcodes that decode, so that most programs are valid.
    let codes: Vec<u8> = (0..=255u8)
        .filter(|&c| {
            let raw = bpfkit_isa::RawInsn::new(c, 0, 0, 0, 0);
            bpfkit_isa::decode_one(raw, Some(Default::default())).is_ok()
                || (3..=7).contains(&(c & 7))
        })
        .collect();
    let helpers = helpers();
    let mut ran = 0;
    for _ in 0..3000 {
        let len = 1 + (next() % 12) as usize;
        let mut raws = Vec::new();
        for _ in 0..len {
            let w = next();
            let code = codes[(w % codes.len() as u64) as usize];
            let dst = ((w >> 8) % 11) as u8;
            let src = ((w >> 12) % 11) as u8;
            let off = match (w >> 16) % 3 {
                0 => ((w >> 20) % 5) as i16 - 2,
                1 => -(((w >> 20) % 64) as i16),
                _ => (w >> 20) as i16,
            };
            let imm = match (w >> 40) % 3 {
                0 => ((w >> 44) % 8) as i32,
                1 => [1, 8, 16, 32, 64, 0xa0, 0xe1, 0xf1][((w >> 44) % 8) as usize],
                _ => (w >> 32) as i32,
            };
            let raw = bpfkit_isa::RawInsn::new(code, dst, src, off, imm);
            // Clear fields until the slot decodes (the decoder is strict
            // about unused fields), else fall back to `mov r0, imm`.
            let candidates = [
                raw,
                bpfkit_isa::RawInsn { imm: 0, ..raw },
                bpfkit_isa::RawInsn { off: 0, ..raw },
                bpfkit_isa::RawInsn::new(code, dst, 0, off, imm),
                bpfkit_isa::RawInsn::new(code, dst, 0, 0, imm),
                bpfkit_isa::RawInsn::new(code, dst, src, 0, 0),
                bpfkit_isa::RawInsn::new(code, 0, 0, off, 0),
                bpfkit_isa::RawInsn::new(code, 0, 0, 0, imm),
                bpfkit_isa::RawInsn::new(code, dst, 0, 0, 0),
            ];
            let chosen = candidates
                .into_iter()
                .find(|r| bpfkit_isa::decode_one(*r, Some(Default::default())).is_ok())
                .unwrap_or(bpfkit_isa::RawInsn::new(0xb7, 0, 0, 0, imm));
            raws.push(chosen);
        }
        // Pull out-of-range branch targets in.
        let mut p = Program::decode_raw(&raws);
        for _ in 0..32 {
            match &p {
                Err(e) => {
                    let Some(r) = raws.get_mut(e.pc.0) else { break };
                    r.off = 0;
                    if r.code & 7 == 6 || r.code == 0x85 || r.code == 0x18 {
                        r.imm = 0;
                    }
                    if r.code == 0x18 && e.pc.0 + 1 == len {
                        *r = bpfkit_isa::RawInsn::new(0x95, 0, 0, 0, 0);
                    }
                }
                Ok(_) => break,
            }
            p = Program::decode_raw(&raws);
        }
        let Ok(p) = p else {
            continue;
        };
        ran += 1;
        let mut vm = Interpreter::builder()
            .budget(1000)
            .build(&p, &helpers)
            .unwrap();
        let mut buf = [0u8; 32];
        let mut m = Memory::new();
        let a = m.add(RegionKind::Packet, &mut buf);
        let _ = vm.run(&mut m, &[a, 32, a + 8, 0, u64::MAX]);
        assert!(vm.executed() <= 1000 + 12);
    }
    assert!(ran > 300, "only {ran} random programs decoded");
}

#[test]
fn interpreter_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Interpreter>();
    check::<Helpers>();
}

/// Superinstructions agree with one-op-per-instruction execution (which
/// tracing uses) on random programs built from the fused idioms, with
/// register aliasing, jumps into the middle of fused groups, loads that
/// trap partway through a group and budgets that run out at any point;
/// every register is folded into r0 at the end, and memory is compared.
#[test]
fn fused_ops_match_plain_execution() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let conds = [
        "jeq", "jgt", "jge", "jset", "jne", "jsgt", "jsge", "jlt", "jle", "jslt", "jsle",
    ];
    let mut fused_programs = 0;
    let mut traps = 0;
    for round in 0..3000 {
        // r5 points into the buffer (r1 on entry).
        // Frame slots the program reads are written first (the stack is not
        // cleared between the two runs).
        let mut text =
            String::from("mov %r5, %r1\nstdw [%r10-8], 0\nstdw [%r10-16], 0\nstdw [%r10-24], 0\n");
        for r in 0..4 {
            text.push_str(&format!("lddw %r{r}, {:#x}\n", next()));
        }
        let n = 4 + next() % 24;
        for _ in 0..n {
            let w = next();
            let d = w % 4;
            let s = (w >> 4) % 4;
            let t = (w >> 60) % 4;
            let k = (w >> 8) % 70;
            let kk = (w >> 16) as u32;
            // Mostly inside the 32-byte buffer, sometimes just outside.
            let o1 = ((w >> 24) % 36) as i64 - ((w >> 29) % 2) as i64;
            // Often the byte next to o1 (one two-byte access when fused).
            let o2 = match (w >> 2) % 4 {
                0 => o1 + 1,
                1 => o1 - 1,
                _ => ((w >> 30) % 32) as i64,
            };
            let small = (w >> 36) % 4;
            let slot = 8 * (1 + (w >> 58) % 3);
            let line = match (w >> 40) % 66 {
                0 => format!("mov32 %r{d}, %r{s}\nand32 %r{d}, {kk:#x}"),
                1 => format!("mov32 %r{d}, %r{s}\nlsh32 %r{d}, {k}"),
                2 => format!("mov32 %r{d}, %r{s}\nrsh32 %r{d}, {k}"),
                3 => format!("mov32 %r{d}, %r{s}\nadd32 %r{d}, {kk:#x}"),
                4 => format!("mov %r{d}, %r{s}\nadd %r{d}, {}", kk as i32),
                5 => format!("lsh32 %r{d}, {k}\narsh32 %r{d}, {}", k / 2),
                6 => format!("lsh %r{d}, {k}\nrsh %r{d}, {}", k / 2),
                7 => format!("lsh %r{d}, {k}\narsh %r{d}, {}", k / 3),
                8 => format!("jeq %r{d}, {}, +1", kk % 3),
                9 => format!("jset %r{d}, 1, +2"),
                10 => format!("mov32 %r{d}, %r{d}\nand32 %r{d}, {kk:#x}"),
                11 => format!("xor %r{d}, %r{s}"),
                12 => format!("mul %r{d}, {}", (kk | 1) as i32),
                13 => format!("lsh32 %r{d}, %r{s}\narsh32 %r{d}, {k}"),
                14 => format!("neg %r{d}"),
                15 if w % 3 == 0 => format!("lsh %r{d}, {k}\nor %r{d}, %r{s}"),
                15 if w % 3 == 1 => format!("lsh32 %r{d}, {k}\nor32 %r{d}, %r{s}"),
                15 => format!("arsh32 %r{d}, {k}\nand32 %r{d}, {kk:#x}"),
                16 => format!(
                    "mov32 %r{t}, %r{s}\nrsh32 %r{t}, {}\nmov32 %r{d}, %r{s}\nlsh32 %r{d}, {}\nor32 %r{d}, %r{t}",
                    k % 32,
                    32 - k % 32
                ),
                17 => format!(
                    "mov32 %r{t}, %r{d}\nrsh32 %r{t}, {}\nlsh32 %r{d}, {}\nor32 %r{d}, %r{t}",
                    k % 32,
                    (k / 2) % 32
                ),
                18 => {
                    let c = (w >> 50) % 4;
                    let m = (w >> 54) % 4;
                    format!(
                        "mov32 %r{d}, %r{s}\nmov32 %r{c}, 32\nsub32 %r{c}, %r{m}\nmov32 %r{t}, %r{d}\n\
                         lsh32 %r{t}, %r{m}\nrsh32 %r{d}, %r{c}\nor32 %r{d}, %r{t}"
                    )
                }
                19 => format!("ldxb %r{d}, [%r5{o1:+}]\nlsh32 %r{d}, {}", k % 32),
                20 => format!("ldxb %r{t}, [%r5{o1:+}]\nor32 %r{d}, %r{t}"),
                21 => format!(
                    "ldxb %r{t}, [%r5{o1:+}]\nlsh32 %r{t}, {}\nor32 %r{d}, %r{t}",
                    k % 32
                ),
                22 => format!(
                    "ldxb %r{t}, [%r5{o1:+}]\nldxb %r{d}, [%r5{o2:+}]\nlsh %r{d}, 8\nor %r{d}, %r{t}"
                ),
                23 => format!(
                    "ldxb %r{t}, [%r5{o1:+}]\nldxb %r{d}, [%r5{o2:+}]\nlsh32 %r{d}, {}\nor32 %r{d}, %r{t}",
                    k % 32
                ),
                24 => format!(
                    "lsh32 %r{d}, {}\narsh32 %r{d}, 31\nand32 %r{d}, {kk:#x}",
                    k % 32
                ),
                25 => format!(
                    "mov32 %r{d}, %r{s}\nlsh32 %r{d}, {}\narsh32 %r{d}, 31\nand32 %r{d}, {kk:#x}",
                    k % 32
                ),
                26 => format!("neg32 %r{d}\nand32 %r{d}, {kk:#x}"),
                27 => format!("mov %r{d}, %r{s}\nadd %r{d}, %r{t}"),
                28 => format!("add %r{d}, {}\nadd %r{s}, {}", kk as i32, k),
                29 => format!("mul32 %r{d}, {kk:#x}\nadd32 %r{d}, {k}"),
                30 | 31 => {
                    let cond = conds[((w >> 50) % 11) as usize];
                    let width = if w % 2 == 0 { "32" } else { "" };
                    let mov = if (w >> 1) % 2 == 0 { "mov32" } else { "mov" };
                    let imm = [0, 1, -1, kk as i32][((w >> 56) % 4) as usize];
                    format!(
                        "{mov} %r{d}, {small}\n{cond}{width} %r{s}, {imm}, +1\n{mov} %r{d}, {}",
                        (small + 1) % 3
                    )
                }
                32 if w % 8 == 0 => format!("ldxb %r5, [%r5{o1:+}]"),
                33 => {
                    let cond = conds[((w >> 50) % 11) as usize];
                    let mask = [0xff, 0xffff, 0x3c, kk & 0xffff][((w >> 54) % 4) as usize];
                    let imm = [0, 1, 0x20, (kk >> 3) & 0xffff][((w >> 56) % 4) as usize];
                    format!("and32 %r{d}, {mask:#x}\n{cond}32 %r{d}, {imm:#x}, +1")
                }
                34 => format!("mov32 %r{d}, %r{s}\nadd32 %r{d}, %r{t}"),
                35 => format!("mov32 %r{d}, %r{s}\nxor32 %r{d}, %r{t}"),
                36 => format!("xor32 %r{d}, %r{s}\nsub32 %r{d}, %r{t}"),
                37 => format!("mov32 %r{d}, %r{s}\nxor32 %r{d}, %r{t}\nsub32 %r{d}, %r{}", k % 4),
                38 => format!(
                    "stxdw [%r10-{slot}], %r{s}\nldxdw %r{d}, [%r10-{slot}]\nand32 %r{d}, {kk:#x}"
                ),
                39 => format!(
                    "stxw [%r10-{slot}], %r{s}\nldxw %r{d}, [%r10-{slot}]\nand32 %r{d}, {kk:#x}"
                ),
                40 => format!(
                    "stxdw [%r10-{slot}], %r{s}\nldxdw %r{d}, [%r10-{slot}]\nadd %r{d}, {}",
                    kk as i32
                ),
                41 => format!(
                    "ldxdw %r{d}, [%r10-{slot}]\nand %r{d}, {}",
                    kk as i32 >> (k % 32)
                ),
                42 => format!("lsh32 %r{d}, {k}\nand32 %r{d}, {kk:#x}"),
                43 if w % 2 == 0 => format!("add32 %r{d}, {kk:#x}\nand32 %r{d}, {:#x}", kk >> 16),
                44 => format!("mov32 %r{d}, %r{s}\nmov32 %r{t}, %r{}", k % 4),
                45 => {
                    // An unaligned little-endian load; the base is r5 or,
                    // sometimes, a register the group overwrites.
                    let u = (w >> 50) % 4;
                    let v = (w >> 54) % 4;
                    let b = if w % 5 == 0 { format!("r{v}") } else { "r5".into() };
                    let pre = if b == "r5" { String::new() } else { format!("mov %{b}, %r5\n") };
                    let o = o1 - 1;
                    format!(
                        "{pre}ldxb %r{d}, [%{b}{:+}]\nlsh32 %r{d}, 8\nldxb %r{t}, [%{b}{o:+}]\nor32 %r{d}, %r{t}\n\
                         ldxb %r{u}, [%{b}{:+}]\nlsh32 %r{u}, 16\nor32 %r{d}, %r{u}\n\
                         ldxb %r{v}, [%{b}{:+}]\nlsh32 %r{v}, 24\nor32 %r{d}, %r{v}",
                        o + 1,
                        o + 2,
                        o + 3
                    )
                }
                49 => format!("mov %r{d}, %r{s}\njlt %r{t}, %r{}, +1", k % 4),
                50 => format!("mov32 %r{d}, %r{s}\njlt %r{t}, {}, +1", kk as i32 >> (k % 32)),
                51 => format!("mov32 %r{d}, %r{s}\njlt %r{t}, {}, +2", kk as i32 >> (k % 32)),
                55 => format!(
                    "ldxb %r{t}, [%r5{o1:+}]\nldxb %r{d}, [%r5{o2:+}]\nlsh %r{d}, 8\nor %r{d}, %r{t}\nadd %r{d}, %r{s}"
                ),
                56 => format!(
                    "stxdw [%r10-{slot}], %r{s}\nldxdw %r{d}, [%r10-{slot}]\nldxw %r{t}, [%r10-{}]",
                    8 * (1 + k % 3)
                ),
                57 => format!(
                    "stxw [%r10-{slot}], %r{s}\nstxw [%r10-{}], %r{t}\nldxdw %r{d}, [%r10-{slot}]",
                    4 * (1 + k % 6)
                ),
                58 => format!(
                    "mov %r{d}, 1\nlsh %r{d}, %r{s}\nlddw %r{t}, {:#x}\nand %r{d}, %r{t}",
                    next()
                ),
                59 => {
                    // A counter in the buffer (or, via r{t}, wherever).
                    let b = if w % 4 == 0 { format!("r{t}") } else { "r5".into() };
                    format!(
                        "ldxw %r{d}, [%{b}{o1:+}]\nadd32 %r{d}, {kk:#x}\nstxw [%{b}{o1:+}], %r{d}"
                    )
                }
                60 => format!(
                    "mov32 %r{t}, %r{d}\nrsh32 %r{t}, {}\nlsh32 %r{d}, {}\nor32 %r{d}, %r{t}\nxor32 %r{s}, %r{d}",
                    k % 32,
                    32 - k % 32
                ),
                52 => format!(
                    "lsh32 %r{d}, {}\narsh32 %r{d}, 31\nand32 %r{d}, {kk:#x}\nxor32 %r{d}, %r{t}",
                    k % 32
                ),
                53 => format!(
                    "mov32 %r{d}, %r{s}\nlsh32 %r{d}, {}\narsh32 %r{d}, 31\nand32 %r{d}, {kk:#x}\nxor32 %r{d}, %r{t}",
                    k % 32
                ),
                54 => format!("mov32 %r{t}, %r{s}\nrsh32 %r{t}, {}\nxor32 %r{d}, %r{t}", k % 32),
                61 => {
                    // The loaded register on either side of the compare.
                    let cond = conds[((w >> 50) % 11) as usize];
                    let (x, y) = if w % 2 == 0 { (d, s) } else { (s, d) };
                    format!("ldxw %r{d}, [%r5{o1:+}]\n{cond}32 %r{x}, %r{y}, +1")
                }
                62 => {
                    let cond = conds[((w >> 50) % 11) as usize];
                    format!("mov32 %r{d}, %r{s}\n{cond}32 %r{t}, %r{}, +1", k % 4)
                }
                63 => format!("mov %r{d}, %r{s}\nmul %r{d}, {}", kk as i32 >> (k % 32)),
                65 => format!(
                    "mov32 %r{d}, %r{s}\nadd32 %r{d}, %r{t}\nrsh32 %r{d}, {}",
                    k % 32
                ),
                64 => {
                    // An element's address; the base may be the scaled
                    // index (and the element register the index).
                    let scale = if w % 2 == 0 { "mul" } else { "lsh" };
                    let k = if w % 2 == 0 { kk as i32 >> (k % 32) } else { (k % 32) as i32 };
                    format!(
                        "mov %r{t}, %r{s}\n{scale} %r{t}, {k}\nmov %r{d}, %r{}\nadd %r{d}, %r{t}",
                        (w >> 50) % 4
                    )
                }
                46 => format!("mov32 %r1, %r{s}\ncall local f"),
                47 => format!("mov %r1, %r{s}\ncall local f"),
                48 => format!("mov32 %r1, {kk:#x}\ncall local f"),
                _ => format!("add32 %r{d}, %r{s}"),
            };
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("mov %r0, %r0\nmul %r0, 31\nadd %r0, %r1\nmul %r0, 31\nadd %r0, %r2\nmul %r0, 31\nadd %r0, %r3\nexit\n");
        text.push_str("f:\nmov32 %r0, %r1\nmul32 %r0, 3\nexit\n");
        let p = prog(&text);
        let budget = if round % 4 == 0 {
            next() % 60
        } else {
            u64::MAX
        };
        let mut vm = Interpreter::builder()
            .budget(budget)
            .build(&p, &Helpers::new())
            .unwrap();
        if vm
            .ops
            .iter()
            .zip(&vm.plain)
            .any(|(a, b)| std::mem::discriminant(a) != std::mem::discriminant(b))
        {
            fused_programs += 1;
        }
        let data: Vec<u8> = (0..32).map(|_| next() as u8).collect();
        // Both runs on the same buffer (addresses end up in registers).
        let mut buf = data.clone();
        let mut m = Memory::new();
        let a = m.add(RegionKind::Other, &mut buf);
        let fast = vm.run(&mut m, &[a]);
        let fast_count = vm.executed();
        drop(m);
        let after_fast = buf.clone();
        buf.copy_from_slice(&data);
        let mut m = Memory::new();
        assert_eq!(m.add(RegionKind::Other, &mut buf), a);
        let mut traced_count = 0u64;
        let slow = vm.run_traced(&mut m, &[a], None, &mut |_, _, _| traced_count += 1);
        drop(m);
        if fast.is_err() {
            traps += 1;
        }
        assert_eq!(fast, slow, "{text}");
        assert_eq!(fast_count, vm.executed(), "{text}");
        assert_eq!(fast_count, traced_count, "{text}");
        assert_eq!(after_fast, buf, "{text}");
    }
    assert!(fused_programs > 2500, "{fused_programs}");
    assert!(traps > 300 && traps < 2000, "{traps}");
}

/// Runs `text` as is and with an unreachable `mov %r10, %r10` appended,
/// which turns off the `r10 + off` stack specialisation (the program now
/// "writes" r10) without changing what runs: both must agree on the
/// result, the count and any trap.
fn same_with_and_without_fixed_fp(text: &str, mem: &[u8]) -> Result<u64, Trap> {
    let special = prog(text);
    let general = prog(&format!("{text}\nmov %r10, %r10"));
    let mut results = Vec::new();
    for (p, expect_stack_ops) in [(special, true), (general, false)] {
        let mut vm = Interpreter::new(&p, &helpers()).unwrap();
        let has_stack_ops = vm.ops.iter().any(|op| {
            matches!(
                op,
                Op::LdxStackB { .. }
                    | Op::LdxStackH { .. }
                    | Op::LdxStackW { .. }
                    | Op::LdxStackDw { .. }
                    | Op::StxStackB { .. }
                    | Op::StxStackH { .. }
                    | Op::StxStackW { .. }
                    | Op::StxStackDw { .. }
                    | Op::StStackW { .. }
                    | Op::StStackDw { .. }
            )
        });
        if !expect_stack_ops {
            assert!(!has_stack_ops, "{text}");
        }
        let mut buf = mem.to_vec();
        let mut m = Memory::new();
        let addr = m.add(RegionKind::Other, &mut buf);
        let mut r = vm.run(&mut m, &[addr, mem.len() as u64]);
        // Each interpreter has its own stack: compare faulting addresses
        // relative to its top.
        if let Err(Trap {
            kind: TrapKind::OutOfBounds { addr, .. },
            ..
        }) = &mut r
        {
            *addr = addr.wrapping_sub(vm.stack_range().1);
        }
        results.push((r, vm.executed(), buf));
    }
    assert_eq!(results[0], results[1], "{text}");
    results.swap_remove(0).0
}

#[test]
fn stack_slots_at_fixed_offsets() {
    let p = "stdw [%r10-512], 7\nstw [%r10-4], -1\nstxb [%r10-9], %r2\nstxh [%r10-12], %r2\n\
             stxw [%r10-16], %r2\nstxdw [%r10-24], %r2\nldxdw %r0, [%r10-512]\n\
             ldxw %r3, [%r10-4]\nadd %r0, %r3\nldxb %r3, [%r10-9]\nadd %r0, %r3\n\
             ldxh %r3, [%r10-12]\nadd %r0, %r3\nldxw %r3, [%r10-16]\nadd %r0, %r3\n\
             ldxdw %r3, [%r10-24]\nadd %r0, %r3\nexit";
    assert_eq!(
        same_with_and_without_fixed_fp(p, &[0; 8]),
        Ok(7u64 + 0xffff_ffff + 8 + 8 + 8 + 8)
    );
    // Frames of nested calls are distinct; r10 comes back after exit.
    let p = "stdw [%r10-8], 1\ncall local f\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n\
             f:\nstdw [%r10-8], 50\ncall local g\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n\
             g:\nstdw [%r10-8], 400\nldxdw %r0, [%r10-8]\nexit";
    assert_eq!(same_with_and_without_fixed_fp(p, &[0; 8]), Ok(451));
    // Outside the frame: the general, checked path (same traps).
    for p in [
        "ldxdw %r0, [%r10-4]\nexit",
        "ldxb %r0, [%r10]\nexit",
        "stw [%r10-2], 1\nexit",
        "ldxdw %r0, [%r10-520]\nexit",
        "stxdw [%r10+8], %r1\nexit",
    ] {
        let _ = same_with_and_without_fixed_fp(p, &[0; 8]);
    }
    // The bytes just past the stack (allocated as padding) are not the
    // guest's.
    for p in [
        "ldxb %r0, [%r10]\nexit",
        "ldxdw %r0, [%r10]\nexit",
        "stxdw [%r10], %r1\nexit",
    ] {
        assert!(
            matches!(
                same_with_and_without_fixed_fp(p, &[0; 8]),
                Err(Trap {
                    kind: TrapKind::OutOfBounds { .. },
                    ..
                })
            ),
            "{p}"
        );
    }
    let vm = Interpreter::new(&prog("exit"), &Helpers::new()).unwrap();
    let (start, end) = vm.stack_range();
    assert_eq!(end - start, (STACK_SIZE * MAX_CALL_FRAMES) as u64);
}
