//! # bpfkit-conformance-plugin
//!
//! The pieces of the `bpfkit-conformance-plugin` binary, which speaks the
//! bpf_conformance plugin protocol (see `shared/conformance/README.md`):
//! hex parsing, ELF extraction, the helpers the suite expects (uBPF's 0-5),
//! and running a program the way the suite's tests assume (r1 = address of
//! a writable copy of the memory or 0, r2 = its length, r10 = stack top).
//! The in-process conformance test uses the same functions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use bpfkit_interp::Interpreter;
use bpfkit_isa::{disasm, Pc, Program};
use bpfkit_runtime::{Memory, RegionKind, Trap};
use object::{Object, ObjectSection, ObjectSymbol};

/// Instruction budget for one run: far above any conformance test, low
/// enough that a runaway program ends in a few seconds.
pub const BUDGET: u64 = 1 << 31;

pub use bpfkit_testdata::conformance_helpers;

/// Parses hex bytes as the protocol writes them: pairs of hex digits,
/// separated by white space or not, an optional `0x` on each word.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let w = word
            .strip_prefix("0x")
            .or_else(|| word.strip_prefix("0X"))
            .unwrap_or(word);
        if w.len() % 2 != 0 || !w.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("invalid hex '{word}'"));
        }
        for i in (0..w.len()).step_by(2) {
            out.push(u8::from_str_radix(&w[i..i + 2], 16).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// The program bytes of a small ELF object as the suite's ELF mode makes
/// it: the function `main` in section `.text` (or `xdp`), from its offset
/// to its size (or to the section's end when the size is 0).
pub fn elf_program(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF object: {e}"))?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok("main"))
        .ok_or("no symbol 'main'")?;
    let section_index = sym.section_index().ok_or("symbol 'main' has no section")?;
    let section = file
        .section_by_index(section_index)
        .map_err(|e| e.to_string())?;
    let name = section.name().map_err(|e| e.to_string())?;
    if name != ".text" && name != "xdp" {
        return Err(format!("'main' is in section '{name}', not .text or xdp"));
    }
    let data = section.data().map_err(|e| e.to_string())?;
    let start = sym.address().wrapping_sub(section.address());
    let end = match sym.size() {
        0 => data.len() as u64,
        n => start.saturating_add(n),
    };
    if start > end || end > data.len() as u64 {
        return Err("symbol 'main' lies outside its section".into());
    }
    Ok(data[start as usize..end as usize].to_vec())
}

/// Runs `prog` on the x86-64 JIT with a writable copy of `mem`, exactly as
/// [`run_interp`] does on the interpreter (same helpers, same budget).
/// `Err` with a message when the JIT cannot compile here (not x86-64 Linux).
pub fn run_jit(prog: &Program, mem: &[u8]) -> Result<Result<u64, Trap>, String> {
    let helpers = conformance_helpers();
    let mut jit = bpfkit_jit::Jit::builder()
        .budget(BUDGET)
        .build(prog, &helpers)
        .map_err(|e| format!("jit: {e}"))?;
    let mut copy = mem.to_vec();
    let mut m = Memory::new();
    let addr = if copy.is_empty() {
        0
    } else {
        m.add(RegionKind::Context, &mut copy)
    };
    Ok(jit.run(&mut m, &[addr, mem.len() as u64]))
}

/// Runs `prog` on the interpreter with a writable copy of `mem`: r1 = its
/// address (0 when empty), r2 = its length. With `debug`, writes one line
/// per executed instruction to stderr.
pub fn run_interp(prog: &Program, mem: &[u8], debug: bool) -> Result<u64, Trap> {
    // Preparing cannot fail for programs of fewer than 2^32 slots.
    let mut vm = match Interpreter::builder()
        .budget(BUDGET)
        .build(prog, &conformance_helpers())
    {
        Ok(vm) => vm,
        Err(e) => {
            return Err(Trap::new(
                Pc(0),
                bpfkit_runtime::TrapKind::Helper {
                    id: bpfkit_runtime::HelperId(u32::MAX),
                    message: e.to_string(),
                },
            ))
        }
    };
    let mut copy = mem.to_vec();
    let mut m = Memory::new();
    let addr = if copy.is_empty() {
        0
    } else {
        m.add(RegionKind::Context, &mut copy)
    };
    let args = [addr, mem.len() as u64];
    if debug {
        vm.run_traced(&mut m, &args, None, &mut |pc, insn, regs| {
            let text = insn.map_or_else(|| "<end>".to_string(), disasm::format_ubpf);
            eprintln!("{pc:>5}: {text:32} {regs:x?}");
        })
    } else {
        vm.run(&mut m, &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex() {
        assert_eq!(parse_hex("00  01  ff  "), Ok(vec![0, 1, 0xff]));
        assert_eq!(parse_hex("b7000000 0x2a"), Ok(vec![0xb7, 0, 0, 0, 0x2a]));
        assert!(parse_hex("0").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_hex(""), Ok(vec![]));
    }

    #[test]
    fn helpers_behave_like_ubpf() {
        use bpfkit_isa::asm::{assemble, Syntax};
        let run = |text: &str, mem: &[u8]| {
            let p = Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap();
            run_interp(&p, mem, false)
        };
        assert_eq!(
            run(
                "mov %r1, 0x101\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall 0\nexit",
                &[]
            ),
            Ok(0x01_0203_0405)
        );
        assert_eq!(
            run(
                "mov %r6, %r1\ncall 1\nldxb %r0, [%r6+1]\nexit",
                &[0, 42 ^ 7]
            ),
            Ok(7)
        );
        assert_eq!(run("mov %r1, 17\ncall 3\nexit", &[]), Ok(4));
        assert_eq!(
            run("mov %r2, %r1\nadd %r2, 3\ncall 4\nexit", b"ab\0ac\0"),
            Ok(-1i64 as u64)
        );
        assert_eq!(run("mov %r2, %r1\ncall 4\nexit", b"ab\0"), Ok(0));
        assert_eq!(run("mov %r1, 0\ncall 5\nmov %r0, 3\nexit", &[]), Ok(0));
        assert_eq!(run("mov %r1, 9\ncall 5\nexit", &[]), Ok(9));
    }

    #[test]
    fn elf_garbage_is_an_error() {
        assert!(elf_program(b"not an elf").is_err());
        assert!(elf_program(&[0x7f, b'E', b'L', b'F', 2, 1, 1]).is_err());
    }
}
