//! Text to [`Insn`]: an assembler for two syntaxes.
//!
//! - [`Syntax::Ubpf`]: the assembly of uBPF and of the bpf_conformance suite
//!   (`mov %r0, 1`, `ldxw %r1, [%r2+4]`, `jne %r1, 0, exit`).
//! - [`Syntax::Llvm`]: the kernel/llvm-objdump syntax that
//!   [`crate::disasm`] prints (`r0 = *(u32 *)(r1 + 0x4)`,
//!   `if r1 > 0x5 goto +0x3 <LBB0_2>`).
//!
//! Both share one two-pass driver: each line is parsed into a label or an
//! instruction whose branch target may still be symbolic, slot indices are
//! assigned (`lddw` counts two slots), then every target is resolved to an
//! offset relative to the next slot, as RFC 9669 section 4.3 counts jumps.
//!
//! Comments are stripped: from `#` in both syntaxes, and also from `;` and
//! `//` in the llvm syntax, which also skips listing prefixes (the `12:`
//! index of `bpfkit disasm`, the index and byte column of
//! `llvm-objdump -d`). A label is `name:`, alone on its line or before
//! an instruction. A jump target is a label or `+N`/`-N` (slots from the
//! next instruction). In the ubpf syntax the first `exit` instruction is
//! also an implicit label named `exit`, unless a label of that name exists.
//!
//! ```
//! use bpfkit_isa::asm::{assemble, Syntax};
//! use bpfkit_isa::encode_all;
//!
//! let insns = assemble("mov %r0, 1\njne %r1, 0, exit\nmov %r0, 2\nexit", Syntax::Ubpf).unwrap();
//! let same = assemble("r0 = 1\nif r1 != 0 goto +1\nr0 = 2\nexit", Syntax::Llvm).unwrap();
//! assert_eq!(encode_all(&insns), encode_all(&same));
//! assert_eq!(encode_all(&insns)[8..16], [0x55, 0x01, 1, 0, 0, 0, 0, 0]);
//! ```

use crate::insn::*;
use std::collections::HashMap;
use thiserror::Error;

mod llvm;
mod ubpf;

/// Which assembly syntax [`assemble`] reads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Syntax {
    /// The kernel/llvm-objdump syntax (`r0 = *(u32 *)(r1 + 0x4)`).
    Llvm,
    /// The uBPF / bpf_conformance syntax (`ldxw %r0, [%r1+4]`).
    Ubpf,
}

/// An assembly error: the 1-based line and what is wrong there.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
#[error("line {line}: {message}")]
pub struct AsmError {
    /// 1-based line number in the source text.
    pub line: usize,
    /// What is wrong, e.g. `unknown mnemonic 'foo'`.
    pub message: String,
}

/// Assembles `text` in the given syntax into instructions, resolving labels
/// and relative targets.
pub fn assemble(text: &str, syntax: Syntax) -> Result<Vec<Insn>, AsmError> {
    let mut items: Vec<(usize, Parsed)> = Vec::new();
    let mut labels: HashMap<String, (usize, usize)> = HashMap::new();
    let mut pc = 0usize;
    let mut first_exit: Option<usize> = None;
    for (i, raw_line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| AsmError {
            line: line_no,
            message,
        };
        let mut line = strip_comment(raw_line, syntax).trim();
        if syntax == Syntax::Llvm {
            line = strip_listing_prefix(line);
        }
        // Leading labels: `name:` (possibly followed by an instruction).
        while let Some((label, rest)) = split_label(line, syntax) {
            if let Some(&(_, prev)) = labels.get(label) {
                return Err(err(format!(
                    "label '{label}' is already defined on line {prev}"
                )));
            }
            labels.insert(label.to_string(), (pc, line_no));
            line = rest.trim();
        }
        if line.is_empty() {
            continue;
        }
        let parsed = match syntax {
            Syntax::Ubpf => ubpf::parse_line(line),
            Syntax::Llvm => llvm::parse_line(line),
        }
        .map_err(err)?;
        if parsed.insn == Insn::Exit && first_exit.is_none() {
            first_exit = Some(pc);
        }
        pc += parsed.insn.slots();
        items.push((line_no, parsed));
    }

    // Second pass: resolve targets.
    let mut out = Vec::with_capacity(items.len());
    let mut pc = 0usize;
    for (line, parsed) in items {
        let err = |message: String| AsmError { line, message };
        let mut insn = parsed.insn;
        if let Some(target) = parsed.target {
            let off: i64 = match target {
                Target::Rel(n) => n,
                Target::Label(name) => {
                    let dest = match labels.get(&name) {
                        Some(&(dest, _)) => dest,
                        None if name == "exit" && syntax == Syntax::Ubpf => {
                            first_exit.ok_or_else(|| err("undefined label 'exit'".into()))?
                        }
                        None => return Err(err(format!("undefined label '{name}'"))),
                    };
                    dest as i64 - (pc as i64 + 1)
                }
            };
            set_offset(&mut insn, off).map_err(err)?;
        }
        pc += insn.slots();
        out.push(insn);
    }
    Ok(out)
}

