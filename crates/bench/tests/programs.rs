//! Every benchmark program, run on its benchmark input, returns what its Rust
//! reference computes: through bpfkit's interpreter, through the step counter
//! and through rbpf (the comparison engine, which must run them all for the
//! benchmark to mean anything).

use bpfkit_bench::count::run_counted;
use bpfkit_bench::programs::{pkt_input, random_bytes, BenchProgram, PROGRAMS};
use bpfkit_interp::Interpreter;
use bpfkit_isa::Program;
use bpfkit_runtime::{Helpers, Memory, RegionKind};

/// Runs `p` on `input` in bpfkit's interpreter: `r0` and executed count.
fn bpfkit_run(p: &BenchProgram, input: &[u8]) -> (u64, u64) {
    let prog = Program::decode(&p.bytecode().unwrap()).unwrap();
    let mut vm = Interpreter::new(&prog, &Helpers::new()).unwrap();
    let mut buf = input.to_vec();
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Context, &mut buf);
    let r0 = vm
        .run(&mut mem, &[addr])
        .unwrap_or_else(|t| panic!("{}: {t}", p.name));
    (r0, vm.executed())
}

#[test]
fn bpfkit_runs_every_program_to_the_reference_result() {
    for p in &PROGRAMS {
        let input = p.input();
        let (r0, executed) = bpfkit_run(p, &input);
        assert_eq!(r0, p.reference(&input), "{}", p.name);
        // Its own count agrees with the step counter's.
        let prog = Program::decode(&p.bytecode().unwrap()).unwrap();
        let counted = run_counted(&prog, &mut input.clone(), 1 << 24).unwrap();
        assert_eq!(executed, counted.insns, "{}", p.name);
    }
}

#[test]
fn bpfkit_matches_the_references_on_other_lengths_and_seeds() {
    for name in ["csum", "crc32", "calls", "tokenizer"] {
        let p = bpfkit_bench::programs::by_name(name).unwrap();
        for (len, seed) in [(0, 0), (1, 1), (3, 0xdead_beef), (1023, 2), (1499, 3)] {
            let input = pkt_input(&random_bytes(len, 40 + len as u64), seed);
            assert_eq!(
                bpfkit_run(p, &input).0,
                p.reference(&input),
                "{name} len {len}"
            );
        }
    }
}

#[test]
fn rbpf_runs_every_program_to_the_reference_result() {
    for p in &PROGRAMS {
        let code = p.bytecode().unwrap();
        let input = p.input();
        // EbpfVmMbuff with an empty metadata buffer gives r1 = start of mem,
        // exactly what EbpfVmRaw does, but without tying `mem`'s borrow to
        // the VM's lifetime.
        let vm = rbpf::EbpfVmMbuff::new(Some(&code)).unwrap();
        let r0 = vm.execute_program(&input, &[]).unwrap();
        assert_eq!(r0, p.reference(&input), "{}", p.name);
    }
}

#[test]
fn step_counter_counts_every_program() {
    for p in &PROGRAMS {
        let prog = Program::decode(&p.bytecode().unwrap()).unwrap();
        let mut input = p.input();
        let run = run_counted(&prog, &mut input, 1 << 24).unwrap();
        assert_eq!(run.r0, p.reference(&p.input()), "{}", p.name);
        eprintln!("{:10} {:7} insns {:5} calls", p.name, run.insns, run.calls);
    }
}
