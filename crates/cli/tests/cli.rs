//! End-to-end tests of the `bpfkit` binary: success and error paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bpfkit");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/xdp_counter.o")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("bpfkit runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch file unique to this test process.
fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bpfkit-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// Exit 2 with exactly one line on stderr containing `needle`, no panic.
fn assert_usage_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "{err:?} should contain {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn disasm_example_names_map_helper_and_subprogram() {
    let o = run(&["disasm", example().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    // Headers name section and function.
    assert!(
        out.contains("section .text, function count_proto (static, 10 instructions):"),
        "{out}"
    );
    assert!(
        out.contains("section xdp, function xdp_counter (33 instructions):"),
        "{out}"
    );
    // Compared with `llvm-objdump-19 -dr examples/xdp_counter.o`: the map
    // relocation at .text+0x18 (slot 3) names `counts`, the call at
    // xdp+0x78 (slot 15) goes through `.text` to count_proto.
    assert!(out.contains("     3: r1 = 0x0 ll  ; map counts\n"), "{out}");
    assert!(
        out.contains("     5: call 0x1  ; bpf_map_lookup_elem\n"),
        "{out}"
    );
    assert!(out.contains("    15: call -0x1 <count_proto>\n"), "{out}");
    assert!(
        out.contains("    30: if r1 == 0x900 goto +0x1 <32>\n"),
        "{out}"
    );
    assert!(
        out.contains("     8: lock *(u64 *)(r0 + 0x0) += r1\n"),
        "{out}"
    );
}

#[test]
fn disasm_selects_one_program() {
    let path = example();
    for name in ["xdp_counter", "xdp"] {
        let o = run(&["disasm", path.to_str().unwrap(), "--prog", name]);
        assert_eq!(o.status.code(), Some(0));
        let out = stdout(&o);
        assert!(
            out.starts_with("section xdp, function xdp_counter"),
            "{out}"
        );
        assert!(!out.contains("count_proto ("), "{out}");
        assert_eq!(
            out.lines().filter(|l| l.contains(": ")).count(),
            33,
            "{out}"
        );
    }
}

#[test]
fn disasm_output_reassembles_to_the_section_bytes() {
    let data = std::fs::read(example()).unwrap();
    let obj = bpfkit_elf::Object::parse(&data).unwrap();
    for section in ["xdp", ".text"] {
        let o = run(&["disasm", example().to_str().unwrap(), "--prog", section]);
        let src = scratch(&format!("{section}.s"), &o.stdout);
        let o = run(&["asm", src.to_str().unwrap(), "--hex"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let expected: String = obj
            .program_section(section)
            .unwrap()
            .data
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(stdout(&o).trim_end(), expected, "{section}");
    }
}

/// Slots before and after the only function symbol are still shown.
#[test]
fn disasm_shows_slots_outside_functions() {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let sec = obj.add_section(Vec::new(), b"xdp".to_vec(), SectionKind::Text);
    // r0 = 1; r0 = 2; exit; exit  with a function covering slots 1..3.
    let code = [
        0xb7, 0, 0, 0, 1, 0, 0, 0, 0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0, 0x95, 0,
        0, 0, 0, 0, 0, 0,
    ];
    obj.append_section_data(sec, &code, 8);
    obj.add_symbol(Symbol {
        name: b"f".to_vec(),
        value: 8,
        size: 16,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(sec),
        flags: SymbolFlags::None,
    });
    let path = scratch("gap.o", &obj.write().unwrap());
    let o = run(&["disasm", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "section xdp, instructions 0..1 outside any function:\n     0: r0 = 0x1\n\n\
         section xdp, function f (2 instructions):\n     1: r0 = 0x2\n     2: exit\n\n\
         section xdp, instructions 3..4 outside any function:\n     3: exit\n"
    );
}

#[test]
fn disasm_errors_exit_2_with_one_line() {
    let path = example();
    let o = run(&["disasm", path.to_str().unwrap(), "--prog", "nope"]);
    assert_usage_error(&o, "no program named 'nope'");
    assert!(stderr(&o).contains("xdp_counter"), "lists the programs");

    let o = run(&["disasm", "/nonexistent/x.o"]);
    assert_usage_error(&o, "cannot read /nonexistent/x.o");

    let text = scratch("not-elf.o", b"hello, world\n");
    let o = run(&["disasm", text.to_str().unwrap()]);
    assert_usage_error(&o, "not an ELF file");

    let data = std::fs::read(&path).unwrap();
    let half = scratch("half.o", &data[..data.len() / 2]);
    let o = run(&["disasm", half.to_str().unwrap()]);
    assert_usage_error(&o, "malformed ELF");

    let mut x86 = data.clone();
    x86[18] = 62;
    let x86 = scratch("x86.o", &x86);
    let o = run(&["disasm", x86.to_str().unwrap()]);
    assert_usage_error(&o, "not a BPF object");
}

#[test]
fn usage_errors_and_help() {
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["disasm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("<OBJECT>"));
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("disasm") && stdout(&o).contains("asm"));
    let o = run(&["disasm", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("--prog"));
    let o = run(&["asm", "--help"]);
    assert!(stdout(&o).contains("--syntax") && stdout(&o).contains("--hex"));
    let o = run(&["asm", "x.s", "--syntax", "intel"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn asm_both_syntaxes_hex_and_raw() {
    // Bytes worked out by hand: mov r0, 1 (b7) ; jgt r1, 5, +1 (25) ; exit (95).
    let expected = "b700000001000000250101000500000095000000000000009500000000000000";
    let ubpf = scratch(
        "p.ubpf",
        b"mov %r0, 1\njgt %r1, 5, out # comment\nexit\nout:\nexit\n",
    );
    let o = run(&["asm", ubpf.to_str().unwrap(), "--syntax", "ubpf", "--hex"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{expected}\n"));

    let llvm = scratch("p.s", b"r0 = 0x1\nif r1 > 0x5 goto +0x1\nexit\nexit\n");
    let o = run(&["asm", llvm.to_str().unwrap(), "--hex"]);
    assert_eq!(stdout(&o), format!("{expected}\n"));

    let out = std::env::temp_dir().join(format!("bpfkit-cli-test-{}/p.bin", std::process::id()));
    let o = run(&["asm", llvm.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let raw = std::fs::read(&out).unwrap();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

#[test]
fn asm_errors_exit_2_with_one_line() {
    let bad = scratch("bad.s", b"mov %r0, 1\nfoo %r1\n");
    let o = run(&["asm", bad.to_str().unwrap(), "--syntax", "ubpf"]);
    assert_usage_error(&o, "line 2: unknown mnemonic 'foo'");
    assert!(stderr(&o).contains("bad.s"));

    let far = scratch("far.s", b"goto +5\nexit\n");
    let o = run(&["asm", far.to_str().unwrap()]);
    assert_usage_error(&o, "jump out of range");

    let empty = scratch("empty.s", b"# nothing\n");
    let o = run(&["asm", empty.to_str().unwrap()]);
    assert_usage_error(&o, "no instructions");

    let o = run(&["asm", "/nonexistent/p.s"]);
    assert_usage_error(&o, "cannot read /nonexistent/p.s");
}

/// Every corpus object disassembles (exit 0, every program section shown).
#[test]
fn disasm_whole_corpus() {
    let shared = match std::env::var_os("BPFKIT_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let corpus = shared.join("corpus/ebpf-samples");
    if !corpus.is_dir() {
        eprintln!(
            "skipping: {} not found (set BPFKIT_SHARED)",
            corpus.display()
        );
        return;
    }
    let mut stack = vec![corpus];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "o") {
                continue;
            }
            n += 1;
            let o = run(&["disasm", p.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(0), "{}: {}", p.display(), stderr(&o));
            assert!(!stdout(&o).contains("<invalid"), "{}", p.display());
            // Each section's listing assembles back to the section.
            let data = std::fs::read(&p).unwrap();
            let obj = bpfkit_elf::Object::parse(&data).unwrap();
            for sec in obj.programs() {
                let o = run(&["disasm", p.to_str().unwrap(), "--prog", sec.name]);
                let src = scratch("corpus.s", &o.stdout);
                let o = run(&["asm", src.to_str().unwrap(), "--hex"]);
                let expected: String = sec.data.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(
                    stdout(&o).trim_end(),
                    expected,
                    "{} [{}] {}",
                    p.display(),
                    sec.name,
                    stderr(&o)
                );
            }
        }
    }
    assert!(n > 100);
}

/// Corrupted objects give exit 0 or a one-line error with exit 2, never a
/// panic. (The reader itself is fuzzed by bpfkit-elf's proptests; this
/// covers the printing on top of it.)
#[test]
fn corrupted_objects_never_panic() {
    let data = std::fs::read(example()).unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut outcomes = [0usize; 3];
    for i in 0..150 {
        let mut bytes = data.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let path = scratch(&format!("mut{i}.o"), &bytes);
        let o = run(&["disasm", path.to_str().unwrap()]);
        let code = o.status.code().expect("exited normally");
        assert!(code == 0 || code == 2, "exit {code}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        if code == 2 {
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        }
        outcomes[code as usize] += 1;
        let _ = std::fs::remove_file(path);
    }
    assert!(outcomes[0] > 0, "some mutations leave a readable object");
}
