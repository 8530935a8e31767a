//! # bpfkit-soundness
//!
//! The verifier's soundness oracle (dev-only): [`gen`] writes random XDP
//! programs (every ALU operation at both widths, conditional jumps of
//! every condition against registers and immediates, bounded loops, stack
//! spills and fills of scalars and pointers, packet accesses behind
//! `data_end` checks, map lookups with NULL checks and values accessed at
//! computed offsets, bpf-to-bpf calls), [`check`] verifies one with
//! pruning off and the abstract registers recorded
//! ([`bpfkit_verifier::observe`]), and when it is accepted runs it in the
//! interpreter on random packets and map contents: no run may trap, and
//! before every instruction the concrete registers must lie inside one of
//! the states the verifier recorded there. Each run that passes is
//! repeated on the JIT's unchecked mode (no run-time memory checks, built
//! from the [`VerifiedProgram`] of the verifier with pruning) over the
//! same inputs at the same addresses: `r0` (or the trap) and the packet
//! page and map storage afterwards must equal the interpreter's. An
//! unsound verifier makes unchecked code corrupt memory instead of
//! trapping, so this is where it would show.
//!
//! The choices are drawn from a [`Source`]: a seeded [`Rng`] in the tests,
//! the fuzzer's bytes in `fuzz/fuzz_targets/verifier_soundness.rs`.

use std::fmt::Write as _;

use bpfkit_abi::{MapDef, MapType, ProgType};
use bpfkit_interp::Interpreter;
use bpfkit_isa::{Imm64, Pc, Program};
use bpfkit_jit::Jit;
use bpfkit_runtime::{ArrayMap, Helpers, Imm64Resolver, Memory, RegionKind, Trap, TrapKind};
use bpfkit_verifier::observe::{Layout, Observed, Violation};
pub use bpfkit_verifier::VerifiedProgram;
use bpfkit_verifier::{verify, Options, Verdict};

/// Where the generator's choices come from.
pub trait Source {
    /// A number in `[0, n)` (`n > 0`).
    fn below(&mut self, n: u64) -> u64;

    /// True with probability about `1/n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One of `xs` (not empty).
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A xorshift generator: deterministic runs from a seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64 has no zero state; a zero seed would stay zero.
        if self.0 == 0 {
            self.0 = 0x9e37_79b9_7f4a_7c15;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Source for Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The fuzzer's bytes: one byte per small choice, zeros once exhausted
/// (so a short input still makes a whole program, the simplest one).
#[derive(Clone, Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    /// Reads choices from `data`.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, pos: 0 }
    }

    /// Bytes not used yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos.min(self.data.len())..]
    }
}

impl Source for Bytes<'_> {
    fn below(&mut self, n: u64) -> u64 {
        let mut v = 0u64;
        let mut span = 1u64;
        while span < n {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            v = (v << 8) | u64::from(b);
            span = span.saturating_mul(256);
        }
        v % n.max(1)
    }
}

/// The maps every generated program may use: arrays (constant keys in
/// range give non-NULL values) and hashes (lookups may fail), with even
/// and odd value sizes.
pub fn maps() -> Vec<MapDef> {
    vec![
        MapDef::new(MapType::Array, 4, 48, 4),
        MapDef::new(MapType::Hash, 4, 24, 8),
        // Odd sizes: bounds that are not multiples of the access sizes.
        MapDef::new(MapType::Array, 4, 13, 1),
        MapDef::new(MapType::Hash, 4, 3, 3),
    ]
}

/// Registers the generated code may write (`r6` keeps the context).
const GENERAL: [u8; 9] = [0, 1, 2, 3, 4, 5, 7, 8, 9];

const IMMS: [i64; 28] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    255,
    256,
    4096,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    -1,
    -2,
    -4,
    -8,
    -64,
    -255,
    -0x8000,
    -0x8000_0000,
    14,
];

const CONDS: [&str; 11] = [
    "==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<=", "&",
];

/// What the generator believes a register holds, reading the code as if
/// it ran straight through (a skipped item can make it wrong, which only
/// makes the verifier reject more).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum K {
    Scalar,
    Ptr,
    Unknown,
}

/// A program under construction: text in the llvm syntax with labels.
struct Gen<'s, S: Source> {
    src: &'s mut S,
    text: String,
    labels: u32,
    kinds: [K; 11],
    /// Subprograms still to write (their names).
    subprogs: Vec<String>,
    /// Nesting: no loops inside loops, no calls inside subprograms.
    in_loop: bool,
    in_sub: bool,
}

