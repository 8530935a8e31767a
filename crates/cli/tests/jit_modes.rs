//! `bpfkit run` on the JIT's modes: checked (default), unchecked
//! (`--verify`, accepted programs) and constant blinding (`--jit-blind`)
//! give the interpreter's results.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bpfkit");

fn path(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
        .display()
        .to_string()
}

fn run_json(extra: &[&str]) -> Value {
    let o = Command::new(BIN)
        .arg("run")
        .arg(path("examples/xdp_counter.o"))
        .args([
            "--pcap",
            &path("examples/traffic.pcap"),
            "--repeat",
            "3",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("bpfkit runs");
    assert!(
        o.status.success(),
        "{extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON document")
}

/// What must not depend on the engine: per-packet results and the maps.
fn outcome(doc: &Value) -> (Vec<Value>, Value) {
    let runs = doc["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                o.retain(|k, _| !k.contains("ns") && k != "engine");
            }
            r
        })
        .collect();
    (runs, doc["maps"].clone())
}

#[test]
fn jit_modes_match_the_interpreter() {
    let want = outcome(&run_json(&["--engine", "interp"]));
    for extra in [
        &["--engine", "jit"][..],
        &["--engine", "jit", "--verify"],
        &["--engine", "jit", "--jit-blind"],
        &["--engine", "jit", "--verify", "--jit-blind"],
    ] {
        assert_eq!(outcome(&run_json(extra)), want, "{extra:?}");
    }
}

#[test]
fn help_documents_jit_blind() {
    let o = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("bpfkit runs");
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--jit-blind"), "{help}");
    assert!(help.contains("unchecked mode"), "{help}");
}
