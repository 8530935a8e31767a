//! The kernel/llvm-objdump assembly syntax, as [`crate::disasm::format_llvm`]
//! and [`crate::disasm::format_llvm_program`] print it.
//!
//! Accepted beyond what llvm prints: decimal numbers, `w` registers for
//! 32-bit loads and stores (llvm's `alu32` forms), the kernel log's
//! `goto pc+3`, and targets written as labels (`goto LBB0_2`,
//! `call my_func`). A trailing `<...>` annotation on a jump is ignored when
//! the jump has a numeric offset; on a `call N` it marks a local call
//! (`call -0x1 <func>`), or a kfunc call when it reads `<kfunc>` /
//! `<kfunc 0xN>`, since llvm prints all three as `call N`.

use super::{parse_imm32, parse_imm64, parse_num, parse_off16, Parsed, Target};
use crate::insn::*;

type Res<T> = Result<T, String>;

/// A cursor over one line.
struct Cur<'a> {
    s: &'a str,
    line: &'a str,
}

impl<'a> Cur<'a> {
    fn new(line: &'a str) -> Self {
        Cur { s: line, line }
    }

    fn ws(&mut self) {
        self.s = self.s.trim_start();
    }

    fn peek(&mut self, lit: &str) -> bool {
        self.ws();
        self.s.starts_with(lit)
    }

    /// Consumes `lit` (after white space) if it comes next.
    fn eat(&mut self, lit: &str) -> bool {
        self.ws();
        if let Some(rest) = self.s.strip_prefix(lit) {
            self.s = rest;
            true
        } else {
            false
        }
    }

    /// Consumes the word `w` if it comes next as a whole word.
    fn eat_word(&mut self, w: &str) -> bool {
        self.ws();
        match self.s.strip_prefix(w) {
            Some(rest) if !rest.starts_with(is_word_char) => {
                self.s = rest;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, lit: &str) -> Res<()> {
        if self.eat(lit) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{lit}'")))
        }
    }

    fn unexpected(&self, what: &str) -> String {
        let found = self.s.trim();
        if found.is_empty() {
            format!("expected {what} at the end of '{}'", self.line.trim())
        } else {
            let shown: String = found.chars().take(24).collect();
            format!("expected {what}, found '{shown}'")
        }
    }

    /// A word of identifier characters (possibly empty).
    fn word(&mut self) -> &'a str {
        self.ws();
        let end = self
            .s
            .find(|c: char| !is_word_char(c))
            .unwrap_or(self.s.len());
        let (w, rest) = self.s.split_at(end);
        self.s = rest;
        w
    }

    /// `rN` or `wN`; the bool is true for `w`.
    fn try_reg(&mut self) -> Option<Res<(Reg, Width)>> {
        self.ws();
        let b = self.s.as_bytes();
        if b.len() < 2 || !(b[0] == b'r' || b[0] == b'w') || !b[1].is_ascii_digit() {
            return None;
        }
        let save = self.s;
        let w = self.word();
        let width = if w.starts_with('w') {
            Width::W32
        } else {
            Width::W64
        };
        let reg = w[1..]
            .parse::<u8>()
            .ok()
            .filter(|_| w.len() <= 3)
            .and_then(Reg::new);
        Some(match reg {
            Some(r) => Ok((r, width)),
            None => {
                self.s = save;
                Err(format!("invalid register '{w}'"))
            }
        })
    }

    fn reg(&mut self) -> Res<(Reg, Width)> {
        self.try_reg()
            .unwrap_or_else(|| Err(self.unexpected("a register")))
    }

    /// A number token: `[+-]?(0x)?[0-9a-f]+` (returned as text).
    fn try_number(&mut self) -> Option<&'a str> {
        self.ws();
        let b = self.s.as_bytes();
        let mut i = 0;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if i >= b.len() || !b[i].is_ascii_digit() {
            return None;
        }
        while i < b.len() && (b[i].is_ascii_alphanumeric()) {
            i += 1;
        }
        let (n, rest) = self.s.split_at(i);
        self.s = rest;
        Some(n)
    }

    fn number(&mut self) -> Res<&'a str> {
        self.try_number().ok_or_else(|| self.unexpected("a number"))
    }

    /// The rest must be empty.
    fn end(&mut self) -> Res<()> {
        self.ws();
        if self.s.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected '{}'", self.s.trim()))
        }
    }

    /// An optional trailing `<...>` annotation; returns its contents.
    fn annotation(&mut self) -> Res<Option<&'a str>> {
        if !self.eat("<") {
            return Ok(None);
        }
        let end = self
            .s
            .find('>')
            .ok_or_else(|| "unterminated '<' annotation".to_string())?;
        let inner = &self.s[..end];
        self.s = &self.s[end + 1..];
        Ok(Some(inner.trim()))
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$'
}