impl<S: Source> Gen<'_, S> {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    fn label(&mut self) -> String {
        self.labels += 1;
        format!("L{}", self.labels)
    }

    fn set(&mut self, r: u8, k: K) {
        self.kinds[r as usize] = k;
    }

    /// `rD = rS`: the kind moves with the value.
    fn mov(&mut self, d: u8, s: u8) {
        self.line(format!("r{d} = r{s}"));
        self.kinds[d as usize] = self.kinds[s as usize];
    }

    /// A register the code may write, never one of `avoid` (loop counters,
    /// registers in use): mostly one holding a scalar.
    fn dst(&mut self, avoid: &[u8]) -> u8 {
        let free: Vec<u8> = GENERAL
            .iter()
            .copied()
            .filter(|r| !avoid.contains(r))
            .collect();
        let scalars: Vec<u8> = free
            .iter()
            .copied()
            .filter(|&r| self.kinds[r as usize] == K::Scalar)
            .collect();
        if !scalars.is_empty() && !self.src.one_in(12) {
            self.src.pick(&scalars)
        } else {
            self.src.pick(&free)
        }
    }

    /// A register that is written whatever it held.
    fn scratch(&mut self, avoid: &[u8]) -> u8 {
        let free: Vec<u8> = GENERAL
            .iter()
            .copied()
            .filter(|r| !avoid.contains(r))
            .collect();
        self.src.pick(&free)
    }

    /// A register to read as a number: mostly a scalar one.
    fn scalar(&mut self) -> u8 {
        let scalars: Vec<u8> = (0..10u8)
            .filter(|&r| self.kinds[r as usize] == K::Scalar)
            .collect();
        if !scalars.is_empty() && !self.src.one_in(12) {
            self.src.pick(&scalars)
        } else {
            self.any()
        }
    }

    /// Any register that may be read.
    fn any(&mut self) -> u8 {
        if self.src.one_in(12) {
            self.src.pick(&[6, 10])
        } else {
            self.src.pick(&GENERAL)
        }
    }

    fn imm(&mut self) -> i64 {
        if self.src.one_in(6) {
            // Anything in the 32-bit immediate.
            self.src.below(1 << 32) as u32 as i32 as i64
        } else {
            self.src.pick(&IMMS)
        }
    }

    fn reg(w32: bool, r: u8) -> String {
        format!("{}{r}", if w32 { 'w' } else { 'r' })
    }

    fn alu(&mut self, avoid: &[u8]) {
        let d = self.dst(avoid);
        let w32 = self.src.one_in(3);
        let rd = Self::reg(w32, d);
        match self.src.below(16) {
            0 => self.line(format!("{rd} = -{rd}")),
            1 => {
                let kind = self.src.pick(&["be", "le", "bswap"]);
                let bits = self.src.pick(&[16, 32, 64]);
                self.line(format!("r{d} = {kind}{bits} r{d}"));
            }
            2 => {
                // movsx: 32-bit forms take s8/s16 only.
                let s = self.scalar();
                let bits = if w32 {
                    self.src.pick(&[8, 16])
                } else {
                    self.src.pick(&[8, 16, 32])
                };
                let rs = Self::reg(w32, s);
                self.line(format!("{rd} = (s{bits}){rs}"));
            }
            3 if !w32 && self.src.one_in(3) => {
                let v = self.src.below(u64::MAX) as i64;
                self.line(format!("r{d} = {v} ll"));
            }
            _ => {
                let op = self.src.pick(&[
                    "+=", "-=", "*=", "/=", "%=", "s/=", "s%=", "|=", "&=", "^=", "<<=", ">>=",
                    "s>>=", "=",
                ]);
                let shift = op.contains("<<") || op.contains(">>");
                let bits = if w32 { 32 } else { 64 };
                if self.src.one_in(2) {
                    let s = self.scalar();
                    let rs = Self::reg(w32, s);
                    if shift && !self.src.one_in(4) {
                        // Bound the amount first, as compilers do.
                        let t = self.scratch(&[avoid, &[d]].concat());
                        self.mov(t, s);
                        self.line(format!("r{t} &= {}", bits - 1));
                        let rt = Self::reg(w32, t);
                        self.line(format!("{rd} {op} {rt}"));
                    } else {
                        self.line(format!("{rd} {op} {rs}"));
                        if op == "=" && !w32 {
                            self.kinds[d as usize] = self.kinds[s as usize];
                            return;
                        }
                    }
                } else {
                    let k = if shift && !self.src.one_in(16) {
                        self.src.below(bits) as i64
                    } else {
                        self.imm()
                    };
                    self.line(format!("{rd} {op} {k}"));
                }
            }
        }
        self.set(d, K::Scalar);
    }

    fn cond(&mut self, target: &str) {
        let w32 = self.src.one_in(3);
        let d = self.scalar();
        let c = self.src.pick(&CONDS);
        let rhs = if self.src.one_in(2) {
            let s = self.scalar();
            Self::reg(w32, s)
        } else {
            self.imm().to_string()
        };
        let rd = Self::reg(w32, d);
        self.line(format!("if {rd} {c} {rhs} goto {target}"));
    }

    /// `n` items, with forward jumps landing inside them.
    fn items(&mut self, n: usize, avoid: &[u8]) {
        let mut pending: Vec<(usize, String)> = Vec::new();
        for k in 0..n {
            pending.retain(|(at, l)| {
                if *at == k {
                    self.text.push_str(l);
                    self.text.push_str(":\n");
                    false
                } else {
                    true
                }
            });
            match self.src.below(22) {
                0..=6 => self.alu(avoid),
                7..=9 => {
                    let l = self.label();
                    self.cond(&l);
                    let skip = 1 + self.src.below(3) as usize;
                    pending.push((k + 1 + skip, l));
                }
                10 | 11 => self.stack(avoid),
                12 | 13 => self.packet(avoid),
                14 | 15 => self.map(avoid),
                16 if !self.in_loop => self.looped(avoid),
                17 if !self.in_sub => self.call(avoid),
                18 => self.pointer(avoid),
                19 => self.deref(avoid),
                _ => self.helper(avoid),
            }
        }
        for (_, l) in pending {
            self.line(format!("{l}:"));
        }
    }

    fn size(&mut self) -> (&'static str, i64) {
        self.src
            .pick(&[("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)])
    }

    /// Spills, fills and accesses at computed offsets in the stack.
    fn stack(&mut self, avoid: &[u8]) {
        let (ty, n) = self.size();
        let slot = 8 * (1 + self.src.below(8) as i64);
        let off = if self.src.one_in(8) {
            slot - self.src.below(8) as i64
        } else {
            slot - (self.src.below(8 / n as u64) as i64) * n
        };
        match self.src.below(6) {
            0 | 1 => {
                // Spill any register (pointers whole) or an immediate.
                if self.src.one_in(4) {
                    let k = self.imm();
                    let ty = if n == 8 { "u64" } else { ty };
                    self.line(format!("*({ty} *)(r10 - {off}) = {k}"));
                } else if self.src.one_in(2) {
                    let s = self.any();
                    self.line(format!("*(u64 *)(r10 - {slot}) = r{s}"));
                } else {
                    let s = self.scalar();
                    self.line(format!("*({ty} *)(r10 - {off}) = r{s}"));
                }
            }
            2 | 3 => {
                let d = self.scratch(avoid);
                if self.src.one_in(2) {
                    self.line(format!("r{d} = *(u64 *)(r10 - {slot})"));
                    self.set(d, K::Unknown);
                } else {
                    let ty = if ty != "u64" && self.src.one_in(4) {
                        ty.replace('u', "s")
                    } else {
                        ty.to_string()
                    };
                    self.line(format!("r{d} = *({ty} *)(r10 - {off})"));
                    self.set(d, K::Scalar);
                }
            }
            4 => {
                // rT = r10 - 64 + (rS & mask); access at rT + k.
                let t = self.scratch(avoid);
                let s = self.scalar();
                let u = self.scratch(&[avoid, &[t]].concat());
                let mask = self
                    .src
                    .pick(&[0x38, 0x18, 0x3f, 0x7, 0x30, 0x7f, 0x3c, 0x20]);
                self.mov(u, s);
                self.line(format!("r{u} &= {mask}"));
                self.set(u, K::Scalar);
                self.line(format!("r{t} = r10"));
                self.line(format!("r{t} += -64"));
                self.line(format!("r{t} += r{u}"));
                self.set(t, K::Ptr);
                let k = self.src.pick(&[0, 0, 1, 4, 8, -8]);
                if self.src.one_in(2) {
                    let v = self.scalar();
                    self.line(format!("*({ty} *)(r{t} {}) = r{v}", signed(k)));
                } else {
                    let d = self.scratch(avoid);
                    self.line(format!("r{d} = *({ty} *)(r{t} {})", signed(k)));
                    self.set(d, K::Scalar);
                }
            }
            _ => {
                let s = self.scalar();
                let (ty, sz) = if self.src.one_in(2) {
                    ("u64", 8)
                } else {
                    ("u32", 4)
                };
                let off = slot
                    - if sz == 4 {
                        4 * self.src.below(2) as i64
                    } else {
                        0
                    };
                let w = if sz == 4 { 'w' } else { 'r' };
                let bits = if sz == 4 { "32_32" } else { "_64" };
                match self.src.below(3) {
                    0 if !avoid.contains(&s) => {
                        let op = self.src.pick(&["add", "or", "and", "xor"]);
                        self.line(format!(
                            "{w}{s} = atomic_fetch_{op}(({ty} *)(r10 - {off}), {w}{s})"
                        ));
                    }
                    1 if !avoid.contains(&s) && !avoid.contains(&0) => {
                        if self.src.one_in(2) {
                            self.line(format!("{w}{s} = xchg{bits}(r10 - {off}, {w}{s})"));
                        } else {
                            self.line(format!("{w}0 = cmpxchg{bits}(r10 - {off}, {w}0, {w}{s})"));
                            self.set(0, K::Scalar);
                        }
                    }
                    _ => {
                        let op = self.src.pick(&["+=", "|=", "&=", "^="]);
                        self.line(format!("lock *({ty} *)(r10 - {off}) {op} {w}{s}"));
                    }
                }
            }
        }
    }

    /// A packet access behind a `data_end` check, at a constant or
    /// computed offset, sometimes checked too short.
    fn packet(&mut self, avoid: &[u8]) {
        let a = self.scratch(avoid);
        let b = self.scratch(&[avoid, &[a]].concat());
        let c = self.scratch(&[avoid, &[a, b]].concat());
        let meta = self.src.one_in(6);
        let skip = self.label();
        if meta {
            self.line(format!("r{a} = *(u32 *)(r6 + 8)"));
            self.line(format!("r{b} = *(u32 *)(r6 + 0)"));
        } else {
            self.line(format!("r{a} = *(u32 *)(r6 + 0)"));
            self.line(format!("r{b} = *(u32 *)(r6 + 4)"));
        }
        self.set(a, K::Ptr);
        self.set(b, K::Ptr);
        if self.src.one_in(3) {
            let s = self.scalar();
            let mask = self.src.pick(&[7, 15, 31, 63, 255, 0x7fff, 0xff8]);
            self.mov(c, s);
            self.line(format!("r{c} &= {mask}"));
            self.line(format!("r{a} += r{c}"));
        } else if self.src.one_in(3) {
            let k = self.src.below(40);
            self.line(format!("r{a} += {k}"));
        }
        let k: i64 = self.src.pick(&[0, 1, 2, 4, 8, 14, 20, 34, 64]);
        self.line(format!("r{c} = r{a}"));
        self.line(format!("r{c} += {k}"));
        self.set(c, K::Ptr);
        let check = match self.src.below(4) {
            0 => format!("if r{c} > r{b} goto {skip}"),
            1 => format!("if r{b} < r{c} goto {skip}"),
            2 => format!("if r{c} >= r{b} goto {skip}"),
            _ => format!("if r{b} <= r{c} goto {skip}"),
        };
        self.line(check);
        let (ty, n) = self.size();
        let off = if k >= n && !self.src.one_in(6) {
            self.src.below((k - n + 1) as u64) as i64
        } else {
            self.src.below(k as u64 + 2) as i64 - n.min(k)
        };
        if self.src.one_in(3) {
            let v = self.scalar();
            self.line(format!("*({ty} *)(r{a} {}) = r{v}", signed(off)));
        } else {
            let d = self.scratch(&[avoid, &[a]].concat());
            self.line(format!("r{d} = *({ty} *)(r{a} {})", signed(off)));
            self.set(d, K::Scalar);
        }
        self.line(format!("{skip}:"));
        // Mostly drop the pointers again: numbers make more programs pass.
        for r in [a, b, c] {
            if self.kinds[r as usize] == K::Ptr && !self.src.one_in(4) {
                let k = self.imm();
                self.line(format!("r{r} = {k}"));
                self.set(r, K::Scalar);
            }
        }
    }

    /// `r1`-`r5` hold nothing after a call: give them values so that later
    /// code can read them.
    fn reinit(&mut self, avoid: &[u8]) {
        for r in 1..=5u8 {
            self.set(r, K::Unknown);
        }
        for r in 1..=5u8 {
            if avoid.contains(&r) || self.src.one_in(16) {
                continue;
            }
            match self.src.below(3) {
                0 => {
                    let k = self.imm();
                    self.line(format!("r{r} = {k}"));
                    self.set(r, K::Scalar);
                }
                1 => {
                    let s = self.src.pick(&[0, 7, 8, 9, 10]);
                    self.mov(r, s);
                }
                _ => self.mov(r, 0),
            }
        }
    }

    /// A lookup, a NULL check, an access to the value at a bounded index.
    fn map(&mut self, avoid: &[u8]) {
        let m = self.src.below(4);
        let skip = self.label();
        if self.src.one_in(8) {
            // Direct value access (`lddw` of a map value).
            let d = self.scratch(avoid);
            let off = self.src.pick(&[0, 4, 8, 12, 16, 40]);
            let a = self.src.pick(&[0, 2]);
            self.line(format!("ld_pseudo r{d}, 0x6, {a:#x}, {off:#x}"));
            self.set(d, K::Ptr);
            let (ty, _) = self.size();
            let k = self.src.pick(&[0, 4, 8, -8]);
            let v = self.scalar();
            self.line(format!("*({ty} *)(r{d} {}) = r{v}", signed(k)));
            return;
        }
        if self.src.one_in(2) {
            let k = self.src.below(10);
            self.line(format!("*(u32 *)(r10 - 4) = {k}"));
        } else {
            let s = self.scalar();
            self.line(format!("*(u32 *)(r10 - 4) = w{s}"));
        }
        self.line("r2 = r10");
        self.line("r2 += -4");
        self.line(format!("ld_pseudo r1, 0x5, {m:#x}"));
        self.line("call 1");
        for r in 1..=5u8 {
            self.set(r, K::Unknown);
        }
        // The pointer is copied before or after the NULL check (a copy
        // shares the check: same id).
        let v = self.scratch(&[avoid, &[1, 2, 3, 4, 5]].concat());
        let early = self.src.one_in(3);
        if early && v != 0 {
            self.line(format!("r{v} = r0"));
        }
        if !self.src.one_in(10) {
            let t = if early { self.src.pick(&[0, v]) } else { 0 };
            if self.src.one_in(2) {
                self.line(format!("if r{t} == 0 goto {skip}"));
            } else {
                let ok = self.label();
                self.line(format!("if r{t} != 0 goto {ok}"));
                self.line(format!("goto {skip}"));
                self.line(format!("{ok}:"));
            }
        }
        if !early && v != 0 {
            self.line(format!("r{v} = r0"));
        }
        self.set(v, K::Ptr);
        if self.src.one_in(2) {
            // The index from a scalar, bounded by a mask or a comparison,
            // maybe of a copy made before the comparison (bounds flow to
            // registers with the same id).
            let s = self.src.pick(&[7, 8, 9]);
            let u = self.scratch(&[avoid, &[v, 1, 2, 3, 4, 5]].concat());
            let w = if self.src.one_in(3) { 'w' } else { 'r' };
            if u != s {
                self.line(format!("{w}{u} = {w}{s}"));
                self.set(u, K::Scalar);
            }
            if self.src.one_in(2) {
                let mask = self.src.pick(&[7, 15, 31, 0x1c, 0x3f]);
                self.line(format!("r{u} &= {mask}"));
            } else {
                let t = if u != s && !avoid.contains(&s) && self.src.one_in(2) {
                    s
                } else {
                    u
                };
                let w = if self.src.one_in(3) { 'w' } else { 'r' };
                let c = self.src.pick(&[">", ">=", "s>", "s>="]);
                let k = self.src.pick(&[7, 8, 15, 16, 23, 40, 47]);
                self.line(format!("if {w}{t} {c} {k} goto {skip}"));
                if c.starts_with('s') && !self.src.one_in(4) {
                    self.line(format!("if {w}{t} s< 0 goto {skip}"));
                }
            }
            self.line(format!("r{v} += r{u}"));
        }
        let (ty, _) = self.size();
        let k = self.src.pick(&[0, 0, 1, 4, 8, 16, 20, 40, -1]);
        if self.src.one_in(2) {
            let s = self.scalar();
            self.line(format!("*({ty} *)(r{v} {}) = r{s}", signed(k)));
        } else {
            let d = self.scratch(&[avoid, &[1, 2, 3, 4, 5]].concat());
            self.line(format!("r{d} = *({ty} *)(r{v} {})", signed(k)));
            self.set(d, K::Scalar);
        }
        self.line(format!("{skip}:"));
        if v != 0 && !self.src.one_in(4) {
            self.line(format!("r{v} = 0"));
            self.set(v, K::Scalar);
        }
        self.set(0, K::Unknown);
        self.line("r0 = 0");
        self.set(0, K::Scalar);
        self.reinit(avoid);
    }

    /// A loop with a counter the body does not write.
    fn looped(&mut self, avoid: &[u8]) {
        let c = self.src.pick(&[7, 8, 9]);
        if avoid.contains(&c) {
            return;
        }
        let head = self.label();
        let init = self.src.below(3);
        let n = init + 1 + self.src.below(5);
        // Sometimes the bound is a register known only to be small.
        let bound = if self.src.one_in(4) {
            let b = self.scratch(&[avoid, &[c, 1, 2, 3, 4, 5]].concat());
            self.line(format!("r{b} &= 3"));
            self.line(format!("r{b} += {}", init + 1));
            self.set(b, K::Scalar);
            Some(b)
        } else {
            None
        };
        self.line(format!("r{c} = {init}"));
        self.set(c, K::Scalar);
        self.line(format!("{head}:"));
        self.in_loop = true;
        let body = 1 + self.src.below(3) as usize;
        let keep = [avoid, &[c], bound.as_slice()].concat();
        self.items(body, &keep);
        self.in_loop = false;
        let w = if self.src.one_in(3) { 'w' } else { 'r' };
        self.line(format!("{w}{c} += 1"));
        let test = match (bound, self.src.below(4)) {
            (Some(b), 0 | 1) => format!("if {w}{c} < {w}{b} goto {head}"),
            (Some(b), _) => format!("if {w}{b} > {w}{c} goto {head}"),
            (None, 0) => format!("if {w}{c} < {n} goto {head}"),
            (None, 1) => format!("if {w}{c} != {n} goto {head}"),
            (None, 2) => format!("if {w}{c} s< {n} goto {head}"),
            (None, _) => format!("if {w}{c} <= {} goto {head}", n - 1),
        };
        self.line(test);
    }

    /// A bpf-to-bpf call: a pointer or scalar in `r1`, a scalar in `r2`,
    /// the context in `r3`.
    fn call(&mut self, avoid: &[u8]) {
        let name = format!("f{}", self.subprogs.len());
        let s2 = self.scalar();
        if s2 != 2 {
            self.line(format!("r2 = r{s2}"));
        }
        match self.src.below(4) {
            0 => {
                let k = 8 * (1 + self.src.below(8));
                self.line("r1 = r10");
                self.line(format!("r1 += -{k}"));
            }
            1 => self.line("r1 = *(u32 *)(r6 + 0)"),
            _ => {
                let s = self.scalar();
                if s != 1 {
                    self.line(format!("r1 = r{s}"));
                }
            }
        }
        self.line("r3 = r6");
        self.line(format!("call {name}"));
        self.subprogs.push(name);
        self.set(0, K::Scalar);
        self.reinit(avoid);
    }

    fn subprog(&mut self, name: &str) {
        self.line(format!("{name}:"));
        self.line("r6 = r3");
        self.line("r7 = r1");
        self.line("r8 = r2");
        self.line("r9 = 0");
        self.line("r0 = 0");
        self.kinds = [K::Unknown; 11];
        for r in [0, 8, 9] {
            self.set(r, K::Scalar);
        }
        self.set(6, K::Ptr);
        self.set(10, K::Ptr);
        self.reinit(&[]);
        self.in_sub = true;
        let n = 2 + self.src.below(6) as usize;
        self.items(n, &[]);
        self.in_sub = false;
        self.epilogue();
    }

    /// Pointer arithmetic and comparisons, moves of pointers.
    fn pointer(&mut self, avoid: &[u8]) {
        let d = self.scratch(avoid);
        match self.src.below(4) {
            0 => {
                let s = self.src.pick(&[6, 10]);
                self.mov(d, s);
                let k = self.src.pick(&[-8, -16, -64, -512, 8, 0]);
                self.line(format!("r{d} += {k}"));
            }
            1 => {
                let s = self.any();
                let op = self.src.pick(&["+=", "-="]);
                self.line(format!("r{d} {op} r{s}"));
                self.set(d, K::Unknown);
            }
            2 => {
                let l = self.label();
                let s = self.any();
                let c = self.src.pick(&CONDS);
                self.line(format!("if r{d} {c} r{s} goto {l}"));
                let k = self.imm();
                self.line(format!("r{d} = {k}"));
                self.line(format!("{l}:"));
                self.set(d, K::Unknown);
            }
            _ => {
                let s = self.any();
                self.mov(d, s);
            }
        }
    }

    /// A load or store through whatever pointer a register holds (a
    /// caller's stack in a subprogram, a filled spill, the context, a
    /// pointer moved around), at a small offset.
    fn deref(&mut self, avoid: &[u8]) {
        let ptrs: Vec<u8> = (0..10u8)
            .filter(|&r| r != 6 && self.kinds[r as usize] == K::Ptr)
            .collect();
        let p = match self.src.below(8) {
            0 | 1 => 10,
            2 => 6,
            3 => self.any(),
            _ if !ptrs.is_empty() => self.src.pick(&ptrs),
            _ => 10,
        };
        let (ty, n) = self.size();
        let off = match p {
            6 => 4 * self.src.below(6) as i64,
            10 => -n * (1 + self.src.below((64 / n) as u64) as i64),
            _ => self.src.pick(&[0, 0, -8, 8, -16, 16, -4, 4, 1, -1]) * if n == 8 { 1 } else { n },
        };
        if self.src.one_in(3) {
            let v = self.scalar();
            self.line(format!("*({ty} *)(r{p} {}) = r{v}", signed(off)));
        } else {
            let d = self.scratch(avoid);
            let ty = if p == 6 { "u32" } else { ty };
            self.line(format!("r{d} = *({ty} *)(r{p} {})", signed(off)));
            self.set(d, if n == 8 { K::Unknown } else { K::Scalar });
        }
    }

    fn helper(&mut self, avoid: &[u8]) {
        let id = self.src.pick(&[7, 7, 5, 8]);
        self.line(format!("call {id}"));
        self.set(0, K::Scalar);
        let d = self.scratch(&[avoid, &[1, 2, 3, 4, 5]].concat());
        if d != 0 {
            self.mov(d, 0);
        }
        self.reinit(avoid);
    }

    fn epilogue(&mut self) {
        let s = self.scalar();
        if s != 0 {
            self.line(format!("r0 = r{s}"));
        }
        if !self.src.one_in(8) {
            self.line("r0 &= 3");
        }
        self.line("exit");
    }
}

fn signed(k: i64) -> String {
    if k < 0 {
        format!("- {}", -k)
    } else {
        format!("+ {k}")
    }
}

/// A random XDP program (text in the llvm syntax) for [`maps`].
pub fn gen_text(src: &mut impl Source) -> String {
    let mut g = Gen {
        src,
        text: String::new(),
        labels: 0,
        kinds: [K::Unknown; 11],
        subprogs: Vec::new(),
        in_loop: false,
        in_sub: false,
    };
    g.line("r6 = r1");
    g.set(6, K::Ptr);
    g.set(10, K::Ptr);
    // Unknown scalars first (calls clobber r1-r5), then the rest.
    for r in [7, 8, 9] {
        match g.src.below(6) {
            0 | 1 => {
                g.line("call 7");
                g.line(format!("r{r} = r0"));
                if g.src.one_in(3) {
                    g.line(format!("r{r} <<= 32"));
                    g.line("call 7");
                    g.line(format!("r{r} |= r0"));
                }
                g.set(r, K::Scalar);
            }
            2 => {
                let off = g.src.pick(&[12, 16]);
                g.line(format!("r{r} = *(u32 *)(r6 + {off})"));
                g.set(r, K::Scalar);
            }
            3 | 4 => {
                let k = g.imm();
                g.line(format!("r{r} = {k}"));
                g.set(r, K::Scalar);
            }
            _ => g.mov(r, 10),
        }
    }
    for r in 0..=5 {
        if g.src.one_in(3) {
            let s = g.src.pick(&[7, 8, 9]);
            g.mov(r, s);
        } else {
            let k = g.imm();
            g.line(format!("r{r} = {k}"));
            g.set(r, K::Scalar);
        }
    }
    let n = 3 + g.src.below(12) as usize;
    g.items(n, &[]);
    g.epilogue();
    let mut done = 0;
    while done < g.subprogs.len() {
        let name = g.subprogs[done].clone();
        g.subprog(&name);
        done += 1;
    }
    g.text
}

/// A random XDP program for [`maps`] (see [`gen_text`]).
pub fn gen(src: &mut impl Source) -> Program {
    let text = gen_text(src);
    let insns = bpfkit_isa::assemble(&text, bpfkit_isa::Syntax::Llvm)
        .unwrap_or_else(|e| panic!("generated text does not assemble: {e}\n{text}"));
    Program::from_insns(insns)
        .unwrap_or_else(|e| panic!("generated program is invalid: {e}\n{text}"))
}

/// What one program gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The verifier rejected it (its message).
    Rejected(String),
    /// Accepted, and every run stayed inside the recorded states.
    Sound {
        /// Instructions executed over all runs.
        steps: u64,
        /// Runs that ended at the budget rather than at `exit`.
        over_budget: u32,
        /// Runs repeated on unchecked code that ended the same.
        unchecked: u32,
        /// Runs whose end depends on the stack's address (a stack pointer
        /// stored or returned), so not comparable with unchecked code.
        stack_dependent: u32,
    },
    /// Accepted, and a run trapped or left the recorded states.
    Unsound(String),
    /// Accepted with pruning, rejected without it for another reason than
    /// the instruction limit (the message): pruning skipped a path the
    /// full exploration finds unsafe. Not proof of a bug (the transfer
    /// functions need not be monotone, so a more precise state can fare
    /// worse), but worth a look.
    PruningDisagrees(String),
}

/// Instructions the verifier may process per program (pruning is off, so
/// loops with branches in them grow fast; a program past this is simply
/// rejected).
pub const INSN_LIMIT: u64 = 50_000;

/// Verifies `prog` (for [`maps`]) with pruning off and states recorded;
/// if accepted, runs it `runs` times on inputs from `rng` ([`run_all`]).
/// A program that only the verifier with pruning accepts (the other one
/// ran out of instructions) is still run, for traps alone: that checks
/// pruning too.
pub fn check(prog: &Program, runs: u32, rng: &mut Rng) -> Outcome {
    let opts = Options {
        insn_limit: INSN_LIMIT,
        ..Options::default()
    };
    match observe(prog) {
        Ok(observed) => {
            // The token comes from the verifier as engines get it (with
            // pruning); a program only the full exploration accepts is not
            // run unchecked.
            let (_, verified) = VerifiedProgram::verify(prog, ProgType::Xdp, &maps(), &opts);
            run_all_with(prog, Some(&observed), verified.as_ref(), runs, rng)
        }
        Err(m) => {
            let (pruned, verified) = VerifiedProgram::verify(prog, ProgType::Xdp, &maps(), &opts);
            if pruned.verdict == Verdict::Rejected {
                Outcome::Rejected(m)
            } else if !m.starts_with("BPF program is too large") {
                Outcome::PruningDisagrees(m)
            } else {
                run_all_with(prog, None, verified.as_ref(), runs, rng)
            }
        }
    }
}

/// The verifier's recorded states for `prog` (pruning off), or its
/// rejection message.
pub fn observe(prog: &Program) -> Result<Observed, String> {
    let opts = Options {
        insn_limit: INSN_LIMIT,
        record_states: true,
        prune: false,
        ..Options::default()
    };
    let report = verify(prog, ProgType::Xdp, &maps(), &opts);
    if report.verdict == Verdict::Rejected {
        return Err(report.error.map(|e| e.message).unwrap_or_default());
    }
    report
        .observed
        .ok_or_else(|| "no states recorded".to_string())
}

/// Runs `prog` `runs` times on random packets and map contents from
/// `rng`, checking every step against `observed` (if given) and for traps.
pub fn run_all(prog: &Program, observed: Option<&Observed>, runs: u32, rng: &mut Rng) -> Outcome {
    run_all_with(prog, observed, None, runs, rng)
}

/// [`run_all`], and each run that passed repeated on `unchecked` compiled
/// by the JIT in unchecked mode (normally the token of `prog` itself),
/// which must give the same result and leave the same packet and map
/// bytes. Draws the same numbers from `rng` as [`run_all`].
pub fn run_all_with(
    prog: &Program,
    observed: Option<&Observed>,
    unchecked: Option<&VerifiedProgram>,
    runs: u32,
    rng: &mut Rng,
) -> Outcome {
    let defs = maps();
    let (mut steps, mut over_budget, mut same, mut stack_dependent) = (0, 0, 0, 0);
    for _ in 0..runs {
        match run_once(prog, &defs, observed, unchecked, rng) {
            Ok((end, cmp)) => {
                match end {
                    Some(n) => steps += n,
                    None => over_budget += 1,
                }
                match cmp {
                    Some(true) => same += 1,
                    Some(false) => stack_dependent += 1,
                    None => {}
                }
            }
            Err(e) => return Outcome::Unsound(e),
        }
    }
    Outcome::Sound {
        steps,
        over_budget,
        unchecked: same,
        stack_dependent,
    }
}

/// Map addresses as `lddw` gives them: never a region, as in bpfkit's
/// runtime (helpers map them back).
const MAP_ADDR: u64 = 0xffff_8000_0000_0000;
/// Bytes between two values of a map, so that a pointer that strays a
/// little from its value still maps back to it.
const VALUE_STRIDE: usize = 256;
/// Instructions per run.
const BUDGET: u64 = 200_000;
/// Unchecked runs (each on its own stack) before a difference from the
/// interpreter counts as a finding.
const STACKS: usize = 8;

struct RunData {
    rng: Rng,
    /// Per map: value start addresses; hash maps: which slots hold a key.
    values: Vec<Vec<u64>>,
    present: Vec<u64>,
}

fn helpers(defs: &[MapDef]) -> Helpers {
    let defs = defs.to_vec();
    let mut h = Helpers::new();
    h.register(1, move |env, args: [u64; 5]| {
        let m = args[0].wrapping_sub(MAP_ADDR) as usize;
        let Some(def) = defs.get(m) else {
            return Ok(0);
        };
        let mut key = [0u8; 4];
        if env.guest().read(args[1], &mut key).is_err() {
            return Ok(0);
        }
        let k = u32::from_le_bytes(key) as usize;
        let Some(d) = env.data_mut::<RunData>() else {
            return Ok(0);
        };
        let vals = &d.values[m];
        Ok(match def.map_type {
            MapType::Array => vals.get(k).copied().unwrap_or(0),
            _ => {
                let slot = k % vals.len();
                if k < 16 && d.present[m] & (1 << slot) != 0 {
                    vals[slot]
                } else {
                    0
                }
            }
        })
    });
    h.register(7, |env, _| {
        Ok(env
            .data_mut::<RunData>()
            .map_or(4, |d| d.rng.next_u64() as u32 as u64))
    });
    h.register(5, |env, _| {
        Ok(env
            .data_mut::<RunData>()
            .map_or(5, |d| d.rng.next_u64() >> 3))
    });
    h.register(8, |env, _| {
        Ok(env
            .data_mut::<RunData>()
            .map_or(0, |d| d.rng.next_u64() % 4))
    });
    h
}

/// The maps' addresses and value addresses for `lddw`, and the layout of
/// the arrays, so that unchecked code computes their lookups inline as it
/// does in `bpfkit` (the helper here returns the same pointers).
struct MapResolver<'d> {
    defs: &'d [MapDef],
    /// Per map: value start addresses (`VALUE_STRIDE` apart).
    values: Vec<Vec<u64>>,
}

