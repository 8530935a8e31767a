//! bpfkit against the Linux kernel, in the same run.
//!
//! `cargo bench -p bpfkit-bench --bench kernel` (see BENCHMARKS.md).
//!
//! Part 1, per-packet time: every XDP program of `tests/xdp/` (and the
//! XDP programs of the ebpf-samples corpus that both sides run), the same
//! object, maps and packet in the kernel (`BPF_PROG_TEST_RUN`, `repeat`,
//! its `duration_ns`) and in bpfkit (facade + `XdpRunner`, the per-run
//! semantics and `duration_ns` of `bpfkit run --repeat`), on the JIT and
//! the interpreter; the three sides interleaved, several rounds, fastest
//! round of each. The empty program `r0 = XDP_PASS; exit` gives each side's
//! per-run harness overhead.
//!
//! Part 2, JITs: the benchmark programs of `bench/programs/` through the
//! kernel's JIT (their XDP wrappers, `bench/kernel/`), bpfkit's JIT (the
//! same wrappers, `bpfkit run --repeat` semantics), the same C compiled
//! natively (`build.rs`) and rbpf 0.4's JIT, interleaved; and JIT compile
//! time per 1,000 instructions for bpfkit and rbpf.
//!
//! Flags: `--rounds N` (default 7), `--repeat N` (default 100000),
//! `--quick` (3 rounds, repeat 10000), `--compile-only` (only the compile
//! time table), `--only NAME,...` (only the cases whose names contain one
//! of these, and the empty program), `--compile-loop N` (compile each
//! benchmark program N times, `Jit::new` and drop, and nothing else: for
//! `perf record` or callgrind instruction counts, the difference of two
//! values of N giving the cost of N compiles), `--compile-split` (each
//! compile split into lowering, code memory and the rest, medians),
//! `--compile-corpus` (compile time over the ebpf-samples corpus, by
//! program size).

use bpfkit::Engine;
use bpfkit_bench::programs::{BenchProgram, PROGRAMS};
use bpfkit_bench::xdp::{
    corpus_cases, empty_case, suite_cases, wrapped_cases, BpfkitSide, Case, KernelSide, Source,
};
use bpfkit_isa::Program;
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use std::hint::black_box;
use std::time::Instant;

