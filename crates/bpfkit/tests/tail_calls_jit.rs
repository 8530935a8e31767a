//! Native tail calls through the facade: unchecked JIT code enters an
//! unchecked target without leaving the run (`bpfkit_jit::TailTable`),
//! with the results, map contents, tail-call counts and traps of the
//! interpreter and of the JIT's helper path (blinded code and checked
//! targets take the helper). Fixture: `tests/tail/tail_chain.c`
//! (program 0 `head` tail-calls slot word 0 of its context; `chain`
//! tail-calls slot word 3).

mod common;

use bpfkit::runtime::{Trap, TrapKind};
use bpfkit::{Engine, Loader, Object};
use bpfkit_isa::{HelperId, Pc};

const FIXTURE: &[u8] = include_bytes!("tail/tail_chain.o");
const HEAD: usize = 0;
const LEAF: usize = 1;
const CHAIN: usize = 2;
const UNKNOWN: usize = 3;

/// The fixture with `progs` slots 0 = leaf, 1 = chain, 3 = unknown (2
/// empty), every program checked (so unchecked on the JIT) unless
/// `skip_check` names it.
fn load(engine: Engine, blind: bool, skip_check: Option<usize>) -> Object {
    let obj = Loader::new()
        .engine(engine)
        .jit_blind(blind)
        .load(FIXTURE)
        .unwrap();
    for p in [HEAD, LEAF, CHAIN, UNKNOWN] {
        if Some(p) != skip_check {
            obj.check(p).expect("the fixture verifies");
        }
    }
    obj.set_prog_array("progs", 0, "leaf").unwrap();
    obj.set_prog_array("progs", 1, "chain").unwrap();
    obj.set_prog_array("progs", 3, "unknown").unwrap();
    obj
}

/// The `runs` counters: head, leaf, chain, unknown.
fn runs(obj: &Object) -> [u64; 4] {
    let m = &obj.map("runs").unwrap().map;
    std::array::from_fn(|k| {
        let v = m.lookup(&(k as u32).to_ne_bytes()).unwrap();
        u64::from_ne_bytes(v[..8].try_into().unwrap())
    })
}

/// One `run` of `head` with context words `w`: (result, tail calls, the
/// counters it added).
fn run(obj: &mut Object, w: [u32; 4], repeat: u32) -> (Result<u64, Trap>, u32, [u64; 4]) {
    let before = runs(obj);
    let out = common::run_words(obj, &w, 0, repeat);
    let after = runs(obj);
    (
        out.result,
        out.tail_calls,
        std::array::from_fn(|k| after[k] - before[k]),
    )
}

/// The pc of `unknown`'s call of the missing helper (on every engine).
fn unknown_trap() -> Trap {
    let obj = Loader::new().engine(Engine::Interp).load(FIXTURE).unwrap();
    let insns = &obj.elf().programs[UNKNOWN].insns;
    let pc = insns
        .iter()
        .find(|(_, i)| matches!(i, bpfkit_isa::Insn::Call(HelperId(14))))
        .map(|(pc, _)| pc)
        .expect("the call of bpf_get_current_pid_tgid");
    Trap::new(Pc(pc.0), TrapKind::UnknownHelper { id: HelperId(14) })
}

/// Every case on one object of `engine`: each result, count and counter
/// is the kernel's (and so the same on every engine).
fn check(engine: Engine, blind: bool, native: bool) {
    let what = format!("{engine:?} blind {blind}");
    let mut obj = load(engine, blind, None);
    // A first run settles the verdicts (unchecked code, the table).
    assert_eq!(run(&mut obj, [0, 5, 0, 2], 1).0, Ok(47), "{what}");
    if engine == Engine::Jit {
        assert!(
            obj.runs_unchecked(HEAD) && obj.runs_unchecked(LEAF),
            "{what}"
        );
        for p in [LEAF, CHAIN, UNKNOWN] {
            assert_eq!(obj.tail_calls_native(HEAD, p), native, "{what} {p}");
        }
    }
    // Into leaf, which reads the head's context.
    assert_eq!(
        run(&mut obj, [0, 5, 9, 2], 1),
        (Ok(47), 1, [1, 1, 0, 0]),
        "{what}"
    );
    // An empty slot uses one of the 33; the head goes on.
    assert_eq!(
        run(&mut obj, [2, 5, 9, 2], 1),
        (Ok(1009), 1, [1, 0, 0, 0]),
        "{what}"
    );
    // An index past the end uses none.
    for slot in [8, 9, u32::MAX] {
        assert_eq!(
            run(&mut obj, [slot, 5, 9, 2], 1),
            (Ok(1009), 0, [1, 0, 0, 0]),
            "{what}"
        );
    }
    // chain -> chain -> ...: 33 tail calls, the 34th fails and the 33rd
    // run of chain returns 7.
    assert_eq!(
        run(&mut obj, [1, 5, 9, 1], 1),
        (Ok(7), 33, [1, 0, 33, 0]),
        "{what}"
    );
    // Each run of a batch has its own 33.
    assert_eq!(
        run(&mut obj, [1, 5, 9, 1], 4),
        (Ok(7), 33, [4, 0, 132, 0]),
        "{what}"
    );
    // chain -> leaf: two in a row.
    assert_eq!(
        run(&mut obj, [1, 6, 9, 0], 3),
        (Ok(48), 2, [3, 3, 3, 0]),
        "{what}"
    );
    // A target that traps: its own pc.
    let (r, n, added) = run(&mut obj, [3, 5, 9, 2], 1);
    assert_eq!(
        (r, n, added),
        (Err(unknown_trap()), 1, [1, 0, 0, 1]),
        "{what}"
    );
    // Slots changed between runs: seen at the next tail call.
    obj.set_prog_array("progs", 0, "chain").unwrap();
    assert_eq!(
        run(&mut obj, [0, 5, 9, 2], 1),
        (Ok(7), 2, [1, 0, 1, 0]),
        "{what}"
    );
    let progs = obj.map("progs").unwrap().map.clone();
    progs.delete(&0u32.to_ne_bytes()).unwrap();
    assert_eq!(
        run(&mut obj, [0, 5, 9, 2], 1),
        (Ok(1009), 1, [1, 0, 0, 0]),
        "{what}"
    );
    obj.set_prog_array("progs", 0, "leaf").unwrap();
    assert_eq!(
        run(&mut obj, [0, 5, 9, 2], 2),
        (Ok(47), 1, [2, 2, 0, 0]),
        "{what}"
    );
    // The head itself as a target: 34 runs of it, the last one goes on.
    obj.set_prog_array("progs", 2, "head").unwrap();
    assert_eq!(
        run(&mut obj, [2, 5, 9, 2], 1),
        (Ok(1009), 33, [34, 0, 0, 0]),
        "{what}"
    );
}

