//! Native tail calls (`TailTable`, unchecked mode): `bpf_tail_call` on a
//! program array the resolver describes enters a published target without
//! calling the helper, with the helper's semantics: 33 tail calls a run
//! (the 34th fails and the caller goes on), an empty slot uses one, an
//! index past the end none, the slot is read at the call (changed between
//! runs or during the run), traps name the target's instruction; targets
//! that cannot be entered so (not published, checked, blinded, another
//! table, untyped runs) take the helper, which the test follows as the
//! `bpfkit` facade does.

#[allow(dead_code)]
mod common;

use bpfkit_abi::{MapDef, MapType};
use bpfkit_isa::{
    asm::{assemble, Syntax},
    HelperId, Imm64, Insn, Pc, Program, Reg,
};
use bpfkit_jit::{Jit, TailTable};
use bpfkit_runtime::{
    Guest, HelperAbort, HelperEnv, HelperResult, Helpers, Imm64Resolver, Memory, RegionKind,
    SlotMap, Trap, TrapKind, TypedBody,
};
use common::inline::{kprobe_ctx, verify};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The address `lddw` gives for map 0, the program array.
const MAP_ADDR: u64 = 0x7000_0000_1000;
const SLOTS: u32 = 8;

/// The per-run data: the tail-call count the table and the helper share.
#[derive(Default)]
struct Data {
    count: u32,
    /// Calls of the tail-call helper.
    helper_calls: u32,
    /// The program a successful helper tail call asked for.
    next: Option<u32>,
    /// Helper 5 puts `.1` into slot 0 of `.0`.
    flip: Option<(Arc<Vec<AtomicU64>>, u64)>,
    words: Option<Arc<Vec<AtomicU64>>>,
}

/// `bpf_tail_call` as `bpfkit_helpers` has it: count before the slot.
struct TailCall;
impl TypedBody<Data> for TailCall {
    fn call(_g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
        d.helper_calls += 1;
        let words = d.words.clone().expect("words");
        let index = a[2] as u32;
        if a[1] != MAP_ADDR || index >= SLOTS || d.count >= 33 {
            return Ok(-22i64 as u64);
        }
        d.count += 1;
        match words[index as usize].load(Ordering::Acquire) {
            0 => Ok(-2i64 as u64),
            w => {
                d.next = Some(w as u32);
                Err(HelperAbort::Stop { r0: 0 })
            }
        }
    }
}

/// Helper 5 (`ktime_get_ns` to the verifier): changes slot 0.
struct Flip;
impl TypedBody<Data> for Flip {
    fn call(_g: &mut Guest<'_, '_>, d: &mut Data, _a: [u64; 5]) -> HelperResult {
        if let Some((w, v)) = &d.flip {
            w[0].store(*v, Ordering::Release);
        }
        Ok(5)
    }
}

fn body<B: TypedBody<Data>>(h: &mut Helpers, id: u32) {
    h.register_body::<Data, B, _>(id, |e: &mut HelperEnv<'_, '_>, a| {
        match e.split_mut::<Data>() {
            (g, Some(d)) => B::call(g, d, a),
            (_, None) => Err(HelperAbort::Failed("no Data".into())),
        }
    });
}

fn helpers() -> Helpers {
    let mut h = Helpers::new();
    body::<TailCall>(&mut h, 12);
    body::<Flip>(&mut h, 5);
    h
}

struct Resolver(SlotMap);

impl Imm64Resolver for Resolver {
    fn resolve(&self, _pc: Pc, imm: &Imm64) -> Option<u64> {
        matches!(imm, Imm64::MapIdx(0)).then_some(MAP_ADDR)
    }
    fn prog_array(&self, _pc: Pc, imm: &Imm64) -> Option<SlotMap> {
        matches!(imm, Imm64::MapIdx(0)).then_some(self.0)
    }
}

