//! Unit tests: the kernel's semantics and errors, per map type.

use super::*;
use bpfkit_abi::update_flags::{ANY, EXIST, LOCK, NOEXIST};
use std::sync::atomic::Ordering;

fn opts() -> MapOptions {
    MapOptions::new().possible_cpus(4)
}

fn mk(t: MapType, k: u32, v: u32, n: u32) -> Map {
    Map::new(MapDef::new(t, k, v, n), &opts()).unwrap()
}

fn mk_err(def: MapDef) -> i32 {
    Map::new(def, &opts()).unwrap_err().errno()
}

fn k(i: u32) -> [u8; 4] {
    i.to_ne_bytes()
}

fn v8(x: u64) -> [u8; 8] {
    x.to_ne_bytes()
}

const EINVAL: i32 = 22;
const E2BIG: i32 = 7;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;

fn errno<T: std::fmt::Debug>(r: Result<T, MapError>) -> i32 {
    r.unwrap_err().errno()
}

#[test]
fn maps_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Map>();
    check::<MapRegistry>();
}

#[test]
fn array_create_checks() {
    use MapType::*;
    assert_eq!(mk_err(MapDef::new(Array, 8, 4, 1)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Array, 4, 0, 1)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Array, 4, 4, 0)), EINVAL);
    assert_eq!(
        mk_err(MapDef::new(Array, 4, 4, 1).with_flags(map_flags::NO_PREALLOC)),
        EINVAL
    );
    assert_eq!(
        mk_err(
            MapDef::new(Array, 4, 4, 1).with_flags(map_flags::RDONLY_PROG | map_flags::WRONLY_PROG)
        ),
        EINVAL
    );
    assert_eq!(
        mk_err(MapDef::new(PercpuArray, 4, 4, 1).with_flags(map_flags::MMAPABLE)),
        EINVAL
    );
    assert_eq!(mk_err(MapDef::new(PercpuArray, 4, 40000, 1)), E2BIG);
    assert_eq!(mk_err(MapDef::new(Array, 4, 1 << 31, 1)), E2BIG);
    assert_eq!(mk_err(MapDef::new(ProgArray, 4, 8, 1)), EINVAL);
    assert_eq!(mk_err(MapDef::new(StackTrace, 4, 8, 1)), EINVAL);
    assert!(Map::new(
        MapDef::new(Array, 4, 4, 1).with_flags(map_flags::MMAPABLE),
        &opts()
    )
    .is_ok());
}

#[test]
fn array_semantics() {
    let m = mk(MapType::Array, 4, 12, 3);
    assert_eq!(m.lookup(&k(1)).unwrap(), vec![0; 12]);
    m.update(&k(1), &[7; 12], ANY).unwrap();
    m.update(&k(1), &[8; 12], EXIST).unwrap();
    assert_eq!(m.lookup(&k(1)).unwrap(), vec![8; 12]);
    assert_eq!(errno(m.update(&k(1), &[9; 12], NOEXIST)), EEXIST);
    assert_eq!(errno(m.update(&k(3), &[9; 12], ANY)), E2BIG);
    assert_eq!(errno(m.update(&k(0), &[9; 12], 3)), EINVAL);
    assert_eq!(errno(m.update(&k(0), &[9; 12], LOCK)), EINVAL);
    assert_eq!(errno(m.lookup(&k(3))), ENOENT);
    assert_eq!(errno(m.delete(&k(0))), EINVAL);
    assert_eq!(errno(m.update(&k(0), &[9; 11], ANY)), EINVAL);
    assert_eq!(errno(m.lookup(&[0; 3])), EINVAL);
    assert_eq!(m.get_next_key(None).unwrap(), k(0));
    assert_eq!(m.get_next_key(Some(&k(0))).unwrap(), k(1));
    assert_eq!(errno(m.get_next_key(Some(&k(2)))), ENOENT);
    assert_eq!(m.get_next_key(Some(&k(77))).unwrap(), k(0));
    assert_eq!(m.entries().unwrap().len(), 3);
    // Program side: in place, aligned, atomics.
    let g = pin();
    let p = m.lookup_ptr(&k(2), 0, &g).unwrap();
    assert_eq!((p.len(), p.addr() % 8), (12, 0));
    p.atomic_u64(0).unwrap().fetch_add(5, Ordering::SeqCst);
    assert!(p.atomic_u64(8).is_none());
    assert!(m.lookup_ptr(&k(3), 0, &g).is_none());
    assert!(m.lookup_ptr(&k(0), 4, &g).is_none());
    drop(g);
    assert_eq!(m.lookup(&k(2)).unwrap()[..8], v8(5));
    assert_eq!(errno(m.prog_update(&k(0), &[1; 12], NOEXIST, 0)), EEXIST);
    m.prog_update(&k(0), &[1; 12], ANY, 0).unwrap();
    assert_eq!(m.lookup(&k(0)).unwrap(), vec![1; 12]);
}

#[test]
fn percpu_array_slots() {
    let m = mk(MapType::PercpuArray, 4, 4, 2);
    assert_eq!(m.value_buf_len(), 32);
    let mut all = Vec::new();
    for c in 0..4u8 {
        all.extend_from_slice(&[c, c, c, c, 0xee, 0xee, 0xee, 0xee]);
    }
    m.update(&k(1), &all, ANY).unwrap();
    // The kernel copies whole 8-byte slots, padding included.
    assert_eq!(m.lookup(&k(1)).unwrap(), all);
    let g = pin();
    let p2 = m.lookup_ptr(&k(1), 2, &g).unwrap();
    assert_eq!(p2.to_vec(), vec![2; 4]);
    p2.write_at(0, &[9, 9, 9, 9]).unwrap();
    drop(g);
    m.prog_update(&k(0), &[5; 4], ANY, 3).unwrap();
    let v = m.lookup(&k(1)).unwrap();
    assert_eq!(&v[16..20], &[9; 4]);
    assert_eq!(&v[..4], &[0; 4]);
    assert_eq!(&m.lookup(&k(0)).unwrap()[24..28], &[5; 4]);
    assert_eq!(errno(m.prog_update(&k(0), &[5; 4], ANY, 4)), EINVAL);
}

#[test]
fn hash_create_checks() {
    use MapType::*;
    assert_eq!(mk_err(MapDef::new(Hash, 0, 4, 1)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Hash, 4, 0, 1)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Hash, 4, 4, 0)), EINVAL);
    assert_eq!(
        mk_err(MapDef::new(Hash, 4, KMALLOC_MAX_SIZE - 52, 1)),
        E2BIG
    );
    assert!(Map::new(MapDef::new(Hash, 4, KMALLOC_MAX_SIZE - 53, 1), &opts()).is_ok());
    assert!(Map::new(MapDef::new(Hash, 513, 4, 1), &opts()).is_ok());
    assert_eq!(
        mk_err(MapDef::new(Hash, 4, 4, 1).with_flags(map_flags::MMAPABLE)),
        EINVAL
    );
    assert_eq!(
        mk_err(MapDef::new(Hash, 4, 4, 1).with_flags(map_flags::NO_COMMON_LRU)),
        EINVAL
    );
    assert_eq!(
        mk_err(MapDef::new(LruHash, 4, 4, 1).with_flags(map_flags::NO_PREALLOC)),
        ENOTSUPP
    );
    assert_eq!(mk_err(MapDef::new(PercpuHash, 4, 40000, 1)), E2BIG);
    assert_eq!(mk_err(MapDef::new(Hash, 4, 4, 1 << 30)), E2BIG);
    let m = Map::new(
        MapDef::new(LruPercpuHash, 4, 4, 5).with_flags(map_flags::NO_COMMON_LRU),
        &opts(),
    )
    .unwrap();
    assert_eq!(m.def().max_entries, 8);
    assert!(Map::new(
        MapDef::new(Hash, 4, 4, 1).with_flags(map_flags::NO_PREALLOC),
        &opts()
    )
    .is_ok());
}

