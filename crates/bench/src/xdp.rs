//! The same XDP object, maps and packet in the kernel (`BPF_PROG_TEST_RUN`
//! with `repeat`) and in bpfkit (the facade with an [`XdpRunner`], the
//! per-run semantics of `bpfkit run --repeat`), for the kernel benchmark
//! (`benches/kernel.rs`) and its correctness test (`tests/kernel.rs`).
//!
//! A [`Case`] is an object, the program to run, initial map entries,
//! program-array slots and one packet. Cases come from three places:
//!
//! - [`suite_cases`]: the differential suite `tests/xdp/` (each spec's
//!   maps and slots, and its first packet that the kernel accepts);
//! - [`wrapped_cases`]: the benchmark programs of `bench/programs/` in
//!   their XDP wrappers (`bench/kernel/xdp_<name>.o`, see `wrap.h`): the
//!   input goes into the one-entry array `input`, the packet is a dummy
//!   64-byte frame, the XDP return value is the program's 32-bit result;
//! - [`corpus_cases`]: XDP programs of the ebpf-samples corpus that the
//!   kernel accepted (`kernel-verdicts.jsonl`), run with empty maps.
//!
//! [`KernelSide`] loads a case into the kernel as `crates/difftest` does
//! (maps created from bpfkit's loader's definitions, global data with its
//! contents, `lddw`s resolved to fds), but keeps the programs so that they
//! can run many times; [`BpfkitSide`] loads it with [`bpfkit::Loader`] on
//! an engine.

use bpfkit::{Engine, Loader, Object};
use bpfkit_datapath::xdp::{XdpRun, XdpRunner};
use bpfkit_difftest::spec::Spec;
use bpfkit_elf::LoadedObject;
use bpfkit_isa::Insn;
use bpfkit_kernel::{prog_type, Map, MapSpec, Prog, ProgLoad, TestRun};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::programs::{by_name, BURST_HEADER};

/// Where a case comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `tests/xdp/`.
    Suite,
    /// A benchmark program in its XDP wrapper.
    Wrapped,
    /// The ebpf-samples corpus.
    Corpus,
    /// The empty program (`r0 = XDP_PASS; exit`).
    Empty,
}

/// One object, program, initial state and packet.
#[derive(Clone, Debug)]
pub struct Case {
    /// Name in the tables.
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// The object file's bytes.
    pub object: Vec<u8>,
    /// The program to run.
    pub program: String,
    /// Initial entries: (map, key, value); per-CPU values are one CPU's.
    pub entries: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Program-array slots: (map, index, program).
    pub slots: Vec<(String, u32, String)>,
    /// `ctx_in`, if any.
    pub ctx_in: Option<Vec<u8>>,
    /// The packet.
    pub packet: Vec<u8>,
    /// Whether the program may be sent to this kernel: programs with a
    /// branch-free mask (`neg`, `arsh`) in a long loop crashed its
    /// verifier, so wrapped programs containing either are not loaded.
    pub kernel_ok: Result<(), String>,
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The empty XDP program `r0 = XDP_PASS; exit` (`bench/kernel/xdp_pass.o`).
pub fn empty_case() -> Case {
    Case {
        name: "empty (r0 = XDP_PASS)".into(),
        source: Source::Empty,
        object: include_bytes!("../../../bench/kernel/xdp_pass.o").to_vec(),
        program: "xdp_pass".into(),
        entries: Vec::new(),
        slots: Vec::new(),
        ctx_in: None,
        packet: dummy_frame(),
        kernel_ok: Ok(()),
    }
}

/// A 64-byte Ethernet/IPv4/UDP frame, the packet of cases that ignore it.
pub fn dummy_frame() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..14].copy_from_slice(&[2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..38].copy_from_slice(&[0x30, 0x39, 0, 53]);
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    f
}

/// Every spec of `tests/xdp/` as a case, sorted by name; specs whose
/// packets the kernel all refuses are left out.
pub fn suite_cases() -> Vec<Case> {
    let dir = workspace_dir().join("tests/xdp");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let Ok(spec) = Spec::read(&path) else {
            continue;
        };
        let Ok(object) = std::fs::read(spec.object_path(&path)) else {
            continue;
        };
        let Some(packet) = spec
            .packets
            .iter()
            .filter(|p| p.expect.as_deref() != Some("error"))
            .filter_map(|p| p.hex.bytes())
            .find(|b| b.len() >= 14)
        else {
            continue;
        };
        let hex = |s: &str| bpfkit_difftest::hex::decode(s).unwrap_or_default();
        let mut entries = Vec::new();
        for (map, list) in &spec.maps {
            for e in list {
                entries.push((map.clone(), hex(&e.key), hex(&e.value)));
            }
        }
        let mut slots = Vec::new();
        for (map, s) in &spec.prog_array {
            for (i, p) in s {
                slots.push((map.clone(), *i, p.clone()));
            }
        }
        out.push(Case {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: Source::Suite,
            object,
            program: spec.program.clone(),
            entries,
            slots,
            ctx_in: spec.ctx_in.as_deref().map(hex),
            packet,
            kernel_ok: Ok(()),
        });
    }
    out
}