/// `lddw %r2, 0` names the program array.
fn prog(text: &str) -> Program {
    let mut insns = assemble(text, Syntax::Ubpf).unwrap();
    for insn in &mut insns {
        if let Insn::LoadImm64 {
            dst: Reg::R2,
            imm: imm @ Imm64::Value(0),
        } = insn
        {
            *imm = Imm64::MapIdx(0);
        }
    }
    Program::from_insns(insns).unwrap()
}

/// Tail-calls the slot in context word 0 (after helper 5 when `flip`);
/// 1000 when the call does not happen.
fn head(flip: bool) -> Program {
    let pre = if flip {
        "mov %r6, %r1\ncall 5\nmov %r1, %r6\n"
    } else {
        ""
    };
    prog(&format!(
        "{pre}ldxw %r3, [%r1+0]\nlddw %r2, 0\ncall 12\nmov %r0, 1000\nexit"
    ))
}

/// 42 plus context word 2 (the head's context).
const LEAF: &str = "ldxw %r0, [%r1+8]\nadd %r0, 42\nexit";
/// Tail-calls slot 1; 7 when the call does not happen.
const CHAIN: &str = "mov %r3, 1\nlddw %r2, 0\ncall 12\nmov %r0, 7\nexit";
/// Calls helper 14, which is not registered: a trap at instruction 1.
const UNKNOWN: &str = "mov %r0, 0\ncall 14\nexit";

/// Programs by id (index = id; 0 unused) and the slot words.
struct World {
    jits: Vec<Option<Jit>>,
    words: Arc<Vec<AtomicU64>>,
    table: Arc<TailTable>,
}

const HEAD: u32 = 1;
const HEAD_FLIP: u32 = 2;
const LEAF_ID: u32 = 3;
const CHAIN_ID: u32 = 4;
const UNKNOWN_ID: u32 = 5;
const LEAF_CHECKED: u32 = 6;

fn world() -> World {
    let words: Arc<Vec<AtomicU64>> = Arc::new((0..SLOTS).map(|_| AtomicU64::new(0)).collect());
    let r = Resolver(SlotMap {
        slots: words.as_ptr() as u64,
        max_entries: SLOTS,
    });
    let defs = [MapDef::new(MapType::ProgArray, 4, 4, SLOTS)];
    let h = helpers();
    let table = TailTable::new::<Data>(8, |d| &mut d.count);
    let unchecked = |p: &Program| {
        Jit::builder()
            .resolver(&r)
            .tail_calls(&table)
            .build_verified(&verify(p, &defs), &h)
            .unwrap()
    };
    let checked = |p: &Program| {
        Jit::builder()
            .resolver(&r)
            .tail_calls(&table)
            .build(p, &h)
            .unwrap()
    };
    let jits = vec![
        None,
        Some(unchecked(&head(false))),
        Some(unchecked(&head(true))),
        Some(unchecked(&prog(LEAF))),
        Some(unchecked(&prog(CHAIN))),
        Some(unchecked(&prog(UNKNOWN))),
        Some(checked(&prog(LEAF))),
    ];
    for id in [HEAD, HEAD_FLIP, LEAF_ID, CHAIN_ID, UNKNOWN_ID] {
        assert!(
            table.publish(id, jits[id as usize].as_ref().unwrap()),
            "{id}"
        );
    }
    // Checked code is never published.
    assert!(!table.publish(LEAF_CHECKED, jits[LEAF_CHECKED as usize].as_ref().unwrap()));
    World { jits, words, table }
}

fn fill(w: &World, slot: usize, id: u32) {
    let word = if id == 0 { 0 } else { 1 << 32 | id as u64 };
    w.words[slot].store(word, Ordering::Release);
}

