//! Inline devmap lookups through the facade (the JIT's unchecked mode loads
//! the slot's word itself, from the layout the object's resolver gives,
//! `Imm64Resolver::slot_map`): the pointer is the entry the maps crate
//! hands out (`Map::dev_value`), the same for the same entry, a new one
//! after an update, NULL for an empty slot or an index past the end; a
//! helper reads the value through it (the entries are a region of every
//! run's memory, `RunState::add_map_regions`); an entry updated by another
//! thread while runs go on never changes under a run. The interpreter,
//! which always calls the helper, agrees. Fixture:
//! `tests/inline/devmap_lookup.c`.

mod common;

use bpfkit::{Engine, Loader, Object};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const FIXTURE: &[u8] = include_bytes!("inline/devmap_lookup.o");

/// Runs `lookup` with the key `key` in its context, `repeat` times.
fn run(obj: &mut Object, key: u32, repeat: u32) -> u64 {
    common::result(obj, &[key], repeat)
}

fn load(engine: Engine, blind: bool) -> Object {
    common::load(Loader::new(), engine, blind, FIXTURE)
}

fn check_engine(engine: Engine, blind: bool) {
    let mut obj = load(engine, blind);
    let ports = obj.map("ports").unwrap().map.clone();
    let copies = obj.map("copies").unwrap().map.clone();
    let copied = || {
        u32::from_ne_bytes(
            copies.lookup(&0u32.to_ne_bytes()).unwrap()[..4]
                .try_into()
                .unwrap(),
        )
    };
    let entry = |key: u32| ports.devmap_entry_addr(key, &bpfkit_maps::pin());
    ports
        .update(&1u32.to_ne_bytes(), &7u32.to_ne_bytes(), 0)
        .unwrap();
    ports
        .update(&2u32.to_ne_bytes(), &9u32.to_ne_bytes(), 0)
        .unwrap();
    // Empty, past the end, huge: NULL.
    for key in [0u32, 3, 4, 5, 0x8000_0000, u32::MAX] {
        assert_eq!(run(&mut obj, key, 1), 0, "{engine:?}, key {key:#x}");
    }
    let p1 = run(&mut obj, 1, 1);
    assert!(p1 > 2, "{engine:?}: {p1}");
    assert_eq!(p1, entry(1), "{engine:?}: the maps crate's entry");
    assert_eq!(
        copied(),
        7,
        "{engine:?}: the helper read through the pointer"
    );
    if engine == Engine::Jit {
        assert!(obj.runs_unchecked(0));
    }
    // The same entry in later runs and in a batch: the same pointer.
    assert_eq!(run(&mut obj, 1, 1), p1);
    assert_eq!(run(&mut obj, 1, 5), p1);
    let p2 = run(&mut obj, 2, 3);
    assert!(p2 > 2 && p2 != p1);
    assert_eq!(copied(), 9);
    // Updated between runs, even with the same value: a new entry, seen
    // by the next run.
    ports
        .update(&1u32.to_ne_bytes(), &7u32.to_ne_bytes(), 0)
        .unwrap();
    let p1b = run(&mut obj, 1, 1);
    assert!(p1b > 2 && p1b != p1 && p1b == entry(1), "{engine:?}");
    ports
        .update(&1u32.to_ne_bytes(), &11u32.to_ne_bytes(), 0)
        .unwrap();
    let p1c = run(&mut obj, 1, 2);
    assert!(p1c > 2 && p1c != p1b);
    assert_eq!(copied(), 11);
    // Deleted: NULL.
    ports.delete(&1u32.to_ne_bytes()).unwrap();
    assert_eq!(run(&mut obj, 1, 1), 0);
    assert_eq!(run(&mut obj, 2, 1), p2);
}

#[test]
fn inline_devmap_lookups_match_the_maps_and_reach_helpers() {
    for (engine, blind) in common::engines() {
        check_engine(engine, blind);
    }
}

/// Another thread refills the entry all the time while batches run: a
/// run's entry never changes under it (its value read before and after a
/// helper copied it agree, code 1 never comes back), whichever engine.
#[test]
fn entries_updated_during_runs_stay_put_for_the_run() {
    let mut engines = vec![Engine::Interp];
    if bpfkit_jit::is_supported() {
        engines.push(Engine::Jit);
    }
    for engine in engines {
        let mut obj = load(engine, false);
        let ports = obj.map("ports").unwrap().map.clone();
        ports
            .update(&1u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let writer = {
            let (ports, stop, done) = (ports.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    // ENOMEM while runs hold every spare entry is allowed.
                    if ports
                        .update(&1u32.to_ne_bytes(), &(n | 1).to_ne_bytes(), 0)
                        .is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        while done.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        // Until the writer made a few thousand updates while batches ran
        // (a time limit for a starved writer).
        let (start, t) = (done.load(Ordering::Relaxed), Instant::now());
        let mut batches = 0;
        while batches < 50
            || (done.load(Ordering::Relaxed) - start < 5000 && t.elapsed().as_secs() < 10)
        {
            let r = run(&mut obj, 1, 64);
            assert_ne!(r, 1, "{engine:?}: an entry changed under a run");
            assert_ne!(r, 0, "{engine:?}: slot 1 is never empty");
            batches += 1;
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            done.load(Ordering::Relaxed) > start,
            "{engine:?}: no update during the runs"
        );
        if engine == Engine::Jit {
            assert!(obj.runs_unchecked(0));
        }
    }
}
