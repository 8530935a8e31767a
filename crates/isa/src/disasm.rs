//! [`Insn`] to text.
//!
//! - [`format_llvm`]: the kernel/llvm-objdump syntax, character for
//!   character what `llvm-objdump-19 -d` prints for the instruction
//!   (`r0 = *(u32 *)(r1 + 0x4)`, `if w1 s> -0x5 goto +0x3`), and
//!   [`format_llvm_program`], a whole program with labels, which
//!   [`crate::asm::Syntax::Llvm`] reads back to the same bytes.
//! - [`format_ubpf`]: the uBPF / bpf_conformance syntax that
//!   [`crate::asm::Syntax::Ubpf`] reads (`ldxw %r0, [%r1+4]`, `ja +3`).
//!
//! Branch targets are printed as `+N`/`-N`, counted in slots from the next
//! instruction, exactly as encoded, so the text assembles back to the same
//! bytes.
//!
//! ## Where the llvm syntax differs from plain `llvm-objdump -d`
//!
//! Default `llvm-objdump-19 -d` (no `--mattr`) cannot print 32-bit atomics
//! other than `add` (`<unknown>`), and prints a 32-bit `fetch add` like a
//! plain add. [`format_llvm`] prints them as llvm-objdump does with
//! `--mattr=+alu32`: `lock *(u32 *)(r1 + 0x0) |= w2`,
//! `w2 = atomic_fetch_add((u32 *)(r1 + 0x0), w2)`, `w2 = xchg32_32(r1 + 0x0, w2)`,
//! `w0 = cmpxchg32_32(r1 + 0x0, w0, w2)`.
//!
//! Where llvm's text drops information, a suffix keeps it (these forms never
//! occur in clang output): `ld_pseudo` with a nonzero second immediate gets
//! it as a fourth operand, and `skb[rN]` with a nonzero immediate is
//! printed `skb[rN + 0xc]`.

use crate::codec::Program;
use crate::insn::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// `0x1f`, `-0x1f`: llvm's signed hexadecimal immediates.
fn hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// `r3` or `w3`.
fn reg_w(r: Reg, width: Width) -> String {
    match width {
        Width::W32 => format!("w{}", r.num()),
        Width::W64 => format!("r{}", r.num()),
    }
}

fn size_type(size: Size, signed: bool) -> String {
    format!("{}{}", if signed { 's' } else { 'u' }, size.bytes() * 8)
}

/// `(r1 + 0x4)` / `(r10 - 0x8)`.
fn llvm_mem(base: Reg, off: i16) -> String {
    if off < 0 {
        format!("{base} - {:#x}", (off as i32).unsigned_abs())
    } else {
        format!("{base} + {off:#x}")
    }
}