/// One run of program `id` with context words (0: the slot, 2: the leaf's
/// addend), following helper tail calls as the facade does: (result,
/// data).
fn run(
    w: &mut World,
    id: u32,
    slot: u64,
    add: u64,
    flip: Option<u32>,
) -> (Result<u64, Trap>, Data) {
    let mut regs = kprobe_ctx(slot, add << 32);
    regs[8..12].copy_from_slice(&(add as u32).to_le_bytes());
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    let mut d = Data {
        words: Some(w.words.clone()),
        flip: flip.map(|id| (w.words.clone(), 1 << 32 | id as u64)),
        ..Data::default()
    };
    let mut id = id;
    loop {
        let Some(Some(jit)) = w.jits.get_mut(id as usize) else {
            let what = "tail call to a program that is not loaded";
            return (Err(Trap::new(Pc(0), TrapKind::Unsupported { what })), d);
        };
        let r = jit.run_typed(&mut mem, &[ctx], &mut d);
        match d.next.take() {
            Some(next) if r.is_ok() => id = next,
            _ => return (r, d),
        }
    }
}

#[test]
fn published_targets_are_entered_without_the_helper() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut w = world();
    fill(&w, 0, LEAF_ID);
    let (r, d) = run(&mut w, HEAD, 0, 5, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(47), 1, 0));
    // Taken out: the helper, then the facade's way, same result.
    w.table.clear(LEAF_ID);
    let (r, d) = run(&mut w, HEAD, 0, 5, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(47), 1, 1));
    // A checked target: the helper.
    fill(&w, 0, LEAF_CHECKED);
    let (r, d) = run(&mut w, HEAD, 0, 6, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(48), 1, 1));
    // Published again.
    assert!(w
        .table
        .publish(LEAF_ID, w.jits[LEAF_ID as usize].as_ref().unwrap()));
    fill(&w, 0, LEAF_ID);
    let (r, d) = run(&mut w, HEAD, 0, 7, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(49), 1, 0));
}

#[test]
fn the_limit_is_33_tail_calls_a_run() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut w = world();
    fill(&w, 1, CHAIN_ID);
    // head -> chain -> chain ...: the 34th fails in the 33rd chain run.
    let (r, d) = run(&mut w, HEAD, 1, 0, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(7), 33, 0));
    // The same through the helper (chain unpublished): 33 successful
    // helper calls; the 34th fails in the sequence (the count comes
    // before the slot).
    w.table.clear(CHAIN_ID);
    let (r, d) = run(&mut w, HEAD, 1, 0, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(7), 33, 33));
    // Runs in a row each start from 0 (`run_repeat`'s `again` resets it).
    assert!(w
        .table
        .publish(CHAIN_ID, w.jits[CHAIN_ID as usize].as_ref().unwrap()));
    let mut regs = kprobe_ctx(1, 0);
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    let mut d = Data {
        words: Some(w.words.clone()),
        ..Data::default()
    };
    let mut n = 0;
    let jit = w.jits[HEAD as usize].as_mut().unwrap();
    let r = jit.run_repeat(&mut mem, &[ctx], &mut d, |d, r0| {
        assert_eq!((r0, d.count), (7, 33));
        d.count = 0;
        n += 1;
        n < 5
    });
    assert_eq!((r, n, d.helper_calls), (Ok(7), 5, 0));
}

#[test]
fn empty_slots_and_indexes_past_the_end() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut w = world();
    // Empty: one of the 33 used, the head goes on.
    let (r, d) = run(&mut w, HEAD, 3, 0, None);
    assert_eq!((r, d.count, d.helper_calls), (Ok(1000), 1, 0));
    // Past the end (the high half of the index is not the index's).
    for slot in [SLOTS as u64, 9, u32::MAX as u64, 1 << 32] {
        let (r, d) = run(&mut w, HEAD, slot, 0, None);
        let want = if slot == 1 << 32 { 1 } else { 0 };
        assert_eq!(
            (r, d.count, d.helper_calls),
            (Ok(1000), want, 0),
            "{slot:#x}"
        );
    }
    // An id without a table entry (past the table's ids): the helper.
    fill(&w, 2, 8);
    let (r, d) = run(&mut w, HEAD, 2, 0, None);
    assert_eq!((r.is_err(), d.count, d.helper_calls), (true, 1, 1));
}

