//! Typed runs (`Jit::run_typed`, `Jit::run_repeat`): helpers registered
//! with `Helpers::register_body` (called from the code through their own
//! direct entries) or `Helpers::register_typed` (through the typed
//! trampoline) are called directly with the run's data; everything else
//! behaves as `Jit::run_with_data` does.

use bpfkit_isa::{
    asm::{assemble, Syntax},
    HelperId, Pc, Program,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{
    Guest, HelperAbort, HelperEnv, HelperResult, Helpers, Memory, RegionKind, Trap, TrapKind,
    TypedBody,
};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

/// The per-run data of these tests.
#[derive(Default, Debug)]
struct Data {
    calls: u64,
    /// Set by helper 14: a region it added for the program to read.
    added: Option<u64>,
}

fn count(_g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
    d.calls += 1;
    Ok(a[0] + a[1] + d.calls)
}

fn read_byte(g: &mut Guest<'_, '_>, _d: &mut Data, a: [u64; 5]) -> HelperResult {
    Ok(g.load::<1>(a[0])?[0] as u64)
}

fn stop(_g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
    d.calls += 1;
    Err(HelperAbort::Stop { r0: a[0] })
}

fn fail(_g: &mut Guest<'_, '_>, _d: &mut Data, _a: [u64; 5]) -> HelperResult {
    Err(HelperAbort::Failed("typed failure".into()))
}

fn boom(_g: &mut Guest<'_, '_>, _d: &mut Data, _a: [u64; 5]) -> HelperResult {
    panic!("typed helper panicked")
}

/// Adds a new 16-byte region holding 0..16 and returns its address.
fn add_region(g: &mut Guest<'_, '_>, d: &mut Data, _a: [u64; 5]) -> HelperResult {
    let buf: &'static mut [u8] = Box::leak((0u8..16).collect::<Vec<_>>().into_boxed_slice());
    let addr = g.memory_mut().add(RegionKind::MapValue, buf);
    d.added = Some(addr);
    Ok(addr)
}

/// The test helpers as bodies (one type each), as `bpfkit-helpers`
/// registers its own.
macro_rules! bodies {
    ($($name:ident = $f:ident;)*) => {$(
        struct $name;
        impl TypedBody<Data> for $name {
            fn call(g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
                $f(g, d, a)
            }
        }
    )*};
}
bodies! {
    Count = count;
    ReadByte = read_byte;
    Stop = stop;
    Fail = fail;
    AddRegion = add_region;
    Boom = boom;
}

/// Registers body `B` as helper `id`, its `Helper` object finding the data
/// with a downcast.
fn body<B: TypedBody<Data>>(h: &mut Helpers, id: u32) {
    h.register_body::<Data, B, _>(id, |e: &mut HelperEnv<'_, '_>, a| {
        match e.split_mut::<Data>() {
            (g, Some(d)) => B::call(g, d, a),
            (_, None) => Err(HelperAbort::Failed("no Data".into())),
        }
    });
}

/// The test helpers with direct entries (`register_body`).
fn helpers() -> Helpers {
    let mut h = Helpers::new();
    body::<Count>(&mut h, 10);
    body::<ReadByte>(&mut h, 11);
    body::<Stop>(&mut h, 12);
    body::<Fail>(&mut h, 13);
    body::<AddRegion>(&mut h, 14);
    body::<Boom>(&mut h, 15);
    closure_helper(&mut h);
    h
}

/// The same helpers registered as plain functions (`register_typed`): no
/// direct entries, the typed trampoline calls them.
fn fn_helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register_typed::<Data>(10, count, "no Data");
    h.register_typed::<Data>(11, read_byte, "no Data");
    h.register_typed::<Data>(12, stop, "no Data");
    h.register_typed::<Data>(13, fail, "no Data");
    h.register_typed::<Data>(14, add_region, "no Data");
    h.register_typed::<Data>(15, boom, "no Data");
    closure_helper(&mut h);
    h
}

fn closure_helper(h: &mut Helpers) {
    // A closure helper (no typed function) reaching the same data.
    h.register(20, |e, a| {
        let d = e
            .data_mut::<Data>()
            .ok_or(HelperAbort::Failed("no".into()))?;
        d.calls += 10;
        Ok(a[0] * 2)
    });
}

