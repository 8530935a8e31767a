//! Lookups whose map is not known when compiling (unchecked mode, a
//! resolver whose map pointers point at headers:
//! `Imm64Resolver::map_headers`): the code reads the header at `r1` and
//! computes the lookup of an array (base, `max_entries`, stride) itself,
//! in range, at the boundary and for huge keys, or calls the helper when
//! the header's base is 0; the helper's answer either way, for either map
//! of a branch; resolvers without headers and checked mode keep the call.

// Shared with the array tests; this file does not use all of it.
#[allow(dead_code)]
mod common;

use bpfkit_abi::{MapDef, MapType};
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_runtime::{Helpers, Imm64Resolver, Memory, RegionKind};
use common::inline::{boundary_keys, bytes, inlined, kprobe_ctx, run_on, Engine, ENGINES};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A map header as `bpfkit_maps::MapHeader` lays it out.
#[repr(C)]
struct Header {
    base: u64,
    max_entries: u32,
    stride: u32,
}

/// Two maps: 0 an array (header with its storage), 1 another map (base
/// 0) whose lookups the helper answers with `OTHER + key`.
struct World {
    headers: Box<[Header; 2]>,
    storage: Vec<u64>,
    max_entries: u32,
    stride: u32,
}

const OTHER: u64 = 0x5000_0000_0000;

impl World {
    fn new(max_entries: u32, value_size: u32) -> World {
        let stride = value_size.div_ceil(8) * 8;
        let storage = vec![0u64; (stride / 8 * max_entries) as usize];
        let mut w = World {
            headers: Box::new([
                Header {
                    base: 0,
                    max_entries,
                    stride,
                },
                Header {
                    base: 0,
                    max_entries: 0,
                    stride: 0,
                },
            ]),
            storage,
            max_entries,
            stride,
        };
        w.headers[0].base = w.storage.as_ptr() as u64;
        w
    }

    fn addr(&self, i: usize) -> u64 {
        &self.headers[i] as *const Header as u64
    }

    fn expect(&self, map: usize, key: u32) -> u64 {
        match map {
            0 if key < self.max_entries => {
                self.storage.as_ptr() as u64 + u64::from(key) * u64::from(self.stride)
            }
            0 => 0,
            _ => OTHER + u64::from(key),
        }
    }

    fn defs(&self) -> Vec<MapDef> {
        vec![
            MapDef::new(MapType::Array, 4, self.stride, self.max_entries),
            MapDef::new(MapType::Hash, 4, 8, 16),
        ]
    }
}

struct Resolver {
    addrs: [u64; 2],
    headers: bool,
}

impl Imm64Resolver for Resolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        match *imm {
            Imm64::MapIdx(i) => self.addrs.get(i as usize).copied(),
            _ => None,
        }
    }

    fn map_headers(&self) -> bool {
        self.headers
    }
}

fn helpers(w: &World, calls: &Arc<AtomicUsize>) -> Helpers {
    let (addrs, calls) = ([w.addr(0), w.addr(1)], calls.clone());
    let (base, max, stride) = (w.headers[0].base, w.max_entries, w.stride);
    let mut h = Helpers::new();
    h.register(1, move |env, a| {
        calls.fetch_add(1, Ordering::Relaxed);
        let key = u32::from_le_bytes(env.guest().load::<4>(a[1])?);
        Ok(if a[0] == addrs[0] {
            if key < max {
                base + u64::from(key) * u64::from(stride)
            } else {
                0
            }
        } else if a[0] == addrs[1] {
            OTHER + u64::from(key)
        } else {
            0
        })
    });
    h
}

/// `lddw %r1, N` / `lddw %r6, N` with N < 2 become `lddw` of map N.
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

/// Key from the context's first word; map 0, or map 1 when the second
/// word is not 0, chosen by a branch that lands on the call (so `r1` is
/// not one certain `lddw`).
const EITHER: &str = "ldxw %r3, [%r1+0]\nldxdw %r4, [%r1+8]\nstxw [%r10-4], %r3\n\
                      mov %r2, %r10\nadd %r2, -4\nlddw %r1, 0\njeq %r4, 0, +2\nlddw %r1, 1\n\
                      call 1\nexit";

fn run(
    p: &Program,
    w: &mut World,
    engine: Engine,
    key: u64,
    arg: u64,
    headers: bool,
) -> (u64, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(w, &calls);
    let resolver = Resolver {
        addrs: [w.addr(0), w.addr(1)],
        // `UncheckedHelper`: unchecked code that may not inline.
        headers: headers && engine != Engine::UncheckedHelper,
    };
    let defs = w.defs();
    let mut regs = kprobe_ctx(key, arg);
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    mem.add(RegionKind::MapValue, bytes(&mut w.storage));
    let r = run_on(engine, p, &defs, &resolver, &h, &mut mem, ctx, None).expect("no trap");
    (r, calls.load(Ordering::Relaxed))
}

#[test]
fn header_lookups_agree_with_the_helper() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(EITHER);
    for (max_entries, value_size) in [(1u32, 4u32), (5, 12), (300, 8), (7, 100)] {
        let mut w = World::new(max_entries, value_size);
        for key in boundary_keys(max_entries) {
            for map in [0usize, 1] {
                let want = w.expect(map, key);
                for engine in ENGINES {
                    // The upper half of the context word is not part of the key.
                    let word = 0xdead_beef_0000_0000 | u64::from(key);
                    let (got, calls) = run(&p, &mut w, engine, word, map as u64, true);
                    let what = format!("max {max_entries}, key {key:#x}, map {map}, {engine:?}");
                    assert_eq!(got, want, "{what}");
                    // The array's lookup is computed, the other map's
                    // header sends it to the helper.
                    let helper = !inlined(engine) || map == 1;
                    assert_eq!(calls, helper as usize, "{what}");
                }
            }
        }
    }
}

#[test]
fn writes_through_header_pointers_reach_the_storage_and_no_headers_keep_the_call() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // value[key] (u32 at offset 4) += 5, through the pointer of a lookup
    // whose map a branch chose; 0 when the lookup failed.
    let p = prog(
        "ldxw %r3, [%r1+0]\nldxdw %r4, [%r1+8]\nstxw [%r10-4], %r3\nmov %r2, %r10\n\
         add %r2, -4\nlddw %r1, 0\njeq %r4, 0, +2\nlddw %r1, 1\ncall 1\njeq %r0, 0, +4\n\
         ldxw %r3, [%r0+4]\nadd %r3, 5\nstxw [%r0+4], %r3\nmov %r0, 1\nexit",
    );
    for engine in [Engine::Interp, Engine::Unchecked, Engine::UncheckedBlinded] {
        let mut w = World::new(4, 12);
        for _ in 0..3 {
            assert_eq!(
                run(&p, &mut w, engine, 2, 0, true),
                (1, !inlined(engine) as usize)
            );
        }
        assert_eq!(
            run(&p, &mut w, engine, 4, 0, true).0,
            0,
            "{engine:?}: past the end"
        );
        // Value 2 (stride 16): word 4, bytes 4..8.
        assert_eq!(w.storage[4], 15 << 32, "{engine:?}");
        assert_eq!(w.storage.iter().filter(|&&v| v != 0).count(), 1);
    }
    // Without headers the unchecked code calls the helper.
    let mut w = World::new(4, 12);
    assert_eq!(run(&p, &mut w, Engine::Unchecked, 2, 0, false), (1, 1));
    assert_eq!(w.storage[4], 5 << 32);
}
