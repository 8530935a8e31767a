//! `Jit::run_repeat` series: what the run loop keeps from one run to the
//! next (the entry check, the region table) must be redone whenever a run
//! changed what it depends on, and what is per run (the budget) must start
//! afresh every run.

use bpfkit_abi::ProgType;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Pc, Program,
};
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::{
    Access, Guest, HelperResult, Helpers, Memory, RegionKind, TrapKind, TypedBody,
};
use bpfkit_verifier::{Options, Verdict};

#[allow(dead_code)] // the rest is for other test targets
mod common;
use common::xdp::{low_packet, xdp_md};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

/// What the helper below writes into the context, and when.
#[derive(Default)]
struct Plan {
    /// The context's address.
    ctx: u64,
    /// Calls so far.
    calls: u32,
    /// At call `at`, `data_end` becomes `end`.
    at: u32,
    end: u64,
}

/// Helper 44 (`bpf_xdp_adjust_head`'s id, so that the verifier accepts the
/// call with a context argument): moves the context's `data_end` word as
/// the plan says, for the next run's entry check to find.
fn move_end(g: &mut Guest<'_, '_>, d: &mut Plan, _a: [u64; 5]) -> HelperResult {
    d.calls += 1;
    if d.calls == d.at {
        g.store::<4>(d.ctx + 4, (d.end as u32).to_ne_bytes())?;
    }
    Ok(0)
}

struct MoveEnd;
impl TypedBody<Plan> for MoveEnd {
    fn call(g: &mut Guest<'_, '_>, d: &mut Plan, a: [u64; 5]) -> HelperResult {
        move_end(g, d, a)
    }
}

#[test]
fn a_series_redoes_the_entry_check_after_a_run_moved_the_packet_words() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Calls the helper, then reads two packet bytes (1 when the packet is
    // shorter), as a verified XDP program, compiled unchecked.
    let p = prog(
        "mov %r6, %r1\nmov %r2, 0\ncall 44\n\
         ldxw %r2, [%r6+0]\nldxw %r3, [%r6+4]\nmov %r4, %r2\nadd %r4, 2\njgt %r4, %r3, +2\n\
         ldxh %r0, [%r2+0]\nexit\nmov %r0, 1\nexit",
    );
    let (report, v) = VerifiedProgram::verify(&p, ProgType::Xdp, &[], &Options::default());
    assert_eq!(report.verdict, Verdict::Accepted, "{:?}", report.error);
    let v = v.expect("accepted");
    let Some(pkt) = low_packet(64) else {
        eprintln!("no packet buffer below 4 GiB here; skipped");
        return;
    };
    let want = u16::from_ne_bytes([0x5a, 0x5a]) as u64;
    for typed in [false, true] {
        let mut h = Helpers::new();
        // Through the typed trampoline, or the helper's direct entry.
        if typed {
            h.register_typed::<Plan>(44, move_end, "no Plan");
        } else {
            h.register_body::<Plan, MoveEnd, _>(44, |_, _| Ok(0));
        }
        let mut j = Jit::compile_verified(&v, &h).unwrap();
        assert!(j.is_unchecked());
        let pkt = &mut *pkt;
        let p = pkt.as_ptr() as u64;
        let mut md = xdp_md(p, p + 64);
        let mut mem = Memory::new();
        let a = mem.add(RegionKind::Context, &mut md);
        mem.add(RegionKind::Packet, pkt);
        // Run 3's helper moves `data_end` past the packet region: run 4
        // must not enter (the regions did not change, only the word).
        let mut d = Plan {
            ctx: a,
            at: 3,
            end: p + 65,
            ..Plan::default()
        };
        let mut runs = 0;
        let r = j.run_repeat(&mut mem, &[a], &mut d, |_, r0| {
            assert_eq!(r0, want);
            runs += 1;
            runs < 10
        });
        let t = r.unwrap_err();
        assert_eq!((runs, d.calls), (3, 3), "typed {typed}");
        assert_eq!(
            (t.pc, t.kind),
            (
                Pc(0),
                TrapKind::OutOfBounds {
                    addr: p,
                    size: 65,
                    access: Access::Write
                }
            )
        );
        // Moved inside the packet instead: the runs go on, and see it (the
        // packet is 2 bytes from run 3 on: r0 = 1).
        mem.store::<4>(a + 4, ((p + 64) as u32).to_ne_bytes())
            .unwrap();
        let mut d = Plan {
            ctx: a,
            at: 2,
            end: p + 1,
            ..Plan::default()
        };
        let mut seen = Vec::new();
        let r = j.run_repeat(&mut mem, &[a], &mut d, |_, r0| {
            seen.push(r0);
            seen.len() < 4
        });
        assert_eq!(r, Ok(1));
        assert_eq!(seen, [want, 1, 1, 1]);
    }
}

#[test]
fn every_run_of_a_series_gets_the_whole_budget() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // 10 instructions a run (a loop: the budget is counted on back jumps)
    // against a budget of 12: a budget carried over from the previous run
    // would run out in the second.
    let p = prog("mov %r0, 0\nadd %r0, 1\njlt %r0, 4, -2\nexit");
    let h = Helpers::new();
    let mut j = Jit::builder().budget(12).build(&p, &h).unwrap();
    let mut mem = Memory::new();
    let mut runs = 0;
    let r = j.run_repeat(&mut mem, &[], &mut (), |_, r0| {
        assert_eq!(r0, 4);
        runs += 1;
        runs < 50
    });
    assert_eq!((r, runs), (Ok(4), 50));
    // And 18 do run out, in the first run.
    let p = prog("mov %r0, 0\nadd %r0, 1\njlt %r0, 8, -2\nexit");
    let mut j = Jit::builder().budget(12).build(&p, &h).unwrap();
    let mut runs = 0;
    let t = j
        .run_repeat(&mut mem, &[], &mut (), |_, _| {
            runs += 1;
            runs < 5
        })
        .unwrap_err();
    assert_eq!(runs, 0);
    assert_eq!(t.kind, TrapKind::BudgetExhausted { budget: 12 });
}