/// Formats one instruction exactly as `llvm-objdump-19 -d` prints it
/// (without the `<label>` that objdump appends to jump targets).
///
/// ```
/// use bpfkit_isa::{disasm::format_llvm, Insn, Reg, Size};
/// let insn = Insn::Load { size: Size::W, sign_extend: false, dst: Reg::R0, src: Reg::R1, off: 4 };
/// assert_eq!(format_llvm(&insn), "r0 = *(u32 *)(r1 + 0x4)");
/// ```
pub fn format_llvm(insn: &Insn) -> String {
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let d = reg_w(dst, width);
            let s = match src {
                Src::Reg(r) => reg_w(r, width),
                Src::Imm(i) => hex(i as i64),
            };
            let op = match op {
                AluOp::Add => "+=",
                AluOp::Sub => "-=",
                AluOp::Mul => "*=",
                AluOp::Div => "/=",
                AluOp::Sdiv => "s/=",
                AluOp::Or => "|=",
                AluOp::And => "&=",
                AluOp::Lsh => "<<=",
                AluOp::Rsh => ">>=",
                AluOp::Mod => "%=",
                AluOp::Smod => "s%=",
                AluOp::Xor => "^=",
                AluOp::Mov => "=",
                AluOp::Arsh => "s>>=",
                AluOp::MovSx(from) => return format!("{d} = (s{}){s}", from.bits()),
            };
            format!("{d} {op} {s}")
        }
        Insn::Neg { width, dst } => {
            let d = reg_w(dst, width);
            format!("{d} = -{d}")
        }
        Insn::Endian { order, bits, dst } => {
            let name = match order {
                ByteOrder::ToLe => "le",
                ByteOrder::ToBe => "be",
                ByteOrder::Swap => "bswap",
            };
            format!("{dst} = {name}{} {dst}", bits.bits())
        }
        Insn::LoadImm64 { dst, imm } => {
            let (src, lo, hi) = match imm {
                Imm64::Value(v) => return format!("{dst} = {} ll", hex(v as i64)),
                Imm64::MapFd(fd) => (1, fd, 0),
                Imm64::MapValue { fd, off } => (2, fd, off as i32),
                Imm64::BtfId { id, btf_fd } => (3, id, btf_fd),
                Imm64::Func(off) => (4, off, 0),
                Imm64::MapIdx(idx) => (5, idx, 0),
                Imm64::MapIdxValue { idx, off } => (6, idx, off as i32),
            };
            let mut s = format!("ld_pseudo\t{dst}, {src:#x}, {}", hex(lo as i64));
            if hi != 0 {
                let _ = write!(s, ", {}", hex(hi as i64));
            }
            s
        }
        Insn::Load {
            size,
            sign_extend,
            dst,
            src,
            off,
        } => format!(
            "{dst} = *({} *)({})",
            size_type(size, sign_extend),
            llvm_mem(src, off)
        ),
        Insn::Store {
            size,
            dst,
            off,
            src,
        } => {
            let v = match src {
                Src::Reg(r) => r.to_string(),
                Src::Imm(i) => hex(i as i64),
            };
            format!(
                "*({} *)({}) = {v}",
                size_type(size, false),
                llvm_mem(dst, off)
            )
        }
        Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off,
        } => {
            let width = if size == Size::W {
                Width::W32
            } else {
                Width::W64
            };
            let s = reg_w(src, width);
            let ty = size_type(size, false);
            let m = llvm_mem(dst, off);
            let name = match op {
                AtomicOp::Add => "add",
                AtomicOp::Or => "or",
                AtomicOp::And => "and",
                AtomicOp::Xor => "xor",
                AtomicOp::Xchg => {
                    let f = if width == Width::W32 {
                        "xchg32_32"
                    } else {
                        "xchg_64"
                    };
                    return format!("{s} = {f}({m}, {s})");
                }
                AtomicOp::Cmpxchg => {
                    let f = if width == Width::W32 {
                        "cmpxchg32_32"
                    } else {
                        "cmpxchg_64"
                    };
                    let r0 = reg_w(Reg::R0, width);
                    return format!("{r0} = {f}({m}, {r0}, {s})");
                }
            };
            if fetch {
                format!("{s} = atomic_fetch_{name}(({ty} *)({m}), {s})")
            } else {
                let sym = match op {
                    AtomicOp::Add => "+=",
                    AtomicOp::Or => "|=",
                    AtomicOp::And => "&=",
                    _ => "^=",
                };
                format!("lock *({ty} *)({m}) {sym} {s}")
            }
        }
        Insn::LoadAbs { size, imm } => {
            format!(
                "r0 = *({} *)skb[{}]",
                size_type(size, false),
                hex(imm as i64)
            )
        }
        Insn::LoadInd { size, src, imm } => {
            if imm == 0 {
                format!("r0 = *({} *)skb[{src}]", size_type(size, false))
            } else {
                let (sign, mag) = if imm < 0 {
                    ('-', imm.unsigned_abs())
                } else {
                    ('+', imm as u32)
                };
                format!(
                    "r0 = *({} *)skb[{src} {sign} {mag:#x}]",
                    size_type(size, false)
                )
            }
        }
        Insn::Ja { off, long } => {
            format!(
                "{} {}",
                if long { "gotol" } else { "goto" },
                rel_hex(off as i64)
            )
        }
        Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off,
        } => {
            let s = match src {
                Src::Reg(r) => reg_w(r, width),
                Src::Imm(i) => hex(i as i64),
            };
            format!(
                "if {} {} {s} goto {}",
                reg_w(dst, width),
                cond_symbol(cond),
                rel_hex(off as i64)
            )
        }
        Insn::Call(h) => format!("call {}", hex(h.0 as i32 as i64)),
        Insn::CallLocal(off) => format!("call {}", hex(off as i64)),
        Insn::CallKfunc { btf_id, .. } => format!("call {}", hex(btf_id as i64)),
        Insn::Callx(r) => format!("callx {r}"),
        Insn::Exit => "exit".to_string(),
    }
}

