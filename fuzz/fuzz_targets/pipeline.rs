//! Random bytes through the whole core pipeline: decode, disassemble in both
//! syntaxes, assemble the text back (it must give the same bytes), then run
//! the program in the interpreter with a budget (it may trap, never panic).
#![no_main]

use bpfkit_interp::Interpreter;
use bpfkit_isa::disasm::{format_llvm_program, format_ubpf};
use bpfkit_isa::{assemble, encode_all, Program, Syntax};
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(prog) = Program::decode(data) else {
        return;
    };
    let llvm = format_llvm_program(&prog);
    let back = assemble(&llvm, Syntax::Llvm).expect("llvm text of a valid program assembles");
    assert_eq!(encode_all(&back), data, "llvm round trip\n{llvm}");
    let ubpf: String = prog.insns().iter().map(|i| format_ubpf(i) + "\n").collect();
    let back = assemble(&ubpf, Syntax::Ubpf).expect("ubpf text of a valid program assembles");
    assert_eq!(encode_all(&back), data, "ubpf round trip\n{ubpf}");

    let helpers = Helpers::new();
    let mut vm = Interpreter::builder()
        .budget(10_000)
        .build(&prog, &helpers)
        .expect("a decoded program compiles");
    let mut packet = [0u8; 64];
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Packet, &mut packet);
    let _ = vm.run(&mut mem, &[addr, 64]);
});
