//! Model tests (no kernel needed): random operation sequences checked
//! against simple reference models, for hashes and LPM tries.

use bpfkit_abi::update_flags::{ANY, EXIST, NOEXIST};
use bpfkit_maps::{map_flags, Map, MapDef, MapError, MapOptions, MapType};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Update(u8, u8, u64),
    Delete(u8),
    Lookup(u8),
    Iterate,
}

fn ops(keys: u8) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..keys, any::<u8>(), prop_oneof![Just(ANY), Just(NOEXIST), Just(EXIST)])
            .prop_map(|(k, v, f)| Op::Update(k, v, f)),
        2 => (0..keys).prop_map(Op::Delete),
        2 => (0..keys).prop_map(Op::Lookup),
        1 => Just(Op::Iterate),
    ];
    proptest::collection::vec(op, 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hash_behaves_like_a_bounded_map(ops in ops(12)) {
        let max = 8;
        let m = Map::new(MapDef::new(MapType::Hash, 1, 1, max), &MapOptions::new()).unwrap();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                Op::Update(k, v, f) => {
                    let expect = match (model.contains_key(&k), f) {
                        (true, NOEXIST) => Err(17),
                        (false, EXIST) => Err(2),
                        (false, _) if model.len() == max as usize => Err(7),
                        _ => Ok(()),
                    };
                    prop_assert_eq!(m.update(&[k], &[v], f).map_err(|e| e.errno()), expect);
                    if expect.is_ok() {
                        model.insert(k, v);
                    }
                }
                Op::Delete(k) => {
                    let expect = if model.remove(&k).is_some() { Ok(()) } else { Err(2) };
                    prop_assert_eq!(m.delete(&[k]).map_err(|e| e.errno()), expect);
                }
                Op::Lookup(k) => {
                    let expect = model.get(&k).map(|v| vec![*v]).ok_or(MapError::NotFound);
                    prop_assert_eq!(m.lookup(&[k]), expect);
                }
                Op::Iterate => {
                    let mut got: Vec<(u8, u8)> =
                        m.entries().unwrap().into_iter().map(|(k, v)| (k[0], v[0])).collect();
                    got.sort();
                    let want: Vec<(u8, u8)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn lpm_matches_brute_force(
        entries in proptest::collection::vec((0u32..=16, any::<u16>(), any::<u8>()), 1..40),
        probes in proptest::collection::vec((0u32..=18, any::<u16>()), 1..40),
    ) {
        let def = MapDef::new(MapType::LpmTrie, 6, 1, 64).with_flags(map_flags::NO_PREALLOC);
        let m = Map::new(def, &MapOptions::new()).unwrap();
        let key = |len: u32, data: u16| {
            let mut k = len.to_ne_bytes().to_vec();
            k.extend_from_slice(&data.to_be_bytes());
            k
        };
        let mask = |len: u32, d: u16| if len == 0 { 0 } else { d & (u16::MAX << (16 - len)) };
        // Model: (len, masked data) -> (value, data as last written).
        let mut model: BTreeMap<(u32, u16), (u8, u16)> = BTreeMap::new();
        for (len, d, v) in entries {
            m.update(&key(len, d), &[v], ANY).unwrap();
            model.insert((len, mask(len, d)), (v, d));
        }
        for (len, d) in probes {
            let best = if len > 16 {
                None
            } else {
                model
                    .iter()
                    .filter(|(&(l, md), _)| l <= len && mask(l, d) == md)
                    .max_by_key(|(&(l, _), _)| l)
                    .map(|(_, &(v, _))| vec![v])
            };
            prop_assert_eq!(m.lookup(&key(len, d)).ok(), best);
        }
        // Iteration: every prefix once, more specific before less specific
        // within the same subtree, keys as last written.
        let keys: Vec<Vec<u8>> = m.entries().unwrap().into_iter().map(|(k, _)| k).collect();
        prop_assert_eq!(keys.len(), model.len());
        for (i, a) in keys.iter().enumerate() {
            let la = u32::from_ne_bytes(a[..4].try_into().unwrap());
            let da = u16::from_be_bytes([a[4], a[5]]);
            prop_assert_eq!(model[&(la, mask(la, da))].1, da);
            for b in &keys[i + 1..] {
                let lb = u32::from_ne_bytes(b[..4].try_into().unwrap());
                let db = u16::from_be_bytes([b[4], b[5]]);
                // A later key never lies strictly inside an earlier one.
                prop_assert!(!(lb > la && mask(la, db) == mask(la, da)));
            }
        }
    }
}
