//! The JIT's API and the corners of the execution model, each checked
//! against the interpreter.

use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    HelperId, Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{HelperAbort, Helpers, Memory, RegionKind, Trap, TrapKind};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register(1, |_e, a| Ok(a[0] + a[1]));
    h.register(2, |_e, a| Err(HelperAbort::Stop { r0: a[0] }));
    h.register(3, |_e, _a| Err(HelperAbort::Failed("nope".into())));
    h.register(4, |e, a| {
        *e.data_mut::<u64>().unwrap() += a[0];
        Ok(0)
    });
    h.register(5, |_e, _a| panic!("helper panicked"));
    h
}

/// Runs on both engines (with `budget`, over a packet) and checks they agree.
fn both(p: &Program, budget: Option<u64>, packet: Option<&[u8]>) -> Result<u64, Trap> {
    let h = helpers();
    let run = |jit: bool| {
        let mut pkt = packet.map(|p| p.to_vec()).unwrap_or_default();
        let mut mem = Memory::new();
        let addr = if packet.is_some() {
            mem.add(RegionKind::Packet, &mut pkt)
        } else {
            0
        };
        if jit {
            let mut b = Jit::builder();
            if let Some(n) = budget {
                b = b.budget(n);
            }
            b.build(p, &h).unwrap().run(&mut mem, &[addr, 7])
        } else {
            let mut b = Interpreter::builder();
            if let Some(n) = budget {
                b = b.budget(n);
            }
            b.build(p, &h).unwrap().run(&mut mem, &[addr, 7])
        }
    };
    let (i, j) = (run(false), run(true));
    assert_eq!(i, j, "interpreter vs JIT");
    j
}

#[test]
fn basic_results() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    assert_eq!(
        both(&prog("mov %r0, %r2\nadd %r0, 35\nexit"), None, None),
        Ok(42)
    );
    assert_eq!(
        both(&prog("mov %r1, 2\nmov %r2, 3\ncall 1\nexit"), None, None),
        Ok(5)
    );
}

/// 32-bit shifts by a register whose masked count is 0 still clear the
/// upper half (the JIT emits no extra zero-extension after them).
#[test]
fn shift32_by_register_zero_extends() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    for op in ["lsh32", "rsh32", "arsh32"] {
        for count in [0u32, 32, 64, 96] {
            let text =
                format!("lddw %r0, 0xdeadbeef87654321\nmov %r1, {count}\n{op} %r0, %r1\nexit");
            assert_eq!(
                both(&prog(&text), None, None),
                Ok(0x8765_4321),
                "{op} by {count}"
            );
        }
    }
}

/// Calls save only the r6-r9 their callee writes, which needs the callee
/// to stay in its own range; programs that jump into another subprogram or
/// fall through into the next one (checked mode runs them, the verifier
/// would not) still get the caller's r6-r9 back.
#[test]
fn calls_that_leave_their_subprogram_keep_r6_r9() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let jump_across = "mov %r6, 5\ncall local f\nadd %r0, %r6\ncall local g\nadd %r0, %r6\nexit\n\
        f:\nmov %r0, 1\nja gbody\n\
        g:\nmov %r0, 2\ngbody:\nmov %r6, 100\nadd %r0, 10\nexit";
    assert_eq!(both(&prog(jump_across), None, None), Ok(17));
    let fall_through = "mov %r6, 5\ncall local f\nadd %r0, %r6\ncall local g\nadd %r0, %r6\nexit\n\
        f:\nmov %r0, 1\n\
        g:\nmov %r6, 100\nexit";
    assert_eq!(both(&prog(fall_through), None, None), Ok(11));
    // The same shapes with a budget (the counted call path).
    assert_eq!(both(&prog(jump_across), Some(1000), None), Ok(17));
    assert_eq!(both(&prog(fall_through), Some(1000), None), Ok(11));
}

#[test]
fn helper_aborts_at_any_depth() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(
        "call local f\nmov %r0, 1\nexit\nf:\ncall local g\nexit\ng:\nmov %r1, 77\ncall 2\nexit",
    );
    assert_eq!(both(&p, None, None), Ok(77));
    let p = prog("call local f\nexit\nf:\ncall 3\nexit");
    let t = both(&p, Some(100), None).unwrap_err();
    assert_eq!(t.pc, Pc(2));
    assert!(matches!(
        t.kind,
        TrapKind::Helper {
            id: HelperId(3),
            ..
        }
    ));
}

