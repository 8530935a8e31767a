//! Differential test: random programs (see `bpfkit_jit::fuzzing`) on the
//! JIT (with and without constant blinding) and on the interpreter must
//! give the same `r0` or trap (pc and
//! kind), the same packet contents, and the same stack and `r1`-`r5` at the
//! final dump. Bounded so that it runs in seconds.

use bpfkit_jit::fuzzing::{check_case, gen_case, Rng};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn jit_matches_interpreter(seed in any::<u64>()) {
        if !bpfkit_jit::is_supported() {
            return Ok(());
        }
        let case = gen_case(&mut Rng::new(seed));
        if let Err(e) = check_case(&case) {
            prop_assert!(false, "seed {seed:#x}: {e}");
        }
    }
}

/// Fixed seeds, so that a regression shows up without proptest's
/// randomness too.
#[test]
fn fixed_seeds() {
    if !bpfkit_jit::is_supported() {
        eprintln!("skipped: the JIT supports x86-64 Linux only");
        return;
    }
    let mut kinds = std::collections::BTreeMap::<String, u32>::new();
    for seed in 0..2000u64 {
        let case = gen_case(&mut Rng::new(seed));
        if let Err(e) = check_case(&case) {
            panic!("seed {seed:#x}: {e}");
        }
        let mut arena = bpfkit_jit::fuzzing::Arena::new();
        let r = bpfkit_jit::fuzzing::run_case(&case, true, &mut arena).result;
        let k = match r {
            Ok(_) => "ok".to_string(),
            Err(t) => format!("{:?}", t.kind)
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .to_string(),
        };
        *kinds.entry(k).or_default() += 1;
    }
    println!("2000 programs: {kinds:?}");
}

/// Replays one seed: `BPFKIT_JIT_SEED=0x... cargo test --test differential replay`.
#[test]
fn replay() {
    let Some(s) = std::env::var("BPFKIT_JIT_SEED").ok() else {
        return;
    };
    let seed = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).expect("hex seed"),
        None => s.parse().expect("decimal seed"),
    };
    let case = gen_case(&mut Rng::new(seed));
    // Several times: some differences depend on where buffers land.
    let mut keep = Vec::new();
    for _ in 0..200 {
        if let Err(e) = check_case(&case) {
            panic!("seed {seed:#x}: {e}");
        }
        keep.push(vec![0u8; 1 + keep.len() * 64]);
    }
}

/// A long run for confidence (not in CI): `BPFKIT_JIT_SEEDS=1000000 cargo
/// test --release --test differential -- --ignored many_seeds`.
#[test]
#[ignore]
fn many_seeds() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let n: u64 = std::env::var("BPFKIT_JIT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let base = 0x1234_5678_0000_0000u64;
    for seed in base..base + n {
        let case = gen_case(&mut Rng::new(seed));
        if let Err(e) = check_case(&case) {
            panic!("seed {seed:#x}: {e}");
        }
    }
    println!("{n} programs agree");
}
