//! Paired A/B timing of the JIT's generated code on the benchmark
//! programs: more samples than the kernel bench, only bpfkit's sides.
//!
//! `cargo run --release -p bpfkit-bench --example hotloops -- [NAMES] [SECONDS]`
//! NAMES: comma-separated benchmark programs (default all six); SECONDS:
//! total time budget (default 6). For each program: `direct` (checked JIT,
//! r1 = the input, as the kernel bench's direct column), `checked` and
//! `unchecked` (the XDP wrapper with `run --repeat` semantics, as the kernel
//! bench's two run columns; unchecked only where the verifier accepts).
//! Prints the fastest, the 10th percentile and the median of many ~0.5 ms
//! batches per side, the sides interleaved. `HL_ONLY="acl checked"` keeps
//! one side (for sweeps over builds or code placements). Compare an old and
//! a new build by running both binaries alternately: this machine moves
//! single rows by several percent between runs.

use bpfkit::Engine;
use bpfkit_bench::programs::by_name;
use bpfkit_bench::xdp::{wrapped_cases, BpfkitSide};
use bpfkit_isa::Program;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use std::hint::black_box;
use std::time::Instant;

fn run_direct(jit: &mut Jit, input: &mut [u8]) -> u64 {
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Context, input);
    jit.run(&mut mem, &[addr]).unwrap_or(u64::MAX)
}

struct Side {
    name: String,
    samples: Vec<f64>,
    f: Box<dyn FnMut() -> f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<String> = args
        .first()
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_else(|| {
            ["parser", "csum", "crc32", "tokenizer", "calls", "acl"]
                .map(String::from)
                .to_vec()
        });
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(6.0);
    let cases = wrapped_cases();
    let mut sides: Vec<Side> = Vec::new();
    for name in &names {
        let p = by_name(name).expect("a benchmark program");
        let mut input = p.input();
        let reference = p.reference(&input);
        let prog = Program::decode(&p.bytecode().unwrap()).unwrap();
        let mut jit = Jit::new(&prog, &Helpers::new()).unwrap();
        assert_eq!(run_direct(&mut jit, &mut input), reference, "{name}");
        // ~0.5 ms batches.
        let t = Instant::now();
        run_direct(&mut jit, &mut input);
        let per = t.elapsed().as_nanos().max(50) as u64;
        let n = (500_000 / per).max(1);
        sides.push(Side {
            name: format!("{name} direct"),
            samples: Vec::new(),
            f: Box::new(move || {
                let t = Instant::now();
                for _ in 0..n {
                    black_box(run_direct(&mut jit, &mut input));
                }
                t.elapsed().as_nanos() as f64 / n as f64
            }),
        });
        let case = cases.iter().find(|c| c.name == *name).unwrap();
        for unchecked in [false, true] {
            let side = if unchecked {
                BpfkitSide::load_verified(case)
            } else {
                BpfkitSide::load(case, Engine::Jit)
            };
            let Ok(mut side) = side else { continue };
            let r = side.run(1).unwrap();
            assert_eq!(r.retval, reference & 0xffff_ffff, "{name}");
            if unchecked && !side.runs_unchecked() {
                continue;
            }
            let repeat = (500_000 / per.max(10)).clamp(1, 100_000) as u32;
            sides.push(Side {
                name: format!("{name} {}", if unchecked { "unchecked" } else { "checked" }),
                samples: Vec::new(),
                f: Box::new(move || {
                    let t = Instant::now();
                    side.run(repeat).unwrap();
                    t.elapsed().as_nanos() as f64 / repeat as f64
                }),
            });
        }
    }
    if let Ok(only) = std::env::var("HL_ONLY") {
        sides.retain(|s| s.name == only);
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        for s in sides.iter_mut() {
            let v = (s.f)();
            s.samples.push(v);
        }
    }
    for s in &mut sides {
        s.samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let k = s.samples.len();
        println!(
            "{:<22} min {:>8.1}  p10 {:>8.1}  median {:>8.1}  ({k} batches)",
            s.name,
            s.samples[0],
            s.samples[k / 10],
            s.samples[k / 2]
        );
    }
}
