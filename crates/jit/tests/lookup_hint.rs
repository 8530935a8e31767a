//! The table-index hint of unchecked lookups left to the helper
//! (`Imm64Resolver::table_index`): for a `bpf_map_lookup_elem` whose
//! `lddw r1` is certain, unchecked code hands the helper the resolver's
//! index in `r3` (whatever the program left there); a map chosen by a
//! branch, checked mode, constant blinding and resolvers without an index
//! leave the program's `r3`. The helper here records the `r3` it got.

#[allow(dead_code)] // part of it is for the inline-lookup tests
mod common;

use bpfkit_abi::{MapDef, MapType};
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_runtime::{Helpers, Imm64Resolver, Memory, RegionKind};
use common::inline::{kprobe_ctx, run_on, Engine, ENGINES};
use std::sync::{Arc, Mutex};

/// Addresses `lddw` gives for map 0 and 1 (never dereferenced).
const MAP_ADDR: [u64; 2] = [0x7000_0000_1000, 0x7000_0000_2000];

/// The program's own `r3` at the call (not a map index).
const PROGRAM_R3: u64 = 99;

struct Resolver {
    index: bool,
}

impl Imm64Resolver for Resolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        match *imm {
            Imm64::MapIdx(i) => MAP_ADDR.get(i as usize).copied(),
            _ => None,
        }
    }

    /// Map `i` is entry `i + 5` of a made-up table.
    fn table_index(&self, _pc: Pc, imm: &Imm64) -> Option<u32> {
        match *imm {
            Imm64::MapIdx(i) if self.index => Some(i as u32 + 5),
            _ => None,
        }
    }
}

/// Assembles `text`, turning `lddw %rN, M` with M < 2 into `lddw` of map M.
fn prog(text: &str) -> Program {
    let mut insns = assemble(text, Syntax::Ubpf).unwrap();
    for insn in &mut insns {
        if let Insn::LoadImm64 { dst, imm } = insn {
            if let Imm64::Value(v @ 0..=1) = *imm {
                if matches!(*dst, Reg::R1 | Reg::R6) {
                    *imm = Imm64::MapIdx(v as _);
                }
            }
        }
    }
    Program::from_insns(insns).unwrap()
}

/// The argument `helper` got in register `reg` (1-5) at each call of `p`,
/// in order, run with the context's key `key` and a resolver that gives
/// table indexes when `index`.
fn seen_by(
    p: &Program,
    engine: Engine,
    helper: u32,
    reg: usize,
    index: bool,
    key: u64,
) -> Vec<u64> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut h = Helpers::new();
    let g = got.clone();
    h.register(helper, move |_env, a| {
        g.lock().unwrap().push(a[reg - 1]);
        Ok(0)
    });
    let defs = vec![
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
    ];
    let mut regs = kprobe_ctx(key, 0);
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    let r = run_on(
        engine,
        p,
        &defs,
        &Resolver { index },
        &h,
        &mut mem,
        ctx,
        None,
    );
    assert_eq!(r, Ok(0), "{engine:?}");
    let v = got.lock().unwrap().clone();
    v
}

/// The `r3` each call of `p` handed the lookup helper, in order.
fn seen(p: &Program, engine: Engine, index: bool, key: u64) -> Vec<u64> {
    seen_by(p, engine, 1, 3, index, key)
}

#[test]
fn certain_lookups_get_the_table_index_in_r3() {
    // Map 1 for sure, then map 0 or 1 by a branch on the key.
    let p = prog(
        "stw [%r10-4], 0\nmov %r6, %r1\n\
         mov %r2, %r10\nadd %r2, -4\nmov %r3, 99\nlddw %r1, 1\ncall 1\n\
         ldxdw %r7, [%r6+0]\nlddw %r1, 0\njeq %r7, 0, +2\nlddw %r1, 1\n\
         mov %r2, %r10\nadd %r2, -4\nmov %r3, 99\ncall 1\nmov %r0, 0\nexit",
    );
    for engine in ENGINES {
        for index in [true, false] {
            for key in [0, 1] {
                let got = seen(&p, engine, index, key);
                let hinted = index && matches!(engine, Engine::Unchecked | Engine::UncheckedHelper);
                let first = if hinted { 6 } else { PROGRAM_R3 };
                assert_eq!(
                    got,
                    [first, PROGRAM_R3],
                    "{engine:?}, index {index}, key {key}"
                );
            }
        }
    }
}

/// `bpf_map_update_elem` gets the index in `r5` and `bpf_map_delete_elem`
/// in `r3` (neither an argument of theirs), only in unchecked code; the
/// arguments they do take are the program's.
#[test]
fn updates_and_deletes_get_the_table_index_too() {
    let update = prog(
        "stw [%r10-4], 0\nstdw [%r10-16], 0\n\
         mov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\n\
         mov %r4, 0\nmov %r5, 77\nlddw %r1, 1\ncall 2\nmov %r0, 0\nexit",
    );
    let delete = prog(
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nmov %r3, 99\n\
         lddw %r1, 0\ncall 3\nmov %r0, 0\nexit",
    );
    for engine in ENGINES {
        let hinted = matches!(engine, Engine::Unchecked | Engine::UncheckedHelper);
        let want = |index: u64, program: u64| if hinted { index } else { program };
        assert_eq!(
            seen_by(&update, engine, 2, 5, true, 0),
            [want(6, 77)],
            "{engine:?}"
        );
        assert_eq!(seen_by(&update, engine, 2, 4, true, 0), [0], "{engine:?}");
        assert_eq!(
            seen_by(&delete, engine, 3, 3, true, 0),
            [want(5, 99)],
            "{engine:?}"
        );
        assert_eq!(
            seen_by(&delete, engine, 3, 1, true, 0),
            [MAP_ADDR[0]],
            "{engine:?}"
        );
    }
}
