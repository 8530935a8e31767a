//! `bpf_map_lookup_elem` on a plain array map, computed inline instead of
//! calling the helper (unchecked mode only), as the kernel's verifier does
//! with `map_gen_lookup`: load the 4-byte key, compare it with
//! `max_entries`, scale it by the value stride and add the storage base;
//! NULL when out of range. A helper call costs a few hundred host
//! instructions (trampoline, registry, per-run state); this costs six.
//!
//! Three conditions, each checked here or by the caller:
//!
//! - **The map is certain.** The call's `r1` must hold one `lddw` of a
//!   map on every path. The kernel learns this from its verifier (the same
//!   map pointer seen at the call on every path); here a local pattern is
//!   enough for what compilers emit: the `lddw r1, map` precedes the call
//!   in the same straight-line run, no instruction between them writes
//!   `r1`, transfers control away unconditionally or calls anything, and
//!   none of the instructions after the `lddw` up to the call itself is the
//!   target of a jump, a call or a function address ([`map_operand`]). A
//!   run of code entered only at its top executes the `lddw` before the
//!   call, so `r1` is that map whichever path led there. Anything else
//!   (a map chosen by a branch, a map from a map-in-map lookup, a map
//!   spilled and filled) keeps the helper call.
//! - **The map is an array** whose layout the loader vouches for
//!   ([`bpfkit_runtime::Imm64Resolver::array_map`], `None` by default): the
//!   pointer computed is exactly the one `bpfkit-maps` returns, and the
//!   storage outlives the code and is a registered region whenever a
//!   helper may be handed the pointer (the resolver's contract).
//! - **The program is verified** (`LowerInput::checked` false): the
//!   verifier guarantees that `r2` points at `key_size` (4 for arrays)
//!   readable bytes, so the key is one unchecked 4-byte load, and that the
//!   call's `r1`-`r5` are not read afterwards (they are kept anyway: the
//!   code uses only the scratch registers `rax`, `rcx`, `rdx` and writes
//!   `r0`). Checked mode keeps the helper call and its checks.
//!
//! Per-CPU arrays (a layout with a `cpu_stride`) add the run's CPU times
//! that stride, the CPU read from the JIT's `Ctx::cpu` (set per run with
//! `Jit::set_cpu`, which refuses a CPU at or above the `cpus` of any
//! per-CPU array the program names: [`cpu_limit`]), as the kernel adds its
//! per-CPU offset. `bpf_get_smp_processor_id` becomes one load of that
//! field ([`cpu_id`]) when the resolver says the registered helper
//! returns it (`Imm64Resolver::inline_cpu_id`).
//!
//! Maps whose lookup is one load from an array of pointers (device maps:
//! [`bpfkit_runtime::Imm64Resolver::slot_map`]) become `r0 = key <
//! max_entries ? slots[key] : 0` ([`slot_lookup`]), under the same three
//! conditions; the resolver vouches that the slot word is the helper's
//! answer and that the value it points to is readable and registered for
//! the rest of the run.
//!
//! A lookup whose `r1` is not such a certain `lddw` (an inner map from a
//! map-in-map lookup, a map chosen by a branch) reads the header at the
//! map pointer when the resolver says every map pointer has one
//! (`Imm64Resolver::map_headers`): an array's base, `max_entries` and
//! stride give the pointer as above; a base of 0 (any other map) takes the
//! helper call ([`header_probe`], [`header_lookup`]). The verifier
//! guarantees that `r1` there is a map pointer.
//!
//! With constant blinding, `max_entries`, strides that are not powers of
//! two and the base are emitted as `value ^ key` and `key`, as `lddw`
//! values are: `max_entries` and the value size come from the object's
//! map definition, which its author chooses.

use super::encode::{patch_rel, Alu, Asm, Cc, Gpr, Mem, Rm, Shift, Sz};
use super::lower::{CTX, REG_MAP};
use crate::Ctx;
use bpfkit_isa::{AluOp, AtomicOp, Imm64, Insn, Pc, Program, Reg, Size, Src, Width};
use bpfkit_runtime::{ArrayMap, DevhashMap, Imm64Resolver, SlotMap};
use std::mem::offset_of;

/// `bpf_map_lookup_elem`'s helper id.
pub(crate) const MAP_LOOKUP_ELEM: u32 = 1;

/// `bpf_map_update_elem`'s helper id.
pub(crate) const MAP_UPDATE_ELEM: u32 = 2;

/// `bpf_map_delete_elem`'s helper id.
pub(crate) const MAP_DELETE_ELEM: u32 = 3;

/// `bpf_get_smp_processor_id`'s helper id.
pub(crate) const GET_SMP_PROCESSOR_ID: u32 = 8;

/// `bpf_redirect_map`'s helper id.
pub(crate) const REDIRECT_MAP: u32 = 51;

/// `XDP_REDIRECT`, what `bpf_redirect_map` returns for a target found.
const XDP_REDIRECT: i32 = 4;

/// How far back from a call [`map_operand`] looks for the `lddw` (compilers
/// put it within a few instructions; the bound keeps compiling linear).
const LOOKBACK: usize = 32;

/// Blinding keys for one inlined lookup (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keys {
    /// For the 64-bit base.
    pub base: u64,
    /// For `max_entries` (32-bit).
    pub max: i32,
    /// For the stride (32-bit; unused for a power of two).
    pub stride: i32,
    /// For the per-CPU stride (32-bit; unused for a power of two).
    pub cpu_stride: i32,
}

