//! The differential XDP suite: every `tests/xdp/*.json` spec.
//!
//! - `coverage`: the objects together use every map type and helper of the
//!   project issue (read from the objects, no kernel needed).
//! - `kernel_and_bpfkit_agree`: runs each spec in the kernel (skipped with a
//!   reason when `bpf()` is refused), checks the packets' expected actions,
//!   compares the normalised result with `tests/xdp/expected/<name>.json`
//!   (rewritten with `DIFFTEST_BLESS=1`), and compares bpfkit's
//!   `bpfkit run --json` with the kernel's when a `bpfkit` with `run` exists
//!   (else with the expected file when the kernel is not available).

use bpfkit_difftest::{bpfkit, compare, kernel, rules_for, spec::Spec, spec_paths, suite_dir};
use bpfkit_elf::LoadedObject;
use bpfkit_isa::Insn;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn suite_has_twenty_programs_with_objects_and_specs() {
    let dir = suite_dir();
    let sources: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    assert!(sources.len() >= 20, "{} C programs", sources.len());
    for src in &sources {
        assert!(
            src.with_extension("o").exists(),
            "{} has no object: run tests/xdp/build.sh",
            src.display()
        );
    }
    let specs = spec_paths();
    assert!(specs.len() >= 20, "{} specs", specs.len());
    // every object is run by at least one spec
    let used: BTreeSet<String> = specs
        .iter()
        .map(|p| Spec::read(p).unwrap().object)
        .collect();
    for src in &sources {
        let obj = src.with_extension("o");
        let name = obj.file_name().unwrap().to_string_lossy().into_owned();
        assert!(used.contains(&name), "no spec runs {name}");
    }
}

#[test]
fn coverage() {
    let mut map_types = BTreeSet::new();
    let mut helpers = BTreeSet::new();
    for entry in std::fs::read_dir(suite_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "o") {
            continue;
        }
        let obj = LoadedObject::load(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for m in &obj.maps {
            map_types.insert(m.def.map_type.name());
        }
        for p in &obj.programs {
            for insn in p.insns.insns() {
                if let Insn::Call(id) = insn {
                    helpers.insert(id.0);
                }
            }
        }
    }
    for t in [
        "array",
        "percpu_array",
        "hash",
        "percpu_hash",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "prog_array",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "devmap_hash",
        "ringbuf",
        "perf_event_array",
        "queue",
        "stack",
    ] {
        assert!(map_types.contains(t), "no program uses a {t} map");
    }
    // ids from include/uapi/linux/bpf.h
    for (id, name) in [
        (1, "map_lookup_elem"),
        (2, "map_update_elem"),
        (3, "map_delete_elem"),
        (5, "ktime_get_ns"),
        (6, "trace_printk"),
        (7, "get_prandom_u32"),
        (8, "get_smp_processor_id"),
        (12, "tail_call"),
        (23, "redirect"),
        (25, "perf_event_output"),
        (28, "csum_diff"),
        (44, "xdp_adjust_head"),
        (51, "redirect_map"),
        (54, "xdp_adjust_meta"),
        (65, "xdp_adjust_tail"),
        (87, "map_push_elem"),
        (88, "map_pop_elem"),
        (89, "map_peek_elem"),
        (125, "ktime_get_boot_ns"),
        (130, "ringbuf_output"),
        (131, "ringbuf_reserve"),
        (132, "ringbuf_submit"),
        (133, "ringbuf_discard"),
        (134, "ringbuf_query"),
        (160, "ktime_get_coarse_ns"),
        (164, "for_each_map_elem"),
        (181, "loop"),
    ] {
        assert!(helpers.contains(&id), "no program calls bpf_{name}");
    }
}

fn expected_path(spec: &Path) -> std::path::PathBuf {
    let dir = spec.parent().unwrap().join("expected");
    dir.join(spec.file_name().unwrap())
}