#[test]
fn hash_semantics() {
    let m = mk(MapType::Hash, 4, 8, 3);
    assert_eq!(errno(m.get_next_key(None)), ENOENT);
    assert_eq!(errno(m.update(&k(1), &v8(1), EXIST)), ENOENT);
    m.update(&k(1), &v8(1), NOEXIST).unwrap();
    assert_eq!(errno(m.update(&k(1), &v8(1), NOEXIST)), EEXIST);
    m.update(&k(1), &v8(2), EXIST).unwrap();
    m.update(&k(2), &v8(2), ANY).unwrap();
    m.update(&k(3), &v8(3), ANY).unwrap();
    assert_eq!(errno(m.update(&k(4), &v8(4), ANY)), E2BIG);
    // Full, but existing keys can still be replaced.
    m.update(&k(3), &v8(33), ANY).unwrap();
    assert_eq!(m.lookup(&k(3)).unwrap(), v8(33));
    assert_eq!(errno(m.update(&k(3), &v8(1), 3)), EINVAL);
    assert_eq!(errno(m.delete(&k(9))), ENOENT);
    // Iteration visits every key once; an absent key restarts.
    let mut seen = Vec::new();
    let mut prev: Option<Vec<u8>> = None;
    while let Ok(n) = m.get_next_key(prev.as_deref()) {
        seen.push(u32_of(&n));
        prev = Some(n);
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3]);
    let first = m.get_next_key(None).unwrap();
    assert_eq!(m.get_next_key(Some(&k(99))).unwrap(), first);
    // Deleting while iterating ("get next, delete previous") empties it.
    let mut prev = m.get_next_key(None).unwrap();
    loop {
        let next = m.get_next_key(Some(&prev));
        m.delete(&prev).unwrap();
        match next {
            Ok(n) => prev = n,
            Err(e) => {
                assert_eq!(e, MapError::NotFound);
                break;
            }
        }
    }
    assert!(m.is_empty());
    assert_eq!(m.lookup_and_delete(&k(1)).unwrap_err(), MapError::NotFound);
    m.update(&k(5), &v8(5), ANY).unwrap();
    assert_eq!(m.lookup_and_delete(&k(5)).unwrap(), v8(5));
    assert!(m.is_empty());
}

#[test]
fn hash_value_pointer_outlives_delete_and_replace() {
    let m = mk(MapType::Hash, 4, 8, 4);
    m.update(&k(1), &v8(10), ANY).unwrap();
    let g = pin();
    let p = m.lookup_ptr(&k(1), 0, &g).unwrap();
    // Replacing makes a new element: the program keeps the old copy.
    m.update(&k(1), &v8(20), ANY).unwrap();
    p.atomic_u64(0).unwrap().fetch_add(1, Ordering::SeqCst);
    assert_eq!(p.to_vec(), v8(11));
    assert_eq!(m.lookup(&k(1)).unwrap(), v8(20));
    m.delete(&k(1)).unwrap();
    // Still valid: retired, not freed, while `g` is pinned.
    for _ in 0..1000 {
        drop(pin());
        m.update(&k(2), &v8(0), ANY).unwrap();
        m.delete(&k(2)).unwrap();
    }
    assert_eq!(p.to_vec(), v8(11));
    drop(g);
}

#[test]
fn percpu_hash_in_place() {
    let m = mk(MapType::PercpuHash, 4, 8, 4);
    m.prog_update(&k(1), &v8(7), ANY, 2).unwrap();
    let v = m.lookup(&k(1)).unwrap();
    assert_eq!(v.len(), 32);
    assert_eq!(&v[16..24], &v8(7));
    assert_eq!(&v[..16], &[0; 16]);
    let g = pin();
    let p = m.lookup_ptr(&k(1), 2, &g).unwrap();
    // Per-CPU updates copy in place: the pointer sees them.
    m.prog_update(&k(1), &v8(8), EXIST, 2).unwrap();
    assert_eq!(p.to_vec(), v8(8));
    let all: Vec<u8> = (0..4u64).flat_map(v8).collect();
    m.update(&k(1), &all, ANY).unwrap();
    assert_eq!(p.to_vec(), v8(2));
    assert_eq!(m.lookup(&k(1)).unwrap(), all);
    drop(g);
}

/// The program-side lookup of a hash gives the element's value (a plain
/// hash: its one slot, whatever the CPU; a per-CPU hash: that CPU's slot),
/// `value_size` bytes long, and nothing for a CPU out of range.
#[test]
fn hashed_lookup_slots_and_lengths() {
    let g = pin();
    for t in [MapType::Hash, MapType::LruHash] {
        let m = mk(t, 4, 12, 4);
        let v: Vec<u8> = (1..=12).collect();
        m.update(&k(1), &v, ANY).unwrap();
        for cpu in [0, 1, 3] {
            let p = m.lookup_hashed(&k(1), cpu, &g).unwrap();
            assert_eq!(p.len(), 12, "{t:?}");
            assert_eq!(p.to_vec(), v, "{t:?} cpu {cpu}");
            assert_eq!(p.as_ptr(), m.lookup_ptr(&k(1), 0, &g).unwrap().as_ptr());
        }
        assert!(m.lookup_hashed(&k(2), 0, &g).is_none());
    }
    for t in [MapType::PercpuHash, MapType::LruPercpuHash] {
        let m = mk(t, 4, 12, 4);
        for cpu in 0..4 {
            let v: Vec<u8> = (0..12).map(|b| b + 16 * cpu as u8).collect();
            let flags = if cpu == 0 { ANY } else { EXIST };
            m.prog_update(&k(1), &v, flags, cpu).unwrap();
        }
        let base = m.lookup_hashed(&k(1), 0, &g).unwrap().as_ptr();
        for cpu in 0..4 {
            let p = m.lookup_hashed(&k(1), cpu, &g).unwrap();
            assert_eq!(p.len(), 12, "{t:?}");
            let v: Vec<u8> = (0..12).map(|b| b + 16 * cpu as u8).collect();
            assert_eq!(p.to_vec(), v, "{t:?} cpu {cpu}");
            // Slots are 16 bytes apart (12 rounded up to words).
            assert_eq!(p.as_ptr() as usize - base as usize, 16 * cpu, "{t:?}");
        }
        assert!(m.lookup_hashed(&k(1), 4, &g).is_none());
    }
}

#[test]
fn lru_evicts_least_recently_used() {
    let m = mk(MapType::LruHash, 4, 8, 4);
    for i in 0..4 {
        m.update(&k(i), &v8(i as u64), ANY).unwrap();
    }
    // Programs touch 0 and 2; 1 is the oldest untouched one.
    let g = pin();
    assert!(m.lookup_ptr(&k(0), 0, &g).is_some());
    assert!(m.lookup_ptr(&k(2), 0, &g).is_some());
    drop(g);
    m.update(&k(10), &v8(10), ANY).unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(errno(m.lookup(&k(1))), ENOENT);
    for i in [0, 2, 3, 10] {
        assert!(m.lookup(&k(i)).is_ok(), "{i}");
    }
    m.update(&k(11), &v8(11), ANY).unwrap();
    assert_eq!(errno(m.lookup(&k(3))), ENOENT);
    // Never E2BIG; NOEXIST/EXIST as for hashes.
    for i in 100..200 {
        m.update(&k(i), &v8(0), NOEXIST).unwrap();
    }
    assert_eq!(m.len(), 4);
    assert_eq!(errno(m.update(&k(5000), &v8(0), EXIST)), ENOENT);
    assert_eq!(errno(m.update(&k(199), &v8(0), NOEXIST)), EEXIST);
    let pm = mk(MapType::LruPercpuHash, 4, 4, 2);
    for i in 0..5 {
        pm.prog_update(&k(i), &[1; 4], ANY, 1).unwrap();
    }
    assert_eq!(pm.len(), 2);
}

