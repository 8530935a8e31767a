//! bpfkit's interpreter against rbpf's, on the BPF C programs of
//! `bench/programs/`: same linked bytecode, same input, same run.
//!
//! `cargo bench -p bpfkit-bench --bench interp [-- FILTER]`
//!
//! Before timing anything, each program runs once through every engine and
//! the step counter, and all must return the Rust reference's `r0`. The
//! throughput criterion reports is in executed instructions (from the step
//! counter), so `elem/s` is instructions per second. After each program's
//! criterion runs, a paired measurement (short batches of both engines back
//! to back, fastest batch of each) gives times that background load on a
//! shared machine skews less. At the end the bench prints the markdown tables
//! of `BENCHMARKS.md`: criterion's estimates (read back from its output
//! directory) and the paired times.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bpfkit_bench::count::run_counted;
use bpfkit_bench::programs::{BenchProgram, PROGRAMS};
use bpfkit_interp::Interpreter;
use bpfkit_isa::Program;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use criterion::{Criterion, Throughput};

/// Engines, in table order.
const ENGINES: [&str; 2] = ["rbpf", "bpfkit"];

/// One program's fixed facts, gathered before timing.
struct Prepared {
    program: &'static BenchProgram,
    code: Vec<u8>,
    input: Vec<u8>,
    r0: u64,
    insns: u64,
    calls: u64,
}

fn prepare(program: &'static BenchProgram) -> Prepared {
    let code = program.bytecode().expect("link");
    let input = program.input();
    let r0 = program.reference(&input);
    let decoded = Program::decode(&code).expect("decode");
    let counted = run_counted(&decoded, &mut input.clone(), 1 << 26).expect("step counter");
    assert_eq!(
        counted.r0, r0,
        "{}: step counter vs reference",
        program.name
    );
    Prepared {
        program,
        code,
        input,
        r0,
        insns: counted.insns,
        calls: counted.calls,
    }
}

/// The (program, engine) pairs this run measured, so that the table does
/// not show criterion's results of an earlier run for filtered-out ones.
type Ran = RefCell<HashSet<(&'static str, &'static str)>>;

/// Both engines, ready to run one program on its input.
struct Engines<'p> {
    rbpf: rbpf::EbpfVmMbuff<'p>,
    bpfkit: Interpreter,
    input: &'p [u8],
    buf: Vec<u8>,
}

impl<'p> Engines<'p> {
    fn new(p: &'p Prepared) -> Engines<'p> {
        let prog = Program::decode(&p.code).expect("decode");
        let mut e = Engines {
            rbpf: rbpf::EbpfVmMbuff::new(Some(&p.code)).expect("rbpf accepts the program"),
            bpfkit: Interpreter::new(&prog, &Helpers::new()).expect("bpfkit compiles the program"),
            input: &p.input,
            buf: p.input.clone(),
        };
        let name = p.program.name;
        assert_eq!(e.run_rbpf(), p.r0, "{name}: rbpf vs reference");
        assert_eq!(e.run_bpfkit(), p.r0, "{name}: bpfkit vs reference");
        assert_eq!(e.bpfkit.executed(), p.insns, "{name}: bpfkit's count");
        e
    }

    /// EbpfVmMbuff with an empty metadata buffer is what EbpfVmRaw runs
    /// (r1 = start of mem), without tying the input's borrow to the VM.
    fn run_rbpf(&self) -> u64 {
        self.rbpf
            .execute_program(black_box(self.input), &[])
            .expect("rbpf run")
    }

    /// Each run sets up its guest memory (one region over the input), as
    /// rbpf's `execute_program` takes its slice per call.
    fn run_bpfkit(&mut self) -> u64 {
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Context, black_box(&mut self.buf));
        self.bpfkit.run(&mut mem, &[addr]).expect("bpfkit run")
    }
}

fn bench_program(c: &mut Criterion, p: &Prepared, e: &mut Engines<'_>, ran: &Ran) {
    let mut group = c.benchmark_group(p.program.name);
    group.throughput(Throughput::Elements(p.insns));
    group.bench_function("rbpf", |b| {
        ran.borrow_mut().insert((p.program.name, "rbpf"));
        b.iter(|| e.run_rbpf())
    });
    group.bench_function("bpfkit", |b| {
        ran.borrow_mut().insert((p.program.name, "bpfkit"));
        b.iter(|| e.run_bpfkit())
    });
    group.finish();
}

/// Rounds of the paired measurement.
const PAIRED_ROUNDS: usize = 101;

/// Per-run times (ns) of rbpf and bpfkit from the paired measurement.
#[derive(Clone, Copy)]
struct Paired {
    rbpf: f64,
    bpfkit: f64,
}

