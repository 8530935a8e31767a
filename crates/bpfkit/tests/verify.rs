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
    // r2 = ctx->data; r0 = *(u8 *)(r2 + 23); exit: a packet read with no
    // comparison against data_end, which the kernel's verifier refuses too.
    let code = [
        0x61, 0x12, 0, 0, 0, 0, 0, 0, // r2 = *(u32 *)(r1 + 0)
        0x71, 0x20, 23, 0, 0, 0, 0, 0, // r0 = *(u8 *)(r2 + 23)
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ];
    let bytes = bpfkit_testdata::bpf_object("xdp", &code);
    let obj = Loader::new().engine(Engine::Interp).load(&bytes).unwrap();
    let i = obj.program_index("f").unwrap();
    match obj.check(i) {
        Err(bpfkit::Error::Rejected {
            program,
            pc,
            message,
            context,
        }) => {
            assert_eq!(program, "f");
            assert_eq!(pc, 1);
            assert_eq!(message, "R2 offset is outside of the packet");
            assert!(context.contains("r0 = *(u8 *)(r2 + 0x17)"), "{context}");
        }
        other => panic!("{other:?}"),
    }
    let e = obj.check(i).unwrap_err().to_string();
    assert_eq!(
        e,
        "program f rejected by the verifier: insn 1: R2 offset is outside of the packet"
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