#[test]
fn traps_match() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let cases: &[(&str, TrapKind)] = &[
        ("mov %r0, 1\n", TrapKind::FellOffEnd),
        (
            "call 99\nexit",
            TrapKind::UnknownHelper { id: HelperId(99) },
        ),
        ("ldabsb 1\nexit", TrapKind::NoPacket),
        (
            "mov %r3, 0x1234\ncall %r3\nexit",
            TrapKind::BadCallTarget { target: 0x1234 },
        ),
        (
            "f:\ncall local f\nexit",
            TrapKind::CallDepthExceeded { max: 8 },
        ),
        ("ja -1\nexit", TrapKind::BudgetExhausted { budget: 1000 }),
    ];
    for (text, kind) in cases {
        let t = both(&prog(text), Some(1000), None).unwrap_err();
        assert_eq!(&t.kind, kind, "{text}");
    }
    // Stack addresses differ between the engines: compare with each stack.
    let p = prog("ldxdw %r0, [%r10+0]\nexit");
    let mut jit = Jit::new(&p, &Helpers::new()).unwrap();
    let t = jit.run(&mut Memory::new(), &[]).unwrap_err();
    let top = jit.stack_range().1;
    assert_eq!(
        (t.pc, t.kind),
        (
            Pc(0),
            TrapKind::OutOfBounds {
                addr: top,
                size: 8,
                access: bpfkit_runtime::Access::Read
            }
        )
    );
}

#[test]
fn legacy_packet_loads() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let pkt = [1u8, 2, 3, 4, 5, 6];
    assert_eq!(both(&prog("ldabsh 1\nexit"), None, Some(&pkt)), Ok(0x0203));
    assert_eq!(
        both(&prog("ldabsw 2\nexit"), None, Some(&pkt)),
        Ok(0x0304_0506)
    );
    // Out of range ends the program with r0 = 0, even in a callee.
    let p = prog("mov %r0, 9\ncall local f\nmov %r0, 5\nexit\nf:\nmov %r6, 4\nldindw %r6, 0\nexit");
    assert_eq!(both(&p, None, Some(&pkt)), Ok(0));
}

#[test]
fn callx_to_lddw_function_and_budget_mid_run() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // callx into the middle of f's straight-line run: the budget must count
    // only what runs.
    let insns = vec![
        Insn::LoadImm64 {
            dst: Reg::new(8).unwrap(),
            imm: Imm64::Func(7), // slot 8: `add r0, 2` inside f
        },
        Insn::Callx(Reg::new(8).unwrap()),
        Insn::Exit,
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Mov,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(0),
        },
        // f (slot 5)
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Add,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(1),
        },
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Add,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(1),
        },
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Add,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(1),
        },
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Add,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(2),
        },
        Insn::Exit,
    ];
    let p = Program::from_insns(insns).unwrap();
    for budget in 1..8 {
        let _ = both(&p, Some(budget), None);
    }
    assert_eq!(both(&p, None, None), Ok(2));
}

/// `r0 = 0`, then a `jeq r0, 1, +14` (never taken) over 14 `add r0, 1`:
/// a forward jump that relaxation shrinks, moving the code after it.
fn jump_over_adds() -> Vec<Insn> {
    let mut insns = vec![
        Insn::Alu {
            width: bpfkit_isa::Width::W64,
            op: bpfkit_isa::AluOp::Mov,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(0),
        },
        Insn::Jmp {
            width: bpfkit_isa::Width::W64,
            cond: bpfkit_isa::Cond::Eq,
            dst: Reg::R0,
            src: bpfkit_isa::Src::Imm(1),
            off: 14,
        },
    ];
    insns.extend((0..14).map(|_| Insn::Alu {
        width: bpfkit_isa::Width::W64,
        op: bpfkit_isa::AluOp::Add,
        dst: Reg::R0,
        src: bpfkit_isa::Src::Imm(1),
    }));
    insns
}

/// `callx`'s table of code offsets is read after relaxation shrank a jump
/// before the target (the jump skips more instructions than are scanned
/// for an early short jump, so it is a shrink candidate, and 14 `add`s fit
/// a rel8): the offsets must be the moved ones.
#[test]
fn callx_lands_on_its_target_after_relaxation() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let add = |k: i32| Insn::Alu {
        width: bpfkit_isa::Width::W64,
        op: bpfkit_isa::AluOp::Add,
        dst: Reg::R0,
        src: bpfkit_isa::Src::Imm(k),
    };
    let mut insns = vec![Insn::LoadImm64 {
        dst: Reg::new(8).unwrap(),
        imm: Imm64::Func(19), // slot 20: f
    }];
    insns.extend(jump_over_adds());
    insns.extend([Insn::Callx(Reg::new(8).unwrap()), Insn::Exit]);
    // f (slot 20)
    insns.extend([add(100), Insn::Exit]);
    let p = Program::from_insns(insns).unwrap();
    assert_eq!(both(&p, None, None), Ok(114));
    assert_eq!(both(&p, Some(100), None), Ok(114));
}

