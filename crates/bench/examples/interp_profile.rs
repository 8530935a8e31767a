//! Runs one bench program on bpfkit's interpreter many times, for profilers
//! whose counts are stable on a shared machine (callgrind's instruction
//! counts, unlike wall time, do not move with the background load).
//!
//! `cargo build --release -p bpfkit-bench --example interp_profile`
//! `valgrind --tool=callgrind target/release/examples/interp_profile tokenizer 20`
//! `target/release/examples/interp_profile all time`: fastest of 200 ~1 ms
//! batches per program, in ns per executed instruction (to compare two
//! builds run alternately; the bench's paired rbpf ratio is the reference).

use bpfkit_bench::programs::{BenchProgram, PROGRAMS};
use bpfkit_interp::Interpreter;
use bpfkit_isa::Program;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "tokenizer".into());
    let runs = args.next().unwrap_or_else(|| "20".into());
    let selected: Vec<_> = PROGRAMS
        .iter()
        .filter(|p| name == "all" || p.name == name)
        .collect();
    if selected.is_empty() {
        eprintln!("unknown program {name}");
        std::process::exit(2);
    }
    for p in selected {
        if runs == "time" {
            time(p);
        } else if runs == "trace" {
            trace(p);
        } else {
            count(p, runs.parse().unwrap_or(20));
        }
    }
}

fn time(p: &BenchProgram) {
    let code = p.bytecode().expect("link");
    let mut input = p.input();
    let prog = Program::decode(&code).expect("decode");
    let mut vm = Interpreter::new(&prog, &Helpers::new()).expect("compile");
    let mut run = |vm: &mut Interpreter| {
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Context, black_box(&mut input));
        black_box(vm.run(&mut mem, &[addr]).expect("run"));
    };
    let t = Instant::now();
    run(&mut vm);
    let n = ((0.001 / t.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(1, 100_000);
    let mut best = f64::INFINITY;
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..n {
            run(&mut vm);
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    let ns = best * 1e9 / vm.executed() as f64;
    println!("{:10} {ns:.3} ns/insn", p.name);
}

/// Prints how often each slot pc executed, `pc count`, one a line.
fn trace(p: &BenchProgram) {
    let code = p.bytecode().expect("link");
    let mut input = p.input();
    let prog = Program::decode(&code).expect("decode");
    let mut vm = Interpreter::new(&prog, &Helpers::new()).expect("compile");
    let mut counts = vec![0u64; prog.slot_count() + 1];
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Context, &mut input);
    vm.run_traced(&mut mem, &[addr], None, &mut |pc, _, _| counts[pc.0] += 1)
        .expect("run");
    for (pc, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        println!("{pc} {n}");
    }
}

fn count(p: &BenchProgram, runs: u64) {
    let name = p.name;
    let code = p.bytecode().expect("link");
    let mut input = p.input();
    let expected = p.reference(&input);
    let prog = Program::decode(&code).expect("decode");
    let mut vm = Interpreter::new(&prog, &Helpers::new()).expect("compile");
    for _ in 0..runs {
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Context, black_box(&mut input));
        let r0 = vm.run(&mut mem, &[addr]).expect("run");
        assert_eq!(r0, expected, "{name}: bpfkit vs reference");
    }
    println!("{name}: {runs} runs of {} insns", vm.executed());
}
