//! The verifier's soundness on generated programs (see the crate docs):
//! a bounded, deterministic batch for CI; the fuzz target
//! `verifier_soundness` runs the same check for hours.

use std::collections::BTreeMap;

use bpfkit_soundness::{check, gen, Outcome, Rng};

#[test]
fn accepted_generated_programs_stay_inside_the_verifiers_states() {
    let mut rng = Rng(0x243f_6a88_85a3_08d3);
    let (mut accepted, mut rejected, mut steps) = (0u32, 0u32, 0u64);
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for n in 0..600 {
        let prog = gen(&mut rng);
        match check(&prog, 24, &mut rng) {
            Outcome::Rejected(m) => {
                rejected += 1;
                *reasons.entry(m.chars().take(48).collect()).or_default() += 1;
            }
            Outcome::Sound { steps: s, .. } => {
                accepted += 1;
                steps += s;
            }
            Outcome::Unsound(e) => failures.push(format!("program {n}: {e}")),
        }
        if failures.len() >= 3 {
            break;
        }
    }
    eprintln!("{accepted} accepted ({steps} instructions checked), {rejected} rejected");
    for (k, v) in &reasons {
        eprintln!("  {v:5} {k}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(accepted >= 150 && rejected >= 50, "{accepted} / {rejected}");
}

/// The fuzz target's input decoding always ends in a program, whatever
/// the bytes (a short input reads as zeros; the fuzzer once found an
/// endless retry when the choices ran out).
#[test]
fn any_bytes_make_a_program() {
    use bpfkit_soundness::Bytes;
    let inputs: [&[u8]; 4] = [
        &[],
        &[0xff; 64],
        b"qq\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x10'zqq",
        &[7; 300],
    ];
    for data in inputs {
        let prog = gen(&mut Bytes::new(data));
        assert!(prog.slot_count() > 10);
    }
}