/// Runs `p` over a 4-byte packet on the typed path (with the helpers' direct
/// entries, and with their typed functions) and on the dynamic one (every
/// helper through its `Helper` object), checking they agree on the result,
/// the data and the packet.
fn both(p: &Program) -> (Result<u64, Trap>, u64) {
    let mut out = Vec::new();
    for (typed, h) in [(true, helpers()), (true, fn_helpers()), (false, helpers())] {
        let mut pkt = [1u8, 2, 3, 4];
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Packet, &mut pkt);
        let mut jit = Jit::new(p, &h).unwrap();
        let mut d = Data::default();
        let r = if typed {
            jit.run_typed(&mut mem, &[addr, 5], &mut d)
        } else {
            jit.run_with_data(&mut mem, &[addr, 5], &mut d)
        };
        drop(mem);
        out.push((r, d.calls, pkt));
    }
    assert_eq!(out[0], out[1], "direct entries vs typed functions");
    assert_eq!(out[0], out[2], "typed vs dynamic");
    let (r, calls, _) = out.remove(0);
    (r, calls)
}

#[test]
fn typed_and_closure_helpers_see_the_same_data() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // r1 = packet, r2 = 5; r1-r5 survive helper calls.
    let p = prog(
        "mov %r6, %r1\nmov %r1, 3\ncall 10\nmov %r7, %r0\nmov %r1, %r7\ncall 20\nadd %r0, %r7\n\
         mov %r1, %r6\ncall 11\nadd %r0, %r7\nexit",
    );
    // count: 3 + 5 + 1 = 9; the closure: 18 (calls += 10); read_byte: 1.
    assert_eq!(both(&p), (Ok(1 + 9), 11));
}

#[test]
fn checked_code_keeps_r1_to_r5_across_helper_calls() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Checked mode runs unverified programs, which may read r1-r5 after a
    // call: they keep their values, as in the interpreter (the helper's
    // own code is free to clobber the host registers that hold them).
    let p = prog(
        "mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall 10\n\
         add %r0, %r1\nadd %r0, %r2\nadd %r0, %r3\nadd %r0, %r4\nadd %r0, %r5\nexit",
    );
    // count: 1 + 2 + 1 = 4, then 1 + 2 + 3 + 4 + 5.
    assert_eq!(both(&p), (Ok(4 + 15), 1));
}

#[test]
fn aborts_traps_and_faults_in_typed_helpers() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // A stop ends the program with its r0.
    let p = prog("mov %r1, 77\ncall 12\nmov %r0, 2\nexit");
    assert_eq!(both(&p), (Ok(77), 1));
    let p = prog("mov %r0, 0\ncall 13\nexit");
    assert_eq!(
        both(&p).0.unwrap_err(),
        Trap::new(
            Pc(1),
            TrapKind::Helper {
                id: HelperId(13),
                message: "typed failure".into()
            }
        )
    );
    // A fault in the helper's guest access is a trap at the call.
    let p = prog("mov %r1, 0x10\ncall 11\nexit");
    let t = both(&p).0.unwrap_err();
    assert_eq!(t.pc, Pc(1));
    assert!(
        matches!(t.kind, TrapKind::OutOfBounds { addr: 0x10, .. }),
        "{t:?}"
    );
}

#[test]
fn a_panic_in_a_typed_helper_resumes_after_the_code_returned() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Direct entries and typed functions alike.
    for h in [helpers(), fn_helpers()] {
        let p = prog("mov %r1, 1\ncall 10\ncall 15\nexit");
        let mut jit = Jit::new(&p, &h).unwrap();
        let mut d = Data::default();
        let mut mem = Memory::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            jit.run_typed(&mut mem, &[], &mut d)
        }));
        let msg = caught.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"typed helper panicked"));
        assert_eq!(d.calls, 1);
        // The engine is still usable, on both paths.
        let q = prog("mov %r1, 1\ncall 10\nexit");
        let mut jit = Jit::new(&q, &h).unwrap();
        assert_eq!(jit.run_typed(&mut mem, &[], &mut d), Ok(1 + 2));
        let mut jit2 = Jit::new(&p, &h).unwrap();
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            jit2.run_repeat(&mut mem, &[], &mut d, |_, _| true)
        }));
        assert!(again.is_err());
        assert_eq!(jit.run_typed(&mut mem, &[], &mut d), Ok(1 + 4));
    }
}

