//! Map definitions: BTF `.maps`, legacy `maps` sections and global data.
//!
//! Facts (libbpf `libbpf.c`, `parse_btf_map_def` and
//! `bpf_object__init_global_data_maps`; iproute2 `lib/bpf_legacy.c`;
//! the kernel's `samples/bpf/bpf_load.c`):
//!
//! - A BTF map is a variable of the `.maps` DATASEC whose type is a struct
//!   of pointer members: `__uint(name, N)` is `int (*name)[N]` (the number
//!   is the array length), `__type(name, T)` is `T *name`, and
//!   `__array(values, T)` is an array of pointers to `T`: an inner map
//!   definition (a struct of the same shape) or a function prototype (prog
//!   arrays). Relocations of `.maps` at the `values` slots name the maps or
//!   programs to put there.
//! - A legacy map is a fixed layout of `u32`s, its length the section size
//!   divided by the number of map symbols: 20 bytes and less (libbpf's
//!   `struct bpf_map_def`: type, key_size, value_size, max_entries,
//!   map_flags), 28 (`bpf_load.c`: plus `inner_map_idx`, `numa_node`), 36
//!   (iproute2's `struct bpf_elf_map`: plus `id`, `pinning`, `inner_id`,
//!   `inner_idx`).
//! - Global data sections (`.data`, `.rodata`, `.bss`, `.data.*`,
//!   `.rodata.*`) are single-entry arrays with `u32` keys and the whole
//!   section as value; `.rodata*` are read-only for programs
//!   (`BPF_F_RDONLY_PROG`) and frozen after their contents are written.

use crate::btf::{Btf, BtfKind, TypeId};
use crate::error::ElfError;
use crate::object_file::{MapKind, Object, RelocTarget};
use bpfkit_abi::{map_flags, MapDef, MapType};

/// Where a map was defined.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MapOrigin {
    /// A legacy `struct bpf_map_def` (or iproute2 `bpf_elf_map`) in the
    /// named section.
    Legacy {
        /// `maps` or `maps/...`.
        section: String,
    },
    /// A BTF-described map in `.maps`.
    Btf,
    /// A global data section.
    GlobalData {
        /// `.data`, `.rodata`, `.bss`, `.rodata.str1.1`, ...
        section: String,
    },
}

/// An initial entry of a prog array or map of maps: `values` slot
/// `index` holds the program or map named `target`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SlotInit {
    /// The slot (the key).
    pub index: u32,
    /// A program name (prog arrays) or map name (maps of maps).
    pub target: String,
}

/// A map of the object, as a loader creates it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MapDefinition {
    /// Name: the symbol, or the section for global data.
    pub name: String,
    /// What to create (type, sizes, flags, inner template, name).
    pub def: MapDef,
    /// Where it was defined.
    pub origin: MapOrigin,
    /// BTF type of the key (BTF maps with `__type(key, ...)`; global
    /// data: `int`-sized key, no type).
    pub key_type: Option<TypeId>,
    /// BTF type of the value (BTF maps with `__type(value, ...)`; global
    /// data: the section's DATASEC).
    pub value_type: Option<TypeId>,
    /// Initial contents of the single value of a global data map
    /// (`.bss`: zeros).
    pub initial_data: Option<Vec<u8>>,
    /// Whether the map is frozen after initialisation (`.rodata*`).
    pub frozen: bool,
    /// Initial slots of prog arrays and maps of maps.
    pub initial_values: Vec<SlotInit>,
    /// `pinning` as written (libbpf's `LIBBPF_PIN_BY_NAME` is 1); bpfkit
    /// ignores it.
    pub pinning: u32,
}

impl MapDefinition {
    /// Whether this is a global data map.
    pub fn is_global_data(&self) -> bool {
        matches!(self.origin, MapOrigin::GlobalData { .. })
    }
}

fn map_type(map: &str, n: u32) -> Result<MapType, ElfError> {
    MapType::try_from(n).map_err(|_| ElfError::BadMap {
        map: map.to_string(),
        reason: format!("unknown map type {n}"),
    })
}

/// Whether a section holds global data, as libbpf decides by name.
pub(crate) fn is_global_data_section(name: &str) -> bool {
    name == ".data"
        || name == ".rodata"
        || name == ".bss"
        || name.starts_with(".data.")
        || name.starts_with(".rodata.")
        || name.starts_with(".bss.")
}

