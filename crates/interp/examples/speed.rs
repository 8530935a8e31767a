//! Ad-hoc speed check: ns per executed instruction on a few loops.
//!
//! `cargo run --release -p bpfkit-interp --example speed`

use bpfkit_interp::Interpreter;
use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::Program;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use std::time::Instant;

const PROGRAMS: &[(&str, &str)] = &[
    (
        "alu loop",
        "mov %r0, 0\nmov %r1, 100000\nloop:\nadd %r0, %r1\nxor %r0, 0x55\nlsh %r0, 1\nrsh %r0, 1\nsub %r1, 1\njne %r1, 0, loop\nexit",
    ),
    (
        "stack + packet loop",
        "mov %r0, 0\nmov %r6, 100000\nloop:\nldxb %r3, [%r1+3]\nstxdw [%r10-8], %r3\nldxdw %r4, [%r10-8]\nadd %r0, %r4\nldxw %r5, [%r1+4]\nadd32 %r0, %r5\nsub %r6, 1\njne %r6, 0, loop\nexit",
    ),
    (
        "prime (conformance)",
        "mov %r1, 100003\nmov %r0, 1\nmov %r2, 2\nloop:\nmov %r3, %r1\ndiv %r3, %r2\nmul %r3, %r2\nmov %r4, %r1\nsub %r4, %r3\nmov %r0, 0\njeq %r4, 0, exit\nadd %r2, 1\nmov %r0, 1\njgt %r1, %r2, loop\nexit",
    ),
];

fn main() {
    for (name, text) in PROGRAMS {
        let prog = Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap();
        let mut vm = Interpreter::new(&prog, &Helpers::new()).unwrap();
        let mut pkt = [0u8; 64];
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Packet, &mut pkt);
        let mut best = f64::MAX;
        let mut r0 = 0;
        for _ in 0..20 {
            let t = Instant::now();
            r0 = vm.run(&mut mem, &[addr, 64]).unwrap();
            let ns = t.elapsed().as_nanos() as f64 / vm.executed() as f64;
            best = best.min(ns);
        }
        println!(
            "{name:24} {:>9} insns/run  best {best:.2} ns/insn  (r0 = {r0:#x})",
            vm.executed()
        );
    }
}
