//! Where generated code lands (`x64/lower.rs`, `layout` and `relax`;
//! `memory.rs`): every program starts a page, loop heads (targets of
//! backward jumps) and subprogram entries start a 64-byte block, the
//! padding before them is `NOP`s (or a `jmp` over them where code falls
//! into the head), and the jumps across padded spans still reach: random
//! programs of nested loops, forward jumps over them, checked loads and
//! bpf-to-bpf calls give the interpreter's `r0` or trap and memory.

use bpfkit_interp::Interpreter;
use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::{AluOp, Cond, Insn, Program, Reg, Size, Src, Width};
use bpfkit_jit::fuzzing::Rng;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory, RegionKind, Trap};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// The alignment of loop heads and subprogram entries.
const ALIGN: u64 = 64;

/// A marker a head instruction loads (`r3 = MARK`): its one x86
/// instruction is found in the code by this immediate.
const MARK: u32 = 0x7ead_beef;

fn supported() -> bool {
    if !bpfkit_jit::is_supported() {
        eprintln!("skipped: the JIT supports x86-64 Linux only");
        return false;
    }
    // The measurement knobs move or unalign the code on purpose.
    for k in ["BPFKIT_JIT_ALIGN", "BPFKIT_JIT_SHIFT"] {
        if std::env::var_os(k).is_some() {
            eprintln!("skipped: {k} is set");
            return false;
        }
    }
    true
}

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Llvm).expect("assembles")).expect("decodes")
}

/// The code decoded from its start, at its address (instructions up to
/// the first `int3` after the program body are all real: the body, the
/// shared routines, the cold stubs and the entry).
fn decode(jit: &Jit) -> Vec<Instruction> {
    let code = jit.code();
    let mut d = Decoder::with_ip(64, code.bytes(), code.addr(), DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        out.push(d.decode());
    }
    out
}

/// Indexes in `insns` of the instructions that load [`MARK`].
fn marks(insns: &[Instruction]) -> Vec<usize> {
    (0..insns.len())
        .filter(|&i| {
            let x = &insns[i];
            x.mnemonic() == Mnemonic::Mov
                && (0..x.op_count()).any(|k| x.immediate(k) == MARK as u64)
        })
        .collect()
}

/// Checks that the marked instructions start 64-byte blocks and that what
/// lies between them and the instruction before is padding: `NOP`s, or a
/// `jmp` to the head followed by `NOP`s.
fn check_heads(jit: &Jit, want: usize) {
    let insns = decode(jit);
    let heads = marks(&insns);
    assert_eq!(heads.len(), want, "marked heads found in the code");
    for &h in &heads {
        let ip = insns[h].ip();
        assert_eq!(
            ip % ALIGN,
            0,
            "head at {:#x} (offset {})",
            ip,
            ip - jit.code().addr()
        );
        let mut k = h;
        while k > 0 && insns[k - 1].mnemonic() == Mnemonic::Nop {
            k -= 1;
        }
        match k.checked_sub(1).map(|b| &insns[b]) {
            Some(j) if j.mnemonic() == Mnemonic::Jmp && j.near_branch_target() == ip => {
                // A jump over the padding: only where it pays (more than
                // one `NOP`'s worth).
                assert!(ip - j.ip() > 11, "jump over a short padding at {ip:#x}");
                assert_eq!(j.len(), 2, "a short jump over the padding");
            }
            // Nothing falls into the padding.
            Some(j) if matches!(j.mnemonic(), Mnemonic::Jmp | Mnemonic::Ret) => {}
            // Code falls into the head through the padding: one `NOP` at most.
            _ => assert!(h - k <= 1, "{} NOPs run before the head at {ip:#x}", h - k),
        }
        for x in &insns[k..h] {
            assert_eq!(x.mnemonic(), Mnemonic::Nop);
        }
    }
}