struct Opts {
    rounds: usize,
    repeat: u32,
    compile_only: bool,
    /// `--compile-corpus`: compile time over every program of the
    /// ebpf-samples corpus (real-world sizes), nothing else.
    compile_corpus: bool,
    /// `--compile-split`: each compile split into lowering, code memory
    /// and the rest.
    compile_split: bool,
    /// `--compile-loop N`: only compile the benchmark programs N times.
    compile_loop: Option<usize>,
    /// `--only A,B`: only the cases whose names contain one of these (the
    /// empty program always runs: it gives the harness overhead).
    only: Vec<String>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let mut o = Opts {
        rounds: 7,
        repeat: 100_000,
        compile_only: false,
        compile_corpus: false,
        compile_split: false,
        compile_loop: None,
        only: Vec::new(),
    };
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--compile-only" => o.compile_only = true,
            "--compile-split" => o.compile_split = true,
            "--compile-corpus" => o.compile_corpus = true,
            "--compile-loop" if i + 1 < args.len() => {
                i += 1;
                o.compile_loop = Some(args[i].parse().expect("--compile-loop N"));
            }
            "--quick" => {
                o.rounds = 3;
                o.repeat = 10_000;
            }
            "--rounds" if i + 1 < args.len() => {
                i += 1;
                o.rounds = args[i].parse().expect("--rounds N");
            }
            "--repeat" if i + 1 < args.len() => {
                i += 1;
                o.repeat = args[i].parse().expect("--repeat N");
            }
            "--only" if i + 1 < args.len() => {
                i += 1;
                o.only = args[i].split(',').map(str::to_string).collect();
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    o
}

/// The sides of one case, loaded.
struct Loaded {
    case: Case,
    kernel: Result<KernelSide, String>,
    jit: BpfkitSide,
    interp: BpfkitSide,
    /// The JIT in unchecked mode (`run --verify`), when bpfkit's verifier
    /// accepts the program and its tail-call targets.
    unchecked: Result<BpfkitSide, String>,
    /// Fastest round of each side, ns/run: kernel, jit (checked), interp,
    /// jit unchecked.
    best: [Option<u64>; 4],
    /// Runs per measurement, the same on every side.
    repeat: u32,
}

/// About how long the slowest side (the interpreter) may take per
/// measurement: `repeat` is cut for slow programs.
const TARGET_NS: u64 = 20_000_000;

fn load(case: Case, kernel_ok: &Result<(), String>, max_repeat: u32) -> Result<Loaded, String> {
    let jit = BpfkitSide::load(&case, Engine::Jit).map_err(|e| format!("bpfkit jit: {e}"))?;
    let interp =
        BpfkitSide::load(&case, Engine::Interp).map_err(|e| format!("bpfkit interp: {e}"))?;
    let kernel = match kernel_ok {
        Ok(()) => KernelSide::load(&case),
        Err(e) => Err(e.clone()),
    };
    let unchecked = BpfkitSide::load_verified(&case).map_err(|e| format!("not verified: {e}"));
    let mut l = Loaded {
        case,
        kernel,
        jit,
        interp,
        unchecked,
        best: [None; 4],
        repeat: max_repeat,
    };
    // One run each: the sides must agree before they are timed.
    let j = l.jit.run(1)?;
    let i = l.interp.run(1)?;
    if (j.retval, &j.data_out) != (i.retval, &i.data_out) {
        return Err(format!("jit retval {} != interp {}", j.retval, i.retval));
    }
    if let Ok(u) = &mut l.unchecked {
        let r = u.run(1)?;
        if (r.retval, &r.data_out) != (j.retval, &j.data_out) {
            return Err(format!(
                "unchecked jit retval {} != jit {}",
                r.retval, j.retval
            ));
        }
        if !u.runs_unchecked() {
            return Err("verified but not running unchecked".into());
        }
    }
    if let Ok(k) = &l.kernel {
        let (retval, out, _) = k.run(1)?;
        if (u64::from(retval), &out) != (j.retval, &j.data_out) {
            return Err(format!("kernel retval {retval} != bpfkit {}", j.retval));
        }
    }
    let probe = l.interp.run(64)?.duration_ns.max(1);
    l.repeat = (TARGET_NS / probe).clamp(100, u64::from(max_repeat)) as u32;
    Ok(l)
}

fn min_opt(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One round over every case: each side once (`repeat` runs), the order of
/// the sides rotating from case to case and round to round.
fn round(cases: &mut [Loaded], r: usize) {
    for (c, l) in cases.iter_mut().enumerate() {
        let repeat = l.repeat;
        for k in 0..4 {
            let side = (k + c + r) % 4;
            let ns = match side {
                0 => match &l.kernel {
                    Ok(k) => k.run(repeat).ok().map(|(_, _, ns)| u64::from(ns)),
                    Err(_) => None,
                },
                1 => l.jit.run(repeat).ok().map(|x| x.duration_ns),
                2 => l.interp.run(repeat).ok().map(|x| x.duration_ns),
                _ => match &mut l.unchecked {
                    Ok(u) => u.run(repeat).ok().map(|x| x.duration_ns),
                    Err(_) => None,
                },
            };
            if let Some(ns) = ns {
                l.best[side] = min_opt(l.best[side], ns);
            }
        }
    }
}

fn ratio(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}", a as f64 / b as f64),
        _ => "-".into(),
    }
}

