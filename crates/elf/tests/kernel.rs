//! Differential check with the running kernel: programs the kernel
//! accepted (kernel-verdicts.jsonl, and the features fixture) are loaded by
//! bpfkit-elf, their maps created with `BPF_MAP_CREATE` from our
//! definitions, the symbolic map references patched into fds, and the
//! result given to `BPF_PROG_LOAD`: the kernel must accept it again. This
//! checks map definitions, global data and linking against the kernel's
//! own loader. Skips where `bpf()` is refused.

use bpfkit_abi::ProgType;
use bpfkit_elf::{LoadedObject, LoadedProgram, MapDefinition};
use bpfkit_kernel::{Map, MapSpec, ProgLoad};
use std::path::{Path, PathBuf};

fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BPFKIT_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    dir.is_dir().then_some(dir)
}

fn spec(m: &MapDefinition, inner_fd: Option<i32>) -> MapSpec {
    MapSpec {
        map_type: m.def.map_type as u32,
        key_size: m.def.key_size,
        value_size: m.def.value_size,
        max_entries: m.def.max_entries,
        map_flags: m.def.map_flags,
        inner_map_fd: inner_fd,
        name: String::new(),
    }
}

/// Creates every map of the object (inner templates first, global data
/// initialised, `values` slots filled) and returns them by index.
fn create_maps(obj: &LoadedObject) -> Result<Vec<Map>, String> {
    let mut templates = Vec::new();
    let mut maps = Vec::new();
    for m in &obj.maps {
        let inner_fd = match &m.def.inner {
            Some(inner) => {
                let t = Map::create(&MapSpec {
                    map_type: inner.map_type as u32,
                    key_size: inner.key_size,
                    value_size: inner.value_size,
                    max_entries: inner.max_entries,
                    map_flags: inner.map_flags,
                    inner_map_fd: None,
                    name: String::new(),
                })
                .map_err(|e| format!("inner map of {}: {e}", m.name))?;
                let fd = t.fd();
                templates.push(t);
                Some(fd)
            }
            None => None,
        };
        let map = Map::create(&spec(m, inner_fd)).map_err(|e| format!("map {}: {e}", m.name))?;
        if let Some(data) = &m.initial_data {
            map.update(&0u32.to_le_bytes(), data, 0)
                .map_err(|e| format!("initial data of {}: {e}", m.name))?;
        }
        maps.push(map);
    }
    // Map-of-maps slots (program slots need loaded programs: left empty).
    for (i, m) in obj.maps.iter().enumerate() {
        if !m.def.map_type.is_map_in_map() {
            continue;
        }
        for s in &m.initial_values {
            let (j, _) = obj.map(&s.target).ok_or(format!("no map {}", s.target))?;
            let fd = maps[j].fd();
            maps[i]
                .update(&s.index.to_le_bytes(), &fd.to_le_bytes(), 0)
                .map_err(|e| format!("values[{}] of {}: {e}", s.index, m.name))?;
        }
    }
    drop(templates);
    Ok(maps)
}

/// The program with map references turned into fds.
fn with_fds(p: &LoadedProgram, maps: &[Map]) -> Vec<u8> {
    p.insns.to_bytes_with_map_fds(|i| maps[i as usize].fd())
}

fn load(p: &LoadedProgram, ty: ProgType, maps: &[Map]) -> Result<(), String> {
    let bytes = with_fds(p, maps);
    let mut req = ProgLoad::new(ty as u32, &bytes);
    req.license = p.license.clone();
    req.log_level = 1;
    req.load().map(drop).map_err(|e| e.to_string())
}

/// Program types that load without an attach target or expected attach
/// type.
fn plain_type(t: ProgType) -> bool {
    matches!(
        t,
        ProgType::SocketFilter
            | ProgType::Kprobe
            | ProgType::SchedCls
            | ProgType::SchedAct
            | ProgType::Tracepoint
            | ProgType::Xdp
            | ProgType::PerfEvent
            | ProgType::CgroupSkb
            | ProgType::SockOps
            | ProgType::RawTracepoint
    )
}

fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": \"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

#[test]
fn kernel_accepts_what_we_link() {
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("skipping: bpf() is not available: {e}");
        return;
    }
    let mut cases: Vec<(PathBuf, String, ProgType)> = Vec::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/features.o");
    // main_prog has a global subprogram, which the kernel only takes with
    // BTF func_info (this test loads no BTF): it stays out.
    for p in ["tail0", "tc_prog"] {
        let ty = if p == "tc_prog" {
            ProgType::SchedCls
        } else {
            ProgType::Xdp
        };
        cases.push((fixture.clone(), p.into(), ty));
    }
    let samesec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samesec.o");
    cases.push((samesec, "entry".into(), ProgType::Xdp));
    match shared_dir() {
        Some(shared) => {
            let corpus = shared.join("corpus/ebpf-samples");
            let verdicts =
                std::fs::read_to_string(corpus.join("kernel-verdicts.jsonl")).unwrap_or_default();
            for line in verdicts.lines() {
                let (Some(o), Some(p), Some("accepted"), Some(t)) = (
                    json_str(line, "object"),
                    json_str(line, "program"),
                    json_str(line, "verdict"),
                    json_str(line, "prog_type"),
                ) else {
                    continue;
                };
                let Some(ty) = ProgType::from_name(t).filter(|t| plain_type(*t)) else {
                    continue;
                };
                cases.push((corpus.join(o), p.to_string(), ty));
            }
        }
        None => eprintln!("shared folder absent: only the fixture is checked"),
    }
    let (mut ok, mut skipped) = (0, Vec::new());
    let mut errs = Vec::new();
    for (path, prog, ty) in &cases {
        let data = std::fs::read(path).unwrap();
        let obj = LoadedObject::load(&data).unwrap();
        let maps = match create_maps(&obj) {
            Ok(m) => m,
            Err(e) => {
                skipped.push(format!("{} [{prog}]: {e}", path.display()));
                continue;
            }
        };
        let p = obj.program(prog).unwrap();
        match load(p, *ty, &maps) {
            Ok(()) => ok += 1,
            Err(e) => errs.push(format!("{} [{prog}] as {}: {e}", path.display(), ty.name())),
        }
    }
    eprintln!(
        "kernel accepted {ok} of {} linked programs; skipped (map creation):\n{}",
        cases.len(),
        skipped.join("\n")
    );
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert!(ok >= 3);
}

/// A CO-RE relocation resolved against the running kernel's BTF gives a
/// program the kernel accepts.
#[test]
fn kernel_accepts_core_resolved_program() {
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("skipping: bpf() is not available: {e}");
        return;
    }
    let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        eprintln!("skipping: /sys/kernel/btf/vmlinux is not readable");
        return;
    };
    let target = std::sync::Arc::new(bpfkit_elf::Btf::parse(&raw).unwrap());
    for f in ["core_kernel.o", "core_more.o"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(f);
        let obj = bpfkit_elf::LoadOptions::default()
            .target_btf(target.clone())
            .load(&std::fs::read(path).unwrap())
            .unwrap();
        let p = obj.program("probe").unwrap();
        load(p, p.prog_type().unwrap(), &[]).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}
