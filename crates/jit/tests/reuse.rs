//! What a compile takes over from dropped programs: a `Jit`'s frame (state
//! block, pc table, region table, typed entries and stack) may come from
//! one dropped earlier on the same thread (see `take_frame` in the crate
//! root), and must then behave exactly as a fresh one (the stack reads as a
//! fresh interpreter's); code pages are never taken over (see `memory`'s
//! docs).

use bpfkit_interp::Interpreter;
use bpfkit_isa::Pc;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Guest, HelperResult, Helpers, Memory, TrapKind};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

/// Writes a pattern over the top frame and the bottom of the whole stack
/// (a checked program may use every frame's bytes through `r10`).
const DIRTY: &str = "
lddw %r1, 0x5a5a5a5a5a5a5a5a
stxdw [%r10-8], %r1
stxdw [%r10-256], %r1
stxdw [%r10-512], %r1
stxdw [%r10-2048], %r1
stxdw [%r10-4096], %r1
mov %r0, 1
exit";

/// Reads the same words without writing them first: zeros on a fresh
/// stack.
const READ: &str = "
ldxdw %r0, [%r10-8]
ldxdw %r1, [%r10-256]
or %r0, %r1
ldxdw %r1, [%r10-512]
or %r0, %r1
ldxdw %r1, [%r10-2048]
or %r0, %r1
ldxdw %r1, [%r10-4096]
or %r0, %r1
exit";

/// The line of `/proc/self/maps` whose mapping holds `addr`.
fn mapping_of(addr: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find(|l| {
            let (a, b) = l.split(' ').next().unwrap().split_once('-').unwrap();
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
            (a..b).contains(&addr)
        })
        .unwrap_or_else(|| panic!("{addr:#x} not mapped"))
        .to_string()
}

#[test]
fn a_reused_stack_reads_as_a_fresh_one() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = Helpers::new();
    let (dirty, read) = (prog(DIRTY), prog(READ));
    let mut mem = Memory::new();
    // The interpreter's answer on a fresh stack, and that the pattern is
    // seen when nothing clears it (a program keeps its stack between its
    // own runs, on both engines).
    let want = Interpreter::new(&read, &h).unwrap().run(&mut mem, &[]);
    assert_eq!(want, Ok(0));
    let mut reused = 0;
    // More rounds than the pool holds, some programs kept alive so that
    // stacks of several owners are in play.
    let mut keep = Vec::new();
    for round in 0..40u32 {
        let mut d = Jit::new(&dirty, &h).unwrap();
        assert_eq!(d.run(&mut mem, &[]), Ok(1));
        let dirty_stack = d.stack_range();
        if round.is_multiple_of(3) {
            keep.push(d);
        } else {
            drop(d);
        }
        let mut r = Jit::new(&read, &h).unwrap();
        if r.stack_range() == dirty_stack {
            reused += 1;
        }
        assert_eq!(r.run(&mut mem, &[]), want, "round {round}");
        // The second run sees what the first left (nothing: it wrote
        // nothing), as in the interpreter.
        assert_eq!(r.run(&mut mem, &[]), want, "round {round}, second run");
        if round.is_multiple_of(5) {
            keep.push(r);
        }
    }
    // The test must have exercised the reuse it is about.
    assert!(reused > 10, "only {reused} reused stacks");
    // A program keeps its own stack's contents between its runs: the same
    // program, run again, reads what its previous run wrote.
    let mut both = Jit::new(
        &prog("ldxdw %r0, [%r10-8]\nmov %r1, 9\nstxdw [%r10-8], %r1\nexit"),
        &h,
    )
    .unwrap();
    assert_eq!(both.run(&mut mem, &[]), Ok(0));
    assert_eq!(both.run(&mut mem, &[]), Ok(9));
}

