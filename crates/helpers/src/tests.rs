//! Helpers called directly, as an engine calls them: a `HelperEnv` over a
//! stack and regions, the run's `RunState` as per-run data.

use crate::ids::*;
use crate::{register, MapTable, Redirect, RunState, XdpBuff, MAX_TAIL_CALL_CNT};
use bpfkit_maps::{MapDef, MapOptions, MapRegistry, MapType, ProgId};
use bpfkit_runtime::{
    Guest, HelperAbort, HelperEnv, HelperId, HelperResult, Helpers, Memory, Pc, RegionKind,
};
use std::sync::Arc;

const EINVAL: u64 = (-22i64) as u64;
const ENOENT: u64 = (-2i64) as u64;

struct World {
    helpers: Helpers,
    table: Arc<MapTable>,
    registry: MapRegistry,
    addrs: Vec<u64>,
}

/// Calls helper `id` as generated code would: `stack` as the program's
/// stack, `state` as the run's, at pc 0.
fn call_helper(
    helpers: &Helpers,
    id: u32,
    stack: &mut [u8],
    mem: &mut Memory<'_>,
    state: &mut RunState,
    args: [u64; 5],
) -> HelperResult {
    let h = helpers.get(id).unwrap().clone();
    let mut guest = Guest::new(stack, mem);
    let mut env = HelperEnv::new(guest.reborrow(), Some(state), Pc(0), HelperId(id));
    h.call(&mut env, args)
}

fn world(defs: &[MapDef]) -> World {
    let registry = MapRegistry::new(MapOptions::new().possible_cpus(2));
    let mut table = MapTable::new(Some(registry.clone()));
    let addrs = defs
        .iter()
        .map(|d| table.insert(registry.create(d.clone()).unwrap().1))
        .collect();
    let mut helpers = Helpers::new();
    register(&mut helpers);
    World {
        helpers,
        table: Arc::new(table),
        registry,
        addrs,
    }
}

impl World {
    /// Runs `f` with a helper caller over `mem` and a fresh state.
    fn with<R>(
        &self,
        mem: Memory<'_>,
        f: impl FnOnce(&mut dyn FnMut(u32, [u64; 5]) -> HelperResult) -> R,
    ) -> (R, RunState) {
        let helpers = &self.helpers;
        RunState::scoped(self.table.clone(), 0, mem, |mem, state| {
            let mut stack = [0u8; 8];
            let mut call =
                |id: u32, args: [u64; 5]| call_helper(helpers, id, &mut stack, mem, state, args);
            f(&mut call)
        })
    }
}

#[test]
fn lookup_update_delete_and_values_in_place() {
    let w = world(&[MapDef::new(MapType::Hash, 4, 8, 4)]);
    let map = w.addrs[0];
    let mut key = 7u32.to_ne_bytes();
    let mut value = 5u64.to_ne_bytes();
    let mut mem = Memory::new();
    let k = mem.add(RegionKind::Other, &mut key);
    let v = mem.add(RegionKind::Other, &mut value);
    let ((), _) = w.with(mem, |call| {
        assert_eq!(call(MAP_LOOKUP_ELEM, [map, k, 0, 0, 0]).unwrap(), 0);
        assert_eq!(call(MAP_DELETE_ELEM, [map, k, 0, 0, 0]).unwrap(), ENOENT);
        assert_eq!(call(MAP_UPDATE_ELEM, [map, k, v, 0, 0]).unwrap(), 0);
        assert_eq!(
            call(MAP_UPDATE_ELEM, [map, k, v, 1, 0]).unwrap(),
            (-17i64) as u64
        );
        let p = call(MAP_LOOKUP_ELEM, [map, k, 0, 0, 0]).unwrap();
        assert_ne!(p, 0);
        // a bad map address is a trap, not a crash
        assert!(call(MAP_LOOKUP_ELEM, [0x1234, k, 0, 0, 0]).is_err());
    });
    assert_eq!(
        w.registry
            .get(bpfkit_maps::MapId(1))
            .unwrap()
            .lookup(&7u32.to_ne_bytes())
            .unwrap(),
        5u64.to_ne_bytes()
    );
}

/// The table index an engine passes in `r3` (`Imm64Resolver::table_index`)
/// is a hint: the right one, another map's, one past the table or any
/// value a program leaves in `r3` give the lookup in the map of `r1`.
#[test]
fn lookup_hints_are_checked_against_the_map() {
    let w = world(&[
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::LruHash, 4, 8, 4),
    ]);
    for (i, n) in [(1u32, 11u64), (2, 22), (3, 33)] {
        w.registry
            .get(bpfkit_maps::MapId(i))
            .unwrap()
            .update(&7u32.to_ne_bytes(), &n.to_ne_bytes(), 0)
            .unwrap();
    }
    let mut key = 7u32.to_ne_bytes();
    let mut mem = Memory::new();
    let k = mem.add(RegionKind::Other, &mut key);
    let g = bpfkit_maps::pin();
    let value_at = |m: usize| {
        let map = w.registry.get(bpfkit_maps::MapId(m as u32 + 1)).unwrap();
        let p = map.lookup_ptr(&7u32.to_ne_bytes(), 0, &g).unwrap().as_ptr();
        p as u64
    };
    let want: Vec<u64> = (0..3).map(value_at).collect();
    assert!(want[0] != want[1] && want[1] != want[2]);
    let ((), _) = w.with(mem, |call| {
        for (m, (&map, &want)) in w.addrs.iter().zip(&want).enumerate() {
            for hint in [0, 1, 2, 3, m as u64, u64::MAX, 1 << 32] {
                let p = call(MAP_LOOKUP_ELEM, [map, k, hint, 0, 0]).unwrap();
                assert_eq!(p, want, "map {m}, hint {hint}");
            }
        }
        // No map at all, whatever the hint.
        for hint in [0, 1, 2] {
            assert!(call(MAP_LOOKUP_ELEM, [0x1234, k, hint, 0, 0]).is_err());
        }
    });
}

/// The table index the JIT passes to `bpf_map_update_elem` (in `r5`) and
/// `bpf_map_delete_elem` (in `r3`) is a hint as for lookups: whatever it
/// is, the map of `r1` is the one written.
#[test]
fn update_and_delete_hints_are_checked_against_the_map() {
    let w = world(&[
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
    ]);
    let mut key = 7u32.to_ne_bytes();
    let mut value = 0u64.to_ne_bytes();
    let mut mem = Memory::new();
    let k = mem.add(RegionKind::Other, &mut key);
    let v = mem.add(RegionKind::Other, &mut value);
    let map = |m: usize| w.registry.get(bpfkit_maps::MapId(m as u32 + 1)).unwrap();
    let ((), _) = w.with(mem, |call| {
        for (m, &addr) in w.addrs.iter().enumerate() {
            for hint in [0, 1, 2, 3, m as u64, u64::MAX, 1 << 32] {
                assert_eq!(call(MAP_UPDATE_ELEM, [addr, k, v, 0, hint]), Ok(0));
                for other in 0..3 {
                    let has = map(other).lookup(&7u32.to_ne_bytes()).is_ok();
                    assert_eq!(has, other == m, "update of {m}, hint {hint}: map {other}");
                }
                assert_eq!(call(MAP_DELETE_ELEM, [addr, k, hint, 0, 0]), Ok(0));
                for other in 0..3 {
                    let has = map(other).lookup(&7u32.to_ne_bytes()).is_ok();
                    assert!(!has, "delete of {m}, hint {hint}: map {other}");
                }
            }
        }
        for hint in [0, 1, 2] {
            assert!(call(MAP_UPDATE_ELEM, [0x1234, k, v, 0, hint]).is_err());
            assert!(call(MAP_DELETE_ELEM, [0x1234, k, hint, 0, 0]).is_err());
        }
    });
}