/// Moves of the context's packet words, by helper call: at call `.0` the
/// 32-bit field at offset `.1` (0 `data`, 4 `data_end`, 8 `data_meta`)
/// becomes `.2`.
#[derive(Default)]
struct Moves {
    ctx: u64,
    calls: u32,
    at: Vec<(u32, u64, u64)>,
}

struct MoveWords;
impl TypedBody<Moves> for MoveWords {
    fn call(g: &mut Guest<'_, '_>, d: &mut Moves, _a: [u64; 5]) -> HelperResult {
        d.calls += 1;
        for &(call, off, v) in &d.at {
            if call == d.calls {
                g.store::<4>(d.ctx + off, (v as u32).to_ne_bytes())?;
            }
        }
        Ok(0)
    }
}

#[test]
fn packet_words_moved_on_every_run_are_checked_against_the_packet_region_each_time() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Calls the helper, then returns data_end - data.
    let p = prog(
        "mov %r6, %r1\nmov %r2, 0\ncall 44\n\
         ldxw %r2, [%r6+0]\nldxw %r3, [%r6+4]\nmov %r0, %r3\nsub %r0, %r2\nexit",
    );
    let (report, v) = VerifiedProgram::verify(&p, ProgType::Xdp, &[], &Options::default());
    assert_eq!(report.verdict, Verdict::Accepted, "{:?}", report.error);
    let v = v.expect("accepted");
    // The packet region is bytes 64..192 of one page: there is memory on
    // both sides that is no region (a check that let a word out would not
    // fault, and the runs would go on).
    let Some(page) = low_packet(256) else {
        eprintln!("no packet buffer below 4 GiB here; skipped");
        return;
    };
    let mut h = Helpers::new();
    h.register_body::<Moves, MoveWords, _>(44, |_, _| Ok(0));
    let mut j = Jit::compile_verified(&v, &h).unwrap();
    assert!(j.is_unchecked());
    let base = page.as_ptr() as u64;
    let (lo, hi) = (base + 64, base + 192);
    let pkt = &mut page[64..192];
    // Every run moves data_end (as adjust_tail growing and trimming in
    // turn), data and data_meta sometimes, all inside the region, then
    // the last move (at call 6) takes one word out of it in a way the
    // earlier moves did not: run 7 must not enter.
    let inside = |k: u32| -> Vec<(u32, u64, u64)> {
        let mut v: Vec<_> = (1..k)
            .map(|c| (c, 4, if c % 2 == 1 { hi - 8 } else { hi }))
            .collect();
        v.push((3, 0, lo + 16));
        v.push((4, 8, lo + 4));
        v
    };
    let cases: [(&str, (u64, u64), TrapKind); 4] = [
        (
            "data_meta below the region",
            (8, lo - 4),
            TrapKind::OutOfBounds {
                addr: lo - 4,
                size: (hi - 8 - (lo - 4)) as usize,
                access: Access::Write,
            },
        ),
        (
            "data_end past the region",
            (4, hi + 8),
            TrapKind::OutOfBounds {
                addr: lo + 4,
                size: (hi + 8 - (lo + 4)) as usize,
                access: Access::Write,
            },
        ),
        (
            "data after data_end",
            (0, hi - 4),
            TrapKind::OutOfBounds {
                addr: lo + 4,
                size: (hi - 8 - (lo + 4)) as usize,
                access: Access::Write,
            },
        ),
        (
            "data_meta after data",
            (8, lo + 20),
            TrapKind::OutOfBounds {
                addr: lo + 20,
                size: (hi - 8 - (lo + 20)) as usize,
                access: Access::Write,
            },
        ),
    ];
    let mut md = xdp_md(lo, hi);
    let mut mem = Memory::new();
    let a = mem.add(RegionKind::Context, &mut md);
    mem.add(RegionKind::Packet, pkt);
    for (what, (off, v), want) in cases {
        mem.store::<4>(a, (lo as u32).to_ne_bytes()).unwrap();
        mem.store::<4>(a + 4, (hi as u32).to_ne_bytes()).unwrap();
        mem.store::<4>(a + 8, (lo as u32).to_ne_bytes()).unwrap();
        let mut at = inside(6);
        at.push((6, off, v));
        let mut d = Moves {
            ctx: a,
            calls: 0,
            at,
        };
        let mut seen = Vec::new();
        let t = j
            .run_repeat(&mut mem, &[a], &mut d, |_, r0| {
                seen.push(r0);
                seen.len() < 20
            })
            .unwrap_err();
        // Run r returns data_end - data as its own call left them: data_end
        // hi - 8 after odd calls, hi after even ones; data lo + 16 from
        // call 3 on; call 6 moves only the word of the case.
        let mut want_seen: Vec<u64> = (1..=6u64)
            .map(|r| {
                let end = if r % 2 == 1 { hi - 8 } else { hi };
                let data = if r >= 3 { lo + 16 } else { lo };
                end - data
            })
            .collect();
        match off {
            0 => want_seen[5] = (hi - 8).wrapping_sub(v),
            4 => want_seen[5] = v - (lo + 16),
            _ => want_seen[5] = hi - 8 - (lo + 16),
        }
        assert_eq!((seen, d.calls), (want_seen, 6), "{what}");
        assert_eq!((t.pc, t.kind), (Pc(0), want), "{what}");
    }
}
