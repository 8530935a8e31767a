//! The lowering's multi-instruction idioms (`lower.rs`, "Multi-instruction
//! idioms"): random programs made of the sequences they replace (`mov` +
//! `add`/`and`/`mul`, `mov` + `add` + load (not fused: see `mov_op`), the
//! big-endian byte-pair load,
//! rotates,
//! `if .. goto +1; mov` selects), with perturbations that must not fuse
//! (registers that alias, mixed widths, jump targets inside a sequence,
//! out-of-bounds loads that trap inside one), run on the interpreter and
//! on the JIT (checked mode, without and with a budget): same `r0` or
//! trap, same registers at the end.

use bpfkit_interp::Interpreter;
use bpfkit_isa::{AluOp, Cond, Imm64, Insn, Program, Reg, Size, Src, Width};
use bpfkit_jit::fuzzing::Rng;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory, RegionKind, Trap};

/// A program item: an instruction, a label, or a conditional jump to a
/// label (resolved to slot offsets at the end).
enum It {
    I(Insn),
    Label(usize),
    JmpTo(Width, Cond, Reg, Src, usize),
}

struct Gen<'r> {
    rng: &'r mut Rng,
    out: Vec<It>,
    labels: usize,
    /// Labels to place inside later sequences (forward jumps into them).
    pending: Vec<usize>,
}

/// Registers the sequences work on: r0 and r2-r8 (r1 is the data pointer,
/// r9 a copy of it, r10 the frame).
const REGS: [Reg; 8] = [
    Reg::R0,
    Reg::R2,
    Reg::R3,
    Reg::R4,
    Reg::R5,
    Reg::R6,
    Reg::R7,
    Reg::R8,
];
const DATA: usize = 64;

