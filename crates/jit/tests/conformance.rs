//! The bpf_conformance suite (shared/conformance, 313 files) through the
//! JIT in process (with and without a budget, and with constant blinding),
//! each result also compared with the interpreter's.
//! Skipped, with a message, when the shared folder is absent.

use bpfkit_interp::Interpreter;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Memory, RegionKind, Trap};
use bpfkit_testdata::{conformance_dir, conformance_helpers as helpers, load_dir, DataFile};

const BUDGET: u64 = 1 << 31;

fn run(f: &DataFile, jit: bool, budget: bool, blind: bool) -> Result<u64, String> {
    let prog = f.program().map_err(|e| e.to_string())?;
    let mut copy = f.mem.clone();
    let mut m = Memory::new();
    let addr = if copy.is_empty() {
        0
    } else {
        m.add(RegionKind::Context, &mut copy)
    };
    let args = [addr, f.mem.len() as u64];
    let h = helpers();
    let r: Result<u64, Trap> = if jit {
        let b = if budget {
            Jit::builder().budget(BUDGET)
        } else {
            Jit::builder()
        };
        let b = b.blind_constants(blind);
        b.build(&prog, &h)
            .map_err(|e| e.to_string())?
            .run(&mut m, &args)
    } else {
        Interpreter::builder()
            .budget(BUDGET)
            .build(&prog, &h)
            .map_err(|e| e.to_string())?
            .run(&mut m, &args)
    };
    r.map_err(|t| t.to_string())
}

#[test]
fn conformance_jit() {
    if !bpfkit_jit::is_supported() {
        eprintln!("skipped: the JIT supports x86-64 Linux only");
        return;
    }
    let Some(dir) = conformance_dir() else {
        eprintln!("skipped: shared/conformance not found (set BPFKIT_SHARED to the shared folder)");
        return;
    };
    let cases = load_dir(&dir).expect("read conformance folder");
    assert_eq!(cases.len(), 313, "expected the 313 conformance files");
    let (mut passed, mut failed) = (0, 0);
    for c in &cases {
        let f = match &c.file {
            Ok(f) => f,
            Err(e) => panic!("{}: parse: {e}", c.name),
        };
        assert!(f.skip_reason().is_none(), "{}", c.name);
        for (budget, blind) in [(false, false), (true, false), (false, true)] {
            let got = run(f, true, budget, blind);
            let interp = run(f, false, true, false);
            let ok = match (&got, &f.error) {
                (Ok(r0), None) => *r0 == f.result.unwrap_or(0),
                (Err(_), Some(_)) => true,
                _ => false,
            } && got == interp;
            if ok {
                passed += 1;
            } else {
                failed += 1;
                println!(
                    "FAIL {} (budget {budget}, blind {blind}): jit {got:x?}, interp {interp:x?}, expected {:x?}",
                    c.name, f.result
                );
            }
        }
    }
    println!(
        "jit: {passed} passed, {failed} failed (313 files: no budget, budget, constant blinding)"
    );
    assert_eq!(failed, 0, "{failed} conformance runs failed");
}