#[test]
fn loop_heads_are_the_targets_of_backward_jumps_and_calls() {
    let p = prog(
        "
        r0 = 0
    top:
        r0 += 1
        if r0 < 3 goto top
        if r0 > 9 goto end
        call sub
        goto top
    end:
        exit
    sub:
        r0 += 2
        exit
    ",
    );
    // `top` (two backward jumps, listed once) and `sub`; not `end`.
    assert_eq!(p.loop_heads(), &[1, 7]);
}

#[test]
fn programs_start_at_a_page() {
    if !supported() {
        return;
    }
    let h = Helpers::new();
    let mut jits = Vec::new();
    for n in [1, 7, 100, 900] {
        let mut text = String::new();
        for i in 0..n {
            text += &format!("r0 += {i}\n");
        }
        text += "exit\n";
        let jit = Jit::new(&prog(&text), &h).unwrap();
        assert_eq!(jit.code().addr() % 4096, 0, "{n} instructions");
        jits.push(jit);
    }
}

#[test]
fn loop_heads_and_subprograms_start_a_64_byte_block() {
    if !supported() {
        return;
    }
    let h = Helpers::new();
    // Loop heads that code falls into, entered by a jump only, nested,
    // after a checked access (a cold stub, emitted out of line), and a
    // subprogram entry with a loop of its own; at every start offset of
    // the code before them (the `r0 += 1` lines).
    for before in 0..24 {
        let mut text = String::from("r6 = 3\nr9 = r1\n");
        for _ in 0..before {
            text += "r0 += 1\n";
        }
        text += &format!(
            "
            r7 = 2
        outer:
            r3 = {MARK}
            r2 = *(u8 *)(r9 + 3)
            r0 += r2
            r8 = 4
            goto inner_test
        inner:
            r3 = {MARK}
            r0 *= 3
            r8 += -1
        inner_test:
            if r8 s> 0 goto inner
            call sub
            r7 += -1
            if r7 != 0 goto outer
            exit
        sub:
            r1 = 5
        sub_loop:
            r3 = {MARK}
            r0 ^= r1
            r1 += -1
            if r1 != 0 goto sub_loop
            exit
        "
        );
        let p = prog(&text);
        let jit = Jit::new(&p, &h).unwrap();
        // outer, inner, sub_loop (the subprogram's first instruction,
        // `r1 = 5`, is aligned too but carries no mark).
        check_heads(&jit, 3);
        // And it runs as the interpreter does.
        let mut data = [7u8; 16];
        let i = run(&p, false, None, &mut data.clone());
        let j = run(&p, true, None, &mut data);
        assert_eq!(i, j, "{before} instructions before the loop");
    }
}

/// (r0 or the trap, the data afterwards) on one engine.
fn run(
    p: &Program,
    jit: bool,
    budget: Option<u64>,
    buf: &mut [u8],
) -> (Result<u64, Trap>, Vec<u8>) {
    let h = Helpers::new();
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Packet, buf);
    let r = if jit {
        let mut b = Jit::builder();
        if let Some(n) = budget {
            b = b.budget(n);
        }
        b.build(p, &h).unwrap().run(&mut mem, &[addr])
    } else {
        let mut b = bpfkit_interp::Interpreter::builder();
        if let Some(n) = budget {
            b = b.budget(n);
        }
        b.build(p, &h).unwrap().run(&mut mem, &[addr])
    };
    drop(mem);
    (r, buf.to_vec())
}

/// Program items: instructions, labels, jumps and calls to labels
/// (resolved to slot offsets at the end).
enum It {
    I(Insn),
    Label(usize),
    Jmp(Option<(Cond, Reg, i32)>, usize),
    Call(usize),
}

const DATA: usize = 32;

struct Gen<'r> {
    rng: &'r mut Rng,
    out: Vec<It>,
    labels: usize,
}