/// Parses one instruction line (comment and labels already removed).
pub(super) fn parse_line(line: &str) -> Res<Parsed> {
    let mut c = Cur::new(line);
    let parsed = parse(&mut c)?;
    c.end()?;
    Ok(parsed)
}

fn parse(c: &mut Cur<'_>) -> Res<Parsed> {
    if c.eat_word("exit") {
        return Ok(Parsed::plain(Insn::Exit));
    }
    if c.eat_word("goto") || c.peek("gotol") {
        let long = c.eat_word("gotol");
        let target = jump_target(c)?;
        return Ok(Parsed {
            insn: Insn::Ja { off: 0, long },
            target: Some(target),
        });
    }
    if c.eat_word("callx") {
        let (r, _) = c.reg()?;
        return Ok(Parsed::plain(Insn::Callx(r)));
    }
    if c.eat_word("call") {
        return parse_call(c);
    }
    if c.eat_word("if") {
        return parse_if(c);
    }
    if c.eat_word("lock") {
        return parse_lock(c);
    }
    if c.eat_word("ld_pseudo") {
        return parse_ld_pseudo(c);
    }
    if c.peek("*(") {
        let (size, _, base, off) = deref(c)?;
        c.expect("=")?;
        let src = match c.try_reg() {
            Some(r) => Src::Reg(r?.0),
            None => Src::Imm(parse_imm32(c.number()?)?),
        };
        return Ok(Parsed::plain(Insn::Store {
            size,
            dst: base,
            off,
            src,
        }));
    }
    let Some(dst) = c.try_reg() else {
        let w = c.word();
        return Err(if w.is_empty() {
            c.unexpected("an instruction")
        } else {
            format!("unknown mnemonic '{w}'")
        });
    };
    let (dst, width) = dst?;
    c.ws();
    let op = [
        "s>>=", "s/=", "s%=", "<<=", ">>=", "+=", "-=", "*=", "/=", "|=", "&=", "%=", "^=", "=",
    ]
    .into_iter()
    .find(|op| c.eat(op))
    .ok_or_else(|| c.unexpected("an operator"))?;
    let op = match op {
        "=" => return parse_assign(c, dst, width),
        "+=" => AluOp::Add,
        "-=" => AluOp::Sub,
        "*=" => AluOp::Mul,
        "/=" => AluOp::Div,
        "s/=" => AluOp::Sdiv,
        "|=" => AluOp::Or,
        "&=" => AluOp::And,
        "<<=" => AluOp::Lsh,
        ">>=" => AluOp::Rsh,
        "%=" => AluOp::Mod,
        "s%=" => AluOp::Smod,
        "^=" => AluOp::Xor,
        _ => AluOp::Arsh,
    };
    let src = src_operand(c, width)?;
    Ok(Parsed::plain(Insn::Alu {
        width,
        op,
        dst,
        src,
    }))
}

/// A register of the given width, or a 32-bit immediate.
fn src_operand(c: &mut Cur<'_>, width: Width) -> Res<Src> {
    match c.try_reg() {
        Some(r) => {
            let (r, w) = r?;
            if w != width {
                return Err(format!("register '{}' has the wrong width", show(r, w)));
            }
            Ok(Src::Reg(r))
        }
        None => Ok(Src::Imm(parse_imm32(c.number()?)?)),
    }
}

fn show(r: Reg, w: Width) -> String {
    match w {
        Width::W32 => format!("w{}", r.num()),
        Width::W64 => format!("r{}", r.num()),
    }
}

/// `+0x3`, `-3`, `pc+3`, or a label; then an optional `<...>` annotation,
/// which is ignored when the offset is numeric.
fn jump_target(c: &mut Cur<'_>) -> Res<Target> {
    c.eat_word("pc");
    let t = if let Some(n) = c.try_number() {
        let v = parse_num(n)?.value;
        if !(i32::MIN as i128..=i32::MAX as i128).contains(&v) {
            return Err(format!("jump target '{n}' is out of range"));
        }
        Target::Rel(v as i64)
    } else {
        let w = c.word();
        if !super::is_label_name(w) {
            return Err(c.unexpected("a jump target"));
        }
        Target::Label(w.to_string())
    };
    c.annotation()?;
    Ok(t)
}