/// Per instruction index: whether a jump, a bpf-to-bpf call or an `lddw`
/// of a function address targets it (where [`map_operand`]'s straight-line
/// run must not be entered). Every instruction when the program has a
/// `callx`, which may land anywhere (the verifier refuses `callx`, so
/// verified programs have none; this keeps the analysis sound on its own).
pub(crate) fn branch_targets(prog: &Program) -> Vec<bool> {
    let n = prog.insns().len() + 1;
    let mut t = vec![false; n];
    for (pc, insn) in prog.iter() {
        if matches!(insn, Insn::Callx(_)) {
            return vec![true; n];
        }
        if let Some(i) = insn.branch_target(pc).and_then(|p| prog.index_of(p)) {
            t[i] = true;
        }
    }
    t
}

/// The `lddw r1` that certainly sets `r1` at the call at instruction `i`
/// (see the module docs): its slot and map operand, or `None` when `r1`
/// could come from elsewhere. `targets` is [`branch_targets`].
pub(crate) fn map_operand(prog: &Program, targets: &[bool], i: usize) -> Option<(Pc, Imm64)> {
    // Entered from elsewhere anywhere between the `lddw` and the call: r1
    // may differ.
    lddw_in_run(prog, targets, i, usize::MAX)
}

/// The key of the array lookup at the call at instruction `i` when the
/// program certainly stored it as a constant: `r2` is `r10 + off` (set by
/// `r2 = r10` and additions of immediates) and the last write of the four
/// bytes at `r10 + off` before the call is a 4- or 8-byte store of a
/// constant (an immediate, or a register a `mov` of an immediate set) at
/// that very offset, all in the straight-line run before the call (nothing
/// enters it, nothing in it calls). Any store or atomic through another
/// base may write the stack (a copy of `r10`), so one ends the search, as
/// does a store that covers the key only in part. `targets` is
/// [`branch_targets`]. The verifier has checked that `r2` points at the
/// key's readable bytes; the fold only saves reading them.
pub(crate) fn const_key(prog: &Program, targets: &[bool], i: usize) -> Option<u32> {
    let insns = prog.insns();
    let first = i.saturating_sub(LOOKBACK);
    let entered = |j: usize| targets.get(j + 1).copied().unwrap_or(true);
    // Where r2 points: `r2 = r10` plus the immediates added after it.
    let mut added = 0i64;
    let mut off = None;
    for j in (first..i).rev() {
        if entered(j) || !falls_through(&insns[j]) {
            return None;
        }
        match insns[j] {
            Insn::Alu {
                width: Width::W64,
                op: AluOp::Add,
                dst: Reg::R2,
                src: Src::Imm(k),
            } => {
                added += k as i64;
            }
            Insn::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: Reg::R2,
                src: Src::Reg(Reg::R10),
            } => {
                off = Some(added);
                break;
            }
            ref insn if writes(insn, Reg::R2) => return None,
            _ => {}
        }
    }
    let off = off?;
    // The last write of the key's bytes.
    for j in (first..i).rev() {
        if entered(j) || !falls_through(&insns[j]) || writes(&insns[j], Reg::R10) {
            return None;
        }
        let (base, at, size, imm) = match insns[j] {
            Insn::Store {
                size,
                dst,
                off,
                src,
            } => (
                dst,
                off,
                size,
                match src {
                    Src::Imm(k) => Some(k as u32),
                    Src::Reg(r) => const_reg(prog, targets, first, j, r).map(|v| v as u32),
                },
            ),
            Insn::Atomic { size, dst, off, .. } => (dst, off, size, None),
            _ => continue,
        };
        if base != Reg::R10 {
            return None;
        }
        let (at, end) = (at as i64, at as i64 + size.bytes() as i64);
        if end <= off || at >= off + 4 {
            continue;
        }
        // A 4- or 8-byte store of a constant at the key's offset: its low
        // four bytes are the constant's low half (little-endian).
        return match (imm, size) {
            (Some(k), Size::W | Size::DW) if at == off => Some(k),
            _ => None,
        };
    }
    None
}

/// The value of `r` before instruction `j` when the straight-line run from
/// `first` sets it with a `mov` of an immediate (sign-extended for the
/// 64-bit form, zero-extended for the 32-bit one) and nothing after that
/// writes it.
fn const_reg(prog: &Program, targets: &[bool], first: usize, j: usize, r: Reg) -> Option<u64> {
    let insns = prog.insns();
    for m in (first..j).rev() {
        if targets.get(m + 1).copied().unwrap_or(true) {
            return None;
        }
        match insns[m] {
            Insn::Alu {
                width,
                op: AluOp::Mov,
                dst,
                src: Src::Imm(k),
            } if dst == r => {
                return Some(match width {
                    Width::W64 => k as i64 as u64,
                    Width::W32 => u64::from(k as u32),
                })
            }
            ref insn if passes(insn, r) => {}
            _ => return None,
        }
    }
    None
}