/// The comparison operator llvm prints for a condition.
pub fn cond_symbol(cond: Cond) -> &'static str {
    match cond {
        Cond::Eq => "==",
        Cond::Gt => ">",
        Cond::Ge => ">=",
        Cond::Set => "&",
        Cond::Ne => "!=",
        Cond::Sgt => "s>",
        Cond::Sge => "s>=",
        Cond::Lt => "<",
        Cond::Le => "<=",
        Cond::Slt => "s<",
        Cond::Sle => "s<=",
    }
}

/// `+0x3` / `-0x3`.
fn rel_hex(off: i64) -> String {
    if off < 0 {
        format!("-{:#x}", off.unsigned_abs())
    } else {
        format!("+{off:#x}")
    }
}

/// The label name [`format_llvm_program`] gives the instruction at `pc`.
pub fn default_label(pc: Pc) -> String {
    format!("LBB_{}", pc.0)
}

/// Formats a whole program in the llvm syntax: one instruction a line,
/// a `LBB_<pc>:` line before every jump target, and targets annotated
/// `<LBB_<pc>>` as llvm-objdump does. A local call is annotated with its
/// target label and a kfunc call with `<kfunc>` (or `<kfunc 0xN>` for a
/// nonzero module index), which is how [`crate::asm::Syntax::Llvm`] tells
/// them from helper calls: in plain llvm text all three read `call N`.
///
/// ```
/// use bpfkit_isa::{asm::{assemble, Syntax}, disasm::format_llvm_program, Program};
/// let prog = Program::decode(&[0x05, 0, 1, 0, 0, 0, 0, 0, 0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]).unwrap();
/// let text = format_llvm_program(&prog);
/// assert_eq!(text, "\tgoto +0x1 <LBB_2>\n\tr0 = 0x1\nLBB_2:\n\texit\n");
/// let back = assemble(&text, Syntax::Llvm).unwrap();
/// assert_eq!(Program::from_insns(back).unwrap(), prog);
/// ```
pub fn format_llvm_program(prog: &Program) -> String {
    let targets: BTreeSet<Pc> = prog
        .iter()
        .filter_map(|(pc, insn)| match insn {
            Insn::LoadImm64 { .. } => None,
            _ => insn.branch_target(pc),
        })
        .collect();
    let mut out = String::new();
    for (pc, insn) in prog.iter() {
        if targets.contains(&pc) {
            let _ = writeln!(out, "{}:", default_label(pc));
        }
        out.push('\t');
        out.push_str(&format_llvm(insn));
        match *insn {
            Insn::CallKfunc { off, .. } => {
                if off == 0 {
                    out.push_str(" <kfunc>");
                } else {
                    let _ = write!(out, " <kfunc {}>", hex(off as i64));
                }
            }
            Insn::LoadImm64 { .. } => {}
            _ => {
                if let Some(t) = insn.branch_target(pc) {
                    let _ = write!(out, " <{}>", default_label(t));
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Formats one instruction in the uBPF syntax.
///
/// Forms uBPF has no syntax for use the extensions that
/// [`crate::asm::Syntax::Ubpf`] accepts (`lddw %r1, map_fd 3`,
/// `call runtime 7, 1`).
///
/// ```
/// use bpfkit_isa::{disasm::format_ubpf, Insn, Reg, Size};
/// let insn = Insn::Load { size: Size::W, sign_extend: false, dst: Reg::R0, src: Reg::R1, off: 4 };
/// assert_eq!(format_ubpf(&insn), "ldxw %r0, [%r1+4]");
/// ```
pub fn format_ubpf(insn: &Insn) -> String {
    let mut s = String::new();
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let name = match op {
                AluOp::Add => "add",
                AluOp::Sub => "sub",
                AluOp::Mul => "mul",
                AluOp::Div => "div",
                AluOp::Sdiv => "sdiv",
                AluOp::Or => "or",
                AluOp::And => "and",
                AluOp::Lsh => "lsh",
                AluOp::Rsh => "rsh",
                AluOp::Mod => "mod",
                AluOp::Smod => "smod",
                AluOp::Xor => "xor",
                AluOp::Mov => "mov",
                AluOp::Arsh => "arsh",
                AluOp::MovSx(from) => {
                    let w = if width == Width::W32 { 32 } else { 64 };
                    let _ = write!(s, "movsx{}{} %{}, {}", from.bits(), w, dst, ubpf_src(src));
                    return s;
                }
            };
            let _ = write!(s, "{name}{} %{dst}, {}", suffix32(width), ubpf_src(src));
        }
        Insn::Neg { width, dst } => {
            let _ = write!(s, "neg{} %{dst}", suffix32(width));
        }
        Insn::Endian { order, bits, dst } => {
            let name = match order {
                ByteOrder::ToLe => "le",
                ByteOrder::ToBe => "be",
                ByteOrder::Swap => "bswap",
            };
            let _ = write!(s, "{name}{} %{dst}", bits.bits());
        }
        Insn::LoadImm64 { dst, imm } => {
            let _ = match imm {
                Imm64::Value(v) => write!(s, "lddw %{dst}, {v:#x}"),
                Imm64::MapFd(fd) => write!(s, "lddw %{dst}, map_fd {fd}"),
                Imm64::MapValue { fd, off } => {
                    write!(s, "lddw %{dst}, map_value {fd}, {off:#x}")
                }
                Imm64::BtfId { id, btf_fd } => write!(s, "lddw %{dst}, btf_id {id}, {btf_fd}"),
                Imm64::Func(off) => write!(s, "lddw %{dst}, func {}", rel(off as i64)),
                Imm64::MapIdx(idx) => write!(s, "lddw %{dst}, map_idx {idx}"),
                Imm64::MapIdxValue { idx, off } => {
                    write!(s, "lddw %{dst}, map_idx_value {idx}, {off:#x}")
                }
            };
        }
        Insn::Load {
            size,
            sign_extend,
            dst,
            src,
            off,
        } => {
            let x = if sign_extend { "ldxs" } else { "ldx" };
            let _ = write!(s, "{x}{} %{dst}, {}", size_suffix(size), ubpf_mem(src, off));
        }
        Insn::Store {
            size,
            dst,
            off,
            src,
        } => {
            let _ = match src {
                Src::Imm(imm) => write!(s, "st{} {}, {imm}", size_suffix(size), ubpf_mem(dst, off)),
                Src::Reg(r) => write!(s, "stx{} {}, %{r}", size_suffix(size), ubpf_mem(dst, off)),
            };
        }
        Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off,
        } => {
            let name = match op {
                AtomicOp::Add => "add",
                AtomicOp::Or => "or",
                AtomicOp::And => "and",
                AtomicOp::Xor => "xor",
                AtomicOp::Xchg => "xchg",
                AtomicOp::Cmpxchg => "cmpxchg",
            };
            let f = if fetch && !matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg) {
                "fetch "
            } else {
                ""
            };
            let w = if size == Size::W { "32" } else { "" };
            let _ = write!(s, "lock {f}{name}{w} {}, %{src}", ubpf_mem(dst, off));
        }
        Insn::LoadAbs { size, imm } => {
            let _ = write!(s, "ldabs{} {imm}", size_suffix(size));
        }
        Insn::LoadInd { size, src, imm } => {
            let _ = write!(s, "ldind{} %{src}, {imm}", size_suffix(size));
        }
        Insn::Ja { off, long } => {
            let _ = write!(s, "ja{} {}", if long { "32" } else { "" }, rel(off as i64));
        }
        Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off,
        } => {
            let name = match cond {
                Cond::Eq => "jeq",
                Cond::Gt => "jgt",
                Cond::Ge => "jge",
                Cond::Set => "jset",
                Cond::Ne => "jne",
                Cond::Sgt => "jsgt",
                Cond::Sge => "jsge",
                Cond::Lt => "jlt",
                Cond::Le => "jle",
                Cond::Slt => "jslt",
                Cond::Sle => "jsle",
            };
            let _ = write!(
                s,
                "{name}{} %{dst}, {}, {}",
                suffix32(width),
                ubpf_src(src),
                rel(off as i64)
            );
        }
        Insn::Call(h) => {
            let _ = if h.0 > i32::MAX as u32 {
                write!(s, "call {:#x}", h.0)
            } else {
                write!(s, "call {}", h.0)
            };
        }
        Insn::CallLocal(off) => {
            let _ = write!(s, "call local {}", rel(off as i64));
        }
        Insn::CallKfunc { btf_id, off } => {
            let _ = if off == 0 {
                write!(s, "call runtime {btf_id}")
            } else {
                write!(s, "call runtime {btf_id}, {off}")
            };
        }
        Insn::Callx(r) => {
            let _ = write!(s, "call %{r}");
        }
        Insn::Exit => s.push_str("exit"),
    }
    s
}

