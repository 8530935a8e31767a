//! Compiling and dropping many programs gives their memory back: code
//! chunks are unmapped once used up and empty, stacks are kept only up to
//! a small per-thread bound. Alone in its file (its own process), so that
//! no other test's allocations move the figures.

use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory};

/// Resident and mapped bytes of this process, and its number of mappings.
fn usage() -> (u64, u64, usize) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let mut f = statm.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (size, resident) = (f.next().unwrap(), f.next().unwrap());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    (resident * 4096, size * 4096, maps.lines().count())
}

#[test]
fn compiling_and_dropping_many_programs_releases_memory() {
    if !bpfkit_jit::is_supported() {
        return;
    }
    let h = Helpers::new();
    // One small and one multi-page program (its code spans several pages).
    let small = Program::from_insns(
        assemble("mov %r0, 1\nstxdw [%r10-8], %r0\nexit", Syntax::Ubpf).unwrap(),
    )
    .unwrap();
    let mut text = String::new();
    for i in 0..1500 {
        text += &format!("add %r0, {i}\nldxdw %r1, [%r10-16]\n");
    }
    text += "exit";
    let big = Program::from_insns(assemble(&text, Syntax::Ubpf).unwrap()).unwrap();
    let mut mem = Memory::new();
    let mut round = |i: usize| {
        let p = if i.is_multiple_of(50) { &big } else { &small };
        let mut j = Jit::new(p, &h).unwrap();
        if i.is_multiple_of(10) {
            assert!(j.run(&mut mem, &[]).is_ok());
        }
        drop(j);
    };
    for i in 0..2_000 {
        round(i);
    }
    let before = usage();
    for i in 0..100_000 {
        round(i);
    }
    let after = usage();
    // 100,000 compiles would hold 400 MB of code pages and stacks if
    // nothing were given back; the arena keeps at most its open chunk.
    assert!(
        after.0 < before.0 + (16 << 20),
        "resident {} -> {} bytes",
        before.0,
        after.0
    );
    assert!(
        after.1 < before.1 + (16 << 20),
        "mapped {} -> {} bytes",
        before.1,
        after.1
    );
    assert!(
        after.2 < before.2 + 16,
        "mappings {} -> {}",
        before.2,
        after.2
    );
}
