//! Inline array lookups (unchecked mode): `bpf_map_lookup_elem` on a plain
//! array map that the resolver describes gives the same pointer as the
//! helper, in range, at the boundary and for huge keys, for value sizes
//! that are not multiples of 8, with and without constant blinding; the
//! helper is then never called; a call whose `r1` may hold either of two
//! maps, checked mode, and resolvers that describe no array keep calling
//! it.

mod common;

use bpfkit_abi::{MapDef, MapType};
use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{ArrayMap, Helpers, Imm64Resolver, Memory, RegionKind, Trap};
use common::inline::{
    assert_blinding_hides, boundary_keys, bytes, inlined, kprobe_ctx, run_on, verify, Engine,
    ENGINES, LOOKUP,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Addresses `lddw` gives for map 0 and 1 (never dereferenced).
const MAP_ADDR: [u64; 2] = [0x7000_0000_1000, 0x7000_0000_2000];

/// One array map: its definition and its storage (stride = value size
/// rounded up to 8, as `bpfkit-maps` lays arrays out).
struct Array {
    def: MapDef,
    storage: Vec<u64>,
}

impl Array {
    fn new(value_size: u32, max_entries: u32) -> Array {
        let stride = value_size.div_ceil(8) * 8;
        let def = MapDef::new(MapType::Array, 4, value_size, max_entries);
        let storage = vec![0u64; (stride as usize / 8) * max_entries as usize];
        Array { def, storage }
    }

    fn layout(&self) -> ArrayMap {
        ArrayMap::plain(
            self.storage.as_ptr() as u64,
            self.def.value_size.div_ceil(8) * 8,
            self.def.max_entries,
        )
    }

    /// What the helper returns for `key`.
    fn expect(&self, key: u32) -> u64 {
        let m = self.layout();
        if key < m.max_entries {
            m.base + key as u64 * m.stride as u64
        } else {
            0
        }
    }
}

/// Resolves `MapIdx(i)` to `MAP_ADDR[i]`, and describes the arrays when
/// `inline` is set.
struct Resolver {
    maps: Vec<ArrayMap>,
    inline: bool,
}

impl Imm64Resolver for Resolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        match *imm {
            Imm64::MapIdx(i) => MAP_ADDR.get(i as usize).copied(),
            _ => None,
        }
    }

    fn array_map(&self, _pc: Pc, imm: &Imm64) -> Option<ArrayMap> {
        match *imm {
            Imm64::MapIdx(i) if self.inline => self.maps.get(i as usize).copied(),
            _ => None,
        }
    }
}

/// `bpf_map_lookup_elem` (id 1) over `maps`, counting its calls.
fn helpers(maps: &[ArrayMap], calls: &Arc<AtomicUsize>) -> Helpers {
    let maps = maps.to_vec();
    let calls = calls.clone();
    let mut h = Helpers::new();
    h.register(1, move |env, a| {
        calls.fetch_add(1, Ordering::Relaxed);
        let Some(i) = MAP_ADDR.iter().position(|&m| m == a[0]) else {
            return Ok(0);
        };
        let key = u32::from_le_bytes(env.guest().load::<4>(a[1])?);
        let m = maps[i];
        Ok(if key < m.max_entries {
            m.base + key as u64 * m.stride as u64
        } else {
            0
        })
    });
    h
}

/// Assembles `text`, turning `lddw %r1, N` / `lddw %r6, N` with N < 2 into
/// `lddw` of map N.
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

/// Runs `p` (a kprobe: `r1` = a `pt_regs` whose first u64 is `key` and
/// second `arg`) over `arrays`; the result and the number of helper calls.
fn run(
    p: &Program,
    arrays: &mut [Array],
    engine: Engine,
    key: u64,
    arg: u64,
) -> (Result<u64, Trap>, usize) {
    let layouts: Vec<ArrayMap> = arrays.iter().map(Array::layout).collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(&layouts, &calls);
    let resolver = Resolver {
        maps: layouts,
        inline: engine != Engine::UncheckedHelper,
    };
    let defs: Vec<MapDef> = arrays.iter().map(|a| a.def.clone()).collect();
    let mut regs = kprobe_ctx(key, arg);
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    for a in arrays.iter_mut() {
        mem.add(RegionKind::MapValue, bytes(&mut a.storage));
    }
    let r = run_on(engine, p, &defs, &resolver, &h, &mut mem, ctx, None);
    (r, calls.load(Ordering::Relaxed))
}

