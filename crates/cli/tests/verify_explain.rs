//! `bpfkit verify` explains a rejection: why the instruction is unsafe in
//! plain words and the branch decisions of the rejected path, while the
//! JSON `message` stays the kernel's text.

use std::path::PathBuf;
use std::process::Command;

use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::{Insn, Reg, Size};

fn bpfkit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bpfkit"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A committed clang object of the verifier's verdict tests.
fn committed(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../verifier/tests/verdicts/c")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bpfkit-explain-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// An XDP object of one program `f` made of `insns`.
fn object(name: &str, insns: &[Insn]) -> String {
    let code = bpfkit_isa::codec::encode_all(insns);
    let path = scratch(name);
    std::fs::write(&path, bpfkit_testdata::bpf_object("xdp", &code)).unwrap();
    path.to_str().unwrap().to_string()
}

fn asm_object(name: &str, text: &str) -> String {
    object(name, &assemble(text, Syntax::Llvm).expect("assembles"))
}

/// The human report of the program `prog` in `obj` (exit status 1).
fn rejection(obj: &str, prog: &str) -> String {
    rejection_with(obj, prog, &[])
}

fn rejection_with(obj: &str, prog: &str, flags: &[&str]) -> String {
    let mut args = vec!["verify", obj];
    args.extend_from_slice(flags);
    let (code, out, err) = bpfkit(&args);
    assert_eq!(code, 1, "{out}{err}");
    // The program's head line and its indented lines below.
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{prog} (")));
    let head = lines.next().unwrap_or_else(|| panic!("{prog} in {out}"));
    let mut report = format!("{head}\n");
    for l in lines.take_while(|l| l.starts_with(' ')) {
        report.push_str(l);
        report.push('\n');
    }
    report
}

fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in\n{report}"))
}

#[test]
fn packet_read_past_the_checked_range() {
    let r = rejection(&committed("xdp_parse.o"), "parse_unchecked");
    assert_eq!(
        line(&r, "why:"),
        "why: reads 1 byte at packet offset 23, but the program has only shown that 14 \
         bytes of the packet are present (by comparing a packet pointer with data_end); add \
         a bounds check covering offset 24 before this access"
    );
    assert_eq!(
        line(&r, "path:"),
        "path: insn 5 `if r3 > r2 goto +0x3` not taken"
    );
    // The kernel's own lines stay.
    line(&r, "invalid access to packet, off=23 size=1");
}

#[test]
fn map_value_null_and_bounds() {
    let obj = committed("maps.o");
    let r = rejection(&obj, "count_unchecked");
    assert!(
        line(&r, "why:").starts_with("why: R0 comes from a map lookup and may be NULL"),
        "{r}"
    );
    let r = rejection(&obj, "index_unbounded");
    assert_eq!(
        line(&r, "why:"),
        "why: reads 1 byte at offset 255 (the largest offset the index allows) of a map value \
         that is only 64 bytes long; check the index against the value size before this access"
    );
    assert_eq!(
        line(&r, "path:"),
        "path: insn 8 `if r3 > r2 goto +0x1` not taken; insn 17 `if r1 == 0x0 goto +0x8` not \
         taken; insn 21 `if r2 s> r6 goto +0x4` not taken"
    );
}

#[test]
fn leaked_reference_names_its_acquisition() {
    let r = rejection(&committed("skb.o"), "ringbuf_leaked");
    assert!(
        line(&r, "why:").starts_with("why: the resource acquired at insn 5 is not released"),
        "{r}"
    );
    assert_eq!(
        line(&r, "path:"),
        "path: insn 6 `if r0 == 0x0 goto +0x2` not taken"
    );
}

#[test]
fn uninitialised_stack_scalar_deref_and_missing_return() {
    // (Privileged programs may read uninitialised stack.)
    let obj = asm_object("uninit.o", "r0 = *(u64 *)(r10 - 8)\nexit\n");
    let r = rejection_with(&obj, "f", &["--unprivileged"]);
    assert!(
        line(&r, "why:").starts_with(
            "why: reads 8 bytes at stack offset -8, but some of them were never written"
        ),
        "{r}"
    );
    let obj = asm_object("scalar.o", "r1 = 5\nr0 = *(u8 *)(r1 + 0)\nexit\n");
    let r = rejection(&obj, "f");
    assert_eq!(
        line(&r, "why:"),
        "why: R1 holds the number 5, not a pointer, so it cannot be dereferenced"
    );
    let obj = asm_object("noret.o", "exit\n");
    let r = rejection(&obj, "f");
    assert_eq!(
        line(&r, "why:"),
        "why: R0 (the return value) is not set on this path; set it before `exit`"
    );
}

#[test]
fn path_shows_taken_branches_and_calls() {
    // r2 = data, r3 = data_end; if data + 1 > end goto out (not taken);
    // if r0 == 0 goto +1 (taken: r0 = 0); call the subprogram, which
    // reads 8 bytes past the one byte checked.
    let text = "r0 = 0\n\
                r2 = *(u32 *)(r1 + 0)\n\
                r3 = *(u32 *)(r1 + 4)\n\
                r4 = r2\n\
                r4 += 1\n\
                if r4 > r3 goto +4\n\
                if r0 == 0 goto +1\n\
                r0 = 1\n\
                r1 = r2\n\
                exit\n";
    let mut insns = assemble(text, Syntax::Llvm).expect("assembles");
    // Replace the final exit with: call +1; exit; (subprogram) r0 = *(u64 *)(r1 + 0); exit.
    insns.pop();
    insns.push(Insn::CallLocal(1));
    insns.push(Insn::Exit);
    insns.push(Insn::Load {
        size: Size::DW,
        sign_extend: false,
        dst: Reg::R0,
        src: Reg::R1,
        off: 0,
    });
    insns.push(Insn::Exit);
    let obj = object("calls.o", &insns);
    let r = rejection(&obj, "f");
    assert_eq!(
        line(&r, "path:"),
        "path: insn 5 `if r4 > r3 goto +0x4` not taken; insn 6 `if r0 == 0x0 goto +0x1` \
         taken; call at insn 9 into subprogram at 11"
    );
    assert!(
        line(&r, "why:").starts_with("why: reads 8 bytes at packet offset 0, but the program has only shown that 1 byte of the packet is present"),
        "{r}"
    );
}

#[test]
fn json_error_keeps_the_kernel_message() {
    let (code, out, _) = bpfkit(&["verify", &committed("xdp_parse.o"), "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = v["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "parse_unchecked")
        .unwrap();
    assert_eq!(p["error"]["insn"], 6);
    assert_eq!(p["error"]["message"], "R1 offset is outside of the packet");
    // Exactly the keys of CONTRACTS.md: the explanation stays in the
    // human output.
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&p["error"]), ["insn", "message"]);
    assert_eq!(
        keys(p),
        [
            "error",
            "insns_processed",
            "name",
            "section",
            "states",
            "time_us",
            "type",
            "verdict"
        ]
    );
}