impl Imm64Resolver for MapResolver<'_> {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        match *imm {
            Imm64::MapIdx(i) => Some(MAP_ADDR.wrapping_add(i as u64)),
            Imm64::MapIdxValue { idx, off } => self
                .values
                .get(idx as usize)
                .and_then(|v| v.first())
                .map(|&s| s + u64::from(off)),
            _ => None,
        }
    }

    /// Arrays: value `k` at `values[0] + k * VALUE_STRIDE`, each value a
    /// region of every run's memory (`setup`), what helper 1 returns for
    /// `k < max_entries` (and 0 above) on any CPU. Helper 8 returns random
    /// numbers here, so it is never inlined (`inline_cpu_id` stays false).
    fn array_map(&self, _pc: Pc, imm: &Imm64) -> Option<ArrayMap> {
        let Imm64::MapIdx(i) = *imm else {
            return None;
        };
        let i = usize::try_from(i).ok()?;
        let def = self.defs.get(i)?;
        let base = *self.values.get(i)?.first()?;
        (def.map_type == MapType::Array && def.key_size == 4)
            .then(|| ArrayMap::plain(base, VALUE_STRIDE as u32, def.max_entries))
    }
}

/// One engine's memory for a run: the context, the packet (`packet` of
/// `frame`) and every map value; the value addresses per map; the
/// helpers' run data.
fn setup<'a>(
    defs: &[MapDef],
    ctx: &'a [u8],
    frame: &'a mut [u8],
    packet: std::ops::Range<usize>,
    storage: &'a mut [Vec<u8>],
    helper_seed: u64,
    present: &[u64],
) -> (Memory<'a>, u64, Vec<Vec<u64>>, RunData) {
    let mut mem = Memory::new();
    let ctx_addr = mem.add_readonly(RegionKind::Context, ctx);
    mem.add(RegionKind::Packet, &mut frame[packet]);
    let mut values = Vec::new();
    for (d, buf) in defs.iter().zip(storage.iter_mut()) {
        let mut starts = Vec::new();
        for chunk in buf.chunks_mut(VALUE_STRIDE) {
            let v = &mut chunk[..d.value_size as usize];
            starts.push(mem.add(RegionKind::MapValue, v));
        }
        values.push(starts);
    }
    let run_data = RunData {
        rng: Rng(helper_seed),
        values: values.clone(),
        present: present.to_vec(),
    };
    (mem, ctx_addr, values, run_data)
}