/// [`map_operand`] for a call whose straight-line run (no `r1` write from
/// its top `s` to the call) is entered from several places, as compilers
/// merge calls (`r1 = map; r3 = 2; goto call` on one path, `r1 = map;
/// r3 = 0` falling through on the other): the map when every way into
/// `s` is a jump or the fall-through whose own run loads the same map as
/// [`map_operand`] finds it. Nothing when `s` is also entered otherwise
/// (the program's or a function's entry, a callback's address, after a
/// call), or when any way in loads another map or none.
pub(crate) fn merged_map_operand(
    prog: &Program,
    targets: &[bool],
    i: usize,
) -> Option<(Pc, Imm64)> {
    let insns = prog.insns();
    let mut s = i;
    while !targets.get(s).copied().unwrap_or(true) {
        if s == 0 || i - s >= LOOKBACK {
            return None;
        }
        s -= 1;
        if !passes_r1(&insns[s]) {
            return None;
        }
    }
    if s == 0 || s > i {
        return None;
    }
    let mut found: Option<(Pc, Imm64)> = None;
    let mut agree = |o: (Pc, Imm64)| match found {
        Some((_, imm)) => imm == o.1,
        None => {
            found = Some(o);
            true
        }
    };
    // The fall-through: the run above `s`, entered only at its top.
    if !matches!(insns[s - 1], Insn::Ja { .. } | Insn::Exit) {
        let o = lddw_in_run(prog, targets, s, s)?;
        if !agree(o) {
            return None;
        }
    }
    for (k, (pc, insn)) in prog.iter().enumerate() {
        if insn.branch_target(pc).and_then(|p| prog.index_of(p)) != Some(s) {
            continue;
        }
        if !matches!(insn, Insn::Ja { .. } | Insn::Jmp { .. }) {
            return None;
        }
        // `r1` at `s` is `r1` at the jump, which writes no register.
        let o = map_operand(prog, targets, k)?;
        if !agree(o) {
            return None;
        }
    }
    found
}

/// The map `lddw r1` in the straight-line run that ends just before
/// instruction `i`, where nothing enters between it and `i` (jump targets
/// at or above `top` aside: the caller accounts for those ways in).
fn lddw_in_run(prog: &Program, targets: &[bool], i: usize, top: usize) -> Option<(Pc, Imm64)> {
    let insns = prog.insns();
    for j in (i.saturating_sub(LOOKBACK)..i).rev() {
        if j + 1 < top && targets.get(j + 1).copied().unwrap_or(true) {
            return None;
        }
        match insns[j] {
            Insn::LoadImm64 { dst: Reg::R1, imm } => {
                return matches!(imm, Imm64::MapIdx(_)).then(|| (prog.pcs()[j], imm));
            }
            ref insn if passes_r1(insn) => {}
            _ => return None,
        }
    }
    None
}

/// The value `r3` certainly holds at the call at `i`, when the last
/// instruction writing it before the call is a `mov r3, imm` in the same
/// straight-line run entered only at its top (as [`map_operand`] finds
/// the `lddw`): `bpf_redirect_map`'s flags, which decide what the call
/// does.
pub(crate) fn r3_constant(prog: &Program, targets: &[bool], i: usize) -> Option<u64> {
    const_reg(prog, targets, i.saturating_sub(LOOKBACK), i, Reg::R3)
}

/// Whether `insn` goes on to the next instruction and calls nothing
/// (conditional jumps included: their fall-through path reaches the call).
fn falls_through(insn: &Insn) -> bool {
    matches!(
        insn,
        Insn::Alu { .. }
            | Insn::Neg { .. }
            | Insn::Endian { .. }
            | Insn::LoadImm64 { .. }
            | Insn::Load { .. }
            | Insn::Store { .. }
            | Insn::Atomic { .. }
            | Insn::Jmp { .. }
    )
}

/// Whether `insn` (one that [`falls_through`]) may write `r`.
fn writes(insn: &Insn, r: Reg) -> bool {
    match *insn {
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::LoadImm64 { dst, .. }
        | Insn::Load { dst, .. } => dst == r,
        // Fetching atomics and `xchg` write `src`; `cmpxchg` writes r0.
        Insn::Atomic { src, fetch, op, .. } => {
            (src == r && (fetch || op == AtomicOp::Xchg) && op != AtomicOp::Cmpxchg)
                || (op == AtomicOp::Cmpxchg && r == Reg::R0)
        }
        _ => false,
    }
}

/// Whether `insn` falls through to the next instruction without writing
/// `r` or calling anything (conditional jumps included: their fall-through
/// path is the one that reaches the call).
fn passes(insn: &Insn, r: Reg) -> bool {
    falls_through(insn) && !writes(insn, r)
}

/// Whether `insn` falls through to the next instruction without writing
/// `r1` or calling anything (conditional jumps included: their fall-through
/// path is the one that reaches the call).
fn passes_r1(insn: &Insn) -> bool {
    passes(insn, Reg::R1)
}

/// The lowest CPU count of the per-CPU arrays the resolver describes for
/// the `lddw`s of `prog` (`u32::MAX` without any): a run on a CPU at or
/// above it could compute a pointer past such a map's storage, so the JIT
/// refuses it (`Jit::set_cpu`). Every map `lddw` counts, inlined or not
/// (one pass over the program, only in unchecked mode).
pub(crate) fn cpu_limit(prog: &Program, resolver: &dyn Imm64Resolver) -> u32 {
    let mut limit = u32::MAX;
    for (pc, insn) in prog.iter() {
        if let Insn::LoadImm64 {
            imm: imm @ Imm64::MapIdx(_),
            ..
        } = insn
        {
            if let Some(m) = resolver.array_map(pc, imm) {
                if m.cpu_stride != 0 {
                    limit = limit.min(m.cpus);
                }
            }
        }
    }
    limit
}

