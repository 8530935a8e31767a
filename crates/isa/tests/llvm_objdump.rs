//! The llvm-syntax disassembler against `llvm-objdump-19 -d`, instruction
//! for instruction, on the 313 conformance programs and on every program
//! section of the corpus objects; and the llvm-syntax assembler reading the
//! disassembly back to identical bytes.
//!
//! Normalisation (everything else must match character for character):
//! - objdump appends ` <label>` or ` <sym+0x..>` to jump targets, which
//!   depends on the object's symbols; it is removed before comparing.
//! - Default `llvm-objdump -d` cannot print most 32-bit atomics
//!   (`<unknown>`) and prints a 32-bit `fetch add` as a plain add; for
//!   32-bit atomics we compare with `llvm-objdump -d --mattr=+alu32`, the
//!   form our disassembler prints.
//! - Objects are dumped with `--triple=bpfel` because some corpus objects
//!   (ovs/datapath.o) have `e_machine` 0.
//!
//! The other direction uses `llvm-mc-19` as the oracle: our llvm text,
//! assembled by llvm-mc, gives our bytes. llvm text cannot say whether
//! `call N` is a helper, local or kfunc call (llvm-mc always writes a helper
//! call, src 0), so the src field of calls is not compared.

mod common;

use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::disasm::{format_llvm, format_llvm_program};
use bpfkit_isa::{encode_all, Insn, Program, Size};
use common::objdump::{self, DumpSection};
use std::path::Path;

fn is_atomic32(insn: &Insn) -> bool {
    matches!(insn, Insn::Atomic { size: Size::W, .. })
}

/// Compares every instruction of `bytes` with objdump's two dumps of the
/// same section; returns one message per mismatch.
fn compare(label: &str, bytes: &[u8], plain: &DumpSection, alu32: &DumpSection) -> Vec<String> {
    let prog = match Program::decode(bytes) {
        Ok(p) => p,
        Err(e) => return vec![format!("{label}: does not decode: {e}")],
    };
    let mut errs = Vec::new();
    for (pc, insn) in prog.iter() {
        let dump = if is_atomic32(insn) { alu32 } else { plain };
        let ours = format_llvm(insn);
        match dump.lines.get(&pc.0) {
            Some(theirs) => {
                let theirs = objdump::strip_target_annotation(theirs);
                if ours != theirs {
                    errs.push(format!("{label} insn {pc}: ours '{ours}' llvm '{theirs}'"));
                }
            }
            None => errs.push(format!(
                "{label} insn {pc}: llvm printed nothing (ours '{ours}')"
            )),
        }
    }
    // objdump shows exactly one line per instruction (lddw on one line).
    if plain.lines.len() != prog.insns().len() {
        errs.push(format!(
            "{label}: llvm printed {} lines for {} instructions",
            plain.lines.len(),
            prog.insns().len()
        ));
    }
    errs
}

/// disasm -> assemble (llvm syntax) -> identical bytes.
fn round_trip(label: &str, bytes: &[u8]) -> Option<String> {
    let prog = Program::decode(bytes).ok()?;
    let text = format_llvm_program(&prog);
    match assemble(&text, Syntax::Llvm) {
        Ok(insns) if encode_all(&insns) == bytes => None,
        Ok(_) => Some(format!("{label}: reassembled bytes differ")),
        Err(e) => Some(format!("{label}: {e}")),
    }
}

fn conformance_programs(shared: &Path) -> Vec<(String, Vec<u8>)> {
    common::conformance_files(shared)
        .into_iter()
        .map(|f| {
            let bytes = match &f.raw {
                Some(words) => words.iter().flat_map(|w| w.to_le_bytes()).collect(),
                None => encode_all(&assemble(&f.asm, Syntax::Ubpf).unwrap()),
            };
            let name = format!("prog_{}", f.name.trim_end_matches(".data"));
            (name, bytes)
        })
        .collect()
}

fn take_section(dumps: &mut Vec<DumpSection>, name: &str) -> Option<DumpSection> {
    let i = dumps.iter().position(|d| d.name == name)?;
    Some(dumps.remove(i))
}

#[test]
fn conformance_disassembly_matches_llvm_objdump() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    if !objdump::available() {
        return;
    }
    let progs = conformance_programs(&shared);
    assert_eq!(progs.len(), 313);
    let dir = std::env::temp_dir().join(format!("bpfkit-isa-objdump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("conformance.o");
    std::fs::write(&path, common::build_object(&progs)).unwrap();
    let mut plain = objdump::dump(&path, &[]);
    let mut alu32 = objdump::dump(&path, &["--mattr=+alu32"]);
    let _ = std::fs::remove_dir_all(&dir);
    let mut errs = Vec::new();
    let mut compared = 0;
    let mut atomics32 = 0;
    for (name, bytes) in &progs {
        let (Some(mut p), Some(a)) = (
            take_section(&mut plain, name),
            take_section(&mut alu32, name),
        ) else {
            errs.push(format!("{name}: missing from objdump output"));
            continue;
        };
        errs.extend(compare(name, bytes, &p, &a));
        compared += p.lines.len();
        let prog = Program::decode(bytes).unwrap();
        atomics32 += prog.insns().iter().filter(|i| is_atomic32(i)).count();
        // The comparison notices a changed line.
        p.lines.insert(0, "r0 = 0x12345".to_string());
        assert!(
            !compare(name, bytes, &p, &a).is_empty()
                || format_llvm(&prog.insns()[0]) == "r0 = 0x12345"
        );
    }
    assert!(
        errs.is_empty(),
        "{} mismatches:\n{}",
        errs.len(),
        errs.join("\n")
    );
    assert!(compared > 2500, "only {compared} instructions compared");
    assert!(
        atomics32 > 10,
        "the 32-bit atomics normalisation was exercised"
    );
}

#[test]
fn corpus_disassembly_matches_llvm_objdump() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    if !objdump::available() {
        return;
    }
    let corpus = shared.join("corpus/ebpf-samples");
    if !corpus.is_dir() {
        eprintln!("skipping: {} not found", corpus.display());
        return;
    }
    let objects = objdump::objects_under(&corpus);
    assert!(!objects.is_empty());
    let mut errs = Vec::new();
    let (mut sections, mut insns) = (0, 0);
    for obj in &objects {
        let data = std::fs::read(obj).unwrap();
        let mut plain = objdump::dump(obj, &[]);
        let mut alu32 = objdump::dump(obj, &["--mattr=+alu32"]);
        let rel = obj.strip_prefix(&corpus).unwrap().display().to_string();
        for sec in common::program_sections(&data) {
            let label = format!("{rel} [{}]", sec.name);
            let (Some(p), Some(a)) = (
                take_section(&mut plain, &sec.name),
                take_section(&mut alu32, &sec.name),
            ) else {
                errs.push(format!("{label}: missing from objdump output"));
                continue;
            };
            errs.extend(compare(&label, &sec.bytes, &p, &a));
            sections += 1;
            insns += p.lines.len();
        }
    }
    assert!(
        errs.is_empty(),
        "{} mismatches:\n{}",
        errs.len(),
        errs.join("\n")
    );
    eprintln!(
        "compared {insns} instructions in {sections} sections of {} objects",
        objects.len()
    );
    assert!(sections > 100);
}