#[test]
fn a_typed_helper_that_adds_a_region_mid_run_is_seen_by_checked_code() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Direct entries and typed functions alike.
    for h in [helpers(), fn_helpers()] {
        // The program reads byte 9 of the region the helper just added: checked
        // code must know the new region (its table is refreshed after the call).
        let p = prog("call 14\nldxb %r0, [%r0+9]\nexit");
        let mut jit = Jit::new(&p, &h).unwrap();
        let mut mem = Memory::new();
        let mut d = Data::default();
        assert_eq!(jit.run_typed(&mut mem, &[], &mut d), Ok(9));
        // Over a series: each run adds another region and reads it.
        let mut seen = 0;
        let r = jit.run_repeat(&mut mem, &[], &mut d, |_, r0| {
            assert_eq!(r0, 9);
            seen += 1;
            seen < 5
        });
        assert_eq!((r, seen), (Ok(9), 5));
        assert_eq!(mem.regions().len(), 6);
        // Past the added region's end: the checked access traps.
        let p = prog("call 14\nldxb %r0, [%r0+16]\nexit");
        let mut jit = Jit::new(&p, &h).unwrap();
        let t = jit.run_typed(&mut mem, &[], &mut d).unwrap_err();
        assert_eq!(t.pc, Pc(1));
        assert_eq!(
            t.kind,
            TrapKind::OutOfBounds {
                addr: d.added.unwrap() + 16,
                size: 1,
                access: bpfkit_runtime::Access::Read
            }
        );
    }
}

#[test]
fn repeat_runs_see_the_previous_runs_packet_and_data() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = helpers();
    // Each run increments packet byte 0, calls `count`, and returns the
    // new byte * 1000 + count's result.
    let p = prog(
        "mov %r6, %r1\nldxb %r7, [%r6]\nadd %r7, 1\nstxb [%r6], %r7\nmov %r1, 0\nmov %r2, 0\n\
         call 10\nmul %r7, 1000\nadd %r0, %r7\nexit",
    );
    let mut jit = Jit::new(&p, &h).unwrap();
    let mut pkt = [0u8; 4];
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Packet, &mut pkt);
    let mut d = Data::default();
    let mut seen = Vec::new();
    let r = jit.run_repeat(&mut mem, &[addr], &mut d, |d, r0| {
        seen.push((r0, d.calls));
        seen.len() < 4
    });
    assert_eq!(r, Ok(4004));
    assert_eq!(seen, [(1001, 1), (2002, 2), (3003, 3), (4004, 4)]);
    // The same memory again: the series goes on from where it was.
    assert_eq!(jit.run_typed(&mut mem, &[addr], &mut d), Ok(5005));
    drop(mem);
    assert_eq!(pkt[0], 5);
}

#[test]
fn a_trap_ends_a_series_without_asking_again() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = helpers();
    // Traps on the third run: `count` returns 3 then, and the load at
    // r0 - 3 = 0 faults.
    let p = prog("mov %r1, 0\nmov %r2, 0\ncall 10\njne %r0, 3, +1\nldxb %r0, [%r0-3]\nexit");
    let mut jit = Jit::new(&p, &h).unwrap();
    let mut mem = Memory::new();
    let mut d = Data::default();
    let mut asked = 0;
    let r = jit.run_repeat(&mut mem, &[], &mut d, |_, _| {
        asked += 1;
        true
    });
    assert_eq!(asked, 2);
    assert_eq!(r.unwrap_err().pc, Pc(4));
    assert_eq!(d.calls, 3);
    // And a stop is a normal end of a run.
    let p = prog("mov %r1, 6\ncall 12\nmov %r0, 0\nexit");
    let mut jit = Jit::new(&p, &h).unwrap();
    let r = jit.run_repeat(&mut mem, &[], &mut d, |d, r0| {
        assert_eq!(r0, 6);
        d.calls < 6
    });
    assert_eq!((r, d.calls), (Ok(6), 6));
}