fn cell(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn cellf(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

// ---------------------------------------------------------------------------
// Part 2: native and rbpf

#[cfg(bench_native)]
mod native {
    extern "C" {
        fn bpfkit_native_parser(input: *mut u8) -> u64;
        fn bpfkit_native_csum(input: *mut u8) -> u64;
        fn bpfkit_native_crc32(input: *mut u8) -> u64;
        fn bpfkit_native_tokenizer(input: *mut u8) -> u64;
        fn bpfkit_native_calls(input: *mut u8) -> u64;
        fn bpfkit_native_acl(input: *mut u8) -> u64;
    }

    /// The natively compiled entry of program `name`, run on `input`.
    pub fn run(name: &str, input: &mut [u8]) -> Option<u64> {
        let f: unsafe extern "C" fn(*mut u8) -> u64 = match name {
            "parser" => bpfkit_native_parser,
            "csum" => bpfkit_native_csum,
            "crc32" => bpfkit_native_crc32,
            "tokenizer" => bpfkit_native_tokenizer,
            "calls" => bpfkit_native_calls,
            "acl" => bpfkit_native_acl,
            _ => return None,
        };
        // SAFETY: `input` is the program's own input buffer (`programs.rs`
        // builds it at the size of the C struct the function takes, and the
        // functions read within it: the same bounds the BPF versions keep,
        // checked by the interpreter benchmark's reference tests).
        Some(unsafe { f(input.as_mut_ptr()) })
    }
}

#[cfg(not(bench_native))]
mod native {
    pub fn run(_name: &str, _input: &mut [u8]) -> Option<u64> {
        None
    }
}

/// Nanoseconds per call of `f`: a batch of about 1 ms.
fn batch(n: u64, mut f: impl FnMut() -> u64) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// How many calls of `f` take about 1 ms.
fn calibrate(mut f: impl FnMut() -> u64) -> u64 {
    let mut n = 1;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        if t.elapsed().as_micros() >= 1000 || n >= 1 << 24 {
            return n;
        }
        n *= 2;
    }
}

/// rbpf's JIT on one program and one input. `EbpfVmRaw` (r1 = the input)
/// ties the input's borrow to the VM's lifetime (see BENCHMARKS.md), so the
/// input is leaked and reborrowed for each run.
struct RbpfJit {
    vm: rbpf::EbpfVmRaw<'static>,
    input: *mut u8,
    len: usize,
}

impl RbpfJit {
    fn new(bytecode: &'static [u8], input: &[u8]) -> Result<RbpfJit, String> {
        let mut vm = rbpf::EbpfVmRaw::new(Some(bytecode)).map_err(|e| e.to_string())?;
        vm.jit_compile().map_err(|e| e.to_string())?;
        let leaked: &'static mut [u8] = Box::leak(input.to_vec().into_boxed_slice());
        Ok(RbpfJit {
            vm,
            len: leaked.len(),
            input: leaked.as_mut_ptr(),
        })
    }

    fn run(&self) -> u64 {
        // SAFETY: `input` and `len` come from a leaked boxed slice that
        // nothing else references; each run borrows it only for the call.
        let mem: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(self.input, self.len) };
        // SAFETY: rbpf's verifier accepted the program, and it returns the
        // reference result on this input (checked before timing); the
        // programs read only within their input (the interpreter
        // benchmark's bounds-checked engines run them on the same input).
        unsafe { self.vm.execute_program_jit(mem) }.unwrap_or(u64::MAX)
    }
}

/// Part 2's userspace engines for one benchmark program.
struct Userspace {
    program: &'static BenchProgram,
    input: Vec<u8>,
    reference: u64,
    rbpf: Result<RbpfJit, String>,
    native_ok: Result<(), String>,
    /// bpfkit's JIT called directly with r1 = the input, as rbpf's and the
    /// native function are (no XDP harness, no wrapper, no map lookup).
    direct: Jit,
    n_native: u64,
    n_rbpf: u64,
    n_direct: u64,
    best_native: Option<f64>,
    best_rbpf: Option<f64>,
    best_direct: Option<f64>,
}

fn run_direct(jit: &mut Jit, input: &mut [u8]) -> u64 {
    let mut mem = Memory::new();
    let addr = mem.add(RegionKind::Context, input);
    jit.run(&mut mem, &[addr]).unwrap_or(u64::MAX)
}