impl Gen<'_> {
    fn reg(&mut self) -> Reg {
        REGS[self.rng.below(REGS.len() as u64) as usize]
    }

    fn width(&mut self) -> Width {
        if self.rng.pct(50) {
            Width::W64
        } else {
            Width::W32
        }
    }

    fn alu(&mut self, width: Width, op: AluOp, dst: Reg, src: Src) {
        self.out.push(It::I(Insn::Alu {
            width,
            op,
            dst,
            src,
        }));
    }

    fn imm(&mut self) -> i32 {
        match self.rng.below(4) {
            0 => self.rng.below(16) as i32 - 8,
            1 => self.rng.next_u64() as i32,
            2 => [0, 1, -1, i32::MIN, i32::MAX, 0xff, 0xffff][self.rng.below(7) as usize],
            _ => self.rng.below(4096) as i32,
        }
    }

    /// Maybe a label here that an earlier jump targets (a jump target in
    /// the middle of a sequence: it must not be fused).
    fn maybe_target(&mut self) {
        if !self.pending.is_empty() && self.rng.pct(15) {
            let l = self.pending.pop().unwrap();
            self.out.push(It::Label(l));
        }
    }

    fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.out.push(It::I(Insn::Load {
            size,
            sign_extend: false,
            dst,
            src,
            off,
        }));
    }

    /// A byte offset into the data: almost always inside, rarely just out.
    fn data_off(&mut self, n: i64) -> i16 {
        if self.rng.pct(3) {
            [DATA as i64 - n + 1, DATA as i64, -1][self.rng.below(3) as usize] as i16
        } else {
            self.rng.below((DATA as i64 - n + 1) as u64) as i16
        }
    }

    fn sequence(&mut self) {
        match self.rng.below(9) {
            // d = s; d op= x
            0..=2 => {
                let (d, s) = (self.reg(), self.reg());
                let w1 = self.width();
                let w2 = self.width();
                self.alu(w1, AluOp::Mov, d, Src::Reg(s));
                self.maybe_target();
                let d2 = if self.rng.pct(90) { d } else { self.reg() };
                let (op, src) = match self.rng.below(6) {
                    0 => (AluOp::Add, Src::Reg(self.reg())),
                    1 => (AluOp::Add, Src::Reg(d)),
                    2 => (AluOp::Add, Src::Imm(self.imm())),
                    3 => (
                        AluOp::And,
                        Src::Imm(if self.rng.pct(50) { 0xff } else { 0xffff }),
                    ),
                    4 => (AluOp::Mul, Src::Imm(self.imm())),
                    _ => (AluOp::Sub, Src::Imm(self.imm())),
                };
                self.alu(w2, op, d2, src);
            }
            // d = base; d += i; x = load(d + off), i a small index.
            3 => {
                let (d, i) = (self.reg(), self.reg());
                let size = [Size::B, Size::H, Size::W, Size::DW][self.rng.below(4) as usize];
                let n = size.bytes() as i64;
                let k = self.data_off(n + 3) as i32;
                self.alu(Width::W64, AluOp::Mov, i, Src::Imm(k));
                let base = if self.rng.pct(80) { Reg::R9 } else { Reg::R1 };
                self.alu(Width::W64, AluOp::Mov, d, Src::Reg(base));
                self.maybe_target();
                // Variants that must not fuse into `[base + index]` (a
                // 32-bit add; `d += d`) leave a pointer far from any
                // buffer, so both engines fault alike (a pointer near the
                // data could land in the interpreter's stack, which the
                // JIT does not share).
                let (w, add_src) = match self.rng.below(8) {
                    0 => (Width::W32, Src::Reg(i)),
                    1 => (Width::W64, Src::Reg(d)),
                    _ => (Width::W64, Src::Reg(i)),
                };
                self.alu(w, AluOp::Add, d, add_src);
                self.maybe_target();
                let x = if self.rng.pct(85) { d } else { self.reg() };
                let off = self.rng.below(4) as i16 - 1;
                self.load(size, x, d, off);
            }
            // The big-endian byte pair, in either order, sometimes broken.
            4 | 5 => {
                let base = if self.rng.pct(70) {
                    Reg::R9
                } else {
                    self.reg()
                };
                if base != Reg::R9 {
                    self.alu(Width::W64, AluOp::Mov, base, Src::Reg(Reg::R1));
                }
                let (a, c) = (self.reg(), self.reg());
                let k = self.data_off(2) as i32;
                let lo_off = if self.rng.pct(90) { k + 1 } else { k + 2 };
                let first_lo = self.rng.pct(50);
                if first_lo {
                    self.load(Size::B, a, base, lo_off as i16);
                } else {
                    self.load(Size::B, c, base, k as i16);
                }
                self.maybe_target();
                if first_lo {
                    self.load(Size::B, c, base, k as i16);
                } else {
                    self.load(Size::B, a, base, lo_off as i16);
                }
                self.maybe_target();
                let sh = if self.rng.pct(90) { 8 } else { 16 };
                let w = self.width();
                self.alu(w, AluOp::Lsh, c, Src::Imm(sh));
                self.maybe_target();
                let w = self.width();
                self.alu(w, AluOp::Or, c, Src::Reg(a));
            }
            // if x <cond> y goto +1; d = v
            6 => {
                let cond = Cond::ALL[self.rng.below(Cond::ALL.len() as u64) as usize];
                let x = self.reg();
                let y = if self.rng.pct(50) {
                    Src::Reg(self.reg())
                } else {
                    Src::Imm(self.imm())
                };
                let l = self.labels;
                self.labels += 1;
                let w = self.width();
                self.out.push(It::JmpTo(w, cond, x, y, l));
                let d = if self.rng.pct(30) { x } else { self.reg() };
                let w = self.width();
                let v = if self.rng.pct(50) {
                    Src::Imm(self.imm())
                } else {
                    Src::Reg(self.reg())
                };
                self.alu(w, AluOp::Mov, d, v);
                if self.rng.pct(10) {
                    // Not a select: two instructions skipped.
                    let w = self.width();
                    let r = self.reg();
                    self.alu(w, AluOp::Xor, r, Src::Imm(0x55));
                }
                self.out.push(It::Label(l));
            }
            // A rotate as two shifted copies or-ed, sometimes broken.
            7 => {
                let (a, s, b) = (self.reg(), self.reg(), self.reg());
                let w = self.width();
                let bits = if w == Width::W64 { 64 } else { 32 };
                let k = 1 + self.rng.below(bits - 1) as i32;
                let other = if self.rng.pct(90) { bits as i32 - k } else { k };
                let (op1, op3) = if self.rng.pct(50) {
                    (AluOp::Rsh, AluOp::Lsh)
                } else {
                    (AluOp::Lsh, AluOp::Rsh)
                };
                let w2 = if self.rng.pct(90) { w } else { self.width() };
                self.alu(w, AluOp::Mov, a, Src::Reg(s));
                self.alu(w, op1, a, Src::Imm(other));
                self.maybe_target();
                self.alu(w2, AluOp::Mov, b, Src::Reg(s));
                self.alu(w, op3, b, Src::Imm(k));
                self.maybe_target();
                let a4 = if self.rng.pct(90) { a } else { self.reg() };
                self.alu(w, AluOp::Or, b, Src::Reg(a4));
            }
            // A forward jump to a label placed inside a later sequence.
            _ => {
                let l = self.labels;
                self.labels += 1;
                self.pending.push(l);
                let x = self.reg();
                self.out
                    .push(It::JmpTo(Width::W64, Cond::Set, x, Src::Imm(1), l));
            }
        }
    }
}

