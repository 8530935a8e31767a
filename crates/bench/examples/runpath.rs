//! Runs one case of the kernel benchmark on bpfkit's side only, for
//! profiling the run path (`bpfkit run --repeat`) under `perf` or
//! callgrind:
//!
//! ```sh
//! cargo build --release -p bpfkit-bench --example runpath
//! valgrind --tool=callgrind --toggle-collect='bpfkit::Object::run' \
//!     target/release/examples/runpath devmap unchecked 1280
//! ```
//!
//! Instructions per run: the difference between the counts of two runs
//! with 2560 and 1280 repeats, divided by 1280 (compiling and loading
//! cancel; `bpfkit::Object::run` covers the `--repeat` loop and its
//! per-batch set-up, 64 runs a batch, as `XdpRunner` calls it).
//!
//! Arguments: the case's name or a substring of it (as in the benchmark's
//! tables), `jit`, `unchecked` (the JIT after `run --verify`) or `interp`
//! (default `jit`), the number of runs
//! (default 100000). Prints the result and the time per run.

use bpfkit::Engine;
use bpfkit_bench::xdp::{corpus_cases, empty_case, suite_cases, wrapped_cases, BpfkitSide};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("empty", String::as_str);
    // `unchecked`: the JIT in unchecked mode (`run --verify`).
    let unchecked = args.get(2).is_some_and(|e| e == "unchecked");
    let engine = args
        .get(2)
        .and_then(|e| Engine::from_name(e))
        .unwrap_or(Engine::Jit);
    let repeat: u32 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let cases: Vec<_> = std::iter::once(empty_case())
        .chain(suite_cases())
        .chain(wrapped_cases())
        .chain(corpus_cases())
        .collect();
    let case = cases
        .iter()
        .find(|c| c.name == name)
        .or_else(|| cases.iter().find(|c| c.name.contains(name)))
        .unwrap_or_else(|| panic!("no case named like {name:?}"));
    let mut side = if unchecked {
        BpfkitSide::load_verified(case).expect("loads and verifies")
    } else {
        BpfkitSide::load(case, engine).expect("loads")
    };
    let out = side.run(repeat).expect("runs");
    println!(
        "{}: {} runs on {}: retval {}, {} ns/run",
        case.name,
        repeat,
        engine.name(),
        out.retval,
        out.duration_ns
    );
}
