//! Random program generation and the JIT-vs-interpreter oracle, shared by
//! the differential test (`tests/differential.rs`) and future cargo-fuzz
//! targets (which feed [`Rng::from_bytes`]).
//!
//! Programs are valid (they decode) but not verified: they mix straight-line
//! ALU code of both widths, division and shifts by edge values, byte swaps,
//! loads, stores and atomics on the stack and on two regions (a writable
//! packet and a read-only block, some accesses out of bounds), forward
//! branches, counted loops (whose counters the body may clobber, hence a
//! budget), helper calls (including ones that stop the program, fail, or
//! fault), bpf-to-bpf calls (some recursive until the depth limit), `callx`
//! and legacy packet loads.
//!
//! Register conventions keep the two engines comparable: `r9` holds the
//! packet's address and `r7` the read-only block's, and neither is written;
//! `r10` is only ever a base address, never a value, so stack addresses
//! (which differ between the engines' stacks) never reach registers or
//! memory. Trap addresses near a stack are compared relative to it.

use crate::Jit;
use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    AluOp, AtomicOp, ByteOrder, Cond, HelperId, Imm64, Insn, Program, Reg, SignExtFrom, Size, Src,
    SwapBits, Width,
};
use bpfkit_runtime::{HelperAbort, Helpers, Memory, RegionKind, Trap, TrapKind};