/// `bpf_map_lookup_elem`'s per-packet path (`maps::lookup_fast`: keys on
/// the program's stack searched in place, 4- and 8-byte keys elsewhere
/// loaded, arrays, the answer in a register) and its general path give
/// the same answers: the element's own pointer (the one `Map::lookup_ptr`
/// gives), usable by a later helper (its region registered), misses as 0,
/// and a key that runs past the stack's end is a fault, not a read of
/// what lies after it.
#[test]
fn lookup_keys_on_the_stack_and_elsewhere_find_the_same_element() {
    use bpfkit_maps::map_flags;
    let w = world(&[
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Hash, 24, 8, 4),
        MapDef::new(MapType::LpmTrie, 8, 8, 4).with_flags(map_flags::NO_PREALLOC),
        MapDef::new(MapType::Array, 4, 8, 4),
        MapDef::new(MapType::PercpuHash, 8, 8, 4),
        MapDef::new(MapType::Hash, 12, 8, 4),
        // Scratch: a helper reads a found value into it.
        MapDef::new(MapType::Hash, 4, 8, 4),
    ]);
    let k24: Vec<u8> = (1..=24).collect();
    let lpm_key = |addr: [u8; 4], len: u32| {
        let mut k = len.to_ne_bytes().to_vec();
        k.extend_from_slice(&addr);
        k
    };
    let k12: Vec<u8> = (40..52).collect();
    // (map index, key present, a key absent, the value found)
    let cases: Vec<(usize, Vec<u8>, Vec<u8>, u64)> = vec![
        (
            0,
            7u32.to_ne_bytes().to_vec(),
            8u32.to_ne_bytes().to_vec(),
            11,
        ),
        (
            1,
            k24.clone(),
            {
                let mut k = k24.clone();
                k[23] ^= 1;
                k
            },
            22,
        ),
        (
            2,
            lpm_key([10, 1, 2, 3], 32),
            lpm_key([11, 1, 2, 3], 32),
            33,
        ),
        (
            3,
            1u32.to_ne_bytes().to_vec(),
            4u32.to_ne_bytes().to_vec(),
            44,
        ),
        (
            4,
            9u64.to_ne_bytes().to_vec(),
            10u64.to_ne_bytes().to_vec(),
            55,
        ),
        (5, k12.clone(), (60..72).collect(), 77),
    ];
    let map = |m: usize| w.registry.get(bpfkit_maps::MapId(m as u32 + 1)).unwrap();
    map(0)
        .update(&7u32.to_ne_bytes(), &11u64.to_ne_bytes(), 0)
        .unwrap();
    map(1).update(&k24, &22u64.to_ne_bytes(), 0).unwrap();
    map(2)
        .update(&lpm_key([10, 0, 0, 0], 8), &33u64.to_ne_bytes(), 0)
        .unwrap();
    map(3)
        .update(&1u32.to_ne_bytes(), &44u64.to_ne_bytes(), 0)
        .unwrap();
    map(4)
        .update(
            &9u64.to_ne_bytes(),
            &[55u8, 0, 0, 0, 0, 0, 0, 0, 66, 0, 0, 0, 0, 0, 0, 0],
            0,
        )
        .unwrap();
    map(5).update(&k12, &77u64.to_ne_bytes(), 0).unwrap();
    let g = bpfkit_maps::pin();
    let want: Vec<u64> = cases
        .iter()
        .map(|(m, k, _, _)| map(*m).lookup_ptr(k, 0, &g).unwrap().as_ptr() as u64)
        .collect();
    // The keys outside the stack, one region each (present, absent).
    let mut bufs: Vec<Vec<u8>> = cases
        .iter()
        .flat_map(|(_, k, miss, _)| [k.clone(), miss.clone()])
        .collect();
    let mut scratch_key = [0u8; 4];
    let mut mem = Memory::new();
    let mut addrs = Vec::new();
    for b in bufs.iter_mut() {
        addrs.push(mem.add(RegionKind::Other, b));
    }
    let scratch_key = mem.add(RegionKind::Other, &mut scratch_key);
    let helpers = &w.helpers;
    let ((), _) = RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        let mut stack = [0u8; 64];
        let base = stack.as_ptr() as u64;
        for (c, (m, key, miss, value)) in cases.iter().enumerate() {
            let at = |k: &[u8], stack: &mut [u8; 64]| {
                // At the stack's end, as the last thing a program pushed.
                let off = 64 - k.len();
                stack[off..].copy_from_slice(k);
                base + off as u64
            };
            for round in 0..2 {
                for (hint, what) in [(*m as u64, "hint"), (u64::MAX, "no hint")] {
                    let on_stack = at(key, &mut stack);
                    for (k, place) in [(on_stack, "stack"), (addrs[2 * c], "region")] {
                        let p = call_helper(
                            helpers,
                            MAP_LOOKUP_ELEM,
                            &mut stack,
                            mem,
                            state,
                            [w.addrs[*m], k, hint, 0, 0],
                        )
                        .unwrap();
                        let ctx = format!("map {m}, key on the {place}, {what}, round {round}");
                        assert_eq!(p, want[c], "{ctx}");
                        // The pointer is a region of the run: a helper
                        // reads the value through it.
                        let r = call_helper(
                            helpers,
                            MAP_UPDATE_ELEM,
                            &mut stack,
                            mem,
                            state,
                            [w.addrs[6], scratch_key, p, 0, 0],
                        );
                        assert_eq!(r, Ok(0), "{ctx}");
                        let copied = map(6).lookup(&[0; 4]).unwrap();
                        assert_eq!(copied, value.to_ne_bytes(), "{ctx}");
                    }
                    let on_stack = at(miss, &mut stack);
                    for k in [on_stack, addrs[2 * c + 1]] {
                        let p = call_helper(
                            helpers,
                            MAP_LOOKUP_ELEM,
                            &mut stack,
                            mem,
                            state,
                            [w.addrs[*m], k, hint, 0, 0],
                        );
                        // (For the array: an index past its end.)
                        assert_eq!(p, Ok(0), "map {m}, a miss");
                    }
                    // Past the stack's end by one byte: a fault.
                    let past = base + 65 - key.len() as u64;
                    let r = call_helper(
                        helpers,
                        MAP_LOOKUP_ELEM,
                        &mut stack,
                        mem,
                        state,
                        [w.addrs[*m], past, hint, 0, 0],
                    );
                    assert!(r.is_err(), "map {m}: a key past the stack's end gave {r:?}");
                }
            }
        }
    });
    drop(g);
}

#[test]
fn tail_call_counts_before_reading_the_slot() {
    let w = world(&[MapDef::new(MapType::ProgArray, 4, 4, 4)]);
    let pa = w.addrs[0];
    w.registry
        .get(bpfkit_maps::MapId(1))
        .unwrap()
        .update(&1u32.to_ne_bytes(), &9u32.to_ne_bytes(), 0)
        .unwrap();
    let ((), st) = w.with(Memory::new(), |call| {
        // out of range: no count
        assert_eq!(call(TAIL_CALL, [0, pa, 4, 0, 0]).unwrap(), EINVAL);
        // empty slot: falls through, but counts
        assert_eq!(call(TAIL_CALL, [0, pa, 0, 0, 0]).unwrap(), ENOENT);
        assert_eq!(
            call(TAIL_CALL, [0, pa, 1, 0, 0]),
            Err(HelperAbort::Stop { r0: 0 })
        );
    });
    assert_eq!(st.tail_calls, 2);
    assert_eq!(st.tail_call, Some(ProgId(9)));
    let ((), st) = w.with(Memory::new(), |call| {
        for _ in 0..MAX_TAIL_CALL_CNT {
            assert!(call(TAIL_CALL, [0, pa, 1, 0, 0]).is_err());
        }
        // the 34th falls through
        assert_eq!(call(TAIL_CALL, [0, pa, 1, 0, 0]).unwrap(), EINVAL);
    });
    assert_eq!(st.tail_calls, MAX_TAIL_CALL_CNT);
}

#[test]
fn redirects() {
    let w = world(&[MapDef::new(MapType::Devmap, 4, 4, 4)]);
    let dm = w.addrs[0];
    w.registry
        .get(bpfkit_maps::MapId(1))
        .unwrap()
        .update(&2u32.to_ne_bytes(), &5u32.to_ne_bytes(), 0)
        .unwrap();
    let ((), st) = w.with(Memory::new(), |call| {
        assert_eq!(call(REDIRECT, [3, 1, 0, 0, 0]).unwrap(), 0); // flags: XDP_ABORTED
        assert_eq!(call(REDIRECT, [3, 0, 0, 0, 0]).unwrap(), 4);
        // empty slot: the fallback action in the low bits
        assert_eq!(call(REDIRECT_MAP, [dm, 1, 2, 0, 0]).unwrap(), 2);
        assert_eq!(call(REDIRECT_MAP, [dm, 9, 1, 0, 0]).unwrap(), 1);
        assert_eq!(call(REDIRECT_MAP, [dm, 2, 1 << 5, 0, 0]).unwrap(), 0);
        assert_eq!(call(REDIRECT_MAP, [dm, 2, 0, 0, 0]).unwrap(), 4);
    });
    assert!(matches!(
        st.redirect,
        Some(Redirect::Devmap {
            key: 2,
            ifindex: 5,
            ..
        })
    ));
}