/// A branch target before resolution.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    /// A label name.
    Label(String),
    /// Slots relative to the next instruction.
    Rel(i64),
}

/// One parsed instruction line; `target`, when present, replaces the
/// instruction's offset once resolved.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Parsed {
    pub(crate) insn: Insn,
    pub(crate) target: Option<Target>,
}

impl Parsed {
    pub(crate) fn plain(insn: Insn) -> Parsed {
        Parsed { insn, target: None }
    }
}

/// Puts a resolved offset into a branching instruction, checking its range.
fn set_offset(insn: &mut Insn, off: i64) -> Result<(), String> {
    let too_far = |bits: u32| format!("jump offset {off} does not fit in {bits} bits");
    match insn {
        Insn::Ja { off: o, long: true } | Insn::CallLocal(o) => {
            *o = i32::try_from(off).map_err(|_| too_far(32))?;
        }
        Insn::LoadImm64 {
            imm: Imm64::Func(o),
            ..
        } => {
            *o = i32::try_from(off).map_err(|_| too_far(32))?;
        }
        Insn::Ja {
            off: o,
            long: false,
        } => {
            *o = i16::try_from(off).map_err(|_| too_far(16))? as i32;
        }
        Insn::Jmp { off: o, .. } => {
            *o = i16::try_from(off).map_err(|_| too_far(16))?;
        }
        _ => return Err("instruction takes no jump target".into()),
    }
    Ok(())
}

/// Drops the instruction index that listings put before the text
/// (`  12: r0 = 0x1` as `bpfkit disasm` prints it) and the raw bytes that
/// `llvm-objdump -d` adds (`  12:\tb7 00 00 00 01 00 00 00\tr0 = 0x1`).
/// Labels cannot start with a digit, so this is never a label.
fn strip_listing_prefix(line: &str) -> &str {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || line.as_bytes().get(digits) != Some(&b':') {
        return line;
    }
    let rest = &line[digits + 1..];
    // The byte column: hex pairs separated by single spaces, then a tab.
    if let Some((bytes, insn)) = rest.trim_start_matches([' ', '\t']).split_once('\t') {
        let is_bytes = !bytes.is_empty()
            && bytes
                .split(' ')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if is_bytes {
            return insn.trim();
        }
    }
    rest.trim()
}

fn strip_comment(line: &str, syntax: Syntax) -> &str {
    let mut end = line.find('#').unwrap_or(line.len());
    if syntax == Syntax::Llvm {
        if let Some(i) = line.find(';') {
            end = end.min(i);
        }
        if let Some(i) = line.find("//") {
            end = end.min(i);
        }
    }
    &line[..end]
}

/// Splits a leading `label:` off a line. In the llvm syntax a label may
/// also be written `<name>:` as llvm-objdump prints function headers.
fn split_label(line: &str, syntax: Syntax) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let mut name = line[..colon].trim_end();
    if syntax == Syntax::Llvm {
        if let Some(inner) = name.strip_prefix('<').and_then(|n| n.strip_suffix('>')) {
            name = inner;
        }
    }
    if is_label_name(name) {
        Some((name, &line[colon + 1..]))
    } else {
        None
    }
}

/// Label names: a letter, `_` or `.`, then letters, digits, `_`, `.`, `$`.
pub(crate) fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '.' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
}

/// A number as written: its value and whether it was hexadecimal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Num {
    pub(crate) value: i128,
    pub(crate) hex: bool,
}

/// Parses `[+-]digits` or `[+-]0x hexdigits`.
pub(crate) fn parse_num(s: &str) -> Result<Num, String> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (hex, digits) = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(d) => (true, d),
        None => (false, body),
    };
    let radix = if hex { 16 } else { 10 };
    if digits.is_empty() || digits.len() > 40 || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(format!("invalid number '{t}'"));
    }
    let v = i128::from_str_radix(digits, radix).map_err(|_| format!("invalid number '{t}'"))?;
    Ok(Num {
        value: if neg { -v } else { v },
        hex,
    })
}