/// Emits `r0 = cpu` (`bpf_get_smp_processor_id`): the run's CPU from the
/// `Ctx`, zero-extended.
pub(crate) fn cpu_id(a: &mut Asm) {
    a.mov_r_rm(Sz::B32, REG_MAP[0], cpu_field());
}

fn cpu_field() -> Rm {
    Rm::Mem(Mem::at(CTX, offset_of!(Ctx, cpu) as i32))
}

/// Emits `r *= stride` (64-bit; `r` holds a u32 key or CPU and `stride` is
/// below 2^31: no overflow), with `scratch` for a blinded stride.
fn scale(a: &mut Asm, r: Gpr, scratch: Gpr, stride: u32, key: Option<i32>) {
    if stride.is_power_of_two() {
        let s = stride.trailing_zeros() as u8;
        if s > 0 {
            a.shift_i(Sz::B64, Shift::Shl, Rm::Reg(r), s);
        }
        return;
    }
    match key {
        Some(k) => {
            let stride = stride as i32;
            a.mov_r_imm64(scratch, (stride ^ k) as u32 as u64);
            a.alu_rm_i(Sz::B32, Alu::Xor, Rm::Reg(scratch), k);
            a.imul_r_rm(Sz::B64, r, Rm::Reg(scratch));
        }
        None => a.imul_r_rm_i(Sz::B64, r, Rm::Reg(r), stride as i32),
    }
}

/// Emits `r0 = key < max_entries ? base + key * stride + cpu * cpu_stride
/// : 0` with the key read from `[r2]` (see the module docs; `cpu_stride`
/// 0 for a plain array), or nothing and `false` when the layout does not
/// fit the code (a stride above `i32::MAX`, no entries, a per-CPU layout
/// without CPUs or whose CPUs' values do not fit in the stride).
///
/// With `key` (the program's constant key, [`const_key`]; never under
/// blinding) the answer is computed here: `r0` = the value's address
/// (plus the CPU's offset for a per-CPU array) or NULL.
pub(crate) fn array_lookup(
    a: &mut Asm,
    map: &ArrayMap,
    keys: Option<Keys>,
    key: Option<u32>,
) -> bool {
    let percpu = map.cpu_stride != 0;
    if map.stride == 0
        || map.stride > i32::MAX as u32
        || map.max_entries == 0
        || map.cpu_stride > i32::MAX as u32
        || (percpu
            && (map.cpus == 0 || map.cpus as u64 * map.cpu_stride as u64 > map.stride as u64))
    {
        return false;
    }
    let r0 = REG_MAP[0];
    if let (Some(k), None) = (key, keys) {
        if k >= map.max_entries {
            a.mov_r_imm64(r0, 0);
            return true;
        }
        let at = map.base + k as u64 * map.stride as u64;
        a.mov_r_imm64(r0, at);
        if percpu {
            a.mov_r_rm(Sz::B32, Gpr::Rax, cpu_field());
            scale(a, Gpr::Rax, Gpr::Rdx, map.cpu_stride, None);
            a.alu_rm_r(Sz::B64, Alu::Add, Rm::Reg(r0), Gpr::Rax);
        }
        return true;
    }
    let skip = key_in_bounds(a, map.max_entries, keys);
    scale(a, Gpr::Rax, Gpr::Rdx, map.stride, keys.map(|k| k.stride));
    if percpu {
        // The CPU is below `cpus` (`Jit::set_cpu`), so the value lies
        // inside the key's `stride` bytes.
        a.mov_r_rm(Sz::B32, Gpr::Rdx, cpu_field());
        if map.cpu_stride.is_power_of_two() && map.cpu_stride <= 8 {
            let scale = map.cpu_stride as u8;
            a.lea(Gpr::Rax, Mem::indexed(Gpr::Rax, Gpr::Rdx, scale));
        } else {
            scale(
                a,
                Gpr::Rdx,
                Gpr::Rcx,
                map.cpu_stride,
                keys.map(|k| k.cpu_stride),
            );
            a.alu_rm_r(Sz::B64, Alu::Add, Rm::Reg(Gpr::Rax), Gpr::Rdx);
        }
    }
    match keys {
        Some(k) => {
            a.mov_r_imm64(r0, map.base ^ k.base);
            a.mov_r_imm64(Gpr::Rcx, k.base);
            a.alu_rm_r(Sz::B64, Alu::Xor, Rm::Reg(r0), Gpr::Rcx);
        }
        None => a.mov_r_imm64(r0, map.base),
    }
    a.alu_rm_r(Sz::B64, Alu::Add, Rm::Reg(r0), Gpr::Rax);
    let end = a.pos();
    let ok = patch_rel(a.code_mut(), skip, 1, end);
    debug_assert!(ok, "the inline lookup fits a rel8");
    true
}