/// `bpf_redirect_map` remembers the last device map target it found for
/// the run: a repeat must still see every change made to the map since
/// (new target, deleted entry, entry added back), for both device maps.
#[test]
fn redirect_memo_sees_map_changes() {
    for ty in [MapType::Devmap, MapType::DevmapHash] {
        let w = world(&[MapDef::new(ty, 4, 4, 4)]);
        let dm = w.addrs[0];
        let m = w.registry.get(bpfkit_maps::MapId(1)).unwrap();
        let set = |k: u32, v: u32| m.update(&k.to_ne_bytes(), &v.to_ne_bytes(), 0).unwrap();
        set(1, 5);
        let ((), _) = RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
            let mut stack = [0u8; 8];
            let mut go = |state: &mut RunState, key: u32, flags: u64| {
                let r0 = call_helper(
                    &w.helpers,
                    REDIRECT_MAP,
                    &mut stack,
                    mem,
                    state,
                    [dm, key as u64, flags, 0, 0],
                )
                .unwrap();
                let ifindex = match state.redirect {
                    Some(Redirect::Devmap {
                        key: k, ifindex, ..
                    }) if k == key => Some(ifindex),
                    None => None,
                    ref other => panic!("{ty:?}: unexpected redirect {other:?}"),
                };
                (r0, ifindex)
            };
            assert_eq!(go(state, 1, 0), (4, Some(5)), "{ty:?}");
            assert_eq!(go(state, 1, 0), (4, Some(5)), "{ty:?}: repeat");
            set(1, 6);
            assert_eq!(go(state, 1, 0), (4, Some(6)), "{ty:?}: after an update");
            // another key while the memo holds key 1
            assert_eq!(go(state, 3, 2), (2, None), "{ty:?}: absent key");
            assert_eq!(go(state, 1, 0), (4, Some(6)), "{ty:?}");
            m.delete(&1u32.to_ne_bytes()).unwrap();
            assert_eq!(go(state, 1, 2), (2, None), "{ty:?}: after a delete");
            set(1, 8);
            assert_eq!(go(state, 1, 0), (4, Some(8)), "{ty:?}: added back");
            set(3, 9);
            assert_eq!(go(state, 3, 0), (4, Some(9)), "{ty:?}");
            assert_eq!(go(state, 1, 0), (4, Some(8)), "{ty:?}");
        });
    }
}

#[test]
fn xdp_adjust_limits() {
    let w = world(&[]);
    let mut frame = vec![0u8; 4096];
    let mut ctx = [0u8; 24];
    let mut mem = Memory::new();
    let hard = mem.add(RegionKind::Packet, &mut frame);
    let c = mem.add(RegionKind::Context, &mut ctx);
    let buff = XdpBuff {
        hard_start: hard,
        frame_sz: 4096,
        meta: hard + 256,
        data: hard + 256,
        end: hard + 256 + 60,
        ctx: c,
    };
    let ((), st) = RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        state.xdp = Some(buff);
        let mut stack = [0u8; 8];
        let mut call = |id: u32, delta: i32| {
            let h = w.helpers.get(id).unwrap().clone();
            let mut guest = Guest::new(&mut stack, mem);
            let mut env = HelperEnv::new(guest.reborrow(), Some(&mut *state), Pc(0), HelperId(id));
            h.call(&mut env, [c, delta as i64 as u64, 0, 0, 0]).unwrap()
        };
        // headroom less struct xdp_frame (40 bytes)
        assert_eq!(call(XDP_ADJUST_HEAD, -217), EINVAL);
        assert_eq!(call(XDP_ADJUST_HEAD, 47), EINVAL); // fewer than 14 bytes left
        assert_eq!(call(XDP_ADJUST_HEAD, -16), 0);
        // metadata: 4-byte multiples only (-EACCES), not past data_hard_start + 40
        assert_eq!(call(XDP_ADJUST_META, -6), (-13i64) as u64);
        assert_eq!(call(XDP_ADJUST_META, -8), 0);
        assert_eq!(call(XDP_ADJUST_META, -200), EINVAL);
        // the tail: up to the tailroom (320 bytes short of the page)
        assert_eq!(call(XDP_ADJUST_TAIL, 4096), EINVAL);
        assert_eq!(call(XDP_ADJUST_TAIL, -63), EINVAL);
        assert_eq!(call(XDP_ADJUST_TAIL, 8), 0);
    });
    let b = st.xdp.unwrap();
    assert_eq!(
        (b.data - hard, b.meta - hard, b.end - hard),
        (240, 232, 324)
    );
    // the context's 32-bit fields follow
    assert_eq!(
        u32::from_le_bytes(ctx[0..4].try_into().unwrap()),
        b.data as u32
    );
    assert_eq!(
        u32::from_le_bytes(ctx[4..8].try_into().unwrap()),
        b.end as u32
    );
    assert_eq!(
        u32::from_le_bytes(ctx[8..12].try_into().unwrap()),
        b.meta as u32
    );
}

#[test]
fn values_go_only_into_the_runs_own_memory() {
    let w = world(&[MapDef::new(MapType::Hash, 4, 8, 4)]);
    let map = w.addrs[0];
    w.registry
        .get(bpfkit_maps::MapId(1))
        .unwrap()
        .update(&7u32.to_ne_bytes(), &5u64.to_ne_bytes(), 0)
        .unwrap();
    let mut key = 7u32.to_ne_bytes();
    let mut other = Memory::new();
    let k = other.add(RegionKind::Other, &mut key);
    let (r, _) = RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
        assert!(!state.add_map_regions(&mut other));
        assert!(state.add_map_regions(mem));
        let mut stack = [0u8; 8];
        let h = w.helpers.get(MAP_LOOKUP_ELEM).unwrap().clone();
        // a memory that outlives the state must not receive the value
        let mut guest = Guest::new(&mut stack, &mut other);
        let mut env = HelperEnv::new(guest.reborrow(), Some(state), Pc(0), HelperId(1));
        h.call(&mut env, [map, k, 0, 0, 0])
    });
    assert!(matches!(r, Err(HelperAbort::Failed(_))));
    assert_eq!(other.regions().len(), 1);
}

/// What `--repeat` relies on: looking the same value up again (the next
/// run of a batch) gives the same address without a new region; array
/// and per-CPU array values lie in the storage regions `add_map_regions`
/// registered, and so do devmap entries (one region for all of them); a
/// devmap entry that was updated is a new word while the old one keeps
/// what an earlier lookup saw.
#[test]
fn repeated_lookups_reuse_regions() {
    let w = world(&[
        MapDef::new(MapType::Array, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Devmap, 4, 4, 4),
        MapDef::new(MapType::PercpuArray, 4, 8, 4),
    ]);
    let (array, hash, devmap, percpu) = (w.addrs[0], w.addrs[1], w.addrs[2], w.addrs[3]);
    let map = |i: u32| w.registry.get(bpfkit_maps::MapId(i)).unwrap();
    map(2)
        .update(&7u32.to_ne_bytes(), &5u64.to_ne_bytes(), 0)
        .unwrap();
    map(3)
        .update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
        .unwrap();
    let storage = map(1).array_storage().unwrap().addr();
    let pstorage = map(4).percpu_array_storage().unwrap().addr();
    let mut keys = [2u32.to_ne_bytes(), 7u32.to_ne_bytes(), 0u32.to_ne_bytes()];
    let [k2, k7, k0] = &mut keys;
    let mut mem = Memory::new();
    let (k2, k7, k0) = (
        mem.add(RegionKind::Other, k2),
        mem.add(RegionKind::Other, k7),
        mem.add(RegionKind::Other, k0),
    );
    let ((), _) = RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        assert!(state.add_map_regions(mem));
        let mut stack = [0u8; 8];
        let mut call = |mem: &mut Memory<'_>, id: u32, args: [u64; 5]| {
            call_helper(&w.helpers, id, &mut stack, mem, state, args).unwrap()
        };
        let n0 = mem.regions().len();
        // Arrays: inside the storage region, nothing added.
        for _ in 0..2 {
            assert_eq!(
                call(mem, MAP_LOOKUP_ELEM, [array, k2, 0, 0, 0]),
                storage + 16
            );
        }
        assert_eq!(mem.regions().len(), n0);
        // Per-CPU arrays too: CPU 0's slot of key 0, the storage's start.
        assert_eq!(call(mem, MAP_LOOKUP_ELEM, [percpu, k0, 0, 0, 0]), pstorage);
        assert_eq!(mem.regions().len(), n0);
        // Hash values: one region each, then the same address.
        let p = call(mem, MAP_LOOKUP_ELEM, [hash, k7, 0, 0, 0]);
        assert!(p != 0);
        for _ in 0..3 {
            assert_eq!(call(mem, MAP_LOOKUP_ELEM, [hash, k7, 0, 0, 0]), p);
            assert_eq!(call(mem, MAP_LOOKUP_ELEM, [percpu, k0, 0, 0, 0]), pstorage);
        }
        assert_eq!(mem.regions().len(), n0 + 1);
        assert_eq!(mem.load::<8>(p).unwrap(), 5u64.to_ne_bytes());
        // Devmaps: the entry in place, read-only, the same pointer while
        // the entry is unchanged, inside the entries' region
        // `add_map_regions` registered (no region of its own).
        let d = call(mem, MAP_LOOKUP_ELEM, [devmap, k0, 0, 0, 0]);
        assert_eq!(call(mem, MAP_LOOKUP_ELEM, [devmap, k0, 0, 0, 0]), d);
        let dmap = map(3);
        let layout = dmap.devmap_layout().unwrap();
        let entries = layout.entries.addr()..layout.entries.addr() + layout.entries.len() as u64;
        assert!(entries.contains(&d));
        // What an engine's own lookup loads: the slot's word.
        assert_eq!(
            mem.load::<8>(layout.slots).ok(),
            None,
            "slot words are no region"
        );
        let guard = bpfkit_maps::pin();
        assert_eq!(dmap.devmap_entry_addr(0, &guard), d);
        assert_eq!(mem.regions().len(), n0 + 1);
        assert_eq!(mem.load::<4>(d).unwrap(), 1u32.to_ne_bytes());
        assert!(mem.store::<4>(d, [0; 4]).is_err());
        map(3)
            .update(&0u32.to_ne_bytes(), &3u32.to_ne_bytes(), 0)
            .unwrap();
        let e = call(mem, MAP_LOOKUP_ELEM, [devmap, k0, 0, 0, 0]);
        assert_ne!(e, d);
        assert_eq!(mem.load::<4>(e).unwrap(), 3u32.to_ne_bytes());
        assert_eq!(mem.load::<4>(d).unwrap(), 1u32.to_ne_bytes());
        assert!(entries.contains(&e));
        assert_eq!(mem.regions().len(), n0 + 1);
        // An update with the same value replaces the element too (the
        // kernel allocates a new `bpf_dtab_netdev`).
        map(3)
            .update(&0u32.to_ne_bytes(), &3u32.to_ne_bytes(), 0)
            .unwrap();
        let f = call(mem, MAP_LOOKUP_ELEM, [devmap, k0, 0, 0, 0]);
        assert!(f != e && f != d);
        assert_eq!(mem.load::<4>(e).unwrap(), 3u32.to_ne_bytes());
        assert!(mem.store::<4>(f, [0; 4]).is_err());
        // A missing key: NULL, as before; the old entries keep their
        // values while this run lasts.
        map(3).delete(&0u32.to_ne_bytes()).unwrap();
        assert_eq!(call(mem, MAP_LOOKUP_ELEM, [devmap, k0, 0, 0, 0]), 0);
        assert_eq!(dmap.devmap_entry_addr(0, &guard), 0);
        assert_eq!(mem.load::<4>(d).unwrap(), 1u32.to_ne_bytes());
        assert_eq!(mem.load::<4>(f).unwrap(), 3u32.to_ne_bytes());
        // Past the end: NULL.
        mem.store::<4>(k0, 4u32.to_ne_bytes()).unwrap();
        assert_eq!(call(mem, MAP_LOOKUP_ELEM, [devmap, k0, 0, 0, 0]), 0);
        assert_eq!(mem.regions().len(), n0 + 1);
    });
}