/// A 32-bit immediate: 0..=0xffffffff in hex (wrapping to negative), or
/// -2^31..2^31-1 in decimal.
pub(crate) fn parse_imm32(s: &str) -> Result<i32, String> {
    let n = parse_num(s)?;
    let ok = if n.hex {
        (-(1i128 << 31)..=0xffff_ffff).contains(&n.value)
    } else {
        (i32::MIN as i128..=i32::MAX as i128).contains(&n.value)
    };
    if !ok {
        return Err(format!("immediate '{}' does not fit in 32 bits", s.trim()));
    }
    Ok(n.value as u32 as i32)
}

/// A 16-bit offset: at most 0xffff in hex (wrapping), or -32768..=32767.
pub(crate) fn parse_off16(s: &str) -> Result<i16, String> {
    let n = parse_num(s)?;
    let ok = if n.hex {
        (-(1i128 << 15)..=0xffff).contains(&n.value)
    } else {
        (i16::MIN as i128..=i16::MAX as i128).contains(&n.value)
    };
    if !ok {
        return Err(format!("offset '{}' does not fit in 16 bits", s.trim()));
    }
    Ok(n.value as u16 as i16)
}

/// A 64-bit immediate: any value from -2^63 to 2^64-1.
pub(crate) fn parse_imm64(s: &str) -> Result<u64, String> {
    let n = parse_num(s)?;
    if !(i64::MIN as i128..=u64::MAX as i128).contains(&n.value) {
        return Err(format!("immediate '{}' does not fit in 64 bits", s.trim()));
    }
    Ok(n.value as u64)
}

/// A jump target: a label name or `+N`/`-N` (also a bare `N`).
pub(crate) fn parse_target(s: &str) -> Result<Target, String> {
    let t = s.trim();
    if is_label_name(t) {
        return Ok(Target::Label(t.to_string()));
    }
    let n = parse_num(t).map_err(|_| format!("invalid jump target '{t}'"))?;
    if !(i32::MIN as i128..=i32::MAX as i128).contains(&n.value) {
        return Err(format!("jump target '{t}' is out of range"));
    }
    Ok(Target::Rel(n.value as i64))
}