#[test]
fn run_refusal_shows_the_explanation() {
    let obj = asm_object("runref.o", "r1 = 5\nr0 = *(u8 *)(r1 + 0)\nexit\n");
    let (code, _, err) = bpfkit(&["run", &obj, "--packet", "00"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("\n  why: R1 holds the number 5, not a pointer"),
        "{err}"
    );
}

#[test]
fn stack_bounds_pointer_arithmetic_and_control_flow() {
    let obj = asm_object("stack.o", "r0 = *(u64 *)(r10 + 0)\nexit\n");
    let r = rejection(&obj, "f");
    assert_eq!(
        line(&r, "why:"),
        "why: reads 8 bytes at stack offset 0, outside the 512 bytes below the frame pointer \
         that make up this function's stack"
    );
    let obj = asm_object("arith.o", "r2 = *(u32 *)(r1 + 4)\nr2 *= 2\nr0 = 0\nexit\n");
    let r = rejection(&obj, "f");
    assert!(
        line(&r, "why:").starts_with("why: this arithmetic on R2 (a pointer of type pkt_end)"),
        "{r}"
    );
    // Found by the control-flow checks, before any path is walked.
    let obj = asm_object("unreach.o", "r0 = 0\nexit\nr0 = 1\nexit\n");
    let r = rejection(&obj, "f");
    assert_eq!(
        line(&r, "why:"),
        "why: no path from the program's start reaches this instruction"
    );
}

#[test]
fn helper_argument_and_infinite_loop() {
    let obj = asm_object(
        "helperarg.o",
        "r1 = 0\nr2 = r10\nr2 += -8\ncall 1\nr0 = 0\nexit\n",
    );
    let r = rejection(&obj, "f");
    assert_eq!(
        line(&r, "why:"),
        "why: the helper needs R1 to be a map (load it with `r = map` / a map reference), \
         but R1 holds the number 0"
    );
    let obj = asm_object("spin.o", "r0 = 0\nif r0 == 0 goto -1\nexit\n");
    let r = rejection(&obj, "f");
    assert!(
        line(&r, "why:").starts_with("why: the loop comes back to this instruction in exactly"),
        "{r}"
    );
    assert_eq!(
        line(&r, "path:"),
        "path: insn 1 `if r0 == 0x0 goto -0x1` taken (x7)"
    );
}