/// One run on a random packet and random map contents: `Some(steps)`
/// when it reached `exit`, `None` at the budget, and (with `unchecked`)
/// whether unchecked code ended the same (`Some(true)`) or the end
/// depends on the stack's address (`Some(false)`); `Err` for a trap, a
/// containment violation or a difference between the interpreter and
/// unchecked code.
fn run_once(
    prog: &Program,
    defs: &[MapDef],
    observed: Option<&Observed>,
    unchecked: Option<&VerifiedProgram>,
    rng: &mut Rng,
) -> Result<(Option<u64>, Option<bool>), String> {
    let disasm = || bpfkit_isa::disasm::format_llvm_program(prog);
    let mut page = bpfkit_datapath::sys::LowPage::new().map_err(|e| format!("no low page: {e}"))?;
    // Headroom, metadata (0-32 bytes), packet (0-400 bytes), all random.
    let headroom = 256usize;
    let meta_len = if rng.below(3) == 0 {
        4 * rng.below(9) as usize
    } else {
        0
    };
    let len = match rng.below(4) {
        0 => rng.below(16) as usize,
        1 => 14 + rng.below(50) as usize,
        _ => rng.below(400) as usize,
    };
    let frame = page.bytes_mut();
    for b in frame.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    let base = frame.as_ptr() as u64;
    let (meta, data, end) = (
        base + (headroom - meta_len) as u64,
        base + headroom as u64,
        base + (headroom + len) as u64,
    );
    let mut ctx = Vec::with_capacity(24);
    for v in [data, end, meta, 1 + rng.below(4), rng.below(4), 0] {
        ctx.extend_from_slice(&(v as u32).to_le_bytes());
    }
    // Map values: one region each, `VALUE_STRIDE` apart.
    let mut storage: Vec<Vec<u8>> = defs
        .iter()
        .map(|d| {
            (0..d.max_entries as usize * VALUE_STRIDE)
                .map(|_| rng.next_u64() as u8)
                .collect()
        })
        .collect();
    let helper_seed = rng.next_u64();
    let present: Vec<u64> = defs.iter().map(|_| rng.next_u64()).collect();
    // The unchecked run gets the same bytes at the same addresses (so
    // that pointers the program stores compare equal), restored from here.
    let (frame_in, storage_in) = unchecked
        .is_some()
        .then(|| (frame.to_vec(), storage.clone()))
        .unzip();

    // Both engines run over these same buffers (refilled in between), so
    // the region addresses are the same for both.
    let packet = headroom - meta_len..headroom + len;
    let resolver_for = |values: Vec<Vec<u64>>| MapResolver { defs, values };

    let (result, steps) = {
        let (mut mem, ctx_addr, values, mut run_data) = setup(
            defs,
            &ctx,
            frame,
            packet.clone(),
            &mut storage,
            helper_seed,
            &present,
        );
        let resolver = resolver_for(values.clone());
        let mut interp = Interpreter::builder()
            .budget(BUDGET)
            .resolver(&resolver)
            .build(prog, &helpers(defs))
            .map_err(|e| format!("does not compile: {e}\n{}", disasm()))?;
        let layout = Layout {
            stack_top: interp.stack_range().1,
            ctx: ctx_addr,
            packet: Some([meta, data, end]),
            maps: values
                .iter()
                .enumerate()
                .map(|(i, v)| (MAP_ADDR + i as u64, v.clone()))
                .collect(),
        };
        let mut violation: Option<Violation> = None;
        let mut stray: Option<String> = None;
        let mut tracer = |pc: Pc, insn: Option<&bpfkit_isa::Insn>, regs: &[u64; 11]| {
            if let (None, Some(observed)) = (&violation, observed) {
                if let Err(v) = observed.check(pc.0, regs, &layout) {
                    violation = Some(v);
                }
            }
            if stray.is_none() {
                if let Some(e) = insn.and_then(|i| stack_stray(i, regs, layout.stack_top)) {
                    stray = Some(format!("insn {}: {e}", pc.0));
                }
            }
        };
        let result = interp.run_traced(&mut mem, &[ctx_addr], Some(&mut run_data), &mut tracer);
        let steps = interp.executed();
        if let Some(e) = stray {
            return Err(format!(
                "stack access outside the live frames: {e}\n{}",
                disasm()
            ));
        }
        if let Some(v) = violation {
            let mut s = format!("containment: {v}\nregisters:");
            for (i, r) in v.regs.iter().enumerate() {
                let _ = write!(s, " r{i}={r:#x}");
            }
            let _ = write!(
                s,
                "\nlayout: ctx={:#x} stack_top={:#x} meta={meta:#x} data={data:#x} end={end:#x}\n{}",
                layout.ctx,
                layout.stack_top,
                disasm()
            );
            return Err(s);
        }
        (result, steps)
    };
    let outcome = match &result {
        Ok(_) => Some(steps),
        Err(t) if matches!(t.kind, TrapKind::BudgetExhausted { .. }) => None,
        Err(t) => {
            return Err(format!(
                "trap {t:?} (packet {len} bytes, meta {meta_len})\n{}",
                disasm()
            ))
        }
    };
    let (Some(v), Some(frame_in), Some(storage_in)) = (unchecked, frame_in, storage_in) else {
        return Ok((outcome, None));
    };
    // The interpreter's run stayed inside the verifier's states and its
    // accesses inside their regions, so unchecked code for the same
    // program on the same inputs has no reason to stray: a difference
    // below is reported rather than a crash.
    let interp_end = (result, frame.to_vec(), storage.clone());
    // The engines' stacks lie at different addresses, and a program may
    // store a stack address (or a number made from one, or branch on one)
    // in the packet, a map value or r0. More unchecked runs on other
    // stacks tell such a difference from a real one: if one of them ends
    // otherwise than the first, or as the interpreter, the end depends on
    // the stack's address and is not comparable. (A dependence on a few
    // address bits can still escape all of them: rare, and it shows as a
    // finding that names the program, to be looked at.)
    let mut jits = Vec::new();
    let mut ends = Vec::new();
    for k in 0..STACKS {
        frame.copy_from_slice(&frame_in);
        for (buf, init) in storage.iter_mut().zip(&storage_in) {
            buf.copy_from_slice(init);
        }
        let r = {
            let (mut mem, ctx_addr, values, mut run_data) = setup(
                defs,
                &ctx,
                frame,
                packet.clone(),
                &mut storage,
                helper_seed,
                &present,
            );
            let resolver = resolver_for(values);
            let mut jit = Jit::builder()
                .budget(BUDGET)
                .resolver(&resolver)
                .build_verified(v, &helpers(defs))
                .map_err(|e| format!("unchecked JIT does not compile: {e}\n{}", disasm()))?;
            let r = jit.run_with_data(&mut mem, &[ctx_addr], &mut run_data);
            // Kept alive so that the next one gets another stack.
            jits.push(jit);
            r
        };
        ends.push((r, frame.to_vec(), storage.clone()));
        if compare(&interp_end, &ends[k], headroom).is_empty() {
            return Ok((outcome, Some(k == 0)));
        }
        if k > 0 && !compare(&ends[0], &ends[k], headroom).is_empty() {
            return Ok((outcome, Some(false)));
        }
    }
    Err(format!(
        "unchecked JIT differs from the interpreter (packet {len} bytes, meta {meta_len}): {}\n{}",
        compare(&interp_end, &ends[0], headroom).join("; "),
        disasm()
    ))
}

