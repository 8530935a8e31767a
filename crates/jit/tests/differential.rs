//! Differential test: random programs (see `bpfkit_jit::fuzzing`) on the
//! JIT and on the interpreter must give the same `r0` or trap (pc and
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
        let mut packet = case.packet.clone();
        let r = bpfkit_jit::fuzzing::run_case(&case, true, &mut packet).result;
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
    if let Err(e) = check_case(&case) {
        panic!("seed {seed:#x}: {e}");
    }
}
