//! The uBPF / bpf_conformance assembly syntax, one instruction a line.
//!
//! Besides the mnemonics of the conformance suite, the parser accepts a few
//! forms so that every [`Insn`] can be written (and so that
//! [`crate::disasm::format_ubpf`] output always assembles again):
//! a `64` suffix on ALU, `neg` and jump mnemonics; `ldabs{b,h,w} imm` and
//! `ldind{b,h,w} %src, imm` (uBPF's legacy packet loads); `call runtime N`
//! with an optional `, off`; and the pseudo `lddw` sources
//! `lddw %rD, map_fd N`, `map_value N, OFF`, `btf_id N, FD`, `func T`,
//! `map_idx N`, `map_idx_value N, OFF`.

use super::{parse_imm32, parse_imm64, parse_off16, parse_target, split_operands, Parsed, Target};
use crate::insn::*;

type Res<T> = Result<T, String>;

/// Parses one instruction line (comment and labels already removed).
pub(super) fn parse_line(line: &str) -> Res<Parsed> {
    let (mnemonic, rest) = split_word(line);
    let ops = split_operands(rest);
    let m = mnemonic.to_ascii_lowercase();
    let m = m.as_str();
    let want = |n: usize| -> Res<()> {
        if ops.len() == n {
            Ok(())
        } else {
            Err(format!(
                "'{mnemonic}' expects {n} operand{}, found {}",
                if n == 1 { "" } else { "s" },
                ops.len()
            ))
        }
    };

    if m == "exit" {
        want(0)?;
        return Ok(Parsed::plain(Insn::Exit));
    }
    if m == "lock" {
        return parse_atomic(rest);
    }
    if m == "call" {
        return parse_call(rest);
    }
    if m == "ja" || m == "ja32" {
        want(1)?;
        return Ok(Parsed {
            insn: Insn::Ja {
                off: 0,
                long: m == "ja32",
            },
            target: Some(parse_target(ops[0])?),
        });
    }
    if m == "lddw" {
        return parse_lddw(&ops, want);
    }
    if let Some(insn) = parse_endian(m) {
        want(1)?;
        let dst = reg(ops[0])?;
        return Ok(Parsed::plain(match insn {
            Insn::Endian { order, bits, .. } => Insn::Endian { order, bits, dst },
            other => other,
        }));
    }
    if let Some((size, sign_extend)) =
        mem_suffix(m, "ldxs", true).or_else(|| mem_suffix(m, "ldx", false))
    {
        want(2)?;
        let dst = reg(ops[0])?;
        let (src, off) = mem(ops[1])?;
        return Ok(Parsed::plain(Insn::Load {
            size,
            sign_extend,
            dst,
            src,
            off,
        }));
    }
    if let Some((size, _)) = mem_suffix(m, "stx", false) {
        want(2)?;
        let (dst, off) = mem(ops[0])?;
        let src = Src::Reg(reg(ops[1])?);
        return Ok(Parsed::plain(Insn::Store {
            size,
            dst,
            off,
            src,
        }));
    }
    if let Some((size, _)) = mem_suffix(m, "st", false) {
        want(2)?;
        let (dst, off) = mem(ops[0])?;
        let src = Src::Imm(parse_imm32(ops[1])?);
        return Ok(Parsed::plain(Insn::Store {
            size,
            dst,
            off,
            src,
        }));
    }
    if let Some((size, _)) = mem_suffix(m, "ldabs", false).filter(|(s, _)| *s != Size::DW) {
        want(1)?;
        let imm = parse_imm32(ops[0])?;
        return Ok(Parsed::plain(Insn::LoadAbs { size, imm }));
    }
    if let Some((size, _)) = mem_suffix(m, "ldind", false).filter(|(s, _)| *s != Size::DW) {
        want(2)?;
        let src = reg(ops[0])?;
        let imm = parse_imm32(ops[1])?;
        return Ok(Parsed::plain(Insn::LoadInd { size, src, imm }));
    }
    if let Some(rest) = m.strip_prefix("movsx") {
        let (from, width) = match rest {
            "832" => (SignExtFrom::B8, Width::W32),
            "1632" => (SignExtFrom::B16, Width::W32),
            "864" => (SignExtFrom::B8, Width::W64),
            "1664" => (SignExtFrom::B16, Width::W64),
            "3264" => (SignExtFrom::B32, Width::W64),
            _ => return Err(format!("unknown mnemonic '{mnemonic}'")),
        };
        want(2)?;
        return Ok(Parsed::plain(Insn::Alu {
            width,
            op: AluOp::MovSx(from),
            dst: reg(ops[0])?,
            src: Src::Reg(reg(ops[1])?),
        }));
    }
    let (base, width) = split_width(m);
    if base == "neg" {
        want(1)?;
        return Ok(Parsed::plain(Insn::Neg {
            width,
            dst: reg(ops[0])?,
        }));
    }
    if let Some(op) = alu_op(base) {
        want(2)?;
        return Ok(Parsed::plain(Insn::Alu {
            width,
            op,
            dst: reg(ops[0])?,
            src: src_operand(ops[1])?,
        }));
    }
    if let Some(cond) = jmp_cond(base) {
        want(3)?;
        return Ok(Parsed {
            insn: Insn::Jmp {
                width,
                cond,
                dst: reg(ops[0])?,
                src: src_operand(ops[1])?,
                off: 0,
            },
            target: Some(parse_target(ops[2])?),
        });
    }
    Err(format!("unknown mnemonic '{mnemonic}'"))
}

