//! Verification in the facade: reports kept per program, `Loader::verify`.

use bpfkit::{Engine, Loader};

fn object(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read(p).unwrap()
}

#[test]
fn accepted_programs_have_a_report_and_may_run() {
    let obj = Loader::new()
        .engine(Engine::Interp)
        .load(&object("examples/xdp_counter.o"))
        .unwrap();
    assert!(obj.verifies());
    let r = obj.report(0).expect("an xdp program is verified");
    assert_eq!(r.verdict, bpfkit::Verdict::Accepted);
    assert!(r.error.is_none() && r.insns_processed > 0);
    // kept, not recomputed
    assert!(std::ptr::eq(r, obj.report(0).unwrap()));
    obj.check(0).unwrap();
}

#[test]
fn rejections_name_program_insn_and_message() {
    // Kernel-accepted, but bpfkit's verifier does not model a 32-bit
    // `scalar -= pkt` yet: a rejection to inspect.
    let bytes = object("tests/xdp/parse_stats.o");
    let obj = Loader::new().engine(Engine::Interp).load(&bytes).unwrap();
    let i = obj.program_index("xdp_parse_stats").unwrap();
    match obj.check(i) {
        Err(bpfkit::Error::Rejected {
            program,
            pc,
            message,
            context,
        }) => {
            assert_eq!(program, "xdp_parse_stats");
            assert_eq!(pc, 3);
            assert_eq!(message, "R6 tried to subtract pointer from scalar");
            assert!(context.contains("w6 -= w1"), "{context}");
        }
        other => panic!("{other:?}"),
    }
    let e = obj.check(i).unwrap_err().to_string();
    assert_eq!(
        e,
        "program xdp_parse_stats rejected by the verifier: insn 3: R6 tried to subtract pointer from scalar"
    );
    // verification off: no report, and every program may run
    let obj = Loader::new()
        .engine(Engine::Interp)
        .verify(false)
        .load(&bytes)
        .unwrap();
    assert!(!obj.verifies());
    assert!(obj.report(i).is_none());
    obj.check(i).unwrap();
}