/// Times both engines in rounds of back-to-back batches of about 1 ms each
/// (order alternating) and keeps each engine's fastest batch. Criterion
/// measures one engine for seconds, then the other; on a shared machine the
/// background load changes in between and skews the ratio. The fastest of
/// many short batches is the least disturbed one, for both engines alike.
fn measure_paired(e: &mut Engines<'_>) -> Paired {
    // Batch sizes of about 1 ms per engine: short enough that many batches
    // run without being preempted, long enough for the clock.
    let t = Instant::now();
    e.run_rbpf();
    let n_rbpf = ((0.001 / t.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(1, 100_000);
    let t = Instant::now();
    e.run_bpfkit();
    let n_bpfkit = ((0.001 / t.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(1, 100_000);
    let time_rbpf = |e: &mut Engines<'_>| {
        let t = Instant::now();
        for _ in 0..n_rbpf {
            black_box(e.run_rbpf());
        }
        t.elapsed().as_secs_f64() / n_rbpf as f64
    };
    let time_bpfkit = |e: &mut Engines<'_>| {
        let t = Instant::now();
        for _ in 0..n_bpfkit {
            black_box(e.run_bpfkit());
        }
        t.elapsed().as_secs_f64() / n_bpfkit as f64
    };
    let (mut rbpf, mut bpfkit) = (f64::INFINITY, f64::INFINITY);
    for round in 0..PAIRED_ROUNDS {
        if round % 2 == 0 {
            rbpf = rbpf.min(time_rbpf(e));
            bpfkit = bpfkit.min(time_bpfkit(e));
        } else {
            bpfkit = bpfkit.min(time_bpfkit(e));
            rbpf = rbpf.min(time_rbpf(e));
        }
    }
    Paired {
        rbpf: rbpf * 1e9,
        bpfkit: bpfkit * 1e9,
    }
}

/// Where criterion keeps its results, resolved as criterion does.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("criterion")
}

/// Criterion's typical time per iteration (slope, else mean), in ns.
fn estimate_ns(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let typical = match &json["slope"] {
        serde_json::Value::Null => &json["mean"],
        slope => slope,
    };
    typical["point_estimate"].as_f64()
}

fn print_row(p: &Prepared, rbpf: Option<f64>, bpfkit: Option<f64>) {
    let cell = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".to_owned(),
    };
    let per_insn = |v: Option<f64>| v.map(|v| v / p.insns as f64);
    let speedup = match (rbpf, bpfkit) {
        (Some(r), Some(b)) => format!("{:.1}x", r / b),
        _ => "n/a".to_owned(),
    };
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        p.program.name,
        p.insns,
        p.calls,
        cell(rbpf, 0),
        cell(bpfkit, 0),
        speedup,
        cell(per_insn(rbpf), 2),
        cell(per_insn(bpfkit), 2),
    );
}

const HEADER: &str = "| program | executed insns | calls | rbpf ns/run | bpfkit ns/run | speedup | rbpf ns/insn | bpfkit ns/insn |\n|---|---:|---:|---:|---:|---:|---:|---:|";

fn print_tables(prepared: &[Prepared], ran: &Ran, paired: &[Option<Paired>]) {
    println!();
    println!("Criterion estimates:");
    println!();
    println!("{HEADER}");
    for p in prepared {
        let t = |engine: &str| {
            let measured = ran.borrow().contains(&(p.program.name, engine));
            measured
                .then(|| estimate_ns(p.program.name, engine))
                .flatten()
        };
        print_row(p, t("rbpf"), t("bpfkit"));
    }
    println!();
    println!("Paired, fastest of {PAIRED_ROUNDS} interleaved ~1 ms batches:");
    println!();
    println!("{HEADER}");
    for (p, t) in prepared.iter().zip(paired) {
        print_row(p, t.map(|t| t.rbpf), t.map(|t| t.bpfkit));
    }
}

fn main() {
    // Short defaults so that the whole run takes a few minutes on two
    // shared cores; command-line flags (--measurement-time, ...) override.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let prepared: Vec<Prepared> = PROGRAMS.iter().map(prepare).collect();
    let ran = Ran::default();
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then criterion runs each benchmark once as a test: skip the pairing.
    let timing = std::env::args().any(|a| a == "--bench");
    let mut paired = Vec::new();
    for p in &prepared {
        let mut engines = Engines::new(p);
        bench_program(&mut c, p, &mut engines, &ran);
        let both = ENGINES
            .iter()
            .all(|e| ran.borrow().contains(&(p.program.name, *e)));
        paired.push((timing && both).then(|| measure_paired(&mut engines)));
    }
    c.final_summary();
    print_tables(&prepared, &ran, &paired);
    if timing {
        print_dispatch_sites();
    }
}

/// bpfkit's interpreter is fast only when LLVM copies its four-instruction
/// dispatch (`jmp *`) into the op handlers, which it decides by heuristics
/// that small source changes flip (see `BENCHMARKS.md`). Counts the
/// indirect jumps of `Interpreter::exec` in this binary with `objdump`, so
/// that a run shows whether the build it measured has them.
fn print_dispatch_sites() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let out = std::process::Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(&exe)
        .output();
    let Ok(out) = out else {
        println!("\n(objdump not found: dispatch sites not counted)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut in_exec = false;
    let mut sites = 0;
    for line in text.lines() {
        if line.ends_with(">:") {
            in_exec = line.contains("bpfkit_interp::Interpreter::exec");
        } else if in_exec && line.contains("jmp    *%") {
            sites += 1;
        }
    }
    println!(
        "\nDispatch: {sites} indirect jumps in Interpreter::exec{}",
        if sites < 64 {
            " (few: the dispatch was not duplicated into the handlers, expect it slower)"
        } else {
            ""
        }
    );
}