/// Reads every map of the object, in libbpf's order: legacy maps, BTF
/// maps, global data.
pub(crate) fn collect_maps(
    obj: &Object<'_>,
    btf: Option<&Btf>,
) -> Result<Vec<MapDefinition>, ElfError> {
    let mut out = Vec::new();
    legacy_maps(obj, btf, &mut out)?;
    btf_maps(obj, btf, &mut out)?;
    global_data_maps(obj, btf, &mut out)?;
    Ok(out)
}

fn legacy_maps(
    obj: &Object<'_>,
    btf: Option<&Btf>,
    out: &mut Vec<MapDefinition>,
) -> Result<(), ElfError> {
    let legacy: Vec<_> = obj
        .maps()
        .iter()
        .filter(|m| m.kind == MapKind::Legacy)
        .collect();
    let first = out.len();
    let mut inner_refs = Vec::new();
    for m in &legacy {
        // libbpf: the definition size is the section size over the number
        // of map symbols in it, when that divides evenly.
        let sec = &obj.sections()[m.section_index];
        let count = legacy
            .iter()
            .filter(|o| o.section_index == m.section_index)
            .count() as u64;
        let size = if count > 0 && sec.size.is_multiple_of(count) {
            sec.size / count
        } else {
            m.size
        };
        let data = usize::try_from(m.offset)
            .ok()
            .and_then(|s| sec.data.get(s..s.checked_add(size as usize)?))
            .ok_or_else(|| ElfError::BadMap {
                map: m.name.to_string(),
                reason: format!(
                    "definition at offset {} of {} bytes runs past section '{}'",
                    m.offset, size, m.section
                ),
            })?;
        if data.len() < 16 {
            return Err(ElfError::BadMap {
                map: m.name.to_string(),
                reason: format!(
                    "legacy definition of {} bytes is shorter than struct bpf_map_def",
                    data.len()
                ),
            });
        }
        let word = |i: usize| {
            data.get(i * 4..i * 4 + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let ty = map_type(m.name, word(0))?;
        // bpf_load.c created maps of maps with 4-byte (fd) values whatever
        // the definition said; the samples leave the field 0.
        let value_size = match word(2) {
            0 if ty.is_map_in_map() => 4,
            v => v,
        };
        let def = MapDef::new(ty, word(1), value_size, word(3))
            .with_flags(word(4))
            .with_name(m.name);
        let mut pinning = 0;
        match data.len() {
            // bpf_load.c: inner_map_idx (index among the object's maps).
            28 if ty.is_map_in_map() => inner_refs.push((out.len(), InnerRef::Index(word(5)))),
            // iproute2 bpf_elf_map: id, pinning, inner_id, inner_idx.
            36 => {
                pinning = word(6);
                if ty.is_map_in_map() {
                    inner_refs.push((out.len(), InnerRef::Id(word(7))));
                }
            }
            _ => {}
        }
        let (key_type, value_type) = btf.map_or((None, None), |b| annotated_kv(b, &def));
        out.push(MapDefinition {
            name: m.name.to_string(),
            def,
            origin: MapOrigin::Legacy {
                section: m.section.to_string(),
            },
            key_type,
            value_type,
            initial_data: None,
            frozen: false,
            initial_values: Vec::new(),
            pinning,
        });
    }
    // Ids of iproute2 definitions, to resolve inner_id.
    let ids: Vec<(usize, u32)> = legacy
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let sec = &obj.sections()[m.section_index];
            let count = legacy
                .iter()
                .filter(|o| o.section_index == m.section_index)
                .count() as u64;
            (count > 0 && sec.size / count == 36).then(|| {
                let at = usize::try_from(m.offset)
                    .unwrap_or(usize::MAX)
                    .saturating_add(20);
                let id = sec
                    .data
                    .get(at..at.saturating_add(4))
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                (first + i, id)
            })
        })
        .collect();
    for (outer, r) in inner_refs {
        let inner = match r {
            InnerRef::Index(i) => first + i as usize,
            InnerRef::Id(id) => match ids.iter().find(|(j, v)| *v == id && *j != outer) {
                Some((j, _)) => *j,
                None => {
                    return Err(ElfError::BadMap {
                        map: out[outer].name.clone(),
                        reason: format!("inner map id {id} names no map of the object"),
                    })
                }
            },
        };
        if inner == outer || inner >= out.len() {
            return Err(ElfError::BadMap {
                map: out[outer].name.clone(),
                reason: format!("inner map index {} is not another map", inner - first),
            });
        }
        let tmpl = out[inner].def.clone();
        out[outer].def.inner = Some(Box::new(tmpl));
    }
    Ok(())
}