/// Assembles `progs` (name, bytes) with llvm-mc-19 from our text and
/// compares the section bytes.
fn compare_with_llvm_mc(progs: &[(String, Vec<u8>)]) -> Vec<String> {
    use object::{Object, ObjectSection};
    let mut src = String::new();
    let mut decoded = Vec::new();
    for (i, (name, bytes)) in progs.iter().enumerate() {
        let Ok(prog) = Program::decode(bytes) else {
            continue;
        };
        src.push_str(&format!(".section p{i},\"ax\"\n"));
        for insn in prog.insns() {
            src.push_str(&format_llvm(insn));
            src.push('\n');
        }
        decoded.push((i, name, bytes, prog));
    }
    let dir = std::env::temp_dir().join(format!(
        "bpfkit-isa-mc-{}-{}",
        std::process::id(),
        progs.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (s_path, o_path) = (dir.join("in.s"), dir.join("out.o"));
    std::fs::write(&s_path, &src).unwrap();
    let out = std::process::Command::new("llvm-mc-19")
        .args(["-triple", "bpfel", "-mattr=+alu32", "-filetype=obj", "-o"])
        .arg(&o_path)
        .arg(&s_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "llvm-mc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&o_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let file = object::File::parse(&*data).unwrap();
    let mut errs = Vec::new();
    for (i, name, bytes, prog) in decoded {
        let sec = file.section_by_name(&format!("p{i}")).unwrap();
        let mut theirs = sec.data().unwrap().to_vec();
        if theirs.len() != bytes.len() {
            errs.push(format!(
                "{name}: llvm-mc wrote {} bytes, ours {}",
                theirs.len(),
                bytes.len()
            ));
            continue;
        }
        for (pc, insn) in prog.iter() {
            if matches!(insn, Insn::CallLocal(_) | Insn::CallKfunc { .. }) {
                theirs[pc.0 * 8 + 1] = bytes[pc.0 * 8 + 1];
            }
            let range = pc.0 * 8..(pc.0 + insn.slots()) * 8;
            if theirs[range.clone()] != bytes[range.clone()] {
                errs.push(format!(
                    "{name} insn {pc}: '{}' llvm-mc {:02x?} ours {:02x?}",
                    format_llvm(insn),
                    &theirs[range.clone()],
                    &bytes[range]
                ));
            }
        }
    }
    errs
}

fn llvm_mc_available() -> bool {
    match std::process::Command::new("llvm-mc-19")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipping: llvm-mc-19 is not installed");
            false
        }
    }
}

#[test]
fn llvm_mc_assembles_our_text_to_our_bytes() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    if !llvm_mc_available() {
        return;
    }
    let mut progs = conformance_programs(&shared);
    let corpus = shared.join("corpus/ebpf-samples");
    if corpus.is_dir() {
        for obj in objdump::objects_under(&corpus) {
            let data = std::fs::read(&obj).unwrap();
            for sec in common::program_sections(&data) {
                progs.push((format!("{} [{}]", obj.display(), sec.name), sec.bytes));
            }
        }
    }
    let errs = compare_with_llvm_mc(&progs);
    assert!(
        errs.is_empty(),
        "{} mismatches:\n{}",
        errs.len(),
        errs.join("\n")
    );
}

#[test]
fn llvm_syntax_round_trips_conformance_programs() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let errs: Vec<String> = conformance_programs(&shared)
        .iter()
        .filter_map(|(name, bytes)| round_trip(name, bytes))
        .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn llvm_syntax_round_trips_corpus_sections() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let corpus = shared.join("corpus/ebpf-samples");
    if !corpus.is_dir() {
        eprintln!("skipping: {} not found", corpus.display());
        return;
    }
    let mut errs = Vec::new();
    let mut n = 0;
    for obj in objdump::objects_under(&corpus) {
        let data = std::fs::read(&obj).unwrap();
        for sec in common::program_sections(&data) {
            n += 1;
            let label = format!("{} [{}]", obj.display(), sec.name);
            if Program::decode(&sec.bytes).is_err() {
                errs.push(format!("{label}: does not decode"));
            } else if let Some(e) = round_trip(&label, &sec.bytes) {
                errs.push(e);
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert!(n > 100);
}