/// `bpf_trace_printk` parses each format once per run: formats that
/// alternate, a refused one in between, and a format rewritten in place
/// between calls all print what they say.
#[test]
fn trace_printk_formats_alternate_within_a_run() {
    let w = world(&[]);
    let mut a = *b"a=%d\n\0";
    let mut b = *b"b=%x %s\0";
    let mut bad = *b"%n\0";
    let mut s = *b"hi\0";
    let mut mem = Memory::new();
    let pa = mem.add(RegionKind::Other, &mut a);
    let pb = mem.add(RegionKind::Other, &mut b);
    let pbad = mem.add(RegionKind::Other, &mut bad);
    let ps = mem.add(RegionKind::Other, &mut s);
    let ((), st) = RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        let mut stack = [0u8; 8];
        let mut call = |mem: &mut Memory<'_>, args: [u64; 5]| {
            call_helper(&w.helpers, TRACE_PRINTK, &mut stack, mem, state, args).unwrap()
        };
        for i in 0..3u64 {
            assert_eq!(call(mem, [pa, 6, i, 0, 0]), 4);
            assert_eq!(call(mem, [pbad, 3, 0, 0, 0]), EINVAL);
            assert_eq!(call(mem, [pb, 8, 255 + i, ps, 0]), 7 + u64::from(i > 0));
        }
        // The same address, other bytes: parsed again.
        mem.write(pa, b"A=%u\0").unwrap();
        assert_eq!(call(mem, [pa, 5, u64::MAX, 0, 0]), 12);
    });
    assert_eq!(
        st.trace,
        [
            "a=0",
            "b=ff hi",
            "a=1",
            "b=100 hi",
            "a=2",
            "b=101 hi",
            "A=4294967295"
        ]
    );
}

#[test]
fn perf_event_output_builds_only_kept_records_and_faults_when_full() {
    // Room for one 4-byte record per buffer.
    let registry = MapRegistry::new(MapOptions::new().possible_cpus(2).perf_buffer_bytes(4));
    let mut table = MapTable::new(Some(registry.clone()));
    let perf = registry
        .create(MapDef::new(MapType::PerfEventArray, 4, 4, 2))
        .unwrap()
        .1;
    perf.update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
        .unwrap();
    let map = table.insert(perf.clone());
    let mut helpers = Helpers::new();
    register(&mut helpers);
    let mut sample = *b"abcd";
    let mut mem = Memory::new();
    let data = mem.add(RegionKind::Other, &mut sample);
    let ((), _) = RunState::scoped(Arc::new(table), 0, mem, |mem, state| {
        let mut stack = [0u8; 8];
        let mut call =
            |args: [u64; 5]| call_helper(&helpers, PERF_EVENT_OUTPUT, &mut stack, mem, state, args);
        // Slot 1 is empty: ENOENT, as the kernel's unopened perf event.
        assert_eq!(call([0, map, 1, data, 4]).unwrap(), ENOENT);
        assert_eq!(call([0, map, 0, data, 4]).unwrap(), 0);
        // Full: counted lost, and a bad pointer still traps although no
        // record is built.
        assert_eq!(call([0, map, 0, data, 4]).unwrap(), 0);
        assert!(matches!(
            call([0, map, 0, data + 1, 4]),
            Err(HelperAbort::Fault(_))
        ));
        assert!(matches!(
            call([0, map, 0, 0x10, 4]),
            Err(HelperAbort::Fault(_))
        ));
        // An index past the array and a context length past the (absent)
        // packet.
        assert_eq!(call([0, map, 5, data, 4]).unwrap(), (-7i64) as u64);
        assert_eq!(call([0, map, 1 << 32, data, 4]).unwrap(), (-14i64) as u64);
    });
    let d = perf.perf_drain(0);
    assert_eq!((d.records, d.lost), (vec![b"abcd".to_vec()], 1));
}

/// Device map values are the entries themselves (no copy per lookup): the
/// same pointer in every run while the entry is unchanged (the kernel's
/// pointer into its element), read-only, for both device map types; an
/// update gives later lookups a new pointer while a pointer taken before
/// keeps the old value; a deleted entry is NULL.
#[test]
fn devmap_values_in_place_across_runs() {
    let w = world(&[
        MapDef::new(MapType::Devmap, 4, 8, 4),
        MapDef::new(MapType::DevmapHash, 4, 4, 4),
    ]);
    let map = |i: u32| w.registry.get(bpfkit_maps::MapId(i)).unwrap();
    // ifindex 1, program id 7 (an 8-byte `struct bpf_devmap_val`).
    let val = [1u32.to_ne_bytes(), 7u32.to_ne_bytes()].concat();
    map(1).update(&2u32.to_ne_bytes(), &val, 0).unwrap();
    map(2)
        .update(&9u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
        .unwrap();
    let mut keys = [2u32.to_ne_bytes(), 9u32.to_ne_bytes(), 3u32.to_ne_bytes()];
    let [k2, k9, k3] = &mut keys;
    let mut addrs = Vec::new();
    for round in 0..2 {
        let mut mem = Memory::new();
        let (k2, k9, k3) = (
            mem.add(RegionKind::Other, &mut k2[..]),
            mem.add(RegionKind::Other, &mut k9[..]),
            mem.add(RegionKind::Other, &mut k3[..]),
        );
        let (dev, hash) = (w.addrs[0], w.addrs[1]);
        let (got, _) = RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
            let mut stack = [0u8; 8];
            let mut call = |mem: &mut Memory<'_>, args: [u64; 5]| {
                call_helper(&w.helpers, MAP_LOOKUP_ELEM, &mut stack, mem, state, args).unwrap()
            };
            let d = call(mem, [dev, k2, 0, 0, 0]);
            let h = call(mem, [hash, k9, 0, 0, 0]);
            assert_eq!(call(mem, [dev, k3, 0, 0, 0]), 0);
            assert_eq!(call(mem, [hash, k3, 0, 0, 0]), 0);
            assert_eq!(mem.load::<8>(d).unwrap()[..], val[..]);
            assert_eq!(mem.load::<4>(h).unwrap(), 1u32.to_ne_bytes());
            // Only the value's bytes are a region, and read-only.
            assert!(mem.load::<8>(h).is_err());
            assert!(mem.store::<4>(d, [0; 4]).is_err());
            assert!(mem.store::<4>(h, [0; 4]).is_err());
            let regions = mem.regions().len();
            for _ in 0..3 {
                assert_eq!(call(mem, [dev, k2, 0, 0, 0]), d);
                assert_eq!(call(mem, [hash, k9, 0, 0, 0]), h);
            }
            assert_eq!(mem.regions().len(), regions);
            if round == 1 {
                // Replaced and deleted while the run holds the pointers.
                let v2 = [1u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
                map(1).update(&2u32.to_ne_bytes(), &v2, 0).unwrap();
                map(2)
                    .update(&9u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
                    .unwrap();
                let (d2, h2) = (
                    call(mem, [dev, k2, 0, 0, 0]),
                    call(mem, [hash, k9, 0, 0, 0]),
                );
                assert!(d2 != d && h2 != h && d2 != 0 && h2 != 0);
                assert_eq!(mem.load::<8>(d2).unwrap()[..], v2[..]);
                assert_eq!(mem.load::<8>(d).unwrap()[..], val[..]);
                map(2).delete(&9u32.to_ne_bytes()).unwrap();
                assert_eq!(call(mem, [hash, k9, 0, 0, 0]), 0);
                assert_eq!(mem.load::<4>(h).unwrap(), 1u32.to_ne_bytes());
            }
            (d, h)
        });
        addrs.push(got);
    }
    // The same entries in the next run: the same pointers.
    assert_eq!(addrs[0], addrs[1]);
}

