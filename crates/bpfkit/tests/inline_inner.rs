//! Lookups in inner arrays of a map of maps through the facade (the JIT's
//! unchecked mode reads the array's layout from the header at the map
//! pointer the outer lookup returned, `Imm64Resolver::map_headers`): the
//! pointer is the one the maps crate hands out, writes through it show in
//! the map, and a helper reads through it, for an inner array of the
//! object and for one the control side created and put in the outer map
//! between runs (its storage becomes a region of the run's memory when
//! the outer lookup hands it out); a replaced or emptied slot is seen by
//! the next run, an index past the end is NULL. The interpreter, which
//! always calls the helper, agrees. Fixture: `tests/inline/inner_lookup.c`.

mod common;

use bpfkit::{Engine, Loader, Object};
use bpfkit_abi::{MapDef, MapType};

const FIXTURE: &[u8] = include_bytes!("inline/inner_lookup.o");

/// Runs `lookup` on outer slot `slot`, inner key `key`, `repeat` times.
fn run(obj: &mut Object, slot: u32, key: u32, repeat: u32) -> u64 {
    common::result(obj, &[slot, key], repeat)
}

fn u64_at(m: &bpfkit_maps::Map, key: u32) -> u64 {
    u64::from_ne_bytes(
        m.lookup(&key.to_ne_bytes()).unwrap()[..8]
            .try_into()
            .unwrap(),
    )
}

fn check_engine(engine: Engine, blind: bool) {
    let mut obj = common::load(Loader::new(), engine, blind, FIXTURE);
    let in0 = obj.map("in0").unwrap().map.clone();
    let outer = obj.map("outer").unwrap().map.clone();
    let copies = obj.map("copies").unwrap().map.clone();
    let base0 = in0.array_storage().unwrap().addr();
    // Slot 0 (the object's in0): in range, past the end.
    assert_eq!(run(&mut obj, 0, 2, 1), base0 + 16, "{engine:?}");
    assert_eq!(run(&mut obj, 0, 3, 4), base0 + 24, "{engine:?}");
    for key in [4u32, 5, 0x8000_0000, u32::MAX] {
        assert_eq!(run(&mut obj, 0, key, 1), 1, "{engine:?}, key {key:#x}");
    }
    if engine == Engine::Jit {
        assert!(obj.runs_unchecked(0));
    }
    assert_eq!((u64_at(&in0, 2), u64_at(&in0, 3)), (1, 4), "{engine:?}");
    assert_eq!(
        u64_at(&copies, 0),
        4,
        "{engine:?}: the helper read through the pointer"
    );
    // Slot 1 is empty; then the control side puts an array of its own
    // there (not one of the object's maps), and later another.
    assert_eq!(run(&mut obj, 1, 0, 1), 0, "{engine:?}");
    let mut bases = Vec::new();
    let mut extras = Vec::new();
    for round in 0..2u64 {
        let (id, extra) = obj
            .registry()
            .create(MapDef::new(MapType::Array, 4, 8, 4))
            .unwrap();
        outer
            .update(&1u32.to_ne_bytes(), &id.0.to_ne_bytes(), 0)
            .unwrap();
        let base = extra.array_storage().unwrap().addr();
        assert_eq!(
            run(&mut obj, 1, 3, 1),
            base + 24,
            "{engine:?}, round {round}"
        );
        assert_eq!(
            run(&mut obj, 1, 1, 5),
            base + 8,
            "{engine:?}, round {round}"
        );
        assert_eq!(run(&mut obj, 1, 4, 1), 1, "{engine:?}, round {round}");
        assert_eq!((u64_at(&extra, 3), u64_at(&extra, 1)), (1, 5));
        assert_eq!(
            u64_at(&copies, 0),
            5,
            "{engine:?}: read through the inner pointer"
        );
        bases.push(base);
        extras.push(extra);
    }
    assert_ne!(bases[0], bases[1]);
    // Emptied: NULL at the next run; slot 0 unchanged.
    outer.delete(&1u32.to_ne_bytes()).unwrap();
    assert_eq!(run(&mut obj, 1, 1, 1), 0, "{engine:?}");
    assert_eq!(run(&mut obj, 0, 2, 1), base0 + 16, "{engine:?}");
}

#[test]
fn inner_array_lookups_match_the_maps_and_reach_helpers() {
    for (engine, blind) in common::engines() {
        check_engine(engine, blind);
    }
}
