//! Agreement with the kernel's verdicts on the real-world corpus
//! (`$BPFKIT_SHARED/corpus/ebpf-samples`, default `<workspace>/../shared`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bpfkit_abi::{MapDef, ProgType};
use bpfkit_verifier::{verify, Options, Verdict};

fn corpus_dir() -> PathBuf {
    let shared = std::env::var_os("BPFKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    shared.join("corpus/ebpf-samples")
}

#[derive(Default)]
struct Tally {
    total: u32,
    agree: u32,
    both_reject: u32,
    same_insn: u32,
}

#[test]
fn agreement_with_kernel_verdicts() {
    let dir = corpus_dir();
    let verdicts = dir.join("kernel-verdicts.jsonl");
    let Ok(text) = std::fs::read_to_string(&verdicts) else {
        eprintln!("skipped: no corpus at {}", verdicts.display());
        return;
    };
    let mut per: BTreeMap<String, Tally> = BTreeMap::new();
    let mut disagreements = Vec::new();
    let mut other_message: Vec<String> = Vec::new();
    // (ours, kernel's) over the programs both accept.
    let mut insns = (0u64, 0u64);
    // Per program: (ours / kernel's, name).
    let mut ratios: Vec<(f64, String, u64, u64)> = Vec::new();
    let mut time_us = (0u64, 0u64);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let kernel = v["verdict"].as_str().unwrap();
        if kernel == "skipped" {
            continue;
        }
        let object = v["object"].as_str().unwrap();
        let name = v["program"].as_str().unwrap();
        let t = ProgType::from_name(v["prog_type"].as_str().unwrap()).unwrap();
        let folder = object.split('/').next().unwrap().to_string();
        let tally = per.entry(folder).or_default();
        tally.total += 1;
        let data = std::fs::read(dir.join(object)).unwrap();
        let ours = match bpfkit_elf::LoadedObject::load(&data) {
            Ok(obj) => match obj.program(name) {
                Some(p) => {
                    let maps: Vec<MapDef> = obj.maps.iter().map(|m| m.def.clone()).collect();
                    let r = verify(&p.insns, t, &maps, &Options::default());
                    Some(r)
                }
                None => None,
            },
            Err(_) => None,
        };
        let (our_verdict, our_err) = match &ours {
            Some(r) => (
                if r.verdict == Verdict::Accepted {
                    "accepted"
                } else {
                    "rejected"
                },
                r.error.as_ref().map(|e| format!("{}: {}", e.pc, e.message)),
            ),
            None => ("rejected", Some("load failed".to_string())),
        };
        if let (Some(r), Some(k)) = (&ours, v["processed_insns"].as_u64()) {
            if kernel == "accepted" && r.verdict == Verdict::Accepted {
                insns.0 += r.insns_processed;
                insns.1 += k;
                ratios.push((
                    r.insns_processed as f64 / k.max(1) as f64,
                    format!("{object} {name} ({} vs {k})", r.insns_processed),
                    r.insns_processed,
                    k,
                ));
                time_us.0 += r.time.as_micros() as u64;
                time_us.1 += v["verification_time_usec"].as_u64().unwrap_or(0);
            }
        }
        if our_verdict == kernel {
            tally.agree += 1;
            if kernel == "rejected" {
                tally.both_reject += 1;
                // The kernel's log gives no index in `error`; compare messages.
                let kmsg = v["error"].as_str().unwrap_or("");
                let ours = our_err.as_deref().unwrap_or("");
                let msg = ours.split_once(": ").map_or(ours, |(_, m)| m);
                if kmsg.starts_with(msg) {
                    tally.same_insn += 1;
                } else {
                    other_message.push(format!("{object} {name}: kernel [{kmsg}], ours [{ours}]"));
                }
            }
        } else {
            disagreements.push(format!(
                "{object} {name} ({}): kernel {kernel} [{}], ours {our_verdict} [{}]",
                v["prog_type"].as_str().unwrap(),
                v["error"].as_str().unwrap_or(""),
                our_err.unwrap_or_default()
            ));
        }
    }
    let (mut total, mut agree, mut both, mut same) = (0, 0, 0, 0);
    println!(
        "{:<18} {:>6} {:>6} {:>8} {:>12}",
        "folder", "progs", "agree", "both-rej", "same-msg"
    );
    for (k, t) in &per {
        println!(
            "{k:<18} {:>6} {:>6} {:>8} {:>12}",
            t.total, t.agree, t.both_reject, t.same_insn
        );
        total += t.total;
        agree += t.agree;
        both += t.both_reject;
        same += t.same_insn;
    }
    println!(
        "total {total}, agree {agree} ({:.1}%)",
        100.0 * agree as f64 / total as f64
    );
    println!(
        "processed insns over programs both accept: ours {}, kernel {} ({:.2}x); time: ours {} us (this build), kernel {} us",
        insns.0,
        insns.1,
        insns.0 as f64 / insns.1.max(1) as f64,
        time_us.0,
        time_us.1
    );
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(first), Some(last)) = (ratios.first(), ratios.last()) {
        let within = ratios.iter().filter(|r| r.0 <= 1.1).count();
        println!(
            "processed insns ours/kernel per program: min {:.2}, median {:.2}, p90 {:.2}, max {:.2} ({}); {within}/{} within 1.1x",
            first.0,
            ratios[ratios.len() / 2].0,
            ratios[ratios.len() * 9 / 10].0,
            last.0,
            last.1,
            ratios.len()
        );
        for (r, what, _, _) in ratios.iter().rev().take(8) {
            println!("  {r:.2}x {what}");
        }
        let mut excess: Vec<&(f64, String, u64, u64)> = ratios.iter().collect();
        excess.sort_by_key(|r| std::cmp::Reverse(r.2.saturating_sub(r.3)));
        for (r, what, _, _) in excess.iter().take(3) {
            println!("  most insns over the kernel's: {r:.2}x {what}");
        }
    }
    for d in &disagreements {
        println!("  verdict differs: {d}");
    }
    for d in &other_message {
        println!("  message differs: {d}");
    }
    // Pruning as effective as the kernel's (precision tracking, read
    // marks, the kernel's checkpoint heuristics): regression limits,
    // slightly looser than what the verifier achieves (0.97x overall,
    // 221 of 227 programs within 1.1x, worst 1.53x).
    if !ratios.is_empty() {
        let within = ratios.iter().filter(|r| r.0 <= 1.1).count();
        assert!(
            insns.0 * 100 <= insns.1 * 105,
            "processed {} insns, kernel {}",
            insns.0,
            insns.1
        );
        assert!(
            within * 100 >= ratios.len() * 95,
            "{within}/{} within 1.1x",
            ratios.len()
        );
        assert!(
            ratios.last().unwrap().0 <= 2.0,
            "{}",
            ratios.last().unwrap().1
        );
        // Loop-heavy and branchy programs, each within 25% of the kernel.
        for name in [
            "build/bounded_loop.o",
            "build/loop",
            "linux/sockex2_kern.o",
            "ovs/datapath.o",
        ] {
            for r in ratios.iter().filter(|r| r.1.starts_with(name)) {
                assert!(r.0 <= 1.25, "{:.2}x {}", r.0, r.1);
            }
        }
    }
    // Regression floors, slightly below what the verifier achieves.
    assert!(
        same + 1 >= both,
        "only {same} of {both} shared rejections have the kernel's message"
    );
    assert!(
        agree * 100 >= total * FLOOR_PERCENT,
        "agreement {agree}/{total} below {FLOOR_PERCENT}%"
    );
}