/// Lookups in the table's arrays are index computations into the storage
/// regions `add_map_regions` registered: the value's address on the run's
/// CPU (per-CPU arrays: that CPU's slot), NULL past the end, read-only
/// for `BPF_F_RDONLY_PROG` maps; without the storage regions (another
/// embedder) the lookup still works, through a region of its own.
#[test]
fn array_lookups_are_index_computations() {
    let mut ro = MapDef::new(MapType::Array, 4, 12, 3);
    ro.map_flags = bpfkit_maps::map_flags::RDONLY_PROG;
    let w = world(&[
        MapDef::new(MapType::Array, 4, 12, 3),
        MapDef::new(MapType::PercpuArray, 4, 4, 3),
        ro,
    ]);
    let (array, percpu, rdonly) = (w.addrs[0], w.addrs[1], w.addrs[2]);
    let map = |i: u32| w.registry.get(bpfkit_maps::MapId(i)).unwrap();
    let storage = map(1).array_storage().unwrap().addr();
    let pstorage = map(2).percpu_array_storage().unwrap().addr();
    let rstorage = map(3).array_storage().unwrap().addr();
    for (cpu, regions) in [(0, true), (1, true), (1, false)] {
        let mut keys = [2u32.to_ne_bytes(), 3u32.to_ne_bytes()];
        let [k2, k3] = &mut keys;
        let mut mem = Memory::new();
        let (k2, k3) = (
            mem.add(RegionKind::Other, k2),
            mem.add(RegionKind::Other, k3),
        );
        RunState::scoped(w.table.clone(), cpu, mem, |mem, state| {
            if regions {
                assert!(state.add_map_regions(mem));
            }
            let mut stack = [0u8; 8];
            let mut call = |mem: &mut Memory<'_>, args: [u64; 5]| {
                call_helper(&w.helpers, MAP_LOOKUP_ELEM, &mut stack, mem, state, args).unwrap()
            };
            // Values are 8-byte aligned: 16 bytes apart for 12-byte values,
            // per-CPU slots of 8 bytes, 2 CPUs.
            let p = call(mem, [array, k2, 0, 0, 0]);
            assert_eq!(p, storage + 32);
            assert_eq!(call(mem, [array, k3, 0, 0, 0]), 0);
            let q = call(mem, [percpu, k2, 0, 0, 0]);
            assert_eq!(q, pstorage + (2 * 2 + cpu as u64) * 8);
            assert_eq!(call(mem, [percpu, k3, 0, 0, 0]), 0);
            let r = call(mem, [rdonly, k2, 0, 0, 0]);
            assert_eq!(r, rstorage + 32);
            mem.store::<4>(p + 8, 7u32.to_ne_bytes()).unwrap();
            mem.store::<4>(q, 9u32.to_ne_bytes()).unwrap();
            assert!(mem.store::<4>(r, [0; 4]).is_err());
            assert_eq!(mem.load::<4>(r).unwrap(), [0; 4]);
        });
        assert_eq!(
            map(1).lookup(&2u32.to_ne_bytes()).unwrap()[8..],
            7u32.to_ne_bytes()
        );
        let all = map(2).lookup(&2u32.to_ne_bytes()).unwrap();
        assert_eq!(all[cpu * 8..cpu * 8 + 4], 9u32.to_ne_bytes());
    }
}

/// Lookups in an array of maps: the inner map's own address (resolvable
/// by the next lookups of the run, also when it is not a map of the
/// table); looked up again while the slot is unchanged, the same address
/// without the slot's lock; after the control side replaces or empties the
/// slot, the new map or NULL; a lookup through an inner map reaches that
/// map's values.
#[test]
fn array_of_maps_lookups_follow_the_slot() {
    let tmpl = MapDef::new(MapType::Array, 4, 8, 2);
    let w = world(&[MapDef::new(MapType::ArrayOfMaps, 4, 4, 2).with_inner(tmpl.clone())]);
    let outer_addr = w.addrs[0];
    let outer = w.registry.get(bpfkit_maps::MapId(1)).unwrap();
    let (a, am) = w.registry.create(tmpl.clone()).unwrap();
    let (b, bm) = w.registry.create(tmpl).unwrap();
    am.update(&1u32.to_ne_bytes(), &11u64.to_ne_bytes(), 0)
        .unwrap();
    bm.update(&1u32.to_ne_bytes(), &22u64.to_ne_bytes(), 0)
        .unwrap();
    outer
        .update(&0u32.to_ne_bytes(), &a.0.to_ne_bytes(), 0)
        .unwrap();
    let mut keys = [0u32.to_ne_bytes(), 1u32.to_ne_bytes()];
    let [k0, k1] = &mut keys;
    let mut mem = Memory::new();
    let (k0, k1) = (
        mem.add(RegionKind::Other, k0),
        mem.add(RegionKind::Other, k1),
    );
    RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        assert!(state.add_map_regions(mem));
        let mut stack = [0u8; 8];
        let mut call = |mem: &mut Memory<'_>, args: [u64; 5]| {
            call_helper(&w.helpers, MAP_LOOKUP_ELEM, &mut stack, mem, state, args).unwrap()
        };
        let value = |mem: &mut Memory<'_>,
                     call: &mut dyn FnMut(&mut Memory<'_>, [u64; 5]) -> u64,
                     inner: u64| {
            let p = call(mem, [inner, k1, 0, 0, 0]);
            assert_ne!(p, 0);
            u64::from_ne_bytes(mem.load::<8>(p).unwrap())
        };
        let ia = call(mem, [outer_addr, k0, 0, 0, 0]);
        assert_eq!(ia, am.addr());
        for _ in 0..3 {
            assert_eq!(call(mem, [outer_addr, k0, 0, 0, 0]), ia);
        }
        assert_eq!(value(mem, &mut call, ia), 11);
        assert_eq!(call(mem, [outer_addr, k1, 0, 0, 0]), 0);
        assert_eq!(call(mem, [outer_addr, k1, 0, 0, 0]), 0);
        // An empty slot filled during the run: the remembered miss no
        // longer stands.
        outer
            .update(&1u32.to_ne_bytes(), &b.0.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(call(mem, [outer_addr, k1, 0, 0, 0]), bm.addr());
        outer.delete(&1u32.to_ne_bytes()).unwrap();
        assert_eq!(call(mem, [outer_addr, k1, 0, 0, 0]), 0);
        // Replaced during the run: the next lookup gives the new map; the
        // old one stays usable for the run.
        outer
            .update(&0u32.to_ne_bytes(), &b.0.to_ne_bytes(), 0)
            .unwrap();
        let ib = call(mem, [outer_addr, k0, 0, 0, 0]);
        assert_eq!(ib, bm.addr());
        assert_eq!(value(mem, &mut call, ib), 22);
        assert_eq!(value(mem, &mut call, ia), 11);
        // The same map put back: found again.
        outer
            .update(&0u32.to_ne_bytes(), &a.0.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(call(mem, [outer_addr, k0, 0, 0, 0]), ia);
        outer.delete(&0u32.to_ne_bytes()).unwrap();
        assert_eq!(call(mem, [outer_addr, k0, 0, 0, 0]), 0);
    });
}

/// Keys and values read from the program's stack (where programs build
/// them) and from regions, at the common sizes read as one load: the
/// stored bytes are the guest's, and a key or value that is not wholly
/// inside the stack or one region is a fault, not a partial read.
#[test]
fn update_reads_keys_and_values_exactly() {
    let w = world(&[
        MapDef::new(MapType::Hash, 12, 16, 4),
        MapDef::new(MapType::Hash, 5, 3, 4),
    ]);
    let (h12, h5) = (w.addrs[0], w.addrs[1]);
    let map = |i: u32| w.registry.get(bpfkit_maps::MapId(i)).unwrap();
    let mut region = [0u8; 20];
    region[..12].copy_from_slice(b"region-key12");
    let mut mem = Memory::new();
    let r = mem.add(RegionKind::Other, &mut region);
    RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        let mut stack = [0u8; 64];
        stack[..12].copy_from_slice(b"stack-key-12");
        stack[16..32].copy_from_slice(b"value-16-bytes!!");
        stack[40..45].copy_from_slice(b"five5");
        stack[48..51].copy_from_slice(b"abc");
        let base = stack.as_ptr() as u64;
        let mut call = |mem: &mut Memory<'_>, args: [u64; 5]| {
            let h = w.helpers.get(MAP_UPDATE_ELEM).unwrap().clone();
            let mut guest = Guest::new(&mut stack, mem);
            assert_eq!(guest.stack_start(), base);
            let mut env = HelperEnv::new(
                guest.reborrow(),
                Some(&mut *state),
                Pc(0),
                HelperId(MAP_UPDATE_ELEM),
            );
            h.call(&mut env, args)
        };
        let st = |off: u64| base + off;
        assert_eq!(call(mem, [h12, st(0), st(16), 0, 0]).unwrap(), 0);
        assert_eq!(call(mem, [h12, r, st(16), 0, 0]).unwrap(), 0);
        assert_eq!(call(mem, [h5, st(40), st(48), 0, 0]).unwrap(), 0);
        // The key's last byte past the stack's end; the value's past the
        // region's end.
        assert!(call(mem, [h12, st(53), st(16), 0, 0]).is_err());
        assert!(call(mem, [h12, st(0), r + 8, 0, 0]).is_err());
        assert!(call(mem, [h12, 0x10, st(16), 0, 0]).is_err());
    });
    assert_eq!(map(1).lookup(b"stack-key-12").unwrap(), b"value-16-bytes!!");
    assert_eq!(map(1).lookup(b"region-key12").unwrap(), b"value-16-bytes!!");
    assert_eq!(map(2).lookup(b"five5").unwrap(), b"abc");
    assert_eq!(map(1).len(), 2);
}