#[test]
fn other_data_takes_the_dynamic_path_of_typed_helpers() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = helpers();
    let p = prog("mov %r1, 1\ncall 10\nexit");
    let mut jit = Jit::new(&p, &h).unwrap();
    let mut mem = Memory::new();
    // A typed run with another data type: the helper's `Helper` object
    // fails with its `missing` message, as through `run_with_data`.
    let mut wrong = 0u32;
    let want = Err(Trap::new(
        Pc(1),
        TrapKind::Helper {
            id: HelperId(10),
            message: "no Data".into(),
        },
    ));
    assert_eq!(jit.run_typed(&mut mem, &[], &mut wrong), want);
    assert_eq!(jit.run_with_data(&mut mem, &[], &mut wrong), want);
    assert_eq!(jit.run(&mut mem, &[]), want);
    // Then the right type again (the typed table is resolved per type).
    let mut d = Data::default();
    assert_eq!(jit.run_typed(&mut mem, &[], &mut d), Ok(2));
    assert_eq!(jit.run_typed(&mut mem, &[], &mut wrong), want);
    assert_eq!(jit.run_typed(&mut mem, &[], &mut d), Ok(3));
}

#[test]
fn a_stop_deep_in_calls_does_not_leak_into_the_next_run_of_a_series() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = helpers();
    // Three frames deep, then a stop: with a budget the code counts its
    // call depth, which every run of a series must start again from 0
    // (else the ninth frame would come after three runs).
    let p = prog(
        "call local f\nmov %r0, 1\nexit\nf:\ncall local g\nexit\ng:\nmov %r1, 77\ncall 12\nexit",
    );
    for budget in [None, Some(1000)] {
        let mut b = Jit::builder();
        if let Some(n) = budget {
            b = b.budget(n);
        }
        let mut jit = b.build(&p, &h).unwrap();
        let mut mem = Memory::new();
        let mut d = Data::default();
        let r = jit.run_repeat(&mut mem, &[], &mut d, |d, r0| {
            assert_eq!(r0, 77);
            d.calls < 10
        });
        assert_eq!((r, d.calls), (Ok(77), 10), "budget {budget:?}");
    }
    // And the budget is per run: each run (a loop of 2 * 10 + 4
    // instructions) fits in 40, and traps within 12.
    let p = prog("mov %r0, 0\nadd %r0, 1\njlt %r0, 10, -2\nmov %r1, 0\ncall 10\nexit");
    let mut jit = Jit::builder().budget(40).build(&p, &h).unwrap();
    let mut mem = Memory::new();
    let mut d = Data::default();
    let r = jit.run_repeat(&mut mem, &[], &mut d, |d, _| d.calls < 10);
    assert_eq!((r, d.calls), (Ok(10), 10));
    let mut jit = Jit::builder().budget(12).build(&p, &h).unwrap();
    let mut asked = 0;
    let t = jit
        .run_repeat(&mut mem, &[], &mut d, |_, _| {
            asked += 1;
            asked < 3
        })
        .unwrap_err();
    assert_eq!(t.kind, TrapKind::BudgetExhausted { budget: 12 });
    assert_eq!(asked, 0);
}

