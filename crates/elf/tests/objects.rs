//! The object reader on the committed example, on the corpus, on broken
//! inputs, and on randomly mutated objects.

use bpfkit_elf::{ElfError, MapKind, Object, RelocKind, RelocTarget};
use bpfkit_isa::{Insn, Pc};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// examples/xdp_counter.o, built by examples/build.sh (committed).
const EXAMPLE: &[u8] = include_bytes!("../../../examples/xdp_counter.o");

fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BPFKIT_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: shared data folder {} not found (set BPFKIT_SHARED)",
            dir.display()
        );
        None
    }
}

/// Expected values from `llvm-readelf-19 -S -s -r examples/xdp_counter.o`.
#[test]
fn example_object() {
    let obj = Object::parse(EXAMPLE).unwrap();
    assert_eq!(obj.license(), Some("Dual MIT/GPL"));
    assert_eq!(obj.machine(), 247);
    let names: Vec<&str> = obj.programs().iter().map(|p| p.name).collect();
    assert_eq!(names, [".text", "xdp"]);

    let text = obj.program_section(".text").unwrap();
    assert_eq!(text.functions.len(), 1);
    let f = &text.functions[0];
    assert_eq!(
        (f.name, f.offset, f.size, f.global),
        ("count_proto", 0, 80, false)
    );
    assert_eq!(f.slot_count(), 10);

    let (xdp, main) = obj.function("xdp_counter").unwrap();
    assert_eq!(xdp.name, "xdp");
    assert_eq!((main.offset, main.size, main.global), (0, 264, true));
    assert_eq!(xdp.function_data(main).len(), 264);

    let entries: Vec<&str> = obj.entry_points().iter().map(|e| e.name()).collect();
    assert_eq!(entries, ["xdp_counter"], "count_proto is a subprogram");

    assert_eq!(obj.maps().len(), 1);
    let m = &obj.maps()[0];
    assert_eq!(
        (m.name, m.section, m.size, m.kind),
        ("counts", ".maps", 32, MapKind::Btf)
    );
    assert_eq!(obj.section_name(m.section_index), Some(".maps"));

    // The map reference: `r1 = 0x0 ll` at slot 3 of .text.
    let r = text.relocation_at(Pc(3)).unwrap();
    assert_eq!(r.kind, RelocKind::Imm64);
    assert_eq!(r.target, RelocTarget::Map { name: "counts" });
    let prog = text.decode().unwrap();
    assert!(matches!(prog.get(Pc(3)), Some(Insn::LoadImm64 { .. })));

    // The subprogram call: `call -0x1` at slot 15 of xdp, through the
    // section symbol `.text`.
    let r = xdp.relocation_at(Pc(15)).unwrap();
    assert_eq!(r.kind, RelocKind::Call32);
    assert_eq!(r.symbol, ".text");
    assert_eq!(r.call_target(-1), Some((text.index, Pc(0))));
    assert!(xdp.relocation_at(Pc(14)).is_none());
}

/// Legacy `maps` sections: xdp1_kern.o's `rxcnt` is a per-CPU array
/// (type 6) of 256 u64 values with u32 keys (`xxd` of its `maps` section).
#[test]
fn legacy_map_definition() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let data = std::fs::read(shared.join("corpus/ebpf-samples/linux/xdp1_kern.o")).unwrap();
    let obj = Object::parse(&data).unwrap();
    let m = obj.map("rxcnt").unwrap();
    assert_eq!(
        (m.kind, m.section, m.offset, m.size),
        (MapKind::Legacy, "maps", 0, 28)
    );
    let def = m.legacy_def().unwrap();
    assert_eq!(
        (
            def.map_type,
            def.key_size,
            def.value_size,
            def.max_entries,
            def.map_flags
        ),
        (6, 4, 8, 256, 0)
    );
    assert_eq!(def.extra.len(), 8);
    // The program references it by name at slot 52 (`llvm-objdump -dr`).
    let sec = obj.program_section("xdp1").unwrap();
    let refs: Vec<_> = sec
        .relocations
        .iter()
        .filter(|r| r.target == RelocTarget::Map { name: "rxcnt" })
        .collect();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].slot(), Pc(52));
    assert_eq!(refs[0].kind, RelocKind::Imm64);
    assert_eq!(obj.license(), Some("GPL"));
    let example = Object::parse(EXAMPLE).unwrap();
    assert!(
        example.maps()[0].legacy_def().is_none(),
        "BTF maps have no legacy def"
    );
    let btf = example.section_by_name(".BTF").unwrap();
    assert!(!btf.data.is_empty() && !btf.is_alloc());
    assert!(example.section_by_name("xdp").unwrap().is_executable());
}