/// Ring buffer records: a reservation is a writable region the program
/// fills; submit and discard find the record's map from the reservation
/// (submitting twice, or an address that was never reserved, is a trap);
/// the consumer sees the submitted record only.
#[test]
fn ringbuf_records_reserved_submitted_and_discarded() {
    let w = world(&[MapDef::new(MapType::Ringbuf, 0, 0, 4096)]);
    let rb = w.addrs[0];
    let ((), _) = w.with(Memory::new(), |call| {
        let p = call(RINGBUF_RESERVE, [rb, 8, 0, 0, 0]).unwrap();
        let q = call(RINGBUF_RESERVE, [rb, 8, 0, 0, 0]).unwrap();
        assert!(p != 0 && q != 0 && p != q);
        assert_eq!(call(RINGBUF_SUBMIT, [p, 0, 0, 0, 0]).unwrap(), 0);
        assert!(call(RINGBUF_SUBMIT, [p, 0, 0, 0, 0]).is_err());
        assert!(call(RINGBUF_DISCARD, [q + 8, 0, 0, 0, 0]).is_err());
        assert_eq!(call(RINGBUF_DISCARD, [q, 0, 0, 0, 0]).unwrap(), 0);
    });
    let mut seen = 0;
    w.registry
        .get(bpfkit_maps::MapId(1))
        .unwrap()
        .ringbuf_consume(|d| {
            assert_eq!(d.len(), 8);
            seen += 1;
        })
        .unwrap();
    assert_eq!(seen, 1);
}

/// `hash_of_maps` lookups are answered again while the map's change count
/// stands (hits and misses alike), and follow every change: an inner map
/// put in, replaced or removed during the run is seen by the next lookup,
/// and a key that another change leaves alone still gives its map.
#[test]
fn hash_of_maps_lookups_follow_the_map() {
    let tmpl = MapDef::new(MapType::Array, 4, 8, 2);
    let w = world(&[MapDef::new(MapType::HashOfMaps, 4, 4, 8).with_inner(tmpl.clone())]);
    let outer_addr = w.addrs[0];
    let outer = w.registry.get(bpfkit_maps::MapId(1)).unwrap();
    let (a, am) = w.registry.create(tmpl.clone()).unwrap();
    let (b, bm) = w.registry.create(tmpl).unwrap();
    outer
        .update(&5u32.to_ne_bytes(), &a.0.to_ne_bytes(), 0)
        .unwrap();
    let mut keys = [5u32.to_ne_bytes(), 6u32.to_ne_bytes()];
    let [k5, k6] = &mut keys;
    let mut mem = Memory::new();
    let (k5, k6) = (
        mem.add(RegionKind::Other, k5),
        mem.add(RegionKind::Other, k6),
    );
    RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
        let mut stack = [0u8; 8];
        let mut call = |mem: &mut Memory<'_>, args: [u64; 5]| {
            call_helper(&w.helpers, MAP_LOOKUP_ELEM, &mut stack, mem, state, args).unwrap()
        };
        for _ in 0..3 {
            assert_eq!(call(mem, [outer_addr, k5, 0, 0, 0]), am.addr());
            assert_eq!(call(mem, [outer_addr, k6, 0, 0, 0]), 0);
        }
        // The absent key put in: found at once, the other key unchanged.
        outer
            .update(&6u32.to_ne_bytes(), &b.0.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(call(mem, [outer_addr, k6, 0, 0, 0]), bm.addr());
        assert_eq!(call(mem, [outer_addr, k5, 0, 0, 0]), am.addr());
        // Replaced, then removed.
        outer
            .update(&5u32.to_ne_bytes(), &b.0.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(call(mem, [outer_addr, k5, 0, 0, 0]), bm.addr());
        outer.delete(&5u32.to_ne_bytes()).unwrap();
        assert_eq!(call(mem, [outer_addr, k5, 0, 0, 0]), 0);
        assert_eq!(call(mem, [outer_addr, k6, 0, 0, 0]), bm.addr());
    });
    // Answered from the memo: the outer map's change count stands.
    assert!(outer.slot_generation(&5u32.to_ne_bytes()).is_some());
}

/// `bpf_xdp_adjust_tail`'s short way for a linear packet: the added bytes
/// (any count, 1 to the tailroom) are zeroed exactly, nothing past the new
/// end is touched, and the context follows; a packet outside the memory's
/// packet region (here: an `Other` region) is zeroed through the general
/// write all the same; a shrink writes nothing.
#[test]
fn adjust_tail_zeroes_exactly_the_added_bytes() {
    let w = world(&[]);
    for kind in [RegionKind::Packet, RegionKind::Other] {
        for delta in [1i32, 3, 7, 8, 9, 15, 16, 17, 40, 300] {
            let mut frame = vec![0xaau8; 4096];
            let mut ctx = [0u8; 24];
            let mut mem = Memory::new();
            let hard = mem.add(kind, &mut frame);
            let c = mem.add(RegionKind::Context, &mut ctx);
            let buff = XdpBuff {
                hard_start: hard,
                frame_sz: 4096,
                meta: hard + 256,
                data: hard + 256,
                end: hard + 256 + 60,
                ctx: c,
            };
            let ((), st) = RunState::scoped(w.table.clone(), 0, mem, |mem, state| {
                state.xdp = Some(buff);
                let mut stack = [0u8; 8];
                let h = w.helpers.get(XDP_ADJUST_TAIL).unwrap().clone();
                let mut call = |d: i32| {
                    let mut guest = Guest::new(&mut stack, mem);
                    let mut env =
                        HelperEnv::new(guest.reborrow(), Some(&mut *state), Pc(0), HelperId(65));
                    h.call(&mut env, [c, d as i64 as u64, 0, 0, 0]).unwrap()
                };
                assert_eq!(call(delta), 0);
                assert_eq!(call(-1), 0);
            });
            let end = 256 + 60 + delta as usize;
            assert_eq!(st.xdp.unwrap().end - hard, end as u64 - 1);
            assert!(
                frame[..316].iter().all(|&b| b == 0xaa),
                "{kind:?} {delta}: bytes before the old end"
            );
            assert!(
                frame[316..end].iter().all(|&b| b == 0),
                "{kind:?} {delta}: the added bytes"
            );
            assert!(
                frame[end..].iter().all(|&b| b == 0xaa),
                "{kind:?} {delta}: bytes past the new end"
            );
            assert_eq!(
                u32::from_le_bytes(ctx[4..8].try_into().unwrap()),
                (hard + end as u64 - 1) as u32
            );
        }
    }
}

