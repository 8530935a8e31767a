//! The loader on the corpus, on the committed example and on the
//! fixtures in `tests/fixtures` (built from the C sources there by
//! `tests/fixtures/build.sh`).

use bpfkit_abi::{MapType, ProgType};
use bpfkit_elf::{ElfError, LoadOptions, LoadedObject, MapOrigin};
use bpfkit_isa::{Imm64, Insn, Pc};
use proptest::prelude::*;
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
    let mut kernel_types: BTreeMap<(String, String), String> = BTreeMap::new();
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
        if let Some(t) = json_str(line, "prog_type") {
            kernel_types.insert((o.to_string(), p.to_string()), t.to_string());
        }
    }
    let (mut loaded, mut progs, mut maps) = (0, 0, 0);
    let mut report = Vec::new();
    let mut errs = Vec::new();
    let mut type_diffs = Vec::new();
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
            // The section name gives the type the kernel run used.
            if let Some(t) = kernel_types.get(&(rel.clone(), p.name.clone())) {
                // A type we derive is the one the kernel run used; free-form
                // legacy names (`filter`, `ingress`, `tail-1`) give none
                // and are counted.
                match p.prog_type() {
                    Ok(ours) if ours.name() != t => errs.push(format!(
                        "{rel} [{}] section {}: type {}, the kernel run used {t}",
                        p.name,
                        p.section,
                        ours.name()
                    )),
                    Ok(_) => {}
                    Err(_) => type_diffs.push(format!("{rel} [{}] {} ({t})", p.name, p.section)),
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
    eprintln!(
        "{} programs whose section names no type (the kernel run's in parentheses):\n{}",
        type_diffs.len(),
        type_diffs.join("\n")
    );
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    let _ = ElfError::NotElf;
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// BTF maps of every shape, global data, subprograms, callbacks.
#[test]
fn btf_maps_global_data_and_subprograms() {
    let data = fixture("features.o");
    let obj = LoadedObject::load(&data).unwrap();
    let btf = obj.btf.as_ref().unwrap();
    let names: Vec<&str> = obj.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["inner_a", "inner_b", "outer", "jumps", "flows", ".bss", ".data", ".rodata"]
    );
    let (_, flows) = obj.map("flows").unwrap();
    assert_eq!(
        (
            flows.def.map_type,
            flows.def.key_size,
            flows.def.value_size,
            flows.def.max_entries,
            flows.def.map_flags
        ),
        (MapType::Hash, 16, 56, 1024, 1)
    );
    assert_eq!(flows.pinning, 1);
    assert_eq!(
        obj.map_type_names(flows),
        (Some("struct flow_key".into()), Some("struct stats".into()))
    );
    let (_, outer) = obj.map("outer").unwrap();
    assert_eq!(outer.def.map_type, MapType::ArrayOfMaps);
    assert_eq!((outer.def.key_size, outer.def.value_size), (4, 4));
    let inner = outer.def.inner.as_deref().unwrap();
    assert_eq!(
        (
            inner.map_type,
            inner.key_size,
            inner.value_size,
            inner.max_entries
        ),
        (MapType::Array, 4, 8, 4)
    );
    let slots: Vec<(u32, &str)> = outer
        .initial_values
        .iter()
        .map(|s| (s.index, s.target.as_str()))
        .collect();
    assert_eq!(slots, [(0, "inner_a"), (2, "inner_b")]);
    let (_, jumps) = obj.map("jumps").unwrap();
    assert_eq!(jumps.def.map_type, MapType::ProgArray);
    assert_eq!(
        (
            jumps.def.key_size,
            jumps.def.value_size,
            jumps.def.max_entries
        ),
        (4, 4, 8)
    );
    assert_eq!(jumps.initial_values.len(), 1);
    assert_eq!(
        (
            jumps.initial_values[0].index,
            jumps.initial_values[0].target.as_str()
        ),
        (1, "tail0")
    );

    // Global data: .bss zeros, .data initialised, .rodata frozen.
    let (bss_idx, bss) = obj.map(".bss").unwrap();
    assert_eq!(bss.initial_data.as_deref(), Some(&[0u8; 8][..]));
    assert!(!bss.frozen && bss.is_global_data());
    let (_, d) = obj.map(".data").unwrap();
    assert_eq!(&d.initial_data.as_ref().unwrap()[..4], &7u32.to_le_bytes());
    let (_, ro) = obj.map(".rodata").unwrap();
    assert!(ro.frozen);
    assert_eq!(ro.def.map_flags, bpfkit_abi::map_flags::RDONLY_PROG);
    let ro_data = ro.initial_data.as_ref().unwrap();
    assert_eq!(&ro_data[..4], &100u32.to_le_bytes());
    assert_eq!(&ro_data[4..11], b"bpfkit\0");
    assert_eq!(
        btf.format_value(ro.value_type.unwrap(), ro_data),
        r#"{"limit": 100, "banner": "bpfkit"}"#
    );
    assert_eq!(
        obj.format_value(ro, ro_data).as_deref(),
        Some(r#"{"limit": 100, "banner": "bpfkit"}"#)
    );
    assert_eq!(
        obj.format_key(ro, &[0; 4]),
        None,
        "global data keys are untyped"
    );
    assert_eq!(
        obj.format_key(flows, &[0; 16]).as_deref(),
        Some(r#"{"src": 0, "dst": 0, "sport": 0, "dport": 0, "proto": 0, "pad": [0, 0, 0]}"#)
    );

    // Programs: tail0, main_prog, tc_prog; .text functions are appended.
    let progs: Vec<(&str, &str)> = obj
        .programs
        .iter()
        .map(|p| (p.name.as_str(), p.section.as_str()))
        .collect();
    assert_eq!(
        progs,
        [("tail0", "xdp"), ("main_prog", "xdp"), ("tc_prog", "tc")]
    );
    let main = obj.program("main_prog").unwrap();
    let funcs: Vec<&str> = main.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(funcs, ["main_prog", "loop_cb", "add", "global_sub"]);
    let start_of = |name: &str| {
        main.functions
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .start
    };
    // Every local call and function reference lands on a function start.
    let starts: Vec<Pc> = main.functions.iter().map(|f| f.start).collect();
    let mut calls = 0;
    let mut func_refs = 0;
    for (pc, insn) in main.insns.iter() {
        match insn {
            Insn::CallLocal(_) => calls += 1,
            Insn::LoadImm64 {
                imm: Imm64::Func(_),
                ..
            } => func_refs += 1,
            _ => continue,
        }
        let t = insn.branch_target(pc).unwrap();
        assert!(starts.contains(&t), "{pc}: {insn:?} to {t}");
    }
    assert!(calls >= 3, "{calls}");
    assert_eq!(func_refs, 1, "bpf_loop callback");
    let cb = main
        .insns
        .iter()
        .find_map(|(pc, i)| match i {
            Insn::LoadImm64 {
                imm: Imm64::Func(_),
                ..
            } => i.branch_target(pc),
            _ => None,
        })
        .unwrap();
    assert_eq!(cb, start_of("loop_cb"));
    // Global data references point into the right map at the right offset.
    let refs: Vec<(i32, u32)> = main
        .insns
        .insns()
        .iter()
        .filter_map(|i| match i {
            Insn::LoadImm64 {
                imm: Imm64::MapIdxValue { idx, off },
                ..
            } => Some((*idx, *off)),
            _ => None,
        })
        .collect();
    assert!(refs.contains(&(bss_idx as i32, 0)), "{refs:?}");
    let (ro_idx, _) = obj.map(".rodata").unwrap();
    assert!(refs.contains(&(ro_idx as i32, 0)), "limit: {refs:?}");
    // func_info: one record per function, at its start.
    let fi: Vec<usize> = main.func_info.iter().map(|f| f.insn).collect();
    let want: Vec<usize> = starts.iter().map(|p| p.0).collect();
    assert_eq!(fi, want);
    // The CO-RE field-exists relocation on struct xdp_md resolves.
    assert_eq!(main.core_relos.len(), 1);
    assert_eq!(
        main.core_relos[0].kind,
        bpfkit_elf::btf::CoreReloKind::FieldExists
    );
    // Line info names the source.
    assert!(main.line_info.iter().any(|l| l.line.contains("bpf_loop")));
    assert!(main
        .line_info
        .iter()
        .all(|l| l.file.ends_with("features.c")));
    let tc = obj.program("tc_prog").unwrap();
    assert_eq!(tc.prog_type().unwrap(), ProgType::SchedCls);
    assert_eq!(tc.functions.len(), 2);
}

/// Type names and typed values, checked against `bpftool btf dump file
/// features.o` (kinds and member offsets) by hand.
#[test]
fn btf_names_and_values() {
    let data = fixture("features.o");
    let obj = LoadedObject::load(&data).unwrap();
    let btf = obj.btf.as_ref().unwrap();
    use bpfkit_elf::btf::BtfKind;
    let id = |name: &str| btf.find(name, |_| true).unwrap();
    let stats = id("stats");
    assert_eq!(btf.size_of(stats).unwrap(), 56);
    let kinds: Vec<&str> = btf
        .types()
        .map(|(_, t)| match t.kind {
            BtfKind::Enum64 { .. } => "enum64",
            BtfKind::Float { .. } => "float",
            BtfKind::DeclTag { .. } => "decl_tag",
            BtfKind::TypeTag { .. } => "type_tag",
            BtfKind::Datasec { .. } => "datasec",
            BtfKind::Var { .. } => "var",
            BtfKind::FuncProto { .. } => "func_proto",
            _ => "",
        })
        .filter(|k| !k.is_empty())
        .collect();
    for k in [
        "enum64",
        "float",
        "decl_tag",
        "type_tag",
        "datasec",
        "var",
        "func_proto",
    ] {
        assert!(kinds.contains(&k), "{k} missing");
    }
    let BtfKind::Struct { members, .. } = &btf.get(stats).unwrap().kind else {
        panic!()
    };
    let m = |n: &str| members.iter().find(|m| m.name == n).unwrap();
    assert_eq!(btf.type_name(m("packets").ty), "__u64");
    assert_eq!(btf.type_name(m("last").ty), "enum verdict");
    assert_eq!(btf.type_name(m("tag").ty), "char[8]");
    assert_eq!(btf.type_name(m("big").ty), "enum big");
    assert_eq!(
        btf.type_name(m("user_ptr").ty),
        "__attribute__((btf_type_tag(\"user\"))) int *"
    );
    assert_eq!((m("flag").bit_offset, m("flag").bitfield_size), (160, 3));
    assert_eq!((m("mode").bit_offset, m("mode").bitfield_size), (163, 5));
    assert_eq!(
        btf.type_name(id("loop_cb")),
        "static int loop_cb(__u32, void *)".trim_start_matches("static ")
    );

    let mut v = vec![0u8; 56];
    v[0..8].copy_from_slice(&5u64.to_le_bytes());
    v[8..16].copy_from_slice(&1500u64.to_le_bytes());
    v[16..20].copy_from_slice(&2u32.to_le_bytes());
    v[20] = 3 | (17 << 3);
    v[24..28].copy_from_slice(&0.5f32.to_le_bytes());
    v[28..31].copy_from_slice(b"abc");
    v[40..48].copy_from_slice(&0x2_0000_0000u64.to_le_bytes());
    v[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
    assert_eq!(
        btf.format_value(stats, &v),
        r#"{"packets": 5, "bytes": 1500, "last": "V_PASS", "flag": 3, "mode": 17, "ratio": 0.5, "tag": "abc", "big": "BIG_TWO", "user_ptr": 0x1000}"#
    );
    let key = id("flow_key");
    let mut k = vec![0u8; 16];
    k[0] = 1;
    k[4] = 2;
    k[8..10].copy_from_slice(&80u16.to_le_bytes());
    k[10..12].copy_from_slice(&443u16.to_le_bytes());
    k[12] = 6;
    assert_eq!(
        btf.format_value(key, &k),
        r#"{"src": 1, "dst": 2, "sport": 80, "dport": 443, "proto": 6, "pad": [0, 0, 0]}"#
    );
    // Short input never panics; the missing part is marked.
    assert!(btf.format_value(key, &k[..6]).contains("<truncated>"));
}

/// iproute2's `struct bpf_elf_map`, map of maps by inner id, tc sections.
#[test]
fn iproute2_legacy_maps() {
    let data = fixture("iproute2.o");
    let obj = LoadedObject::load(&data).unwrap();
    let defs: Vec<(&str, MapType, u32, u32, u32, u32)> = obj
        .maps
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.def.map_type,
                m.def.key_size,
                m.def.value_size,
                m.def.max_entries,
                m.pinning,
            )
        })
        .collect();
    assert_eq!(
        defs,
        [
            ("counters", MapType::Array, 4, 8, 16, 2),
            ("inner", MapType::Array, 4, 4, 1, 0),
            ("outer", MapType::ArrayOfMaps, 4, 4, 2, 0),
        ]
    );
    // BPF_ANNOTATE_KV_PAIR types the first map.
    assert_eq!(
        obj.map_type_names(&obj.maps[0]),
        (Some("__u32".into()), Some("__u64".into()))
    );
    assert_eq!(obj.map_type_names(&obj.maps[1]), (None, None));
    let inner = obj.maps[2].def.inner.as_deref().unwrap();
    assert_eq!((inner.map_type, inner.value_size), (MapType::Array, 4));
    let types: Vec<ProgType> = obj
        .programs
        .iter()
        .map(|p| p.prog_type().unwrap())
        .collect();
    assert_eq!(types, [ProgType::SchedCls, ProgType::SchedAct]);
    let cls = obj.program("cls").unwrap();
    let maps: Vec<i32> = cls
        .insns
        .insns()
        .iter()
        .filter_map(|i| match i {
            Insn::LoadImm64 {
                imm: Imm64::MapIdx(m),
                ..
            } => Some(*m),
            _ => None,
        })
        .collect();
    assert_eq!(maps, [0, 2]);
}

/// What a userspace loader cannot do gets an error that names it.
#[test]
fn unsupported_relocations_are_named() {
    let err = LoadedObject::load(&fixture("core_kernel.o")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ElfError::Link { .. }), "{msg}");
    assert!(
        msg.contains("CO-RE relocation byte_off of struct task_struct")
            && msg.contains("kprobe")
            && msg.contains("'probe'"),
        "{msg}"
    );
    let err = LoadedObject::load(&fixture("kconfig.o"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LINUX_KERNEL_VERSION") && err.contains("extern") && err.contains("insn 0"),
        "{err}"
    );
    let err = LoadedObject::load(&fixture("bad_values.o"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "map 'progs': values of maps in a map of type prog_array"
    );
    // keep_going keeps the object and records the program.
    let obj = LoadOptions::default()
        .keep_going(true)
        .load(&fixture("kconfig.o"))
        .unwrap();
    assert!(obj.programs.is_empty());
    assert_eq!(obj.failed[0].name, "sock");
    // An unknown section name fails only when the type is asked for.
    let mut p = obj_with_program();
    p.section = "mysection".into();
    assert!(matches!(
        p.prog_type(),
        Err(ElfError::UnknownProgType { .. })
    ));
}

fn obj_with_program() -> bpfkit_elf::LoadedProgram {
    LoadedObject::load(EXAMPLE).unwrap().programs.remove(0)
}

/// The `.BTF` section of the fixture, to aim mutations at.
fn btf_range(data: &[u8]) -> std::ops::Range<usize> {
    let obj = bpfkit_elf::Object::parse(data).unwrap();
    let s = obj.section_by_name(".BTF").unwrap();
    let start = s.data.as_ptr() as usize - data.as_ptr() as usize;
    start..start + s.data.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Mutated objects (anywhere, and in the BTF) never panic the loader.
    #[test]
    fn mutated_objects_never_panic_the_loader(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        btf_edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        which in 0usize..4,
    ) {
        let mut data = match which {
            0 => EXAMPLE.to_vec(),
            1 => fixture("features.o"),
            2 => fixture("core_more.o"),
            _ => fixture("iproute2.o"),
        };
        let range = if which == 3 { 0..data.len() } else { btf_range(&data) };
        for (at, byte) in btf_edits {
            let i = range.start + at.index(range.len());
            data[i] = byte;
        }
        let n = data.len();
        for (at, byte) in edits {
            data[at.index(n)] = byte;
        }
        bpfkit_elf::fuzzing::check_load(&data);
    }
}

/// A subprogram in the entry's own section (called without a
/// relocation) and a `.text` one it calls in turn are both appended.
#[test]
fn same_section_subprograms() {
    let obj = LoadedObject::load(&fixture("samesec.o")).unwrap();
    assert_eq!(obj.programs.len(), 1, "same_sec is static: not an entry");
    let p = &obj.programs[0];
    let funcs: Vec<(&str, &str, usize)> = p
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f.section.as_str(), f.start.0))
        .collect();
    assert_eq!(
        funcs,
        [
            ("entry", "xdp", 0),
            ("same_sec", "xdp", 7),
            ("text_sub", ".text", 15)
        ]
    );
    let calls: Vec<(usize, usize)> = p
        .insns
        .iter()
        .filter(|(_, i)| matches!(i, Insn::CallLocal(_)))
        .map(|(pc, i)| (pc.0, i.branch_target(pc).unwrap().0))
        .collect();
    assert_eq!(calls, [(1, 7), (13, 15)]);
}