/// Splits the first whitespace-delimited word off.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// `add32` -> (`add`, W32); `add64` or `add` -> (`add`, W64).
fn split_width(m: &str) -> (&str, Width) {
    if let Some(b) = m.strip_suffix("32") {
        (b, Width::W32)
    } else if let Some(b) = m.strip_suffix("64") {
        (b, Width::W64)
    } else {
        (m, Width::W64)
    }
}

fn alu_op(base: &str) -> Option<AluOp> {
    Some(match base {
        "add" => AluOp::Add,
        "sub" => AluOp::Sub,
        "mul" => AluOp::Mul,
        "div" => AluOp::Div,
        "sdiv" => AluOp::Sdiv,
        "mod" => AluOp::Mod,
        "smod" => AluOp::Smod,
        "or" => AluOp::Or,
        "and" => AluOp::And,
        "xor" => AluOp::Xor,
        "lsh" => AluOp::Lsh,
        "rsh" => AluOp::Rsh,
        "arsh" => AluOp::Arsh,
        "mov" => AluOp::Mov,
        _ => return None,
    })
}

fn jmp_cond(base: &str) -> Option<Cond> {
    Some(match base {
        "jeq" => Cond::Eq,
        "jgt" => Cond::Gt,
        "jge" => Cond::Ge,
        "jset" => Cond::Set,
        "jne" => Cond::Ne,
        "jsgt" => Cond::Sgt,
        "jsge" => Cond::Sge,
        "jlt" => Cond::Lt,
        "jle" => Cond::Le,
        "jslt" => Cond::Slt,
        "jsle" => Cond::Sle,
        _ => return None,
    })
}

fn parse_endian(m: &str) -> Option<Insn> {
    let (order, bits) = if let Some(b) = m.strip_prefix("le") {
        (ByteOrder::ToLe, b)
    } else if let Some(b) = m.strip_prefix("be") {
        (ByteOrder::ToBe, b)
    } else if let Some(b) = m.strip_prefix("bswap").or_else(|| m.strip_prefix("swap")) {
        (ByteOrder::Swap, b)
    } else {
        return None;
    };
    let bits = match bits {
        "16" => SwapBits::B16,
        "32" => SwapBits::B32,
        "64" => SwapBits::B64,
        _ => return None,
    };
    Some(Insn::Endian {
        order,
        bits,
        dst: Reg::R0,
    })
}

/// `ldxdw` with prefix `ldx` -> DW. Sign-extending loads have no `dw`.
fn mem_suffix(m: &str, prefix: &str, sign_extend: bool) -> Option<(Size, bool)> {
    let size = match m.strip_prefix(prefix)? {
        "b" => Size::B,
        "h" => Size::H,
        "w" => Size::W,
        "dw" if !sign_extend => Size::DW,
        _ => return None,
    };
    Some((size, sign_extend))
}

/// `%rN` (also accepted without the `%`).
pub(super) fn reg(s: &str) -> Res<Reg> {
    let t = s.trim();
    let n = t.strip_prefix('%').unwrap_or(t);
    n.strip_prefix('r')
        .filter(|d| !d.is_empty() && d.len() <= 2 && d.chars().all(|c| c.is_ascii_digit()))
        .and_then(|d| d.parse::<u8>().ok())
        .and_then(Reg::new)
        .ok_or_else(|| format!("invalid register '{t}'"))
}

fn src_operand(s: &str) -> Res<Src> {
    let t = s.trim();
    if t.starts_with('%') || t.starts_with('r') {
        Ok(Src::Reg(reg(t)?))
    } else {
        Ok(Src::Imm(parse_imm32(t)?))
    }
}

/// `[%rN]`, `[%rN+off]` or `[%rN-off]`.
fn mem(s: &str) -> Res<(Reg, i16)> {
    let t = s.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("invalid memory operand '{t}'"))?
        .trim();
    match inner.find(['+', '-']) {
        None => Ok((reg(inner)?, 0)),
        Some(i) => {
            let r = reg(&inner[..i])?;
            let sign = &inner[i..i + 1];
            let body = inner[i + 1..].trim();
            if body.starts_with(['+', '-']) {
                return Err(format!("invalid memory operand '{t}'"));
            }
            let off = parse_off16(&format!("{sign}{body}"))
                .map_err(|e| format!("{e} in memory operand '{t}'"))?;
            Ok((r, off))
        }
    }
}