fn parse_call(c: &mut Cur<'_>) -> Res<Parsed> {
    if let Some(n) = c.try_number() {
        let imm = parse_imm32(n)?;
        return Ok(Parsed::plain(match c.annotation()? {
            None => Insn::Call(HelperId(imm as u32)),
            Some("kfunc") => Insn::CallKfunc {
                btf_id: imm,
                off: 0,
            },
            Some(a) if a.starts_with("kfunc ") => Insn::CallKfunc {
                btf_id: imm,
                off: parse_off16(&a["kfunc ".len()..])?,
            },
            Some(_) => Insn::CallLocal(imm),
        }));
    }
    let w = c.word();
    if !super::is_label_name(w) {
        return Err(c.unexpected("a helper number or a function label"));
    }
    c.annotation()?;
    Ok(Parsed {
        insn: Insn::CallLocal(0),
        target: Some(Target::Label(w.to_string())),
    })
}

fn parse_if(c: &mut Cur<'_>) -> Res<Parsed> {
    let (dst, width) = c.reg()?;
    c.ws();
    let cond = [
        ("s>=", Cond::Sge),
        ("s<=", Cond::Sle),
        ("s>", Cond::Sgt),
        ("s<", Cond::Slt),
        ("==", Cond::Eq),
        ("!=", Cond::Ne),
        (">=", Cond::Ge),
        ("<=", Cond::Le),
        (">", Cond::Gt),
        ("<", Cond::Lt),
        ("&", Cond::Set),
    ]
    .into_iter()
    .find(|(sym, _)| c.eat(sym))
    .map(|(_, cond)| cond)
    .ok_or_else(|| c.unexpected("a comparison operator"))?;
    let src = src_operand(c, width)?;
    if !c.eat_word("goto") {
        return Err(c.unexpected("'goto'"));
    }
    let target = jump_target(c)?;
    Ok(Parsed {
        insn: Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off: 0,
        },
        target: Some(target),
    })
}

/// `u8`..`u64`, `s8`..`s32` inside `*(... *)`.
fn size_type(c: &mut Cur<'_>) -> Res<(Size, bool)> {
    let w = c.word();
    let (signed, bits) = match w.split_at_checked(1) {
        Some(("u", b)) => (false, b),
        Some(("s", b)) => (true, b),
        _ => return Err(format!("expected a type like u32, found '{w}'")),
    };
    let size = match bits {
        "8" => Size::B,
        "16" => Size::H,
        "32" => Size::W,
        "64" => Size::DW,
        _ => return Err(format!("expected a type like u32, found '{w}'")),
    };
    Ok((size, signed))
}

/// `rB + 0x8`, `rB - 0x8` or `rB` (inside the parentheses).
fn address(c: &mut Cur<'_>) -> Res<(Reg, i16)> {
    let (base, _) = c.reg()?;
    let sign = if c.eat("+") {
        ""
    } else if c.eat("-") {
        "-"
    } else {
        return Ok((base, 0));
    };
    let n = c.number()?;
    if n.starts_with(['+', '-']) {
        return Err(format!("invalid offset '{n}'"));
    }
    Ok((base, parse_off16(&format!("{sign}{n}"))?))
}

/// `*(u32 *)(rB + off)`.
fn deref(c: &mut Cur<'_>) -> Res<(Size, bool, Reg, i16)> {
    c.expect("*(")?;
    let (size, signed) = size_type(c)?;
    c.expect("*")?;
    c.expect(")")?;
    c.expect("(")?;
    let (base, off) = address(c)?;
    c.expect(")")?;
    Ok((size, signed, base, off))
}

fn parse_lock(c: &mut Cur<'_>) -> Res<Parsed> {
    let (size, signed, dst, off) = deref(c)?;
    if signed || !matches!(size, Size::W | Size::DW) {
        return Err("atomic operations take u32 or u64".into());
    }
    c.ws();
    let op = [
        ("+=", AtomicOp::Add),
        ("|=", AtomicOp::Or),
        ("&=", AtomicOp::And),
        ("^=", AtomicOp::Xor),
    ]
    .into_iter()
    .find(|(sym, _)| c.eat(sym))
    .map(|(_, op)| op)
    .ok_or_else(|| c.unexpected("one of += |= &= ^="))?;
    let (src, _) = c.reg()?;
    Ok(Parsed::plain(Insn::Atomic {
        size,
        op,
        fetch: false,
        dst,
        src,
        off,
    }))
}