/// iproute2's `BPF_ANNOTATE_KV_PAIR(name, K, V)` (and old libbpf's): a
/// struct `____btf_map_<name>` with members `key` and `value` gives a legacy
/// map its BTF types, used when their sizes agree with the definition.
fn annotated_kv(btf: &Btf, def: &MapDef) -> (Option<TypeId>, Option<TypeId>) {
    let name = format!("____btf_map_{}", def.name);
    let Some(id) = btf.find(&name, |k| matches!(k, BtfKind::Struct { .. })) else {
        return (None, None);
    };
    let Ok(BtfKind::Struct { members, .. }) = btf.get(id).map(|t| &t.kind) else {
        return (None, None);
    };
    let member = |n: &str, size: u32| {
        members
            .iter()
            .find(|m| m.name == n)
            .map(|m| m.ty)
            .filter(|&t| btf.size_of(t).ok() == Some(size))
    };
    (member("key", def.key_size), member("value", def.value_size))
}

enum InnerRef {
    Index(u32),
    Id(u32),
}

/// A parsed BTF map struct (before `values` initialisers).
struct BtfMapDef {
    def: MapDef,
    key_type: Option<TypeId>,
    value_type: Option<TypeId>,
    pinning: u32,
    /// Byte offset of the `values` member in the struct, and whether the
    /// inner type is a map (rather than a program).
    values: Option<(u32, bool)>,
}

fn btf_maps(
    obj: &Object<'_>,
    btf: Option<&Btf>,
    out: &mut Vec<MapDefinition>,
) -> Result<(), ElfError> {
    let Some(section) = obj.section_by_name(".maps") else {
        return Ok(());
    };
    let Some(btf) = btf else {
        return Err(ElfError::BadMap {
            map: ".maps".into(),
            reason: "the object has a .maps section but no BTF to describe it".into(),
        });
    };
    let Some(sec_id) = btf.find(".maps", |k| matches!(k, BtfKind::Datasec { .. })) else {
        return Err(ElfError::BadMap {
            map: ".maps".into(),
            reason: "BTF has no DATASEC for .maps".into(),
        });
    };
    let BtfKind::Datasec { vars, .. } = &btf.get(sec_id).map_err(btf_err)?.kind else {
        unreachable!("found as a DATASEC")
    };
    let first = out.len();
    let mut value_slots = Vec::new();
    for v in vars {
        let var = btf.get(v.ty).map_err(btf_err)?;
        let BtfKind::Var { ty, .. } = var.kind else {
            return Err(ElfError::BadMap {
                map: var.name.clone(),
                reason: "a .maps entry that is not a variable".into(),
            });
        };
        let name = var.name.clone();
        let parsed = parse_btf_map(btf, &name, ty, 0)?;
        // Objects leave DATASEC offsets and sizes to the loader (libbpf's
        // `btf_fixup_datasec`): the ELF symbol has them.
        let (var_off, var_size) = obj
            .maps()
            .iter()
            .find(|m| m.kind == MapKind::Btf && m.name == name)
            .map_or((v.offset as u64, v.size as u64), |m| (m.offset, m.size));
        if let Some((off, is_map)) = parsed.values {
            value_slots.push((
                out.len(),
                var_off.saturating_add(off as u64),
                var_off.saturating_add(var_size),
                is_map,
            ));
        }
        out.push(MapDefinition {
            name,
            def: parsed.def,
            origin: MapOrigin::Btf,
            key_type: parsed.key_type,
            value_type: parsed.value_type,
            initial_data: None,
            frozen: false,
            initial_values: Vec::new(),
            pinning: parsed.pinning,
        });
    }
    // `values` initialisers: relocations in `.maps` inside a map's
    // `values` array.
    for r in obj.map_relocations() {
        let Some(&(map, start, end, is_map)) = value_slots
            .iter()
            .find(|(_, s, e, _)| r.offset >= *s && r.offset < *e)
        else {
            return Err(ElfError::BadMap {
                map: ".maps".into(),
                reason: format!(
                    "relocation to '{}' at offset {} is outside every map's values",
                    r.symbol, r.offset
                ),
            });
        };
        let index = ((r.offset - start) / 8) as u32;
        let target = match r.target {
            RelocTarget::Map { name } if is_map => {
                if !out[first..].iter().any(|m| m.name == name) {
                    return Err(ElfError::BadMap {
                        map: out[map].name.clone(),
                        reason: format!("values[{index}] names '{name}', not a BTF map"),
                    });
                }
                name.to_string()
            }
            RelocTarget::Code { .. } if !is_map => r.symbol.to_string(),
            _ => {
                return Err(ElfError::BadMap {
                    map: out[map].name.clone(),
                    reason: format!(
                        "values[{index}] names '{}', which is not a {}",
                        r.symbol,
                        if is_map { "map" } else { "program" }
                    ),
                })
            }
        };
        let _ = end;
        out[map].initial_values.push(SlotInit { index, target });
    }
    for m in &mut out[first..] {
        m.initial_values.sort_by_key(|s| s.index);
        if let Some(last) = m.initial_values.last() {
            if last.index >= m.def.max_entries {
                if m.def.max_entries == 0 {
                    // libbpf: max_entries defaults to the initialiser's length.
                    m.def.max_entries = last.index.saturating_add(1);
                } else {
                    return Err(ElfError::BadMap {
                        map: m.name.clone(),
                        reason: format!(
                            "values[{}] is past max_entries {}",
                            last.index, m.def.max_entries
                        ),
                    });
                }
            }
        }
    }
    let _ = section;
    Ok(())
}

