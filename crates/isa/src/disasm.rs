//! [`Insn`] to text.
//!
//! - [`format_ubpf`]: the uBPF / bpf_conformance syntax that
//!   [`crate::asm::Syntax::Ubpf`] reads (`ldxw %r0, [%r1+4]`, `ja +3`).
//!
//! Branch targets are printed as `+N`/`-N`, counted in slots from the next
//! instruction, exactly as encoded, so the text assembles back to the same
//! bytes.

use crate::insn::*;
use std::fmt::Write as _;

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