/// How one engine ended a run: the result, the packet page, the map
/// storage.
type End = (Result<u64, Trap>, Vec<u8>, Vec<Vec<u8>>);

/// The differences between the interpreter's end `a` and unchecked code's
/// `b` (first differing byte of the page and of each map).
fn compare(a: &End, b: &End, headroom: usize) -> Vec<String> {
    let mut diff = Vec::new();
    let same = match (&a.0, &b.0) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => x.kind == y.kind && x.pc == y.pc,
        _ => false,
    };
    if !same {
        diff.push(format!(
            "result: interpreter {:?}, unchecked JIT {:?}",
            a.0, b.0
        ));
    }
    if let Some(i) = (0..a.1.len()).find(|&i| a.1[i] != b.1[i]) {
        diff.push(format!(
            "packet page byte {} (data{:+}): interpreter {:#04x}, unchecked JIT {:#04x}",
            i,
            i as i64 - headroom as i64,
            a.1[i],
            b.1[i]
        ));
    }
    for (m, (x, y)) in a.2.iter().zip(&b.2).enumerate() {
        if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
            diff.push(format!(
                "map {m} value {} byte {}: interpreter {:#04x}, unchecked JIT {:#04x}",
                i / VALUE_STRIDE,
                i % VALUE_STRIDE,
                x[i],
                y[i]
            ));
        }
    }
    diff
}