fn btf_err(e: crate::btf::BtfError) -> ElfError {
    ElfError::Btf { source: e }
}

fn parse_btf_map(btf: &Btf, name: &str, ty: TypeId, depth: u32) -> Result<BtfMapDef, ElfError> {
    let bad = |reason: String| ElfError::BadMap {
        map: name.to_string(),
        reason,
    };
    let sid = btf.resolve(ty).map_err(btf_err)?;
    let (BtfKind::Struct { members, .. } | BtfKind::Union { members, .. }) =
        &btf.get(sid).map_err(btf_err)?.kind
    else {
        return Err(bad(format!(
            "definition has type {}, not a struct",
            btf.type_name(ty)
        )));
    };
    let mut map_type_n = None;
    let (mut key_size, mut value_size, mut max_entries, mut flags, mut pinning) =
        (None, None, 0, 0, 0);
    let (mut key_type, mut value_type) = (None, None);
    let mut values = None;
    let mut inner = None;
    for m in members {
        // `__uint(field, N)`: pointer to an array of N.
        let uint = || -> Result<u32, ElfError> {
            let p = btf.resolve(m.ty).map_err(btf_err)?;
            if let BtfKind::Ptr { target } = btf.get(p).map_err(btf_err)?.kind {
                let a = btf.resolve(target).map_err(btf_err)?;
                if let BtfKind::Array { len, .. } = btf.get(a).map_err(btf_err)?.kind {
                    return Ok(len);
                }
            }
            Err(bad(format!(
                "field '{}' is {}, not __uint(...)",
                m.name,
                btf.type_name(m.ty)
            )))
        };
        // `__type(field, T)`: pointer to T.
        let pointee = || -> Result<TypeId, ElfError> {
            let p = btf.resolve(m.ty).map_err(btf_err)?;
            match btf.get(p).map_err(btf_err)?.kind {
                BtfKind::Ptr { target } => Ok(target),
                _ => Err(bad(format!(
                    "field '{}' is {}, not __type(...)",
                    m.name,
                    btf.type_name(m.ty)
                ))),
            }
        };
        match m.name.as_str() {
            "type" => map_type_n = Some(uint()?),
            "max_entries" => max_entries = uint()?,
            "map_flags" => flags = uint()?,
            "key_size" => key_size = Some(uint()?),
            "value_size" => value_size = Some(uint()?),
            "pinning" => pinning = uint()?,
            "numa_node" | "map_extra" => {
                uint()?;
            }
            "key" => {
                let t = pointee()?;
                let sz = btf.size_of(t).map_err(btf_err)?;
                if key_size.is_some_and(|k| k != sz) {
                    return Err(bad(format!(
                        "key_size {} conflicts with key type {} of {sz} bytes",
                        key_size.unwrap_or(0),
                        btf.type_name(t)
                    )));
                }
                key_size = Some(sz);
                key_type = Some(t);
            }
            "value" => {
                let t = pointee()?;
                let sz = btf.size_of(t).map_err(btf_err)?;
                if value_size.is_some_and(|k| k != sz) {
                    return Err(bad(format!(
                        "value_size {} conflicts with value type {} of {sz} bytes",
                        value_size.unwrap_or(0),
                        btf.type_name(t)
                    )));
                }
                value_size = Some(sz);
                value_type = Some(t);
            }
            "values" => {
                if depth > 0 {
                    return Err(bad("an inner map cannot have values".into()));
                }
                // An array of pointers to the inner definition.
                let a = btf.resolve(m.ty).map_err(btf_err)?;
                let BtfKind::Array { elem, .. } = btf.get(a).map_err(btf_err)?.kind else {
                    return Err(bad(format!(
                        "values is {}, not __array(...)",
                        btf.type_name(m.ty)
                    )));
                };
                let p = btf.resolve(elem).map_err(btf_err)?;
                let BtfKind::Ptr { target } = btf.get(p).map_err(btf_err)?.kind else {
                    return Err(bad(format!(
                        "values holds {}, not pointers",
                        btf.type_name(elem)
                    )));
                };
                let t = btf.resolve(target).map_err(btf_err)?;
                let is_map = match btf.get(t).map_err(btf_err)?.kind {
                    BtfKind::FuncProto { .. } => false,
                    BtfKind::Struct { .. } | BtfKind::Union { .. } => {
                        let mut d = parse_btf_map(btf, &format!("{name}.inner"), t, depth + 1)?;
                        d.def.name = format!("{name}.inner");
                        inner = Some(d.def);
                        true
                    }
                    _ => {
                        return Err(bad(format!(
                            "values holds pointers to {}, neither a map nor a program",
                            btf.type_name(target)
                        )))
                    }
                };
                if m.bit_offset % 8 != 0 {
                    return Err(bad("values is not byte-aligned".into()));
                }
                values = Some((m.bit_offset / 8, is_map));
            }
            _ => {
                // libbpf ignores unknown fields unless in strict mode.
            }
        }
    }
    let Some(tn) = map_type_n else {
        return Err(bad("no map type (__uint(type, ...))".into()));
    };
    let ty = map_type(name, tn)?;
    if values.is_some() {
        // Maps of maps hold maps, prog arrays hold programs.
        let holds_maps = values.is_some_and(|(_, m)| m);
        let fits = if ty == MapType::ProgArray {
            !holds_maps
        } else {
            ty.is_map_in_map() && holds_maps
        };
        if !fits {
            return Err(bad(format!(
                "values of {} in a map of type {}",
                if holds_maps { "maps" } else { "programs" },
                ty.name()
            )));
        }
        // libbpf: slots hold 4-byte fds (ids).
        if value_size.is_some_and(|v| v != 4) {
            return Err(bad(format!(
                "value size {} of a map with values, not 4",
                value_size.unwrap_or(0)
            )));
        }
        value_size = Some(4);
        key_size.get_or_insert(4);
    }
    if ty.is_map_in_map() && inner.is_none() {
        return Err(bad(format!(
            "{} without an inner map (__array(values, ...))",
            ty.name()
        )));
    }
    let mut def = MapDef::new(
        ty,
        key_size.unwrap_or(0),
        value_size.unwrap_or(0),
        max_entries,
    )
    .with_flags(flags)
    .with_name(name);
    if let Some(i) = inner {
        def = def.with_inner(i);
    }
    Ok(BtfMapDef {
        def,
        key_type,
        value_type,
        pinning,
        values,
    })
}

