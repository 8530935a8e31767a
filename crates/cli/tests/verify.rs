//! `bpfkit verify` against corpus objects (skipped when the corpus is absent).

use std::path::PathBuf;
use std::process::Command;

fn corpus() -> Option<PathBuf> {
    let shared = std::env::var_os("BPFKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let d = shared.join("corpus/ebpf-samples");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipped: no corpus at {}", d.display());
        None
    }
}

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

#[test]
fn accepted_object_exits_zero_with_contract_fields() {
    let Some(d) = corpus() else { return };
    let obj = d.join("linux/xdp1_kern.o");
    let (code, out, _) = bpfkit(&["verify", obj.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["programs"][0];
    assert_eq!(p["name"], "xdp_prog1");
    assert_eq!(p["section"], "xdp1");
    assert_eq!(p["type"], "xdp");
    assert_eq!(p["verdict"], "accepted");
    assert!(p["error"].is_null());
    for k in ["insns_processed", "states", "time_us"] {
        assert!(p[k].is_u64(), "{k} in {p}");
    }
}

#[test]
fn rejected_object_exits_one_and_names_the_insn() {
    let Some(d) = corpus() else { return };
    let obj = d.join("build/nullmapref.o");
    let path = obj.to_str().unwrap();
    // The section name `test` implies no type: unusable without --type.
    let (code, _, err) = bpfkit(&["verify", path]);
    assert_eq!(code, 2);
    assert!(err.contains("--type"), "{err}");
    let (code, out, _) = bpfkit(&["verify", path, "--type", "socket_filter", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["programs"][0];
    assert_eq!(p["verdict"], "rejected");
    assert_eq!(p["error"]["insn"], 7);
    assert_eq!(
        p["error"]["message"],
        "R0 invalid mem access 'map_value_or_null'"
    );
    let (code, out, _) = bpfkit(&[
        "verify",
        path,
        "--type",
        "socket_filter",
        "--log-level",
        "2",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("6: (85) call 0x1  ; R0=map_value_or_null(id=1,map=#0)"),
        "{out}"
    );
    assert!(out.contains("source: *value = 1;"), "{out}");
}

#[test]
fn unknown_program_and_bad_type_are_usage_errors() {
    let Some(d) = corpus() else { return };
    let obj = d.join("linux/xdp1_kern.o");
    let path = obj.to_str().unwrap();
    assert_eq!(bpfkit(&["verify", path, "--prog", "nope"]).0, 2);
    assert_eq!(bpfkit(&["verify", path, "--type", "nope"]).0, 2);
    assert_eq!(bpfkit(&["verify", path, "--log-level", "3"]).0, 2);
}