#[test]
fn lpm_trie() {
    use MapType::LpmTrie;
    assert_eq!(mk_err(MapDef::new(LpmTrie, 8, 4, 4)), EINVAL); // needs NO_PREALLOC
    let def = |k, v, n| MapDef::new(LpmTrie, k, v, n).with_flags(map_flags::NO_PREALLOC);
    assert_eq!(mk_err(def(4, 4, 4)), EINVAL);
    assert_eq!(mk_err(def(261, 4, 4)), EINVAL);
    assert_eq!(mk_err(def(8, 0, 4)), EINVAL);
    assert_eq!(mk_err(def(8, 4, 0)), EINVAL);
    let m = Map::new(def(8, 4, 4), &opts()).unwrap();
    let key = |len: u32, ip: [u8; 4]| {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&ip);
        v
    };
    m.update(&key(16, [192, 168, 0, 0]), &k(16), ANY).unwrap();
    m.update(&key(24, [192, 168, 1, 0]), &k(24), ANY).unwrap();
    m.update(&key(24, [192, 168, 0, 0]), &k(240), ANY).unwrap();
    m.update(&key(24, [192, 168, 128, 0]), &k(128), ANY)
        .unwrap();
    assert_eq!(
        errno(m.update(&key(8, [10, 0, 0, 0]), &k(8), ANY)),
        28 // ENOSPC
    );
    assert_eq!(errno(m.update(&key(33, [0; 4]), &k(0), ANY)), EINVAL);
    assert_eq!(
        errno(m.update(&key(16, [192, 168, 0, 0]), &k(0), NOEXIST)),
        EEXIST
    );
    assert_eq!(errno(m.update(&key(8, [1, 0, 0, 0]), &k(0), EXIST)), ENOENT);
    // Full, but an existing prefix can be replaced.
    m.update(&key(16, [192, 168, 0, 0]), &k(160), ANY).unwrap();
    assert_eq!(m.lookup(&key(32, [192, 168, 1, 7])).unwrap(), k(24));
    assert_eq!(m.lookup(&key(32, [192, 168, 2, 7])).unwrap(), k(160));
    assert_eq!(m.lookup(&key(20, [192, 168, 1, 7])).unwrap(), k(160));
    assert_eq!(errno(m.lookup(&key(32, [10, 0, 0, 1]))), ENOENT);
    // The kernel's post-order, as in its lpm_trie.c example.
    let order: Vec<Vec<u8>> = m.entries().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        order,
        [
            key(24, [192, 168, 0, 0]),
            key(24, [192, 168, 1, 0]),
            key(24, [192, 168, 128, 0]),
            key(16, [192, 168, 0, 0]),
        ]
    );
    assert_eq!(
        m.get_next_key(Some(&key(8, [1, 2, 3, 4]))).unwrap(),
        order[0]
    );
    assert_eq!(errno(m.delete(&key(8, [192, 0, 0, 0]))), ENOENT);
    m.delete(&key(24, [192, 168, 1, 0])).unwrap();
    assert_eq!(m.lookup(&key(32, [192, 168, 1, 7])).unwrap(), k(160));
    let g = pin();
    let p = m.lookup_ptr(&key(32, [192, 168, 128, 1]), 0, &g).unwrap();
    assert_eq!(p.to_vec(), k(128));
}

/// Longest-prefix match on keys longer than IPv6's (the lookup's bit
/// buffer moves to the heap past 128 bits), with a default route (prefix
/// length 0) and prefixes that end mid-byte.
#[test]
fn lpm_long_keys_and_default_route() {
    let m = Map::new(
        MapDef::new(MapType::LpmTrie, 4 + 32, 4, 8).with_flags(map_flags::NO_PREALLOC),
        &opts(),
    )
    .unwrap();
    let key = |len: u32, fill: u8, last: u8| {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&[fill; 31]);
        v.push(last);
        v
    };
    m.update(&key(0, 0, 0), &k(1), ANY).unwrap();
    m.update(&key(13, 0xab, 0), &k(2), ANY).unwrap();
    m.update(&key(255, 0xab, 0xfe), &k(3), ANY).unwrap();
    m.update(&key(256, 0xab, 0xff), &k(4), ANY).unwrap();
    let g = pin();
    let get = |kk: Vec<u8>| m.lookup_ptr(&kk, 0, &g).map(|v| v.to_vec());
    let k = |i: u32| k(i).to_vec();
    assert_eq!(get(key(256, 0xab, 0xff)), Some(k(4)));
    assert_eq!(get(key(256, 0xab, 0xfe)), Some(k(3)));
    assert_eq!(get(key(256, 0xab, 0x00)), Some(k(2)));
    // 0xaf differs from 0xab in the 14th bit: only the default route.
    assert_eq!(get(key(256, 0xaf, 0xff)), Some(k(1)));
    assert_eq!(get(key(12, 0xab, 0xff)), Some(k(1)));
    assert_eq!(get(key(257, 0xab, 0xff)), None);
    assert_eq!(m.lookup(&key(200, 0xab, 0)).unwrap(), k(2));
}

/// Deleting the last prefix of a length makes lookups fall back to the
/// shorter ones, and iteration skips it; re-adding it restores both.
#[test]
fn lpm_delete_falls_back_to_shorter_prefixes() {
    let m = Map::new(
        MapDef::new(MapType::LpmTrie, 8, 4, 8).with_flags(map_flags::NO_PREALLOC),
        &opts(),
    )
    .unwrap();
    let key = |len: u32, d: [u8; 4]| {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&d);
        v
    };
    m.update(&key(8, [10, 0, 0, 0]), &k(8), ANY).unwrap();
    m.update(&key(24, [10, 1, 2, 0]), &k(24), ANY).unwrap();
    m.update(&key(24, [10, 1, 3, 0]), &k(25), ANY).unwrap();
    m.update(&key(32, [10, 1, 2, 3]), &k(32), ANY).unwrap();
    let probe = key(32, [10, 1, 2, 3]);
    assert_eq!(m.lookup(&probe).unwrap(), k(32));
    m.delete(&key(32, [10, 1, 2, 99])).unwrap_err();
    m.delete(&probe).unwrap();
    assert_eq!(m.lookup(&probe).unwrap(), k(24));
    m.delete(&key(24, [10, 1, 2, 77])).unwrap(); // bits past the prefix
    assert_eq!(m.lookup(&probe).unwrap(), k(8));
    assert_eq!(m.lookup(&key(32, [10, 1, 3, 1])).unwrap(), k(25));
    m.delete(&key(24, [10, 1, 3, 0])).unwrap();
    assert_eq!(m.lookup(&key(32, [10, 1, 3, 1])).unwrap(), k(8));
    assert_eq!(errno(m.lookup(&key(32, [11, 0, 0, 0]))), ENOENT);
    assert_eq!(m.get_next_key(None).unwrap(), key(8, [10, 0, 0, 0]));
    assert_eq!(errno(m.get_next_key(Some(&key(8, [10, 0, 0, 0])))), ENOENT);
    m.update(&key(32, [10, 1, 2, 3]), &k(33), ANY).unwrap();
    assert_eq!(m.lookup(&probe).unwrap(), k(33));
    assert_eq!(m.get_next_key(None).unwrap(), probe);
    assert_eq!(m.get_next_key(Some(&probe)).unwrap(), key(8, [10, 0, 0, 0]));
}

