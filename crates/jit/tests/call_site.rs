//! Helper calls made from the call site itself (`call [direct + 8k]`, no
//! store on the way, branch `callsite`): what the shared stub used to
//! keep in the `Ctx` for the stop path and the trampolines is found
//! otherwise (a cold stub per call site on a stop, the return address for
//! trampolines), and rsp is 16-aligned at every call site by the frame
//! layout. These tests run the same programs with helpers that have a
//! direct entry (`register_body`), a typed function (`register_typed`,
//! typed trampoline) and a closure in an untyped run (dynamic trampoline),
//! in checked code and in unchecked code (verified programs).

use bpfkit_abi::ProgType;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    HelperId, Insn, Pc, Program,
};
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::{
    Access, Guest, HelperAbort, HelperEnv, HelperResult, Helpers, Memory, RegionKind, Trap,
    TrapKind, TypedBody,
};
use bpfkit_verifier::Options;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

/// What the `n`-th call of helper 7 does (counted from 1 over a run).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Then {
    Return,
    Stop,
    Fail,
    Fault,
    Panic,
}

#[derive(Debug)]
struct Data {
    calls: u64,
    at: u64,
    then: Then,
    /// Calls that found rsp misaligned (their 16-aligned local was not).
    misaligned: u64,
    /// Set by helper 14: the address of the region it added.
    added: Vec<u64>,
}

impl Data {
    fn new(at: u64, then: Then) -> Data {
        Data {
            calls: 0,
            at,
            then,
            misaligned: 0,
            added: Vec::new(),
        }
    }
}

#[repr(C, align(16))]
struct Aligned([u8; 16]);

/// Overwrites the host registers that hold r1-r5 in generated code, as any
/// larger helper does (a trivial body may leave them as they were, which
/// would hide a call site that does not keep them).
#[inline(always)]
fn clobber() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: writes only caller-saved registers, all declared clobbered.
    unsafe {
        std::arch::asm!(
            "mov rdi, -1", "mov r8, -1", "mov r9, -1", "mov r10, -1", "mov r11, -1",
            out("rdi") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
}

/// Helper 7 (`bpf_get_prandom_u32` to the verifier: no arguments): counts
/// its calls, checks the stack's alignment, returns the count or does
/// `then` at call `at`.
fn step(g: &mut Guest<'_, '_>, d: &mut Data, _a: [u64; 5]) -> HelperResult {
    d.calls += 1;
    clobber();
    // The compiler aligns this local by assuming rsp was 16-aligned at the
    // call (System V); the address hides that assumption from it.
    let x = Aligned([d.calls as u8; 16]);
    let addr = std::hint::black_box(&x) as *const Aligned as usize;
    if !addr.is_multiple_of(16) {
        d.misaligned += 1;
    }
    if d.calls != d.at {
        return Ok(d.calls);
    }
    match d.then {
        Then::Return => Ok(d.calls),
        Then::Stop => Err(HelperAbort::Stop { r0: 1000 + d.calls }),
        Then::Fail => Err(HelperAbort::Failed(format!("call {}", d.calls))),
        Then::Fault => g.load::<8>(8).map(u64::from_le_bytes).map_err(Into::into),
        Then::Panic => panic!("helper panicked at call {}", d.calls),
    }
}

/// Helper 14: adds a 16-byte region holding 0..16, returns its address.
fn add_region(g: &mut Guest<'_, '_>, d: &mut Data, _a: [u64; 5]) -> HelperResult {
    let buf: &'static mut [u8] = Box::leak((0u8..16).collect::<Vec<_>>().into_boxed_slice());
    let addr = g.memory_mut().add(RegionKind::MapValue, buf);
    d.added.push(addr);
    Ok(addr)
}

struct Step;
impl TypedBody<Data> for Step {
    fn call(g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
        step(g, d, a)
    }
}

struct AddRegion;
impl TypedBody<Data> for AddRegion {
    fn call(g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
        add_region(g, d, a)
    }
}

/// How the helpers are registered and run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// `register_body`, typed run: the call site calls the direct entry.
    Body,
    /// `register_typed`, typed run: through `L_TRAMP` and the typed
    /// trampoline.
    Typed,
    /// A closure, untyped run (`run_with_data`): the dynamic trampoline.
    Dyn,
}

const WAYS: [Way; 3] = [Way::Body, Way::Typed, Way::Dyn];

fn dynamic(
    f: fn(&mut Guest<'_, '_>, &mut Data, [u64; 5]) -> HelperResult,
) -> impl Fn(&mut HelperEnv<'_, '_>, [u64; 5]) -> HelperResult + Send + Sync + 'static {
    move |e: &mut HelperEnv<'_, '_>, a| match e.split_mut::<Data>() {
        (g, Some(d)) => f(g, d, a),
        (_, None) => Err(HelperAbort::Failed("no Data".into())),
    }
}

