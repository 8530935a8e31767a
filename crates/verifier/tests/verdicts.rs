//! The verdict corpus (`tests/verdicts/*.txt`, format in
//! `tests/verdicts/README.md`): small programs, accepted and rejected, each
//! with the verdict, instruction and message the running kernel gave it.
//!
//! 1. bpfkit's verifier is always compared with the recorded verdicts (so a
//!    machine without `bpf()` still checks it); the test fails below 99%
//!    verdict agreement overall or on the C objects, or on any difference
//!    (verdict, or instruction where both reject) not marked `@known`.
//! 2. Where `bpf()` works, every program is loaded into the kernel again and
//!    the recorded verdict must still be the kernel's.
//!
//! `BPFKIT_VERDICTS_RECORD=1` rewrites the `@expect` lines with what the
//! kernel says now (the way the expectations were made).
//!
//! The programs are deliberate and deterministic; never add one with a
//! branch-free mask such as `-(x & 1)` or `x s>> 63` inside a loop: this
//! machine's kernel has a verifier bug on those.

#[path = "verdicts/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;

use bpfkit_verifier::{verify, Options, Verdict};
use corpus::{Case, Expect};

#[derive(Default)]
struct Tally {
    total: usize,
    kernel_accepts: usize,
    agree: usize,
    both_reject: usize,
    same_insn: usize,
    same_msg: usize,
}

fn ours(case: &Case, l: &corpus::Loaded) -> Expect {
    let opts = Options {
        unprivileged: case.unprivileged,
        ..Options::default()
    };
    let r = verify(&l.prog, case.prog_type, &l.maps, &opts);
    match (r.verdict, r.error) {
        (Verdict::Accepted, _) => Expect::Accepted,
        (_, Some(e)) => Expect::Rejected {
            insn: Some(e.pc),
            message: e.message,
        },
        (_, None) => Expect::Rejected {
            insn: None,
            message: String::new(),
        },
    }
}

/// Rewrites the `@expect` lines of every data file from `results`.
fn record(results: &BTreeMap<(String, String), Expect>) {
    for f in corpus::files() {
        let theme = f.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            if line.trim().starts_with("@expect") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if let Some(name) = line.trim().strip_prefix("=== ") {
                if let Some(e) = results.get(&(theme.clone(), name.trim().to_string())) {
                    out.push_str(&format!("@expect {}\n", e.render()));
                }
            }
        }
        std::fs::write(&f, out).unwrap();
    }
}