/// The wrapped benchmark programs, in the interpreter benchmark's order.
pub fn wrapped_cases() -> Vec<Case> {
    WRAPPED
        .iter()
        .map(|(name, object)| {
            let prog = by_name(name).expect("a benchmark program");
            let mut input = prog.input();
            // The map value's size (`wrap.h`, `xdp_<name>.c`): some are
            // padded so that the kernel's verifier can bound the accesses.
            let size = match *name {
                "parser" => BURST_HEADER + 2 * 65536 + 256,
                "calls" => input.len() + 16,
                "csum" => input.len() + 8,
                _ => input.len(),
            };
            input.resize(size, 0);
            let kernel_ok = match LoadedObject::load(object) {
                Ok(obj) => mask_free(&obj),
                Err(e) => Err(format!("bpfkit-elf: {e}")),
            };
            Case {
                name: (*name).into(),
                source: Source::Wrapped,
                object: object.to_vec(),
                program: format!("xdp_{name}"),
                entries: vec![("input".into(), 0u32.to_le_bytes().to_vec(), input)],
                slots: Vec::new(),
                ctx_in: None,
                packet: dummy_frame(),
                kernel_ok,
            }
        })
        .collect()
}

const WRAPPED: [(&str, &[u8]); 6] = [
    (
        "parser",
        include_bytes!("../../../bench/kernel/xdp_parser.o"),
    ),
    ("csum", include_bytes!("../../../bench/kernel/xdp_csum.o")),
    ("crc32", include_bytes!("../../../bench/kernel/xdp_crc32.o")),
    (
        "tokenizer",
        include_bytes!("../../../bench/kernel/xdp_tokenizer.o"),
    ),
    ("calls", include_bytes!("../../../bench/kernel/xdp_calls.o")),
    ("acl", include_bytes!("../../../bench/kernel/xdp_acl.o")),
];

/// `Err` naming the first `neg` or `arsh` of any program of `obj`.
fn mask_free(obj: &LoadedObject) -> Result<(), String> {
    use bpfkit_isa::AluOp;
    for p in &obj.programs {
        for (i, insn) in p.insns.insns().iter().enumerate() {
            let what = match insn {
                Insn::Alu {
                    op: AluOp::Arsh, ..
                } => "arsh",
                Insn::Neg { .. } => "neg",
                _ => continue,
            };
            return Err(format!(
                "not sent to the kernel: {} has a branch-free mask ({what} at insn {i}), \
                 the pattern that crashed this kernel's verifier in a long loop",
                p.name
            ));
        }
    }
    Ok(())
}