/// Splits operands at top-level commas (not inside `[]` or `()`).
pub(crate) fn split_operands(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() || !out.is_empty() {
        out.push(last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_all;

    fn ubpf(text: &str) -> Vec<u8> {
        encode_all(&assemble(text, Syntax::Ubpf).unwrap())
    }

    fn ubpf_err(text: &str) -> String {
        assemble(text, Syntax::Ubpf).unwrap_err().to_string()
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_imm32("0xffffffff"), Ok(-1));
        assert_eq!(parse_imm32("-2147483648"), Ok(i32::MIN));
        assert!(parse_imm32("4294967295").is_err());
        assert!(parse_imm32("0x100000000").is_err());
        assert_eq!(parse_off16("0xffff"), Ok(-1));
        assert!(parse_off16("32768").is_err());
        assert_eq!(parse_imm64("-1"), Ok(u64::MAX));
        assert_eq!(parse_imm64("0xFFFFFFFFFFFFFFFF"), Ok(u64::MAX));
        assert!(parse_imm64("0x1FFFFFFFFFFFFFFFF").is_err());
        assert!(parse_num("12a").is_err());
        assert!(parse_num("0x").is_err());
    }

    #[test]
    fn encodings_by_hand() {
        // Expected bytes worked out from RFC 9669's opcode tables.
        assert_eq!(ubpf("mov %r0, 1"), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(ubpf("mov32 %r1, %r2"), [0xbc, 0x21, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ubpf("sdiv %r1, 3"), [0x37, 0x01, 1, 0, 3, 0, 0, 0]);
        assert_eq!(ubpf("movsx1632 %r4, %r3"), [0xbc, 0x34, 16, 0, 0, 0, 0, 0]);
        assert_eq!(
            ubpf("ldxsh %r1, [%r2-2]"),
            [0x89, 0x21, 0xfe, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            ubpf("stw [%r10-4], 0x11223344"),
            [0x62, 0x0a, 0xfc, 0xff, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(
            ubpf("lock fetch add32 [%r10-8], %r1"),
            [0xc3, 0x1a, 0xf8, 0xff, 0x01, 0, 0, 0]
        );
        assert_eq!(
            ubpf("lock cmpxchg [%r1], %r2"),
            [0xdb, 0x21, 0, 0, 0xf1, 0, 0, 0]
        );
        assert_eq!(ubpf("be16 %r3"), [0xdc, 0x03, 0, 0, 16, 0, 0, 0]);
        assert_eq!(ubpf("swap64 %r3"), [0xd7, 0x03, 0, 0, 64, 0, 0, 0]);
        assert_eq!(ubpf("call %r2"), [0x8d, 0x02, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ubpf("call 5"), [0x85, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(ubpf("ja32 +3"), [0x06, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(
            ubpf("jsgt32 %r1, -1, -2"),
            [0x66, 0x01, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn labels_count_lddw_as_two_slots() {
        let text = "jeq %r1, 0, done\nlddw %r0, 0x100000000\ndone:\nexit";
        // jeq at 0, lddw at 1-2, exit at 3: offset 3 - 1 = 2.
        assert_eq!(&ubpf(text)[..8], &[0x15, 0x01, 2, 0, 0, 0, 0, 0]);
        let back = "l:\nmov %r0, 0\nja l\nexit";
        assert_eq!(&ubpf(back)[8..16], &[0x05, 0, 0xfe, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn implicit_exit_label_and_local_calls() {
        let text = "jne %r1, 0, exit\nmov %r0, 1\nexit\nmov %r0, 2\nexit";
        assert_eq!(&ubpf(text)[..8], &[0x55, 0x01, 1, 0, 0, 0, 0, 0]);
        let call = "call local f\nexit\nf:\nmov %r0, 1\nexit";
        assert_eq!(&ubpf(call)[..8], &[0x85, 0x10, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn errors_name_line_and_problem() {
        assert_eq!(
            ubpf_err("mov %r0, 1\n\nfoo %r1"),
            "line 3: unknown mnemonic 'foo'"
        );
        assert_eq!(ubpf_err("mov %r11, 1"), "line 1: invalid register '%r11'");
        assert_eq!(ubpf_err("ja nowhere"), "line 1: undefined label 'nowhere'");
        assert_eq!(
            ubpf_err("mov %r0, 4294967296"),
            "line 1: immediate '4294967296' does not fit in 32 bits"
        );
        assert_eq!(
            ubpf_err("mov %r0"),
            "line 1: 'mov' expects 2 operands, found 1"
        );
        assert_eq!(
            ubpf_err("a:\na:"),
            "line 2: label 'a' is already defined on line 1"
        );
        assert_eq!(
            ubpf_err("ja +40000"),
            "line 1: jump offset 40000 does not fit in 16 bits"
        );
        assert_eq!(
            ubpf_err("movsx3232 %r0, %r1"),
            "line 1: unknown mnemonic 'movsx3232'"
        );
    }

    fn llvm(text: &str) -> Vec<u8> {
        encode_all(&assemble(text, Syntax::Llvm).unwrap())
    }

    fn llvm_err(text: &str) -> String {
        assemble(text, Syntax::Llvm).unwrap_err().to_string()
    }

    #[test]
    fn llvm_syntax_by_hand() {
        // Each line as llvm-objdump-19 prints it, with the bytes it shows.
        let cases: &[(&str, [u8; 8])] = &[
            ("r2 = *(u32 *)(r1 + 0x4)", [0x61, 0x12, 4, 0, 0, 0, 0, 0]),
            (
                "if r3 > r2 goto +0x36 <LBB0_20>",
                [0x2d, 0x23, 0x36, 0, 0, 0, 0, 0],
            ),
            (
                "if r4 == 0xa888 goto +0x2",
                [0x15, 0x04, 2, 0, 0x88, 0xa8, 0, 0],
            ),
            (
                "*(u64 *)(r10 - 0x38) = r7",
                [0x7b, 0x7a, 0xc8, 0xff, 0, 0, 0, 0],
            ),
            ("w1 s>>= -0x5", [0xc4, 0x01, 0, 0, 0xfb, 0xff, 0xff, 0xff]),
            ("w1 = (s8)w2", [0xbc, 0x21, 8, 0, 0, 0, 0, 0]),
            ("r1 = -r1", [0x87, 0x01, 0, 0, 0, 0, 0, 0]),
            ("r1 = be16 r1", [0xdc, 0x01, 0, 0, 16, 0, 0, 0]),
            ("r1 = bswap64 r1", [0xd7, 0x01, 0, 0, 64, 0, 0, 0]),
            ("r1 = *(s16 *)(r2 + 0x4)", [0x89, 0x21, 4, 0, 0, 0, 0, 0]),
            (
                "lock *(u64 *)(r1 - 0x8) |= r2",
                [0xdb, 0x21, 0xf8, 0xff, 0x40, 0, 0, 0],
            ),
            (
                "w2 = atomic_fetch_xor((u32 *)(r1 - 0x8), w2)",
                [0xc3, 0x21, 0xf8, 0xff, 0xa1, 0, 0, 0],
            ),
            (
                "r0 = cmpxchg_64(r1 - 0x8, r0, r2)",
                [0xdb, 0x21, 0xf8, 0xff, 0xf1, 0, 0, 0],
            ),
            (
                "r2 = xchg_64(r1 - 0x8, r2)",
                [0xdb, 0x21, 0xf8, 0xff, 0xe1, 0, 0, 0],
            ),
            ("r0 = *(u16 *)skb[r8]", [0x48, 0x80, 0, 0, 0, 0, 0, 0]),
            ("r0 = *(u8 *)skb[0x17]", [0x30, 0, 0, 0, 0x17, 0, 0, 0]),
            ("gotol -0x2", [0x06, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]),
            ("call 0x1", [0x85, 0, 0, 0, 1, 0, 0, 0]),
            ("call -0x1 <f>", [0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            ("callx r2", [0x8d, 0x02, 0, 0, 0, 0, 0, 0]),
            ("ld_pseudo\tr1, 0x1, 0x3", [0x18, 0x11, 0, 0, 3, 0, 0, 0]),
        ];
        for (text, bytes) in cases {
            assert_eq!(&llvm(text)[..8], bytes, "{text}");
        }
        assert_eq!(
            llvm("r1 = 0x1122334455667788 ll"),
            [0x18, 0x01, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(llvm("r1 = -0x1 ll")[4..8], [0xff; 4]);
    }

    #[test]
    fn llvm_labels_and_calls() {
        let text = "LBB0_1:\n\tr0 = 0x0\n\tif r0 != 0x0 goto LBB0_1\n\tcall f\n\texit\nf:\n\texit";
        let b = llvm(text);
        assert_eq!(&b[8..16], &[0x55, 0, 0xfe, 0xff, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[0x85, 0x10, 0, 0, 1, 0, 0, 0]);
        assert_eq!(llvm("goto pc-1")[2..4], [0xff, 0xff]);
    }

    #[test]
    fn llvm_listing_prefixes_are_skipped() {
        let listing = "     0: r0 = 0x1\n     1: if r1 > 0x5 goto +0x1 <3>\nLBB0_2:\n     2: exit\n   3: exit";
        let objdump = "       0:\tb7 00 00 00 01 00 00 00\tr0 = 0x1\n       1:\t25 01 01 00 05 00 00 00\tif r1 > 0x5 goto +0x1 <LBB0_2>\n       2:\t95 00 00 00 00 00 00 00\texit\n3:\t95 00 00 00 00 00 00 00\texit";
        let plain = llvm("r0 = 1\nif r1 > 5 goto +1\nexit\nexit");
        assert_eq!(llvm(listing), plain);
        assert_eq!(llvm(objdump), plain);
        assert_eq!(llvm_err("12: bogus"), "line 1: unknown mnemonic 'bogus'");
    }

    #[test]
    fn llvm_errors() {
        assert_eq!(llvm_err("exit\nfoo r1"), "line 2: unknown mnemonic 'foo'");
        assert_eq!(
            llvm_err("r1 += w2"),
            "line 1: register 'w2' has the wrong width"
        );
        assert_eq!(
            llvm_err("r1 = *(u24 *)(r2 + 0x0)"),
            "line 1: expected a type like u32, found 'u24'"
        );
        assert_eq!(llvm_err("r12 = 1"), "line 1: invalid register 'r12'");
        assert_eq!(
            llvm_err("if r1 ~ r2 goto +1"),
            "line 1: expected a comparison operator, found '~ r2 goto +1'"
        );
        assert_eq!(llvm_err("r1 = 1 extra"), "line 1: unexpected 'extra'");
        assert_eq!(
            llvm_err("goto nowhere"),
            "line 1: undefined label 'nowhere'"
        );
        assert_eq!(llvm_err("r1 = -r2"), "line 1: negation must be 'r1 = -r1'");
    }

    #[test]
    fn comments_and_blank_lines_are_tolerated() {
        assert_eq!(ubpf("  # hi\n\nexit # done\n"), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }
}