/// A random program: registers set to random values (r9 = r1, the data),
/// `len` sequences, then r0 = a hash of r0 and r2-r8.
fn gen(rng: &mut Rng, len: usize) -> Program {
    let mut g = Gen {
        rng,
        out: Vec::new(),
        labels: 0,
        pending: Vec::new(),
    };
    g.alu(Width::W64, AluOp::Mov, Reg::R9, Src::Reg(Reg::R1));
    for r in REGS {
        let v = match g.rng.below(3) {
            0 => g.rng.next_u64(),
            1 => g.rng.below(256),
            _ => g.rng.next_u64() as i32 as i64 as u64,
        };
        g.out.push(It::I(Insn::LoadImm64 {
            dst: r,
            imm: Imm64::Value(v),
        }));
    }
    for _ in 0..len {
        g.sequence();
    }
    // Labels never placed go at the end, before the hash.
    while let Some(l) = g.pending.pop() {
        g.out.push(It::Label(l));
    }
    for r in REGS.iter().skip(1) {
        g.alu(Width::W64, AluOp::Mul, Reg::R0, Src::Imm(0x01000193));
        g.alu(Width::W64, AluOp::Xor, Reg::R0, Src::Reg(*r));
    }
    g.out.push(It::I(Insn::Exit));
    finish(&g.out)
}

/// Resolves the labels to slot offsets (`lddw` takes two slots).
fn finish(items: &[It]) -> Program {
    let mut slot = 0i64;
    let mut at = std::collections::HashMap::new();
    for it in items {
        match it {
            It::Label(l) => {
                at.insert(*l, slot);
            }
            It::I(Insn::LoadImm64 { .. }) => slot += 2,
            _ => slot += 1,
        }
    }
    let mut insns = Vec::new();
    let mut slot = 0i64;
    for it in items {
        match *it {
            It::Label(_) => continue,
            It::I(insn) => insns.push(insn),
            It::JmpTo(width, cond, dst, src, l) => insns.push(Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off: (at[&l] - slot - 1) as i16,
            }),
        }
        slot += if matches!(it, It::I(Insn::LoadImm64 { .. })) {
            2
        } else {
            1
        };
    }
    Program::from_insns(insns).expect("generated programs decode")
}

/// (r0 or the trap, the data afterwards) on one engine, the data in `buf`
/// (the same buffer for both engines, so that fault addresses compare).
fn run(
    p: &Program,
    jit: bool,
    budget: Option<u64>,
    data: &[u8],
    buf: &mut [u8],
) -> (Result<u64, Trap>, Vec<u8>) {
    let h = Helpers::new();
    buf.copy_from_slice(data);
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Packet, buf);
    let r = if jit {
        let mut b = Jit::builder();
        if let Some(n) = budget {
            b = b.budget(n);
        }
        b.build(p, &h).unwrap().run(&mut mem, &[addr])
    } else {
        let mut b = Interpreter::builder();
        if let Some(n) = budget {
            b = b.budget(n);
        }
        b.build(p, &h).unwrap().run(&mut mem, &[addr])
    };
    drop(mem);
    (r, buf.to_vec())
}

/// The data lives in the middle of a large allocation: a pointer that a
/// path through the program leaves near the data (plus a 16-bit value, say)
/// then points into this allocation, outside every region, on both engines
/// (rather than, by chance, into the interpreter's own stack buffer, which
/// the JIT does not share).
const PAD: usize = 1 << 19;

