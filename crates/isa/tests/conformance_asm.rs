//! The ubpf-syntax assembler against the 313 bpf_conformance programs.

mod common;

use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::disasm::format_ubpf;
use bpfkit_isa::{encode_all, Program};

/// Every `-- asm` section assembles, and the result is a valid program
/// (every jump lands on an instruction).
#[test]
fn every_conformance_program_assembles() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let files = common::conformance_files(&shared);
    assert_eq!(files.len(), 313, "expected the 313 conformance files");
    let mut failures = Vec::new();
    for f in &files {
        match assemble(&f.asm, Syntax::Ubpf) {
            Ok(insns) => {
                if let Err(e) = Program::from_insns(insns) {
                    failures.push(format!("{}: invalid program: {e}", f.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", f.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The one `-- raw` section (lddw.data) equals the assembled bytes.
#[test]
fn raw_section_matches_assembled_bytes() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let files = common::conformance_files(&shared);
    let with_raw: Vec<_> = files.iter().filter(|f| f.raw.is_some()).collect();
    assert!(with_raw.iter().any(|f| f.name == "lddw.data"));
    for f in with_raw {
        let words = f.raw.as_ref().unwrap();
        let expected: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let insns = assemble(&f.asm, Syntax::Ubpf).unwrap();
        assert_eq!(encode_all(&insns), expected, "{}", f.name);
    }
}

/// assemble -> Program -> format_ubpf -> assemble gives identical bytes.
#[test]
fn ubpf_format_round_trips() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    for f in common::conformance_files(&shared) {
        let insns = assemble(&f.asm, Syntax::Ubpf).unwrap();
        let bytes = encode_all(&insns);
        let prog = Program::from_insns(insns).unwrap();
        let text: String = prog.insns().iter().map(|i| format_ubpf(i) + "\n").collect();
        let again = assemble(&text, Syntax::Ubpf)
            .unwrap_or_else(|e| panic!("{}: reassembling {e}\n{text}", f.name));
        assert_eq!(encode_all(&again), bytes, "{}:\n{text}", f.name);
        // And the decoder agrees with the assembler about every slot.
        assert_eq!(
            Program::decode(&bytes).unwrap().insns(),
            prog.insns(),
            "{}",
            f.name
        );
    }
}