#[test]
fn lpm_keeps_the_bits_past_the_prefix() {
    let m = Map::new(
        MapDef::new(MapType::LpmTrie, 5, 1, 4).with_flags(map_flags::NO_PREALLOC),
        &opts(),
    )
    .unwrap();
    let mut key = 4u32.to_ne_bytes().to_vec();
    key.push(0xab);
    m.update(&key, &[1], ANY).unwrap();
    assert_eq!(m.get_next_key(None).unwrap(), key);
    key[4] = 0xa0;
    assert_eq!(m.lookup(&key).unwrap(), [1]);
}

#[test]
fn queue_and_stack() {
    use MapType::{Queue, Stack};
    assert_eq!(mk_err(MapDef::new(Queue, 4, 4, 2)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Queue, 0, 0, 2)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Stack, 0, 4, 0)), EINVAL);
    for (t, order) in [(Queue, [2u32, 3]), (Stack, [3, 2])] {
        let m = mk(t, 0, 4, 2);
        assert_eq!(errno(m.lookup(&[])), ENOENT);
        m.update(&[], &k(1), ANY).unwrap();
        m.push(&k(2), ANY).unwrap();
        assert_eq!(errno(m.update(&[], &k(3), ANY)), E2BIG);
        assert_eq!(errno(m.update(&[], &k(3), NOEXIST)), EINVAL);
        // BPF_EXIST drops the oldest.
        m.update(&[], &k(3), EXIST).unwrap();
        assert_eq!(m.lookup(&[]).unwrap(), k(order[0]));
        assert_eq!(errno(m.delete(&[])), EINVAL);
        assert_eq!(errno(m.get_next_key(None)), EINVAL);
        let mut out = [0; 4];
        m.peek(&mut out).unwrap();
        assert_eq!(out, k(order[0]));
        assert_eq!(m.lookup_and_delete(&[]).unwrap(), k(order[0]));
        m.pop(&mut out).unwrap();
        assert_eq!(out, k(order[1]));
        assert_eq!(errno(m.pop(&mut out)), ENOENT);
        assert_eq!(errno(m.lookup_and_delete(&[])), ENOENT);
    }
}

#[test]
fn ringbuf() {
    use MapType::Ringbuf;
    assert_eq!(mk_err(MapDef::new(Ringbuf, 0, 0, 4096 * 3)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Ringbuf, 0, 0, 2048)), EINVAL);
    assert_eq!(mk_err(MapDef::new(Ringbuf, 4, 0, 4096)), EINVAL);
    let m = mk(Ringbuf, 0, 0, 4096);
    assert_eq!(m.lookup(&[]).unwrap_err().errno(), ENOTSUPP);
    assert_eq!(m.ringbuf_query(ringbuf::query::RING_SIZE), 4096);
    let g = pin();
    assert!(m.ringbuf_reserve(8, 1, &g).is_none());
    assert!(m.ringbuf_reserve(4096, 0, &g).is_none());
    let a = m.ringbuf_reserve(5, 0, &g).unwrap();
    let b = m.ringbuf_reserve(16, 0, &g).unwrap();
    assert_eq!((a.len(), a.addr() % 8), (5, 0));
    assert_eq!(b.addr() - a.addr(), 16);
    a.write_at(0, b"hello").unwrap();
    b.write_at(0, &[1; 16]).unwrap();
    assert_eq!(m.ringbuf_query(ringbuf::query::AVAIL_DATA), 16 + 24);
    // Submitted out of order: the consumer waits for the first.
    m.ringbuf_submit(b.addr(), 0).unwrap();
    let mut got = Vec::new();
    assert_eq!(m.ringbuf_consume(|r| got.push(r.to_vec())).unwrap(), 0);
    m.ringbuf_discard(a.addr(), 0).unwrap();
    assert!(m.ringbuf_submit(a.addr(), 0).is_err());
    assert_eq!(m.ringbuf_consume(|r| got.push(r.to_vec())).unwrap(), 1);
    assert_eq!(got, vec![vec![1; 16]]);
    assert_eq!(m.ringbuf_query(ringbuf::query::AVAIL_DATA), 0);
    // Fill, wrap around, and fail when full.
    let mut n = 0u32;
    while m.ringbuf_output(&[n as u8; 100], 0).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4095 / 112);
    assert_eq!(errno(m.ringbuf_output(&[0; 100], 0)), 11);
    assert_eq!(errno(m.ringbuf_output(&[0; 1], 8)), EINVAL);
    got.clear();
    m.ringbuf_consume(|r| got.push(r.to_vec())).unwrap();
    assert_eq!(got.len(), n as usize);
    for round in 0..100u32 {
        m.ringbuf_output(&round.to_ne_bytes().repeat(30), 0)
            .unwrap();
        let mut seen = Vec::new();
        m.ringbuf_consume(|r| seen.push(r.to_vec())).unwrap();
        assert_eq!(seen, vec![round.to_ne_bytes().repeat(30)]);
    }
}

#[test]
fn perf_event_array() {
    let m = mk(MapType::PerfEventArray, 4, 4, 4);
    assert_eq!(
        errno(m.perf_event_output(0, BPF_F_CURRENT_CPU, b"x")),
        ENOENT
    );
    m.update(&k(1), &k(99), ANY).unwrap();
    assert_eq!(m.lookup(&k(1)).unwrap_err().errno(), ENOTSUPP);
    m.perf_event_output(1, BPF_F_CURRENT_CPU, b"abc").unwrap();
    m.perf_event_output(3, 1, b"def").unwrap();
    assert_eq!(errno(m.perf_event_output(0, 4, b"x")), E2BIG);
    assert_eq!(errno(m.perf_event_output(0, 1 | (1 << 40), b"x")), EINVAL);
    let d = m.perf_drain(1);
    assert_eq!(d.records, vec![b"abc".to_vec(), b"def".to_vec()]);
    assert!(m.perf_drain(1).records.is_empty());
    let small = Map::new(
        MapDef::new(MapType::PerfEventArray, 4, 4, 1),
        &opts().perf_buffer_bytes(4),
    )
    .unwrap();
    small.update(&k(0), &k(1), ANY).unwrap();
    small.perf_event_output(0, 0, b"abc").unwrap();
    small.perf_event_output(0, 0, b"abc").unwrap();
    assert_eq!(small.perf_drain(0).lost, 1);
    // A record built by the caller: same checks, same buffer, same limit.
    let v = |s: &[u8]| s.to_vec();
    assert_eq!(errno(small.perf_event_output_vec(0, 4, v(b"x"))), E2BIG);
    assert_eq!(errno(m.perf_event_output_vec(0, 0, v(b"x"))), ENOENT);
    small.perf_event_output_vec(0, 0, v(b"ab")).unwrap();
    small.perf_event_output_vec(0, 0, v(b"cd")).unwrap();
    small.perf_event_output_vec(0, 0, v(b"e")).unwrap();
    let d = small.perf_drain(0);
    assert_eq!((d.records, d.lost), (vec![v(b"ab"), v(b"cd")], 1));
    // A record built on demand: built only when the buffer has room, the
    // builder's error comes out as the outer one, with nothing queued.
    let built = std::cell::Cell::new(0);
    let make = |s: &'static [u8]| {
        let built = &built;
        move || {
            built.set(built.get() + 1);
            Ok::<_, &str>(s.to_vec())
        }
    };
    assert!(matches!(
        small.perf_event_output_with(0, 0, 3, make(b"abc")),
        Ok(Ok(()))
    ));
    assert!(matches!(
        small.perf_event_output_with(0, 0, 3, make(b"def")),
        Ok(Ok(()))
    ));
    assert_eq!(built.get(), 1, "a lost record is never built");
    assert!(matches!(
        small.perf_event_output_with(0, 0, 1, || Err::<Vec<u8>, _>("fault")),
        Err("fault")
    ));
    let r = m.perf_event_output_with(0, 0, 1, make(b"x"));
    assert_eq!(r.map(errno), Ok(ENOENT));
    let r = small.perf_event_output_with(0, 4, 1, make(b"x"));
    assert_eq!(r.map(errno), Ok(E2BIG));
    assert_eq!(built.get(), 1, "no record is built for a refused call");
    let d = small.perf_drain(0);
    assert_eq!((d.records, d.lost), (vec![v(b"abc")], 1));
}