/// A small deterministic generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// From a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// From fuzzer input.
    pub fn from_bytes(data: &[u8]) -> Rng {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for &b in data {
            s = (s ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p` percent.
    pub fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// One generated test case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The program.
    pub prog: Program,
    /// Initial contents of the writable packet region (`r1`, kept in `r9`).
    pub packet: Vec<u8>,
    /// Contents of the read-only region (`r2`, kept in `r7`).
    pub rodata: Vec<u8>,
    /// Instruction budget for both engines.
    pub budget: Option<u64>,
}

/// Program text with symbolic branch targets.
enum It {
    I(Insn),
    Label(usize),
    Jmp(Width, Cond, Reg, Src, usize),
    Ja(usize),
    Call(usize),
    LdFunc(Reg, usize),
}

const VALUE_REGS: [Reg; 8] = [
    Reg::R0,
    Reg::R1,
    Reg::R2,
    Reg::R3,
    Reg::R4,
    Reg::R5,
    Reg::R6,
    Reg::R8,
];
const READ_REGS: [Reg; 10] = [
    Reg::R0,
    Reg::R1,
    Reg::R2,
    Reg::R3,
    Reg::R4,
    Reg::R5,
    Reg::R6,
    Reg::R7,
    Reg::R8,
    Reg::R9,
];

/// Helper ids the generated programs call (see [`helpers`]).
pub const HELPER_IDS: [u32; 5] = [1, 2, 3, 4, 6];
/// The helper that records the stack and `r1`-`r5` into the run's data.
pub const DUMP_HELPER: u32 = 7;

/// Per-run data the dump helper fills.
#[derive(Default, Debug, PartialEq, Eq, Clone)]
pub struct Dump {
    /// The whole stack (all frames) and `r1`-`r5`, per call of the helper.
    pub snapshots: Vec<(Vec<u8>, [u64; 5])>,
}

/// The helpers the generated programs use: 1 mixes its arguments, 2 reads
/// a byte at `r1` (may fault), 3 stops the program with `r0 = r1` when `r1`
/// is odd, 4 fails when `r1 % 61 == 7`, 6 writes `r2` at `r1` (may fault),
/// 7 dumps the stack and `r1`-`r5` into a [`Dump`].
pub fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register(1, |_e, a| {
        Ok(a[0].rotate_left(7) ^ a[1].wrapping_mul(3) ^ a[2] ^ a[3] << 1 ^ a[4] >> 1)
    });
    h.register(2, |e, a| Ok(e.guest().load::<1>(a[0])?[0] as u64));
    h.register(3, |_e, a| {
        if a[0] & 1 == 1 {
            Err(HelperAbort::Stop { r0: a[0] })
        } else {
            Ok(a[0] + 1)
        }
    });
    h.register(4, |_e, a| {
        if a[0] % 61 == 7 {
            Err(HelperAbort::Failed(format!("bad argument {:#x}", a[0])))
        } else {
            Ok(a[0] ^ 0x55)
        }
    });
    h.register(6, |e, a| {
        e.guest().store::<2>(a[0], (a[1] as u16).to_le_bytes())?;
        Ok(0)
    });
    h.register(DUMP_HELPER, |e, a| {
        let g = e.guest();
        let (s, t) = (g.stack_start(), g.stack_end());
        let mut buf = vec![0u8; (t - s) as usize];
        g.read(s, &mut buf)?;
        if let Some(d) = e.data_mut::<Dump>() {
            d.snapshots.push((buf, a));
        }
        Ok(0)
    });
    h
}

struct Gen<'r> {
    rng: &'r mut Rng,
    out: Vec<It>,
    labels: usize,
    packet_len: i64,
    rodata_len: i64,
    /// Labels in the middle of functions (not branch targets), for `callx`.
    mids: Vec<usize>,
}

impl Gen<'_> {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn imm(&mut self) -> i32 {
        match self.rng.below(10) {
            0 => 0,
            1 => 1,
            2 => -1,
            3 => self.rng.pick(&[31, 32, 63, 64, 7, 8, 16]),
            4 => self.rng.pick(&[i32::MIN, i32::MAX, 0x8000, -0x8000, 0xff]),
            5 | 6 => self.rng.below(64) as i32 - 32,
            _ => self.rng.next_u64() as i32,
        }
    }

    fn value_reg(&mut self) -> Reg {
        self.rng.pick(&VALUE_REGS)
    }

    fn src(&mut self) -> Src {
        if self.rng.pct(50) {
            Src::Reg(self.rng.pick(&READ_REGS))
        } else {
            Src::Imm(self.imm())
        }
    }

    fn width(&mut self) -> Width {
        if self.rng.pct(50) {
            Width::W32
        } else {
            Width::W64
        }
    }

    fn size(&mut self) -> Size {
        self.rng.pick(&[Size::B, Size::H, Size::W, Size::DW])
    }

    /// A base register and offset for an access of `size` bytes: mostly
    /// valid, about 2% out of bounds (or a write to read-only memory).
    fn addr(&mut self, size: Size, write: bool) -> (Reg, i16) {
        let n = size.bytes() as i64;
        if self.rng.pct(2) {
            return match self.rng.below(5) {
                // Below the stack, past the top frame, around the regions.
                0 => (Reg::R10, (self.rng.below(1024) as i64 - 4608) as i16),
                1 => (Reg::R10, self.rng.below(64) as i16),
                2 => (
                    Reg::R9,
                    (self.rng.below(24) as i64 - 12 + self.packet_len * self.rng.below(2) as i64)
                        as i16,
                ),
                3 => (
                    Reg::R7,
                    (self.rng.below(self.rodata_len as u64 + 8) as i64 - 4) as i16,
                ),
                _ => (self.rng.pick(&READ_REGS), self.rng.below(64) as i16 - 32),
            };
        }
        match self.rng.below(10) {
            0..=5 => {
                // The current frame; sometimes unaligned, sometimes a deeper
                // frame (still inside the stack).
                let off = if self.rng.pct(10) {
                    -(self.rng.below(1024) as i64) - 512 - n
                } else if self.rng.pct(20) {
                    -(self.rng.below(64) as i64) - n
                } else {
                    -((self.rng.below(64) as i64 + 1) * n)
                };
                (Reg::R10, off as i16)
            }
            6..=8 => (
                Reg::R9,
                self.rng.below((self.packet_len - n + 1) as u64) as i16,
            ),
            _ if !write => (
                Reg::R7,
                self.rng.below((self.rodata_len - n + 1) as u64) as i16,
            ),
            _ => (Reg::R10, -(n as i16)),
        }
    }

    fn straight(&mut self) {
        let d = self.value_reg();
        let insn = match self.rng.below(100) {
            0..=29 => {
                let op = self.rng.pick(&[
                    AluOp::Add,
                    AluOp::Sub,
                    AluOp::Mul,
                    AluOp::Or,
                    AluOp::And,
                    AluOp::Xor,
                    AluOp::Mov,
                    AluOp::Lsh,
                    AluOp::Rsh,
                    AluOp::Arsh,
                ]);
                Insn::Alu {
                    width: self.width(),
                    op,
                    dst: d,
                    src: self.src(),
                }
            }
            30..=39 => {
                let op = self
                    .rng
                    .pick(&[AluOp::Div, AluOp::Sdiv, AluOp::Mod, AluOp::Smod]);
                Insn::Alu {
                    width: self.width(),
                    op,
                    dst: d,
                    src: self.src(),
                }
            }
            40..=43 => {
                let w = self.width();
                let from = match w {
                    Width::W64 => {
                        self.rng
                            .pick(&[SignExtFrom::B8, SignExtFrom::B16, SignExtFrom::B32])
                    }
                    Width::W32 => self.rng.pick(&[SignExtFrom::B8, SignExtFrom::B16]),
                };
                Insn::Alu {
                    width: w,
                    op: AluOp::MovSx(from),
                    dst: d,
                    src: Src::Reg(self.rng.pick(&READ_REGS)),
                }
            }
            44..=45 => Insn::Neg {
                width: self.width(),
                dst: d,
            },
            46..=49 => {
                let order = self
                    .rng
                    .pick(&[ByteOrder::ToLe, ByteOrder::ToBe, ByteOrder::Swap]);
                Insn::Endian {
                    order,
                    bits: self
                        .rng
                        .pick(&[SwapBits::B16, SwapBits::B32, SwapBits::B64]),
                    dst: d,
                }
            }
            50..=54 => {
                let v = match self.rng.below(4) {
                    0 => 0x8000_0000_0000_0000,
                    1 => u64::MAX,
                    2 => 0xffff_ffff,
                    _ => self.rng.next_u64(),
                };
                Insn::LoadImm64 {
                    dst: d,
                    imm: Imm64::Value(v),
                }
            }
            55..=66 => {
                let size = self.size();
                let (src, off) = self.addr(size, false);
                Insn::Load {
                    size,
                    sign_extend: size != Size::DW && self.rng.pct(30),
                    dst: d,
                    src,
                    off,
                }
            }
            67..=78 => {
                let size = self.size();
                let (dst, off) = self.addr(size, true);
                let src = if self.rng.pct(50) {
                    Src::Reg(self.rng.pick(&READ_REGS))
                } else {
                    Src::Imm(self.imm())
                };
                Insn::Store {
                    size,
                    dst,
                    off,
                    src,
                }
            }
            79..=86 => {
                let size = if self.rng.pct(50) { Size::W } else { Size::DW };
                let (dst, off) = self.addr(size, true);
                let op = self.rng.pick(&[
                    AtomicOp::Add,
                    AtomicOp::Or,
                    AtomicOp::And,
                    AtomicOp::Xor,
                    AtomicOp::Xchg,
                    AtomicOp::Cmpxchg,
                ]);
                let fetch = matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg) || self.rng.pct(50);
                Insn::Atomic {
                    size,
                    op,
                    fetch,
                    dst,
                    src: d,
                    off,
                }
            }
            87..=90 => {
                let size = self.rng.pick(&[Size::B, Size::H, Size::W]);
                let imm = self.rng.below(self.packet_len as u64 + 8) as i32 - 2;
                if self.rng.pct(50) {
                    Insn::LoadAbs { size, imm }
                } else {
                    Insn::LoadInd {
                        size,
                        src: self.rng.pick(&READ_REGS),
                        imm,
                    }
                }
            }
            91..=96 => {
                // Helper call with a chosen first argument.
                if self.rng.pct(85) {
                    let src = if self.rng.pct(85) {
                        Src::Reg(Reg::R9)
                    } else {
                        Src::Imm(self.imm())
                    };
                    self.out.push(It::I(Insn::Alu {
                        width: Width::W64,
                        op: AluOp::Mov,
                        dst: Reg::R1,
                        src,
                    }));
                }
                let id = if self.rng.pct(3) {
                    99
                } else {
                    self.rng.pick(&HELPER_IDS)
                };
                Insn::Call(HelperId(id))
            }
            _ => {
                // callx with a helper id or garbage.
                let v = if self.rng.pct(95) {
                    self.rng.pick(&HELPER_IDS) as i32
                } else {
                    self.imm()
                };
                self.out.push(It::I(Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Mov,
                    dst: Reg::R8,
                    src: Src::Imm(v),
                }));
                // (r8 is a value register: the helper id is just a value.)
                Insn::Callx(Reg::R8)
            }
        };
        self.out.push(It::I(insn));
    }

    /// A function body of about `len` items, with branches, loops and
    /// calls to the functions labelled in `funcs`.
    fn body(&mut self, len: usize, funcs: &[usize], depth: u32) {
        let mut open: Vec<(usize, usize)> = Vec::new(); // (label, items left)
        let mut i = 0;
        while i < len {
            i += 1;
            for o in open.iter_mut() {
                o.1 = o.1.saturating_sub(1);
            }
            while let Some(p) = open.iter().position(|o| o.1 == 0) {
                let (l, _) = open.remove(p);
                self.out.push(It::Label(l));
            }
            match self.rng.below(100) {
                0..=9 => {
                    let l = self.label();
                    let w = self.width();
                    let c = self.rng.pick(&Cond::ALL);
                    let d = self.rng.pick(&READ_REGS);
                    let s = self.src();
                    self.out.push(It::Jmp(w, c, d, s, l));
                    open.push((l, 1 + self.rng.below(6) as usize));
                }
                10 => {
                    let l = self.label();
                    self.out.push(It::Ja(l));
                    open.push((l, 1 + self.rng.below(3) as usize));
                }
                11..=13 if depth < 2 => {
                    // Counted loop; the body may clobber the counter.
                    let c = self.value_reg();
                    let k = 1 + self.rng.below(5) as i32;
                    self.out.push(It::I(Insn::Alu {
                        width: Width::W64,
                        op: AluOp::Mov,
                        dst: c,
                        src: Src::Imm(k),
                    }));
                    let top = self.label();
                    self.out.push(It::Label(top));
                    let n = 1 + self.rng.below(5) as usize;
                    self.body(n, funcs, depth + 1);
                    self.out.push(It::I(Insn::Alu {
                        width: Width::W64,
                        op: AluOp::Sub,
                        dst: c,
                        src: Src::Imm(1),
                    }));
                    self.out
                        .push(It::Jmp(Width::W64, Cond::Ne, c, Src::Imm(0), top));
                }
                14..=16 if !funcs.is_empty() => {
                    let f = self.rng.pick(funcs);
                    if !self.mids.is_empty() && self.rng.pct(15) {
                        // Into the middle of a straight-line run.
                        let m = self.rng.pick(&self.mids);
                        self.out.push(It::LdFunc(Reg::R8, m));
                        self.out.push(It::I(Insn::Callx(Reg::R8)));
                    } else if self.rng.pct(30) {
                        self.out.push(It::LdFunc(Reg::R8, f));
                        self.out.push(It::I(Insn::Callx(Reg::R8)));
                    } else {
                        self.out.push(It::Call(f));
                    }
                }
                17 if self.rng.pct(20) => {
                    // r10 is writable (the decoder allows it): point it into
                    // the packet.
                    self.out.push(It::I(Insn::Alu {
                        width: Width::W64,
                        op: AluOp::Mov,
                        dst: Reg::R10,
                        src: Src::Reg(Reg::R9),
                    }));
                    let k = 8 + self.rng.below(self.packet_len as u64 - 7) as i32;
                    self.out.push(It::I(Insn::Alu {
                        width: Width::W64,
                        op: AluOp::Add,
                        dst: Reg::R10,
                        src: Src::Imm(k),
                    }));
                }
                _ => self.straight(),
            }
        }
        for (l, _) in open {
            self.out.push(It::Label(l));
        }
    }

    fn finish(self) -> Program {
        // Slot of every item and label.
        let mut slot = 0usize;
        let mut label_slot = vec![usize::MAX; self.labels];
        let mut slots = Vec::with_capacity(self.out.len());
        for it in &self.out {
            slots.push(slot);
            match it {
                It::Label(l) => label_slot[*l] = slot,
                It::I(Insn::LoadImm64 { .. }) | It::LdFunc(..) => slot += 2,
                _ => slot += 1,
            }
        }
        let rel = |at: usize, l: usize| label_slot[l] as i64 - at as i64 - 1;
        let mut insns = Vec::new();
        for (it, &at) in self.out.iter().zip(&slots) {
            let insn = match *it {
                It::Label(_) => continue,
                It::I(i) => i,
                It::Jmp(width, cond, dst, src, l) => Insn::Jmp {
                    width,
                    cond,
                    dst,
                    src,
                    off: rel(at, l) as i16,
                },
                It::Ja(l) => Insn::Ja {
                    off: rel(at, l) as i32,
                    long: false,
                },
                It::Call(l) => Insn::CallLocal(rel(at, l) as i32),
                It::LdFunc(dst, l) => Insn::LoadImm64 {
                    dst,
                    imm: Imm64::Func(rel(at, l) as i32),
                },
            };
            insns.push(insn);
        }
        Program::from_insns(insns).expect("generated programs decode")
    }
}

/// Generates a random test case.
pub fn gen_case(rng: &mut Rng) -> Case {
    let packet_len = 8 * (1 + rng.below(8) as i64);
    let rodata_len = 16;
    let packet = (0..packet_len).map(|_| rng.next_u64() as u8).collect();
    let rodata = (0..rodata_len).map(|_| rng.next_u64() as u8).collect();
    let mut g = Gen {
        rng,
        out: Vec::new(),
        labels: 0,
        packet_len,
        rodata_len,
        mids: Vec::new(),
    };
    let nfuncs = g.rng.below(3) as usize;
    let funcs: Vec<usize> = (0..nfuncs).map(|_| g.label()).collect();
    let mids: Vec<usize> = (0..nfuncs).map(|_| g.label()).collect();
    g.mids = mids.clone();
    // Main: keep the region pointers, then random code, dump, exit.
    g.out.push(It::I(Insn::Alu {
        width: Width::W64,
        op: AluOp::Mov,
        dst: Reg::R9,
        src: Src::Reg(Reg::R1),
    }));
    g.out.push(It::I(Insn::Alu {
        width: Width::W64,
        op: AluOp::Mov,
        dst: Reg::R7,
        src: Src::Reg(Reg::R2),
    }));
    let len = 5 + g.rng.below(40) as usize;
    g.body(len, &funcs, 0);
    g.out.push(It::I(Insn::Call(HelperId(DUMP_HELPER))));
    g.out.push(It::I(Insn::Exit));
    for (k, &f) in funcs.iter().enumerate() {
        g.out.push(It::Label(f));
        let len = 1 + g.rng.below(12) as usize;
        // A function may call itself or later ones (recursion ends at the
        // depth limit or through the budget).
        let callees: Vec<usize> = funcs[k..].to_vec();
        let callees = if g.rng.pct(40) { &callees[..] } else { &[] };
        g.body(len, callees, 1);
        g.out.push(It::Label(mids[k]));
        let len = 1 + g.rng.below(6) as usize;
        g.body(len, callees, 1);
        g.out.push(It::I(Insn::Exit));
    }
    let prog = g.finish();
    let budget = if rng.pct(85) {
        Some(rng.below(400) + 1)
    } else {
        Some(1 << 14)
    };
    Case {
        prog,
        packet,
        rodata,
        budget,
    }
}

/// What a run produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `r0` or the trap.
    pub result: Result<u64, Trap>,
    /// First address of the engine's stack.
    pub stack_start: u64,
    /// The packet region afterwards.
    pub packet: Vec<u8>,
    /// What the dump helper saw.
    pub dump: Dump,
}

impl Outcome {
    /// Same result, where a fault address may also match relative to each
    /// engine's stack (the engines' stacks are different buffers).
    pub fn same_result(&self, other: &Outcome) -> bool {
        match (&self.result, &other.result) {
            (Err(a), Err(b)) if a != b && a.pc == b.pc => match (&a.kind, &b.kind) {
                (
                    TrapKind::OutOfBounds {
                        addr: x,
                        size: s1,
                        access: a1,
                    },
                    TrapKind::OutOfBounds {
                        addr: y,
                        size: s2,
                        access: a2,
                    },
                ) => {
                    s1 == s2
                        && a1 == a2
                        && x.wrapping_sub(self.stack_start) == y.wrapping_sub(other.stack_start)
                }
                _ => false,
            },
            (a, b) => a == b,
        }
    }
}

/// Size of an [`Arena`].
pub const ARENA: usize = 1 << 20;
const PACKET_AT: usize = ARENA / 2;
const RODATA_AT: usize = ARENA / 4 * 3;

/// Memory for the regions of one case: 1 MiB, with the packet and the
/// read-only block far inside, so that no address a program can form from
/// them with a 16-bit offset (including through a written r10) lands in an
/// engine's stack, whose address differs between the engines.
pub struct Arena(Vec<u8>);

impl Arena {
    /// A zeroed arena.
    pub fn new() -> Arena {
        Arena(vec![0; ARENA])
    }
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::new()
    }
}

/// Runs `case` on the interpreter (`jit = false`) or the JIT, with its
/// regions in `arena` (reset to the case's contents first).
pub fn run_case(case: &Case, jit: bool, arena: &mut Arena) -> Outcome {
    run_case_with(case, jit, false, arena)
}

/// [`run_case`], with the JIT's constant blinding when `blind`.
pub fn run_case_with(case: &Case, jit: bool, blind: bool, arena: &mut Arena) -> Outcome {
    let helpers = helpers();
    let (lo, hi) = arena.0.split_at_mut(RODATA_AT);
    let packet = &mut lo[PACKET_AT..PACKET_AT + case.packet.len()];
    packet.copy_from_slice(&case.packet);
    let rodata = &mut hi[..case.rodata.len()];
    rodata.copy_from_slice(&case.rodata);
    let rodata = &*rodata;
    let mut mem = Memory::new();
    let p = mem.add(RegionKind::Packet, packet);
    let r = mem.add_readonly(RegionKind::ReadOnlyData, rodata);
    let mut dump = Dump::default();
    let (result, stack) = if jit {
        let mut b = Jit::builder().blind_constants(blind);
        if let Some(n) = case.budget {
            b = b.budget(n);
        }
        let mut vm = b.build(&case.prog, &helpers).expect("JIT compiles");
        (
            vm.run_with_data(&mut mem, &[p, r], &mut dump),
            vm.stack_range(),
        )
    } else {
        let mut b = Interpreter::builder();
        if let Some(n) = case.budget {
            b = b.budget(n);
        }
        let mut vm = b.build(&case.prog, &helpers).expect("interpreter compiles");
        (
            vm.run_with_data(&mut mem, &[p, r], &mut dump),
            vm.stack_range(),
        )
    };
    drop(mem);
    Outcome {
        result,
        stack_start: stack.0,
        packet: arena.0[PACKET_AT..PACKET_AT + case.packet.len()].to_vec(),
        dump,
    }
}

/// Runs `case` on both engines (the JIT with and without constant
/// blinding); `Err` describes the first difference.
pub fn check_case(case: &Case) -> Result<(), String> {
    // One arena for every run, so that region addresses are the same.
    let mut arena = Arena::new();
    let want = run_case(case, false, &mut arena);
    for blind in [false, true] {
        let got = run_case_with(case, true, blind, &mut arena);
        if !(want.same_result(&got) && want.packet == got.packet && want.dump == got.dump) {
            return Err(describe(case, &want, &got, blind));
        }
    }
    Ok(())
}

fn describe(case: &Case, want: &Outcome, got: &Outcome, blind: bool) -> String {
    let listing: String = case
        .prog
        .iter()
        .map(|(pc, i)| format!("{:>4}: {}\n", pc.0, bpfkit_isa::disasm::format_ubpf(i)))
        .collect();
    let what = if !want.same_result(got) {
        format!("result: interp {:x?}, jit {:x?}", want.result, got.result)
    } else if want.packet != got.packet {
        format!("packet: interp {:x?}, jit {:x?}", want.packet, got.packet)
    } else {
        let n = want.dump.snapshots.len().min(got.dump.snapshots.len());
        let mut s = format!(
            "dumps: interp {}, jit {}",
            want.dump.snapshots.len(),
            got.dump.snapshots.len()
        );
        for k in 0..n {
            let (a, b) = (&want.dump.snapshots[k], &got.dump.snapshots[k]);
            if a.1 != b.1 {
                s += &format!("; regs interp {:x?} jit {:x?}", a.1, b.1);
            }
            if let Some(i) = (0..a.0.len()).find(|&i| a.0[i] != b.0[i]) {
                s += &format!("; stack differs first at byte {i} (of {})", a.0.len());
            }
        }
        s
    };
    format!(
        "{what}{}\nbudget {:?}, packet {:x?}\n{listing}",
        if blind { " (constant blinding)" } else { "" },
        case.budget,
        case.packet
    )
}
