//! `bpf_loop` (a helper registered with `Helpers::register_callback`) on
//! the interpreter, the checked JIT and, for programs the verifier
//! accepts, the unchecked JIT: every engine must give the same result or
//! the same trap, and the result the kernel gives (`tests/xdp/loop_sum`
//! checks the kernel itself).

use bpfkit_abi::ProgType;
use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Pc, Program,
};
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::{Callback, Helpers, Memory, RegionKind, Trap, TrapKind, MAX_CALL_FRAMES};
use bpfkit_verifier::Options;

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register_callback(181, Callback::Loop);
    h
}

fn run_interp(p: &Program, budget: Option<u64>) -> Result<u64, Trap> {
    let h = helpers();
    let mut b = Interpreter::builder();
    if let Some(n) = budget {
        b = b.budget(n);
    }
    let mut vm = b.build(p, &h).unwrap();
    let mut regs = [0u8; 168];
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    vm.run(&mut mem, &[ctx])
}

fn run_jit(mut jit: Jit) -> Result<u64, Trap> {
    let mut regs = [0u8; 168]; // struct pt_regs
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    jit.run(&mut mem, &[ctx])
}

/// The result on the interpreter and the checked JIT, which must agree
/// (and on the unchecked JIT too when `verified`: the verifier must then
/// accept the program as a kprobe).
fn run_all(text: &str, verified: bool) -> Result<u64, Trap> {
    let p = prog(text);
    let h = helpers();
    let want = run_interp(&p, None);
    let checked = run_jit(Jit::new(&p, &h).unwrap());
    assert_eq!(
        checked, want,
        "checked JIT against the interpreter:\n{text}"
    );
    let (report, v) = VerifiedProgram::verify(&p, ProgType::Kprobe, &[], &Options::default());
    if verified {
        let v = v.unwrap_or_else(|| panic!("rejected: {:?}\n{text}", report.error));
        let unchecked = run_jit(Jit::compile_verified(&v, &h).unwrap());
        assert_eq!(
            unchecked, want,
            "unchecked JIT against the interpreter:\n{text}"
        );
    }
    want
}

/// Sums the indexes into a stack slot of the caller; the callback
/// overwrites r6-r9, which the caller reads afterwards.
const SUM: &str = "mov %r6, 11
    mov %r7, 22
    mov %r8, 33
    mov %r9, 44
    stdw [%r10-8], 0
    mov %r1, 10
    lddw %r2, func cb
    mov %r3, %r10
    add %r3, -8
    mov %r4, 0
    call 181
    ldxdw %r1, [%r10-8]
    mul %r0, 1000
    add %r0, %r1
    mov %r1, %r6
    add %r1, %r7
    add %r1, %r8
    add %r1, %r9
    mul %r1, 1000000
    add %r0, %r1
    exit
    cb:
    ldxdw %r3, [%r2]
    add %r3, %r1
    stxdw [%r2], %r3
    mov %r6, 1
    mov %r7, 2
    mov %r8, 3
    mov %r9, 4
    mov %r0, 0
    exit";

#[test]
fn callback_runs_nr_loops_times_and_keeps_the_callers_registers() {
    // 10 calls, indexes 0..9 summed (45), r6-r9 still 11+22+33+44.
    assert_eq!(run_all(SUM, true), Ok(110 * 1_000_000 + 10 * 1000 + 45));
}

#[test]
fn a_callback_returning_one_stops_the_loop_and_is_counted() {
    let text = "mov %r1, 100
        lddw %r2, func cb
        mov %r3, 0
        mov %r4, 0
        call 181
        exit
        cb:
        mov %r0, 0
        jne %r1, 6, +1
        mov %r0, 1
        exit";
    assert_eq!(run_all(text, true), Ok(7));
}

#[test]
fn nested_loops_each_have_their_own_count() {
    // outer(i) runs inner i + 1 times and adds inner's count to the slot.
    let text = "stdw [%r10-8], 0
        mov %r1, 3
        lddw %r2, func outer
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 181
        mov %r6, %r0
        ldxdw %r0, [%r10-8]
        mul %r6, 100
        add %r0, %r6
        exit
        outer:
        mov %r6, %r2
        add %r1, 1
        lddw %r2, func inner
        mov %r3, %r6
        mov %r4, 0
        call 181
        ldxdw %r1, [%r6]
        add %r1, %r0
        stxdw [%r6], %r1
        mov %r0, 0
        exit
        inner:
        mov %r0, 0
        exit";
    assert_eq!(run_all(text, true), Ok(300 + 1 + 2 + 3));
}