fn parse_ld_pseudo(c: &mut Cur<'_>) -> Res<Parsed> {
    let (dst, _) = c.reg()?;
    c.expect(",")?;
    let src = parse_imm32(c.number()?)?;
    c.expect(",")?;
    let lo = parse_imm32(c.number()?)?;
    let hi = if c.eat(",") {
        parse_imm32(c.number()?)?
    } else {
        0
    };
    let only_lo = |imm: Imm64| {
        if hi == 0 {
            Ok(imm)
        } else {
            Err(format!("ld_pseudo source {src} takes no second immediate"))
        }
    };
    let imm = match src {
        1 => only_lo(Imm64::MapFd(lo))?,
        2 => Imm64::MapValue {
            fd: lo,
            off: hi as u32,
        },
        3 => Imm64::BtfId { id: lo, btf_fd: hi },
        4 => only_lo(Imm64::Func(lo))?,
        5 => only_lo(Imm64::MapIdx(lo))?,
        6 => Imm64::MapIdxValue {
            idx: lo,
            off: hi as u32,
        },
        _ => return Err(format!("invalid ld_pseudo source {src}")),
    };
    Ok(Parsed::plain(Insn::LoadImm64 { dst, imm }))
}

/// The right-hand side of `dst = ...`.
fn parse_assign(c: &mut Cur<'_>, dst: Reg, width: Width) -> Res<Parsed> {
    let alu = |op, src| {
        Ok(Parsed::plain(Insn::Alu {
            width,
            op,
            dst,
            src,
        }))
    };
    // dst = -dst
    if c.peek("-") && !c.s.as_bytes().get(1).is_some_and(u8::is_ascii_digit) {
        c.expect("-")?;
        let (r, w) = c.reg()?;
        if r != dst || w != width {
            return Err(format!("negation must be '{0} = -{0}'", show(dst, width)));
        }
        return Ok(Parsed::plain(Insn::Neg { width, dst }));
    }
    // dst = (s8)src
    if c.eat("(") {
        let (size, signed) = size_type(c)?;
        c.expect(")")?;
        let from = match (signed, size) {
            (true, Size::B) => SignExtFrom::B8,
            (true, Size::H) => SignExtFrom::B16,
            (true, Size::W) => SignExtFrom::B32,
            _ => return Err("expected (s8), (s16) or (s32)".into()),
        };
        let src = src_operand(c, width)?;
        if !matches!(src, Src::Reg(_)) {
            return Err("sign-extending move needs a register".into());
        }
        return alu(AluOp::MovSx(from), src);
    }
    // Loads: *(u32 *)(src + off) or *(u32 *)skb[...]
    if c.peek("*(") {
        c.expect("*(")?;
        let (size, signed) = size_type(c)?;
        c.expect("*")?;
        c.expect(")")?;
        if c.eat_word("skb") {
            if dst != Reg::R0 || signed || size == Size::DW {
                return Err("packet loads are 'r0 = *(u8|u16|u32 *)skb[...]'".into());
            }
            c.expect("[")?;
            let insn = match c.try_reg() {
                Some(r) => {
                    let (src, _) = r?;
                    let imm = if c.eat("+") {
                        parse_imm32(c.number()?)?
                    } else if c.eat("-") {
                        parse_imm32(&format!("-{}", c.number()?))?
                    } else {
                        0
                    };
                    Insn::LoadInd { size, src, imm }
                }
                None => Insn::LoadAbs {
                    size,
                    imm: parse_imm32(c.number()?)?,
                },
            };
            c.expect("]")?;
            return Ok(Parsed::plain(insn));
        }
        c.expect("(")?;
        let (src, off) = address(c)?;
        c.expect(")")?;
        if signed && size == Size::DW {
            return Err("there is no sign-extending 64-bit load".into());
        }
        return Ok(Parsed::plain(Insn::Load {
            size,
            sign_extend: signed,
            dst,
            src,
            off,
        }));
    }
    if let Some(r) = c.try_reg() {
        let (src, w) = r?;
        if w != width {
            return Err(format!("register '{}' has the wrong width", show(src, w)));
        }
        return alu(AluOp::Mov, Src::Reg(src));
    }
    if let Some(n) = c.try_number() {
        if c.eat_word("ll") {
            if width != Width::W64 {
                return Err("'ll' needs a 64-bit register".into());
            }
            return Ok(Parsed::plain(Insn::LoadImm64 {
                dst,
                imm: Imm64::Value(parse_imm64(n)?),
            }));
        }
        return alu(AluOp::Mov, Src::Imm(parse_imm32(n)?));
    }
    let name = c.word();
    if let Some(insn) = endian(name, dst) {
        let (r, _) = c.reg()?;
        if r != dst {
            return Err(format!("'{name}' must operate on '{dst}' itself"));
        }
        return Ok(Parsed::plain(insn));
    }
    atomic_call(c, name, dst, width)
}