impl Gen<'_> {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    /// Straight-line code on r0 and r2-r5 (r9 is the data pointer; r6-r8
    /// count loops): ALU steps, checked loads (long encodings) and stores.
    fn filler(&mut self, n: usize) {
        for _ in 0..n {
            let d = [Reg::R0, Reg::R2, Reg::R3, Reg::R4, Reg::R5][self.rng.below(5) as usize];
            let insn = match self.rng.below(6) {
                0 => Insn::Load {
                    size: Size::B,
                    dst: d,
                    src: Reg::R9,
                    off: self.rng.below(DATA as u64) as i16,
                    sign_extend: false,
                },
                1 => Insn::Store {
                    size: Size::B,
                    dst: Reg::R9,
                    off: self.rng.below(DATA as u64) as i16,
                    src: Src::Reg(Reg::R0),
                },
                2 => Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Mul,
                    dst: Reg::R0,
                    src: Src::Imm(3),
                },
                3 => Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Add,
                    dst: Reg::R0,
                    src: Src::Reg(d),
                },
                4 => Insn::Alu {
                    width: Width::W32,
                    op: AluOp::Xor,
                    dst: d,
                    src: Src::Imm(self.rng.next_u64() as i32),
                },
                _ => Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Mov,
                    dst: d,
                    src: Src::Imm(self.rng.below(1000) as i32),
                },
            };
            self.out.push(It::I(insn));
        }
    }

    fn block(&mut self, depth: usize, sub: Option<usize>) {
        let items = 1 + self.rng.below(4);
        for _ in 0..items {
            match self.rng.below(5) {
                0 | 1 => {
                    let most = if self.rng.pct(30) { 40 } else { 8 };
                    let n = self.rng.below(most) as usize;
                    self.filler(n);
                }
                2 if depth < 3 => self.looped(depth, sub),
                3 => {
                    // A forward jump over a block (a loop, often).
                    let skip = self.label();
                    let cond =
                        [Cond::Gt, Cond::Eq, Cond::Ne, Cond::Sle][self.rng.below(4) as usize];
                    let r = [Reg::R0, Reg::R2, Reg::R3][self.rng.below(3) as usize];
                    let c = if self.rng.pct(20) {
                        None
                    } else {
                        Some((cond, r, self.rng.below(600) as i32))
                    };
                    self.out.push(It::Jmp(c, skip));
                    self.block(depth + 1, sub);
                    self.out.push(It::Label(skip));
                }
                _ => {
                    if let Some(s) = sub {
                        self.out.push(It::Call(s));
                        // The callee clobbers r1-r5.
                        for r in [Reg::R2, Reg::R3, Reg::R4, Reg::R5] {
                            self.out.push(It::I(Insn::Alu {
                                width: Width::W64,
                                op: AluOp::Mov,
                                dst: r,
                                src: Src::Imm(1),
                            }));
                        }
                    } else {
                        self.filler(2);
                    }
                }
            }
        }
    }

    /// A counted loop (counter r6 + depth): entered by falling in, or by a
    /// jump to its test at the bottom.
    fn looped(&mut self, depth: usize, sub: Option<usize>) {
        let c = [Reg::R6, Reg::R7, Reg::R8][depth];
        let n = 1 + self.rng.below(4) as i32;
        self.out.push(It::I(Insn::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst: c,
            src: Src::Imm(n),
        }));
        let (head, test) = (self.label(), self.label());
        let bottom = self.rng.pct(40);
        if bottom {
            self.out.push(It::Jmp(None, test));
        }
        self.out.push(It::Label(head));
        self.block(depth + 1, sub);
        self.out.push(It::Label(test));
        self.out.push(It::I(Insn::Alu {
            width: Width::W64,
            op: AluOp::Add,
            dst: c,
            src: Src::Imm(-1),
        }));
        self.out.push(It::Jmp(Some((Cond::Sgt, c, 0)), head));
    }
}