const FLOOR_PERCENT: u32 = 99;

/// Where both verifiers reject a corpus program, the instruction index:
/// the verdict file holds only the kernel's last log line, so each such
/// program is loaded into the running kernel again (maps created, map
/// references turned into fds) and the index is read from its log.
#[test]
fn rejected_programs_fail_at_the_kernels_instruction() {
    let dir = corpus_dir();
    let Ok(text) = std::fs::read_to_string(dir.join("kernel-verdicts.jsonl")) else {
        eprintln!("skipped: no corpus");
        return;
    };
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("skipped: {e}");
        return;
    }
    let (mut compared, mut same, mut skipped) = (0, 0, 0);
    let mut diffs = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["verdict"] != "rejected" {
            continue;
        }
        let object = v["object"].as_str().unwrap();
        let name = v["program"].as_str().unwrap();
        let t = ProgType::from_name(v["prog_type"].as_str().unwrap()).unwrap();
        let obj =
            bpfkit_elf::LoadedObject::load(&std::fs::read(dir.join(object)).unwrap()).unwrap();
        let p = obj.program(name).unwrap();
        let maps: Vec<MapDef> = obj.maps.iter().map(|m| m.def.clone()).collect();
        let ours = verify(&p.insns, t, &maps, &Options::default());
        let Some(our_err) = ours.error else { continue };
        // Kernel maps (plain ones only).
        let mut kmaps = Vec::new();
        for m in &maps {
            if m.inner.is_some() {
                break;
            }
            match bpfkit_kernel::Map::create(&bpfkit_kernel::MapSpec {
                map_type: m.map_type as u32,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                map_flags: m.map_flags,
                ..Default::default()
            }) {
                Ok(k) => kmaps.push(k),
                Err(_) => break,
            }
        }
        if kmaps.len() != maps.len() {
            skipped += 1;
            continue;
        }
        let bytes = p.insns.to_bytes_with_map_fds(|m| kmaps[m as usize].fd());
        let mut load = bpfkit_kernel::ProgLoad::new(t as u32, &bytes);
        load.log_level = 2;
        let log = match load.load() {
            Ok(_) => {
                skipped += 1;
                continue;
            }
            Err(bpfkit_kernel::KernelError::Rejected { log, .. }) => log,
            Err(e) => panic!("{e}"),
        };
        // The last instruction line before the error.
        let kpc = log.lines().rev().find_map(|l| {
            let (n, rest) = l.split_once(": (")?;
            rest.get(2..4).filter(|s| *s == ") ")?;
            n.trim().parse::<usize>().ok()
        });
        let Some(kpc) = kpc else {
            // Rejected before exploring (CFG checks): the message says where.
            skipped += 1;
            continue;
        };
        compared += 1;
        if kpc == our_err.pc {
            same += 1;
        } else {
            diffs.push(format!(
                "{object} {name}: kernel insn {kpc}, ours {} ({})",
                our_err.pc, our_err.message
            ));
        }
    }
    println!("rejections compared by instruction: {same}/{compared} at the same insn ({skipped} not comparable)");
    for d in &diffs {
        println!("  {d}");
    }
    assert!(compared >= 10, "{compared}");
    assert!(same + 1 >= compared, "{same}/{compared}");
}