fn parse_atomic(rest: &str) -> Res<Parsed> {
    let (mut word, mut rest) = split_word(rest);
    let mut fetch = false;
    if word.eq_ignore_ascii_case("fetch") {
        fetch = true;
        (word, rest) = split_word(rest);
    }
    let w = word.to_ascii_lowercase();
    let (base, size) = match w.strip_suffix("32") {
        Some(b) => (b, Size::W),
        None => (w.strip_suffix("64").unwrap_or(&w), Size::DW),
    };
    let op = match base {
        "add" => AtomicOp::Add,
        "or" => AtomicOp::Or,
        "and" => AtomicOp::And,
        "xor" => AtomicOp::Xor,
        "xchg" => AtomicOp::Xchg,
        "cmpxchg" => AtomicOp::Cmpxchg,
        _ => return Err(format!("unknown atomic operation '{word}'")),
    };
    if matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg) {
        fetch = true;
    }
    let ops = split_operands(rest);
    if ops.len() != 2 {
        return Err(format!(
            "'lock {word}' expects 2 operands, found {}",
            ops.len()
        ));
    }
    let (dst, off) = mem(ops[0])?;
    let src = reg(ops[1])?;
    Ok(Parsed::plain(Insn::Atomic {
        size,
        op,
        fetch,
        dst,
        src,
        off,
    }))
}

fn parse_call(rest: &str) -> Res<Parsed> {
    let (word, tail) = split_word(rest);
    if word.is_empty() {
        return Err("'call' expects an operand".into());
    }
    if word.eq_ignore_ascii_case("local") {
        let ops = split_operands(tail);
        if ops.len() != 1 {
            return Err("'call local' expects one target".into());
        }
        return Ok(Parsed {
            insn: Insn::CallLocal(0),
            target: Some(parse_target(ops[0])?),
        });
    }
    if word.eq_ignore_ascii_case("runtime") {
        let ops = split_operands(tail);
        let (btf_id, off) = match ops.as_slice() {
            [id] => (parse_imm32(id)?, 0),
            [id, off] => (parse_imm32(id)?, parse_off16(off)?),
            _ => return Err("'call runtime' expects an id and an optional offset".into()),
        };
        return Ok(Parsed::plain(Insn::CallKfunc { btf_id, off }));
    }
    let ops = split_operands(rest);
    if ops.len() != 1 {
        return Err(format!("'call' expects 1 operand, found {}", ops.len()));
    }
    let op = ops[0];
    if op.starts_with('%') {
        return Ok(Parsed::plain(Insn::Callx(reg(op)?)));
    }
    Ok(Parsed::plain(Insn::Call(HelperId(parse_imm32(op)? as u32))))
}

fn parse_lddw(ops: &[&str], want: impl Fn(usize) -> Res<()>) -> Res<Parsed> {
    if ops.len() < 2 {
        want(2)?;
    }
    let dst = reg(ops[0])?;
    let (kind, arg) = split_word(ops[1]);
    let two = |what: &str| -> Res<(i32, i32)> {
        if ops.len() != 3 {
            return Err(format!("'lddw {what}' expects two numbers"));
        }
        Ok((parse_imm32(arg)?, parse_imm32(ops[2])?))
    };
    let one = |what: &str| -> Res<i32> {
        if ops.len() != 2 {
            return Err(format!("'lddw {what}' expects one number"));
        }
        parse_imm32(arg)
    };
    let mut target = None;
    let imm = match kind.to_ascii_lowercase().as_str() {
        "map_fd" => Imm64::MapFd(one(kind)?),
        "map_idx" => Imm64::MapIdx(one(kind)?),
        "map_value" => {
            let (fd, off) = two(kind)?;
            Imm64::MapValue {
                fd,
                off: off as u32,
            }
        }
        "map_idx_value" => {
            let (idx, off) = two(kind)?;
            Imm64::MapIdxValue {
                idx,
                off: off as u32,
            }
        }
        "btf_id" => {
            let (id, btf_fd) = two(kind)?;
            Imm64::BtfId { id, btf_fd }
        }
        "func" => {
            if ops.len() != 2 {
                return Err("'lddw func' expects one target".into());
            }
            target = Some(parse_target(arg)?);
            Imm64::Func(0)
        }
        _ => {
            want(2)?;
            Imm64::Value(parse_imm64(ops[1])?)
        }
    };
    let target: Option<Target> = target;
    Ok(Parsed {
        insn: Insn::LoadImm64 { dst, imm },
        target,
    })
}