fn helpers(way: Way) -> Helpers {
    let mut h = Helpers::new();
    match way {
        Way::Body => {
            h.register_body::<Data, Step, _>(7, dynamic(step));
            h.register_body::<Data, AddRegion, _>(14, dynamic(add_region));
        }
        Way::Typed => {
            h.register_typed::<Data>(7, step, "no Data");
            h.register_typed::<Data>(14, add_region, "no Data");
        }
        Way::Dyn => {
            h.register(7, dynamic(step));
            h.register(14, dynamic(add_region));
        }
    }
    h
}

/// `p` compiled for `way`: checked, or verified (a kprobe) and unchecked.
fn compile(p: &Program, way: Way, unchecked: bool) -> Jit {
    let h = helpers(way);
    if unchecked {
        let (report, v) = VerifiedProgram::verify(p, ProgType::Kprobe, &[], &Options::default());
        let v = v.unwrap_or_else(|| panic!("rejected: {:?}", report.error));
        Jit::compile_verified(&v, &h).unwrap()
    } else {
        Jit::new(p, &h).unwrap()
    }
}

fn run(jit: &mut Jit, way: Way, d: &mut Data) -> Result<u64, Trap> {
    let mut regs = [0u8; 168]; // struct pt_regs
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    if way == Way::Dyn {
        jit.run_with_data(&mut mem, &[ctx], d)
    } else {
        jit.run_typed(&mut mem, &[ctx], d)
    }
}

/// Seven calls of helper 7 at six call sites, at depths 0 to 3, in
/// subprograms that save 1, 2, 0 and (through `g`) 3 registers, so that
/// each parity of pushes is entered. Returns the sum of the calls' results
/// plus 100 per subprogram return.
const SITES: &str = "mov %r6, 0\n\
    call 7\nadd %r6, %r0\n\
    call 7\nadd %r6, %r0\n\
    call local f\nadd %r6, %r0\n\
    call local h\nadd %r6, %r0\n\
    call 7\nadd %r6, %r0\n\
    mov %r0, %r6\nexit\n\
    f:\nmov %r7, 100\ncall 7\nadd %r7, %r0\ncall local g\nadd %r0, %r7\nexit\n\
    g:\nmov %r8, 100\nmov %r9, 0\ncall 7\nadd %r0, %r8\nadd %r0, %r9\nexit\n\
    h:\ncall local i\nadd %r0, 100\nexit\n\
    i:\nmov %r6, 100\nmov %r7, 0\nmov %r8, 0\ncall 7\nadd %r0, %r6\nadd %r0, %r7\nadd %r0, %r8\nexit";

/// The pc of each `call 7` of `p` in the order [`SITES`] executes them.
fn call_pcs(p: &Program) -> Vec<Pc> {
    let pcs: Vec<Pc> = p
        .iter()
        .filter(|(_, i)| matches!(i, Insn::Call(h) if h.0 == 7))
        .map(|(pc, _)| pc)
        .collect();
    // Source order: main (3), f, g, i; execution: main 1, 2, f, g, i,
    // main 3.
    assert_eq!(pcs.len(), 6);
    vec![pcs[0], pcs[1], pcs[3], pcs[4], pcs[5], pcs[2]]
}

#[test]
fn every_call_site_is_aligned_and_returns() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(SITES);
    for way in WAYS {
        for unchecked in [false, true] {
            let mut jit = compile(&p, way, unchecked);
            for _ in 0..2 {
                let mut d = Data::new(0, Then::Return);
                let r = run(&mut jit, way, &mut d);
                // 1 + 2 + f (3 + 100 + g (4 + 100)) + h (i (5 + 100) + 100) + 6.
                assert_eq!(r, Ok(421), "{way:?}, unchecked {unchecked}");
                assert_eq!(d.calls, 6);
                assert_eq!(d.misaligned, 0, "{way:?}, unchecked {unchecked}");
            }
        }
    }
}

