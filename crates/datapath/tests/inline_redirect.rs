//! `bpf_redirect_map` answered by the JIT's unchecked code itself (a devmap
//! whose `lddw` is certain, flags below 4: the code writes the
//! run's redirect record, `RunState::settle_redirect` turns it into the
//! run's redirect) against the helper: return values and the reported
//! redirect target must be the interpreter's (which always calls the
//! helper) and what the kernel's helper gives, the last redirect of a run
//! winning whichever way each was made (helper then inline, inline then
//! helper, two inline ones), over repeats and after map updates. Fixture:
//! `tests/fixtures/xdp_redirect.c` (mode in byte 13, key in byte 12); and
//! `tests/xdp/devmap.o`, whose last call is reached from two paths that
//! load the same map (`inline::merged_map_operand`) with other flags.

use bpfkit::{Engine, Loader, Object};
use bpfkit_datapath::xdp::XdpRunner;
use bpfkit_helpers::Redirect;

const FIXTURE: &[u8] = include_bytes!("fixtures/xdp_redirect.o");

/// (engine, constant blinding, `check`ed so that the JIT runs unchecked).
fn engines() -> Vec<(Engine, bool, bool)> {
    let mut v = vec![(Engine::Interp, false, true)];
    if Engine::fastest() == Engine::Jit {
        v.extend([
            (Engine::Jit, false, false),
            (Engine::Jit, false, true),
            (Engine::Jit, true, true),
        ]);
    }
    v
}

fn load(engine: Engine, blind: bool, verify: bool) -> Object {
    let obj = Loader::new()
        .engine(engine)
        .jit_blind(blind)
        .load(FIXTURE)
        .unwrap();
    if verify {
        obj.check(0).expect("the fixture verifies");
    }
    obj
}

fn run(obj: &mut Object, key: u8, mode: u8, repeat: u32) -> (u64, Option<Redirect>) {
    let mut pkt = vec![0u8; 60];
    pkt[12] = key;
    pkt[13] = mode;
    let out = XdpRunner::new()
        .unwrap()
        .run(obj, 0, &pkt, None, repeat)
        .unwrap();
    (out.retval, out.redirect)
}

/// What the kernel's helpers give for `key` and `mode` with `ports`
/// holding `ifindex(key)`.
fn expected(
    id: Option<bpfkit::MapId>,
    ifindex: impl Fn(u32) -> Option<u32>,
    key: u32,
    mode: u8,
) -> (u64, Option<Redirect>) {
    const DROP: u64 = 1;
    const PASS: u64 = 2;
    const REDIRECT: u64 = 4;
    let dev = |key: u32| {
        ifindex(key).map(|ifindex| Redirect::Devmap {
            map: id,
            key,
            ifindex,
        })
    };
    let hit = |key: u32, miss: u64| (ifindex(key).map_or(miss, |_| REDIRECT), dev(key));
    match mode {
        0 => hit(key, PASS),
        1 => {
            let (r, t) = hit(key, DROP);
            (r * 2, t)
        }
        2 => (REDIRECT, Some(Redirect::Ifindex(5))),
        3 => {
            let (r1, _) = hit(key, 0);
            let (r2, t) = hit(key + 1, PASS);
            (r1 * 16 + r2, t)
        }
        4 => (REDIRECT, Some(Redirect::Broadcast { map: id })),
        6 | 7 if key & 1 == 1 => {
            let (r, t) = hit(key, PASS);
            (r + 5, t)
        }
        6 => {
            let (r, t) = hit(key, DROP);
            (r + 5, t)
        }
        7 => (REDIRECT + 5, Some(Redirect::Broadcast { map: id })),
        _ => (DROP * 3, None),
    }
}