#[test]
fn stacks_and_code_never_share_writable_executable_pages() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = Helpers::new();
    let p = prog(DIRTY);
    let mut live: Vec<Jit> = Vec::new();
    for k in 0..500u32 {
        let mut j = Jit::new(&p, &h).unwrap();
        assert_eq!(j.run(&mut Memory::new(), &[]), Ok(1));
        // The stack is plain data memory, the code read+execute only.
        let stack = mapping_of(j.stack_range().0);
        assert!(!stack.split(' ').nth(1).unwrap().contains('x'), "{stack}");
        let code = mapping_of(j.code().addr());
        assert!(code.contains(" r-xp "), "{code}");
        // No live program's code lies in another's stack or code.
        let (s0, s1) = j.stack_range();
        let (c0, c1) = (j.code().addr(), j.code().addr() + j.code().len() as u64);
        for o in &live {
            let (os0, os1) = o.stack_range();
            let (oc0, oc1) = (o.code().addr(), o.code().addr() + o.code().len() as u64);
            assert!(s1 <= os0 || os1 <= s0, "stacks overlap");
            assert!(c1 <= oc0 || oc1 <= c0, "code overlaps");
        }
        if k.is_multiple_of(4) {
            live.push(j);
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.lines().any(|l| l
            .split(' ')
            .nth(1)
            .is_some_and(|p| p.contains('w') && p.contains('x'))),
        "{maps}"
    );
}

#[test]
fn programs_dropped_on_other_threads_leave_working_stacks() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = Helpers::new();
    let (dirty, read) = (prog(DIRTY), prog(READ));
    // Compiled and run here, dropped on another thread (whose pool takes
    // the stack), and the other way round.
    for _ in 0..20 {
        let mut d = Jit::new(&dirty, &h).unwrap();
        assert_eq!(d.run(&mut Memory::new(), &[]), Ok(1));
        std::thread::spawn(move || drop(d)).join().unwrap();
        let read2 = read.clone();
        let mut r = std::thread::spawn(move || {
            let h = Helpers::new();
            let mut d = Jit::new(&prog(DIRTY), &h).unwrap();
            assert_eq!(d.run(&mut Memory::new(), &[]), Ok(1));
            drop(d);
            Jit::new(&read2, &h).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(r.run(&mut Memory::new(), &[]), Ok(0));
    }
}

/// A reused frame's pc table is the new program's: a trap after `lddw`s
/// (two slots each) reports the interpreter's pc, whatever program (with
/// other `lddw`s, or longer) left its table in the frame.
#[test]
fn a_reused_frame_reports_the_new_programs_pcs() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = Helpers::new();
    let mut long = String::new();
    for k in 0..300 {
        long.push_str(if k % 7 == 0 {
            "lddw %r1, 0x100000000\n"
        } else {
            "mov %r1, 1\n"
        });
    }
    long.push_str("mov %r0, 0\nexit");
    let long = prog(&long);
    // Instruction 3 is at pc 5: the trap must say 5, not 3 (no `lddw` in
    // the table) or the previous program's pc of instruction 3.
    let fault = prog("lddw %r1, 1\nlddw %r2, 2\nmov %r3, 0\nldxdw %r0, [%r3]\nexit");
    let mut mem = Memory::new();
    let want = Interpreter::new(&fault, &h).unwrap().run(&mut mem, &[]);
    assert_eq!(want.as_ref().map_err(|t| t.pc), Err(Pc(5)));
    let mut reused = 0;
    for round in 0..20 {
        let mut l = Jit::new(&long, &h).unwrap();
        assert_eq!(l.run(&mut mem, &[]), Ok(0));
        let stack = l.stack_range();
        drop(l);
        let mut f = Jit::new(&fault, &h).unwrap();
        reused += usize::from(f.stack_range() == stack);
        assert_eq!(f.run(&mut mem, &[]), want, "round {round}");
        // And the other way round: the long program's table is whole.
        let mut l = Jit::new(&long, &h).unwrap();
        assert_eq!(l.run(&mut mem, &[]), Ok(0));
    }
    assert!(reused > 10, "only {reused} reused frames");
}

fn ret100(_g: &mut Guest<'_, '_>, _d: &mut u64, _a: [u64; 5]) -> HelperResult {
    Ok(100)
}

fn ret200(_g: &mut Guest<'_, '_>, _d: &mut u64, _a: [u64; 5]) -> HelperResult {
    Ok(200)
}

