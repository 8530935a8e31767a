//! The loader on the corpus, on the committed example and on the
//! fixtures in `tests/fixtures` (built from the C sources there by
//! `tests/fixtures/build.sh`).

use bpfkit_abi::{MapType, ProgType};
use bpfkit_elf::{ElfError, LoadOptions, LoadedObject, MapOrigin};
use bpfkit_isa::{Imm64, Insn, Pc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

fn corpus_objects(corpus: &Path) -> Vec<PathBuf> {
    let mut stack = vec![corpus.to_path_buf()];
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
    objects.sort();
    objects
}

/// The value of `"key": "..."` in a JSON line (the verdicts file has no
/// escaped strings).
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": \"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

fn json_num(line: &str, key: &str) -> Option<usize> {
    let pat = format!("\"{key}\": ");
    let start = line.find(&pat)? + pat.len();
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[test]
fn example_links_its_subprogram() {
    let obj = LoadedObject::load(EXAMPLE).unwrap();
    assert_eq!(obj.programs.len(), 1);
    let p = &obj.programs[0];
    assert_eq!(
        (p.name.as_str(), p.section.as_str()),
        ("xdp_counter", "xdp")
    );
    assert_eq!(p.prog_type().unwrap(), ProgType::Xdp);
    assert_eq!(p.license, "Dual MIT/GPL");
    // xdp_counter (33 slots) then count_proto (10 slots) from .text.
    assert_eq!(p.insns.slot_count(), 43);
    assert_eq!(p.functions.len(), 2);
    assert_eq!(p.functions[1].name, "count_proto");
    assert_eq!(p.functions[1].start, Pc(33));
    // The call at slot 15 now reaches slot 33.
    assert_eq!(p.insns.get(Pc(15)), Some(&Insn::CallLocal(17)));
    // The map reference in count_proto: slot 3 of it.
    assert!(matches!(
        p.insns.get(Pc(36)),
        Some(Insn::LoadImm64 {
            imm: Imm64::MapIdx(0),
            ..
        })
    ));
    assert_eq!(obj.maps.len(), 1);
    let m = &obj.maps[0];
    assert_eq!(m.name, "counts");
    assert_eq!(m.origin, MapOrigin::Btf);
    assert_eq!(
        (m.def.map_type, m.def.key_size, m.def.value_size),
        (MapType::Array, 4, 8)
    );
    let (k, v) = obj.map_type_names(m);
    assert_eq!(k.as_deref(), Some("__u32"));
    assert_eq!(v.as_deref(), Some("__u64"));
    // Line info moves with the code.
    assert!(!p.line_info.is_empty());
    assert!(p.line_info.iter().any(|l| l.insn >= 33));
    assert!(p.line_at(Pc(0)).is_some());
}

/// Every corpus object loads, or fails with a specific error; what the
/// kernel's loader took (verdict accepted or rejected) loads here too.
#[test]
fn corpus_loads() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let corpus = shared.join("corpus/ebpf-samples");
    let objects = corpus_objects(&corpus);
    assert!(objects.len() > 100, "found {} objects", objects.len());
    let verdicts =
        std::fs::read_to_string(corpus.join("kernel-verdicts.jsonl")).unwrap_or_default();
    let mut kernel: BTreeMap<(String, String), (String, Option<usize>)> = BTreeMap::new();
    for line in verdicts.lines().filter(|l| !l.trim().is_empty()) {
        let (Some(o), Some(p), Some(v)) = (
            json_str(line, "object"),
            json_str(line, "program"),
            json_str(line, "verdict"),
        ) else {
            continue;
        };
        kernel.insert(
            (o.to_string(), p.to_string()),
            (v.to_string(), json_num(line, "insn_cnt")),
        );
    }
    let (mut loaded, mut progs, mut maps) = (0, 0, 0);
    let mut report = Vec::new();
    let mut errs = Vec::new();
    for path in &objects {
        let rel = path
            .strip_prefix(&corpus)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let data = std::fs::read(path).unwrap();
        let obj = match LoadOptions::default().keep_going(true).load(&data) {
            Ok(o) => o,
            Err(e) => {
                report.push(format!("{rel}: {e}"));
                if kernel
                    .iter()
                    .any(|((o, _), (v, _))| *o == rel && v != "skipped")
                {
                    errs.push(format!("{rel}: the kernel loaded it, we fail: {e}"));
                }
                continue;
            }
        };
        loaded += 1;
        maps += obj.maps.len();
        for f in &obj.failed {
            report.push(format!("{rel} [{}]: {}", f.name, f.error));
            if let Some((v, _)) = kernel.get(&(rel.clone(), f.name.clone())) {
                if v != "skipped" {
                    errs.push(format!(
                        "{rel} [{}]: kernel {v}, we fail: {}",
                        f.name, f.error
                    ));
                }
            }
        }
        for p in &obj.programs {
            progs += 1;
            // Every symbolic reference is in range of the map table.
            for insn in p.insns.insns() {
                if let Insn::LoadImm64 {
                    imm: Imm64::MapIdx(i) | Imm64::MapIdxValue { idx: i, .. },
                    ..
                } = *insn
                {
                    assert!((i as usize) < obj.maps.len(), "{rel}: map {i}");
                }
            }
            // The kernel's instruction count is the linked size.
            if let Some((_, Some(cnt))) = kernel.get(&(rel.clone(), p.name.clone())) {
                if p.insns.slot_count() != *cnt {
                    errs.push(format!(
                        "{rel} [{}]: {} slots, kernel insn_cnt {cnt}",
                        p.name,
                        p.insns.slot_count()
                    ));
                }
            }
        }
    }
    eprintln!(
        "{loaded}/{} objects loaded, {progs} programs, {maps} maps; not loaded:\n{}",
        objects.len(),
        report.join("\n")
    );
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    let _ = ElfError::NotElf;
}