/// `bpf_loop` with the instructions `setup` before the `lddw r2` (they set
/// r1 and r4); the callback returns 1 at once.
fn loop_with(setup: &str) -> String {
    format!(
        "{setup}
        lddw %r2, func cb
        mov %r3, 0
        call 181
        exit
        cb:
        mov %r0, 1
        exit"
    )
}

#[test]
fn argument_checks_follow_the_kernels_helper_and_its_inlined_loop() {
    let e2big = (-7i64) as u64;
    let einval = (-22i64) as u64;
    // flags != 0: the helper's -EINVAL.
    assert_eq!(
        run_all(&loop_with("mov %r1, 3\nmov %r4, 1"), true),
        Ok(einval)
    );
    // nr_loops 0: no call at all (the callback would make it 1).
    assert_eq!(run_all(&loop_with("mov %r1, 0\nmov %r4, 0"), true), Ok(0));
    // The limit itself is allowed.
    assert_eq!(
        run_all(&loop_with("lddw %r1, 0x800000\nmov %r4, 0"), true),
        Ok(1)
    );
    // `r4 = 0` before the call: the kernel's inlined loop, whose -E2BIG
    // is 32 bits and whose count is the whole of r1.
    assert_eq!(
        run_all(&loop_with("lddw %r1, 0x800001\nmov %r4, 0"), true),
        Ok(e2big as u32 as u64)
    );
    assert_eq!(
        run_all(&loop_with("lddw %r1, 0x100000003\nmov %r4, 0"), true),
        Ok(e2big as u32 as u64)
    );
    // flags from a register: the helper, 64-bit -E2BIG, a u32 count.
    assert_eq!(
        run_all(
            &loop_with("lddw %r1, 0x800001\nmov %r7, 0\nmov %r4, %r7"),
            true
        ),
        Ok(e2big)
    );
    let count = "lddw %r1, 0x100000003\nmov %r7, 0\nmov %r4, %r7";
    let text = loop_with(count).replace("mov %r0, 1\n", "mov %r0, 0\n");
    assert_eq!(run_all(&text, true), Ok(3));
}

#[test]
fn a_trap_in_the_callback_names_the_callbacks_instruction() {
    // The third call reads through its NULL context: insn 9.
    let text = "mov %r1, 5
        lddw %r2, func cb
        mov %r3, 0
        mov %r4, 0
        call 181
        exit
        cb:
        mov %r0, 0
        jne %r1, 2, +1
        ldxdw %r0, [%r2]
        exit";
    let t = run_all(text, false).unwrap_err();
    assert_eq!(t.pc, Pc(9));
    assert!(
        matches!(t.kind, TrapKind::OutOfBounds { addr: 0, .. }),
        "{t}"
    );
}

#[test]
fn callbacks_count_as_frames() {
    // Each callback calls bpf_loop with itself: the eighth frame traps at
    // the callback's call (insn 12).
    let text = "mov %r1, 1
        lddw %r2, func cb
        mov %r3, 0
        mov %r4, 0
        call 181
        exit
        cb:
        mov %r1, 1
        lddw %r2, func cb
        mov %r3, 0
        mov %r4, 0
        call 181
        exit";
    let t = run_all(text, false).unwrap_err();
    assert_eq!(t.pc, Pc(12));
    assert_eq!(
        t.kind,
        TrapKind::CallDepthExceeded {
            max: MAX_CALL_FRAMES
        }
    );
}

#[test]
fn a_callback_that_is_no_function_traps_at_the_call() {
    let text = "mov %r1, 1\nmov %r2, 5\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit";
    let t = run_all(text, false).unwrap_err();
    assert_eq!(t.pc, Pc(4));
    assert_eq!(t.kind, TrapKind::BadCallTarget { target: 5 });
    // nr_loops 0 and bad flags return before the callback is looked at.
    let text = "mov %r1, 0\nmov %r2, 5\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit";
    assert_eq!(run_all(text, false), Ok(0));
}

#[test]
fn r1_to_r5_are_kept_across_the_helper() {
    // As after any helper call in bpfkit's engines (checked code; verified
    // programs cannot read them).
    let text = "mov %r1, 2
        lddw %r2, func cb
        mov %r3, 7
        mov %r4, 0
        mov %r5, 9
        call 181
        mov %r0, %r1
        add %r0, %r3
        add %r0, %r5
        exit
        cb:
        mov %r3, 100
        mov %r5, 100
        mov %r0, 0
        exit";
    assert_eq!(run_all(text, false), Ok(2 + 7 + 9));
}

