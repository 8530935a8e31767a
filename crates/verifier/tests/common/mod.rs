//! Pieces shared by the tests that generate programs (`generated.rs`,
//! `handwritten.rs`).

use bpfkit_interp::Interpreter;
use bpfkit_isa::Program;
use bpfkit_runtime::{Helpers, Memory, RegionKind};

/// xorshift64: deterministic randomness for generated tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `xs`.
    #[allow(dead_code)] // used by generated.rs only
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Runs a program the verifier accepted 8 times in the checked interpreter,
/// each on a fresh random 192-byte context: the first trap, with the
/// program's disassembly, or `None` when every run ended cleanly (what an
/// accepted program must do).
pub fn trap_on_random_contexts(prog: &Program, helpers: &Helpers, rng: &mut Rng) -> Option<String> {
    let mut interp = Interpreter::new(prog, helpers).unwrap();
    for _ in 0..8 {
        let mut ctx: Vec<u8> = (0..192).map(|_| rng.next() as u8).collect();
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Context, &mut ctx);
        if let Err(t) = interp.run(&mut mem, &[addr]) {
            return Some(format!(
                "{t:?}\n{}",
                bpfkit_isa::disasm::format_llvm_program(prog)
            ));
        }
    }
    None
}