/// `bpf_ringbuf_output` on a ring with no room answers `-EAGAIN` without
/// reading the data, but a pointer it could not read still faults first,
/// and bad flags are `-EINVAL` (after the same fault test); once there is
/// room again the record is written.
#[test]
fn ringbuf_output_refused_without_the_data() {
    const EAGAIN: u64 = (-11i64) as u64;
    let w = world(&[MapDef::new(MapType::Ringbuf, 0, 0, 4096)]);
    let rb = w.addrs[0];
    let mut data = *b"0123456789abcdef";
    let mut mem = Memory::new();
    let d = mem.add(RegionKind::Other, &mut data);
    let ring = w.registry.get(bpfkit_maps::MapId(1)).unwrap();
    let ((), _) = w.with(mem, |call| {
        // 4096 - 1 bytes usable: fill with 16-byte records (24 each).
        let mut n = 0;
        while call(RINGBUF_OUTPUT, [rb, d, 16, 0, 0]).unwrap() == 0 {
            n += 1;
        }
        assert_eq!(n, 170);
        assert_eq!(call(RINGBUF_OUTPUT, [rb, d, 16, 0, 0]).unwrap(), EAGAIN);
        // Unreadable data: a fault, full ring or not.
        assert!(matches!(
            call(RINGBUF_OUTPUT, [rb, d + 1, 16, 0, 0]),
            Err(HelperAbort::Fault(_))
        ));
        assert!(matches!(
            call(RINGBUF_OUTPUT, [rb, 0x10, 8, 4, 0]),
            Err(HelperAbort::Fault(_))
        ));
        assert_eq!(call(RINGBUF_OUTPUT, [rb, d, 16, 4, 0]).unwrap(), EINVAL);
        // An empty record fits in the 16 bytes left (8: header only).
        assert_eq!(call(RINGBUF_OUTPUT, [rb, 0x10, 0, 0, 0]).unwrap(), 0);
        let mut seen = 0;
        ring.ringbuf_consume(|r| {
            assert!(r == &b"0123456789abcdef"[..] || r.is_empty());
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 171);
        assert_eq!(call(RINGBUF_OUTPUT, [rb, d, 16, 0, 0]).unwrap(), 0);
    });
    let mut last = Vec::new();
    ring.ringbuf_consume(|r| last = r.to_vec()).unwrap();
    assert_eq!(last, b"0123456789abcdef");
}

/// `bpf_perf_event_output` with packet bytes (flags bits 32-51): the record
/// is the sample and then that many bytes from `data` on, continuing into
/// the fragments; asking for more than the packet has is `-EFAULT` (with
/// and without fragments), and nothing is queued then.
#[test]
fn perf_event_output_records_carry_packet_bytes() {
    const EFAULT: u64 = (-14i64) as u64;
    let registry = MapRegistry::new(MapOptions::new().possible_cpus(2));
    let mut table = MapTable::new(Some(registry.clone()));
    let perf = registry
        .create(MapDef::new(MapType::PerfEventArray, 4, 4, 2))
        .unwrap()
        .1;
    perf.update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
        .unwrap();
    let map = table.insert(perf.clone());
    let table = Arc::new(table);
    let mut helpers = Helpers::new();
    register(&mut helpers);
    for frags in [vec![], vec![vec![0xf0u8, 0xf1, 0xf2], vec![0xf3; 2]]] {
        let mut frame: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut ctx = [0u8; 24];
        let mut sample = *b"abcd";
        let mut mem = Memory::new();
        let hard = mem.add(RegionKind::Packet, &mut frame);
        let c = mem.add(RegionKind::Context, &mut ctx);
        let s = mem.add(RegionKind::Other, &mut sample);
        let buff = XdpBuff {
            hard_start: hard,
            frame_sz: 4096,
            meta: hard + 256,
            data: hard + 256,
            end: hard + 256 + 20,
            ctx: c,
        };
        let with_frags = !frags.is_empty();
        let ((), _) = RunState::scoped(table.clone(), 0, mem, |mem, state| {
            state.xdp = Some(buff);
            state.frags = frags.clone();
            let mut stack = [0u8; 8];
            let mut call = |args: [u64; 5]| {
                call_helper(&helpers, PERF_EVENT_OUTPUT, &mut stack, mem, state, args).unwrap()
            };
            let ctx_len = |n: u64| n << 32;
            assert_eq!(call([c, map, ctx_len(6), s, 4]), 0);
            assert_eq!(call([c, map, ctx_len(20), s, 0]), 0);
            // One past the packet (linear part and fragments).
            let total = if with_frags { 25 } else { 20 };
            assert_eq!(call([c, map, ctx_len(total + 1), s, 4]), EFAULT);
            if with_frags {
                assert_eq!(call([c, map, ctx_len(24), s, 4]), 0);
            }
        });
        let d = perf.perf_drain(0);
        let mut want = vec![
            [&b"abcd"[..], &[0, 1, 2, 3, 4, 5]].concat(),
            (0..20u8).collect::<Vec<u8>>(),
        ];
        if with_frags {
            let mut r = b"abcd".to_vec();
            r.extend(0..20u8);
            r.extend([0xf0, 0xf1, 0xf2, 0xf3]);
            want.push(r);
        }
        assert_eq!((d.records, d.lost), (want, 0), "fragments: {with_frags}");
    }
}

/// Reads a step's record (six words at `at`) from the run's memory.
fn record(mem: &Memory<'_>, at: u64) -> [u64; 6] {
    let mut r = [0u64; 6];
    for (k, w) in r.iter_mut().enumerate() {
        *w = u64::from_le_bytes(mem.load::<8>(at + 8 * k as u64).unwrap());
    }
    r
}

#[test]
fn for_each_step_walks_arrays_by_index_and_hash_maps_whole() {
    use bpfkit_runtime::callback::{STEP_CALL, STEP_DONE};
    let w = world(&[
        MapDef::new(MapType::Array, 4, 8, 3),
        MapDef::new(MapType::Hash, 4, 8, 8),
        MapDef::new(MapType::Hash, 4, 8, 8),
    ]);
    let (arr, hash, empty) = (w.addrs[0], w.addrs[1], w.addrs[2]);
    let h = w.registry.get(bpfkit_maps::MapId(2)).unwrap();
    for k in [5u32, 9, 11] {
        h.update(&k.to_ne_bytes(), &(k as u64 * 2).to_ne_bytes(), 0)
            .unwrap();
    }
    let step = FOR_EACH_MAP_ELEM_STEP;
    let helpers = &w.helpers;
    let ((), _) = RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
        let mut stack = [0u8; 8];
        let mut call = |mem: &mut Memory<'_>, args| {
            let at = call_helper(helpers, step, &mut stack, mem, state, args).unwrap();
            record(mem, at)
        };
        // An empty map: done at once, no call.
        assert_eq!(
            call(mem, [empty, 0x77, 0, 0, 1]),
            [STEP_DONE, 0, 0, 0, 0, 0]
        );
        // flags != 0: -EINVAL.
        assert_eq!(call(mem, [arr, 0x77, 1, 0, 1])[..2], [STEP_DONE, EINVAL]);
        // An array: every index in order, each key a readable u32 of the
        // index, each value writable; then done with the count.
        let mut values = Vec::new();
        for i in 0..3u64 {
            let r = call(mem, [arr, 0x77, 0, i, 1]);
            assert_eq!([r[0], r[1], r[4], r[5]], [STEP_CALL, arr, 0x77, 0]);
            assert_eq!(mem.load::<4>(r[2]).unwrap(), (i as u32).to_ne_bytes());
            mem.store::<8>(r[3], (100 + i).to_ne_bytes()).unwrap();
            values.push(r[3]);
        }
        assert_eq!(call(mem, [arr, 0x77, 0, 3, 1])[..2], [STEP_DONE, 3]);
        assert_eq!(values[1] - values[0], values[2] - values[1]);
        // A walk nested in a callback (another token) leaves the outer
        // one's keys alone; the hash map gives each element once.
        let outer = call(mem, [hash, 0, 0, 0, 1]);
        let mut seen = Vec::new();
        for i in 0..3u64 {
            let r = call(mem, [hash, 0, 0, i, 2]);
            assert_eq!(r[0], STEP_CALL);
            let k = u32::from_ne_bytes(mem.load::<4>(r[2]).unwrap());
            let v = u64::from_ne_bytes(mem.load::<8>(r[3]).unwrap());
            assert_eq!(v, k as u64 * 2);
            seen.push(k);
        }
        assert_eq!(call(mem, [hash, 0, 0, 3, 2])[..2], [STEP_DONE, 3]);
        seen.sort();
        assert_eq!(seen, [5, 9, 11]);
        assert_eq!(outer[0], STEP_CALL);
        assert_eq!(call(mem, [hash, 0, 0, 1, 1])[0], STEP_CALL);
        // Not a map: a trap, not a crash.
        assert!(call_helper(helpers, step, &mut stack, mem, state, [0x1234, 0, 0, 0, 1]).is_err());
    });
    let a = w.registry.get(bpfkit_maps::MapId(1)).unwrap();
    assert_eq!(a.lookup(&1u32.to_ne_bytes()).unwrap(), 101u64.to_ne_bytes());
}

/// The step keeps ended walks' element lists for the run's next walks: a
/// walk that reuses one sees only its own map's elements (a longer list
/// left before it, a walk abandoned by a callback's stop and restarted
/// under its token, an array after a hash map: keys read as the index).
#[test]
fn for_each_step_reused_lists_hold_only_the_new_walks_elements() {
    use bpfkit_runtime::callback::STEP_DONE;
    let w = world(&[
        MapDef::new(MapType::Array, 4, 8, 2),
        MapDef::new(MapType::Hash, 4, 8, 8),
    ]);
    let (arr, hash) = (w.addrs[0], w.addrs[1]);
    let h = w.registry.get(bpfkit_maps::MapId(2)).unwrap();
    for k in [3u32, 4, 8, 9] {
        h.update(&k.to_ne_bytes(), &(k as u64 + 50).to_ne_bytes(), 0)
            .unwrap();
    }
    let step = FOR_EACH_MAP_ELEM_STEP;
    let helpers = &w.helpers;
    let ((), _) = RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
        let mut stack = [0u8; 8];
        let mut call = |mem: &mut Memory<'_>, args| {
            let at = call_helper(helpers, step, &mut stack, mem, state, args).unwrap();
            record(mem, at)
        };
        // Steps until done or `calls` callback calls were made.
        let mut walk = |mem: &mut Memory<'_>, map: u64, token: u64, calls: u64| {
            let mut got = Vec::new();
            for i in 0..calls {
                let r = call(mem, [map, 0, 0, i, token]);
                if r[0] == STEP_DONE {
                    assert_eq!(r[1], i);
                    break;
                }
                let k = u32::from_ne_bytes(mem.load::<4>(r[2]).unwrap());
                let v = u64::from_ne_bytes(mem.load::<8>(r[3]).unwrap());
                got.push((k, v));
            }
            got.sort();
            got
        };
        let hash_elems = [(3, 53), (4, 54), (8, 58), (9, 59)];
        let all = u64::MAX;
        assert_eq!(walk(mem, hash, 1, all), hash_elems);
        assert_eq!(walk(mem, arr, 1, all), [(0, 0), (1, 0)]);
        // Abandoned after one call (the callback stopped it), restarted.
        assert_eq!(walk(mem, hash, 7, 1).len(), 1);
        assert_eq!(walk(mem, arr, 7, all), [(0, 0), (1, 0)]);
        assert_eq!(walk(mem, hash, 2, all), hash_elems);
        assert_eq!(walk(mem, arr, 2, all), [(0, 0), (1, 0)]);
    });
}