/// The common head of the inline lookups: `eax` = the u32 key at `[r2]`
/// (`bpfkit-maps` reads it in native byte order), `r0` = 0, and a short
/// `jae` (returned, to patch) past the lookup when the key is not below
/// `max_entries` (blinded through `keys` when given).
fn key_in_bounds(a: &mut Asm, max_entries: u32, keys: Option<Keys>) -> usize {
    a.mov_r_rm(Sz::B32, Gpr::Rax, Rm::Mem(Mem::at(REG_MAP[2], 0)));
    match keys {
        Some(k) => {
            let max = max_entries as i32;
            a.mov_r_imm64(Gpr::Rcx, (max ^ k.max) as u32 as u64);
            a.alu_rm_i(Sz::B32, Alu::Xor, Rm::Reg(Gpr::Rcx), k.max);
            a.alu_rm_r(Sz::B32, Alu::Cmp, Rm::Reg(Gpr::Rax), Gpr::Rcx);
        }
        None => a.alu_rm_i(Sz::B32, Alu::Cmp, Rm::Reg(Gpr::Rax), max_entries as i32),
    }
    // `xor` would clobber the flags: `mov` leaves them.
    a.mov_rm_i(Sz::B32, Rm::Reg(REG_MAP[0]), 0);
    a.jcc(Cc::Ae, false)
}

/// Emits `r0 = key < max_entries ? *(u64 *)(slots + key * 8) : 0` with
/// the key read from `[r2]` (see the module docs), or nothing and `false`
/// for a map without slots.
pub(crate) fn slot_lookup(a: &mut Asm, map: &SlotMap, keys: Option<Keys>) -> bool {
    if map.max_entries == 0 {
        return false;
    }
    let r0 = REG_MAP[0];
    let skip = key_in_bounds(a, map.max_entries, keys);
    match keys {
        Some(k) => {
            a.mov_r_imm64(Gpr::Rcx, map.slots ^ k.base);
            a.mov_r_imm64(Gpr::Rdx, k.base);
            a.alu_rm_r(Sz::B64, Alu::Xor, Rm::Reg(Gpr::Rcx), Gpr::Rdx);
        }
        None => a.mov_r_imm64(Gpr::Rcx, map.slots),
    }
    // The key is zero-extended (a 32-bit load), below `max_entries`.
    a.mov_r_rm(Sz::B64, r0, Rm::Mem(Mem::indexed(Gpr::Rcx, Gpr::Rax, 8)));
    let end = a.pos();
    let ok = patch_rel(a.code_mut(), skip, 1, end);
    debug_assert!(ok, "the inline lookup fits a rel8");
    true
}

/// Emits `bpf_redirect_map(map, r2, flags)` on the `devmap` whose slots
/// `map` gives, with `rcx` = 1 + the offset of the run's
/// [`bpfkit_runtime::RedirectRecord`] in its data (nonzero; the caller
/// tests it): the record gets the key (`r2`'s low 32 bits, as the helper
/// reads it), the map's address `addr`, the slot's word (the entry,
/// 0 when empty or the key is out of range) and `set` 1; `r0` =
/// `XDP_REDIRECT` when there is an entry, else the flags (the fallback
/// action): `flags`, or `r3` when `None` (the caller made sure that the
/// flags are below 4 either way). The kernel's helper
/// also only records the map and the entry found, which the embedder
/// reads after the run. Scratch: `rax`, `rcx`, `rdx`.
pub(crate) fn redirect_map(a: &mut Asm, map: &SlotMap, addr: u64, flags: Option<u32>, data: usize) {
    use bpfkit_runtime::RedirectRecord as R;
    let r0 = REG_MAP[0];
    let rec = |off: usize| Rm::Mem(Mem::at(Gpr::Rcx, off as i32 - 1));
    a.alu_r_rm(
        Sz::B64,
        Alu::Add,
        Gpr::Rcx,
        Rm::Mem(Mem::at(CTX, data as i32)),
    );
    a.mov_r_rm(Sz::B32, Gpr::Rax, Rm::Reg(REG_MAP[2]));
    a.mov_rm_r(Sz::B64, rec(offset_of!(R, key)), Gpr::Rax);
    a.mov_r_imm64(Gpr::Rdx, addr);
    a.mov_rm_r(Sz::B64, rec(offset_of!(R, map)), Gpr::Rdx);
    a.mov_rm_i(Sz::B64, rec(offset_of!(R, set)), 1);
    match flags {
        Some(f) => a.mov_rm_i(Sz::B32, Rm::Reg(r0), f as i32),
        None => a.mov_r_rm(Sz::B32, r0, Rm::Reg(REG_MAP[3])),
    }
    a.mov_rm_i(Sz::B32, Rm::Reg(Gpr::Rdx), 0);
    a.alu_rm_i(Sz::B32, Alu::Cmp, Rm::Reg(Gpr::Rax), map.max_entries as i32);
    let skip = a.jcc(Cc::Ae, false);
    a.mov_r_imm64(Gpr::Rdx, map.slots);
    // The key is zero-extended (a 32-bit move), below `max_entries`.
    a.mov_r_rm(
        Sz::B64,
        Gpr::Rdx,
        Rm::Mem(Mem::indexed(Gpr::Rdx, Gpr::Rax, 8)),
    );
    let store = a.pos();
    let ok = patch_rel(a.code_mut(), skip, 1, store);
    a.mov_rm_r(Sz::B64, rec(offset_of!(R, entry)), Gpr::Rdx);
    a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rdx), Gpr::Rdx);
    let miss = a.jcc(Cc::E, false);
    a.mov_rm_i(Sz::B32, Rm::Reg(r0), XDP_REDIRECT);
    let end = a.pos();
    let ok = ok && patch_rel(a.code_mut(), miss, 1, end);
    debug_assert!(ok, "the inline redirect fits a rel8");
}

