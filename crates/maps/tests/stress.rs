//! Several threads run "programs" (lookups, in-place atomics, updates and
//! deletes from the program side) on shared maps while others change them
//! from the control side: no increment may be lost, no value may be seen
//! torn or freed, and nothing may crash or deadlock.

use bpfkit_abi::update_flags::{ANY, EXIST, NOEXIST};
use bpfkit_maps::{pin, Map, MapDef, MapOptions, MapType};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: usize = 4;
const RUNS: u64 = 100_000;

fn k(i: u32) -> [u8; 4] {
    i.to_ne_bytes()
}

fn u64_at(v: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(v[off..off + 8].try_into().unwrap())
}

#[test]
fn array_atomics_lose_no_increment() {
    let opts = MapOptions::new().possible_cpus(THREADS);
    let map = Arc::new(Map::new(MapDef::new(MapType::Array, 4, 16, 4), &opts).unwrap());
    let start = Arc::new(Barrier::new(THREADS + 1));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (map, start) = (map.clone(), start.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            for r in 0..RUNS {
                let g = pin();
                let v = map.lookup_ptr(&k((r % 4) as u32), t, &g).unwrap();
                v.atomic_u64(0).unwrap().fetch_add(1, Ordering::Relaxed);
                v.atomic_u64(8).unwrap().fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    // The control side reads concurrently.
    let reader = {
        let (map, start) = (map.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            for _ in 0..2000 {
                for (_, v) in map.entries().unwrap() {
                    assert!(u64_at(&v, 0) <= THREADS as u64 * RUNS);
                }
            }
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    reader.join().unwrap();
    let (mut a, mut b) = (0, 0);
    for (_, v) in map.entries().unwrap() {
        a += u64_at(&v, 0);
        b += u64_at(&v, 8);
    }
    assert_eq!((a, b), (THREADS as u64 * RUNS, 2 * THREADS as u64 * RUNS));
}

#[test]
fn hash_under_churn() {
    let opts = MapOptions::new().possible_cpus(THREADS);
    // Keys 0..8 are counters nobody deletes; keys 100.. churn.
    let map = Arc::new(Map::new(MapDef::new(MapType::Hash, 4, 16, 64), &opts).unwrap());
    let pmap = Arc::new(Map::new(MapDef::new(MapType::PercpuHash, 4, 8, 8), &opts).unwrap());
    for i in 0..8 {
        map.update(&k(i), &[0; 16], NOEXIST).unwrap();
        pmap.update(&k(i), &[0; 8 * THREADS], NOEXIST).unwrap();
    }
    let churn_value = |key: u32| {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&(key as u64 * 1000).to_ne_bytes());
        v
    };
    let start = Arc::new(Barrier::new(2 * THREADS));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (map, pmap, start) = (map.clone(), pmap.clone(), start.clone());
        // A "program" thread on CPU t.
        handles.push(thread::spawn(move || {
            start.wait();
            let mut x = t as u32 * 7919 + 1;
            for r in 0..RUNS {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let g = pin();
                let c = map.lookup_ptr(&k((r % 8) as u32), t, &g).unwrap();
                c.atomic_u64(0).unwrap().fetch_add(1, Ordering::Relaxed);
                let p = pmap.lookup_ptr(&k((r % 8) as u32), t, &g).unwrap();
                // Only this thread writes this CPU's slot.
                let old = p.atomic_u64(0).unwrap().load(Ordering::Relaxed);
                p.atomic_u64(0).unwrap().store(old + 1, Ordering::Relaxed);
                let key = 100 + x % 40;
                if let Some(v) = map.lookup_ptr(&k(key), t, &g) {
                    // Whatever happens to the element meanwhile, its
                    // memory stays this element's.
                    let a = v.atomic_u64(0).unwrap();
                    v.atomic_u64(8).unwrap().fetch_add(1, Ordering::Relaxed);
                    thread::yield_now();
                    assert_eq!(a.load(Ordering::Relaxed), key as u64 * 1000);
                }
                match x % 4 {
                    0 => {
                        let _ = map.prog_update(&k(key), &churn_value(key), ANY, t);
                    }
                    1 => {
                        let _ = map.prog_delete(&k(key));
                    }
                    _ => {}
                }
            }
        }));
    }
    for t in 0..THREADS {
        let (map, start) = (map.clone(), start.clone());
        // Control-side threads.
        handles.push(thread::spawn(move || {
            start.wait();
            let mut x = t as u32 * 104_729 + 3;
            for _ in 0..RUNS / 4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let key = 100 + x % 40;
                let _ = match x % 5 {
                    0 => map.update(&k(key), &churn_value(key), NOEXIST),
                    1 => map.update(&k(key), &churn_value(key), EXIST),
                    2 => map.delete(&k(key)),
                    3 => map.lookup_and_delete(&k(key)).map(drop),
                    _ => map
                        .lookup(&k(key))
                        .map(|v| assert_eq!(v[..8], churn_value(key)[..8])),
                };
                if x.is_multiple_of(64) {
                    for (key, v) in map.entries().unwrap() {
                        let key = u32::from_ne_bytes(key[..4].try_into().unwrap());
                        if key >= 100 {
                            assert_eq!(v[..8], churn_value(key)[..8]);
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let total: u64 = (0..8).map(|i| u64_at(&map.lookup(&k(i)).unwrap(), 0)).sum();
    assert_eq!(total, THREADS as u64 * RUNS);
    for t in 0..THREADS {
        let total: u64 = (0..8)
            .map(|i| u64_at(&pmap.lookup(&k(i)).unwrap(), 8 * t))
            .sum();
        assert_eq!(total, RUNS, "CPU {t}");
    }
    assert!(map.len() <= 64);
}

#[test]
fn lru_under_concurrency_stays_bounded() {
    let opts = MapOptions::new().possible_cpus(THREADS);
    let map = Arc::new(Map::new(MapDef::new(MapType::LruHash, 4, 8, 32), &opts).unwrap());
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let map = map.clone();
        handles.push(thread::spawn(move || {
            for i in 0..RUNS as u32 {
                let key = (i * 31 + t as u32 * 17) % 200;
                let g = pin();
                match map.lookup_ptr(&k(key), t, &g) {
                    Some(v) => {
                        v.atomic_u64(0).unwrap().fetch_add(1, Ordering::Relaxed);
                    }
                    None => map
                        .prog_update(&k(key), &1u64.to_ne_bytes(), ANY, t)
                        .unwrap(),
                }
                if i % 7 == 0 {
                    let _ = map.delete(&k((key + 1) % 200));
                }
                assert!(map.len() <= 32);
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(map.len() <= 32);
    assert_eq!(map.entries().unwrap().len(), map.len());
}

#[test]
fn ringbuf_multi_producer() {
    let opts = MapOptions::new().possible_cpus(THREADS);
    let map = Arc::new(Map::new(MapDef::new(MapType::Ringbuf, 0, 0, 1 << 14), &opts).unwrap());
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let map = map.clone();
        handles.push(thread::spawn(move || {
            let mut sent = 0u64;
            for i in 0..RUNS {
                let g = pin();
                let len = 1 + (i as usize * 7 + t) % 60;
                if let Some(r) = map.ringbuf_reserve(len as u64, 0, &g) {
                    r.write_at(0, &vec![t as u8; len]).unwrap();
                    if i % 5 == 0 {
                        map.ringbuf_discard(r.addr(), 0).unwrap();
                    } else {
                        map.ringbuf_submit(r.addr(), 0).unwrap();
                        sent += 1;
                    }
                }
            }
            sent
        }));
    }
    let mut got = 0u64;
    let check = |r: &[u8]| assert!(r.iter().all(|&b| b == r[0]) && !r.is_empty());
    while handles.iter().any(|h| !h.is_finished()) {
        got += map.ringbuf_consume(check).unwrap() as u64;
    }
    let sent: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    got += map.ringbuf_consume(check).unwrap() as u64;
    assert_eq!(got, sent);
}

#[test]
fn inner_maps_replaced_under_running_programs() {
    use bpfkit_maps::MapRegistry;
    let reg = MapRegistry::new(MapOptions::new().possible_cpus(THREADS));
    let tmpl = MapDef::new(MapType::Hash, 4, 8, 4);
    let (_, outer) = reg
        .create(MapDef::new(MapType::ArrayOfMaps, 4, 4, 2).with_inner(tmpl.clone()))
        .unwrap();
    let fresh = |tag: u64| {
        let (id, m) = reg.create(tmpl.clone()).unwrap();
        m.update(&k(0), &tag.to_ne_bytes(), ANY).unwrap();
        id
    };
    for slot in 0..2 {
        outer
            .update(&k(slot), &fresh(1000).0.to_ne_bytes(), ANY)
            .unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (outer, stop, total) = (outer.clone(), stop.clone(), total.clone());
        handles.push(thread::spawn(move || {
            let mut runs = 0u32;
            while !stop.load(Ordering::Relaxed) {
                runs += 1;
                let g = pin();
                let Some(inner) = outer.inner_map(&k(runs % 2), &g) else {
                    continue;
                };
                // The inner map may be swapped out and dropped by every
                // other owner now; it stays usable for this run.
                let v = inner.lookup_ptr(&k(0), t, &g).unwrap();
                let tag = v.atomic_u64(0).unwrap().load(Ordering::Relaxed);
                assert!(tag >= 1000, "inner value {tag}");
                let _ = inner.prog_update(&k(1), &tag.to_ne_bytes(), ANY, t);
                thread::yield_now();
                assert!(v.atomic_u64(0).unwrap().load(Ordering::Relaxed) >= 1000);
                total.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = std::time::Instant::now();
    let mut i = 0u64;
    // Replace until the programs have run a while (bounded in time).
    while (i < 2000 || total.load(Ordering::Relaxed) < 20_000) && start.elapsed().as_secs() < 20 {
        let id = fresh(1000 + i);
        let slot = (i % 2) as u32;
        let old = outer.lookup(&k(slot)).unwrap();
        outer.update(&k(slot), &id.0.to_ne_bytes(), ANY).unwrap();
        // Forget the old map everywhere but in running programs.
        let old = u32::from_ne_bytes(old[..4].try_into().unwrap());
        reg.remove(bpfkit_maps::MapId(old));
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert!(total.load(Ordering::Relaxed) >= 20_000);
    assert_eq!(reg.ids().len(), 3);
}
