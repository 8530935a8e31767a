//! The kernel side: a spec run with `BPF_PROG_TEST_RUN`.
//!
//! The object is loaded with bpfkit's own loader ([`bpfkit_elf::LoadedObject`]),
//! then turned into kernel objects the way libbpf would:
//!
//! 1. every map of the object is created with [`bpfkit_kernel::Map::create`]
//!    (maps of maps with a template inner map from their BTF `values` type);
//!    global data maps get their section contents (`.rodata` is not frozen:
//!    bpfkit-kernel has no `BPF_MAP_FREEZE`, and the programs read it with
//!    `volatile` loads, so nothing depends on the verifier knowing it);
//! 2. `.values` initialisers of maps of maps are applied, then the spec's
//!    initial entries;
//! 3. `lddw` map references (`Imm64::MapIdx`/`MapIdxValue`) become
//!    `Imm64::MapFd`/`MapValue` with the fds, every program of the object is
//!    loaded (all must pass the verifier), and program arrays get their slots;
//! 4. each packet runs in order, maps keeping their state;
//! 5. every map but program arrays is dumped, in the JSON shape of
//!    `bpfkit run --json`.
//!
//! Maps that `BPF_MAP_LOOKUP_ELEM` cannot list (ring buffers, perf event
//! arrays, queues, stacks) are left out of `maps`; the programs that use them
//! record what they observed in arrays instead.

use crate::spec::{action_name, action_number, Spec};
use crate::{hex, DiffError};
use bpfkit_abi::MapType;
use bpfkit_elf::{LoadedObject, MapDefinition};
use bpfkit_isa::{encode_all, Imm64, Insn};
use bpfkit_kernel::{map_type, possible_cpus, prog_type, Map, MapSpec, Prog, ProgLoad, TestRun};
use serde_json::{json, Map as JsonMap, Value};
use std::collections::BTreeMap;

/// Room for `data_out`: more than any spec packet after growing.
const DATA_OUT: usize = 64 * 1024;

/// What a kernel run produced.
#[derive(Debug)]
pub struct KernelRun {
    /// The `bpfkit run --json` document, plus `map_info` (type, sizes of
    /// every dumped map) and `verifier` (instructions processed per program).
    pub doc: Value,
}

fn spec_of(def: &bpfkit_abi::MapDef, inner_fd: Option<i32>) -> MapSpec {
    MapSpec {
        map_type: def.map_type as u32,
        key_size: def.key_size,
        value_size: def.value_size,
        max_entries: def.max_entries,
        map_flags: def.map_flags,
        inner_map_fd: inner_fd,
        name: def
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(15)
            .collect(),
    }
}

/// Whether `BPF_MAP_GET_NEXT_KEY`/`LOOKUP_ELEM` can list the map.
fn dumpable(t: MapType) -> bool {
    !matches!(
        t,
        MapType::ProgArray
            | MapType::Ringbuf
            | MapType::PerfEventArray
            | MapType::Queue
            | MapType::Stack
    )
}

struct Maps {
    defs: Vec<MapDefinition>,
    maps: Vec<Map>,
    /// Template inner maps, kept open while their outer maps live.
    _templates: Vec<Map>,
}

impl Maps {
    fn create(obj: &LoadedObject) -> Result<Maps, DiffError> {
        let mut maps = Vec::new();
        let mut templates = Vec::new();
        for m in &obj.maps {
            let inner_fd = match &m.def.inner {
                Some(inner) => {
                    let t = Map::create(&spec_of(inner, None)).map_err(|e| kernel(&m.name, e))?;
                    let fd = t.fd();
                    templates.push(t);
                    Some(fd)
                }
                None => None,
            };
            let map = Map::create(&spec_of(&m.def, inner_fd)).map_err(|e| kernel(&m.name, e))?;
            if let Some(data) = &m.initial_data {
                map.update(&0u32.to_le_bytes(), data, bpfkit_kernel::BPF_ANY)
                    .map_err(|e| kernel(&m.name, e))?;
            }
            maps.push(map);
        }
        let this = Maps {
            defs: obj.maps.clone(),
            maps,
            _templates: templates,
        };
        for (i, m) in this.defs.iter().enumerate() {
            if !m.def.map_type.is_map_in_map() {
                continue;
            }
            for slot in &m.initial_values {
                let (j, _) = this.by_name(&slot.target)?;
                let fd = this.maps[j].fd() as u32;
                this.maps[i]
                    .update(
                        &slot.index.to_le_bytes(),
                        &fd.to_le_bytes(),
                        bpfkit_kernel::BPF_ANY,
                    )
                    .map_err(|e| kernel(&m.name, e))?;
            }
        }
        Ok(this)
    }