/// Emits `r0 = ` the address of the entry of the 4-byte key at `[r2]` in
/// the `devmap_hash` that `map` describes, or 0 when absent: the probe
/// [`bpfkit_runtime::Imm64Resolver::devhash_map`] documents (first cell
/// `(key * mult) >> (32 - bits)`, on past tombstones (1) and other keys'
/// entries, to the key's entry or an empty cell), in the same three
/// conditions as the array lookups; nothing and `false` for a layout the
/// code does not take (`bits` outside `1..=31`). The probe ends: every
/// table the resolver hands out has an empty cell. Not under constant
/// blinding (the caller keeps the helper call then: the mask comes from
/// `max_entries`).
pub(crate) fn devhash_lookup(a: &mut Asm, map: &DevhashMap) -> bool {
    if !(1..=31).contains(&map.bits) {
        return false;
    }
    let r0 = REG_MAP[0];
    a.mov_r_rm(Sz::B32, Gpr::Rax, Rm::Mem(Mem::at(REG_MAP[2], 0)));
    // The product's low 32 bits are the same signed or not.
    a.imul_r_rm_i(Sz::B32, Gpr::Rcx, Rm::Reg(Gpr::Rax), map.mult as i32);
    a.shift_i(
        Sz::B32,
        Shift::Shr,
        Rm::Reg(Gpr::Rcx),
        (32 - map.bits) as u8,
    );
    a.mov_r_imm64(Gpr::Rdx, map.table);
    a.mov_r_rm(Sz::B64, Gpr::Rdx, Rm::Mem(Mem::at(Gpr::Rdx, 0)));
    let top = a.pos();
    a.mov_r_rm(Sz::B64, r0, Rm::Mem(Mem::indexed(Gpr::Rdx, Gpr::Rcx, 8)));
    a.test_rm_r(Sz::B64, Rm::Reg(r0), r0);
    let empty = a.jcc(Cc::E, false);
    a.alu_rm_i(Sz::B64, Alu::Cmp, Rm::Reg(r0), 1);
    let tomb = a.jcc(Cc::E, false);
    a.alu_r_rm(Sz::B32, Alu::Cmp, Gpr::Rax, Rm::Mem(Mem::at(r0, 8)));
    let hit = a.jcc(Cc::E, false);
    let next = a.pos();
    a.alu_rm_i(Sz::B32, Alu::Add, Rm::Reg(Gpr::Rcx), 1);
    a.alu_rm_i(
        Sz::B32,
        Alu::And,
        Rm::Reg(Gpr::Rcx),
        ((1u64 << map.bits) - 1) as i32,
    );
    let back = a.jmp(false);
    let end = a.pos();
    let code = a.code_mut();
    let ok = patch_rel(code, empty, 1, end)
        && patch_rel(code, hit, 1, end)
        && patch_rel(code, tomb, 1, next)
        && patch_rel(code, back, 1, top);
    debug_assert!(ok, "the inline probe fits rel8 jumps");
    true
}

/// Emits the test of [`header_lookup`]: `rax = header.base` of the map
/// in `r1` (flags: zero when the map is no inlinable array; see
/// [`bpfkit_runtime::Imm64Resolver::map_headers`]).
pub(crate) fn header_probe(a: &mut Asm) {
    a.mov_r_rm(Sz::B64, Gpr::Rax, Rm::Mem(Mem::at(REG_MAP[1], 0)));
    a.test_rm_r(Sz::B64, Rm::Reg(Gpr::Rax), Gpr::Rax);
}