/// A checked access that faults reports its own instruction when a jump
/// before it was shrunk by relaxation (the return address of its
/// slow-path call, `Lowered::sites`, moves with the code), and two
/// accesses after one another are told apart.
#[test]
fn fault_sites_after_relaxation() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut insns = jump_over_adds();
    // r1 is the packet (readable, 6 bytes), r2 = 7 is no memory.
    for (base, off) in [(Reg::R1, 0), (Reg::R2, 0)] {
        insns.push(Insn::Load {
            size: bpfkit_isa::Size::B,
            sign_extend: false,
            dst: Reg::R3,
            src: base,
            off,
        });
    }
    insns.push(Insn::Exit);
    let p = Program::from_insns(insns).unwrap();
    let t = both(&p, None, Some(&[1, 2, 3, 4, 5, 6])).unwrap_err();
    assert_eq!(t.pc.0, 17, "{t:?}");
}

#[test]
fn resolver_and_unresolved() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let insns = vec![
        Insn::LoadImm64 {
            dst: Reg::R0,
            imm: Imm64::MapFd(3),
        },
        Insn::Exit,
    ];
    let p = Program::from_insns(insns).unwrap();
    let resolve = |_pc: Pc, imm: &Imm64| match imm {
        Imm64::MapFd(fd) => Some(0x1000 + *fd as u64),
        _ => None,
    };
    let mut jit = Jit::builder()
        .resolver(&resolve)
        .build(&p, &Helpers::new())
        .unwrap();
    assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(0x1003));
    let t = both(&p, None, None).unwrap_err();
    assert_eq!(
        (t.pc, t.kind),
        (
            Pc(0),
            TrapKind::UnresolvedImm64 {
                imm: Imm64::MapFd(3)
            }
        )
    );
}

#[test]
fn data_and_panics() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = helpers();
    let mut jit = Jit::new(&prog("mov %r1, 5\ncall 4\ncall 4\nexit"), &h).unwrap();
    let mut n = 1u64;
    assert_eq!(jit.run_with_data(&mut Memory::new(), &[], &mut n), Ok(0));
    assert_eq!(n, 11);
    let mut jit = Jit::new(&prog("call local f\nexit\nf:\ncall 5\nexit"), &h).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        jit.run(&mut Memory::new(), &[])
    }));
    assert!(r.is_err(), "the helper's panic reaches the caller");
    // The JIT is still usable afterwards.
    let mut jit = Jit::new(&prog("mov %r0, 3\nexit"), &h).unwrap();
    assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(3));
}

#[test]
fn code_pages_are_read_execute() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let code = bpfkit_jit::memory::publish(vec![0xc3; 10]).unwrap();
    assert_eq!(code.bytes(), &[0xc3; 10]);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let addr = code.addr();
    let line = maps
        .lines()
        .find(|l| {
            let range = l.split(' ').next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
            (a..b).contains(&addr)
        })
        .expect("mapping listed");
    assert!(line.contains(" r-xp "), "{line}");
}

/// Code pages come from the arena (see `memory`'s docs): every piece
/// holds exactly its code, `int3` after it, is read+execute and overlaps
/// no other live piece; no mapping of the process is ever writable and
/// executable; programs keep running while chunks come and go.
#[test]
fn arena_code_pages_are_fresh_and_read_execute() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    use bpfkit_jit::memory::{publish, CHUNK_BYTES};
    let mut live = Vec::new();
    // Enough pieces to use up several chunks, half of them kept alive.
    let n = 3 * CHUNK_BYTES / 4096;
    for k in 0..n {
        let len = 100 + k % 5000;
        let code = publish(vec![k as u8; len]).unwrap();
        assert_eq!(code.bytes(), &vec![k as u8; len][..]);
        if k % 2 == 0 {
            live.push(code);
        }
    }
    let mut ranges: Vec<(u64, u64)> = live
        .iter()
        .map(|c| (c.addr(), c.addr() + c.len() as u64))
        .collect();
    ranges.sort_unstable();
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "pieces overlap"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.lines().any(|l| l.contains(" rwx")), "{maps}");
    for c in &live {
        let line = maps
            .lines()
            .find(|l| {
                let (a, b) = l.split(' ').next().unwrap().split_once('-').unwrap();
                let (a, b) = (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                );
                (a..b).contains(&c.addr())
            })
            .expect("mapping listed");
        assert!(line.contains(" r-xp "), "{line}");
    }
    for (k, c) in live.iter().enumerate() {
        assert!(c.bytes().iter().all(|&b| b == (2 * k) as u8));
    }
    drop(live);
    let p = prog("mov %r0, 7\nexit");
    for _ in 0..20 {
        let mut jit = Jit::new(&p, &Helpers::new()).unwrap();
        assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(7));
    }
}