fn userspace(program: &'static BenchProgram) -> Userspace {
    let mut input = program.input();
    let reference = program.reference(&input);
    let bytecode: &'static [u8] = Box::leak(program.bytecode().unwrap().into_boxed_slice());
    let rbpf = RbpfJit::new(bytecode, &input).and_then(|vm| {
        let r = vm.run();
        if r == reference {
            Ok(vm)
        } else {
            Err(format!("returned {r:#x}, reference {reference:#x}"))
        }
    });
    let native_ok = match native::run(program.name, &mut input) {
        None => Err("not built (no clang-19 or not x86-64)".into()),
        Some(r) if r == reference => Ok(()),
        Some(r) => Err(format!("returned {r:#x}, reference {reference:#x}")),
    };
    let n_native = if native_ok.is_ok() {
        calibrate(|| native::run(program.name, &mut input).unwrap_or(0))
    } else {
        0
    };
    let prog = Program::decode(bytecode).unwrap();
    let mut direct = Jit::new(&prog, &Helpers::new()).expect("bpfkit jit");
    let r = run_direct(&mut direct, &mut input);
    assert_eq!(r, reference, "{}: bpfkit jit", program.name);
    let n_direct = calibrate(|| run_direct(&mut direct, &mut input));
    let n_rbpf = match &rbpf {
        Ok(vm) => calibrate(|| vm.run()),
        Err(_) => 0,
    };
    Userspace {
        program,
        input,
        reference,
        rbpf,
        native_ok,
        direct,
        n_native,
        n_rbpf,
        n_direct,
        best_native: None,
        best_rbpf: None,
        best_direct: None,
    }
}

fn userspace_round(u: &mut Userspace) {
    let name = u.program.name;
    if u.native_ok.is_ok() {
        let input = &mut u.input;
        let ns = batch(u.n_native, || native::run(name, input).unwrap_or(0));
        u.best_native = Some(u.best_native.map_or(ns, |b| b.min(ns)));
    }
    if let Ok(vm) = &u.rbpf {
        let ns = batch(u.n_rbpf, || vm.run());
        u.best_rbpf = Some(u.best_rbpf.map_or(ns, |b| b.min(ns)));
    }
    let (jit, input) = (&mut u.direct, &mut u.input);
    let ns = batch(u.n_direct, || run_direct(jit, input));
    u.best_direct = Some(u.best_direct.map_or(ns, |b| b.min(ns)));
}

/// Fastest of 51 runs of `f`, ns.
fn fastest(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..51 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_nanos() as f64);
    }
    best
}

/// bpfkit's lowering alone (fastest of 51, ns): the compile without
/// publishing the code, allocating the run state or freeing anything.
fn lowering_time(program: &BenchProgram) -> f64 {
    let bytecode = program.bytecode().unwrap();
    let prog = Program::decode(&bytecode).unwrap();
    let helpers = Helpers::new();
    fastest(|| {
        black_box(Jit::builder().lower_only().build(&prog, &helpers).err());
    })
}