#[test]
fn a_stop_trap_or_fault_reports_its_own_call_site() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(SITES);
    let pcs = call_pcs(&p);
    for way in WAYS {
        for unchecked in [false, true] {
            let mut jit = compile(&p, way, unchecked);
            let what = |at| format!("{way:?}, unchecked {unchecked}, call {at}");
            for (k, &pc) in pcs.iter().enumerate() {
                let at = k as u64 + 1;
                let mut d = Data::new(at, Then::Stop);
                assert_eq!(run(&mut jit, way, &mut d), Ok(1000 + at), "{}", what(at));
                assert_eq!(d.calls, at);
                let mut d = Data::new(at, Then::Fail);
                let want = Trap::new(
                    pc,
                    TrapKind::Helper {
                        id: HelperId(7),
                        message: format!("call {at}"),
                    },
                );
                assert_eq!(run(&mut jit, way, &mut d), Err(want), "{}", what(at));
                let mut d = Data::new(at, Then::Fault);
                let want = Trap::new(
                    pc,
                    TrapKind::OutOfBounds {
                        addr: 8,
                        size: 8,
                        access: Access::Read,
                    },
                );
                assert_eq!(run(&mut jit, way, &mut d), Err(want), "{}", what(at));
                // The next run starts clean.
                let mut d = Data::new(0, Then::Return);
                assert_eq!(run(&mut jit, way, &mut d), Ok(421), "{}", what(at));
            }
        }
    }
}

#[test]
fn a_panicking_helper_is_resumed_after_the_code_returned() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(SITES);
    for way in WAYS {
        for unchecked in [false, true] {
            let mut jit = compile(&p, way, unchecked);
            for at in [1, 4, 6] {
                let mut d = Data::new(at, Then::Panic);
                let r = catch_unwind(AssertUnwindSafe(|| run(&mut jit, way, &mut d)));
                let payload = r.expect_err("the panic reaches the caller");
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(msg, format!("helper panicked at call {at}"));
                assert_eq!(d.calls, at);
                let mut d = Data::new(0, Then::Return);
                assert_eq!(run(&mut jit, way, &mut d), Ok(421), "{way:?} after a panic");
            }
        }
    }
}

#[test]
fn checked_code_keeps_r1_to_r5_at_every_depth() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Unverified programs may read r1-r5 after a call; the interpreter
    // keeps them, and so does checked code (depth 0, and in subprograms
    // entered with an odd and an even number of pushes).
    let body = "mov %r1, 1\nmov %r2, 20\nmov %r3, 300\nmov %r4, 4000\nmov %r5, 50000\ncall 7\n\
         mov %r0, %r1\nadd %r0, %r2\nadd %r0, %r3\nadd %r0, %r4\nadd %r0, %r5\n";
    let text = format!(
        "{body}mov %r6, %r0\ncall local f\nadd %r6, %r0\ncall local g\nadd %r0, %r6\nexit\n\
         f:\nmov %r7, 0\n{body}add %r0, %r7\nexit\n\
         g:\nmov %r7, 0\nmov %r8, 0\n{body}add %r0, %r7\nexit"
    );
    let p = prog(&text);
    for way in WAYS {
        let mut jit = compile(&p, way, false);
        let mut d = Data::new(0, Then::Return);
        assert_eq!(run(&mut jit, way, &mut d), Ok(3 * 54321), "{way:?}");
        assert_eq!(d.misaligned, 0);
    }
}

#[test]
fn regions_a_helper_adds_are_seen_after_each_call() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Checked code reads each region right after the call that added it
    // (the region table is copied again after each call), twice per run,
    // two runs in a series.
    let p = prog(
        "call 14\nldxb %r6, [%r0+3]\ncall 14\nldxb %r7, [%r0+5]\nmov %r0, %r6\nlsh %r0, 8\n\
         or %r0, %r7\nexit",
    );
    for way in WAYS {
        let mut jit = compile(&p, way, false);
        let mut d = Data::new(0, Then::Return);
        assert_eq!(run(&mut jit, way, &mut d), Ok(0x0305), "{way:?}");
        assert_eq!(d.added.len(), 2);
        let mut regs = [0u8; 168];
        let mut mem = Memory::new();
        let ctx = mem.add(RegionKind::Context, &mut regs);
        let mut d = Data::new(0, Then::Return);
        let mut runs = 0;
        if way == Way::Dyn {
            for _ in 0..2 {
                assert_eq!(jit.run_with_data(&mut mem, &[ctx], &mut d), Ok(0x0305));
            }
        } else {
            let r = jit.run_repeat(&mut mem, &[ctx], &mut d, |_, _| {
                runs += 1;
                runs < 2
            });
            assert_eq!(r, Ok(0x0305), "{way:?}");
        }
        assert_eq!(d.added.len(), 4);
    }
}