#[test]
fn inline_and_helper_lookups_return_the_same_pointer() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(LOOKUP);
    for (value_size, max_entries) in [(4u32, 1u32), (8, 5), (12, 7), (24, 3), (1, 1000), (100, 9)] {
        let mut arrays = [Array::new(value_size, max_entries)];
        let keys = boundary_keys(max_entries);
        for key in keys {
            let want = arrays[0].expect(key);
            // The upper half of the context word is not part of the key.
            let word = 0xdead_beef_0000_0000 | key as u64;
            for engine in ENGINES {
                let (got, calls) = run(&p, &mut arrays, engine, word, 0);
                assert_eq!(
                    got,
                    Ok(want),
                    "value_size {value_size}, max_entries {max_entries}, key {key:#x}, {engine:?}"
                );
                assert_eq!(calls, !inlined(engine) as usize, "{engine:?}");
            }
        }
    }
}

#[test]
fn writes_through_the_inline_pointer_reach_the_storage() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // value[key] += arg (12-byte values: the u32 at offset 8), then look
    // the same key up again and return the u32 read back.
    let p = prog(
        "ldxw %r3, [%r1+0]\nldxdw %r6, [%r1+8]\nstxw [%r10-4], %r3\nmov %r2, %r10\n\
         add %r2, -4\nlddw %r1, 0\ncall 1\njeq %r0, 0, +10\nldxw %r3, [%r0+8]\nadd %r3, %r6\n\
         stxw [%r0+8], %r3\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, 0\ncall 1\njeq %r0, 0, +1\n\
         ldxw %r0, [%r0+8]\nexit",
    );
    for engine in ENGINES {
        let mut arrays = [Array::new(12, 4)];
        for round in 1..=3u64 {
            let (got, calls) = run(&p, &mut arrays, engine, 2, 5);
            assert_eq!(got, Ok(5 * round), "{engine:?}");
            assert_eq!(calls, if inlined(engine) { 0 } else { 2 }, "{engine:?}");
        }
        // Slot 2 (stride 16) holds the u32 at byte 32 + 8; nothing else
        // was written.
        let b = bytes(&mut arrays[0].storage);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 15);
        assert_eq!(b.iter().map(|&b| b as u32).sum::<u32>(), 15, "{engine:?}");
        // Out of range: NULL, nothing written.
        let (got, _) = run(&p, &mut arrays, engine, 4, 5);
        assert_eq!(got, Ok(0), "{engine:?}");
    }
}

#[test]
fn a_call_that_may_see_either_map_keeps_the_helper() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // r1 = map 0, or map 1 when arg != 0: the jump lands on the call.
    let p = prog(
        "ldxdw %r4, [%r1+8]\nstw [%r10-4], 1\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, 0\n\
         jeq %r4, 0, +2\nlddw %r1, 1\ncall 1\nexit",
    );
    for arg in [0u64, 1] {
        for engine in ENGINES {
            let mut arrays = [Array::new(8, 4), Array::new(16, 2)];
            let want = arrays[arg as usize].expect(1);
            let (got, calls) = run(&p, &mut arrays, engine, 0, arg);
            assert_eq!(got, Ok(want), "arg {arg}, {engine:?}");
            assert_eq!(calls, 1, "not inlined: arg {arg}, {engine:?}");
        }
    }
    // The same choice through a register moved into r1 is not inlined
    // either; a second, certain lookup in the same program is. Each writes
    // a mark through its pointer: 0x11 at byte 0 of the first map's value
    // 1, 0x22 at byte 4 of map 1's value 1.
    let p = prog(
        "ldxdw %r4, [%r1+8]\nstw [%r10-4], 1\nlddw %r6, 0\njeq %r4, 0, +2\nlddw %r6, 1\n\
         mov %r1, %r6\nmov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, +1\nstw [%r0+0], 0x11\n\
         mov %r2, %r10\nadd %r2, -4\nlddw %r1, 1\ncall 1\njeq %r0, 0, +1\nstw [%r0+4], 0x22\n\
         mov %r0, 0\nexit",
    );
    for arg in [0u64, 1] {
        for engine in ENGINES {
            let mut arrays = [Array::new(8, 4), Array::new(16, 2)];
            let (got, calls) = run(&p, &mut arrays, engine, 0, arg);
            assert_eq!(got, Ok(0), "arg {arg}, {engine:?}");
            assert_eq!(
                calls,
                if inlined(engine) { 1 } else { 2 },
                "arg {arg}, {engine:?}"
            );
            // Value 1: word 1 of map 0 (stride 8), words 2-3 of map 1.
            let first = if arg == 0 { (0, 1) } else { (1, 2) };
            let mut want = [vec![0u64; 4], vec![0u64; 4]];
            want[first.0][first.1] |= 0x11;
            want[1][2] |= 0x22 << 32;
            assert_eq!(arrays[0].storage, want[0], "arg {arg}, {engine:?}");
            assert_eq!(arrays[1].storage, want[1], "arg {arg}, {engine:?}");
        }
    }
}

