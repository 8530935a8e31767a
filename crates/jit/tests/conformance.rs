//! The bpf_conformance suite (shared/conformance, 313 files) through the
//! JIT in process, each result also compared with the interpreter's.
//! Skipped, with a message, when the shared folder is absent.

use bpfkit_interp::Interpreter;
use bpfkit_jit::Jit;
use bpfkit_runtime::{HelperAbort, Helpers, Memory, RegionKind, Trap};
use bpfkit_testdata::{conformance_dir, load_dir, DataFile};

const BUDGET: u64 = 1 << 31;

/// uBPF's plugin helpers (shared/conformance/README.md): 0 gather_bytes,
/// 1 memfrob, 2 no_op, 3 sqrti, 4 strcmp_ext, 5 unwind (returning 0 ends
/// the program with r0 = 0).
fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register(0, |_env, a| {
        Ok((a[0] & 0xff) << 32
            | (a[1] & 0xff) << 24
            | (a[2] & 0xff) << 16
            | (a[3] & 0xff) << 8
            | (a[4] & 0xff))
    });
    h.register(1, |env, a| {
        let g = env.guest();
        for i in 0..a[1] {
            let p = a[0].wrapping_add(i);
            let [b] = g.load::<1>(p)?;
            g.store::<1>(p, [b ^ 42])?;
        }
        Ok(0)
    });
    h.register(2, |_env, _a| Ok(0));
    h.register(3, |_env, a| Ok((a[0] as f64).sqrt() as u64));
    h.register(4, |env, a| {
        let g = env.guest();
        let mut i = 0u64;
        loop {
            let [x] = g.load::<1>(a[0].wrapping_add(i))?;
            let [y] = g.load::<1>(a[1].wrapping_add(i))?;
            if x != y || x == 0 {
                return Ok((x as i64 - y as i64) as u64);
            }
            i += 1;
        }
    });
    h.register(5, |_env, a| match a[0] {
        0 => Err(HelperAbort::Stop { r0: 0 }),
        x => Ok(x),
    });
    h
}

fn run(f: &DataFile, jit: bool, budget: bool) -> Result<u64, String> {
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
        for budget in [false, true] {
            let got = run(f, true, budget);
            let interp = run(f, false, true);
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
                    "FAIL {} (budget {budget}): jit {got:x?}, interp {interp:x?}, expected {:x?}",
                    c.name, f.result
                );
            }
        }
    }
    println!("jit: {passed} passed, {failed} failed (313 files, with and without a budget)");
    assert_eq!(failed, 0, "{failed} conformance runs failed");
}