/// `bpf_for_each_map_elem` run by the interpreter: the callback sums the
/// array's values into the caller's stack and stops at index 2; the empty
/// hash map gives 0 calls; the callback's key and value are the map's.
#[test]
fn for_each_map_elem_runs_on_the_interpreter() {
    use bpfkit_isa::asm::{assemble, Syntax};
    let w = world(&[
        MapDef::new(MapType::Array, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
    ]);
    let a = w.registry.get(bpfkit_maps::MapId(1)).unwrap();
    for k in 0..4u32 {
        a.update(&k.to_ne_bytes(), &(10 + k as u64).to_ne_bytes(), 0)
            .unwrap();
    }
    let text = format!(
        "stdw [%r10-8], 0
        lddw %r1, {arr}
        lddw %r2, func cb
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 164
        mov %r6, %r0
        lddw %r1, {hash}
        lddw %r2, func cb
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 164
        mul %r0, 1000
        add %r0, %r6
        mul %r0, 1000
        ldxdw %r1, [%r10-8]
        add %r0, %r1
        exit
        cb:
        ldxdw %r5, [%r4]
        ldxdw %r0, [%r3]
        add %r5, %r0
        stxdw [%r4], %r5
        ldxw %r1, [%r2]
        mov %r0, 0
        jne %r1, 2, +1
        mov %r0, 1
        exit",
        arr = w.addrs[0],
        hash = w.addrs[1],
    );
    let p = bpfkit_isa::Program::from_insns(assemble(&text, Syntax::Ubpf).unwrap()).unwrap();
    let mut vm = bpfkit_interp::Interpreter::new(&p, &w.helpers).unwrap();
    let (r, _) = RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
        state.add_map_regions(mem);
        vm.run_with_data(mem, &[0], state)
    });
    // Three calls (stopped at index 2), none for the empty map; the sum of
    // the values at 0, 1 and 2.
    assert_eq!(r, Ok(3 * 1000 + (10 + 11 + 12)));
}

/// The run's memo of hand-outs (`RunState::handed_out`) answers a repeat
/// lookup without searching the regions only while the memory's region
/// list is the one it saw: after a clear, the same value gets its region
/// again (same address: the kernel's pointer identity), and a value of
/// another map is not taken for it.
#[test]
fn handed_out_values_need_their_region_after_a_memory_change() {
    let w = world(&[
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Hash, 4, 8, 4),
    ]);
    let (h0, h1) = (w.addrs[0], w.addrs[1]);
    let map = |i: u32| w.registry.get(bpfkit_maps::MapId(i)).unwrap();
    map(1)
        .update(&7u32.to_ne_bytes(), &5u64.to_ne_bytes(), 0)
        .unwrap();
    map(2)
        .update(&7u32.to_ne_bytes(), &6u64.to_ne_bytes(), 0)
        .unwrap();
    let ((), _) = RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
        assert!(state.add_map_regions(mem));
        // The key on the program's stack, as programs build them.
        let mut stack = [0u8; 8];
        stack[..4].copy_from_slice(&7u32.to_ne_bytes());
        let k = stack.as_ptr() as u64;
        let mut call = |mem: &mut Memory<'_>, map: u64, hint: u64| {
            call_helper(
                &w.helpers,
                MAP_LOOKUP_ELEM,
                &mut stack,
                mem,
                state,
                [map, k, hint, 0, 0],
            )
            .unwrap()
        };
        let p = call(mem, h0, 0);
        assert!(p != 0);
        let n = mem.regions().len();
        for _ in 0..3 {
            assert_eq!(call(mem, h0, 0), p);
        }
        assert_eq!(mem.regions().len(), n, "a repeat lookup adds no region");
        assert_eq!(mem.load::<8>(p).unwrap(), 5u64.to_ne_bytes());
        // The other map's value: its own pointer and region.
        let q = call(mem, h1, 1);
        assert!(q != 0 && q != p);
        assert_eq!(mem.load::<8>(q).unwrap(), 6u64.to_ne_bytes());
        assert_eq!(call(mem, h0, 0), p);
        assert_eq!(call(mem, h1, 1), q);
        // Every region gone: the same value again needs a new region.
        mem.clear();
        assert!(mem.load::<8>(p).is_err());
        assert_eq!(call(mem, h0, 0), p);
        assert_eq!(
            mem.load::<8>(p).unwrap(),
            5u64.to_ne_bytes(),
            "the value's region is back"
        );
        assert!(mem.load::<8>(q).is_err());
        assert_eq!(call(mem, h1, 1), q);
        assert_eq!(mem.load::<8>(q).unwrap(), 6u64.to_ne_bytes());
        // Noted again with the new region list.
        assert_eq!(call(mem, h0, 0), p);
        assert_eq!(mem.load::<8>(p).unwrap(), 5u64.to_ne_bytes());
    });
}

/// Keys and values the program built on its stack are given to the map
/// where they are (`update`, and `with_bytes`: delete, push): the map sees
/// exactly those bytes, one past the stack's end is still a fault.
#[test]
fn stack_keys_and_values_used_in_place() {
    let w = world(&[
        MapDef::new(MapType::Hash, 4, 8, 4),
        MapDef::new(MapType::Queue, 0, 4, 4),
    ]);
    let (hash, queue) = (w.addrs[0], w.addrs[1]);
    let map = |i: u32| w.registry.get(bpfkit_maps::MapId(i)).unwrap();
    for k in [7u32, 8] {
        map(1)
            .update(&k.to_ne_bytes(), &u64::from(k).to_ne_bytes(), 0)
            .unwrap();
    }
    RunState::scoped(w.table.clone(), 0, Memory::new(), |mem, state| {
        let mut stack = [0u8; 16];
        stack[..4].copy_from_slice(&7u32.to_ne_bytes());
        stack[4..8].copy_from_slice(&0x1234_5678u32.to_ne_bytes());
        stack[8..16].copy_from_slice(&99u64.to_ne_bytes());
        let base = stack.as_ptr() as u64;
        let mut call = |mem: &mut Memory<'_>, id: u32, args: [u64; 5]| {
            call_helper(&w.helpers, id, &mut stack, mem, state, args)
        };
        // Key 7 gets 99, then key 7 is deleted; key 8 stays.
        assert_eq!(
            call(mem, MAP_UPDATE_ELEM, [hash, base, base + 8, 0, 0]).unwrap(),
            0
        );
        assert_eq!(
            map(1).lookup(&7u32.to_ne_bytes()).unwrap(),
            99u64.to_ne_bytes()
        );
        assert_eq!(
            call(mem, MAP_DELETE_ELEM, [hash, base, 0, 0, 0]).unwrap(),
            0
        );
        assert_eq!(
            call(mem, MAP_DELETE_ELEM, [hash, base, 0, 0, 0]).unwrap(),
            ENOENT
        );
        // The value's last byte one past the stack: a fault, nothing stored.
        assert!(call(mem, MAP_UPDATE_ELEM, [hash, base, base + 9, 0, 0]).is_err());
        assert!(call(mem, MAP_DELETE_ELEM, [hash, base + 13, 0, 0, 0]).is_err());
        assert_eq!(
            call(mem, MAP_PUSH_ELEM, [queue, base + 4, 0, 0, 0]).unwrap(),
            0
        );
        assert!(call(mem, MAP_PUSH_ELEM, [queue, base + 13, 0, 0, 0]).is_err());
    });
    assert!(map(1).lookup(&7u32.to_ne_bytes()).is_err());
    assert_eq!(
        map(1).lookup(&8u32.to_ne_bytes()).unwrap(),
        8u64.to_ne_bytes()
    );
    assert_eq!(map(1).len(), 1);
    let mut out = [0u8; 4];
    map(2).pop(&mut out).unwrap();
    assert_eq!(out, 0x1234_5678u32.to_ne_bytes());
    assert!(map(2).pop(&mut out).is_err());
}