#[test]
fn blinded_inline_code_hides_the_map_layout() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // A layout with distinctive 4-byte constants: max_entries and a
    // stride that is not a power of two.
    let mut arrays = [Array::new(0x1d8, 0x1a3)];
    let layout = arrays[0].layout();
    let p = prog(LOOKUP);
    let v = verify(&p, &[arrays[0].def.clone()]);
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(&[layout], &calls);
    let resolver = Resolver {
        maps: vec![layout],
        inline: true,
    };
    let secrets = [
        layout.max_entries.to_le_bytes().to_vec(),
        layout.stride.to_le_bytes().to_vec(),
        layout.base.to_le_bytes()[..4].to_vec(),
    ];
    assert_blinding_hides(&v, &resolver, &h, &secrets);
    // And still computes the same pointer.
    for key in [0u32, 7, layout.max_entries - 1, layout.max_entries] {
        let want = arrays[0].expect(key);
        let (got, calls) = run(&p, &mut arrays, Engine::UncheckedBlinded, key as u64, 0);
        assert_eq!((got, calls), (Ok(want), 0), "key {key}");
    }
}

#[test]
fn an_inline_lookup_counts_as_one_instruction_against_a_budget() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Sums the u32 at the start of values 0-5 (4 entries: two misses) in
    // a loop; every budget ends at the same instruction (or result) as in
    // the interpreter, which calls the helper.
    let p = prog(
        "mov %r6, 0\nmov %r7, 0\nstxw [%r10-4], %r6\nmov %r2, %r10\nadd %r2, -4\n\
         lddw %r1, 0\ncall 1\njeq %r0, 0, +2\nldxw %r3, [%r0+0]\nadd %r7, %r3\nadd %r6, 1\n\
         jlt %r6, 6, -11\nmov %r0, %r7\nexit",
    );
    let mut arrays = [Array::new(8, 4)];
    for (k, w) in arrays[0].storage.iter_mut().enumerate() {
        *w = 10 * k as u64 + 1;
    }
    let layouts: Vec<ArrayMap> = arrays.iter().map(Array::layout).collect();
    let v = verify(&p, &[arrays[0].def.clone()]);
    let resolver = Resolver {
        maps: layouts.clone(),
        inline: true,
    };
    let mut traps = 0;
    for budget in 1..=80u64 {
        let mut results = Vec::new();
        for inline in [false, true] {
            let calls = Arc::new(AtomicUsize::new(0));
            let h = helpers(&layouts, &calls);
            let mut regs = [0u8; 168];
            let mut mem = Memory::new();
            let ctx = mem.add(RegionKind::Context, &mut regs);
            mem.add(RegionKind::MapValue, bytes(&mut arrays[0].storage));
            let r = if inline {
                Jit::builder()
                    .resolver(&resolver)
                    .budget(budget)
                    .build_verified(&v, &h)
                    .unwrap()
                    .run(&mut mem, &[ctx])
            } else {
                Interpreter::builder()
                    .resolver(&resolver)
                    .budget(budget)
                    .build(&p, &h)
                    .unwrap()
                    .run(&mut mem, &[ctx])
            };
            if inline {
                assert_eq!(calls.load(Ordering::Relaxed), 0, "budget {budget}");
            }
            results.push(r);
        }
        assert_eq!(results[0], results[1], "budget {budget}");
        traps += results[1].is_err() as u32;
    }
    assert!(traps > 0, "some budgets run out");
    assert_eq!(
        run(&p, &mut arrays, Engine::Unchecked, 0, 0),
        (Ok(1 + 11 + 21 + 31), 0)
    );
}