fn suffix32(width: Width) -> &'static str {
    match width {
        Width::W32 => "32",
        Width::W64 => "",
    }
}

fn size_suffix(size: Size) -> &'static str {
    match size {
        Size::B => "b",
        Size::H => "h",
        Size::W => "w",
        Size::DW => "dw",
    }
}

fn ubpf_src(src: Src) -> String {
    match src {
        Src::Reg(r) => format!("%{r}"),
        Src::Imm(i) => i.to_string(),
    }
}

fn ubpf_mem(base: Reg, off: i16) -> String {
    match off {
        0 => format!("[%{base}]"),
        o if o < 0 => format!("[%{base}-{}]", -(o as i32)),
        o => format!("[%{base}+{o}]"),
    }
}

/// `+N` / `-N`.
fn rel(off: i64) -> String {
    if off < 0 {
        off.to_string()
    } else {
        format!("+{off}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as llvm-objdump-19 prints them (with `--mattr=+alu32` for the
    /// 32-bit atomics), with their bytes.
    #[test]
    fn llvm_forms() {
        let cases: &[([u8; 8], &str)] = &[
            ([0x61, 0x12, 4, 0, 0, 0, 0, 0], "r2 = *(u32 *)(r1 + 0x4)"),
            (
                [0x61, 0x21, 0, 0x80, 0, 0, 0, 0],
                "r1 = *(u32 *)(r2 - 0x8000)",
            ),
            ([0x2d, 0x23, 0x36, 0, 0, 0, 0, 0], "if r3 > r2 goto +0x36"),
            (
                [0x15, 0x01, 0xff, 0x7f, 0, 0, 0, 0x80],
                "if r1 == -0x80000000 goto +0x7fff",
            ),
            ([0xb4, 0x01, 0, 0, 0, 0, 0, 0x80], "w1 = -0x80000000"),
            (
                [0x62, 0x01, 0x08, 0, 0xf9, 0xff, 0xff, 0xff],
                "*(u32 *)(r1 + 0x8) = -0x7",
            ),
            ([0xc4, 0x01, 0, 0, 0xfb, 0xff, 0xff, 0xff], "w1 s>>= -0x5"),
            ([0x3c, 0x21, 1, 0, 0, 0, 0, 0], "w1 s/= w2"),
            ([0xbf, 0x21, 32, 0, 0, 0, 0, 0], "r1 = (s32)r2"),
            ([0x84, 0x01, 0, 0, 0, 0, 0, 0], "w1 = -w1"),
            ([0xd4, 0x01, 0, 0, 16, 0, 0, 0], "r1 = le16 r1"),
            ([0xd7, 0x01, 0, 0, 32, 0, 0, 0], "r1 = bswap32 r1"),
            ([0x91, 0x21, 4, 0, 0, 0, 0, 0], "r1 = *(s8 *)(r2 + 0x4)"),
            (
                [0xc3, 0x21, 0xf8, 0xff, 0x00, 0, 0, 0],
                "lock *(u32 *)(r1 - 0x8) += w2",
            ),
            (
                [0xc3, 0x21, 0xf8, 0xff, 0x01, 0, 0, 0],
                "w2 = atomic_fetch_add((u32 *)(r1 - 0x8), w2)",
            ),
            (
                [0xc3, 0x21, 0xf8, 0xff, 0xe1, 0, 0, 0],
                "w2 = xchg32_32(r1 - 0x8, w2)",
            ),
            (
                [0xc3, 0x21, 0xf8, 0xff, 0xf1, 0, 0, 0],
                "w0 = cmpxchg32_32(r1 - 0x8, w0, w2)",
            ),
            (
                [0xdb, 0x21, 0xf8, 0xff, 0x51, 0, 0, 0],
                "r2 = atomic_fetch_and((u64 *)(r1 - 0x8), r2)",
            ),
            (
                [0xdb, 0x21, 0xf8, 0xff, 0xf1, 0, 0, 0],
                "r0 = cmpxchg_64(r1 - 0x8, r0, r2)",
            ),
            ([0x40, 0x30, 0, 0, 0, 0, 0, 0], "r0 = *(u32 *)skb[r3]"),
            ([0x28, 0, 0, 0, 12, 0, 0, 0], "r0 = *(u16 *)skb[0xc]"),
            ([0x06, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff], "gotol -0x2"),
            ([0x05, 0, 0, 0x80, 0, 0, 0, 0], "goto -0x8000"),
            ([0x85, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], "call -0x1"),
            ([0x85, 0x10, 0, 0, 0xfd, 0xff, 0xff, 0xff], "call -0x3"),
            ([0x85, 0x20, 3, 0, 0xd2, 0x04, 0, 0], "call 0x4d2"),
            ([0x8d, 0x02, 0, 0, 0, 0, 0, 0], "callx r2"),
            ([0x95, 0, 0, 0, 0, 0, 0, 0], "exit"),
        ];
        for (bytes, text) in cases {
            let insn = crate::decode_one(crate::RawInsn::from_bytes(*bytes), None).unwrap();
            assert_eq!(format_llvm(&insn), *text);
        }
        let lddw = |src: u8, lo: i32, hi: i32| {
            let raw = crate::RawInsn::new(0x18, 1, src, 0, lo);
            let next = crate::RawInsn::new(0, 0, 0, 0, hi);
            format_llvm(&crate::decode_one(raw, Some(next)).unwrap())
        };
        assert_eq!(
            lddw(0, 0x55667788, 0x11223344),
            "r1 = 0x1122334455667788 ll"
        );
        assert_eq!(lddw(0, 0, i32::MIN), "r1 = -0x8000000000000000 ll");
        assert_eq!(lddw(1, 3, 0), "ld_pseudo\tr1, 0x1, 0x3");
        assert_eq!(lddw(2, 3, 0), "ld_pseudo\tr1, 0x2, 0x3");
        // llvm drops the second immediate; we keep it (module docs).
        assert_eq!(lddw(2, 3, 8), "ld_pseudo\tr1, 0x2, 0x3, 0x8");
    }

    /// Local and kfunc calls, which plain llvm text cannot tell from helper
    /// calls, survive a program listing.
    #[test]
    fn program_listing_keeps_call_kinds() {
        use crate::asm::{assemble, Syntax};
        let insns = vec![
            Insn::CallLocal(2),
            Insn::CallKfunc { btf_id: 77, off: 0 },
            Insn::CallKfunc { btf_id: 78, off: 3 },
            Insn::Call(HelperId(1)),
            Insn::Exit,
        ];
        let prog = Program::from_insns(insns.clone()).unwrap();
        let text = format_llvm_program(&prog);
        assert_eq!(
            text,
            "\tcall 0x2 <LBB_3>\n\tcall 0x4d <kfunc>\n\tcall 0x4e <kfunc 0x3>\nLBB_3:\n\tcall 0x1\n\texit\n"
        );
        assert_eq!(assemble(&text, Syntax::Llvm).unwrap(), insns);
    }

    #[test]
    fn ubpf_forms() {
        let cases: &[(Insn, &str)] = &[
            (
                Insn::Alu {
                    width: Width::W32,
                    op: AluOp::MovSx(SignExtFrom::B16),
                    dst: Reg::R4,
                    src: Src::Reg(Reg::R3),
                },
                "movsx1632 %r4, %r3",
            ),
            (
                Insn::Store {
                    size: Size::H,
                    dst: Reg::R10,
                    off: -2,
                    src: Src::Imm(-5),
                },
                "sth [%r10-2], -5",
            ),
            (
                Insn::Atomic {
                    size: Size::W,
                    op: AtomicOp::Or,
                    fetch: true,
                    dst: Reg::R1,
                    src: Reg::R2,
                    off: 8,
                },
                "lock fetch or32 [%r1+8], %r2",
            ),
            (
                Insn::Atomic {
                    size: Size::DW,
                    op: AtomicOp::Cmpxchg,
                    fetch: true,
                    dst: Reg::R1,
                    src: Reg::R2,
                    off: 0,
                },
                "lock cmpxchg [%r1], %r2",
            ),
            (
                Insn::Jmp {
                    width: Width::W32,
                    cond: Cond::Sle,
                    dst: Reg::R1,
                    src: Src::Imm(-1),
                    off: -3,
                },
                "jsle32 %r1, -1, -3",
            ),
            (Insn::Ja { off: 2, long: true }, "ja32 +2"),
            (Insn::Callx(Reg::R2), "call %r2"),
            (Insn::CallLocal(-7), "call local -7"),
            (
                Insn::LoadImm64 {
                    dst: Reg::R1,
                    imm: Imm64::Value(0x1122334455667788),
                },
                "lddw %r1, 0x1122334455667788",
            ),
        ];
        for (insn, text) in cases {
            assert_eq!(format_ubpf(insn), *text);
        }
    }
}