/// The interpreter's stack is one region for all frames, so an access that
/// strays from its frame into another (or into frames not in use) does not
/// trap: report it here. An access into the stack must lie inside one
/// frame of the current call chain.
fn stack_stray(insn: &bpfkit_isa::Insn, regs: &[u64; 11], top: u64) -> Option<String> {
    use bpfkit_isa::{Insn, Size};
    let (size, base, off) = match *insn {
        Insn::Load { size, src, off, .. } => (size, src, off),
        Insn::Store { size, dst, off, .. } | Insn::Atomic { size, dst, off, .. } => {
            (size, dst, off)
        }
        _ => return None,
    };
    let n = match size {
        Size::B => 1,
        Size::H => 2,
        Size::W => 4,
        Size::DW => 8,
    };
    let frame = bpfkit_runtime::STACK_SIZE as u64;
    let bottom = top - frame * bpfkit_runtime::MAX_CALL_FRAMES as u64;
    let addr = regs[base.index()].wrapping_add(off as i64 as u64);
    if addr.wrapping_add(n) <= bottom || addr >= top {
        return None;
    }
    let depth = top.wrapping_sub(regs[10]) / frame;
    // Frame k spans [top - (k + 1) * 512, top - k * 512).
    let k = (top - 1 - addr.min(top - 1)) / frame;
    let (lo, hi) = (top - (k + 1) * frame, top - k * frame);
    if k > depth || addr < lo || addr + n > hi {
        return Some(format!(
            "{n} bytes at fp{} of frame {k}, current frame {depth}",
            addr as i64 - hi as i64
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::{Insn, Reg, Size, Src};

    fn store(off: i16, size: Size) -> Insn {
        Insn::Store {
            size,
            dst: Reg::R1,
            off,
            src: Src::Imm(0),
        }
    }

    #[test]
    fn stack_accesses_must_stay_in_a_live_frame() {
        let top = 0x10_0000u64;
        let mut regs = [0u64; 11];
        regs[10] = top;
        regs[1] = top;
        assert_eq!(stack_stray(&store(-8, Size::DW), &regs, top), None);
        assert_eq!(stack_stray(&store(-512, Size::DW), &regs, top), None);
        // Below the main frame: frame 1 is not in use.
        assert!(stack_stray(&store(-520, Size::DW), &regs, top).is_some());
        // Straddling the top of the stack, and frames 0 and 1.
        assert!(stack_stray(&store(-4, Size::DW), &regs, top).is_some());
        assert!(stack_stray(&store(-516, Size::DW), &regs, top).is_some());
        // In a callee, the caller's frame is fine.
        regs[10] = top - 512;
        assert_eq!(stack_stray(&store(-8, Size::W), &regs, top), None);
        assert_eq!(stack_stray(&store(-520, Size::W), &regs, top), None);
        // Not the stack at all.
        regs[1] = 0x5000;
        assert_eq!(stack_stray(&store(0, Size::DW), &regs, top), None);
    }
}