/// A reused frame's typed entries are the new program's: its helper table
/// index 0 is helper 2 here, where the previous program's was helper 1.
#[test]
fn a_reused_frame_calls_the_new_programs_typed_helpers() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut h = Helpers::new();
    h.register_typed::<u64>(1, ret100, "u64");
    h.register_typed::<u64>(2, ret200, "u64");
    let (one, two) = (prog("call 1\nexit"), prog("call 2\nexit"));
    let mut mem = Memory::new();
    for round in 0..20 {
        let mut a = Jit::new(&one, &h).unwrap();
        assert_eq!(
            a.run_typed(&mut mem, &[], &mut 0u64),
            Ok(100),
            "round {round}"
        );
        drop(a);
        let mut b = Jit::new(&two, &h).unwrap();
        assert_eq!(
            b.run_typed(&mut mem, &[], &mut 0u64),
            Ok(200),
            "round {round}"
        );
        assert_eq!(
            b.run_with_data(&mut mem, &[], &mut 0u64),
            Ok(200),
            "round {round}, untyped"
        );
    }
}

/// Untyped runs share one table of trampolines up to 63 helpers; a program
/// calling more gets its own. Both call every helper as the interpreter
/// does, and a helper id the program does not name still traps.
#[test]
fn untyped_runs_reach_every_helper_of_short_and_long_tables() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let mut h = Helpers::new();
    for id in 1..=80u32 {
        h.register(id, move |_e, a| Ok(a[0].wrapping_mul(3) + id as u64));
    }
    for count in [1u32, 2, 62, 63, 64, 65, 80] {
        let mut text = String::from("mov %r6, 0\n");
        for id in 1..=count {
            text.push_str(&format!("mov %r1, {id}\ncall {id}\nadd %r6, %r0\n"));
        }
        text.push_str("mov %r0, %r6\nexit");
        let p = prog(&text);
        let mut mem = Memory::new();
        let want = Interpreter::new(&p, &h).unwrap().run(&mut mem, &[]);
        let sum: u64 = (1..=count as u64).map(|id| 4 * id).sum();
        assert_eq!(want, Ok(sum));
        let mut j = Jit::new(&p, &h).unwrap();
        assert_eq!(j.run(&mut mem, &[]), want, "{count} helpers");
        assert_eq!(
            j.run_typed(&mut mem, &[], &mut 0u64),
            want,
            "{count} helpers, typed"
        );
        assert_eq!(j.run(&mut mem, &[]), want, "{count} helpers, untyped again");
    }
    // An unknown helper among many known ones.
    let mut text = String::new();
    for id in 1..=70u32 {
        text.push_str(&format!("call {id}\n"));
    }
    text.push_str("call 999\nexit");
    let p = prog(&text);
    let r = Jit::new(&p, &h).unwrap().run(&mut Memory::new(), &[]);
    assert_eq!(
        r.map_err(|t| t.kind),
        Err(TrapKind::UnknownHelper {
            id: bpfkit_isa::HelperId(999)
        })
    );
}

/// `r10` is 16-aligned on entry on both engines, fresh or pooled frame:
/// a privileged program may compute with the stack's address, and its low
/// bits must not differ between the interpreter and the JIT (the soundness
/// oracle compares the two on such programs).
#[test]
fn r10_has_the_interpreters_low_bits() {
    let p = prog("mov %r0, %r10\nand %r0, 0xf\nexit");
    let h = Helpers::new();
    let mut mem = Memory::new();
    let mut vm = Interpreter::new(&p, &h).unwrap();
    let want = vm.run(&mut mem, &[]).unwrap();
    assert_eq!(want, 0, "the interpreter's r10 is 16-aligned");
    // Fresh frames, then frames from the pool (the kept ones are dropped
    // and taken again).
    for round in 0..3 {
        let mut jits: Vec<Jit> = (0..4).map(|_| Jit::new(&p, &h).unwrap()).collect();
        for jit in &mut jits {
            assert_eq!(jit.run(&mut mem, &[]).unwrap(), want, "round {round}");
            assert_eq!(jit.stack_range().1 % 16, 0, "round {round}");
        }
    }
}