#[test]
fn inline_redirects_report_what_the_helpers_do() {
    for (engine, blind, verify) in engines() {
        let mut obj = load(engine, blind, verify);
        let ports = obj.map("ports").unwrap().map.clone();
        let set = |key: u32, ifindex: u32| {
            ports
                .update(&key.to_ne_bytes(), &ifindex.to_ne_bytes(), 0)
                .unwrap()
        };
        set(1, 7);
        set(2, 9);
        let id = ports.id();
        let check = |obj: &mut Object, table: &[(u32, u32)], repeat: u32| {
            let ifindex = |k: u32| table.iter().find(|(key, _)| *key == k).map(|(_, i)| *i);
            for mode in 0..=8u8 {
                for key in 0..=4u8 {
                    let got = run(obj, key, mode, repeat);
                    let want = expected(id, ifindex, u32::from(key), mode);
                    assert_eq!(
                        got, want,
                        "{engine:?} blind {blind} verified {verify}: key {key}, mode {mode}, \
                         repeat {repeat}"
                    );
                }
            }
        };
        check(&mut obj, &[(1, 7), (2, 9)], 1);
        if engine == Engine::Jit && verify {
            assert!(obj.runs_unchecked(0));
        }
        // Several batches (64 runs each): the last run's redirect.
        check(&mut obj, &[(1, 7), (2, 9)], 150);
        // Changed between runs: the new entries, and no redirect for a
        // deleted one.
        set(1, 11);
        ports.delete(&2u32.to_ne_bytes()).unwrap();
        set(3, 13);
        check(&mut obj, &[(1, 11), (3, 13)], 1);
        check(&mut obj, &[(1, 11), (3, 13)], 3);
        // A redirect of one call of `run` does not outlive it.
        assert_eq!(run(&mut obj, 1, 0, 1).1.map(|_| ()), Some(()));
        assert_eq!(run(&mut obj, 1, 5, 1), (3, None));
    }
}

const DEVMAP: &[u8] = include_bytes!("../../../tests/xdp/devmap.o");

/// A run's return value and redirect, or a counter's bytes.
type Outcome = (u64, Option<Redirect>, Vec<u8>);

/// `tests/xdp/devmap.c` (ports 0-7 through a devmap, VLANs through a
/// devmap_hash): every engine gives the interpreter's return value,
/// redirect and counters, for ports present, absent and out of range.
#[test]
fn the_merged_devmap_call_matches_the_interpreter() {
    let mut outs: Vec<Vec<Outcome>> = Vec::new();
    for (engine, blind, verify) in engines() {
        let mut obj = Loader::new()
            .engine(engine)
            .jit_blind(blind)
            .load(DEVMAP)
            .unwrap();
        if verify {
            obj.check(0).expect("devmap.o verifies");
        }
        let ports = obj.map("tx_ports").unwrap().map.clone();
        for (k, ifindex) in [(0u32, 1u32), (2, 3), (5, 4)] {
            ports
                .update(&k.to_ne_bytes(), &ifindex.to_ne_bytes(), 0)
                .unwrap();
        }
        let mut got = Vec::new();
        for port in [0u8, 1, 2, 3, 5, 7, 8, 200] {
            let mut pkt = vec![0u8; 60];
            pkt[5] = port;
            pkt[12] = 0x08;
            for repeat in [1, 70] {
                let out = XdpRunner::new()
                    .unwrap()
                    .run(&mut obj, 0, &pkt, None, repeat)
                    .unwrap();
                got.push((out.retval, out.redirect, Vec::new()));
            }
        }
        if engine == Engine::Jit && verify {
            assert!(obj.runs_unchecked(0));
        }
        // The counters the program keeps.
        let stats = obj.map("port_stats").unwrap().map.clone();
        for k in 0..11u32 {
            got.push((0, None, stats.lookup(&k.to_ne_bytes()).unwrap()));
        }
        outs.push(got);
    }
    for (k, o) in outs.iter().enumerate().skip(1) {
        assert_eq!(o, &outs[0], "engine {k} against the interpreter");
    }
}