fn padded() -> Vec<u8> {
    vec![0u8; 2 * PAD]
}

fn check(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let len = 1 + rng.below(24) as usize;
    let p = gen(&mut rng, len);
    let data: Vec<u8> = (0..DATA).map(|_| rng.next_u64() as u8).collect();
    let mut big = padded();
    let buf = &mut big[PAD..PAD + DATA];
    for budget in [None, Some(1 << 20), Some(1 + rng.below(40))] {
        let i = run(&p, false, budget, &data, buf);
        let j = run(&p, true, budget, &data, buf);
        if i != j {
            return Err(format!(
                "seed {seed:#x}, budget {budget:?}: interpreter {:?}, JIT {:?}\n{}",
                i.0,
                j.0,
                bpfkit_isa::disasm::format_llvm_program(&p)
            ));
        }
    }
    Ok(())
}

#[test]
fn idioms_match_the_interpreter() {
    if !bpfkit_jit::is_supported() {
        eprintln!("skipped: the JIT supports x86-64 Linux only");
        return;
    }
    let n: u64 = std::env::var("BPFKIT_IDIOM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut traps = 0;
    for seed in 0..n {
        if let Err(e) = check(seed) {
            panic!("{e}");
        }
        let mut rng = Rng::new(seed);
        let len = 1 + rng.below(24) as usize;
        let p = gen(&mut rng, len);
        let data: Vec<u8> = (0..DATA).map(|_| rng.next_u64() as u8).collect();
        let mut big = padded();
        traps += run(&p, true, None, &data, &mut big[PAD..PAD + DATA])
            .0
            .is_err() as u32;
    }
    // Some programs must trap inside a sequence, most must not.
    assert!(
        traps > 0 && (traps as u64) < n / 2,
        "{traps} of {n} trapped"
    );
}

/// The checked access's inline test (`lea`/`sub`/`cmp`, then the cold stub):
/// after a first access fills the cached region, accesses of every size and
/// direction at every offset from just before a region to just past its end
/// trap exactly where the interpreter traps (the last byte in, one past
/// out), through a writable and a read-only region, with pointers into the
/// stack in other registers.
#[test]
fn checked_accesses_at_region_edges() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    use bpfkit_isa::asm::{assemble, Syntax};
    let h = Helpers::new();
    const LEN: i64 = 24;
    let mut cases = 0;
    for (size, suffix) in [(1, "b"), (2, "h"), (4, "w"), (8, "dw")] {
        for write in [false, true] {
            for off in -2..=LEN - size + 2 {
                // r1: writable region, r2: read-only one, r3: the stack.
                for (base, what) in [("r1", 0), ("r2", 1), ("r3", 2)] {
                    let access = if write {
                        format!("stx{suffix} [%{base}{off:+}], %r4")
                    } else {
                        format!("ldx{suffix} %r0, [%{base}{off:+}]")
                    };
                    let text = format!(
                        "mov %r3, %r10\nadd %r3, -{LEN}\nmov %r4, 0x1234\nldxb %r0, [%r1]\nldxb %r0, [%r2]\n{access}\nexit"
                    );
                    let p = Program::from_insns(assemble(&text, Syntax::Ubpf).unwrap()).unwrap();
                    let mut a = vec![7u8; LEN as usize];
                    let b = vec![9u8; LEN as usize];
                    let mut run = |jit: bool| {
                        a.fill(7);
                        let mut mem = Memory::new();
                        let ra = mem.add(RegionKind::Packet, &mut a);
                        let rb = mem.add_readonly(RegionKind::ReadOnlyData, &b);
                        let r = if jit {
                            Jit::new(&p, &h).unwrap().run(&mut mem, &[ra, rb])
                        } else {
                            Interpreter::new(&p, &h).unwrap().run(&mut mem, &[ra, rb])
                        };
                        drop(mem);
                        (r, a.clone())
                    };
                    let (i, j) = (run(false), run(true));
                    // Stack faults name each engine's own stack: compare
                    // where they happen, not the address.
                    if what == 2 {
                        let pc = |r: &Result<u64, Trap>| r.clone().map_err(|t| t.pc);
                        assert_eq!(pc(&i.0), pc(&j.0), "{text}");
                    } else {
                        assert_eq!(i, j, "{text}");
                    }
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 300);
}
