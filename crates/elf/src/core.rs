//! CO-RE ("compile once, run everywhere") relocations against a target
//! BTF, such as the running kernel's `/sys/kernel/btf/vmlinux`.
//!
//! Facts (the kernel's `Documentation/bpf/llvm_reloc.rst` and libbpf's
//! `relo_core.c`, read for behaviour only): a record names an instruction,
//! a local root type and an access string. For field relocations the
//! string is `a:m1:m2:...`: `a` indexes the root as an array, each `mi`
//! is a member index (structs, unions) or an element index (arrays) in
//! the *local* type. The target field is found by member *names* (looking
//! through anonymous members), types by name with `___flavour` suffixes
//! stripped. The instruction's immediate (ALU, `lddw`) or offset (loads,
//! stores) receives the target's value. A field that does not exist in the
//! target "poisons" the instruction (a call to helper `0xbad2310`, as
//! libbpf does), so that the verifier rejects it only if it is reachable.
//!
//! Supported: byte offset, byte size, existence, signedness and the
//! shifts of non-bitfield members; type existence, size, matches and
//! target id; enumerator existence and value. Bitfields in the target are
//! an error naming the relocation.

use crate::btf::{Btf, BtfKind, CoreRelo, CoreReloKind, TypeId};
use bpfkit_isa::{HelperId, Imm64, Insn, Src};

/// The helper id libbpf writes into instructions whose relocation found
/// no target (`0xbad2310`).
pub const POISON_HELPER: u32 = 0xbad2310;