#[test]
fn devmaps() {
    assert_eq!(mk_err(MapDef::new(MapType::Devmap, 4, 6, 4)), EINVAL);
    let m = mk(MapType::Devmap, 4, 4, 4);
    assert_eq!(errno(m.update(&k(0), &k(3), NOEXIST)), EEXIST);
    assert_eq!(errno(m.update(&k(4), &k(3), ANY)), E2BIG);
    m.update(&k(1), &k(7), ANY).unwrap();
    // lookup_into: the same value and errors as lookup, into a buffer.
    let mut buf = [0xffu8; 8];
    m.lookup_into(&k(1), &mut buf).unwrap();
    assert_eq!(buf, [7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(m.lookup(&k(1)).unwrap(), k(7));
    assert_eq!(
        errno(m.lookup_into(&k(9), &mut buf)),
        errno(m.lookup(&k(9)))
    );
    assert_eq!(errno(m.lookup_into(&[0; 3], &mut buf)), EINVAL);
    assert_eq!(errno(m.lookup_into(&k(1), &mut buf[..3])), EINVAL);
    assert_eq!(
        m.redirect_target(1),
        Some(DevTarget {
            ifindex: 7,
            prog: None
        })
    );
    assert_eq!(m.redirect_target(0), None);
    assert_eq!(m.lookup(&k(1)).unwrap(), k(7));
    assert_eq!(errno(m.lookup(&k(0))), ENOENT);
    m.delete(&k(0)).unwrap();
    assert_eq!(errno(m.delete(&k(4))), EINVAL);
    m.update(&k(1), &k(0), ANY).unwrap();
    assert_eq!(m.redirect_target(1), None);
    let h = mk(MapType::DevmapHash, 4, 8, 2);
    let val = |ifindex: u32, prog: u32| [ifindex.to_ne_bytes(), prog.to_ne_bytes()].concat();
    h.update(&k(100), &val(5, 9), EXIST).unwrap();
    assert_eq!(
        h.redirect_target(100),
        Some(DevTarget {
            ifindex: 5,
            prog: Some(ProgId(9))
        })
    );
    assert_eq!(errno(h.update(&k(100), &val(5, 0), NOEXIST)), EEXIST);
    assert_eq!(errno(h.update(&k(1), &val(0, 0), ANY)), EINVAL);
    h.update(&k(1), &val(1, 0), ANY).unwrap();
    assert_eq!(errno(h.update(&k(2), &val(1, 0), ANY)), E2BIG);
    assert_eq!(h.entries().unwrap().len(), 2);
}

/// What inline devmap lookups load (`Map::devmap_layout`): each slot's
/// word holds its entry's address inside `entries` (0 when empty), the
/// entry `dev_value` gives; an update moves the slot to another word and
/// the old one keeps its value while a guard pinned before the update
/// lives (no word is reused under it, even when updates run out of words:
/// `ENOMEM`, never a reused word); once no run holds one, retired words
/// come back and updates go on indefinitely.
#[test]
fn devmap_entries_in_one_allocation() {
    let m = mk(MapType::Devmap, 4, 8, 8);
    let d = m.devmap_layout().expect("a devmap has a layout");
    assert!(mk(MapType::DevmapHash, 4, 8, 8).devmap_layout().is_none());
    assert!(mk(MapType::Array, 4, 8, 8).devmap_layout().is_none());
    assert_eq!(d.max_entries, 8);
    let entries = d.entries.addr()..d.entries.addr() + d.entries.len() as u64;
    let slot = |i: usize| slot_word(&m, i);
    let guard = pin();
    assert_eq!((slot(3), m.devmap_entry_addr(3, &guard)), (0, 0));
    m.update(&k(3), &v8(5), ANY).unwrap();
    let a = m.devmap_entry_addr(3, &guard);
    assert!(entries.contains(&a) && a.is_multiple_of(8));
    assert_eq!(slot(3), a);
    assert_eq!(m.dev_value(&k(3), &guard).unwrap().addr(), a);
    assert_eq!(m.devmap_entry_addr(8, &guard), 0, "past the end");
    assert_eq!(m.devmap_entry_addr(u32::MAX, &guard), 0);
    // Updated under the guard, many times: every entry a new word, each
    // keeping the value it had, until the words run out.
    let mut seen = vec![(a, 5u64)];
    let mut refused = false;
    for x in 6..1000u64 {
        match m.update(&k(3), &v8(x), ANY) {
            Ok(()) => {
                let p = m.devmap_entry_addr(3, &guard);
                assert!(entries.contains(&p));
                assert!(seen.iter().all(|(q, _)| *q != p), "word {p:#x} reused");
                seen.push((p, x));
            }
            Err(e) => {
                assert!(matches!(e, MapError::NoMemory), "{e}");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "a pinned guard keeps every retired word");
    for (p, x) in &seen {
        assert_eq!(entry_value(&m, *p, &guard), *x, "entry {p:#x}");
    }
    // The slot still holds the last value that was accepted.
    assert_eq!(m.lookup(&k(3)).unwrap(), v8(seen.last().unwrap().1));
    m.delete(&k(3)).unwrap();
    assert_eq!(m.devmap_entry_addr(3, &guard), 0);
    drop(guard);
    // No run: retired words come back (the collector is asked to run).
    for x in 0..3000u64 {
        m.update(&k((x % 8) as u32), &v8(x + 1), ANY).unwrap();
    }
    let guard = pin();
    let p = m.devmap_entry_addr(7, &guard);
    assert_eq!(entry_value(&m, p, &guard), 3000);
}

/// The 8-byte entry word at `addr` of devmap `m`, found among its entries
/// (safe code: the word is located in `devmap_layout().entries`).
fn entry_value(m: &Map, addr: u64, _guard: &RunGuard) -> u64 {
    let e = m.devmap_layout().unwrap().entries;
    let off = (addr - e.addr()) as usize;
    e.atomic_u64(off).unwrap().load(Ordering::Relaxed)
}

/// Devmap `m`'s slot word `i`, read where `devmap_layout().slots` says
/// the words are (safe code: the crate's own view of them).
fn slot_word(m: &Map, i: usize) -> u64 {
    let Imp::Slots(s) = &m.imp else {
        panic!("a devmap");
    };
    let (_, addrs) = s.dev_arena().unwrap();
    assert_eq!(addrs.as_ptr() as u64, m.devmap_layout().unwrap().slots);
    assert_eq!(addrs.len(), m.def().max_entries as usize);
    addrs[i].load(Ordering::Acquire)
}

/// The header engines read at a map's address: first in the `Map`, the
/// storage of plain arrays (what `lookup_ptr` returns), zero for other
/// maps and for arrays that programs may not write.
#[test]
fn map_headers_describe_plain_arrays_only() {
    assert_eq!(std::mem::offset_of!(Map, header), 0);
    assert_eq!(std::mem::offset_of!(MapHeader, max_entries), 8);
    assert_eq!(std::mem::offset_of!(MapHeader, stride), 12);
    let m = mk(MapType::Array, 4, 12, 5);
    let h = *m.header();
    assert_eq!(
        &m as *const Map as usize,
        m.header() as *const MapHeader as usize
    );
    assert_eq!((h.max_entries, h.stride), (5, 16));
    assert_eq!(h.array_base, m.array_storage().unwrap().addr());
    let guard = pin();
    for i in 0..5u32 {
        let v = m.lookup_ptr(&k(i), 0, &guard).unwrap();
        assert_eq!(v.addr(), h.array_base + u64::from(i) * 16);
    }
    let ro = Map::new(
        MapDef {
            map_flags: map_flags::RDONLY_PROG,
            ..MapDef::new(MapType::Array, 4, 8, 2)
        },
        &opts(),
    )
    .unwrap();
    for other in [
        ro,
        mk(MapType::PercpuArray, 4, 8, 2),
        mk(MapType::Hash, 4, 8, 2),
        mk(MapType::Devmap, 4, 4, 2),
    ] {
        assert_eq!(other.header().array_base, 0, "{:?}", other.map_type());
    }
}

#[test]
fn prog_array() {
    let m = mk(MapType::ProgArray, 4, 4, 2);
    assert_eq!(errno(m.update(&k(0), &k(5), EXIST)), EINVAL);
    assert_eq!(errno(m.update(&k(2), &k(5), ANY)), E2BIG);
    m.update(&k(1), &k(5), ANY).unwrap();
    assert_eq!(m.lookup(&k(1)).unwrap(), k(5));
    assert_eq!(m.prog_at(1), Some(ProgId(5)));
    assert_eq!(m.prog_at(0), None);
    assert_eq!(m.prog_at(9), None);
    assert_eq!(errno(m.lookup(&k(0))), ENOENT);
    assert_eq!(errno(m.delete(&k(0))), ENOENT);
    assert_eq!(errno(m.delete(&k(2))), E2BIG);
    assert_eq!(m.entries().unwrap(), vec![(k(1).to_vec(), k(5).to_vec())]);
    m.delete(&k(1)).unwrap();
    assert_eq!(m.prog_at(1), None);
    assert_eq!(errno(m.prog_update(&k(1), &k(5), ANY, 0)), EINVAL);
}

#[test]
fn map_in_map() {
    let reg = MapRegistry::new(opts());
    let tmpl = MapDef::new(MapType::Hash, 4, 8, 4);
    assert_eq!(
        reg.create(MapDef::new(MapType::ArrayOfMaps, 4, 4, 2))
            .unwrap_err()
            .errno(),
        EINVAL
    );
    let (a, am) = reg.create(tmpl.clone()).unwrap();
    let (b, _) = reg.create(MapDef::new(MapType::Hash, 4, 8, 5)).unwrap();
    let (_, outer) = reg
        .create(MapDef::new(MapType::ArrayOfMaps, 4, 4, 2).with_inner(tmpl.clone()))
        .unwrap();
    let (_, houter) = reg
        .create(MapDef::new(MapType::HashOfMaps, 8, 4, 2).with_inner(tmpl))
        .unwrap();
    assert_eq!(errno(outer.update(&k(0), &k(999), ANY)), 9); // EBADF
    assert_eq!(errno(outer.update(&k(0), &b.0.to_ne_bytes(), ANY)), EINVAL);
    outer.update(&k(0), &a.0.to_ne_bytes(), ANY).unwrap();
    houter.update(&[1; 8], &a.0.to_ne_bytes(), ANY).unwrap();
    assert_eq!(outer.lookup(&k(0)).unwrap(), a.0.to_ne_bytes());
    assert_eq!(houter.lookup(&[1; 8]).unwrap(), a.0.to_ne_bytes());
    am.update(&k(3), &v8(3), ANY).unwrap();
    let g = pin();
    let inner = outer.inner_map(&k(0), &g).unwrap();
    let hinner = houter.inner_map(&[1; 8], &g).unwrap();
    assert_eq!((inner.id(), hinner.id()), (Some(a), Some(a)));
    assert_eq!(reg.get_by_addr(inner.addr()).unwrap().id(), Some(a));
    assert!(reg.get_by_addr(inner.addr() + 8).is_none());
    // The inner map stays usable for the run after every reference to it
    // is dropped elsewhere.
    drop(am);
    reg.remove(a);
    assert!(reg.get_by_addr(inner.addr()).is_none());
    outer.delete(&k(0)).unwrap();
    houter.delete(&[1; 8]).unwrap();
    assert!(outer.inner_map(&k(0), &g).is_none());
    let p = inner.lookup_ptr(&k(3), 0, &g).unwrap();
    assert_eq!(p.to_vec(), v8(3));
    drop(g);
    // Map::new cannot resolve ids.
    let lone = Map::new(
        MapDef::new(MapType::ArrayOfMaps, 4, 4, 1).with_inner(MapDef::new(MapType::Array, 4, 4, 1)),
        &opts(),
    )
    .unwrap();
    assert_eq!(errno(lone.update(&k(0), &k(1), ANY)), 9);
}

#[test]
fn access_flags() {
    let ro = Map::new(
        MapDef::new(MapType::Hash, 4, 4, 4).with_flags(map_flags::RDONLY),
        &opts(),
    )
    .unwrap();
    assert_eq!(errno(ro.update(&k(0), &k(0), ANY)), 1);
    assert_eq!(errno(ro.delete(&k(0))), 1);
    ro.prog_update(&k(0), &k(1), ANY, 0).unwrap();
    assert_eq!(ro.lookup(&k(0)).unwrap(), k(1));
    let wo = Map::new(
        MapDef::new(MapType::Hash, 4, 4, 4).with_flags(map_flags::WRONLY),
        &opts(),
    )
    .unwrap();
    wo.update(&k(0), &k(0), ANY).unwrap();
    assert_eq!(errno(wo.lookup(&k(0))), 1);
    assert_eq!(errno(wo.get_next_key(None)), 1);
    let rp = Map::new(
        MapDef::new(MapType::Array, 4, 4, 4).with_flags(map_flags::RDONLY_PROG),
        &opts(),
    )
    .unwrap();
    assert_eq!(errno(rp.prog_update(&k(0), &k(0), ANY, 0)), 1);
    assert_eq!(
        mk_err(
            MapDef::new(MapType::Hash, 4, 4, 4).with_flags(map_flags::RDONLY | map_flags::WRONLY)
        ),
        EINVAL
    );
}

#[test]
fn bad_lengths_never_panic() {
    let reg = MapRegistry::new(opts());
    let g = pin();
    for &t in MapType::ALL {
        let (k, v) = match t {
            MapType::Queue | MapType::Stack => (0, 4),
            MapType::Ringbuf => (0, 0),
            MapType::LpmTrie => (8, 4),
            _ => (4, 4),
        };
        let max = if t == MapType::Ringbuf { 4096 } else { 4 };
        let mut def = MapDef::new(t, k, v, max);
        if t == MapType::LpmTrie {
            def.map_flags = map_flags::NO_PREALLOC;
        }
        if t.is_map_in_map() {
            def = def.with_inner(MapDef::new(MapType::Array, 4, 4, 1));
        }
        let Ok((_, m)) = reg.create(def) else {
            continue;
        };
        for key in [&[][..], &[1][..], &[0; 4][..], &[0xff; 9][..]] {
            for val in [&[][..], &[1][..], &[0; 4][..], &[0xff; 40][..]] {
                let _ = m.lookup(key);
                let _ = m.update(key, val, ANY);
                let _ = m.update(key, val, 77);
                let _ = m.delete(key);
                let _ = m.get_next_key(Some(key));
                let _ = m.lookup_and_delete(key);
                let _ = m.lookup_ptr(key, 0, &g);
                let _ = m.lookup_ptr(key, 99, &g);
                let _ = m.prog_update(key, val, ANY, 0);
                let _ = m.prog_update(key, val, ANY, 99);
                let _ = m.prog_delete(key);
                let _ = m.push(val, 0);
                let mut out = vec![0; val.len()];
                let _ = m.pop(&mut out);
                let _ = m.perf_event_output(99, BPF_F_CURRENT_CPU, val);
                let _ = m.ringbuf_output(val, 0);
                let _ = m.ringbuf_submit(val.len() as u64, 0);
                let _ = m.inner_map(key, &g);
            }
        }
        let _ = m.ringbuf_reserve(u64::MAX, 0, &g);
        let _ = m.entries();
    }
}

#[test]
fn retired_elements_that_retire_more_are_reclaimed() {
    // Dropping a retired inner map retires its own elements from inside a
    // deferred function: the collector must cope with that re-entrancy.
    let reg = MapRegistry::new(opts());
    let tmpl = MapDef::new(MapType::Hash, 4, 8, 64);
    let (_, outer) = reg
        .create(MapDef::new(MapType::HashOfMaps, 4, 4, 64).with_inner(tmpl.clone()))
        .unwrap();
    let mut first = None;
    for round in 0..200u32 {
        let (id, inner) = reg.create(tmpl.clone()).unwrap();
        first.get_or_insert_with(|| Arc::downgrade(&inner));
        for i in 0..32 {
            inner.update(&k(i), &v8(i as u64), ANY).unwrap();
        }
        outer
            .update(&k(round % 64), &id.0.to_ne_bytes(), ANY)
            .unwrap();
        drop(inner);
        reg.remove(id);
        for _ in 0..64 {
            drop(pin());
        }
    }
    drop(outer);
    // Replaced and removed everywhere: freed once no run that could see it
    // is pinned (other tests may hold guards for a while).
    let first = first.unwrap();
    let start = std::time::Instant::now();
    while first.upgrade().is_some() {
        assert!(start.elapsed().as_secs() < 10, "never reclaimed");
        for _ in 0..1000 {
            drop(pin());
        }
        std::thread::yield_now();
    }
}

#[test]
fn global_data_arrays() {
    let m = mk(MapType::Array, 4, 12, 3);
    let all = m.array_storage().unwrap();
    assert_eq!((all.len(), all.addr() % 8), (48, 0));
    all.write_at(16, &[1, 2, 3]).unwrap();
    assert_eq!(m.lookup(&k(1)).unwrap()[..3], [1, 2, 3]);
    let g = pin();
    assert_eq!(m.lookup_ptr(&k(1), 0, &g).unwrap().addr(), all.addr() + 16);
    drop(g);
    m.freeze().unwrap();
    assert_eq!(errno(m.freeze()), 1);
    assert_eq!(errno(m.update(&k(0), &[0; 12], ANY)), 1);
    m.prog_update(&k(0), &[5; 12], ANY, 0).unwrap();
    assert_eq!(m.lookup(&k(0)).unwrap(), vec![5; 12]);
    assert!(mk(MapType::PercpuArray, 4, 4, 1).array_storage().is_none());
}

#[test]
fn for_each_elem() {
    let g = pin();
    let a = mk(MapType::PercpuArray, 4, 8, 3);
    let mut seen = Vec::new();
    let n = a.for_each_elem(1, &g, |k, v| {
        v.atomic_u64(0).unwrap().fetch_add(1, Ordering::Relaxed);
        seen.push(u32_of(k));
        true
    });
    assert_eq!((n, seen), (3, vec![0, 1, 2]));
    assert_eq!(a.lookup(&k(2)).unwrap()[8..16], v8(1));
    assert_eq!(a.for_each_elem(0, &g, |_, _| false), 1);
    let h = mk(MapType::Hash, 4, 8, 8);
    for i in 0..5 {
        h.update(&k(i), &v8(i as u64), ANY).unwrap();
    }
    // The callback may delete elements (no lock is held).
    let mut sum = 0;
    let n = h.for_each_elem(0, &g, |key, v| {
        sum += u64::from_ne_bytes(v.to_vec().try_into().unwrap());
        h.prog_delete(key).unwrap();
        true
    });
    assert_eq!((n, sum), (5, 10));
    assert!(h.is_empty());
    assert_eq!(
        mk(MapType::Queue, 0, 4, 2).for_each_elem(0, &g, |_, _| true),
        0
    );
}

/// The per-packet readers of prog arrays, devmaps and perf event arrays
/// (`prog_at`, `redirect_target`, `perf_event_output`'s filled-slot check)
/// read a lock-free copy of each slot: after any sequence of updates and
/// deletes they agree with the control side's lookup, including a program
/// id 0, 8-byte devmap values with and without a program, and refills.
#[test]
fn slot_words_follow_updates_and_deletes() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let pa = mk(MapType::ProgArray, 4, 4, 4);
    let d4 = mk(MapType::Devmap, 4, 4, 4);
    let d8 = mk(MapType::Devmap, 4, 8, 4);
    let perf = mk(MapType::PerfEventArray, 4, 4, 4);
    // Perf event arrays have no control-side lookup: a model of the slots.
    let mut filled = [false; 4];
    for _ in 0..400 {
        let i = next(5) as u32; // 4 is past the end
        let v = next(3) as u32; // 0 included
        let prog = next(3) as u32;
        let del = next(3) == 0;
        if del {
            let _ = pa.delete(&k(i));
            let _ = d4.delete(&k(i));
            let _ = d8.delete(&k(i));
            if perf.delete(&k(i)).is_ok() {
                filled[i as usize] = false;
            }
        } else {
            let _ = pa.update(&k(i), &k(v), ANY);
            let _ = d4.update(&k(i), &k(v), ANY);
            let _ = d8.update(&k(i), &[k(v), k(prog)].concat(), ANY);
            if perf.update(&k(i), &k(v), ANY).is_ok() {
                filled[i as usize] = true;
            }
        }
        for j in 0..5 {
            assert_eq!(
                pa.prog_at(j),
                pa.lookup(&k(j)).ok().map(|b| ProgId(u32_of(&b)))
            );
            for d in [&d4, &d8] {
                let want = d.lookup(&k(j)).ok().map(|b| DevTarget {
                    ifindex: u32_of(&b),
                    prog: (b.len() == 8 && u32_of(&b[4..]) != 0).then(|| ProgId(u32_of(&b[4..]))),
                });
                assert_eq!(d.redirect_target(j), want);
            }
            let out = perf.perf_event_output(0, u64::from(j), b"x");
            match (j, filled.get(j as usize).copied().unwrap_or(false)) {
                (4, _) => assert_eq!(errno(out), E2BIG),
                (_, true) => out.unwrap(),
                (_, false) => assert_eq!(errno(out), ENOENT),
            }
        }
    }
}

/// The change count of `hash_of_maps` and `devmap_hash` (what runs
/// answer lookups again under): it moves with every insert, replacement
/// and removal, not with failed updates or lookups, and a run's redirect
/// target read in place under its guard is the control side's.
#[test]
fn hash_change_counts_and_redirects_in_place() {
    let h = mk(MapType::DevmapHash, 4, 4, 4);
    let g0 = h
        .slot_generation(&k(3))
        .expect("devmap_hash counts changes");
    h.update(&k(3), &k(7), ANY).unwrap();
    let g1 = h.slot_generation(&k(3)).unwrap();
    assert_ne!(g0, g1);
    // Any key's change moves the count every key reads.
    h.update(&k(4), &k(8), ANY).unwrap();
    let g2 = h.slot_generation(&k(3)).unwrap();
    assert_ne!(g1, g2);
    assert_eq!(errno(h.update(&k(4), &k(9), NOEXIST)), EEXIST);
    assert!(h.lookup(&k(3)).is_ok());
    assert_eq!(h.slot_generation(&k(3)), Some(g2));
    let guard = crate::pin();
    let (v, g) = h.dev_value_gen(&k(3), &guard).unwrap();
    assert_eq!((v.len(), g), (4, g2));
    assert_eq!(
        h.redirect_target_in(3, &guard),
        Some(DevTarget {
            ifindex: 7,
            prog: None
        })
    );
    assert_eq!(h.redirect_target_in(5, &guard), None);
    h.delete(&k(3)).unwrap();
    assert_ne!(h.slot_generation(&k(3)), Some(g2));
    assert_eq!(h.redirect_target_in(3, &guard), None);
    assert_eq!(h.slot_generation(&[0; 3]), None);
    // An 8-byte value: the program id too.
    let h8 = mk(MapType::DevmapHash, 4, 8, 4);
    let val = [2u32.to_ne_bytes(), 6u32.to_ne_bytes()].concat();
    h8.update(&k(1), &val, ANY).unwrap();
    assert_eq!(
        h8.redirect_target_in(1, &guard),
        Some(DevTarget {
            ifindex: 2,
            prog: Some(ProgId(6))
        })
    );
    // Plain hashes keep no count (their writers pay nothing for it).
    assert_eq!(mk(MapType::Hash, 4, 4, 4).slot_generation(&k(1)), None);
}

/// A `devmap_hash`'s entry table read the way generated code reads it
/// (`Map::devhash_layout`): `table` holds the current table's address,
/// the probe for `key` starts at `(key * mult) >> (32 - bits)` and passes
/// tombstones and other keys' entries up to the key's entry (its key in
/// the second word, the value in the first) or an empty cell.
fn devhash_probe(m: &Map, key: u32, guard: &RunGuard) -> u64 {
    let d = m.devhash_layout().unwrap();
    let ix = m.devidx.as_ref().unwrap();
    let cells = ix.current(guard);
    assert_eq!(cells.as_ptr() as u64, ix.table.load(Ordering::Acquire));
    assert_eq!(cells.len(), 1 << d.bits);
    let e = m.devhash_entries().unwrap();
    let mut i = (key.wrapping_mul(d.mult) >> (32 - d.bits)) as usize;
    for _ in 0..cells.len() {
        let c = cells[i].load(Ordering::Acquire);
        if c == 0 {
            return 0;
        }
        if c != DEVHASH_TOMB {
            let off = (c - e.addr()) as usize;
            assert!(off + 16 <= e.len() && off.is_multiple_of(16), "{c:#x}");
            if e.atomic_u64(off + 8).unwrap().load(Ordering::Relaxed) as u32 == key {
                return c;
            }
        }
        i = (i + 1) & (cells.len() - 1);
    }
    panic!("a table without an empty cell");
}

/// Keys come and go in a small `devmap_hash` (thousands of distinct keys,
/// the map full at times): the probe of generated code finds what
/// `dev_value` gives (the same pointer, the value in its first word) and
/// NULL for absent keys, the table is rebuilt as tombstones pile up (its
/// address changes) and never fills; an entry a pinned guard could hold
/// keeps its value; the redirect target and the change count follow.
#[test]
fn devhash_entries_follow_updates_and_deletes() {
    let m = mk(MapType::DevmapHash, 4, 8, 8);
    assert!(mk(MapType::Devmap, 4, 8, 8).devhash_layout().is_none());
    assert!(mk(MapType::Hash, 4, 8, 8).devhash_layout().is_none());
    let table0 = m.devidx.as_ref().unwrap().table.load(Ordering::Acquire);
    let mut present = std::collections::BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    // Rebuilds: changes of the table's address from one round to the next
    // (a new table is allocated while the old one still is, so it never
    // gets the old one's address; distinct addresses would undercount, the
    // allocator reusing freed ones).
    let (mut table, mut rebuilds) = (table0, 0);
    for round in 1..20_000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let key = ((seed % 40) as u32 * 0x0101_0101) ^ (round as u32 / 2000);
        let gen = m.slot_generation(&k(key)).unwrap();
        let did = if present.contains_key(&key) && seed & 0x30 != 0 {
            m.delete(&k(key)).unwrap();
            present.remove(&key);
            true
        } else {
            match m.update(&k(key), &v8(round << 32 | 5), ANY) {
                Ok(()) => {
                    present.insert(key, round << 32 | 5);
                    true
                }
                Err(e) => {
                    assert_eq!(e.errno(), E2BIG, "{e}");
                    false
                }
            }
        };
        let guard = pin();
        let changed = m.slot_generation(&k(key)).unwrap() != gen;
        assert_eq!(changed, did, "round {round}: the change count");
        for (&p, &v) in &present {
            let a = devhash_probe(&m, p, &guard);
            assert_eq!(a, m.dev_value(&k(p), &guard).unwrap().addr(), "{round}");
            assert_eq!(m.devidx.as_ref().unwrap().value_at(a), v);
            assert_eq!(m.redirect_target(p).unwrap().ifindex, 5);
        }
        for miss in [key, key ^ 1, 0xdead_beef] {
            if !present.contains_key(&miss) {
                assert_eq!(devhash_probe(&m, miss, &guard), 0);
                assert!(m.dev_value(&k(miss), &guard).is_none());
                assert!(m.redirect_target(miss).is_none());
            }
        }
        let now = m.devidx.as_ref().unwrap().table.load(Ordering::Acquire);
        rebuilds += usize::from(now != table);
        table = now;
    }
    assert!(rebuilds >= 5, "rebuilt {rebuilds} times");
    // Under a pinned guard, an entry keeps its value through updates.
    m.update(&k(77), &v8(1 << 32 | 9), ANY).ok();
    m.delete(&k(77)).ok();
    while m.update(&k(77), &v8(9), ANY).is_err() {
        let first = *present.keys().next().unwrap();
        m.delete(&k(first)).unwrap();
        present.remove(&first);
    }
    let guard = pin();
    let a = devhash_probe(&m, 77, &guard);
    for x in 10..100u64 {
        m.update(&k(77), &v8(x), ANY).unwrap();
        assert_ne!(devhash_probe(&m, 77, &guard), a);
    }
    assert_eq!(m.devidx.as_ref().unwrap().value_at(a), 9);
}
