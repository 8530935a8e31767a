//! Verification time: bpfkit's verifier against the kernel's own
//! `verification time N usec`, program by program.
//!
//! ```sh
//! cargo run --release -p bpfkit-verifier --example verify_time            # the ebpf-samples corpus
//! cargo run --release -p bpfkit-verifier --example verify_time -- --verdicts   # tests/verdicts too
//! ```
//!
//! Programs: those of `$BPFKIT_SHARED/corpus/ebpf-samples/kernel-verdicts.jsonl`
//! that the kernel accepted or rejected (its recorded `verification_time_usec`
//! is shown), and with `--verdicts` the verdict corpus of `tests/verdicts/`.
//! Where `bpf()` works (and without `--no-kernel`) each program is loaded
//! into the running kernel `--kernel-runs` times (default 5) at log level 4
//! and the median of the times it reports is the kernel's figure; else the
//! recorded figure is used. bpfkit's figure is the median over `--runs`
//! (default 5) calls of `verify`, `Report::time`: what `bpfkit verify --json`
//! prints as `time_us`. `--filter TEXT` keeps the programs whose name
//! contains TEXT; `--all` prints every row, not only the worst 10. The
//! `processed` column is bpfkit's count of processed instructions (the
//! kernel's `processed N insns`), to check that a speed-up left the
//! exploration unchanged.

#[path = "../tests/verdicts/corpus.rs"]
mod corpus;

use std::path::PathBuf;
use std::time::Duration;

use bpfkit_abi::ProgType;
use bpfkit_verifier::{verify, Options, Verdict};

struct Row {
    name: String,
    insns: usize,
    /// Instructions bpfkit processed (the kernel's `processed N insns`).
    processed: u64,
    recorded_us: Option<f64>,
    kernel_us: Option<f64>,
    bpfkit_us: f64,
    kernel_accepts: Option<bool>,
    bpfkit_accepts: bool,
}

impl Row {
    /// The kernel figure compared against: measured now, else recorded.
    fn kernel(&self) -> Option<f64> {
        self.kernel_us.or(self.recorded_us)
    }