/// A random program: a main block and, half the time, a subprogram with a
/// loop of its own that it calls.
fn gen(rng: &mut Rng) -> Program {
    let mut g = Gen {
        rng,
        out: Vec::new(),
        labels: 0,
    };
    let sub = g.rng.pct(50).then(|| g.label());
    g.out.push(It::I(Insn::Alu {
        width: Width::W64,
        op: AluOp::Mov,
        dst: Reg::R9,
        src: Src::Reg(Reg::R1),
    }));
    g.out.push(It::I(Insn::Alu {
        width: Width::W64,
        op: AluOp::Mov,
        dst: Reg::R0,
        src: Src::Imm(1),
    }));
    let n = 1 + g.rng.below(30) as usize;
    g.filler(n);
    g.block(0, sub);
    g.out.push(It::I(Insn::Exit));
    if let Some(s) = sub {
        g.out.push(It::Label(s));
        g.out.push(It::I(Insn::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst: Reg::R1,
            src: Src::Imm(1 + g.rng.below(3) as i32),
        }));
        let head = g.label();
        g.out.push(It::Label(head));
        let n = g.rng.below(30) as usize;
        for _ in 0..n {
            g.out.push(It::I(Insn::Alu {
                width: Width::W64,
                op: AluOp::Mul,
                dst: Reg::R0,
                src: Src::Imm(5),
            }));
        }
        g.out.push(It::I(Insn::Alu {
            width: Width::W64,
            op: AluOp::Add,
            dst: Reg::R1,
            src: Src::Imm(-1),
        }));
        g.out.push(It::Jmp(Some((Cond::Ne, Reg::R1, 0)), head));
        g.out.push(It::I(Insn::Exit));
    }
    // Resolve: every item but a label is one slot.
    let mut at = vec![0usize; g.labels];
    let mut slot = 0;
    for it in &g.out {
        match it {
            It::Label(l) => at[*l] = slot,
            _ => slot += 1,
        }
    }
    let mut insns = Vec::new();
    for it in &g.out {
        let here = insns.len() as i64;
        let off = |l: usize| (at[l] as i64 - here - 1) as i32;
        match *it {
            It::I(i) => insns.push(i),
            It::Label(_) => {}
            It::Jmp(None, l) => insns.push(Insn::Ja {
                off: off(l),
                long: false,
            }),
            It::Jmp(Some((cond, r, imm)), l) => insns.push(Insn::Jmp {
                width: Width::W64,
                cond,
                dst: r,
                src: Src::Imm(imm),
                off: off(l) as i16,
            }),
            It::Call(l) => insns.push(Insn::CallLocal(off(l))),
        }
    }
    Program::from_insns(insns).expect("generated programs decode")
}

#[test]
fn jumps_across_padding_reach() {
    if !supported() {
        return;
    }
    let n: u64 = std::env::var("BPFKIT_PLACEMENT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    for seed in 0..n {
        let mut rng = Rng::new(seed);
        let p = gen(&mut rng);
        let data: Vec<u8> = (0..DATA).map(|_| rng.next_u64() as u8).collect();
        for budget in [None, Some(1 << 24)] {
            let i = run(&p, false, budget, &mut data.clone());
            let j = run(&p, true, budget, &mut data.clone());
            assert_eq!(
                i,
                j,
                "seed {seed}, budget {budget:?}\n{}",
                bpfkit_isa::disasm::format_llvm_program(&p)
            );
        }
    }
}

#[test]
fn the_interpreter_is_what_the_tests_compare_with() {
    // The programs of the tests above run to their end (no trap) on the
    // interpreter, so that a wrong jump shows as a different result.
    let mut traps = 0;
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let p = gen(&mut rng);
        let mut data = vec![1u8; DATA];
        let h = Helpers::new();
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Packet, &mut data);
        if Interpreter::new(&p, &h)
            .unwrap()
            .run(&mut mem, &[addr])
            .is_err()
        {
            traps += 1;
        }
    }
    assert_eq!(traps, 0);
}
