//! Inline array lookups through the facade (the JIT's unchecked mode
//! computes `bpf_map_lookup_elem` on a plain array itself, from the layout
//! the object's resolver gives): the pointer is the one the maps crate
//! hands out, writes through it show in the map dump, and helpers accept
//! it as they accept the helper's (the array storage is a region of every
//! run's memory, `RunState::add_map_regions`), in single runs and repeated
//! batches; the interpreter, which always calls the helper, agrees.
//! Fixture: `tests/inline/array_lookup.c`.

mod common;

use bpfkit::{Engine, Loader, Object};

const FIXTURE: &[u8] = include_bytes!("inline/array_lookup.o");

/// Runs `lookup` with the key `key` in its context, `repeat` times.
fn run(obj: &mut Object, key: u32, repeat: u32) -> u64 {
    common::result(obj, &[key], repeat)
}

/// `struct val` of the fixture: (a, b, c).
fn val(bytes: &[u8]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_ne_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    (w(0), w(1), w(2))
}

fn check_engine(engine: Engine) {
    let mut obj = common::load(Loader::new(), engine, false, FIXTURE);
    let arr = obj.map("arr").unwrap().map.clone();
    let base = arr.array_storage().expect("a plain array").addr();
    // In range (the boundary included), out of range, huge.
    for key in [0u32, 1, 4, 5, 6, 0x8000_0000, u32::MAX] {
        let want = if key < 5 { base + 16 * key as u64 } else { 0 };
        assert_eq!(run(&mut obj, key, 1), want, "{engine:?}, key {key:#x}");
    }
    if engine == Engine::Jit {
        assert!(obj.runs_unchecked(0));
    }
    // A batch: the storage stays registered for every run of it.
    assert_eq!(run(&mut obj, 3, 4), base + 48, "{engine:?}");
    let copies = obj.map("copies").unwrap().map.clone();
    for key in 0..5u32 {
        let v = val(&arr.lookup(&key.to_ne_bytes()).unwrap());
        let c = copies.lookup(&key.to_ne_bytes()).ok().map(|c| val(&c));
        if key == 2 {
            // Never run.
            assert_eq!((v, c), ((0, 0, 0), None), "{engine:?}");
            continue;
        }
        let runs = if key == 3 { 4 } else { 1 };
        assert_eq!(v, (runs, 0, 3 * key + 1), "{engine:?}, arr[{key}]");
        // The helper read the value through the lookup's pointer.
        assert_eq!(c, Some(v), "{engine:?}, copies[{key}]");
    }
    // The per-CPU array (inlined too on the JIT) counted every run that found its
    // key, on CPU 0.
    let pcpu = obj.map("pcpu").unwrap().map.clone();
    let slots = pcpu.lookup(&0u32.to_ne_bytes()).unwrap();
    assert_eq!(u64::from_ne_bytes(slots[..8].try_into().unwrap()), 7);
}

#[test]
fn inline_lookups_match_the_maps_and_reach_helpers() {
    check_engine(Engine::Interp);
    if bpfkit_jit::is_supported() {
        check_engine(Engine::Jit);
    }
}

#[test]
fn blinded_inline_lookups_too() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut obj = Loader::new()
        .engine(Engine::Jit)
        .jit_blind(true)
        .load(FIXTURE)
        .unwrap();
    obj.check(0).unwrap();
    let base = obj.map("arr").unwrap().map.array_storage().unwrap().addr();
    assert_eq!(run(&mut obj, 2, 1), base + 32);
    assert_eq!(run(&mut obj, 5, 1), 0);
    assert!(obj.runs_unchecked(0));
}
