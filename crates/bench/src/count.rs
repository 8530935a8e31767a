//! A step counter: a deliberately plain interpreter over [`Program`] whose
//! only job is to say how many instructions a run executes (and how many
//! bpf-to-bpf calls it makes), so the benchmark can report ns per executed
//! instruction for engines that do not count. It is slow and simple on
//! purpose; it is also a third opinion on `r0` next to rbpf and bpfkit.
//!
//! Memory model: the input buffer at [`MEM_BASE`], a 512-byte stack frame per
//! call level below [`STACK_TOP`], nothing else. Helpers, atomics, legacy
//! packet loads and symbolic `lddw` forms are out of scope (the benchmark
//! programs use none) and stop the run with an error.

use bpfkit_isa::{
    AluOp, ByteOrder, Cond, Imm64, Insn, Pc, Program, Reg, SignExtFrom, Size, Src, Width,
};
use thiserror::Error;

/// Guest address of the first byte of the input buffer.
pub const MEM_BASE: u64 = 0x1_0000_0000;
/// Guest address one past the top of the stack.
pub const STACK_TOP: u64 = 0x2_0000_0000;
/// Stack bytes per call frame, as the kernel gives each subprogram.
pub const FRAME_SIZE: usize = 512;
/// Deepest call nesting (the kernel's `MAX_CALL_FRAMES`).
pub const MAX_FRAMES: usize = 8;

/// The outcome of a counted run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Counted {
    /// The return value.
    pub r0: u64,
    /// Instructions executed, `exit` included; an `lddw` counts once.
    pub insns: u64,
    /// bpf-to-bpf calls made.
    pub calls: u64,
}

/// Why a counted run stopped early.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum StepError {
    /// An instruction outside what the counter implements.
    #[error("pc {pc}: instruction not supported by the step counter: {insn:?}")]
    Unsupported {
        /// Where.
        pc: Pc,
        /// What.
        insn: Insn,
    },
    /// A load or store outside the input buffer and the stack.
    #[error("pc {pc}: access of {size} bytes at {addr:#x} out of bounds")]
    OutOfBounds {
        /// Where.
        pc: Pc,
        /// Guest address.
        addr: u64,
        /// Access size in bytes.
        size: usize,
    },
    /// Control reached a slot that is not an instruction start or past the end.
    #[error("pc {pc}: no instruction there")]
    BadPc {
        /// The slot.
        pc: Pc,
    },
    /// Calls nested deeper than [`MAX_FRAMES`].
    #[error("pc {pc}: call stack overflow")]
    CallDepth {
        /// Where.
        pc: Pc,
    },
    /// More than the budget of instructions.
    #[error("instruction budget of {budget} exhausted")]
    Budget {
        /// The budget.
        budget: u64,
    },
}

struct Frame {
    ret: usize,
    saved: [u64; 4],
}