/// XDP programs of `$BPFKIT_SHARED/corpus/ebpf-samples` that the kernel
/// accepted when the corpus's verdicts were recorded, each with empty maps
/// and [`dummy_frame`]. Empty when the corpus is absent. The `neg`/`arsh`
/// rule of the wrapped programs is not applied: this kernel's verifier has
/// already processed each of these programs (that is what the verdicts
/// record).
pub fn corpus_cases() -> Vec<Case> {
    let shared = std::env::var_os("BPFKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("../shared"));
    let dir = shared.join("corpus/ebpf-samples");
    let Ok(text) = std::fs::read_to_string(dir.join("kernel-verdicts.jsonl")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["prog_type"] != "xdp" || v["verdict"] != "accepted" {
            continue;
        }
        let (Some(object), Some(program)) = (v["object"].as_str(), v["program"].as_str()) else {
            continue;
        };
        // Tests of the verifier itself, not programs.
        if object.starts_with("build/") {
            continue;
        }
        let Ok(bytes) = std::fs::read(dir.join(object)) else {
            continue;
        };
        let stem = object.strip_suffix(".o").unwrap_or(object);
        out.push(Case {
            name: format!("{stem}:{program}"),
            source: Source::Corpus,
            object: bytes,
            program: program.into(),
            entries: Vec::new(),
            slots: Vec::new(),
            ctx_in: None,
            packet: dummy_frame(),
            kernel_ok: Ok(()),
        });
    }
    out
}

/// The case loaded into the kernel.
pub struct KernelSide {
    /// Maps, in the object's order (template inner maps after them).
    _maps: Vec<Map>,
    progs: BTreeMap<String, Prog>,
    prog: String,
    packet: Vec<u8>,
    ctx_in: Option<Vec<u8>>,
    /// Instructions of the program run (for the compile-time column).
    pub insns: usize,
}

fn map_spec(def: &bpfkit_abi::MapDef, inner: Option<i32>) -> MapSpec {
    MapSpec {
        map_type: def.map_type as u32,
        key_size: def.key_size,
        value_size: def.value_size,
        max_entries: def.max_entries,
        map_flags: def.map_flags,
        inner_map_fd: inner,
        name: def
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(15)
            .collect(),
    }
}

impl KernelSide {
    /// Creates the maps, fills them, loads every XDP program of the object
    /// and fills the program arrays. Errors are one line.
    pub fn load(case: &Case) -> Result<KernelSide, String> {
        case.kernel_ok.clone()?;
        let obj = LoadedObject::load(&case.object).map_err(|e| format!("bpfkit-elf: {e}"))?;
        let mut maps = Vec::new();
        let mut templates = Vec::new();
        for m in &obj.maps {
            let inner = match &m.def.inner {
                Some(i) => {
                    let t = Map::create(&map_spec(i, None)).map_err(|e| e.to_string())?;
                    let fd = t.fd();
                    templates.push(t);
                    Some(fd)
                }
                None => None,
            };
            let map = Map::create(&map_spec(&m.def, inner))
                .map_err(|e| format!("map {}: {e}", m.name))?;
            if let Some(data) = &m.initial_data {
                map.update(&0u32.to_le_bytes(), data, bpfkit_kernel::BPF_ANY)
                    .map_err(|e| format!("map {}: {e}", m.name))?;
            }
            maps.push(map);
        }
        let index = |name: &str| {
            obj.maps
                .iter()
                .position(|m| m.name == name)
                .ok_or_else(|| format!("no map {name:?}"))
        };
        for (i, m) in obj.maps.iter().enumerate() {
            if !m.def.map_type.is_map_in_map() {
                continue;
            }
            for slot in &m.initial_values {
                let fd = maps[index(&slot.target)?].fd() as u32;
                maps[i]
                    .update(
                        &slot.index.to_le_bytes(),
                        &fd.to_le_bytes(),
                        bpfkit_kernel::BPF_ANY,
                    )
                    .map_err(|e| format!("map {}: {e}", m.name))?;
            }
        }
        for (name, key, value) in &case.entries {
            let map = &maps[index(name)?];
            let mut value = value.clone();
            if bpfkit_kernel::map_type::is_percpu(map.spec().map_type) {
                let mut all = vec![0u8; map.value_buf_len()];
                let n = value.len().min(all.len());
                all[..n].copy_from_slice(&value[..n]);
                value = all;
            }
            map.update(key, &value, bpfkit_kernel::BPF_ANY)
                .map_err(|e| format!("entry of {name}: {e}"))?;
        }
        let fds: Vec<i32> = maps.iter().map(Map::fd).collect();
        let mut progs = BTreeMap::new();
        let mut insns = 0;
        for p in &obj.programs {
            if !p.section.starts_with("xdp") {
                continue;
            }
            let bytes = bpfkit_difftest::kernel::resolve(p.insns.insns(), &fds)
                .map_err(|e| e.to_string())?;
            if p.name == case.program {
                insns = bytes.len() / 8;
            }
            let mut load = ProgLoad::new(prog_type::XDP, &bytes);
            load.license = p.license.clone();
            load.log_level = 0;
            load.name = p.name.chars().take(15).collect();
            load.func_starts = bpfkit_difftest::kernel::func_starts(&p.insns);
            let prog = match load.load() {
                Ok(p) => p,
                Err(e) => {
                    // Once more with the log, for the reason.
                    load.log_level = 1;
                    let log = match load.load() {
                        Err(bpfkit_kernel::KernelError::Rejected { log, .. }) => log,
                        _ => String::new(),
                    };
                    let tail: Vec<&str> = log.lines().rev().take(6).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(format!("{}: {e} [{}]", p.name, tail.join(" | ")));
                }
            };
            progs.insert(p.name.clone(), prog);
        }
        for (map, slot, name) in &case.slots {
            let prog = progs
                .get(name)
                .ok_or_else(|| format!("slot {map}[{slot}]: no program {name}"))?;
            maps[index(map)?]
                .update(
                    &slot.to_le_bytes(),
                    &(prog.fd() as u32).to_le_bytes(),
                    bpfkit_kernel::BPF_ANY,
                )
                .map_err(|e| format!("slot {map}[{slot}]: {e}"))?;
        }
        if !progs.contains_key(&case.program) {
            return Err(format!("no XDP program {}", case.program));
        }
        maps.extend(templates);
        Ok(KernelSide {
            _maps: maps,
            progs,
            prog: case.program.clone(),
            packet: case.packet.clone(),
            ctx_in: case.ctx_in.clone(),
            insns,
        })
    }

    /// `BPF_PROG_TEST_RUN` with `repeat`: (retval, data_out, duration_ns).
    pub fn run(&self, repeat: u32) -> Result<(u32, Vec<u8>, u32), String> {
        let ctx = self.ctx_in.clone().unwrap_or_default();
        let out = self.progs[&self.prog]
            .test_run(&TestRun {
                data_in: &self.packet,
                data_out_len: 64 * 1024,
                ctx_in: &ctx,
                ctx_out_len: ctx.len(),
                repeat,
                flags: 0,
            })
            .map_err(|e| e.to_string())?;
        Ok((out.retval, out.data_out, out.duration_ns))
    }
}

/// The case loaded into bpfkit on one engine.
pub struct BpfkitSide {
    obj: Object,
    prog: usize,
    runner: XdpRunner,
    packet: Vec<u8>,
    ctx_in: Option<Vec<u8>>,
}

impl BpfkitSide {
    /// Loads the object on `engine`, applies the entries and slots as
    /// `bpfkit run --map-update/--prog-array` do.
    pub fn load(case: &Case, engine: Engine) -> Result<BpfkitSide, String> {
        let obj = Loader::new()
            .engine(engine)
            .load(&case.object)
            .map_err(|e| e.to_string())?;
        let prog = obj
            .program_index(&case.program)
            .map_err(|e| e.to_string())?;
        for (name, key, value) in &case.entries {
            let m = obj.map(name).map_err(|e| e.to_string())?;
            let mut value = value.clone();
            if m.map.map_type().is_percpu() && value.len() == m.map.def().value_size as usize {
                let mut all = vec![0u8; m.map.value_buf_len()];
                all[..value.len()].copy_from_slice(&value);
                value = all;
            }
            m.map
                .update(key, &value, bpfkit_maps::update_flags::ANY)
                .map_err(|e| format!("entry of {name}: {e}"))?;
        }
        for (map, slot, name) in &case.slots {
            obj.set_prog_array(map, *slot, name)
                .map_err(|e| e.to_string())?;
        }
        Ok(BpfkitSide {
            obj,
            prog,
            runner: XdpRunner::new().map_err(|e| e.to_string())?,
            packet: case.packet.clone(),
            ctx_in: case.ctx_in.clone(),
        })
    }

    /// Like [`BpfkitSide::load`] on the JIT, then verifies the program and
    /// its tail-call targets as `bpfkit run --verify` does, so that they
    /// run in the JIT's unchecked mode; `Err` names a rejected program.
    pub fn load_verified(case: &Case) -> Result<BpfkitSide, String> {
        let mut side = BpfkitSide::load(case, Engine::Jit)?;
        let mut progs = vec![side.prog];
        for (_, _, name) in &case.slots {
            progs.push(side.obj.program_index(name).map_err(|e| e.to_string())?);
        }
        for p in progs {
            if side.obj.report(p).is_none() {
                side.obj.verify_as(p, bpfkit::ProgType::Xdp);
            }
            side.obj.check(p).map_err(|e| e.to_string())?;
        }
        // The switch to unchecked code happens at the next run.
        Ok(side)
    }

    /// Whether the program ran in the JIT's unchecked mode (after a run).
    pub fn runs_unchecked(&self) -> bool {
        self.obj.runs_unchecked(self.prog)
    }

    /// One `bpfkit run --repeat` of the packet: retval, data_out and the
    /// average `duration_ns`.
    pub fn run(&mut self, repeat: u32) -> Result<XdpRun, String> {
        self.runner
            .run(
                &mut self.obj,
                self.prog,
                &self.packet,
                self.ctx_in.as_deref(),
                repeat,
            )
            .map_err(|e| e.to_string())
    }
}