/// A type name without its `___flavour` suffix.
pub(crate) fn essential_name(name: &str) -> &str {
    match name.find("___") {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// Whether two kinds can stand for each other.
fn kinds_match(a: &BtfKind, b: &BtfKind) -> bool {
    use BtfKind::*;
    matches!(
        (a, b),
        (Struct { .. }, Struct { .. })
            | (Union { .. }, Union { .. })
            | (Enum { .. } | Enum64 { .. }, Enum { .. } | Enum64 { .. })
            | (Int { .. }, Int { .. })
            | (Float { .. }, Float { .. })
            | (Ptr { .. }, Ptr { .. })
            | (Array { .. }, Array { .. })
            | (FuncProto { .. }, FuncProto { .. })
            | (Fwd { .. }, Fwd { .. })
    )
}

/// The value a relocation resolves to: `None` when the target lacks the
/// field or enumerator (the instruction is poisoned).
pub(crate) fn resolve(local: &Btf, target: &Btf, c: &CoreRelo) -> Result<Option<u64>, String> {
    use CoreReloKind as K;
    let lroot = local.resolve(c.type_id).map_err(|e| e.to_string())?;
    let lt = local.get(lroot).map_err(|e| e.to_string())?;
    let name = essential_name(&lt.name);
    let candidates: Vec<TypeId> = if name.is_empty() {
        Vec::new()
    } else {
        target
            .types()
            .filter(|(_, t)| essential_name(&t.name) == name && kinds_match(&lt.kind, &t.kind))
            .map(|(id, _)| id)
            .collect()
    };
    match c.kind {
        K::TypeIdLocal => Ok(Some(c.type_id as u64)),
        K::TypeExists | K::TypeMatches => Ok(Some(!candidates.is_empty() as u64)),
        K::TypeIdTarget => Ok(candidates.first().map(|&id| id as u64)),
        K::TypeSize => match candidates.first() {
            Some(&id) => target
                .size_of(id)
                .map(|s| Some(s as u64))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        },
        K::EnumvalExists | K::EnumvalValue => {
            let idx: usize = c
                .access
                .parse()
                .map_err(|_| format!("bad enumerator access '{}'", c.access))?;
            let lvals = match &lt.kind {
                BtfKind::Enum { values, .. } | BtfKind::Enum64 { values, .. } => values,
                _ => return Err("enumerator relocation on a non-enum".into()),
            };
            let lname = &lvals
                .get(idx)
                .ok_or_else(|| format!("enumerator {idx} out of range"))?
                .name;
            let found = candidates
                .iter()
                .find_map(|&id| match &target.get(id).ok()?.kind {
                    BtfKind::Enum { values, .. } | BtfKind::Enum64 { values, .. } => {
                        values.iter().find(|e| e.name == *lname).map(|e| e.value)
                    }
                    _ => None,
                });
            Ok(match (c.kind, found) {
                (K::EnumvalExists, f) => Some(f.is_some() as u64),
                (_, f) => f,
            })
        }
        K::FieldByteOffset
        | K::FieldByteSize
        | K::FieldExists
        | K::FieldSigned
        | K::FieldLshiftU64
        | K::FieldRshiftU64 => {
            let path: Vec<u32> = c
                .access
                .split(':')
                .map(|s| s.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bad access string '{}'", c.access))?;
            let field = candidates
                .iter()
                .find_map(|&t| field_in(local, target, lroot, t, &path).ok().flatten());
            let Some(f) = field else {
                return Ok(if c.kind == K::FieldExists {
                    Some(0)
                } else {
                    None
                });
            };
            if f.bitfield_size != 0 {
                return Err("bitfield members are not supported".into());
            }
            let size = target.size_of(f.ty).map_err(|e| e.to_string())? as u64;
            Ok(Some(match c.kind {
                K::FieldByteOffset => f.bit_offset / 8,
                K::FieldByteSize => size,
                K::FieldExists => 1,
                K::FieldSigned => {
                    let r = target.resolve(f.ty).unwrap_or(f.ty);
                    match target.get(r).map(|t| &t.kind) {
                        Ok(BtfKind::Int { encoding, .. }) => encoding.signed as u64,
                        Ok(BtfKind::Enum { signed, .. } | BtfKind::Enum64 { signed, .. }) => {
                            *signed as u64
                        }
                        _ => 0,
                    }
                }
                _ => 64u64.saturating_sub(size * 8),
            }))
        }
        K::Other(n) => Err(format!("unknown CO-RE relocation kind {n}")),
    }
}

/// A field found in the target: its type, bit offset from the root, and
/// bitfield size.
struct Field {
    ty: TypeId,
    bit_offset: u64,
    bitfield_size: u32,
}

/// Walks `path` through the local type and the same names through the
/// target; `Ok(None)` when the target has no such field.
fn field_in(
    local: &Btf,
    target: &Btf,
    lroot: TypeId,
    troot: TypeId,
    path: &[u32],
) -> Result<Option<Field>, String> {
    let first = *path.first().ok_or("empty access string")? as u64;
    let tsize = target.size_of(troot).map_err(|e| e.to_string())? as u64;
    let mut f = Field {
        ty: troot,
        bit_offset: first.saturating_mul(tsize).saturating_mul(8),
        bitfield_size: 0,
    };
    let mut lcur = lroot;
    for &i in &path[1..] {
        let lres = local.resolve(lcur).map_err(|e| e.to_string())?;
        let tres = target.resolve(f.ty).map_err(|e| e.to_string())?;
        match &local.get(lres).map_err(|e| e.to_string())?.kind {
            BtfKind::Struct { members, .. } | BtfKind::Union { members, .. } => {
                let lm = members
                    .get(i as usize)
                    .ok_or_else(|| format!("member {i} out of range"))?;
                let Some((ty, off, bits)) = find_member(target, tres, &lm.name, 0) else {
                    return Ok(None);
                };
                f = Field {
                    ty,
                    bit_offset: f.bit_offset.saturating_add(off),
                    bitfield_size: bits,
                };
                lcur = lm.ty;
            }
            BtfKind::Array { elem, .. } => {
                let BtfKind::Array { elem: telem, .. } =
                    target.get(tres).map_err(|e| e.to_string())?.kind
                else {
                    return Ok(None);
                };
                let esize = target.size_of(telem).map_err(|e| e.to_string())? as u64;
                f = Field {
                    ty: telem,
                    bit_offset: f
                        .bit_offset
                        .saturating_add((i as u64).saturating_mul(esize).saturating_mul(8)),
                    bitfield_size: 0,
                };
                lcur = *elem;
            }
            _ => return Err(format!("access {i} into a type without members")),
        }
    }
    Ok(Some(f))
}

/// A named member of a struct or union, looking through anonymous
/// members: (type, bit offset, bitfield size).
fn find_member(btf: &Btf, id: TypeId, name: &str, depth: usize) -> Option<(TypeId, u64, u32)> {
    if depth > 32 || name.is_empty() {
        return None;
    }
    let id = btf.resolve(id).ok()?;
    let (BtfKind::Struct { members, .. } | BtfKind::Union { members, .. }) =
        &btf.get(id).ok()?.kind
    else {
        return None;
    };
    for m in members {
        if m.name == name {
            return Some((m.ty, m.bit_offset as u64, m.bitfield_size));
        }
        if m.name.is_empty() {
            if let Some((t, off, bits)) = find_member(btf, m.ty, name, depth + 1) {
                return Some((t, (m.bit_offset as u64).saturating_add(off), bits));
            }
        }
    }
    None
}

/// Writes a resolved value into the instruction (or poisons it).
pub(crate) fn patch(insn: &mut Insn, value: Option<u64>) -> Result<(), String> {
    let Some(v) = value else {
        return match insn {
            Insn::LoadImm64 { .. } => Err("the target lacks it and lddw cannot be poisoned".into()),
            _ => {
                *insn = Insn::Call(HelperId(POISON_HELPER));
                Ok(())
            }
        };
    };
    let small = |max: i64| {
        i64::try_from(v)
            .ok()
            .filter(|x| *x <= max)
            .ok_or_else(|| format!("value {v} does not fit the instruction"))
    };
    match insn {
        Insn::Alu {
            src: Src::Imm(imm), ..
        } => *imm = small(i32::MAX as i64)? as i32,
        Insn::Load { off, .. } | Insn::Store { off, .. } | Insn::Atomic { off, .. } => {
            *off = small(i16::MAX as i64)? as i16
        }
        Insn::LoadImm64 {
            imm: imm @ Imm64::Value(_),
            ..
        } => *imm = Imm64::Value(v),
        other => return Err(format!("cannot patch {other:?}")),
    }
    Ok(())
}
