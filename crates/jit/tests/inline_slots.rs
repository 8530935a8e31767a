//! Inline slot-map lookups (unchecked mode): `bpf_map_lookup_elem` on a
//! map whose slot words the resolver describes (`Imm64Resolver::slot_map`,
//! the facade's devmaps) loads `slots[key]` itself: the helper's answer in
//! range, at the boundary (the word after the last slot is never read) and
//! for huge keys, with and without constant blinding, read at run time (a
//! slot changed after compiling is seen by the next run); the helper is
//! then never called; checked mode and resolvers without slots keep
//! calling it.

// Shared with the array tests; this file does not use all of it.
#[allow(dead_code)]
mod common;

use bpfkit_abi::{MapDef, MapType};
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Imm64Resolver, Memory, RegionKind, SlotMap};
use common::inline::{
    assert_blinding_hides, boundary_keys, inlined, kprobe_ctx, run_on, verify, ENGINES, LOOKUP,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The address `lddw` gives for map 0 (never dereferenced).
const MAP_ADDR: u64 = 0x7000_0000_1000;

/// What the word after the last slot holds: an inline lookup that read it
/// would return it.
const PAST_THE_END: u64 = 0xbad0_bad0_bad0;

/// `max_entries` slot words and one more (the sentinel).
fn slots(max_entries: u32) -> Arc<Vec<AtomicU64>> {
    Arc::new(
        (0..=max_entries as u64)
            .map(|i| {
                AtomicU64::new(if i == max_entries as u64 {
                    PAST_THE_END
                } else if i % 3 == 2 {
                    0 // an empty slot
                } else {
                    0x6000_0000_0000 + 8 * i
                })
            })
            .collect(),
    )
}

struct Resolver {
    map: SlotMap,
    inline: bool,
}

impl Imm64Resolver for Resolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        matches!(imm, Imm64::MapIdx(0)).then_some(MAP_ADDR)
    }

    fn slot_map(&self, _pc: Pc, imm: &Imm64) -> Option<SlotMap> {
        (self.inline && matches!(imm, Imm64::MapIdx(0))).then_some(self.map)
    }
}

/// `bpf_map_lookup_elem` (id 1) on the slot words, counting its calls.
fn helpers(words: &Arc<Vec<AtomicU64>>, max_entries: u32, calls: &Arc<AtomicUsize>) -> Helpers {
    let (words, calls) = (words.clone(), calls.clone());
    let mut h = Helpers::new();
    h.register(1, move |env, a| {
        calls.fetch_add(1, Ordering::Relaxed);
        if a[0] != MAP_ADDR {
            return Ok(0);
        }
        let key = u32::from_le_bytes(env.guest().load::<4>(a[1])?);
        Ok(if key < max_entries {
            words[key as usize].load(Ordering::Relaxed)
        } else {
            0
        })
    });
    h
}

fn prog(text: &str) -> Program {
    let mut insns = assemble(text, Syntax::Ubpf).unwrap();
    for insn in &mut insns {
        if let Insn::LoadImm64 {
            dst: Reg::R1,
            imm: imm @ Imm64::Value(0),
        } = insn
        {
            *imm = Imm64::MapIdx(0);
        }
    }
    Program::from_insns(insns).unwrap()
}

fn def(max_entries: u32) -> MapDef {
    MapDef::new(MapType::Devmap, 4, 4, max_entries)
}

#[test]
fn inline_and_helper_slot_lookups_agree() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(LOOKUP);
    for max_entries in [1u32, 4, 1000] {
        let words = slots(max_entries);
        let map = SlotMap {
            slots: words.as_ptr() as u64,
            max_entries,
        };
        for key in boundary_keys(max_entries) {
            let want = if key < max_entries {
                words[key as usize].load(Ordering::Relaxed)
            } else {
                0
            };
            for engine in ENGINES {
                let calls = Arc::new(AtomicUsize::new(0));
                let h = helpers(&words, max_entries, &calls);
                let resolver = Resolver {
                    map,
                    inline: inlined(engine),
                };
                // The upper half of the context word is not part of the key.
                let mut regs = kprobe_ctx(0xdead_beef_0000_0000 | key as u64, 0);
                let mut mem = Memory::new();
                let ctx = mem.add(RegionKind::Context, &mut regs);
                let got = run_on(
                    engine,
                    &p,
                    &[def(max_entries)],
                    &resolver,
                    &h,
                    &mut mem,
                    ctx,
                    None,
                );
                assert_eq!(
                    got,
                    Ok(want),
                    "max_entries {max_entries}, key {key:#x}, {engine:?}"
                );
                assert_eq!(calls.load(Ordering::Relaxed), !inlined(engine) as usize);
            }
        }
    }
}

/// The slot is read when the code runs, not when it is compiled.
#[test]
fn a_slot_changed_after_compiling_is_seen() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(LOOKUP);
    let words = slots(4);
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(&words, 4, &calls);
    let resolver = Resolver {
        map: SlotMap {
            slots: words.as_ptr() as u64,
            max_entries: 4,
        },
        inline: true,
    };
    let mut j = Jit::builder()
        .resolver(&resolver)
        .build_verified(&verify(&p, &[def(4)]), &h)
        .unwrap();
    let mut run = || {
        let mut regs = kprobe_ctx(1, 0);
        let mut mem = Memory::new();
        let ctx = mem.add(RegionKind::Context, &mut regs);
        j.run(&mut mem, &[ctx]).unwrap()
    };
    assert_eq!(run(), 0x6000_0000_0008);
    words[1].store(0x6000_0000_1234, Ordering::Release);
    assert_eq!(run(), 0x6000_0000_1234);
    words[1].store(0, Ordering::Release);
    assert_eq!(run(), 0);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[test]
fn blinded_slot_lookups_hide_the_slots_address() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(LOOKUP);
    let words = slots(300);
    let calls = Arc::new(AtomicUsize::new(0));
    let h = helpers(&words, 300, &calls);
    let resolver = Resolver {
        map: SlotMap {
            slots: words.as_ptr() as u64,
            max_entries: 300,
        },
        inline: true,
    };
    let secrets = [
        (words.as_ptr() as u64).to_le_bytes().to_vec(),
        300u32.to_le_bytes().to_vec(),
    ];
    assert_blinding_hides(&verify(&p, &[def(300)]), &resolver, &h, &secrets);
}
