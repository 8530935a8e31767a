//! Running `llvm-objdump-19` and reading its output, and walking the corpus.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tool the disassembler is compared with.
pub const OBJDUMP: &str = "llvm-objdump-19";

/// Whether llvm-objdump-19 can be run; prints why not.
pub fn available() -> bool {
    match Command::new(OBJDUMP).arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipping: {OBJDUMP} is not installed");
            false
        }
    }
}

/// One section of objdump's output: its name and, per slot index, the
/// instruction text.
pub struct DumpSection {
    pub name: String,
    pub lines: HashMap<usize, String>,
}

/// Runs `llvm-objdump-19 -d --triple=bpfel [extra] path` and parses it.
/// `--triple` is given because some corpus objects have `e_machine` 0.
pub fn dump(path: &Path, extra: &[&str]) -> Vec<DumpSection> {
    let out = Command::new(OBJDUMP)
        .args(["-d", "--triple=bpfel"])
        .args(extra)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {OBJDUMP}: {e}"));
    assert!(
        out.status.success(),
        "{OBJDUMP} failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `llvm-objdump -d` output. Instruction lines look like
/// `      12:\t61 12 04 00 00 00 00 00\tr2 = *(u32 *)(r1 + 0x4)`; the text is
/// everything after the second tab (`ld_pseudo` itself contains a tab).
pub fn parse(text: &str) -> Vec<DumpSection> {
    let mut out: Vec<DumpSection> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("Disassembly of section ") {
            out.push(DumpSection {
                name: name.strip_suffix(':').unwrap_or(name).to_string(),
                lines: HashMap::new(),
            });
            continue;
        }
        let Some((idx, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(idx) = idx.trim().parse::<usize>() else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('\t') else {
            continue;
        };
        let Some((_bytes, insn)) = rest.split_once('\t') else {
            continue;
        };
        if let Some(sec) = out.last_mut() {
            sec.lines.insert(idx, insn.to_string());
        }
    }
    out
}

/// Drops the ` <label>` / ` <sym+0x10>` that objdump appends to jump
/// targets: it depends on the symbols of the object, not on the
/// instruction.
pub fn strip_target_annotation(text: &str) -> &str {
    if text.ends_with('>') {
        if let Some(i) = text.rfind(" <") {
            return &text[..i];
        }
    }
    text
}

/// Every `.o` file under `dir`, recursively, sorted.
pub fn objects_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "o") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
