//! Every benchmark program, run on its benchmark input, returns what its Rust
//! reference computes: through the step counter and through rbpf (the
//! comparison engine, which must run them all for the benchmark to mean
//! anything).

use bpfkit_bench::count::run_counted;
use bpfkit_bench::programs::PROGRAMS;
use bpfkit_isa::Program;

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
