//! End-to-end tests of `bpfkit run`: results, pcap in and out, maps,
//! program arrays, trace output, both engines, and every usage error
//! (exit 2, one line on stderr, no panic).

use bpfkit_datapath::packets::read_capture;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bpfkit");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn path(rel: &str) -> String {
    root().join(rel).display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("run")
        .args(args)
        .output()
        .expect("bpfkit runs")
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON document")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bpfkit-run-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Ethernet + IPv4 + UDP to `port`.
fn udp_packet(port: u16) -> String {
    format!(
        "020000000002020000000001080045000020000100004011f9c80a0000010a000002\
         9c41{port:04x}000c000074657374"
    )
}

fn counts(doc: &Value, proto: usize) -> String {
    doc["maps"]["counts"][proto]["value"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn runs_packets_and_dumps_maps() {
    let counter = path("examples/xdp_counter.o");
    let o = run(&[
        &counter,
        "--packet",
        &udp_packet(53),
        "--packet",
        &udp_packet(9),
        "--packet",
        "00112233445566778899aabbcc",
        "--json",
    ]);
    let doc = json(&o);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["retval"], 2);
    assert_eq!(runs[0]["action"], "XDP_PASS");
    assert_eq!(runs[0]["data_out"].as_str().unwrap(), udp_packet(53));
    assert!(runs[0]["duration_ns"].is_u64());
    assert_eq!(runs[1]["action"], "XDP_DROP");
    assert_eq!(
        runs[2]["error"],
        "packet shorter than an Ethernet header (13 bytes)"
    );
    // every index of the array, sorted; UDP (17) counted twice
    let c = doc["maps"]["counts"].as_array().unwrap();
    assert_eq!(c.len(), 256);
    assert_eq!(c[1]["key"], "01000000");
    assert_eq!(counts(&doc, 17), "0200000000000000");
}

#[test]
fn engines_agree_and_repeat_keeps_state() {
    let counter = path("examples/xdp_counter.o");
    let mut docs = Vec::new();
    for engine in ["interp", "jit"] {
        let o = run(&[
            &counter,
            "--packet",
            &udp_packet(53),
            "--repeat",
            "5",
            "--engine",
            engine,
            "--json",
        ]);
        let doc = json(&o);
        // five runs of one packet: the counter went up five times
        assert_eq!(counts(&doc, 17), "0500000000000000");
        docs.push(doc);
    }
    assert_eq!(docs[0]["maps"], docs[1]["maps"]);
    assert_eq!(
        docs[0]["runs"][0]["data_out"],
        docs[1]["runs"][0]["data_out"]
    );
}

#[test]
fn pcap_in_and_out_round_trip() {
    let out = scratch("out.pcap");
    let o = run(&[
        &path("examples/xdp_counter.o"),
        "--pcap",
        &path("examples/traffic.pcap"),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let doc = json(&o);
    let input = read_capture(&root().join("examples/traffic.pcap")).unwrap();
    let written = read_capture(&out).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), input.len());
    // every packet that passed is in the output, unchanged, with its time
    let passed: Vec<_> = input
        .iter()
        .zip(runs)
        .filter(|(_, r)| r["action"] == "XDP_PASS")
        .map(|(p, _)| p)
        .collect();
    assert!(!passed.is_empty() && passed.len() < input.len());
    assert_eq!(written.len(), passed.len());
    for (w, p) in written.iter().zip(passed) {
        assert_eq!(w.data, p.data);
        assert_eq!(w.timestamp, p.timestamp);
    }
    // the output reads back as input
    let again = json(&run(&[
        &path("examples/xdp_counter.o"),
        "--pcap",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(again["runs"].as_array().unwrap().len(), written.len());
}

#[test]
fn map_updates_prog_arrays_and_tail_calls() {
    // the kernel's expected document of the tail_calls spec, run again
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/xdp/tail_calls.json")).unwrap(),
    )
    .unwrap();
    let mut args = vec![
        path("tests/xdp/tail_calls.o"),
        "--prog".into(),
        "xdp_dispatch".into(),
    ];
    for (slot, prog) in spec["prog_array"]["jump_table"].as_object().unwrap() {
        args.extend([
            "--prog-array".into(),
            "jump_table".into(),
            slot.clone(),
            prog.as_str().unwrap().into(),
        ]);
    }
    let hex = |v: &Value| match v {
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.as_str().unwrap().replace(' ', ""))
            .collect(),
        v => v.as_str().unwrap().replace(' ', ""),
    };
    for p in spec["packets"].as_array().unwrap() {
        args.extend(["--packet".into(), hex(&p["hex"])]);
    }
    args.push("--json".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let doc = json(&run(&args));
    for (r, p) in doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(spec["packets"].as_array().unwrap())
    {
        let want = p["expect"].as_str().unwrap();
        let got = r["action"].as_str().unwrap_or("error");
        assert_eq!(
            got,
            if want == "error" { "error" } else { want },
            "{}",
            p["name"]
        );
    }
    assert!(
        doc["maps"].get("jump_table").is_none(),
        "program arrays are not dumped"
    );

    // --map-update sets entries before the first packet
    let doc = json(&run(&[
        &path("examples/xdp_counter.o"),
        "--map-update",
        "counts",
        "11000000",
        "0a00000000000000",
        "--packet",
        &udp_packet(53),
        "--json",
    ]));
    assert_eq!(counts(&doc, 17), "0b00000000000000");
}

#[test]
fn human_output_shows_actions_counts_and_trace() {
    let o = run(&[
        &path("tests/xdp/trace_printk.o"),
        // The kernel accepts it, and so must bpfkit's verifier.
        "--verify",
        "--packet",
        "02000000000b02000000000a08004500001c000100000511865ec0a864c80a000002000100020008d068",
        "--packet",
        "0102",
        "--dump-maps",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("XDP_PASS"), "{out}");
    assert!(out.contains("total: XDP_PASS 1, error 1"), "{out}");
    assert!(out.contains("trace_printk:"), "{out}");
    assert!(out.contains("xdp 42 bytes"), "{out}");
    assert!(out.contains("map 1 printk_ret"), "{out}");
}

#[test]
fn budget_traps_exit_1() {
    let o = run(&[
        &path("examples/xdp_counter.o"),
        "--packet",
        &udp_packet(53),
        "--budget",
        "3",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let err = doc["runs"][0]["error"].as_str().unwrap();
    assert!(err.contains("budget"), "{err}");
}

/// Exit 2, one line on stderr naming `needle`, nothing on stdout.
fn assert_usage_error(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.contains(needle), "{err:?} should name {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let counter = path("examples/xdp_counter.o");
    let not_elf = scratch("not_elf.o");
    std::fs::write(&not_elf, b"hello").unwrap();
    let not_pcap = scratch("not.pcap");
    std::fs::write(&not_pcap, b"definitely not a capture").unwrap();
    let tail = path("tests/xdp/tail_calls.o");
    let p = udp_packet(53);
    for (args, needle) in [
        (vec!["/nonexistent/x.o", "--packet", &p], "/nonexistent/x.o"),
        (vec![not_elf.to_str().unwrap(), "--packet", &p], "not_elf.o"),
        (vec![&counter, "--prog", "nope", "--packet", &p], "\"nope\""),
        (vec![&counter, "--packet", "abc"], "--packet #1"),
        (
            vec![&counter, "--packet", &p, "--packet", "zz"],
            "--packet #2",
        ),
        (vec![&counter, "--ctx-in", "0g"], "--ctx-in"),
        (vec![&counter, "--engine", "fast"], "\"fast\""),
        (
            vec![&counter, "--map-update", "nomap", "00", "00"],
            "\"nomap\"",
        ),
        (
            vec![&counter, "--map-update", "counts", "0x", "00"],
            "counts key",
        ),
        (
            vec![&counter, "--map-update", "counts", "00", "00"],
            "counts",
        ),
        (
            vec![&counter, "--pcap", "/nonexistent/in.pcap"],
            "/nonexistent/in.pcap",
        ),
        (
            vec![&counter, "--pcap", not_pcap.to_str().unwrap()],
            "not.pcap",
        ),
        (
            vec![
                &counter,
                "--out",
                "/nonexistent/dir/out.pcap",
                "--packet",
                &p,
            ],
            "/nonexistent/dir/out.pcap",
        ),
        (
            vec![&counter, "--prog-array", "counts", "0", "xdp_counter"],
            "counts",
        ),
        (
            vec![&tail, "--prog-array", "jump_table", "0", "nope"],
            "\"nope\"",
        ),
        (
            vec![&tail, "--prog-array", "jump_table", "x", "xdp_ipv4"],
            "bad index",
        ),
        (
            vec![&tail, "--prog-array", "jump_table", "99", "xdp_ipv4"],
            "jump_table",
        ),
    ] {
        assert_usage_error(&args, needle);
    }
    // clap's own usage errors: exit 2, naming the flag
    for (args, flag) in [
        (vec![&counter, "--map-update", "counts"], "--map-update"),
        (vec![&counter, "--budget", "x"], "--budget"),
        (vec![&counter, "--repeat", "x"], "--repeat"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains(flag));
    }
}

/// A one-function object: `section` holds `code` as function `f`.
fn object_with(section: &str, code: &[u8]) -> PathBuf {
    let path = scratch(&format!("{}.o", section.replace('/', "_")));
    std::fs::write(&path, bpfkit_testdata::bpf_object(section, code)).unwrap();
    path
}

#[test]
fn unknown_helpers_are_named_and_other_program_types_refused() {
    // r0 = 0; call 70 (bpf_skb_change_head); exit
    let code = [
        0xb7, 0, 0, 0, 0, 0, 0, 0, 0x85, 0, 0, 0, 70, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0,
    ];
    let xdp = object_with("xdp", &code);
    // The verifier refuses the helper for XDP ...
    let o = run(&[
        xdp.to_str().unwrap(),
        "--packet",
        &udp_packet(1),
        "--json",
        "--verify",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("bpfkit: error: ")
            && err.contains("program f rejected by the verifier: insn 1: "),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    // ... and without it the engine traps at the call, naming the helper.
    let o = run(&[
        xdp.to_str().unwrap(),
        "--packet",
        &udp_packet(1),
        "--json",
        "--no-verify",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let err = doc["runs"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("helper 70 (bpf_") && err.contains("not implemented"),
        "{err}"
    );

    let sock = object_with("socket", &code);
    assert_usage_error(
        &[sock.to_str().unwrap(), "--packet", &udp_packet(1)],
        "socket_filter",
    );
}

/// An XDP object of one program `f` assembled from llvm-syntax `text`.
fn xdp_object(name: &str, text: &str) -> PathBuf {
    use bpfkit_isa::asm::{assemble, Syntax};
    let insns = assemble(text, Syntax::Llvm).expect("assembles");
    let code = bpfkit_isa::codec::encode_all(&insns);
    let path = object_with("xdp", &code);
    let named = scratch(name);
    std::fs::rename(&path, &named).unwrap();
    named
}

#[test]
fn verifier_rejections_are_refused_with_verify() {
    // Reads the IPv4 protocol byte (offset 23) without comparing against
    // data_end: the kernel's verifier refuses it; 17 (UDP) - 15 = XDP_PASS.
    let unchecked = xdp_object(
        "unchecked.o",
        "r2 = *(u32 *)(r1 + 0)\n\
         r0 = *(u8 *)(r2 + 23)\n\
         r0 -= 15\n\
         exit\n",
    );
    let obj = unchecked.to_str().unwrap();
    let p = udp_packet(53);
    let o = run(&[obj, "--packet", &p, "--json", "--verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(o.stdout.is_empty(), "nothing runs");
    let mut lines = err.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("bpfkit: error: ")
            && first.contains("unchecked.o")
            && first.contains(
                "program f rejected by the verifier: insn 1: R2 offset is outside of the packet"
            )
            && first.contains("--no-verify runs it anyway"),
        "{err}"
    );
    // The verifier's context: the instruction and the registers it read.
    let context: Vec<&str> = lines.collect();
    assert!(!context.is_empty(), "{err}");
    assert!(context.iter().all(|l| l.starts_with("  ")), "{err}");
    assert!(
        context
            .iter()
            .any(|l| l.contains("r0 = *(u8 *)(r2 + 0x17)")),
        "{err}"
    );
    // Same answer in human mode, with either engine, and by default
    // (verification is on unless --no-verify).
    for extra in [
        &["--verify"][..],
        &["--verify", "--engine", "interp"][..],
        &["--verify", "--engine", "jit"][..],
        &[][..],
        &["--engine", "interp"][..],
    ] {
        let mut args = vec![obj, "--packet", &p];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("rejected by the verifier"));
    }

    // --no-verify: it runs; the read stays inside the packet, so it works.
    for extra in [
        &["--no-verify"][..],
        &["--no-verify", "--engine", "jit"][..],
    ] {
        let mut args = vec![obj, "--packet", &p, "--json"];
        args.extend_from_slice(extra);
        let doc = json(&run(&args));
        assert_eq!(doc["runs"][0]["retval"], 2, "{extra:?}");
        assert_eq!(doc["runs"][0]["action"], "XDP_PASS", "{extra:?}");
    }
    // The two flags exclude each other (a usage error).
    let o = run(&[obj, "--packet", &p, "--verify", "--no-verify"]);
    assert_eq!(o.status.code(), Some(2));

    // A read far past the frame: refused by the verifier, and without it
    // the engines' region checks trap (exit 1, the run reports the trap).
    let far = xdp_object(
        "far.o",
        "r2 = *(u32 *)(r1 + 0)\n\
         r0 = *(u8 *)(r2 + 8000)\n\
         exit\n",
    );
    let far = far.to_str().unwrap();
    let o = run(&[far, "--packet", &p, "--json", "--verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    for engine in ["interp", "jit"] {
        let o = run(&[
            far,
            "--packet",
            &p,
            "--json",
            "--no-verify",
            "--engine",
            engine,
        ]);
        assert_eq!(o.status.code(), Some(1), "{engine}");
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        let err = doc["runs"][0]["error"].as_str().unwrap();
        assert!(
            err.contains("insn 1") && err.contains("out-of-bounds read"),
            "{engine}: {err}"
        );
    }
}

#[test]
fn help_mentions_verify_flags() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("--verify") && help.contains("--no-verify"),
        "{help}"
    );
}

/// Object `tail.o`: program `f` (section `xdp`) tail-calls slot 0 of the
/// legacy program array `jt` and returns XDP_DROP when the slot is empty;
/// program `g` (section `xdp/g`) reads the packet without a bounds check
/// and returns 17 - 15 = XDP_PASS for a UDP packet.
fn tail_object() -> PathBuf {
    use bpfkit_isa::asm::{assemble, Syntax};
    use object::write::{Object, Relocation, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
        SymbolKind, SymbolScope,
    };
    let asm = |t: &str| bpfkit_isa::codec::encode_all(&assemble(t, Syntax::Llvm).unwrap());
    let f = asm("r2 = 0 ll\nr3 = 0\ncall 12\nr0 = 1\nexit\n");
    let g = asm("r2 = *(u32 *)(r1 + 0)\nr0 = *(u8 *)(r2 + 23)\nr0 -= 15\nexit\n");
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let maps = obj.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
    // struct bpf_map_def: prog array, 4-byte keys and values, 4 entries
    let def: Vec<u8> = [3u32, 4, 4, 4, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    obj.append_section_data(maps, &def, 4);
    let jt = obj.add_symbol(Symbol {
        name: b"jt".to_vec(),
        value: 0,
        size: def.len() as u64,
        kind: SymbolKind::Data,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(maps),
        flags: SymbolFlags::None,
    });
    for (sec, name, code) in [("xdp", "f", &f), ("xdp/g", "g", &g)] {
        let s = obj.add_section(Vec::new(), sec.as_bytes().to_vec(), SectionKind::Text);
        obj.append_section_data(s, code, 8);
        obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(s),
            flags: SymbolFlags::None,
        });
        if name == "f" {
            // R_BPF_64_64 on the lddw
            obj.add_relocation(
                s,
                Relocation {
                    offset: 0,
                    symbol: jt,
                    addend: 0,
                    flags: RelocationFlags::Elf { r_type: 1 },
                },
            )
            .unwrap();
        }
    }
    let lic = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(lic, b"GPL\0", 1);
    let path = scratch("tail.o");
    std::fs::write(&path, obj.write().unwrap()).unwrap();
    path
}

#[test]
fn rejected_tail_call_targets_are_refused_with_verify() {
    let tail = tail_object();
    let tail = tail.to_str().unwrap();
    let p = udp_packet(53);
    // f alone is accepted and runs: the empty slot leaves it XDP_DROP.
    let doc = json(&run(&[
        tail, "--prog", "f", "--packet", &p, "--json", "--verify",
    ]));
    assert_eq!(doc["runs"][0]["action"], "XDP_DROP");
    // Installing g, which the verifier rejects, is refused: exit 1.
    let args = [tail, "--prog", "f", "--prog-array", "jt", "0", "g"];
    let mut with_packet = args.to_vec();
    with_packet.extend(["--packet", &p, "--json"]);
    let mut verified = with_packet.clone();
    verified.push("--verify");
    let o = run(&verified);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(o.stdout.is_empty());
    assert!(
        err.lines().next().unwrap().contains(
            "program g rejected by the verifier: insn 1: R2 offset is outside of the packet"
        ),
        "{err}"
    );
    // --no-verify: the tail call reaches g, whose read stays in the packet.
    with_packet.push("--no-verify");
    let doc = json(&run(&with_packet));
    assert_eq!(doc["runs"][0]["action"], "XDP_PASS");
}

#[test]
fn repeat_with_tail_calls_agrees_between_engines() {
    // `--repeat` runs a series of runs on the JIT without leaving it, and
    // leaves it after a run that tail-calls; the maps (counters per slot,
    // the chain's 34 runs per packet) and the actions must be the
    // interpreter's, for every repeat count across the series' edges.
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/xdp/tail_calls.json")).unwrap(),
    )
    .unwrap();
    let hex = |v: &Value| match v {
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.as_str().unwrap().replace(' ', ""))
            .collect::<String>(),
        v => v.as_str().unwrap().replace(' ', ""),
    };
    let mut seen: Vec<String> = Vec::new();
    for repeat in ["1", "3", "70"] {
        let mut docs = Vec::new();
        for engine in ["interp", "jit"] {
            let mut args = vec![
                path("tests/xdp/tail_calls.o"),
                "--prog".into(),
                "xdp_dispatch".into(),
                "--engine".into(),
                engine.into(),
                "--repeat".into(),
                repeat.into(),
            ];
            for (slot, prog) in spec["prog_array"]["jump_table"].as_object().unwrap() {
                args.extend([
                    "--prog-array".into(),
                    "jump_table".into(),
                    slot.clone(),
                    prog.as_str().unwrap().into(),
                ]);
            }
            for p in spec["packets"].as_array().unwrap() {
                args.extend(["--packet".into(), hex(&p["hex"])]);
            }
            args.extend(["--json".into(), "--dump-maps".into()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let doc = json(&run(&args));
            let actions: Vec<Value> = doc["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["action"].clone())
                .collect();
            docs.push((actions, doc["maps"].clone()));
        }
        assert_eq!(docs[0], docs[1], "--repeat {repeat}: interp vs jit");
        let maps = docs[0].1.to_string();
        assert!(maps.contains("chain"), "{maps}");
        // Every run counted: more repeats, other counters.
        assert!(!seen.contains(&maps), "--repeat {repeat}: {maps}");
        seen.push(maps);
    }
}