#[test]
fn slots_are_read_at_the_call() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut w = world();
    fill(&w, 0, LEAF_ID);
    // Helper 5 puts chain into slot 0 before the tail call of the run.
    let (r, d) = run(&mut w, HEAD_FLIP, 0, 0, Some(CHAIN_ID));
    assert_eq!(
        (r, d.count, d.helper_calls),
        (Ok(7), 2, 0),
        "chain, slot 1 empty"
    );
    fill(&w, 1, LEAF_ID);
    fill(&w, 0, UNKNOWN_ID);
    let (r, d) = run(&mut w, HEAD_FLIP, 0, 3, Some(CHAIN_ID));
    assert_eq!(
        (r, d.count, d.helper_calls),
        (Ok(45), 2, 0),
        "head -> chain -> leaf"
    );
    // Between runs.
    fill(&w, 0, LEAF_ID);
    assert_eq!(run(&mut w, HEAD, 0, 1, None).0, Ok(43));
    fill(&w, 0, 0);
    assert_eq!(run(&mut w, HEAD, 0, 1, None).0, Ok(1000));
}

#[test]
fn a_target_that_traps_reports_its_own_pc() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut w = world();
    fill(&w, 0, UNKNOWN_ID);
    let want = Trap::new(Pc(1), TrapKind::UnknownHelper { id: HelperId(14) });
    let (r, d) = run(&mut w, HEAD, 0, 0, None);
    assert_eq!((r, d.count, d.helper_calls), (Err(want.clone()), 1, 0));
    // The same as the target's own run, and as through the helper.
    let (r, _) = run(&mut w, UNKNOWN_ID, 0, 0, None);
    assert_eq!(r, Err(want.clone()));
    w.table.clear(UNKNOWN_ID);
    let (r, d) = run(&mut w, HEAD, 0, 0, None);
    assert_eq!((r, d.helper_calls), (Err(want), 1));
    // The head runs normally after it.
    fill(&w, 0, LEAF_ID);
    assert_eq!(run(&mut w, HEAD, 0, 2, None).0, Ok(44));
}

#[test]
fn untyped_runs_and_other_tables_take_the_helper() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut w = world();
    fill(&w, 0, LEAF_ID);
    let mut regs = kprobe_ctx(0, 0);
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    let mut d = Data {
        words: Some(w.words.clone()),
        ..Data::default()
    };
    let jit = w.jits[HEAD as usize].as_mut().unwrap();
    // `run_with_data`: no count pointer, the helper (which stops the head).
    assert_eq!(jit.run_with_data(&mut mem, &[ctx], &mut d), Ok(0));
    assert_eq!((d.count, d.helper_calls, d.next), (1, 1, Some(LEAF_ID)));
    // Code of another table, blinded code and budgets are not published.
    let other = TailTable::new::<Data>(8, |d| &mut d.count);
    let r = Resolver(SlotMap {
        slots: w.words.as_ptr() as u64,
        max_entries: SLOTS,
    });
    let defs = [MapDef::new(MapType::ProgArray, 4, 4, SLOTS)];
    let v = verify(&prog(LEAF), &defs);
    let h = helpers();
    let b = || Jit::builder().resolver(&r);
    let foreign = b().tail_calls(&other).build_verified(&v, &h).unwrap();
    assert!(!w.table.publish(LEAF_ID, &foreign) && other.publish(LEAF_ID, &foreign));
    let blinded = b().tail_calls(&w.table).blind_constants(true);
    assert!(!w
        .table
        .publish(LEAF_ID, &blinded.build_verified(&v, &h).unwrap()));
    let budget = b().tail_calls(&w.table).budget(1000);
    assert!(!w
        .table
        .publish(LEAF_ID, &budget.build_verified(&v, &h).unwrap()));
    let none = b().build_verified(&v, &h).unwrap();
    assert!(!w.table.publish(LEAF_ID, &none));
    // Each refusal took the id out.
    let (r, d) = run(&mut w, HEAD, 0, 0, None);
    assert_eq!((r, d.helper_calls), (Ok(42), 1));
}