/// The benchmark programs (`bench/kernel/xdp_*.o`, loop-heavy XDP code the
/// kernel accepts): bpfkit must accept each, and (where `bpf()` works)
/// within a few times the kernel's processed instructions. Each is
/// deliberate, terminating code, so loading it into the kernel is safe.
#[test]
fn bench_programs_are_accepted_like_the_kernel() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/kernel");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    let kernel = bpfkit_kernel::probe().is_ok();
    let mut failures = Vec::new();
    for path in &names {
        let obj = bpfkit_elf::LoadedObject::load(&std::fs::read(path).unwrap()).unwrap();
        let maps: Vec<MapDef> = obj.maps.iter().map(|m| m.def.clone()).collect();
        for p in &obj.programs {
            let file = path.file_name().unwrap().to_string_lossy();
            let ours = verify(&p.insns, ProgType::Xdp, &maps, &Options::default());
            let mut line = format!(
                "{file} {}: ours {} insns, {} states, {:.1} ms",
                p.name,
                ours.insns_processed,
                ours.states,
                ours.time.as_secs_f64() * 1e3
            );
            if let Some(e) = &ours.error {
                line += &format!(", rejected: {e}");
            }
            // crc32's and the tokenizer's loops negate (crc32's mask
            // `-(crc & 1)`), on which this machine's kernel verifier
            // misbehaves: never sent.
            if kernel && !NOT_FOR_THE_KERNEL.contains(&file.as_ref()) {
                let kmaps: Vec<bpfkit_kernel::Map> = maps
                    .iter()
                    .map(|m| {
                        bpfkit_kernel::Map::create(&bpfkit_kernel::MapSpec {
                            map_type: m.map_type as u32,
                            key_size: m.key_size,
                            value_size: m.value_size,
                            max_entries: m.max_entries,
                            map_flags: m.map_flags,
                            ..Default::default()
                        })
                        .unwrap()
                    })
                    .collect();
                let bytes = p.insns.to_bytes_with_map_fds(|m| kmaps[m as usize].fd());
                let (log, kernel_accepts) =
                    match bpfkit_kernel::ProgLoad::new(ProgType::Xdp as u32, &bytes).load() {
                        Ok(prog) => (prog.log().to_string(), true),
                        Err(bpfkit_kernel::KernelError::Rejected { log, .. }) => (log, false),
                        // Refused before the system call (a newer
                        // `bpfkit-kernel` checks for such masks itself).
                        Err(e) => {
                            println!("{line}; not sent to the kernel: {e}");
                            continue;
                        }
                    };
                if kernel_accepts != ours.error.is_none() {
                    failures.push(format!(
                        "{file} {}: kernel {}, ours {:?}",
                        p.name,
                        if kernel_accepts { "accepts" } else { "rejects" },
                        ours.error
                    ));
                }
                if let Some(stats) = log.lines().find(|l| l.starts_with("processed ")) {
                    println!("  kernel: {stats}");
                }
                let k: u64 = log
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("processed ")?
                            .split(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap();
                let ratio = ours.insns_processed as f64 / k as f64;
                line += &format!(", kernel {k} insns ({ratio:.2}x)");
                if ours.error.is_none() && ratio > BENCH_RATIO {
                    failures.push(format!("{line}: more than {BENCH_RATIO}x the kernel's"));
                }
            }
            println!("{line}");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// How many times the kernel's processed instructions the benchmark
/// programs may take here.
const BENCH_RATIO: f64 = 1.15;

/// Benchmark objects never loaded into this machine's kernel: a negation
/// inside a loop (see the crate's kernel-agreement notes).
const NOT_FOR_THE_KERNEL: &[&str] = &["xdp_crc32.o", "xdp_tokenizer.o"];