#[test]
fn checked_code_keeps_what_a_later_path_reads() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    // Checked code keeps only the r1-r5 that a path from the call may read
    // before writing; each program reads some after a branch, a loop, a
    // `ja` or a subprogram's return, and writes others first. The
    // interpreter keeps all of them: same results.
    let set = "mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\n";
    let cases = [
        // After a branch: r3 on one side, r5 on the other (step returns 1).
        (
            format!("{set}call 7\njeq %r0, 0, +2\nmov %r0, %r3\nexit\nmov %r0, %r5\nexit"),
            3,
        ),
        (
            format!("{set}call 7\njeq %r0, 1, +2\nmov %r0, %r3\nexit\nmov %r0, %r5\nexit"),
            5,
        ),
        // A loop: r1 is set before each call, r2 accumulates across them.
        (
            "mov %r6, 3\nmov %r2, 0\nloop:\nmov %r1, 10\ncall 7\nadd %r2, %r1\nsub %r6, 1\n\
             jne %r6, 0, loop\nmov %r0, %r2\nexit"
                .to_string(),
            30,
        ),
        // A subprogram's r3, read by its caller after the return.
        (
            "call local f\nmov %r0, %r3\nexit\nf:\nmov %r3, 42\ncall 7\nexit".to_string(),
            42,
        ),
        // Writes to r8-r10 leave r1-r5 alone (seed 0xb3 of the JIT's
        // differential test: a write to r10 once counted as one to r2).
        (
            format!("{set}call 7\nmov %r9, 0\nmov %r8, %r9\nmov %r0, %r1\nexit"),
            1,
        ),
        (
            format!("{set}call 7\nmov %r10, %r1\nmov %r0, %r2\nadd %r0, %r3\nexit"),
            5,
        ),
        // Written before read: nothing to keep; then a `ja` over a write.
        (format!("{set}call 7\nmov %r1, 7\nmov %r0, %r1\nexit"), 7),
        (
            format!("{set}call 7\nja +1\nmov %r4, 0\nmov %r0, %r4\nexit"),
            4,
        ),
        // A load into r2 from r2 reads it first; a store reads its base.
        (
            "stxdw [%r10-8], %r1\nmov %r2, %r10\nadd %r2, -8\nmov %r1, 9\ncall 7\n\
             stxdw [%r2], %r1\nldxdw %r2, [%r2]\nmov %r0, %r2\nexit"
                .to_string(),
            9,
        ),
    ];
    for (text, want) in cases {
        let p = prog(&text);
        let mut interp = bpfkit_interp::Interpreter::new(&p, &helpers(Way::Dyn)).unwrap();
        let mut regs = [0u8; 168];
        let mut mem = Memory::new();
        let ctx = mem.add(RegionKind::Context, &mut regs);
        let mut d = Data::new(0, Then::Return);
        let r = interp.run_with_data(&mut mem, &[ctx], &mut d);
        assert_eq!(r, Ok(want), "interpreter: {text}");
        for way in WAYS {
            let mut jit = compile(&p, way, false);
            let mut d = Data::new(0, Then::Return);
            assert_eq!(run(&mut jit, way, &mut d), Ok(want), "{way:?}: {text}");
        }
    }
}

/// How many bpf-to-bpf calls of `jit`'s code get the dummy push that keeps
/// rsp aligned for helper calls (`push rax` right before a direct `call`).
fn padded_calls(jit: &Jit) -> usize {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let code = jit.code().bytes();
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut prev_push_rax = false;
    let mut n = 0;
    for insn in &mut d {
        let is_call = insn.mnemonic() == Mnemonic::Call && insn.op0_kind() == OpKind::NearBranch64;
        if is_call && prev_push_rax {
            n += 1;
        }
        prev_push_rax = insn.mnemonic() == Mnemonic::Push
            && insn.op0_kind() == OpKind::Register
            && insn.op0_register() == Register::RAX;
    }
    n
}

/// Only subprograms that call a helper, themselves or through a callee,
/// are entered with the dummy push: `leaf` (no helper) gets none, `mid`
/// (which calls `inner`, which calls one) and `inner` do, and every helper
/// call stays aligned. (Unchecked code: a helper-free leaf that saves
/// nothing is a bare `call`, an even number of pushes without the pad.)
#[test]
fn only_callees_that_reach_a_helper_are_padded() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let p = prog(
        "call 7\nmov %r6, %r0\n\
         call local leaf\nadd %r6, %r0\n\
         call local mid\nadd %r6, %r0\n\
         mov %r0, %r6\nexit\n\
         leaf:\nmov %r0, 1000\nexit\n\
         mid:\ncall local inner\nadd %r0, 100\nexit\n\
         inner:\ncall 7\nexit",
    );
    for way in WAYS {
        let mut jit = compile(&p, way, true);
        assert_eq!(padded_calls(&jit), 2, "{way:?}");
        let mut d = Data::new(0, Then::Return);
        // 1 + 1000 + (2 + 100).
        assert_eq!(run(&mut jit, way, &mut d), Ok(1103), "{way:?}");
        assert_eq!(d.misaligned, 0, "{way:?}");
    }
}