    fn ratio(&self) -> Option<f64> {
        // The kernel reports whole microseconds; below 1 it says 0.
        self.kernel().map(|k| self.bpfkit_us / k.max(1.0))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn shared() -> PathBuf {
    std::env::var_os("BPFKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

struct Args {
    runs: usize,
    kernel_runs: usize,
    kernel: bool,
    verdicts: bool,
    samples: bool,
    filter: Option<String>,
    all: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        runs: 5,
        kernel_runs: 5,
        kernel: true,
        verdicts: false,
        samples: true,
        filter: None,
        all: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or(format!("{what} takes a positive number"))
        };
        match x.as_str() {
            "--runs" => a.runs = num("--runs")?,
            "--kernel-runs" => a.kernel_runs = num("--kernel-runs")?,
            "--no-kernel" => a.kernel = false,
            "--verdicts" => a.verdicts = true,
            "--only-verdicts" => {
                a.verdicts = true;
                a.samples = false;
            }
            "--filter" => a.filter = Some(it.next().ok_or("--filter takes a text")?),
            "--all" => a.all = true,
            _ => return Err(format!("unknown argument {x}")),
        }
    }
    Ok(a)
}

/// A program to time: the case (type, privilege, source) and the kernel's
/// recorded figures when there are some.
struct Item {
    case: corpus::Case,
    recorded_us: Option<f64>,
    recorded_accepts: Option<bool>,
}

fn samples() -> Result<Vec<Item>, String> {
    let dir = shared().join("corpus/ebpf-samples");
    let path = dir.join("kernel-verdicts.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut items = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let verdict = v["verdict"].as_str().unwrap_or("");
        if verdict != "accepted" && verdict != "rejected" {
            continue;
        }
        let object = v["object"].as_str().unwrap_or_default();
        let prog = v["program"].as_str().unwrap_or_default();
        let Some(t) = v["prog_type"].as_str().and_then(ProgType::from_name) else {
            continue;
        };
        items.push(Item {
            case: corpus::Case {
                theme: "ebpf-samples".into(),
                name: format!("{object}:{prog}"),
                prog_type: t,
                unprivileged: false,
                maps: Vec::new(),
                source: corpus::Source::Object {
                    path: dir.join(object),
                    prog: prog.to_string(),
                },
                expect: None,
                known: None,
                line: 0,
            },
            recorded_us: v["verification_time_usec"].as_f64(),
            recorded_accepts: Some(verdict == "accepted"),
        });
    }
    Ok(items)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("verify_time: {e}");
            std::process::exit(2);
        }
    };
    let kernel = a.kernel
        && match bpfkit_kernel::probe() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("kernel not measured (recorded figures only): {e}");
                false
            }
        };
    let mut items = Vec::new();
    if a.samples {
        match samples() {
            Ok(s) => items.extend(s),
            Err(e) => eprintln!("ebpf-samples skipped: {e}"),
        }
    }
    if a.verdicts {
        items.extend(corpus::all().into_iter().map(|case| {
            let accepts = case.expect.as_ref().map(corpus::Expect::accepted);
            Item {
                case,
                recorded_us: None,
                recorded_accepts: accepts,
            }
        }));
    }
    if let Some(f) = &a.filter {
        items.retain(|i| i.case.name.contains(f.as_str()));
    }
    let mut rows = Vec::new();
    let mut unloadable = 0;
    for item in &items {
        let c = &item.case;
        let name = if c.theme == "ebpf-samples" {
            c.name.clone()
        } else {
            format!("{}/{}", c.theme, c.name)
        };
        let l = match c.load() {
            Ok(l) => l,
            Err(e) => {
                unloadable += 1;
                eprintln!("{name}: not loaded: {e}");
                continue;
            }
        };
        let opts = Options {
            unprivileged: c.unprivileged,
            ..Options::default()
        };
        let mut times = Vec::new();
        let mut accepts = false;
        let mut processed = 0;
        for _ in 0..a.runs {
            let r = verify(&l.prog, c.prog_type, &l.maps, &opts);
            accepts = r.verdict == Verdict::Accepted;
            processed = r.insns_processed;
            times.push(r.time.as_secs_f64() * 1e6);
            // One run is enough to know that a program is slow; more would
            // only make the benchmark slow too.
            if r.time > Duration::from_secs(2) {
                break;
            }
        }
        let mut kernel_us = None;
        let mut kernel_accepts = item.recorded_accepts;
        if kernel {
            let mut k = Vec::new();
            for _ in 0..a.kernel_runs {
                match corpus::kernel_load_raw(c.prog_type, c.unprivileged, &l, 4) {
                    Ok((ok, log)) => {
                        kernel_accepts = Some(ok);
                        if let Some(t) = bpfkit_kernel::verification_time_usec(&log) {
                            k.push(t as f64);
                        }
                    }
                    Err(e) => {
                        eprintln!("{name}: kernel load failed ({e}); recorded figure used");
                        break;
                    }
                }
            }
            if !k.is_empty() {
                kernel_us = Some(median(k));
            }
        }
        rows.push(Row {
            name,
            insns: l.prog.insns().len(),
            processed,
            recorded_us: item.recorded_us,
            kernel_us,
            bpfkit_us: median(times),
            kernel_accepts,
            bpfkit_accepts: accepts,
        });
    }
    report(&rows, a.all, kernel);
    if unloadable > 0 {
        eprintln!("{unloadable} programs could not be loaded by bpfkit and are not timed");
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn report(rows: &[Row], all: bool, kernel: bool) {
    let line = |r: &Row| {
        let verdict = |a: Option<bool>| match a {
            Some(true) => "acc",
            Some(false) => "rej",
            None => "?",
        };
        println!(
            "{:<58} {:>6} {:>9} {:>9} {:>9} {:>10.1} {:>7} {:>4} {:>4}",
            r.name,
            r.insns,
            r.processed,
            opt(r.recorded_us),
            opt(r.kernel_us),
            r.bpfkit_us,
            r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
            verdict(r.kernel_accepts),
            verdict(Some(r.bpfkit_accepts)),
        );
    };
    let header = || {
        println!(
            "{:<58} {:>6} {:>9} {:>9} {:>9} {:>10} {:>7} {:>4} {:>4}",
            "program",
            "insns",
            "processed",
            "k.rec us",
            "k.now us",
            "bpfkit us",
            "ratio",
            "k",
            "ours"
        )
    };
    let mut sorted: Vec<&Row> = rows.iter().filter(|r| r.ratio().is_some()).collect();
    sorted.sort_by(|a, b| b.ratio().unwrap().total_cmp(&a.ratio().unwrap()));
    if all {
        header();
        rows.iter().for_each(line);
        println!();
    }
    let n = sorted.len();
    let geo = if n > 0 {
        (sorted.iter().map(|r| r.ratio().unwrap().ln()).sum::<f64>() / n as f64).exp()
    } else {
        f64::NAN
    };
    let slower = sorted.iter().filter(|r| r.ratio().unwrap() > 1.0).count();
    let total_k: f64 = sorted.iter().map(|r| r.kernel().unwrap()).sum();
    let total_b: f64 = sorted.iter().map(|r| r.bpfkit_us).sum();
    let disagree = rows
        .iter()
        .filter(|r| r.kernel_accepts.is_some_and(|k| k != r.bpfkit_accepts))
        .count();
    println!(
        "kernel figure: {}",
        if kernel {
            "measured now (median of the kernel's own reports)"
        } else {
            "recorded in kernel-verdicts.jsonl"
        }
    );
    println!("{n} programs timed; ratio = bpfkit us / kernel us (kernel below 1 us counted as 1)");
    println!("geometric mean of the ratio: {geo:.3}");
    println!(
        "slower than the kernel: {slower} of {n}; total {:.0} us bpfkit vs {:.0} us kernel",
        total_b, total_k
    );
    println!("verdicts that differ from the kernel's: {disagree}");
    if !all {
        println!("\nworst 10 by ratio:");
        header();
        sorted.iter().take(10).for_each(|r| line(r));
    }
}