/// The committed example object is what its source compiles to (program
/// bytes and relocations; debug info records paths, so it is not compared).
#[test]
fn example_object_is_fresh() {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".into());
    if std::process::Command::new(&clang)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: {clang} is not installed");
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/xdp_counter.c");
    let out = std::env::temp_dir().join(format!("bpfkit-elf-example-{}.o", std::process::id()));
    let status = std::process::Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let fresh = Object::parse(&fresh).unwrap();
    let committed = Object::parse(EXAMPLE).unwrap();
    assert_eq!(fresh.programs().len(), committed.programs().len());
    for (a, b) in fresh.programs().iter().zip(committed.programs()) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            a.data, b.data,
            "section {} differs: run examples/build.sh",
            a.name
        );
        assert_eq!(a.relocations, b.relocations);
        assert_eq!(a.functions, b.functions);
    }
}

/// The value of `"key": "..."` in a JSON line (the verdicts file has no
/// escaped strings).
fn json_str<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\": \"");
    let start = line
        .find(&pat)
        .map(|i| i + pat.len())
        .unwrap_or_else(|| panic!("{key} in {line}"));
    let end = line[start..].find('"').unwrap() + start;
    &line[start..end]
}

/// `entry_points` names exactly the programs the kernel was given, per
/// object, in the corpus' kernel-verdicts.jsonl.
#[test]
fn entry_points_match_kernel_verdicts() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let corpus = shared.join("corpus/ebpf-samples");
    let Ok(verdicts) = std::fs::read_to_string(corpus.join("kernel-verdicts.jsonl")) else {
        eprintln!("skipping: no kernel-verdicts.jsonl");
        return;
    };
    let mut expected: std::collections::BTreeMap<String, Vec<(String, String)>> =
        Default::default();
    for line in verdicts.lines().filter(|l| !l.trim().is_empty()) {
        expected
            .entry(json_str(line, "object").to_string())
            .or_default()
            .push((
                json_str(line, "section").to_string(),
                json_str(line, "program").to_string(),
            ));
    }
    assert!(expected.len() > 100);
    let mut errs = Vec::new();
    for (object, want) in &expected {
        let data = std::fs::read(corpus.join(object)).unwrap();
        let obj = Object::parse(&data).unwrap();
        let mut got: Vec<(String, String)> = obj
            .entry_points()
            .iter()
            .map(|e| (e.section.name.to_string(), e.name().to_string()))
            .collect();
        let mut want = want.clone();
        got.sort();
        want.sort();
        if got != want {
            errs.push(format!("{object}: ours {got:?}, kernel run {want:?}"));
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));

    // Programs without bpf-to-bpf calls were loaded as they are: their
    // size is the kernel's insn_cnt.
    let mut checked = 0;
    for line in verdicts.lines().filter(|l| l.contains("\"insn_cnt\"")) {
        let cnt: usize = line
            .split("\"insn_cnt\": ")
            .nth(1)
            .unwrap()
            .trim_end_matches(['}', ' '])
            .parse()
            .unwrap();
        let data = std::fs::read(corpus.join(json_str(line, "object"))).unwrap();
        let obj = Object::parse(&data).unwrap();
        let (section, program) = (json_str(line, "section"), json_str(line, "program"));
        let e = obj
            .entry_points()
            .into_iter()
            .find(|e| e.section.name == section && e.name() == program)
            .unwrap();
        let len = e
            .function
            .map_or(e.section.slot_count(), |f| f.slot_count());
        let prog =
            bpfkit_isa::Program::decode(&e.section.data[e.start().0 * 8..(e.start().0 + len) * 8]);
        let calls = prog.map_or(true, |p| {
            p.insns().iter().any(|i| matches!(i, Insn::CallLocal(_)))
        });
        if !calls {
            assert_eq!(len, cnt, "{line}");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked}");
}