#[test]
fn kernel_and_bpfkit_agree() {
    let kernel_ok = match bpfkit_kernel::probe() {
        Ok(()) => true,
        Err(e) => {
            println!("kernel side skipped: bpf() is not available here: {e}");
            false
        }
    };
    let bpfkit_bin = bpfkit::find_binary();
    if bpfkit_bin.is_none() {
        println!("bpfkit side pending: no `bpfkit` binary answers `bpfkit run --help`");
    }
    let bless = std::env::var_os("DIFFTEST_BLESS").is_some();
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in spec_paths() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let spec = Spec::read(&path).unwrap();
        let object_path = spec.object_path(&path);
        let object = std::fs::read(&object_path).unwrap();
        let rules = rules_for(&spec, &object).unwrap();
        let golden_path = expected_path(&path);
        let golden: Option<Value> = std::fs::read_to_string(&golden_path)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap());

        let mut reference = golden.clone();
        if kernel_ok {
            let run = match kernel::run(&spec, &object) {
                Ok(r) => r,
                Err(e) => {
                    if let bpfkit_difftest::DiffError::Rejected { log, .. } = &e {
                        let tail: Vec<&str> = log.lines().rev().take(20).collect();
                        println!("{name}: verifier log tail:\n{}", tail.join("\n"));
                    }
                    failures.push(format!("{name}: kernel: {e}"));
                    continue;
                }
            };
            ran += 1;
            for f in kernel::check_expectations(&spec, &run.doc) {
                failures.push(format!("{name}: {f}"));
            }
            let normal = compare::normalise(&run.doc, &rules);
            if bless {
                std::fs::create_dir_all(golden_path.parent().unwrap()).unwrap();
                let text = serde_json::to_string_pretty(&normal).unwrap() + "\n";
                std::fs::write(&golden_path, text).unwrap();
            } else if let Some(g) = &golden {
                for m in compare::compare(g, &run.doc, &rules) {
                    failures.push(format!("{name}: kernel vs expected/{name}.json: {m}"));
                }
            } else {
                failures.push(format!(
                    "{name}: no expected/{name}.json (run with DIFFTEST_BLESS=1)"
                ));
            }
            if std::env::var_os("DIFFTEST_PRINT").is_some() {
                println!(
                    "{name}: {}",
                    serde_json::to_string_pretty(&run.doc).unwrap()
                );
            }
            reference = Some(run.doc);
        }
        if let (Some(bin), Some(reference)) = (&bpfkit_bin, &reference) {
            match bpfkit::run(bin, &spec, &object_path) {
                Ok(doc) => {
                    for m in compare::compare(reference, &doc, &rules) {
                        failures.push(format!("{name}: kernel vs bpfkit: {m}"));
                    }
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    if kernel_ok {
        println!("kernel side: {ran} specs ran");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The bpfkit side's plumbing, with a stand-in `bpfkit` (a shell script that
/// records its arguments and prints a document): flags per CONTRACTS.md, the
/// document parsed, the comparison against the expected kernel result.
#[test]
fn bpfkit_side_runs_the_binary_and_compares() {
    let dir = std::env::temp_dir().join(format!("difftest-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec_path = suite_dir().join("lb_tx.json");
    let spec = Spec::read(&spec_path).unwrap();
    let object = spec.object_path(&spec_path);
    let rules = rules_for(&spec, &std::fs::read(&object).unwrap()).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(expected_path(&spec_path)).unwrap()).unwrap();

    // what bpfkit would print: the expected result, with durations, actions
    // and a map the kernel cannot dump
    let mut doc = expected.clone();
    for r in doc["runs"].as_array_mut().unwrap() {
        if r.get("retval").is_some() {
            r["duration_ns"] = 17.into();
            r["action"] = "XDP_TX".into();
        }
    }
    doc["maps"]["events"] = Value::Array(vec![]);
    let doc_path = dir.join("doc.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let args_path = dir.join("args");
    let script = dir.join("bpfkit");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = run ] || exit 2\necho \"$@\" > '{}'\ncat '{}'\n",
            args_path.display(),
            doc_path.display()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());

    let got = bpfkit::run(&script, &spec, &object).unwrap();
    assert_eq!(compare::compare(&expected, &got, &rules), vec![]);
    let args = std::fs::read_to_string(&args_path).unwrap();
    assert!(args.starts_with(&format!(
        "run {} --prog xdp_lb --map-update backends 00000000 ",
        object.display()
    )));
    assert_eq!(args.matches("--packet ").count(), spec.packets.len());
    assert!(args.trim_end().ends_with("--json"));

    // a different packet out of the stand-in is reported
    let mut wrong = doc.clone();
    wrong["runs"][0]["data_out"] = "00".into();
    std::fs::write(&doc_path, wrong.to_string()).unwrap();
    let got = bpfkit::run(&script, &spec, &object).unwrap();
    let m = compare::compare(&expected, &got, &rules);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].path, "runs[0].data_out");

    // a failing bpfkit is an error with its stderr
    std::fs::write(&script, "#!/bin/sh\necho 'unknown map vips' >&2\nexit 2\n").unwrap();
    let e = bpfkit::run(&script, &spec, &object).unwrap_err();
    assert!(e.to_string().contains("unknown map vips"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The committed objects are what `build.sh` makes of the sources (skipped
/// without clang-19 or libbpf's headers).
#[test]
fn objects_match_their_sources() {
    let have_clang = std::process::Command::new("clang-19")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_clang || !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        println!("skipped: clang-19 or libbpf-dev (bpf/bpf_helpers.h) is not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("difftest-build-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let build = std::process::Command::new("sh")
        .arg(suite_dir().join("build.sh"))
        .env("OUT", &out)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build.sh failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let fresh = entry.unwrap().path();
        let name = fresh.file_name().unwrap().to_owned();
        let committed = std::fs::read(suite_dir().join(&name)).unwrap_or_default();
        if std::fs::read(&fresh).unwrap() != committed {
            stale.push(name.to_string_lossy().into_owned());
        }
    }
    std::fs::remove_dir_all(&out).ok();
    assert!(
        stale.is_empty(),
        "objects differ from their sources (run tests/xdp/build.sh): {stale:?}"
    );
}
