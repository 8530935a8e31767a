//! What a compile takes over from dropped programs: a `Jit`'s stack may
//! come from one dropped earlier on the same thread (see `take_stack` in
//! the crate root), and must then read exactly as a fresh interpreter's
//! stack does; code pages are never taken over (see `memory`'s docs).

use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory};

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