/// `setup`, then the lookup of the key at `r10 + off` in map 0.
fn lookup_after(setup: &str, off: i32) -> Program {
    prog(&format!(
        "{setup}\nmov %r2, %r10\nadd %r2, {off}\nlddw %r1, 0\ncall 1\nexit"
    ))
}

#[test]
fn constant_keys_are_folded_only_where_the_stack_certainly_holds_them() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // (key set-up, the key's offset from r10, the key the lookup must see
    // for arg 0 and arg 1). The unchecked JIT folds the first four (an
    // immediate, a register set by a `mov`, an 8-byte store, out of
    // range); each later one defeats a fold that ignored one of its rules:
    // an 8-byte store whose low half is not the key, a write through a
    // copy of r10, a one-byte store over part of the key, a register
    // changed after its `mov`, a jump into the run between the store and
    // the call.
    let cases: [(&str, i32, u32, u32); 9] = [
        ("stw [%r10-4], 2", -4, 2, 2),
        ("mov %r3, 3\nstxw [%r10-4], %r3", -4, 3, 3),
        ("mov32 %r3, 700\nstxdw [%r10-8], %r3", -8, 700, 700),
        ("stw [%r10-4], 1000", -4, 1000, 1000),
        ("mov32 %r3, 700\nstxdw [%r10-8], %r3", -4, 0, 0),
        ("stw [%r10-4], 1\nmov %r3, %r10\nstw [%r3-4], 2", -4, 2, 2),
        ("stw [%r10-4], 0x101\nstb [%r10-3], 2", -4, 0x201, 0x201),
        ("mov %r3, 1\nadd %r3, 4\nstxw [%r10-4], %r3", -4, 5, 5),
        (
            "ldxdw %r4, [%r1+8]\nstw [%r10-4], 1\njeq %r4, 0, +1\nstw [%r10-4], 2",
            -4,
            1,
            2,
        ),
    ];
    for (setup, off, key0, key1) in cases {
        let p = lookup_after(setup, off);
        for (arg, key) in [(0u64, key0), (1, key1)] {
            for engine in ENGINES {
                let mut arrays = [Array::new(8, 1000)];
                let want = arrays[0].expect(key);
                let (got, calls) = run(&p, &mut arrays, engine, 0, arg);
                assert_eq!(got, Ok(want), "{setup:?} at {off}, arg {arg}, {engine:?}");
                assert_eq!(calls, !inlined(engine) as usize, "{engine:?}");
            }
        }
    }
    // The fold is there: a constant key's lookup is shorter code than the
    // same lookup of a key the program computes (the same value).
    let len = |setup: &str| {
        let p = lookup_after(setup, -4);
        let arrays = [Array::new(8, 1000)];
        let v = verify(&p, &[arrays[0].def.clone()]);
        let resolver = Resolver {
            maps: vec![arrays[0].layout()],
            inline: true,
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let h = helpers(&[arrays[0].layout()], &calls);
        let jit = Jit::builder()
            .resolver(&resolver)
            .build_verified(&v, &h)
            .unwrap();
        jit.code().bytes().len()
    };
    let folded = len("mov %r3, 5\nstxw [%r10-4], %r3");
    let computed = len("mov %r3, 1\nadd %r3, 4\nstxw [%r10-4], %r3");
    assert!(
        folded + 8 < computed,
        "folded {folded} bytes, computed {computed}"
    );
}