/// `--compile-loop N`: every benchmark program compiled (checked mode,
/// published, dropped) N times, programs decoded once before.
fn compile_loop(n: usize) {
    let progs: Vec<Program> = PROGRAMS
        .iter()
        .map(|p| Program::decode(&p.bytecode().unwrap()).unwrap())
        .collect();
    let helpers = Helpers::new();
    // FNV-1a over the code of every program, to check that a change to the
    // compiler leaves the generated code as it was.
    // Two passes: the compiler keeps per-thread state between compiles
    // (buffers, recorded routines), and a second compile must not differ.
    let mut hashes = [0xcbf2_9ce4_8422_2325u64; 2];
    for hash in &mut hashes {
        for p in &progs {
            for &b in Jit::new(p, &helpers).unwrap().code().bytes() {
                *hash = (*hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let hash = if hashes[0] == hashes[1] {
        format!("{:016x}", hashes[0])
    } else {
        format!("{:016x} then {:016x} (DIFFERENT)", hashes[0], hashes[1])
    };
    let mut bytes = 0usize;
    for _ in 0..n {
        for p in &progs {
            bytes += black_box(Jit::new(p, &helpers).unwrap()).code().len();
        }
    }
    println!(
        "{n} rounds of {} compiles, {bytes} code bytes, code hash {hash}",
        progs.len()
    );
}

/// JIT compile time: fastest of 51 compiles, ns.
fn compile_times(program: &BenchProgram) -> (usize, f64, f64, Option<f64>) {
    let bytecode = program.bytecode().unwrap();
    let prog = Program::decode(&bytecode).unwrap();
    let helpers = Helpers::new();
    let slots = bytecode.len() / 8;
    let mut best = f64::MAX;
    for _ in 0..51 {
        let t = Instant::now();
        black_box(Jit::new(&prog, &helpers).unwrap());
        best = best.min(t.elapsed().as_nanos() as f64);
    }
    // The same compiles with the drop outside the timed part: what a
    // compile alone costs (the column above also frees the code memory,
    // as rbpf's `jit_compile` frees its previous code inside its timing).
    let mut best_new = f64::MAX;
    for _ in 0..51 {
        let t = Instant::now();
        let jit = black_box(Jit::new(&prog, &helpers).unwrap());
        best_new = best_new.min(t.elapsed().as_nanos() as f64);
        drop(jit);
    }
    let leaked: &'static [u8] = Box::leak(bytecode.into_boxed_slice());
    let mut rbpf_best = None;
    if let Ok(mut vm) = rbpf::EbpfVmRaw::new(Some(leaked)) {
        for _ in 0..51 {
            let t = Instant::now();
            if vm.jit_compile().is_err() {
                rbpf_best = None;
                break;
            }
            let ns = t.elapsed().as_nanos() as f64;
            rbpf_best = Some(rbpf_best.map_or(ns, |b: f64| b.min(ns)));
        }
    }
    (slots, best, best_new, rbpf_best)
}

fn main() {
    let o = opts();
    if let Some(n) = o.compile_loop {
        compile_loop(n);
        return;
    }
    if o.compile_split {
        compile_split();
        return;
    }
    if o.compile_corpus {
        compile_corpus();
        return;
    }
    if o.compile_only {
        compile_table();
        return;
    }
    let kernel_ok = bpfkit_kernel::probe().map_err(|e| format!("bpf() refused here: {e}"));
    if let Err(e) = &kernel_ok {
        println!("kernel side skipped: {e}");
    }
    println!(
        "rounds {}, repeat {} per measurement (BPF_PROG_TEST_RUN and bpfkit run --repeat)",
        o.rounds, o.repeat
    );

    // ---- loading, with a correctness check per case
    let mut part1 = Vec::new();
    let mut skipped = Vec::new();
    let mut wrapped = Vec::new();
    let mut corpus = Vec::new();
    let all = std::iter::once(empty_case())
        .chain(suite_cases())
        .map(|c| (1, c))
        .chain(wrapped_cases().into_iter().map(|c| (2, c)))
        .chain(corpus_cases().into_iter().map(|c| (3, c)))
        .filter(|(_, c)| {
            o.only.is_empty()
                || c.source == Source::Empty
                || o.only.iter().any(|n| c.name.contains(n.as_str()))
        });
    for (part, case) in all {
        let name = case.name.clone();
        let case_kernel_ok = kernel_ok.clone().and(case.kernel_ok.clone());
        match load(case, &case_kernel_ok, o.repeat) {
            Ok(l) => {
                if let Err(e) = &l.kernel {
                    skipped.push(format!("{name}: kernel side: {e}"));
                }
                match part {
                    1 => part1.push(l),
                    2 => wrapped.push(l),
                    _ => corpus.push(l),
                }
            }
            Err(e) => skipped.push(format!("{name}: not measured: {e}")),
        }
    }
    // Corpus programs that only bpfkit runs add nothing to a comparison.
    corpus.retain(|l| l.kernel.is_ok() || kernel_ok.is_err());
    let wanted = |name: &str| o.only.is_empty() || o.only.iter().any(|n| name.contains(n.as_str()));
    let mut users: Vec<Userspace> = PROGRAMS
        .iter()
        .filter(|p| wanted(p.name))
        .map(userspace)
        .collect();

    // ---- measurement: every round goes over everything
    let t0 = Instant::now();
    for r in 0..o.rounds {
        round(&mut part1, r);
        round(&mut corpus, r);
        round(&mut wrapped, r);
        for u in &mut users {
            userspace_round(u);
        }
        eprintln!("round {}/{} done ({:.0?})", r + 1, o.rounds, t0.elapsed());
    }

    // ---- part 1 table
    let overhead = part1.first().map(|l| l.best);
    println!(
        "\n## Per-packet time: kernel vs bpfkit (ns/run, fastest of {} rounds)\n",
        o.rounds
    );
    println!("| program | source | repeat | kernel | bpfkit jit | bpfkit jit unchecked | bpfkit interp | jit/kernel | unchecked/kernel | interp/kernel |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in part1.iter().chain(&corpus) {
        let [k, j, i, u] = l.best;
        println!(
            "| {} | {:?} | {} | {} | {} | {} | {} | {} | {} | {} |",
            l.case.name,
            l.case.source,
            l.repeat,
            cell(k),
            cell(j),
            cell(u),
            cell(i),
            ratio(j, k),
            ratio(u, k),
            ratio(i, k)
        );
    }
    if let Some([k, j, i, u]) = overhead {
        println!(
            "\nper-run harness overhead (empty program): kernel {} ns, bpfkit jit {} ns, unchecked {} ns, bpfkit interp {} ns",
            cell(k),
            cell(j),
            cell(u),
            cell(i)
        );
    }
    let geo = |idx: usize| {
        let v: Vec<f64> = part1
            .iter()
            .skip(1)
            .filter_map(|l| match (l.best[idx], l.best[0]) {
                (Some(a), Some(k)) if k > 0 => Some(a as f64 / k as f64),
                _ => None,
            })
            .collect();
        (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
    };
    if let (Some(gj), Some(gi)) = (geo(1), geo(2)) {
        println!("geometric mean over tests/xdp: jit/kernel {gj:.2}, interp/kernel {gi:.2}");
    }
    if let Some(gu) = geo(3) {
        println!("geometric mean over tests/xdp: unchecked/kernel {gu:.2}");
    }

    // ---- part 2 table
    println!(
        "\n## JITs: kernel, bpfkit, native C (clang-19 -O2), rbpf 0.4 (ns/run, fastest of {} rounds)\n",
        o.rounds
    );
    println!("| program | kernel jit | bpfkit jit (run --repeat) | bpfkit unchecked (run --repeat) | bpfkit jit (direct) | native | rbpf jit | bpfkit/kernel | unchecked/kernel | direct/native | direct/rbpf | unchecked/native | unchecked/rbpf |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for u in &users {
        let w = wrapped.iter().find(|l| l.case.name == u.program.name);
        let k = w.and_then(|l| l.best[0]);
        let j = w.and_then(|l| l.best[1]);
        let un = w.and_then(|l| l.best[3]);
        let jf = j.map(|v| v as f64);
        let uf = un.map(|v| v as f64);
        let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            u.program.name,
            cell(k),
            cell(j),
            cell(un),
            cellf(u.best_direct),
            cellf(u.best_native),
            cellf(u.best_rbpf),
            r(jf, k.map(|v| v as f64)),
            r(uf, k.map(|v| v as f64)),
            r(u.best_direct, u.best_native),
            r(u.best_direct, u.best_rbpf),
            r(uf, u.best_native),
            r(uf, u.best_rbpf)
        );
    }
    for l in &corpus {
        let [k, j, _, un] = l.best;
        println!(
            "| {} | {} | {} | {} | - | - | - | {} | {} | - | - | - | - |",
            l.case.name,
            cell(k),
            cell(j),
            cell(un),
            ratio(j, k),
            ratio(un, k)
        );
    }
    println!("\nnotes:");
    for u in &users {
        if let Err(e) = &u.native_ok {
            println!("- {}: native: {e}", u.program.name);
        }
        if let Err(e) = &u.rbpf {
            println!("- {}: rbpf jit: {e}", u.program.name);
        }
        debug_assert!(u.reference == u.program.reference(&u.program.input()));
    }
    for s in &skipped {
        println!("- {s}");
    }
    for l in part1.iter().chain(&wrapped).chain(&corpus) {
        if let Err(e) = &l.unchecked {
            println!("- {}: unchecked column: {e}", l.case.name);
        }
    }

    compile_table();
}

fn compile_table() {
    println!("\n## JIT compile time (fastest of 51 compiles)\n");
    // "publish + drop": what the code memory alone costs for code of that
    // size (`memory::publish` of as many bytes, then the drop; fastest of
    // 51), the part of a compile that is system calls and page faults.
    println!(
        "| program | slots | bpfkit us | bpfkit us/1000 insns | without drop us | rbpf us | rbpf us/1000 insns | bpfkit lowering us | code bytes | publish + drop us |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (mut tot_slots, mut tot_b, mut tot_r, mut tot_l) = (0usize, 0f64, 0f64, 0f64);
    let mut tot_n = 0f64;
    let (mut tot_bytes, mut tot_p) = (0usize, 0f64);
    for p in &PROGRAMS {
        let (slots, b, n, r) = compile_times(p);
        let l = lowering_time(p);
        let (bytes, pd) = publish_time(p);
        tot_slots += slots;
        tot_b += b;
        tot_n += n;
        tot_r += r.unwrap_or(f64::NAN);
        tot_l += l;
        tot_bytes += bytes;
        tot_p += pd;
        let per = |ns: f64| ns / 1000.0 / slots as f64 * 1000.0;
        println!(
            "| {} | {slots} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {bytes} | {:.1} |",
            p.name,
            b / 1000.0,
            per(b),
            n / 1000.0,
            r.map_or("-".into(), |r| format!("{:.1}", r / 1000.0)),
            r.map_or("-".into(), |r| format!("{:.1}", per(r))),
            l / 1000.0,
            pd / 1000.0
        );
    }
    println!(
        "| all | {tot_slots} | {:.1} | {:.1} | {:.1} ({:.1} per 1000) | {:.1} | {:.1} | {:.1} | {tot_bytes} | {:.1} |",
        tot_b / 1000.0,
        tot_b / tot_slots as f64,
        tot_n / 1000.0,
        tot_n / tot_slots as f64,
        tot_r / 1000.0,
        tot_r / tot_slots as f64,
        tot_l / 1000.0,
        tot_p / 1000.0
    );
    // The two ways of filling code memory differ by ~0.6 us per compile
    // (BENCHMARKS.md, "Code memory filled by the kernel").
    println!("\ncode memory: {}", code_fill());
}

/// How this process publishes code (`bpfkit_jit::memory::Fill`).
fn code_fill() -> &'static str {
    match bpfkit_jit::memory::publish([0xc3]).map(|c| c.fill()) {
        Ok(bpfkit_jit::memory::Fill::Copy) => "filled by UFFDIO_COPY into read+execute pages",
        Ok(bpfkit_jit::memory::Fill::Flip) => "written read+write, flipped with mprotect",
        Err(_) => "unavailable",
    }
}

/// `--compile-corpus`: the JIT's compile time (checked mode, fastest of
/// 11 compiles of each program, `Jit::new` and the drop, as
/// `compile_table`) over every program of `$BPFKIT_SHARED/corpus/
/// ebpf-samples` that bpfkit-elf loads, all program types, in buckets of
/// size: the benchmark programs are small (44-456 slots), so their
/// per-1,000 figure is mostly the fixed cost of publishing code memory;
/// these are the sizes real objects have.
fn compile_corpus() {
    let shared = std::env::var_os("BPFKIT_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| bpfkit_bench::xdp::workspace_dir().join("../shared"));
    let dir = shared.join("corpus/ebpf-samples");
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "o") {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        println!(
            "corpus not found under {} (set BPFKIT_SHARED)",
            dir.display()
        );
        return;
    }
    let helpers = Helpers::new();
    // (label, upper bound of slots) -> (programs, slots, ns)
    let buckets = [
        ("< 100 slots", 100usize),
        ("100-999", 1000),
        (">= 1000", usize::MAX),
    ];
    let mut acc = [(0usize, 0usize, 0f64); 3];
    let mut failed = 0;
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let Ok(obj) = bpfkit_elf::LoadedObject::load(&bytes) else {
            continue;
        };
        for p in &obj.programs {
            let slots = p.insns.slot_count();
            let mut best = f64::MAX;
            for _ in 0..11 {
                let t = Instant::now();
                match Jit::new(&p.insns, &helpers) {
                    Ok(j) => drop(black_box(j)),
                    Err(_) => {
                        best = f64::NAN;
                        break;
                    }
                }
                best = best.min(t.elapsed().as_nanos() as f64);
            }
            if best.is_nan() {
                failed += 1;
                continue;
            }
            let b = buckets.iter().position(|&(_, hi)| slots < hi).unwrap_or(2);
            acc[b].0 += 1;
            acc[b].1 += slots;
            acc[b].2 += best;
        }
    }
    println!("\n## JIT compile time over the ebpf-samples corpus (checked mode, fastest of 11 per program)\n");
    println!("| programs | count | slots | bpfkit us | us/1000 insns |");
    println!("|---|---:|---:|---:|---:|");
    let mut tot = (0usize, 0usize, 0f64);
    for (k, (label, _)) in buckets.iter().enumerate() {
        let (n, slots, ns) = acc[k];
        tot = (tot.0 + n, tot.1 + slots, tot.2 + ns);
        if n > 0 {
            println!(
                "| {label} | {n} | {slots} | {:.1} | {:.1} |",
                ns / 1000.0,
                ns / slots as f64
            );
        }
    }
    println!(
        "| all | {} | {} | {:.1} | {:.1} |",
        tot.0,
        tot.1,
        tot.2 / 1000.0,
        tot.2 / tot.1 as f64
    );
    if failed > 0 {
        println!("\n{failed} program(s) did not compile (left out)");
    }
    println!("\ncode memory: {}", code_fill());
}

/// `--compile-split`: per program, medians of 2,001 interleaved
/// lowerings (`lower_only`), publishes and drops of as many code bytes,
/// and whole compiles (`Jit::new` and drop); "rest" is what a compile
/// costs beyond the first two (the `Jit`'s own state, its drop, and
/// whatever the parts do to each other's caches).
fn compile_split() {
    println!("| program | code bytes | compile us | lowering us | publish + drop us | rest us |");
    println!("|---|---:|---:|---:|---:|---:|");
    let helpers = Helpers::new();
    let mut tot = [0f64; 3];
    for p in &PROGRAMS {
        let prog = Program::decode(&p.bytecode().unwrap()).unwrap();
        let code = Jit::new(&prog, &helpers).unwrap().code().bytes().to_vec();
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..2001 {
            let t0 = Instant::now();
            black_box(Jit::builder().lower_only().build(&prog, &helpers).err());
            let t1 = Instant::now();
            black_box(bpfkit_jit::memory::publish(&code).unwrap());
            let t2 = Instant::now();
            black_box(Jit::new(&prog, &helpers).unwrap());
            let t3 = Instant::now();
            t[0].push((t1 - t0).as_nanos() as f64);
            t[1].push((t2 - t1).as_nanos() as f64);
            t[2].push((t3 - t2).as_nanos() as f64);
        }
        let [l, pd, c] = t.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] / 1000.0
        });
        for (s, v) in tot.iter_mut().zip([l, pd, c]) {
            *s += v;
        }
        println!(
            "| {} | {} | {c:.2} | {l:.2} | {pd:.2} | {:.2} |",
            p.name,
            code.len(),
            c - l - pd
        );
    }
    let [l, pd, c] = tot;
    println!("| all | | {c:.2} | {l:.2} | {pd:.2} | {:.2} |", c - l - pd);
    println!("\ncode memory: {}", code_fill());
}

/// Code bytes of `program` (checked mode, as `compile_times` compiles it)
/// and the fastest of 51 publishes and drops of as many bytes, ns.
fn publish_time(program: &BenchProgram) -> (usize, f64) {
    let prog = Program::decode(&program.bytecode().unwrap()).unwrap();
    let code = Jit::new(&prog, &Helpers::new())
        .unwrap()
        .code()
        .bytes()
        .to_vec();
    let mut best = f64::MAX;
    for _ in 0..51 {
        let t = Instant::now();
        black_box(bpfkit_jit::memory::publish(&code).unwrap());
        best = best.min(t.elapsed().as_nanos() as f64);
    }
    (code.len(), best)
}
