//! Lookups in hash, LRU hash, LPM trie and per-CPU hash maps through the
//! facade, where the JIT's unchecked mode passes `bpf_map_lookup_elem` the
//! map's table index as a hint in `r3` (`Imm64Resolver::table_index`) for
//! a map it resolved, and the helper checks it: hits and misses give the
//! pointer `bpfkit-maps` hands out for the element (the same one twice in
//! a run, and across the runs of a batch), writes through it land in the
//! map, a helper reading it (an update copying the value) accepts it, an
//! update between two lookups replaces a plain hash's element (the first
//! pointer still reads the old value), a delete during the run leaves the
//! old memory readable and the next lookup missing, a per-CPU hash gives
//! the run's CPU's slot. The interpreter, which takes `r3` from the
//! program, agrees. Fixture: `tests/inline/hash_lookup.c` (its lookups in
//! `flows` and `lru` after the first come from `r1 = r7`: no hint there).

mod common;

use bpfkit::{Engine, Loader, Object};
use bpfkit_maps::{pin, update_flags, Map};
use std::sync::Arc;

const FIXTURE: &[u8] = include_bytes!("inline/hash_lookup.o");

const CPUS: usize = 2;

fn map(obj: &Object, name: &str) -> Arc<Map> {
    obj.map(name).unwrap().map.clone()
}

/// `struct val { a, b }` as the map stores it.
fn val(a: u32, b: u32) -> Vec<u8> {
    [a.to_ne_bytes(), b.to_ne_bytes()].concat()
}

/// The address `bpfkit-maps` gives a program for `key` on `cpu` (0: none).
fn addr(m: &Map, key: &[u8], cpu: usize) -> u64 {
    let g = pin();
    m.lookup_ptr(key, cpu, &g).map_or(0, |v| v.as_ptr() as u64)
}

fn a_of(m: &Map, key: u32) -> u32 {
    let v = m.lookup(&key.to_ne_bytes()).expect("present");
    u32::from_ne_bytes(v[..4].try_into().unwrap())
}

fn run(obj: &mut Object, key: u32, op: u32, cpu: usize, repeat: u32) -> u64 {
    let out = common::run_words(obj, &[key, op], cpu, repeat);
    assert_eq!(out.runs, repeat.max(1));
    out.result.expect("runs without a trap")
}

fn check_engine(engine: Engine, blind: bool) {
    let what = format!("{engine:?}, blind {blind}");
    let loader = Loader::new().possible_cpus(CPUS);
    let mut obj = common::load(loader, engine, blind, FIXTURE);
    let (flows, lru, routes, pch, copies) = (
        map(&obj, "flows"),
        map(&obj, "lru"),
        map(&obj, "routes"),
        map(&obj, "pch"),
        map(&obj, "copies"),
    );
    let any = update_flags::ANY;
    for k in 1..=2u32 {
        flows
            .update(&k.to_ne_bytes(), &val(10 * k, 0), any)
            .unwrap();
        lru.update(&k.to_ne_bytes(), &val(20 * k, 0), any).unwrap();
    }
    // 10.1.0.0/16 and 10.1.2.0/24 (addresses in network order).
    let net = |p: u32, a: [u8; 4]| [p.to_ne_bytes(), a].concat();
    routes
        .update(&net(16, [10, 1, 0, 0]), &val(16, 0), any)
        .unwrap();
    routes
        .update(&net(24, [10, 1, 2, 0]), &val(24, 0), any)
        .unwrap();
    pch.update(&1u32.to_ne_bytes(), &[val(5, 0), val(6, 0)].concat(), any)
        .unwrap();

    // Hits: the element's own pointer (looked up twice in the run), a += 1
    // per run through it, the value copied by a helper reading it.
    for (m, op, base) in [(&flows, 0, 10), (&lru, 1, 20)] {
        let want = addr(m, &1u32.to_ne_bytes(), 0);
        assert_ne!(want, 0);
        assert_eq!(run(&mut obj, 1, op, 0, 1), want, "{what}, op {op}");
        assert_eq!(run(&mut obj, 1, op, 0, 3), want, "{what}, op {op}");
        assert_eq!(a_of(m, 1), base + 4, "{what}, op {op}");
        assert_eq!(a_of(&copies, 1), base + 4, "{what}, op {op}");
        // A miss.
        assert_eq!(run(&mut obj, 9, op, 0, 2), 0, "{what}, op {op}");
    }
    // The longest prefix, then a miss.
    let a = u32::from_ne_bytes([10, 1, 2, 3]);
    let want = addr(&routes, &net(32, [10, 1, 2, 3]), 0);
    assert_eq!(want, addr(&routes, &net(24, [10, 1, 2, 0]), 0));
    assert_eq!(run(&mut obj, a, 2, 0, 2), want, "{what}, lpm");
    let b = u32::from_ne_bytes([10, 1, 9, 9]);
    assert_ne!(addr(&routes, &net(32, [10, 1, 9, 9]), 0), want);
    assert_eq!(
        run(&mut obj, b, 2, 0, 1),
        addr(&routes, &net(32, [10, 1, 9, 9]), 0),
        "{what}, lpm /16"
    );
    let c = u32::from_ne_bytes([192, 168, 0, 1]);
    assert_eq!(run(&mut obj, c, 2, 0, 1), 0, "{what}, lpm miss");
    // Per-CPU: the run's CPU's slot.
    for cpu in 0..CPUS {
        let want = addr(&pch, &1u32.to_ne_bytes(), cpu);
        assert_eq!(run(&mut obj, 1, 3, cpu, cpu as u32 + 1), want, "{what}");
    }
    let slots = pch.lookup(&1u32.to_ne_bytes()).unwrap();
    assert_eq!(slots, [val(6, 0), val(8, 0)].concat(), "{what}, per-CPU");
    // Update between lookups, then delete: old a 20, new 77, gone after.
    assert_eq!(
        run(&mut obj, 2, 4, 0, 1),
        1_020_077,
        "{what}, update/delete"
    );
    assert!(flows.lookup(&2u32.to_ne_bytes()).is_err(), "{what}");
    assert_eq!(run(&mut obj, 2, 4, 0, 1), 0, "{what}, deleted");
    if engine == Engine::Jit {
        assert!(obj.runs_unchecked(0), "{what}");
    }
}

#[test]
fn hash_family_lookups_match_the_maps_on_every_engine() {
    for (engine, blind) in common::engines() {
        check_engine(engine, blind);
    }
}