    fn by_name(&self, name: &str) -> Result<(usize, &Map), DiffError> {
        self.defs
            .iter()
            .position(|d| d.name == name)
            .map(|i| (i, &self.maps[i]))
            .ok_or_else(|| DiffError::Setup {
                what: format!("no map named {name:?} in the object"),
            })
    }

    fn fill(&self, spec: &Spec) -> Result<(), DiffError> {
        for (name, entries) in &spec.maps {
            let (i, map) = self.by_name(name)?;
            for e in entries {
                let key = hex::decode(&e.key).unwrap_or_default();
                let mut value = hex::decode(&e.value).unwrap_or_default();
                if map_type::is_percpu(map.spec().map_type) {
                    // one CPU's value: CPU 0 gets it, the others zeros
                    let mut all = vec![0u8; map.value_buf_len()];
                    let n = value.len().min(all.len());
                    all[..n].copy_from_slice(&value[..n]);
                    value = all;
                }
                map.update(&key, &value, bpfkit_kernel::BPF_ANY)
                    .map_err(|e| DiffError::Setup {
                        what: format!("initial entry of {}: {e}", self.defs[i].name),
                    })?;
            }
        }
        Ok(())
    }

    fn dump(&self) -> Result<(Value, Value), DiffError> {
        let mut maps = JsonMap::new();
        let mut info = JsonMap::new();
        for (d, m) in self.defs.iter().zip(&self.maps) {
            if !dumpable(d.def.map_type) {
                continue;
            }
            let mut entries = Vec::new();
            for key in m.keys().map_err(|e| kernel(&d.name, e))? {
                // devmap slots without a device are listed but absent
                if let Some(value) = m.lookup(&key).map_err(|e| kernel(&d.name, e))? {
                    entries.push((key, value));
                }
            }
            entries.sort();
            let list: Vec<Value> = entries
                .iter()
                .map(|(k, v)| json!({"key": hex::encode(k), "value": hex::encode(v)}))
                .collect();
            maps.insert(d.name.clone(), Value::Array(list));
            info.insert(
                d.name.clone(),
                json!({
                    "type": d.def.map_type.name(),
                    "key_size": d.def.key_size,
                    "value_size": d.def.value_size,
                    "max_entries": d.def.max_entries,
                    "possible_cpus": if d.def.map_type.is_percpu() { possible_cpus() } else { 1 },
                }),
            );
        }
        Ok((Value::Object(maps), Value::Object(info)))
    }
}

fn kernel(what: &str, e: bpfkit_kernel::KernelError) -> DiffError {
    DiffError::Kernel {
        what: what.to_string(),
        error: e.to_string(),
    }
}

/// Instruction bytes of `prog` with map references resolved to `fds`.
pub fn resolve(insns: &[Insn], fds: &[i32]) -> Result<Vec<u8>, DiffError> {
    let fd = |idx: i32| {
        fds.get(idx as usize)
            .copied()
            .ok_or_else(|| DiffError::Setup {
                what: format!("map index {idx} out of the map table"),
            })
    };
    let mut out = Vec::with_capacity(insns.len());
    for insn in insns {
        let mut insn = *insn;
        if let Insn::LoadImm64 { imm, .. } = &mut insn {
            match *imm {
                Imm64::MapIdx(idx) => *imm = Imm64::MapFd(fd(idx)?),
                Imm64::MapIdxValue { idx, off } => *imm = Imm64::MapValue { fd: fd(idx)?, off },
                _ => {}
            }
        }
        out.push(insn);
    }
    Ok(encode_all(&out))
}