/// The largest global data section accepted (the kernel caps array values
/// near `KMALLOC_MAX_SIZE`; this keeps malformed sizes from allocating).
const MAX_GLOBAL_DATA: u64 = 1 << 26;

fn global_data_maps(
    obj: &Object<'_>,
    btf: Option<&Btf>,
    out: &mut Vec<MapDefinition>,
) -> Result<(), ElfError> {
    for s in obj.sections() {
        if !is_global_data_section(s.name) || !s.is_alloc() || s.is_executable() || s.size == 0 {
            continue;
        }
        if s.size > MAX_GLOBAL_DATA {
            return Err(ElfError::BadMap {
                map: s.name.to_string(),
                reason: format!("global data section of {} bytes is too large", s.size),
            });
        }
        let rodata = s.name.starts_with(".rodata");
        let size = u32::try_from(s.size).unwrap_or(u32::MAX);
        let mut data = s.data.to_vec();
        data.resize(s.size as usize, 0);
        let value_type = btf.and_then(|b| b.find(s.name, |k| matches!(k, BtfKind::Datasec { .. })));
        let flags = if rodata { map_flags::RDONLY_PROG } else { 0 };
        out.push(MapDefinition {
            name: s.name.to_string(),
            def: MapDef::new(MapType::Array, 4, size, 1)
                .with_flags(flags)
                .with_name(s.name),
            origin: MapOrigin::GlobalData {
                section: s.name.to_string(),
            },
            key_type: None,
            value_type,
            initial_data: Some(data),
            frozen: rodata,
            initial_values: Vec::new(),
            pinning: 0,
        });
    }
    Ok(())
}