#[test]
fn the_budget_bounds_callbacks_the_same_way_on_both_engines() {
    let p = prog(
        &loop_with("lddw %r1, 0x800000\nmov %r4, 0")
            .replace("mov %r0, 1\n", "mov %r0, 0\nmov %r0, 0\n"),
    );
    let h = helpers();
    for budget in [5, 6, 7, 8, 50, 1001] {
        let want = run_interp(&p, Some(budget));
        let jit = Jit::builder().budget(budget).build(&p, &h).unwrap();
        assert_eq!(run_jit(jit), want, "budget {budget}");
        assert!(
            matches!(
                want,
                Err(Trap {
                    kind: TrapKind::BudgetExhausted { .. },
                    ..
                })
            ),
            "{want:?}"
        );
    }
}

/// A `Callback::Steps` helper (id 164) whose step (id 0x99) walks five
/// made-up elements: the callback gets `(rec, 10 * i, token, ctx)`. The
/// step writes its record at the helper's `r1`, a region of the run.
fn steps_helpers() -> Helpers {
    use bpfkit_runtime::callback::{STEP_CALL, STEP_DONE};
    let mut h = helpers();
    h.register(0x99, |env, a| {
        let [rec, ctx, flags, i, token] = a;
        let words = if flags != 0 {
            [STEP_DONE, (-22i64) as u64, 0, 0, 0, 0]
        } else if i < 5 {
            [STEP_CALL, rec, 10 * i, token, ctx, 0]
        } else {
            [STEP_DONE, i, 0, 0, 0, 0]
        };
        for (k, w) in words.iter().enumerate() {
            env.guest()
                .store::<8>(rec + 8 * k as u64, w.to_le_bytes())?;
        }
        Ok(rec)
    });
    h.register_callback(164, Callback::Steps { step: 0x99 });
    h
}

/// `text` on the interpreter and the checked JIT with `steps_helpers`,
/// `r1` = the step's record; both must agree.
fn run_steps(text: &str) -> Result<u64, Trap> {
    let p = prog(text);
    let h = steps_helpers();
    let mut rec = [0u8; 48];
    let mut mem = Memory::new();
    let at = mem.add(RegionKind::Other, &mut rec);
    let want = Interpreter::new(&p, &h).unwrap().run(&mut mem, &[at]);
    let got = Jit::new(&p, &h).unwrap().run(&mut mem, &[at]);
    assert_eq!(got, want, "checked JIT against the interpreter:\n{text}");
    want
}

#[test]
fn steps_drive_the_callback_and_a_non_zero_return_stops() {
    let text = "stdw [%r10-8], 0
        lddw %r2, func cb
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 164
        ldxdw %r1, [%r10-8]
        mul %r0, 1000
        add %r0, %r1
        exit
        cb:
        ldxdw %r5, [%r4]
        add %r5, %r2
        stxdw [%r4], %r5
        mov %r0, 0
        jne %r2, 30, +1
        mov %r0, 1
        exit";
    // Keys 0, 10, 20, 30: four calls, the last one stopped the walk.
    assert_eq!(run_steps(text), Ok(4 * 1000 + 60));
    // Walked to the end: five calls, done with the step's count.
    let all = text.replace("jne %r2, 30, +1", "jne %r2, 99, +1");
    assert_eq!(run_steps(&all), Ok(5 * 1000 + 100));
    // flags != 0: the step's -EINVAL, no call.
    let flags = text.replace("mov %r4, 0\n", "mov %r4, 1\n");
    assert_eq!(run_steps(&flags), Ok(((-22i64) as u64).wrapping_mul(1000)));
}

#[test]
fn nested_steps_get_their_own_token() {
    // Each of the five outer calls walks again (inner calls stop at key
    // 20: three each) and counts them; an inner call that saw the outer
    // call's token would add 1000000.
    let text = "stdw [%r10-8], 0
        stdw [%r10-16], 0
        mov %r6, %r1
        lddw %r2, func outer
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call 164
        ldxdw %r1, [%r10-16]
        mul %r0, 100
        add %r0, %r1
        exit
        outer:
        stxdw [%r4+8], %r3
        mov %r6, %r4
        lddw %r2, func inner
        mov %r3, %r4
        mov %r4, 0
        call 164
        ldxdw %r1, [%r6]
        add %r1, %r0
        stxdw [%r6], %r1
        mov %r0, 0
        exit
        inner:
        ldxdw %r5, [%r4+8]
        mov %r0, 0
        jne %r5, %r3, +4
        ldxdw %r5, [%r4]
        add %r5, 1000000
        stxdw [%r4], %r5
        mov %r0, 0
        jne %r2, 20, +1
        mov %r0, 1
        exit";
    assert_eq!(run_steps(text), Ok(5 * 100 + 5 * 3));
}