/// The subprograms' first slots, main first, when the program takes a
/// function's address (a `bpf_loop` callback): the kernel refuses such a
/// program without BTF `func_info` (`ProgLoad::func_starts`); else none.
pub fn func_starts(prog: &bpfkit_isa::Program) -> Vec<u32> {
    let is_func = |insn: &Insn| {
        matches!(
            insn,
            Insn::LoadImm64 {
                imm: Imm64::Func(_),
                ..
            }
        )
    };
    if !prog.insns().iter().any(is_func) {
        return Vec::new();
    }
    let mut starts = vec![0u32];
    for (pc, insn) in prog.iter() {
        if is_func(insn) || matches!(insn, Insn::CallLocal(_)) {
            if let Some(t) = insn.branch_target(pc) {
                starts.push(t.0 as u32);
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// Loads every program of the object into the kernel, by name.
fn load_programs(
    obj: &LoadedObject,
    maps: &Maps,
) -> Result<(BTreeMap<String, Prog>, Value), DiffError> {
    let fds: Vec<i32> = maps.maps.iter().map(Map::fd).collect();
    let mut progs = BTreeMap::new();
    let mut stats = JsonMap::new();
    for p in &obj.programs {
        if !p.section.starts_with("xdp") {
            return Err(DiffError::Setup {
                what: format!("program {} in section {}: not XDP", p.name, p.section),
            });
        }
        let bytes = resolve(p.insns.insns(), &fds)?;
        let mut load = ProgLoad::new(prog_type::XDP, &bytes);
        load.license = p.license.clone();
        load.name = p.name.chars().take(15).collect();
        load.func_starts = func_starts(&p.insns);
        let prog = load.load().map_err(|e| DiffError::Rejected {
            program: p.name.clone(),
            error: e.to_string(),
            log: match &e {
                bpfkit_kernel::KernelError::Rejected { log, .. } => log.clone(),
                _ => String::new(),
            },
        })?;
        let processed = prog
            .log()
            .lines()
            .find_map(|l| l.strip_prefix("processed "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        stats.insert(p.name.clone(), json!({"insns_processed": processed}));
        progs.insert(p.name.clone(), prog);
    }
    Ok((progs, Value::Object(stats)))
}

/// Runs `spec` (whose object bytes are `object`) in the kernel.
pub fn run(spec: &Spec, object: &[u8]) -> Result<KernelRun, DiffError> {
    let obj = LoadedObject::load(object).map_err(|e| DiffError::Setup {
        what: format!("loading {}: {e}", spec.object),
    })?;
    let maps = Maps::create(&obj)?;
    maps.fill(spec)?;
    let (progs, verifier) = load_programs(&obj, &maps)?;
    for (map, slots) in &spec.prog_array {
        let (_, m) = maps.by_name(map)?;
        for (slot, name) in slots {
            let prog = progs.get(name).ok_or_else(|| DiffError::Setup {
                what: format!("prog_array {map}[{slot}]: no program {name:?}"),
            })?;
            m.update(
                &slot.to_le_bytes(),
                &(prog.fd() as u32).to_le_bytes(),
                bpfkit_kernel::BPF_ANY,
            )
            .map_err(|e| kernel(map, e))?;
        }
    }
    let prog = progs.get(&spec.program).ok_or_else(|| DiffError::Setup {
        what: format!("no program {:?} in {}", spec.program, spec.object),
    })?;
    let mut runs = Vec::new();
    for p in &spec.packets {
        let data = p.hex.bytes().unwrap_or_default();
        let ctx_in = spec.ctx_in_bytes();
        let r = prog.test_run(&TestRun {
            data_in: &data,
            data_out_len: DATA_OUT,
            ctx_in: &ctx_in,
            ctx_out_len: ctx_in.len(),
            repeat: 1,
            flags: 0,
        });
        runs.push(match r {
            Ok(out) => json!({
                "retval": out.retval,
                "action": action_name(out.retval).unwrap_or("unknown"),
                "data_out": hex::encode(&out.data_out),
                "duration_ns": out.duration_ns,
            }),
            Err(e) if data.len() < 14 => json!({
                "error": format!("packet shorter than an Ethernet header ({} bytes): {e}", data.len())
            }),
            Err(e) => json!({"error": e.to_string()}),
        });
    }
    let (dump, info) = maps.dump()?;
    Ok(KernelRun {
        doc: json!({"runs": runs, "maps": dump, "map_info": info, "verifier": verifier}),
    })
}

/// Checks each packet's `expect` against a run document; the failures.
pub fn check_expectations(spec: &Spec, doc: &Value) -> Vec<String> {
    let runs = doc["runs"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (i, (p, r)) in spec.packets.iter().zip(&runs).enumerate() {
        let Some(want) = &p.expect else { continue };
        let got = match r.get("retval").and_then(Value::as_u64) {
            Some(n) => action_name(n as u32).unwrap_or("unknown").to_string(),
            None => "error".to_string(),
        };
        if want != &got {
            out.push(format!(
                "packet {i} ({}): expected {want}, the kernel gave {got} ({r})",
                p.name
            ));
        }
        debug_assert!(want == "error" || action_number(want).is_some());
    }
    out
}
