//! Fixed cost of a helper call from JIT code, for callgrind: a loop of
//! 100 helper calls against the same loop with the call replaced by a
//! register move, run in a typed series (`Jit::run_repeat`).
//!
//! ```sh
//! cargo build --release -p bpfkit-jit --example helper_calls
//! for p in call move; do valgrind --tool=callgrind --toggle-collect='*run_series*' \
//!     target/release/examples/helper_calls $p body 1000 unchecked; done
//! ```
//!
//! (Ir(call) - Ir(move)) / 100,000 is the cost of one call beyond the
//! move it replaces: the call site, the entry and a body that returns `r1`.
//! The second argument picks how the helper is registered: `body`
//! (`Helpers::register_body`: the call site calls its direct entry),
//! `fallible` (the same with a body that may also end with an abort made
//! out of line, as the map helpers' bodies do: its `HelperResult` is then
//! built in memory, and what the entry does with it shows), `typed`
//! (`Helpers::register_typed`: through the typed trampoline) or `dyn` (a
//! closure, and an untyped run: the dynamic trampoline). The fourth,
//! `unchecked`, verifies the program (a kprobe; the helper is id 7,
//! `bpf_get_prandom_u32`, to the verifier) and runs the unchecked code,
//! which does not keep r1-r5 across calls; otherwise checked code (which
//! keeps those a later instruction may read: r2-r5 here). Without
//! valgrind it prints the time per run.

use bpfkit_abi::ProgType;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::{Guest, HelperAbort, HelperResult, Helpers, Memory, RegionKind, TypedBody};
use bpfkit_verifier::Options;
use std::time::Instant;

/// The per-run data of the series.
struct Data(u64);

fn echo(_g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
    d.0 += 1;
    Ok(a[0])
}

/// The abort of [`Fallible`], out of line: a `HelperResult` written
/// through a pointer, as larger bodies' rare paths do.
#[inline(never)]
fn refuse(a: u64) -> HelperResult {
    Err(HelperAbort::Failed(format!("refused {a}")))
}

/// [`echo`] that refuses `u64::MAX` (never passed).
struct Fallible;
impl TypedBody<Data> for Fallible {
    fn call(g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
        if a[0] == u64::MAX {
            return refuse(a[0]);
        }
        echo(g, d, a)
    }
}

struct Echo;
impl TypedBody<Data> for Echo {
    fn call(g: &mut Guest<'_, '_>, d: &mut Data, a: [u64; 5]) -> HelperResult {
        echo(g, d, a)
    }
}

#[inline(never)]
fn run_series(
    jit: &mut Jit,
    mem: &mut Memory<'_>,
    args: &[u64],
    d: &mut Data,
    runs: u32,
    typed: bool,
) -> u64 {
    if typed {
        let mut n = 0;
        jit.run_repeat(mem, args, d, |_, _| {
            n += 1;
            n < runs
        })
        .unwrap()
    } else {
        let mut r = 0;
        for _ in 0..runs {
            r = jit.run_with_data(mem, args, d).unwrap();
        }
        r
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let call = args.get(1).is_none_or(|a| a == "call");
    let how = args.get(2).map_or("body", String::as_str);
    let runs: u32 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let unchecked = args.get(4).is_some_and(|a| a == "unchecked");
    let op = if call { "call 7" } else { "mov %r0, %r1" };
    let text = format!(
        "mov %r6, 100\nmov %r7, 0\nloop:\nmov %r1, %r6\n{op}\nadd %r7, %r0\nsub %r6, 1\n\
         jne %r6, 0, loop\nmov %r0, %r7\nexit"
    );
    let p = Program::from_insns(assemble(&text, Syntax::Ubpf).unwrap()).unwrap();
    let mut h = Helpers::new();
    match how {
        "typed" => {
            h.register_typed::<Data>(7, echo, "no Data");
        }
        "dyn" => {
            h.register(7, |_e, a| Ok(a[0]));
        }
        "fallible" => {
            h.register_body::<Data, Fallible, _>(7, |_e, a| Ok(a[0]));
        }
        _ => {
            h.register_body::<Data, Echo, _>(7, |_e, a| Ok(a[0]));
        }
    }
    let mut jit = if unchecked {
        let (report, v) = VerifiedProgram::verify(&p, ProgType::Kprobe, &[], &Options::default());
        let v = v.unwrap_or_else(|| panic!("rejected: {:?}", report.error));
        Jit::compile_verified(&v, &h).unwrap()
    } else {
        Jit::new(&p, &h).unwrap()
    };
    let mut regs = [0u8; 168]; // struct pt_regs
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    let mut d = Data(0);
    let t = Instant::now();
    let r = run_series(&mut jit, &mut mem, &[ctx], &mut d, runs, how != "dyn");
    let ns = t.elapsed().as_nanos() as f64 / runs as f64;
    assert_eq!(r, 5050);
    println!(
        "{} {how}: {runs} runs, {ns:.1} ns/run",
        if call { "call" } else { "move" }
    );
}