#[test]
fn helpers_may_change_the_regions() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut h = Helpers::new();
    // Adds a fresh 16-byte region and returns its address.
    h.register(8, |e, _a| {
        let buf: &'static mut [u8] = Box::leak(vec![5u8; 16].into_boxed_slice());
        Ok(e.guest().memory_mut().add(RegionKind::Other, buf))
    });
    // Removes every region.
    h.register(9, |e, _a| {
        e.guest().memory_mut().clear();
        Ok(0)
    });
    let p = prog(
        "ldxb %r6, [%r1]\ncall 8\nstxb [%r0+15], %r6\nldxb %r0, [%r0+15]\nmov %r7, %r0\ncall 9\nldxb %r0, [%r1]\nexit",
    );
    let run = |jit: bool| {
        let mut pkt = [3u8; 4];
        let mut mem = Memory::new();
        let a = mem.add(RegionKind::Packet, &mut pkt);
        if jit {
            Jit::new(&p, &h).unwrap().run(&mut mem, &[a])
        } else {
            Interpreter::new(&p, &h).unwrap().run(&mut mem, &[a])
        }
    };
    let (i, j) = (run(false), run(true));
    assert_eq!(i.as_ref().unwrap_err().pc, Pc(6));
    assert_eq!(i.map_err(|t| t.pc), j.map_err(|t| t.pc));
}

#[test]
fn misaligned_atomics_are_plain_read_modify_writes() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let pkt: Vec<u8> = (0..24).collect();
    let text = "mov %r3, 0x101\nlock fetch add [%r1+1], %r3\nlock xchg32 [%r1+6], %r3\nlock fetch or [%r1+9], %r3\nmov %r0, 7\nlock cmpxchg32 [%r1+13], %r3\nstxdw [%r10-13], %r3\nlock fetch xor [%r10-13], %r0\nldxdw %r4, [%r1+1]\nadd %r0, %r4\nldxdw %r4, [%r1+9]\nadd %r0, %r4\nadd %r0, %r3\nexit";
    let r = both(&prog(text), None, Some(&pkt));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn runs_after_traps_and_nested_runs() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // A trap three calls deep, then a clean run of the same program.
    let p = prog(
        "jeq %r1, 0, +1\nldxdw %r0, [%r1+0]\ncall local f\nexit\nf:\ncall local g\nexit\ng:\nmov %r0, 42\nldxb %r0, [%r1+0]\nexit",
    );
    let mut jit = Jit::new(&p, &Helpers::new()).unwrap();
    let t = jit.run(&mut Memory::new(), &[0]).unwrap_err();
    assert_eq!(t.pc, Pc(7));
    let mut b = [9u8; 8];
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut b);
    assert_eq!(jit.run(&mut mem, &[a]), Ok(9));

    // A helper that runs another JIT program (and one that traps).
    let inner = prog("mov %r0, %r1\nmul %r0, 3\nexit");
    let bad = prog("ldxb %r0, [%r1+0]\nexit");
    let mut h = Helpers::new();
    h.register(1, move |_e, a| {
        let mut j = Jit::new(&inner, &Helpers::new()).unwrap();
        let mut b = Jit::new(&bad, &Helpers::new()).unwrap();
        assert!(b.run(&mut Memory::new(), &[1]).is_err());
        Ok(j.run(&mut Memory::new(), &[a[0]]).unwrap() + 1)
    });
    let outer = prog("mov %r6, 5\ncall local f\nadd %r0, %r6\nexit\nf:\nmov %r1, 4\ncall 1\nexit");
    let mut jit = Jit::new(&outer, &h).unwrap();
    assert_eq!(jit.run(&mut Memory::new(), &[]), Ok(4 * 3 + 1 + 5));
}