#[test]
fn every_corpus_object_reads() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let corpus = shared.join("corpus/ebpf-samples");
    let mut stack = vec![corpus.clone()];
    let mut objects = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "o") {
                objects.push(p);
            }
        }
    }
    assert!(objects.len() > 100, "found {} objects", objects.len());
    let mut errs = Vec::new();
    let (mut sections, mut relocs, mut funcs) = (0, 0, 0);
    for path in &objects {
        let data = std::fs::read(path).unwrap();
        let obj = match Object::parse(&data) {
            Ok(o) => o,
            Err(e) => {
                errs.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        for sec in obj.programs() {
            sections += 1;
            funcs += sec.functions.len();
            let prog = match sec.decode() {
                Ok(p) => p,
                Err(e) => {
                    errs.push(format!("{} [{}]: {e}", path.display(), sec.name));
                    continue;
                }
            };
            for f in &sec.functions {
                assert!(f.offset + f.size <= sec.data.len() as u64);
                assert!(
                    prog.index_of(f.start()).is_some(),
                    "{} starts mid-lddw",
                    f.name
                );
            }
            for r in &sec.relocations {
                relocs += 1;
                let insn = prog.get(r.slot());
                let ok = match r.kind {
                    RelocKind::Imm64 => matches!(insn, Some(Insn::LoadImm64 { .. })),
                    RelocKind::Call32 => matches!(
                        insn,
                        Some(Insn::CallLocal(_) | Insn::Call(_) | Insn::CallKfunc { .. })
                    ),
                    _ => true,
                };
                if !ok {
                    errs.push(format!(
                        "{} [{}]: {:?} on {insn:?}",
                        path.display(),
                        sec.name,
                        r.kind
                    ));
                }
                if let RelocTarget::Map { name } = r.target {
                    assert!(obj.map(name).is_some(), "map {name} listed");
                }
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    eprintln!(
        "{} objects, {sections} program sections, {funcs} functions, {relocs} relocations",
        objects.len()
    );
    assert!(relocs > 100 && funcs > 100);
}

#[test]
fn unusable_inputs_are_named() {
    assert!(matches!(Object::parse(b"hello"), Err(ElfError::NotElf)));
    assert!(matches!(Object::parse(&[]), Err(ElfError::NotElf)));
    let mut elf32 = EXAMPLE.to_vec();
    elf32[4] = 1;
    assert_eq!(
        Object::parse(&elf32).unwrap_err().to_string(),
        "unsupported ELF layout: 32-bit ELF"
    );
    let mut be = EXAMPLE.to_vec();
    be[5] = 2;
    assert_eq!(
        Object::parse(&be).unwrap_err().to_string(),
        "unsupported ELF layout: big-endian ELF"
    );
    let mut x86 = EXAMPLE.to_vec();
    x86[18] = 62; // e_machine = EM_X86_64
    assert_eq!(
        Object::parse(&x86).unwrap_err().to_string(),
        "not a BPF object (e_machine 62)"
    );
    let truncated = &EXAMPLE[..EXAMPLE.len() / 2];
    let err = Object::parse(truncated).unwrap_err();
    assert!(matches!(err, ElfError::Malformed { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Mutated objects never panic the reader or the accessors.
    #[test]
    fn mutated_objects_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut data = EXAMPLE.to_vec();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        if let Some(c) = cut {
            data.truncate(c.index(data.len()));
        }
        if let Ok(obj) = Object::parse(&data) {
            for sec in obj.programs() {
                let _ = sec.decode();
                for f in &sec.functions {
                    let _ = sec.function_data(f);
                    let _ = sec.function_containing(f.offset);
                }
                for r in &sec.relocations {
                    let _ = sec.relocation_at(r.slot());
                    let _ = r.call_target(-1);
                    let _ = r.call_target(i32::MIN);
                }
            }
            let _ = obj.license();
            for m in obj.maps() {
                let _ = obj.section_name(m.section_index);
            }
        }
    }

    /// Edits confined to the header and section table, where most of the
    /// structure lives, in the header-heavy end of the file.
    #[test]
    fn mutated_headers_never_panic(
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 1..4),
        tail in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut data = EXAMPLE.to_vec();
        for (i, b) in edits {
            data[i] = b;
        }
        // The section header table sits at the end of clang's objects.
        let n = data.len();
        for (at, b) in tail {
            let i = n - 1 - at.index(n.min(2048));
            data[i] = b;
        }
        let _ = Object::parse(&data);
    }
}
