//! The verifier's soundness on generated programs (see the crate docs):
//! a bounded, deterministic batch for CI; the fuzz target
//! `verifier_soundness` runs the same check for hours.

use std::collections::BTreeMap;

use bpfkit_isa::{Imm64, Insn, Program};
use bpfkit_soundness::{check, gen, Outcome, Rng};

/// Which features an accepted program has: a backward jump, a local
/// call, a map lookup, a packet read or write.
fn features(prog: &Program) -> [bool; 4] {
    let mut f = [false; 4];
    for (pc, insn) in prog.iter() {
        match insn {
            Insn::Jmp { .. } | Insn::Ja { .. } => {
                f[0] |= insn.branch_target(pc).is_some_and(|t| t.0 <= pc.0)
            }
            Insn::CallLocal(_) => f[1] = true,
            Insn::LoadImm64 {
                imm: Imm64::MapIdx(_),
                ..
            } => f[2] = true,
            Insn::Load { src: r, .. } | Insn::Store { dst: r, .. } if r.num() != 10 => f[3] = true,
            _ => {}
        }
    }
    f
}

#[test]
fn accepted_generated_programs_stay_inside_the_verifiers_states() {
    // More programs (and another seed) for a longer run outside CI.
    let count: u32 = std::env::var("BPFKIT_SOUNDNESS_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let seed: u64 = std::env::var("BPFKIT_SOUNDNESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x243f_6a88_85a3_08d3);
    let mut rng = Rng(seed);
    let (mut accepted, mut rejected, mut steps) = (0u32, 0u32, 0u64);
    let (mut runs_unchecked, mut runs_stack, mut with_unchecked) = (0u32, 0u32, 0u32);
    let mut with = [0u32; 4];
    let mut disagree = 0u32;
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for n in 0..count {
        let prog = gen(&mut rng);
        match check(&prog, 24, &mut rng) {
            Outcome::Rejected(m) => {
                rejected += 1;
                *reasons.entry(m.chars().take(48).collect()).or_default() += 1;
            }
            Outcome::Sound {
                steps: s,
                unchecked,
                stack_dependent,
                ..
            } => {
                accepted += 1;
                steps += s;
                runs_unchecked += unchecked;
                runs_stack += stack_dependent;
                with_unchecked += u32::from(unchecked > 0);
                for (w, f) in with.iter_mut().zip(features(&prog)) {
                    *w += u32::from(f);
                }
            }
            Outcome::Unsound(e) => failures.push(format!("program {n}: {e}")),
            Outcome::PruningDisagrees(m) => {
                disagree += 1;
                if disagree <= 3 {
                    eprintln!(
                        "accepted with pruning only: {m}\n{}",
                        bpfkit_isa::disasm::format_llvm_program(&prog)
                    );
                }
            }
        }
        if failures.len() >= 3 {
            break;
        }
    }
    eprintln!(
        "{accepted} accepted ({steps} instructions checked), {rejected} rejected, \
         {disagree} accepted only with pruning"
    );
    eprintln!(
        "{with_unchecked} accepted programs run unchecked: {runs_unchecked} runs ended as in \
         the interpreter, {runs_stack} depend on the stack's address"
    );
    eprintln!(
        "accepted with loops {}, calls {}, lookups {}, accesses to ctx, packet or map values {}",
        with[0], with[1], with[2], with[3]
    );
    for (k, v) in &reasons {
        eprintln!("  {v:5} {k}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Pruning drops only paths the full exploration also finds safe.
    assert_eq!(disagree, 0, "programs accepted only with pruning (above)");
    assert!(
        accepted >= count / 4 && rejected >= count / 10,
        "{accepted} / {rejected}"
    );
    // Unchecked code ran (and agreed) for most accepted programs.
    if bpfkit_jit::is_supported() {
        assert!(
            with_unchecked >= accepted / 2,
            "{with_unchecked} / {accepted}"
        );
    }
    // Each feature occurs in accepted programs, so the check covers it.
    assert!(with.iter().all(|&w| w >= accepted / 20), "{with:?}");
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

/// The oracle notices: the same program against states narrowed on
/// purpose (one scalar made a constant it is not) is reported, with the
/// instruction and the register.
#[test]
fn a_state_that_misses_a_concrete_value_is_reported() {
    use bpfkit_soundness::{observe, run_all};
    use bpfkit_verifier::domain::scalar::Scalar;
    use bpfkit_verifier::state::RegType;
    let text = "r6 = r1\ncall 7\nr7 = r0\nr7 &= 255\nr0 = r7\nr0 &= 3\nexit\n";
    let prog =
        Program::from_insns(bpfkit_isa::assemble(text, bpfkit_isa::Syntax::Llvm).unwrap()).unwrap();
    let mut observed = observe(&prog).unwrap();
    let mut rng = Rng(3);
    assert!(matches!(
        run_all(&prog, Some(&observed), 8, &mut rng),
        Outcome::Sound { .. }
    ));
    // Before `r0 = r7` (insn 4) r7 is in [0, 255]; claim it is 300.
    for v in &mut observed.at[4] {
        assert_eq!(v.regs[7].ty, RegType::Scalar);
        v.regs[7].var = Scalar::constant(300);
    }
    match run_all(&prog, Some(&observed), 8, &mut rng) {
        Outcome::Unsound(e) => assert!(e.contains("insn 4") && e.contains("R7="), "{e}"),
        other => panic!("not noticed: {other:?}"),
    }
    // An instruction the verifier never reached is reported too.
    observed.at[5].clear();
    for v in &mut observed.at[4] {
        v.regs[7].var = Scalar::unknown();
    }
    match run_all(&prog, Some(&observed), 1, &mut rng) {
        Outcome::Unsound(e) => assert!(e.contains("never reached"), "{e}"),
        other => panic!("not noticed: {other:?}"),
    }
}

/// The comparison with unchecked code notices: the interpreter runs one
/// program, the unchecked JIT the token of another that writes a packet
/// byte the first leaves alone (or returns another value), and each
/// difference is reported; the token of the program itself agrees.
#[test]
fn a_difference_from_unchecked_code_is_reported() {
    use bpfkit_abi::ProgType;
    use bpfkit_soundness::{maps, run_all_with, VerifiedProgram};
    use bpfkit_verifier::Options;
    if !bpfkit_jit::is_supported() {
        return;
    }
    let asm = |t: &str| {
        Program::from_insns(bpfkit_isa::assemble(t, bpfkit_isa::Syntax::Llvm).unwrap()).unwrap()
    };
    let token = |p: &Program| {
        VerifiedProgram::verify(p, ProgType::Xdp, &maps(), &Options::default())
            .1
            .expect("accepted")
    };
    // Writes 0x5a into the first packet byte when there is one.
    let write = |v: u8| {
        asm(&format!(
            "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 1\n\
             if r4 > r3 goto +1\n*(u8 *)(r2 + 0) = {v}\nr0 = 2\nexit\n"
        ))
    };
    let (a, b) = (write(0x5a), write(0x5b));
    match run_all_with(&a, None, Some(&token(&a)), 16, &mut Rng(1)) {
        Outcome::Sound { .. } => {}
        other => panic!("the program's own token disagrees: {other:?}"),
    }
    match run_all_with(&a, None, Some(&token(&b)), 16, &mut Rng(1)) {
        Outcome::Unsound(e) => assert!(
            e.contains("unchecked JIT differs") && e.contains("packet page byte"),
            "{e}"
        ),
        other => panic!("not noticed: {other:?}"),
    }
    let c = asm("r0 = 3\nexit\n");
    match run_all_with(&a, None, Some(&token(&c)), 4, &mut Rng(1)) {
        Outcome::Unsound(e) => assert!(e.contains("result: interpreter Ok(2)"), "{e}"),
        other => panic!("not noticed: {other:?}"),
    }
}
