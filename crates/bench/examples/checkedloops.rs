//! The checked JIT on the benchmark programs that only run checked (acl,
//! tokenizer), for reading the generated code and counting where its
//! instructions go.
//!
//! ```sh
//! cargo build --release -p bpfkit-bench --example checkedloops
//! # the code, and its address in this process (for callgrind's output):
//! target/release/examples/checkedloops dump acl /tmp/acl.bin
//! objdump -D -b binary -mi386:x86-64 /tmp/acl.bin
//! # host instructions per direct run (the bench's "direct" column):
//! valgrind --tool=callgrind --toggle-collect='checkedloops::direct_runs' \
//!     target/release/examples/checkedloops direct acl 200
//! # per-instruction counts of the generated code:
//! valgrind --tool=callgrind --dump-instr=yes --collect-atstart=no \
//!     --toggle-collect='checkedloops::direct_runs' \
//!     target/release/examples/checkedloops direct acl 200
//! ```
//!
//! `direct NAME N` runs the program N times as the kernel bench's direct
//! column does (a fresh `Memory` with the input as its one region per run,
//! r1 = the input), `same NAME N` N times over one `Memory` (what `run
//! --repeat` gives the code: the region table and its hot-region cache
//! stay), `native NAME N` the same C compiled natively (for comparing
//! instruction counts: `--toggle-collect='checkedloops::native_runs'`),
//! `lower NAME N` only lowers it N times (`--toggle-collect='checkedloops::lowerings'`),
//! and prints the code's address and length.

use bpfkit_bench::programs::by_name;
use bpfkit_isa::Program;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use std::hint::black_box;
use std::time::Instant;

#[inline(never)]
fn direct_runs(jit: &mut Jit, input: &mut [u8], n: u64) -> u64 {
    let mut r = 0;
    for _ in 0..n {
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Context, input);
        r ^= jit.run(&mut mem, &[addr]).unwrap_or(u64::MAX);
    }
    r
}

#[inline(never)]
fn same_runs(jit: &mut Jit, input: &mut [u8], n: u64) -> u64 {
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Context, input);
    let mut r = 0;
    for _ in 0..n {
        r ^= jit.run(&mut mem, &[addr]).unwrap_or(u64::MAX);
    }
    r
}

/// The lowering alone, `n` times (see `Builder::lower_only`).
#[inline(never)]
fn lowerings(prog: &Program, n: u64) -> u64 {
    let h = Helpers::new();
    for _ in 0..n {
        black_box(Jit::builder().lower_only().build(prog, &h).err());
    }
    n
}

#[cfg(bench_native)]
#[inline(never)]
fn native_runs(name: &str, input: &mut [u8], n: u64) -> u64 {
    extern "C" {
        fn bpfkit_native_tokenizer(input: *mut u8) -> u64;
        fn bpfkit_native_acl(input: *mut u8) -> u64;
    }
    let f: unsafe extern "C" fn(*mut u8) -> u64 = match name {
        "tokenizer" => bpfkit_native_tokenizer,
        "acl" => bpfkit_native_acl,
        _ => panic!("native: tokenizer or acl"),
    };
    let mut r = 0;
    for _ in 0..n {
        // SAFETY: `input` is the program's own input, built at the size of
        // the C struct the function takes (as the kernel bench calls it).
        r ^= unsafe { f(input.as_mut_ptr()) };
    }
    r
}

#[cfg(not(bench_native))]
fn native_runs(_name: &str, _input: &mut [u8], _n: u64) -> u64 {
    panic!("the native library was not built (no clang-19)")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, name) = match args.as_slice() {
        [m, n, ..] => (m.as_str(), n.as_str()),
        _ => {
            eprintln!("usage: checkedloops dump|direct|same|native NAME [OUT.bin | N]");
            std::process::exit(2);
        }
    };
    let p = by_name(name).expect("a benchmark program");
    let mut input = p.input();
    let reference = p.reference(&input);
    let prog = Program::decode(&p.bytecode().unwrap()).unwrap();
    let mut jit = Jit::new(&prog, &Helpers::new()).unwrap();
    let code = jit.code();
    println!(
        "{name}: code at {:#x}, {} bytes",
        code.addr(),
        code.bytes().len()
    );
    if mode == "dump" {
        let out = args.get(2).expect("OUT.bin");
        std::fs::write(out, code.bytes()).unwrap();
        return;
    }
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    if mode == "lower" {
        let t = Instant::now();
        lowerings(&prog, n);
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{name} lower: {n} lowerings, {ns:.1} ns each");
        return;
    }
    let t = Instant::now();
    let r = match mode {
        "direct" => direct_runs(&mut jit, &mut input, n),
        "same" => same_runs(&mut jit, &mut input, n),
        "native" => native_runs(name, &mut input, n),
        _ => panic!("mode dump, direct, same or native"),
    };
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    let want = if n % 2 == 1 { reference } else { 0 };
    assert_eq!(black_box(r), want, "{name}: results");
    println!("{name} {mode}: {n} runs, {ns:.1} ns/run");
}
