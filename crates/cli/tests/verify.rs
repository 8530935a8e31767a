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

/// Deterministic test packets: well-formed Ethernet/IPv4/IPv6/VLAN headers
/// over TCP, UDP and ICMP, truncated at many lengths, and random bytes.
fn packets() -> Vec<String> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = Vec::new();
    let eth = |t: u16| {
        let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        p.extend_from_slice(&t.to_be_bytes());
        p
    };
    let mut bases = Vec::new();
    for proto in [6u8, 17, 1] {
        let mut p = eth(0x0800);
        p.extend_from_slice(&[
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        p.extend_from_slice(&[
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        bases.push(p);
        let mut p = eth(0x86dd);
        p.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, proto, 64]);
        p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        bases.push(p);
    }
    let mut vlan = eth(0x8100);
    vlan.extend_from_slice(&[0, 5, 0x08, 0x00]);
    vlan.extend_from_slice(&bases[0][14..]);
    bases.push(vlan);
    for b in &bases {
        for len in [
            14,
            15,
            20,
            33,
            34,
            38,
            42,
            53,
            54,
            58,
            b.len(),
            b.len() + 40,
        ] {
            let mut p = b.clone();
            p.resize(len, 0xab);
            out.push(p);
        }
    }
    for _ in 0..20 {
        let len = 14 + (rnd() % 200) as usize;
        out.push((0..len).map(|_| rnd() as u8).collect());
    }
    out.iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

/// Soundness check (a start): every corpus XDP program that the verifier
/// accepts runs in the interpreter over many packets without a trap (an
/// out-of-bounds access or other fault the verifier should have refused).
#[test]
fn accepted_xdp_programs_do_not_trap() {
    let Some(d) = corpus() else { return };
    let text = std::fs::read_to_string(d.join("kernel-verdicts.jsonl")).unwrap();
    let pkts = packets();
    let (mut checked, mut unsupported) = (0, 0);
    let mut failures = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["prog_type"] != "xdp" {
            continue;
        }
        let obj = d.join(v["object"].as_str().unwrap());
        let obj = obj.to_str().unwrap();
        let name = v["program"].as_str().unwrap();
        let (code, out, _) = bpfkit(&["verify", obj, "--prog", name, "--type", "xdp", "--json"]);
        if code != 0 {
            continue;
        }
        assert!(out.contains("\"accepted\""));
        let mut args = vec!["run", obj, "--prog", name, "--engine", "interp", "--json"];
        for p in &pkts {
            args.push("--packet");
            args.push(p);
        }
        let (code, out, err) = bpfkit(&args);
        if code == 2 {
            // The runtime cannot set the object up (a map type it does not
            // have yet): not a verifier question.
            eprintln!("not run: {name}: {}", err.trim());
            unsupported += 1;
            continue;
        }
        checked += 1;
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        for run in doc["runs"].as_array().unwrap() {
            let Some(e) = run["error"].as_str() else {
                continue;
            };
            // Helpers the runtime lacks and packets the kernel refuses are
            // not verifier questions; every other trap is.
            if !e.contains("is not implemented") && !e.contains("shorter than") {
                failures.push(format!("{obj} {name}: {e}"));
            }
        }
    }
    eprintln!(
        "{checked} accepted XDP programs ran over {} packets each ({unsupported} not runnable here)",
        pkts.len()
    );
    assert!(checked >= 30, "only {checked} programs checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