#[test]
fn tail_calls_on_every_engine() {
    check(Engine::Interp, false, false);
    if bpfkit_jit::is_supported() {
        // Unchecked code enters its targets natively; blinded code takes
        // the helper (as do the targets of checked code).
        check(Engine::Jit, false, true);
        check(Engine::Jit, true, false);
    }
}

/// A target that is not verified runs checked: unchecked code does not
/// enter it natively, and the facade runs it after the head stops.
#[test]
fn a_checked_target_is_not_entered_natively() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut obj = load(Engine::Jit, false, Some(LEAF));
    assert_eq!(run(&mut obj, [0, 5, 9, 2], 1), (Ok(47), 1, [1, 1, 0, 0]));
    assert!(obj.runs_unchecked(HEAD) && !obj.runs_unchecked(LEAF));
    assert!(!obj.tail_calls_native(HEAD, LEAF));
    assert!(obj.tail_calls_native(HEAD, CHAIN));
    // chain (native) -> leaf (checked, through the facade).
    assert_eq!(run(&mut obj, [1, 5, 9, 0], 2), (Ok(47), 2, [2, 2, 2, 0]));
}

/// Without verification every program runs checked and every tail call
/// goes through the helper, with the same results.
#[test]
fn unverified_objects_take_the_helper() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut obj = Loader::new()
        .engine(Engine::Jit)
        .verify(false)
        .load(FIXTURE)
        .unwrap();
    obj.set_prog_array("progs", 0, "leaf").unwrap();
    obj.set_prog_array("progs", 1, "chain").unwrap();
    assert_eq!(run(&mut obj, [0, 5, 9, 2], 1), (Ok(47), 1, [1, 1, 0, 0]));
    assert_eq!(run(&mut obj, [1, 5, 9, 1], 1), (Ok(7), 33, [1, 0, 33, 0]));
    assert!(!obj.runs_unchecked(HEAD) && !obj.tail_calls_native(HEAD, CHAIN));
}

/// Another thread changes slot 0 while runs go on: every run sees some
/// state of the slot (leaf, chain or empty) at its tail call, never
/// anything else, on every engine.
#[test]
fn slots_changed_by_another_thread_during_runs() {
    let mut engines = vec![(Engine::Interp, false)];
    if bpfkit_jit::is_supported() {
        engines.push((Engine::Jit, false));
    }
    for (engine, blind) in engines {
        let mut obj = load(engine, blind, None);
        assert_eq!(run(&mut obj, [0, 5, 9, 2], 1).0, Ok(47));
        let progs = obj.map("progs").unwrap().map.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (progs, stop) = (progs.clone(), stop.clone());
            // Program ids: leaf 2, chain 3 (program index + 1).
            std::thread::spawn(move || {
                let mut k = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = 0u32.to_ne_bytes();
                    match k % 3 {
                        0 => progs.update(&key, &2u32.to_ne_bytes(), 0).unwrap(),
                        1 => progs.update(&key, &3u32.to_ne_bytes(), 0).unwrap(),
                        _ => {
                            let _ = progs.delete(&key);
                        }
                    }
                    k = k.wrapping_add(1);
                }
            })
        };
        let mut seen = [0u32; 3];
        for _ in 0..2000 {
            // chain's own tail call goes to slot 2 (empty): 7.
            let (r, n, added) = run(&mut obj, [0, 5, 9, 2], 1);
            match (r, n, added) {
                (Ok(47), 1, [1, 1, 0, 0]) => seen[0] += 1,
                (Ok(7), 2, [1, 0, 1, 0]) => seen[1] += 1,
                (Ok(1009), 1, [1, 0, 0, 0]) => seen[2] += 1,
                other => panic!("{engine:?}: {other:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert_eq!(seen.iter().sum::<u32>(), 2000, "{engine:?} {seen:?}");
    }
}
