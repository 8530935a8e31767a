//! Rejections in plain words: why the failing instruction is unsafe,
//! worked out from the instruction and the register state where the
//! verifier has them, and the branch decisions of the rejected path.
//!
//! The kernel's message stays untouched (tests compare it with the
//! kernel); these lines only go into [`crate::VerifierError::context`].

use bpfkit_isa::disasm::format_llvm;
use bpfkit_isa::{Insn, Pc};

use crate::state::{Frame, PtrKind, RegState, RegType};

/// How many branch decisions the path line keeps (the last ones: those
/// closest to the failure matter most).
pub(crate) const PATH_DECISIONS: usize = 8;

/// The register a message starts with (`R3 ...`).
fn msg_reg(msg: &str) -> Option<usize> {
    let rest = msg.strip_prefix('R')?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok().filter(|&r: &usize| r < 11)
}

/// `key=<int>` in `text`.
fn field(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A memory access: (base register, offset, size, is a write).
fn access(insn: &Insn) -> Option<(usize, i64, i64, bool)> {
    match *insn {
        Insn::Load { size, src, off, .. } => {
            Some((src.index(), off as i64, size.bytes() as i64, false))
        }
        Insn::Store { size, dst, off, .. } => {
            Some((dst.index(), off as i64, size.bytes() as i64, true))
        }
        Insn::Atomic { size, dst, off, .. } => {
            Some((dst.index(), off as i64, size.bytes() as i64, true))
        }
        _ => None,
    }
}

fn bytes(n: i64) -> String {
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

fn verb(write: bool) -> &'static str {
    if write {
        "writes"
    } else {
        "reads"
    }
}

/// What a register holds, in words.
fn holds(r: &RegState) -> String {
    match r.ty {
        RegType::NotInit => "nothing (it was never written)".to_string(),
        RegType::Scalar => match r.var.const_value() {
            Some(v) => format!("the number {}", v as i64),
            None => "a number".to_string(),
        },
        RegType::Ptr(k) => format!("a pointer of type {}", k.name()),
    }
}

/// Why the instruction `insn` is unsafe, in plain words, from the kernel
/// message `msg`, its detail line `detail` (may be empty) and the frame
/// as it was before the instruction. `None` when no class fits.
pub(crate) fn why(msg: &str, detail: &str, insn: &Insn, frame: &Frame) -> Option<String> {
    let rn = msg_reg(msg);
    let reg = rn.map(|r| frame.regs[r]);
    let acc = access(insn).filter(|a| rn.is_none_or(|r| r == a.0));
    if msg.ends_with("offset is outside of the packet") {
        let (base, off, size, write) = acc?;
        let r = &frame.regs[base];
        let at = r.off + off;
        let shown = r.range.max(0);
        return Some(if at < 0 {
            format!(
                "{} {} at packet offset {at}, which is before the start of the packet",
                verb(write),
                bytes(size)
            )
        } else {
            let shown = match shown {
                0 => "has not shown that any byte of the packet is present".to_string(),
                1 => "has only shown that 1 byte of the packet is present".to_string(),
                n => format!("has only shown that {n} bytes of the packet are present"),
            };
            format!(
                "{} {} at packet offset {at}, but the program {shown} (by comparing a \
                 packet pointer with data_end); add a bounds check covering offset {} \
                 before this access",
                verb(write),
                bytes(size),
                at + size
            )
        });
    }
    if detail.starts_with("invalid access to map value")
        || msg.starts_with("invalid access to map value")
    {
        let text = if detail.is_empty() { msg } else { detail };
        let vs = field(text, "value_size=")?;
        let off = field(text, " off=")?;
        let size = field(text, " size=").unwrap_or(0);
        let dir = acc.map(|a| verb(a.3)).unwrap_or("accesses");
        let bound = if msg.contains("max value") {
            " (the largest offset the index allows)"
        } else {
            ""
        };
        return Some(format!(
            "{dir} {} at offset {off}{bound} of a map value that is only {} long; \
             check the index against the value size before this access",
            bytes(size),
            bytes(vs)
        ));
    }
    if msg.contains("min value is negative") {
        return Some(format!(
            "the offset added to R{} may be negative; compare it with 0 (or make it unsigned) \
             before using it as an index",
            rn?
        ));
    }
    if msg.contains("unbounded memory access") {
        return Some(format!(
            "the offset in R{} has no upper bound the verifier can see; limit it with a \
             comparison (`if (i < N)`) or a mask before the access",
            rn?
        ));
    }
    if msg.starts_with("invalid write to stack")
        || msg.starts_with("invalid read from stack")
        || msg.starts_with("invalid indirect read from stack")
    {
        // `off=O size=S` (constant offset) or `off O+V size S` (the
        // first byte found unwritten, V bytes into the access).
        let off = field(msg, " off=").or_else(|| field(msg, " off "));
        let size = field(msg, " size=").or_else(|| field(msg, " size "));
        let (off, size) = (off?, size?);
        let write = msg.starts_with("invalid write");
        if off < -512 || off + size > 0 {
            return Some(format!(
                "{} {} at stack offset {off}, outside the 512 bytes below the frame pointer \
                 that make up this function's stack",
                verb(write),
                bytes(size)
            ));
        }
        let who = if msg.contains("indirect") {
            "a helper would read"
        } else {
            "reads"
        };
        return Some(format!(
            "{who} {} at stack offset {off}, but some of them were never written on this \
             path; initialise the variable (e.g. `= {{}}` or memset) before it is read",
            bytes(size)
        ));
    }
    if msg.starts_with("invalid bpf_context access") {
        return Some(format!(
            "offset {} of the context is not a field this program type may access with \
             {}; see the context struct of the program type (e.g. use the helper or \
             field meant for it)",
            field(msg, " off=").unwrap_or(0),
            bytes(field(msg, " size=").unwrap_or(0)),
        ));
    }
    if let Some(ty) = msg
        .split_once("invalid mem access '")
        .and_then(|(_, t)| t.strip_suffix('\''))
    {
        let r = rn?;
        return Some(match reg.map(|g| g.ty) {
            Some(RegType::Ptr(PtrKind::MapValueOrNull { .. })) => format!(
                "R{r} comes from a map lookup and may be NULL (the key may be missing); \
                 test it (`if (!p) return ...;`) before dereferencing it"
            ),
            Some(RegType::Scalar) => format!(
                "R{r} holds {}, not a pointer, so it cannot be dereferenced",
                holds(&frame.regs[r])
            ),
            Some(RegType::NotInit) => format!("R{r} was never written on this path"),
            _ if ty.ends_with("_or_null") => {
                format!("R{r} may be NULL ({ty}); test it against 0 before dereferencing it")
            }
            _ => format!(
                "R{r} is a pointer of type {ty}, which this program may not access this way"
            ),
        });
    }
    if msg.ends_with("!read_ok") {
        let r = rn?;
        return Some(if r == 0 && matches!(insn, Insn::Exit) {
            "R0 (the return value) is not set on this path; set it before `exit`".to_string()
        } else {
            format!("R{r} is read but was never written on this path")
        });
    }
    if msg.starts_with("At program exit the register R0") || msg.starts_with("At callback return") {
        let r0 = &frame.regs[0];
        let range = msg
            .split_once("should have been in ")
            .map_or("the allowed range", |(_, r)| r);
        let who = if msg.starts_with("At callback") {
            "a callback"
        } else {
            "this program type"
        };
        return Some(format!(
            "the value returned (R0, {}) may lie outside {range}, the values {who} may return",
            match r0.var.const_value() {
                Some(v) => format!("= {}", v as i64),
                None => format!("in [{}, {}]", r0.var.smin(), r0.var.smax()),
            }
        ));
    }
    if msg.starts_with("R0 leaks addr as return value") {
        return Some("the program returns a pointer; it must return a number".to_string());
    }
    if msg.starts_with("Unreleased reference") || detail.starts_with("Unreleased reference") {
        let at = field(msg, "alloc_insn=").or_else(|| field(detail, "alloc_insn="))?;
        return Some(format!(
            "the resource acquired at insn {at} is not released on this path (submit, \
             discard or release it before `exit`)"
        ));
    }
    if let Some((_, expected)) = msg.split_once(" expected=") {
        let r = rn?;
        return Some(format!(
            "the helper needs R{r} to be {}, but R{r} holds {}",
            match expected {
                "map_ptr" => "a map (load it with `r = map` / a map reference)",
                "fp" => "a pointer to the stack",
                "ctx" => "the program's context pointer",
                "scalar" => "a number",
                "func" => "a callback function",
                "mem" => "a pointer to memory",
                other => other,
            },
            holds(&frame.regs[r])
        ));
    }
    if msg.ends_with("prohibited") {
        let r = rn?;
        return Some(format!(
            "this arithmetic on R{r} ({}) is not allowed: a pointer may only have a number \
             added or subtracted, and some pointer types (pkt_end, maps) not even that",
            holds(&frame.regs[r])
        ));
    }
    if msg.starts_with("misaligned") {
        let size = acc.map_or(0, |a| a.2);
        return Some(format!(
            "the {} access is not aligned to its size; use an offset that is a multiple \
             of {size}",
            bytes(size)
        ));
    }
    if msg.starts_with("back-edge from insn") {
        return Some(
            "jumps backwards (a loop), which unprivileged programs may not do".to_string(),
        );
    }
    if msg.starts_with("unreachable insn") {
        return Some("no path from the program's start reaches this instruction".to_string());
    }
    if msg.starts_with("infinite loop detected") {
        return Some(
            "the loop comes back to this instruction in exactly the same state, so it can \
             never end; make its exit condition depend on a counter"
                .to_string(),
        );
    }
    if msg.starts_with("BPF program is too large") {
        return Some(
            "the verifier gave up after its instruction budget: the program (or a loop in \
             it whose bound it cannot see) has too many paths to check"
                .to_string(),
        );
    }
    if msg == "div by zero" {
        return Some("the divisor is the constant 0".to_string());
    }
    if msg.starts_with("frame pointer is read only") {
        return Some("R10 (the frame pointer) cannot be written".to_string());
    }
    if msg.starts_with("cannot write into packet") {
        return Some("this program type may only read the packet".to_string());
    }
    None
}

/// The branch decisions and calls along `pcs` (the instructions of the
/// rejected path in order, `end` the failing one), the last
/// [`PATH_DECISIONS`] of them; `None` for a straight-line path.
pub(crate) fn path(slots: &[Option<Insn>], pcs: &[usize], end: usize) -> Option<String> {
    // A decision repeated back to back (a loop going round) counts once,
    // with its repeat count.
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut push = |d: String| match out.last_mut() {
        Some((last, n)) if *last == d => *n += 1,
        _ => out.push((d, 1)),
    };
    for (i, &pc) in pcs.iter().enumerate() {
        let next = pcs.get(i + 1).copied().unwrap_or(end);
        let Some(insn) = slots.get(pc).copied().flatten() else {
            continue;
        };
        let target = insn.branch_target(Pc(pc)).map(|p| p.0);
        match insn {
            Insn::Jmp { .. } => {
                let taken = Some(next) == target && next != pc + 1;
                push(format!(
                    "insn {pc} `{}` {}",
                    format_llvm(&insn),
                    if taken { "taken" } else { "not taken" }
                ));
            }
            Insn::CallLocal(_) => {
                push(format!("call at insn {pc} into subprogram at {next}"));
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return None;
    }
    let skip = out.len().saturating_sub(PATH_DECISIONS);
    let shown: Vec<String> = out[skip..]
        .iter()
        .map(|(d, n)| {
            if *n > 1 {
                format!("{d} (x{n})")
            } else {
                d.clone()
            }
        })
        .collect();
    let mut text = shown.join("; ");
    if skip > 0 {
        text = format!("... {text}");
    }
    Some(format!("path: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::{Cond, Reg, Size, Src, Width};

    fn frame() -> Frame {
        Frame::new(0, 0, 0)
    }

    #[test]
    fn packet_range_in_words() {
        let mut f = frame();
        let mut r1 = RegState::ptr(PtrKind::Packet);
        r1.range = 14;
        f.regs[1] = r1;
        let insn = Insn::Load {
            size: Size::B,
            sign_extend: false,
            dst: Reg::R1,
            src: Reg::R1,
            off: 23,
        };
        let w = why("R1 offset is outside of the packet", "", &insn, &f).unwrap();
        assert!(w.starts_with("reads 1 byte at packet offset 23"), "{w}");
        assert!(w.contains("only shown that 14 bytes"), "{w}");
        assert!(w.contains("covering offset 24"), "{w}");
    }

    #[test]
    fn null_and_scalar_derefs_use_the_register_type() {
        let mut f = frame();
        f.regs[0] = RegState::ptr(PtrKind::MapValueOrNull { map: 0 });
        let insn = Insn::Load {
            size: Size::W,
            sign_extend: false,
            dst: Reg::R1,
            src: Reg::R0,
            off: 0,
        };
        let w = why("R0 invalid mem access 'map_value_or_null'", "", &insn, &f).unwrap();
        assert!(w.contains("may be NULL"), "{w}");
        f.regs[0] = RegState::unknown();
        let w = why("R0 invalid mem access 'scalar'", "", &insn, &f).unwrap();
        assert!(w.contains("R0 holds a number, not a pointer"), "{w}");
    }

    #[test]
    fn unknown_messages_get_no_explanation() {
        assert_eq!(why("something new", "", &Insn::Exit, &frame()), None);
    }

    #[test]
    fn path_lists_decisions_in_order() {
        let jmp = |off| Insn::Jmp {
            width: Width::W64,
            cond: Cond::Eq,
            dst: Reg::R0,
            src: Src::Imm(0),
            off,
        };
        // 0: if r0 == 0 goto +1 (taken to 2); 2: if r0 == 0 goto +5 (not taken).
        let slots = vec![
            Some(jmp(1)),
            Some(Insn::Exit),
            Some(jmp(5)),
            Some(Insn::Exit),
        ];
        let p = path(&slots, &[0, 2], 3).unwrap();
        assert!(
            p.starts_with("path: insn 0 `if r0 == 0x0 goto +0x1` taken; insn 2"),
            "{p}"
        );
        assert!(p.ends_with("not taken"), "{p}");
        assert_eq!(path(&slots, &[1], 3), None);
        // A loop round the same jump: once, with its count.
        let slots = vec![Some(jmp(-1)), Some(Insn::Exit)];
        let p = path(&slots, &[0, 0, 0], 0).unwrap();
        assert_eq!(p, "path: insn 0 `if r0 == 0x0 goto -0x1` taken (x3)");
    }
}