fn endian(name: &str, dst: Reg) -> Option<Insn> {
    let (order, bits) = if let Some(b) = name.strip_prefix("le") {
        (ByteOrder::ToLe, b)
    } else if let Some(b) = name.strip_prefix("be") {
        (ByteOrder::ToBe, b)
    } else {
        (ByteOrder::Swap, name.strip_prefix("bswap")?)
    };
    let bits = match bits {
        "16" => SwapBits::B16,
        "32" => SwapBits::B32,
        "64" => SwapBits::B64,
        _ => return None,
    };
    Some(Insn::Endian { order, bits, dst })
}

/// `atomic_fetch_OP((u64 *)(rB + off), rS)`, `xchg_64(rB + off, rS)`,
/// `cmpxchg_64(rB + off, r0, rS)` and their 32-bit forms.
fn atomic_call(c: &mut Cur<'_>, name: &str, dst: Reg, width: Width) -> Res<Parsed> {
    let unknown = || {
        if name.is_empty() {
            c.unexpected("an operand")
        } else {
            format!("unknown operation '{name}'")
        }
    };
    let (op, size) = match name {
        "xchg_64" => (AtomicOp::Xchg, Size::DW),
        "xchg32_32" => (AtomicOp::Xchg, Size::W),
        "cmpxchg_64" => (AtomicOp::Cmpxchg, Size::DW),
        "cmpxchg32_32" => (AtomicOp::Cmpxchg, Size::W),
        _ => {
            let op = match name.strip_prefix("atomic_fetch_") {
                Some("add") => AtomicOp::Add,
                Some("or") => AtomicOp::Or,
                Some("and") => AtomicOp::And,
                Some("xor") => AtomicOp::Xor,
                _ => return Err(unknown()),
            };
            c.expect("(")?;
            c.expect("(")?;
            let (size, signed) = size_type(c)?;
            c.expect("*")?;
            c.expect(")")?;
            c.expect("(")?;
            let (base, off) = address(c)?;
            c.expect(")")?;
            c.expect(",")?;
            let (src, _) = c.reg()?;
            c.expect(")")?;
            if signed || !matches!(size, Size::W | Size::DW) {
                return Err("atomic operations take u32 or u64".into());
            }
            if src != dst {
                return Err(format!("'{name}' returns into its source register '{src}'"));
            }
            return atomic(size, width, op, base, src, off);
        }
    };
    c.expect("(")?;
    let (base, off) = address(c)?;
    c.expect(",")?;
    if op == AtomicOp::Cmpxchg {
        let (r0, _) = c.reg()?;
        if r0 != Reg::R0 || dst != Reg::R0 {
            return Err("cmpxchg compares with and returns into r0".into());
        }
        c.expect(",")?;
    }
    let (src, _) = c.reg()?;
    c.expect(")")?;
    if op == AtomicOp::Xchg && src != dst {
        return Err(format!("'{name}' returns into its source register '{src}'"));
    }
    atomic(size, width, op, base, src, off)
}

fn atomic(size: Size, width: Width, op: AtomicOp, dst: Reg, src: Reg, off: i16) -> Res<Parsed> {
    let want = if size == Size::W {
        Width::W32
    } else {
        Width::W64
    };
    if width != want {
        return Err("the register width does not match the operand size".into());
    }
    Ok(Parsed::plain(Insn::Atomic {
        size,
        op,
        fetch: true,
        dst,
        src,
        off,
    }))
}
