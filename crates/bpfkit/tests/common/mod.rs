//! What the inline-lookup tests share: running a fixture's program with a
//! few u32 words at the start of its context, and the engines to compare.
#![allow(dead_code)] // each test file uses part of it

use bpfkit::runtime::{Memory, RegionKind};
use bpfkit::{Engine, Loader, Object, RunInput, RunOutcome};

/// Runs program 0 of `obj` `repeat` times on `cpu`, its context a zeroed
/// `struct pt_regs` that starts with `words` (native byte order).
pub fn run_words(obj: &mut Object, words: &[u32], cpu: usize, repeat: u32) -> RunOutcome {
    let mut regs = [0u8; 168];
    for (k, w) in words.iter().enumerate() {
        regs[4 * k..4 * k + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let mut mem = Memory::new();
    let ctx = mem.add(RegionKind::Context, &mut regs);
    let input = RunInput {
        cpu,
        repeat,
        ..RunInput::default()
    };
    obj.run(0, mem, &[ctx], input)
}

/// `fixture` loaded by `loader` with `engine` and `blind` (constant
/// blinding), its program 0 checked by the verifier.
pub fn load(loader: Loader, engine: Engine, blind: bool, fixture: &[u8]) -> Object {
    let obj = loader
        .engine(engine)
        .jit_blind(blind)
        .load(fixture)
        .unwrap();
    obj.check(0).expect("the fixture verifies");
    obj
}

/// [`run_words`] on CPU 0, which must not trap: the program's result.
pub fn result(obj: &mut Object, words: &[u32], repeat: u32) -> u64 {
    let out = run_words(obj, words, 0, repeat);
    assert_eq!(out.runs, repeat.max(1));
    out.result.expect("runs without a trap")
}

/// The engines to compare on this host, as (engine, constant blinding):
/// the interpreter, and the JIT plain and blinded where it runs.
pub fn engines() -> Vec<(Engine, bool)> {
    let mut v = vec![(Engine::Interp, false)];
    if bpfkit_jit::is_supported() {
        v.extend([(Engine::Jit, false), (Engine::Jit, true)]);
    }
    v
}