/// Runs `prog` with `r1` pointing at `mem`, counting executed instructions,
/// for at most `budget` instructions.
pub fn run_counted(prog: &Program, mem: &mut [u8], budget: u64) -> Result<Counted, StepError> {
    let insns = prog.insns();
    let pcs = prog.pcs();
    let mut stack = vec![0u8; FRAME_SIZE * MAX_FRAMES];
    let stack_base = STACK_TOP - stack.len() as u64;
    let mut reg = [0u64; Reg::COUNT];
    reg[1] = MEM_BASE;
    reg[10] = STACK_TOP;
    let mut frames: Vec<Frame> = Vec::new();
    let mut idx = 0usize;
    let mut count = 0u64;
    let mut calls = 0u64;

    loop {
        let Some(&insn) = insns.get(idx) else {
            return Err(StepError::BadPc {
                pc: Pc(pcs.last().map_or(0, |p| p.0 + 1)),
            });
        };
        let pc = pcs[idx];
        if count == budget {
            return Err(StepError::Budget { budget });
        }
        count += 1;
        let mut next = idx + 1;
        let jump = |off: i64| -> Result<usize, StepError> {
            let target = pc.branch(off).ok_or(StepError::BadPc { pc })?;
            prog.index_of(target).ok_or(StepError::BadPc { pc: target })
        };
        match insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let s = match src {
                    Src::Reg(r) => reg[r.index()],
                    Src::Imm(i) => i as i64 as u64,
                };
                let d = reg[dst.index()];
                reg[dst.index()] = match width {
                    Width::W64 => alu64(op, d, s),
                    Width::W32 => alu32(op, d as u32, s as u32) as u64,
                };
            }
            Insn::Neg { width, dst } => {
                let d = reg[dst.index()];
                reg[dst.index()] = match width {
                    Width::W64 => d.wrapping_neg(),
                    Width::W32 => (d as u32).wrapping_neg() as u64,
                };
            }
            Insn::Endian { order, bits, dst } => {
                let d = reg[dst.index()];
                let swap = match order {
                    ByteOrder::ToLe => false,
                    ByteOrder::ToBe | ByteOrder::Swap => true,
                };
                reg[dst.index()] = match (bits.bits(), swap) {
                    (16, false) => d as u16 as u64,
                    (16, true) => (d as u16).swap_bytes() as u64,
                    (32, false) => d as u32 as u64,
                    (32, true) => (d as u32).swap_bytes() as u64,
                    (_, false) => d,
                    (_, true) => d.swap_bytes(),
                };
            }
            Insn::LoadImm64 {
                dst,
                imm: Imm64::Value(v),
            } => reg[dst.index()] = v,
            Insn::Load {
                size,
                sign_extend,
                dst,
                src,
                off,
            } => {
                let addr = reg[src.index()].wrapping_add(off as i64 as u64);
                let bytes = access(mem, &mut stack, stack_base, addr, size, pc)?;
                let mut le = [0u8; 8];
                le[..bytes.len()].copy_from_slice(bytes);
                let v = u64::from_le_bytes(le);
                reg[dst.index()] = if sign_extend {
                    let shift = 64 - 8 * size.bytes() as u32;
                    (((v << shift) as i64) >> shift) as u64
                } else {
                    v
                };
            }
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => {
                let v = match src {
                    Src::Reg(r) => reg[r.index()],
                    Src::Imm(i) => i as i64 as u64,
                };
                let addr = reg[dst.index()].wrapping_add(off as i64 as u64);
                let bytes = access(mem, &mut stack, stack_base, addr, size, pc)?;
                let n = bytes.len();
                bytes.copy_from_slice(&v.to_le_bytes()[..n]);
            }
            Insn::Ja { off, .. } => next = jump(off as i64)?,
            Insn::Jmp {
                width,
                cond,
                dst,
                src,
                off,
            } => {
                let s = match src {
                    Src::Reg(r) => reg[r.index()],
                    Src::Imm(i) => i as i64 as u64,
                };
                let d = reg[dst.index()];
                let taken = match width {
                    Width::W64 => compare(cond, d, s),
                    Width::W32 => compare32(cond, d as u32, s as u32),
                };
                if taken {
                    next = jump(off as i64)?;
                }
            }
            Insn::CallLocal(off) => {
                if frames.len() + 1 >= MAX_FRAMES {
                    return Err(StepError::CallDepth { pc });
                }
                let target = jump(off as i64)?;
                frames.push(Frame {
                    ret: next,
                    saved: [reg[6], reg[7], reg[8], reg[9]],
                });
                reg[10] -= FRAME_SIZE as u64;
                calls += 1;
                next = target;
            }
            Insn::Exit => match frames.pop() {
                Some(f) => {
                    reg[6..10].copy_from_slice(&f.saved);
                    reg[10] += FRAME_SIZE as u64;
                    next = f.ret;
                }
                None => {
                    return Ok(Counted {
                        r0: reg[0],
                        insns: count,
                        calls,
                    })
                }
            },
            _ => return Err(StepError::Unsupported { pc, insn }),
        }
        idx = next;
    }
}

fn access<'m>(
    mem: &'m mut [u8],
    stack: &'m mut [u8],
    stack_base: u64,
    addr: u64,
    size: Size,
    pc: Pc,
) -> Result<&'m mut [u8], StepError> {
    let n = size.bytes();
    let oob = StepError::OutOfBounds { pc, addr, size: n };
    let (region, base) = if addr >= stack_base {
        (stack, stack_base)
    } else {
        (mem, MEM_BASE)
    };
    let start = addr.checked_sub(base).ok_or(oob)?;
    let start = usize::try_from(start).map_err(|_| oob)?;
    region
        .get_mut(start..start.checked_add(n).ok_or(oob)?)
        .ok_or(oob)
}

fn alu64(op: AluOp, d: u64, s: u64) -> u64 {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(0),
        AluOp::Sdiv => match s as i64 {
            0 => 0,
            s => (d as i64).wrapping_div(s) as u64,
        },
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d << (s & 63),
        AluOp::Rsh => d >> (s & 63),
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        AluOp::Smod => match s as i64 {
            0 => d,
            s => (d as i64).wrapping_rem(s) as u64,
        },
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
        AluOp::MovSx(from) => match from {
            SignExtFrom::B8 => s as i8 as i64 as u64,
            SignExtFrom::B16 => s as i16 as i64 as u64,
            SignExtFrom::B32 => s as i32 as i64 as u64,
        },
        AluOp::Arsh => ((d as i64) >> (s & 63)) as u64,
    }
}