#[test]
fn callx_by_id_takes_the_helper_objects_and_never_a_table_slot() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    use bpfkit_isa::{Insn, Reg};
    let h = helpers();
    let with_callx = |text: &str, tail: &str| {
        let mut insns = assemble(text, Syntax::Ubpf).unwrap();
        insns.push(Insn::Callx(Reg::new(6).unwrap()));
        insns.extend(assemble(tail, Syntax::Ubpf).unwrap());
        Program::from_insns(insns).unwrap()
    };
    let mut mem = Memory::new();
    // Helper 10 is table slot 0; a `callx` of id 0 must not reach it.
    let p = with_callx("mov %r1, 1\nmov %r2, 0\ncall 10\nmov %r6, 0", "exit");
    let mut jit = Jit::new(&p, &h).unwrap();
    let mut d = Data::default();
    let t = jit.run_typed(&mut mem, &[], &mut d).unwrap_err();
    assert_eq!(
        (t.pc, t.kind),
        (Pc(4), TrapKind::BadCallTarget { target: 0 })
    );
    assert_eq!(d.calls, 1);
    // By id, typed and closure helpers both run (through their objects).
    let p = with_callx(
        "mov %r6, 10\nmov %r1, 1\nmov %r2, 0",
        "mov %r6, 20\nmov %r1, %r0",
    );
    let mut insns = p.insns().to_vec();
    insns.push(Insn::Callx(Reg::new(6).unwrap()));
    insns.extend(assemble("exit", Syntax::Ubpf).unwrap());
    let p = Program::from_insns(insns).unwrap();
    let mut jit = Jit::new(&p, &h).unwrap();
    let mut d = Data::default();
    assert_eq!(jit.run_typed(&mut mem, &[], &mut d), Ok(4));
    assert_eq!(d.calls, 11);
}

#[test]
fn a_fault_in_a_helper_reports_its_own_call_site() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Two calls of the same helper: the first reads the packet, the second
    // faults; the trap is at the second call (pc 3), on every path.
    let p = prog("call 11\nmov %r6, %r0\nmov %r1, 0x10\ncall 11\nexit");
    let t = both(&p).0.unwrap_err();
    assert_eq!(t.pc, Pc(3));
    assert!(
        matches!(t.kind, TrapKind::OutOfBounds { addr: 0x10, .. }),
        "{t:?}"
    );
    // And a failure after a bpf-to-bpf call (another host stack depth).
    let p = prog("call local f\nexit\nf:\nmov %r1, 1\ncall 10\ncall 13\nexit");
    let t = both(&p).0.unwrap_err();
    assert_eq!(
        (t.pc, t.kind),
        (
            Pc(4),
            TrapKind::Helper {
                id: HelperId(13),
                message: "typed failure".into()
            }
        )
    );
}

#[test]
fn body_registration_gives_direct_entries_for_its_type_only() {
    let h = helpers();
    let e = h.typed_entry(10).expect("typed entry");
    assert!(e.raw::<Data>().is_some() && e.get::<Data>().is_some());
    assert!(e.raw::<u32>().is_none());
    let f = fn_helpers();
    assert!(f.typed_entry(10).unwrap().raw::<Data>().is_none());
    assert!(h.typed_entry(20).is_none());
}

/// Per-run data of another type, with its own typed helper.
#[derive(Default)]
struct Other {
    n: u64,
}

fn bump(_g: &mut Guest<'_, '_>, o: &mut Other, a: [u64; 5]) -> HelperResult {
    o.n += a[0];
    Ok(o.n * 100)
}

#[test]
fn alternating_data_types_each_get_their_own_typed_table() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // One `Jit`, typed helpers for two data types: the typed table cached
    // for the last type must never serve the other one (a helper for
    // `Other` called with a `Data`, or the reverse, would misread it).
    let mut h = Helpers::new();
    h.register_typed::<Data>(10, count, "no Data");
    h.register_typed::<Other>(30, bump, "no Other");
    let p = prog("mov %r1, 3\ncall 30\nexit");
    let mut jit = Jit::new(&p, &h).unwrap();
    let q = prog("mov %r1, 1\nmov %r2, 2\ncall 10\nexit");
    let mut jit_d = Jit::new(&q, &h).unwrap();
    let mut mem = Memory::new();
    let (mut d, mut o) = (Data::default(), Other::default());
    let no_other = Err(Trap::new(
        Pc(1),
        TrapKind::Helper {
            id: HelperId(30),
            message: "no Other".into(),
        },
    ));
    for k in 1..=3u64 {
        assert_eq!(jit.run_typed(&mut mem, &[], &mut o), Ok(300 * k));
        assert_eq!(jit.run_typed(&mut mem, &[], &mut d), no_other);
        assert_eq!(jit_d.run_typed(&mut mem, &[], &mut d), Ok(3 + k));
    }
    assert_eq!((o.n, d.calls), (9, 3));
}