/// Emits `r0 = key < header.max_entries ? rax + key * header.stride : 0`
/// with the key read from `[r2]` and `rax` the header's (non-zero) base
/// from [`header_probe`]. The header is the map's own (at `r1`), so the
/// code holds no map-specific constant (nothing to blind). The product
/// cannot overflow: both factors are below 2^32 and the map's storage
/// `max_entries * stride` exists.
pub(crate) fn header_lookup(a: &mut Asm) {
    let (r0, r1, r2) = (REG_MAP[0], REG_MAP[1], REG_MAP[2]);
    a.mov_r_rm(Sz::B32, Gpr::Rcx, Rm::Mem(Mem::at(r2, 0)));
    a.alu_r_rm(Sz::B32, Alu::Cmp, Gpr::Rcx, Rm::Mem(Mem::at(r1, 8)));
    // `xor` would clobber the flags: `mov` leaves them.
    a.mov_rm_i(Sz::B32, Rm::Reg(r0), 0);
    let skip = a.jcc(Cc::Ae, false);
    a.mov_r_rm(Sz::B32, Gpr::Rdx, Rm::Mem(Mem::at(r1, 12)));
    a.imul_r_rm(Sz::B64, Gpr::Rcx, Rm::Reg(Gpr::Rdx));
    a.lea(r0, Mem::indexed(Gpr::Rax, Gpr::Rcx, 1));
    let end = a.pos();
    let ok = patch_rel(a.code_mut(), skip, 1, end);
    debug_assert!(ok, "the inline lookup fits a rel8");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::asm::{assemble, Syntax};

    /// `map_operand` at the last `call`, with `lddw r1, map` written as
    /// `lddw %r1, 0` and patched to `MapIdx(0)`.
    fn operand(text: &str) -> Option<(Pc, Imm64)> {
        let mut insns = assemble(text, Syntax::Ubpf).unwrap();
        for insn in &mut insns {
            if let Insn::LoadImm64 { dst: Reg::R1, imm } = insn {
                if *imm == Imm64::Value(0) {
                    *imm = Imm64::MapIdx(0);
                }
            }
        }
        let p = Program::from_insns(insns).unwrap();
        map_operand(&p, &branch_targets(&p), last_call(&p))
    }

    #[test]
    fn the_compiler_pattern_is_found() {
        let got = operand("mov %r2, %r10\nadd %r2, -4\nlddw %r1, 0\ncall 1\nexit");
        assert_eq!(got, Some((Pc(2), Imm64::MapIdx(0))));
        // Writes to other registers, stores and a conditional jump between.
        let got = operand(
            "lddw %r1, 0\nmov %r2, %r10\nstw [%r10-4], 0\njeq %r3, 0, +2\nadd %r2, -4\ncall 1\nexit",
        );
        assert_eq!(got, Some((Pc(0), Imm64::MapIdx(0))));
    }

    /// The index of `p`'s last helper call.
    fn last_call(p: &Program) -> usize {
        p.insns()
            .iter()
            .rposition(|i| matches!(i, Insn::Call(_)))
            .unwrap()
    }

    /// `r3_constant` at the last `call`.
    fn flags(text: &str) -> Option<u64> {
        let p = Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap();
        r3_constant(&p, &branch_targets(&p), last_call(&p))
    }

    #[test]
    fn redirect_flags_must_be_a_certain_constant() {
        assert_eq!(flags("lddw %r1, 0\nmov %r3, 2\ncall 51\nexit"), Some(2));
        // Before the `lddw`, 32-bit, other writes between.
        assert_eq!(
            flags("mov32 %r3, -1\nlddw %r1, 0\nmov %r2, 1\ncall 51\nexit"),
            Some(0xffff_ffff)
        );
        assert_eq!(flags("mov %r3, -1\ncall 51\nexit"), Some(u64::MAX));
        // The last write is not a constant move.
        assert_eq!(flags("mov %r3, 2\nadd %r3, 1\ncall 51\nexit"), None);
        assert_eq!(flags("mov %r3, 2\nmov %r3, %r4\ncall 51\nexit"), None);
        assert_eq!(
            flags("mov %r3, 2\nldxdw %r3, [%r10-8]\ncall 51\nexit"),
            None
        );
        // Entered between the move and the call (another path's r3).
        assert_eq!(flags("mov %r3, 0\nja +1\nmov %r3, 2\ncall 51\nexit"), None);
        assert_eq!(flags("jeq %r1, 0, +1\nmov %r3, 2\ncall 51\nexit"), None);
        // Never written in the straight-line run.
        assert_eq!(flags("mov %r2, 1\ncall 51\nexit"), None);
    }

    /// `merged_map_operand` at the last `call` (`lddw %r1, 0` is map 0,
    /// `lddw %r1, 1` map 1).
    fn merged(text: &str) -> Option<Imm64> {
        let mut insns = assemble(text, Syntax::Ubpf).unwrap();
        for insn in &mut insns {
            if let Insn::LoadImm64 { dst: Reg::R1, imm } = insn {
                if let Imm64::Value(v) = *imm {
                    *imm = Imm64::MapIdx(v as i32);
                }
            }
        }
        let p = Program::from_insns(insns).unwrap();
        merged_map_operand(&p, &branch_targets(&p), last_call(&p)).map(|(_, imm)| imm)
    }

    #[test]
    fn merged_calls_need_the_same_map_on_every_way_in() {
        // A jump and the fall-through, both after `lddw` of map 0.
        let both = "mov %r0, 0\njeq %r2, 0, +4\nlddw %r1, 0\nmov %r3, 2\nja +3\n\
                    lddw %r1, 0\nmov %r3, 0\ncall 51\nexit";
        assert_eq!(merged(both), Some(Imm64::MapIdx(0)));
        // With an instruction between the top and the call.
        let between = "mov %r0, 0\njeq %r2, 0, +4\nlddw %r1, 0\nmov %r3, 2\nja +3\n\
                       lddw %r1, 0\nmov %r3, 0\nmov %r4, 1\ncall 51\nexit";
        assert_eq!(merged(between), Some(Imm64::MapIdx(0)));
        // Another map on one way in.
        let other = "mov %r0, 0\njeq %r2, 0, +4\nlddw %r1, 1\nmov %r3, 2\nja +3\n\
                     lddw %r1, 0\nmov %r3, 0\ncall 51\nexit";
        assert_eq!(merged(other), None);
        // The jump's run does not load a map (r1 is the context there).
        let none = "mov %r0, 0\njeq %r2, 0, +3\n\
                    lddw %r1, 0\nmov %r3, 0\ncall 51\nexit";
        assert_eq!(merged(none), None);
        // r1 written between the top and the call.
        let written = "mov %r0, 0\njeq %r2, 0, +4\nlddw %r1, 0\nmov %r3, 2\nja +3\n\
                       lddw %r1, 0\nmov %r1, %r6\ncall 51\nexit";
        assert_eq!(merged(written), None);
        // The top is a function's entry (a local call targets it).
        let function = "call 3\nmov %r0, 0\nexit\nexit\nlddw %r1, 0\ncall 51\nexit";
        assert_eq!(merged(function), None);
    }

    #[test]
    fn an_uncertain_r1_is_refused() {
        // r1 written after the lddw.
        assert_eq!(operand("lddw %r1, 0\nmov %r1, %r6\ncall 1\nexit"), None);
        assert_eq!(
            operand("lddw %r1, 0\nldxdw %r1, [%r10-8]\ncall 1\nexit"),
            None
        );
        assert_eq!(
            operand("lddw %r1, 0\nlock fetch add [%r10-8], %r1\ncall 1\nexit"),
            None
        );
        // A non-fetching atomic reads r1 only.
        assert!(operand("lddw %r1, 0\nlock add [%r10-8], %r1\ncall 1\nexit").is_some());
        // A jump lands between the lddw and the call, or on the call.
        assert_eq!(
            operand("jeq %r3, 0, +2\nlddw %r1, 0\ncall 1\nexit"),
            None,
            "jump onto the call"
        );
        assert_eq!(
            operand("jeq %r3, 0, +3\nlddw %r1, 0\nmov %r2, %r10\nadd %r2, -4\ncall 1\nexit"),
            None
        );
        // A call between (helpers clobber r1 in the kernel).
        assert_eq!(operand("lddw %r1, 0\ncall 5\ncall 1\nexit"), None);
        // A `callx` anywhere may land anywhere.
        let mut insns = assemble("lddw %r1, 0\ncall 1\nexit", Syntax::Ubpf).unwrap();
        insns[0] = Insn::LoadImm64 {
            dst: Reg::R1,
            imm: Imm64::MapIdx(0),
        };
        let p = Program::from_insns(insns.clone()).unwrap();
        assert!(map_operand(&p, &branch_targets(&p), 1).is_some());
        insns.insert(2, Insn::Callx(Reg::R5));
        let p = Program::from_insns(insns).unwrap();
        assert_eq!(map_operand(&p, &branch_targets(&p), 1), None);
        // No lddw at all, or a plain value.
        assert_eq!(operand("mov %r1, %r6\ncall 1\nexit"), None);
        assert_eq!(operand("lddw %r1, 7\ncall 1\nexit"), None);
        // An lddw of a map into another register, moved to r1.
        assert_eq!(operand("lddw %r6, 0\nmov %r1, %r6\ncall 1\nexit"), None);
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let mut a = Asm::new();
        for map in [
            ArrayMap::plain(0x1000, 0, 1),
            ArrayMap::plain(0x1000, 1 << 31, 1),
            ArrayMap::plain(0x1000, 8, 0),
            // Per-CPU: no CPUs, a CPU stride too large for the code, CPUs'
            // values that overflow the key's stride.
            ArrayMap {
                cpu_stride: 8,
                cpus: 0,
                ..ArrayMap::plain(0x1000, 8, 1)
            },
            ArrayMap {
                cpu_stride: 1 << 31,
                cpus: 1,
                ..ArrayMap::plain(0x1000, i32::MAX as u32, 1)
            },
            ArrayMap {
                cpu_stride: 8,
                cpus: 3,
                ..ArrayMap::plain(0x1000, 16, 1)
            },
        ] {
            assert!(!array_lookup(&mut a, &map, None, None));
        }
        assert_eq!(a.pos(), 0, "nothing emitted");
    }

    /// Unblinded, every form fits the 64 bytes `lower::near_bytes` allows
    /// an unchecked call (the largest: strides that are no powers of two,
    /// a base above 4 GiB).
    #[test]
    fn inline_lookups_fit_the_near_bound() {
        for cpu_stride in [0, 8, 24, 0x7fff_fff8] {
            let map = ArrayMap {
                cpu_stride,
                cpus: 1,
                ..ArrayMap::plain(0x7fff_1234_5678, 0x7fff_fff8, 0x7fff_ffff)
            };
            let mut a = Asm::new();
            assert!(array_lookup(&mut a, &map, None, None));
            assert!(a.pos() <= 64, "cpu_stride {cpu_stride}: {} bytes", a.pos());
        }
        let mut a = Asm::new();
        cpu_id(&mut a);
        assert!(a.pos() <= 64);
        let mut a = Asm::new();
        let map = SlotMap {
            slots: 0x7fff_1234_5678,
            max_entries: 0x7fff_ffff,
        };
        assert!(slot_lookup(&mut a, &map, None));
        assert!(a.pos() <= 64, "slot lookup: {} bytes", a.pos());
        // The header path with its two jumps still long (6 + 5 bytes) and
        // the helper call (two `mov r32, imm32` and a `call rel32`).
        let mut a = Asm::new();
        header_probe(&mut a);
        header_lookup(&mut a);
        assert!(
            a.pos() + 6 + 5 + 15 <= 64,
            "header lookup: {} bytes",
            a.pos()
        );
        // The devmap_hash probe, with the largest table and a table address
        // above 4 GiB.
        let mut a = Asm::new();
        let map = DevhashMap {
            table: 0x7fff_1234_5678,
            mult: 0x9e37_79b9,
            bits: 31,
        };
        assert!(devhash_lookup(&mut a, &map));
        assert!(a.pos() <= 64, "devmap_hash probe: {} bytes", a.pos());
        let mut a = Asm::new();
        for bits in [0, 32] {
            assert!(!devhash_lookup(&mut a, &DevhashMap { bits, ..map }));
        }
        assert_eq!(a.pos(), 0);
        let mut a = Asm::new();
        assert!(!slot_lookup(
            &mut a,
            &SlotMap {
                slots: 0x1000,
                max_entries: 0
            },
            None
        ));
        assert_eq!(a.pos(), 0);
    }
}