/// With the running kernel's BTF as target, a CO-RE relocation against a
/// kernel-internal type resolves to the kernel's layout.
#[test]
fn core_against_the_kernel_btf() {
    let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        eprintln!("skipping: /sys/kernel/btf/vmlinux is not readable");
        return;
    };
    let target = bpfkit_elf::Btf::parse(&raw).unwrap();
    let task = target
        .find("task_struct", |k| {
            matches!(k, bpfkit_elf::btf::BtfKind::Struct { .. })
        })
        .unwrap();
    let bpfkit_elf::btf::BtfKind::Struct { members, .. } = &target.get(task).unwrap().kind else {
        panic!()
    };
    let pid = members.iter().find(|m| m.name == "pid").unwrap().bit_offset / 8;
    assert!(pid > 0);
    let obj = LoadOptions::default()
        .target_btf(std::sync::Arc::new(target))
        .load(&fixture("core_kernel.o"))
        .unwrap();
    let p = obj.program("probe").unwrap();
    assert_eq!(p.core_relos.len(), 1);
    let at = Pc(p.core_relos[0].insn);
    let insn = p.insns.get(at).unwrap();
    assert!(
        matches!(insn, Insn::Alu { src: bpfkit_isa::Src::Imm(v), .. } if *v as u32 == pid),
        "{insn:?}, pid at {pid}"
    );
}