#[test]
fn verdict_corpus() {
    // BPFKIT_VERDICTS_ONLY=THEME limits the run to one data file (not when
    // recording), BPFKIT_VERDICTS_TRACE=1 names each program as it starts.
    let only = std::env::var("BPFKIT_VERDICTS_ONLY").ok();
    let trace = std::env::var_os("BPFKIT_VERDICTS_TRACE").is_some();
    let cases: Vec<Case> = corpus::all()
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|t| *t == c.theme))
        .collect();
    let recording = std::env::var_os("BPFKIT_VERDICTS_RECORD").is_some();
    let kernel = match bpfkit_kernel::probe() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("kernel recheck skipped: bpf() is not usable here: {e}");
            assert!(!recording, "recording needs the kernel");
            false
        }
    };
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut msg_diffs = Vec::new();
    let mut stale_known = Vec::new();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut recorded = BTreeMap::new();
    let mut kernel_checked = 0;
    for case in &cases {
        let id = format!("{}/{} (line {})", case.theme, case.name, case.line);
        let l = match case.load() {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{id}: {e}"));
                continue;
            }
        };
        if trace {
            eprintln!("{id}");
        }
        if kernel {
            let k = corpus::kernel_load(case, &l).unwrap_or_else(|e| panic!("{id}: {e}"));
            kernel_checked += 1;
            if recording {
                recorded.insert((case.theme.clone(), case.name.clone()), k.expect.clone());
            } else if case.expect.as_ref() != Some(&k.expect) {
                failures.push(format!(
                    "{id}: the file says {:?}, the kernel now {}",
                    case.expect.as_ref().map(Expect::render),
                    k.expect.render()
                ));
            }
        }
        let Some(expect) = (if recording {
            recorded.get(&(case.theme.clone(), case.name.clone()))
        } else {
            case.expect.as_ref()
        }) else {
            failures.push(format!("{id}: no @expect (record it from the kernel)"));
            continue;
        };
        let got = ours(case, &l);
        let t = tallies.entry(case.theme.clone()).or_default();
        t.total += 1;
        t.kernel_accepts += usize::from(expect.accepted());
        let same_verdict = got.accepted() == expect.accepted();
        t.agree += usize::from(same_verdict);
        let mut differs = !same_verdict;
        if let (
            Expect::Rejected {
                insn: ki,
                message: km,
            },
            Expect::Rejected {
                insn: oi,
                message: om,
            },
        ) = (expect, &got)
        {
            t.both_reject += 1;
            // Without an instruction in the kernel's log there is nothing to
            // compare it with.
            let same_insn = ki.is_none() || ki == oi;
            t.same_insn += usize::from(same_insn);
            t.same_msg += usize::from(km == om);
            if km != om {
                msg_diffs.push(format!("{id}: kernel [{km}], bpfkit [{om}]"));
            }
            differs |= !same_insn;
        }
        let what = format!("{id}: kernel {}, bpfkit {}", expect.render(), got.render());
        match (&case.known, differs) {
            (Some(why), true) => known.push(format!("{what}\n    known: {why}")),
            (Some(_), false) => stale_known.push(id.clone()),
            (None, true) => failures.push(what),
            (None, false) => {}
        }
    }
    if recording {
        assert!(only.is_none(), "record the whole corpus");
        record(&recorded);
        eprintln!("recorded {} kernel verdicts", recorded.len());
    }

    eprintln!(
        "\n{:<14} {:>5} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "theme", "progs", "k.accept", "agree", "both rej", "same insn", "same msg"
    );
    let mut sum = Tally::default();
    let mut c_tally = Tally::default();
    for (theme, t) in &tallies {
        eprintln!(
            "{theme:<14} {:>5} {:>8} {:>8} {:>9} {:>9} {:>9}",
            t.total, t.kernel_accepts, t.agree, t.both_reject, t.same_insn, t.same_msg
        );
        let into = if theme.starts_with("c_") {
            &mut c_tally
        } else {
            &mut sum
        };
        into.total += t.total;
        into.kernel_accepts += t.kernel_accepts;
        into.agree += t.agree;
        into.both_reject += t.both_reject;
        into.same_insn += t.same_insn;
        into.same_msg += t.same_msg;
    }
    let pct = |t: &Tally| 100.0 * t.agree as f64 / t.total.max(1) as f64;
    for (what, t) in [("assembly", &sum), ("C objects", &c_tally)] {
        eprintln!(
            "{what}: {} programs ({} accepted by the kernel), verdicts agree on {} ({:.1}%), \
             same instruction on {}/{} both reject, same message on {}",
            t.total,
            t.kernel_accepts,
            t.agree,
            pct(t),
            t.same_insn,
            t.both_reject,
            t.same_msg
        );
    }
    if kernel {
        eprintln!("{kernel_checked} programs rechecked against the running kernel");
    }
    for m in &msg_diffs {
        eprintln!("message differs: {m}");
    }
    for k in &known {
        eprintln!("known difference: {k}");
    }
    for s in &stale_known {
        eprintln!("{s}: marked @known but bpfkit now agrees; remove the marker");
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    assert!(
        only.is_some() || sum.total + c_tally.total >= 300,
        "the corpus must hold at least 300 programs"
    );
    for (what, t) in [("assembly", &sum), ("C objects", &c_tally)] {
        assert!(
            pct(t) >= 99.0,
            "{what}: verdict agreement {:.1}% is below 99%",
            pct(t)
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
