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