/// Every CO-RE family against the kernel's BTF: a field the kernel lacks,
/// type existence and size, an enumerator whose local value differs, a
/// field offset.
#[test]
fn core_families_against_the_kernel_btf() {
    use bpfkit_elf::btf::{BtfKind, CoreReloKind as K};
    let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        eprintln!("skipping: /sys/kernel/btf/vmlinux is not readable");
        return;
    };
    let target = bpfkit_elf::Btf::parse(&raw).unwrap();
    let task = target
        .find("task_struct", |k| matches!(k, BtfKind::Struct { .. }))
        .unwrap();
    let BtfKind::Struct { members, size } = &target.get(task).unwrap().kind else {
        panic!()
    };
    let task_size = *size as u64;
    let tgid = members
        .iter()
        .find(|m| m.name == "tgid")
        .unwrap()
        .bit_offset as u64
        / 8;
    let obj = LoadOptions::default()
        .target_btf(std::sync::Arc::new(target))
        .load(&fixture("core_more.o"))
        .unwrap();
    let p = obj.program("probe").unwrap();
    let mut seen = Vec::new();
    for c in &p.core_relos {
        let v = match p.insns.get(Pc(c.insn)).unwrap() {
            Insn::Alu {
                src: bpfkit_isa::Src::Imm(v),
                ..
            } => *v as u64,
            Insn::LoadImm64 {
                imm: Imm64::Value(v),
                ..
            } => *v,
            other => panic!("{other:?}"),
        };
        let want = match c.kind {
            K::FieldExists => 0,
            K::TypeExists => 1,
            K::TypeSize => task_size,
            K::EnumvalValue => 3,
            K::FieldByteOffset => tgid,
            k => panic!("{k:?}"),
        };
        assert_eq!(v, want, "{c:?}");
        seen.push(c.kind);
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    // Without the kernel's BTF the same object is an error naming the
    // first relocation.
    let err = LoadedObject::load(&fixture("core_more.o"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CO-RE relocation field_exists of struct task_struct___old"),
        "{err}"
    );
}
