//! Inline `devmap_hash` lookups through the facade (the JIT's unchecked
//! mode probes the map's entry table itself, from the layout the object's
//! resolver gives, `Imm64Resolver::devhash_map`): the pointer is the entry
//! the maps crate hands out (`Map::dev_value`), the same for the same
//! entry, a new one after an update, NULL for an absent key, also after
//! many inserts and deletes have left tombstones and rebuilt the table; a
//! helper reads the value through it (the entries are a region of every
//! run's memory, `RunState::add_map_regions`); an entry updated by another
//! thread while runs go on never changes under a run. The interpreter and
//! the blinded JIT, which call the helper, agree. Fixture:
//! `tests/inline/devhash_lookup.c` (`max_entries` 8: a table of 16 cells).

mod common;

use bpfkit::{Engine, Loader, Object};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const FIXTURE: &[u8] = include_bytes!("inline/devhash_lookup.o");

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
    let entry = |key: u32| {
        ports
            .dev_value(&key.to_ne_bytes(), &bpfkit_maps::pin())
            .map_or(0, |v| v.addr())
    };
    assert!(ports.devhash_layout().is_some());
    ports
        .update(&1u32.to_ne_bytes(), &7u32.to_ne_bytes(), 0)
        .unwrap();
    ports
        .update(&0x8000_0002u32.to_ne_bytes(), &9u32.to_ne_bytes(), 0)
        .unwrap();
    for key in [0u32, 2, 3, 8, 0x8000_0000, u32::MAX] {
        assert_eq!(run(&mut obj, key, 1), 0, "{engine:?}, key {key:#x}");
    }
    let p1 = run(&mut obj, 1, 1);
    assert!(p1 > 2, "{engine:?}: {p1}");
    assert_eq!(p1, entry(1), "{engine:?}: the maps crate's entry");
    assert_eq!(copied(), 7, "{engine:?}: the helper read through it");
    if engine == Engine::Jit {
        assert!(obj.runs_unchecked(0));
    }
    assert_eq!(run(&mut obj, 1, 1), p1);
    assert_eq!(run(&mut obj, 1, 5), p1);
    let p2 = run(&mut obj, 0x8000_0002, 3);
    assert!(p2 > 2 && p2 != p1);
    assert_eq!(copied(), 9);
    // Updated between runs, even with the same value: a new entry.
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
    ports.delete(&1u32.to_ne_bytes()).unwrap();
    assert_eq!(run(&mut obj, 1, 1), 0);
    assert_eq!(run(&mut obj, 0x8000_0002, 1), p2);
    ports.delete(&0x8000_0002u32.to_ne_bytes()).unwrap();

    // Churn: keys come and go (the map full at times), leaving tombstones
    // that probes pass and tables rebuilt without them; after every change
    // every key of the window reads what the maps crate gives.
    let mut present = std::collections::BTreeSet::new();
    let mut x = 0x2545_f491u32;
    for round in 0..300u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let key = x % 24 * 0x0100_0001;
        if present.contains(&key) && x & 0x300 != 0 {
            ports.delete(&key.to_ne_bytes()).unwrap();
            present.remove(&key);
        } else if present.len() < 8 || present.contains(&key) {
            ports
                .update(&key.to_ne_bytes(), &(round | 1).to_ne_bytes(), 0)
                .unwrap();
            present.insert(key);
        }
        if round % 3 == 0 || round > 280 {
            for k in 0..24u32 {
                let k = k * 0x0100_0001;
                let got = run(&mut obj, k, 1);
                assert_eq!(got, entry(k), "{engine:?}: round {round}, key {k:#x}");
                assert_eq!(got != 0, present.contains(&k));
            }
        }
    }
}

#[test]
fn inline_devhash_lookups_match_the_maps_and_reach_helpers() {
    for (engine, blind) in common::engines() {
        check_engine(engine, blind);
    }
}

/// Another thread updates the entry all the time (and inserts and deletes
/// a second key, rebuilding the table now and then) while batches run: a
/// run's entry never changes under it, whichever engine.
#[test]
fn devhash_entries_updated_during_runs_stay_put_for_the_run() {
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
                    let other = 2 + n % 5;
                    let _ = ports.update(&other.to_ne_bytes(), &3u32.to_ne_bytes(), 0);
                    let _ = ports.delete(&other.to_ne_bytes());
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
        let (start, t) = (done.load(Ordering::Relaxed), Instant::now());
        let mut batches = 0;
        while batches < 50
            || (done.load(Ordering::Relaxed) - start < 5000 && t.elapsed().as_secs() < 10)
        {
            let r = run(&mut obj, 1, 64);
            assert_ne!(r, 1, "{engine:?}: an entry changed under a run");
            assert_ne!(r, 0, "{engine:?}: key 1 is never absent");
            batches += 1;
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            done.load(Ordering::Relaxed) > start,
            "{engine:?}: no update"
        );
        if engine == Engine::Jit {
            assert!(obj.runs_unchecked(0));
        }
    }
}