fn alu32(op: AluOp, d: u32, s: u32) -> u32 {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(0),
        AluOp::Sdiv => match s as i32 {
            0 => 0,
            s => (d as i32).wrapping_div(s) as u32,
        },
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d << (s & 31),
        AluOp::Rsh => d >> (s & 31),
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        AluOp::Smod => match s as i32 {
            0 => d,
            s => (d as i32).wrapping_rem(s) as u32,
        },
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
        AluOp::MovSx(from) => match from {
            SignExtFrom::B8 => s as i8 as i32 as u32,
            SignExtFrom::B16 => s as i16 as i32 as u32,
            SignExtFrom::B32 => s,
        },
        AluOp::Arsh => ((d as i32) >> (s & 31)) as u32,
    }
}

fn compare(cond: Cond, d: u64, s: u64) -> bool {
    let (sd, ss) = (d as i64, s as i64);
    match cond {
        Cond::Eq => d == s,
        Cond::Gt => d > s,
        Cond::Ge => d >= s,
        Cond::Set => d & s != 0,
        Cond::Ne => d != s,
        Cond::Sgt => sd > ss,
        Cond::Sge => sd >= ss,
        Cond::Lt => d < s,
        Cond::Le => d <= s,
        Cond::Slt => sd < ss,
        Cond::Sle => sd <= ss,
    }
}

fn compare32(cond: Cond, d: u32, s: u32) -> bool {
    let (sd, ss) = (d as i32, s as i32);
    match cond {
        Cond::Eq => d == s,
        Cond::Gt => d > s,
        Cond::Ge => d >= s,
        Cond::Set => d & s != 0,
        Cond::Ne => d != s,
        Cond::Sgt => sd > ss,
        Cond::Sge => sd >= ss,
        Cond::Lt => d < s,
        Cond::Le => d <= s,
        Cond::Slt => sd < ss,
        Cond::Sle => sd <= ss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::{pkt_input, random_bytes, PROGRAMS};

    fn run(p: &str, mem: &mut [u8]) -> Counted {
        let prog = crate::programs::by_name(p).unwrap();
        let code = Program::decode(&prog.bytecode().unwrap()).unwrap();
        run_counted(&code, mem, 10_000_000).unwrap()
    }

    #[test]
    fn every_program_matches_its_reference() {
        for p in &PROGRAMS {
            let mut input = p.input();
            let want = p.reference(&input);
            let got = run(p.name, &mut input);
            assert_eq!(got.r0, want, "{}", p.name);
            assert!(got.insns > 1000, "{}: only {} insns", p.name, got.insns);
        }
    }

    #[test]
    fn odd_lengths_and_seeds_match_the_references() {
        for p in ["csum", "crc32", "calls", "tokenizer"] {
            let prog = crate::programs::by_name(p).unwrap();
            for (len, seed) in [
                (0, 0),
                (1, 5),
                (2, 0),
                (3, 0xffff_ffff),
                (7, 1),
                (1499, 9),
                (1500, 3),
            ] {
                let mut input = pkt_input(&random_bytes(len, len as u64 + 1), seed);
                let want = prog.reference(&input);
                assert_eq!(run(p, &mut input).r0, want, "{p} len {len}");
            }
            // A length field beyond MAX_PKT is clamped by program and reference.
            let mut input = pkt_input(&random_bytes(1500, 77), 0);
            input[0..4].copy_from_slice(&100_000u32.to_le_bytes());
            let want = prog.reference(&input);
            assert_eq!(run(p, &mut input).r0, want, "{p} clamped");
        }
    }

    #[test]
    fn calls_are_counted() {
        let mut input = crate::programs::by_name("calls").unwrap().input();
        let c = run("calls", &mut input);
        // 375 blocks x (load_le32, hash_block, scramble, rotl32 x2), then
        // hash_tail and fmix32 (the 1500-byte packet has no tail bytes).
        assert_eq!(c.calls, 375 * 5 + 2);
    }

    #[test]
    fn out_of_bounds_is_an_error() {
        // r0 = *(u64 *)(r1 + 8); exit  over a 4-byte buffer
        let code = [0x79, 0x10, 8, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let prog = Program::decode(&code).unwrap();
        let err = run_counted(&prog, &mut [0; 4], 100).unwrap_err();
        assert_eq!(
            err,
            StepError::OutOfBounds {
                pc: Pc(0),
                addr: MEM_BASE + 8,
                size: 8
            }
        );
    }

    #[test]
    fn budget_stops_infinite_loops() {
        // l: goto l-ish: r0 += 1; goto -2
        let code = [
            0x07, 0, 0, 0, 1, 0, 0, 0, 0x05, 0, 0xfe, 0xff, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0,
        ];
        let prog = Program::decode(&code).unwrap();
        assert_eq!(
            run_counted(&prog, &mut [], 1000),
            Err(StepError::Budget { budget: 1000 })
        );
    }
}
