//! Quick measurements: JIT vs interpreter run time on a few programs, and
//! compile time per 1,000 instructions.
//!
//! `cargo run --release -p bpfkit-jit --example measure [-- --disasm]`;
//! `--profile-lowering`, `--profile-compile`, `--profile-fixed`, `--profile-trivial`,
//! `--profile-helper` loop one thing for 3 s (for `perf record`, or for CPU
//! time per iteration on a busy machine).

use bpfkit_interp::Interpreter;
use bpfkit_isa::{
    asm::{assemble, Syntax},
    Program,
};
use bpfkit_jit::Jit;
use bpfkit_runtime::{Helpers, Memory, RegionKind};
use std::hint::black_box;
use std::time::Instant;

fn prog(text: &str) -> Program {
    Program::from_insns(assemble(text, Syntax::Ubpf).unwrap()).unwrap()
}

const PROGRAMS: &[(&str, &str)] = &[
    (
        "alu loop (1000 iterations)",
        "mov %r0, 0\nmov %r1, 1000\nloop:\nadd %r0, %r1\nxor %r0, 0x55\nlsh %r0, 1\nrsh %r0, 1\nsub %r1, 1\njne %r1, 0, loop\nexit",
    ),
    (
        "stack loop (r10 + const, 1000 iterations)",
        "mov %r1, 1000\nstdw [%r10-8], 0\nloop:\nldxdw %r0, [%r10-8]\nadd %r0, %r1\nstxdw [%r10-8], %r0\nsub %r1, 1\njne %r1, 0, loop\nexit",
    ),
    (
        "packet sum (64 bytes, checked loads)",
        "mov %r0, 0\nmov %r3, %r1\nadd %r3, %r2\nloop:\nldxb %r4, [%r1]\nadd %r0, %r4\nadd %r1, 1\njlt %r1, %r3, loop\nexit",
    ),
    (
        "helper calls (100)",
        "mov %r6, 100\nloop:\nmov %r1, %r6\ncall 1\nsub %r6, 1\njne %r6, 0, loop\nexit",
    ),
    (
        "bpf-to-bpf calls (100)",
        "mov %r6, 100\nloop:\nmov %r1, %r6\ncall local f\nsub %r6, 1\njne %r6, 0, loop\nexit\nf:\nmov %r0, %r1\nadd %r0, 1\nexit",
    ),
    (
        "xdp-like header parse (7 packet loads)",
        "mov %r0, 1\nmov %r3, %r1\nadd %r3, %r2\nmov %r4, %r1\nadd %r4, 34\njgt %r4, %r3, out\nldxh %r5, [%r1+12]\njne %r5, 0x0707, out\nldxb %r6, [%r1+23]\njne %r6, 7, out\nldxw %r7, [%r1+26]\nldxw %r8, [%r1+30]\nxor %r7, %r8\nldxh %r8, [%r1+34]\nldxh %r9, [%r1+36]\nadd %r7, %r8\nadd %r7, %r9\nmod %r7, 64\nadd %r7, %r1\nldxb %r0, [%r7]\nand %r0, 3\nout:\nexit",
    ),
    ("trivial (r0 = 1)", "mov %r0, 1\nexit"),
];

fn time(mut f: impl FnMut() -> u64) -> f64 {
    // Warm up, then the best of 5 batches.
    let mut n = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        if t.elapsed().as_millis() > 20 {
            break;
        }
        n *= 2;
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

/// A large straight-line-and-branches program of about `n` instructions.
fn big(n: usize) -> Program {
    let mut s = String::new();
    let mut i = 0;
    while i < n {
        match i % 10 {
            0 => s += "mov %r1, 17\n",
            1 => s += "add %r0, %r1\n",
            2 => s += "stxdw [%r10-16], %r0\n",
            3 => s += "ldxdw %r2, [%r10-16]\n",
            4 => s += "jgt %r2, 1000, +1\n",
            5 => s += "mul32 %r2, 3\n",
            6 => s += "ldxw %r3, [%r6+4]\n",
            7 => s += "rsh %r2, 3\n",
            8 => s += "jeq %r3, 7, +2\n",
            _ => s += "xor %r0, %r2\n",
        }
        i += 1;
    }
    s += "exit\nexit\nexit\n";
    prog(&s)
}

fn main() {
    let disasm = std::env::args().any(|a| a == "--disasm");
    let compile_only = std::env::args().any(|a| a == "--compile-only");
    if std::env::args().any(|a| a == "--profile-lowering") {
        // For `perf record`: lower a 1,000-instruction program for 3 s.
        let p = big(1000);
        let h = Helpers::new();
        let t = Instant::now();
        let mut k = 0u64;
        while t.elapsed().as_secs() < 3 {
            if let Err(bpfkit_jit::CompileError::TooLarge { .. }) =
                Jit::builder().lower_only().build(&p, &h)
            {
                k += 1;
            }
        }
        println!("{k} lowerings");
        return;
    }
    let trivial = std::env::args().any(|a| a == "--profile-fixed");
    if trivial || std::env::args().any(|a| a == "--profile-compile") {
        // For `perf record` (or CPU time per compile on a busy machine:
        // `/usr/bin/time` user+sys divided by the count): compile a
        // 1,000-instruction program (`--profile-fixed`: `r0 = 1; exit`,
        // the fixed cost), publish and drop it, for 3 s.
        let p = if trivial {
            prog(PROGRAMS[6].1)
        } else {
            big(1000)
        };
        let h = Helpers::new();
        let t = Instant::now();
        let mut k = 0u64;
        while t.elapsed().as_secs() < 3 {
            k += Jit::new(&p, &h).map_or(0, |j| (!j.code().is_empty()) as u64);
        }
        println!("{k} compiles");
        return;
    }
    if std::env::args().any(|a| a == "--forms") {
        // Lowering time per instruction of one form, 1,000 of it in a row.
        let h = Helpers::new();
        for (name, line) in [
            ("add64 reg", "add %r1, %r2"),
            ("add64 imm", "add %r1, 7"),
            ("mov64 imm", "mov %r1, 7"),
            ("mov32 reg", "mov32 %r1, %r2"),
            ("lsh64 imm", "lsh %r1, 3"),
            ("stack load", "ldxdw %r1, [%r10-8]"),
            ("stack store", "stxdw [%r10-8], %r1"),
            ("checked load", "ldxw %r1, [%r6+4]"),
            ("jeq imm (forward)", "jeq %r1, 7, +1"),
            ("ja back", "ja -1"),
        ] {
            // `--forms NAME`: only the forms whose names start with NAME.
            let only = std::env::args().skip_while(|a| a != "--forms").nth(1);
            if only.is_some_and(|o| !name.starts_with(o.as_str())) {
                continue;
            }
            let mut text = String::from("mov %r1, 1\nmov %r2, 1\nmov %r6, 1\n");
            for _ in 0..1000 {
                text += line;
                text.push('\n');
            }
            text += "exit\nexit\n";
            let p = prog(&text);
            let t = time(|| match Jit::builder().lower_only().build(&p, &h) {
                Err(bpfkit_jit::CompileError::TooLarge { insns }) => insns as u64,
                _ => unreachable!(),
            });
            println!("{name:<20} {:>6.1} ns per instruction", t / 1000.0);
        }
        return;
    }
    if std::env::args().any(|a| a == "--fixed") {
        // The fixed cost of a compile, split: lowering `r0 = 1; exit`,
        // publishing (and dropping) its 68 bytes, and the whole compile
        // (and drop), interleaved; medians of 20,000 each.
        let p = prog(PROGRAMS[6].1);
        let h = Helpers::new();
        let code = vec![0xc3u8; 68];
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..20_000 {
            let t0 = Instant::now();
            black_box(Jit::builder().lower_only().build(&p, &h).err());
            let t1 = Instant::now();
            black_box(bpfkit_jit::memory::publish(&code).unwrap());
            let t2 = Instant::now();
            black_box(Jit::new(&p, &h).unwrap());
            let t3 = Instant::now();
            t[0].push((t1 - t0).as_nanos());
            t[1].push((t2 - t1).as_nanos());
            t[2].push((t3 - t2).as_nanos());
        }
        let med = |v: &mut Vec<u128>| {
            v.sort_unstable();
            v[v.len() / 2] as f64 / 1000.0
        };
        let [a, b, c] = t.each_mut().map(med);
        println!(
            "trivial compile {c:.2} us: lowering {a:.2} us, publish + drop {b:.2} us, rest {:.2} us (medians)",
            c - a - b
        );
        return;
    }
    let helper_only = std::env::args().any(|a| a == "--profile-helper");
    if helper_only || std::env::args().any(|a| a == "--profile-trivial") {
        // For `perf record`: run `r0 = 1; exit` (or one helper call) for 3 s.
        let p = prog(if helper_only {
            "mov %r1, 1\ncall 1\nexit"
        } else {
            "mov %r0, 1\nexit"
        });
        let mut h = Helpers::new();
        h.register(1, |_e, a| Ok(a[0]));
        let mut jit = Jit::new(&p, &h).unwrap();
        let mut mem = Memory::new();
        let t = Instant::now();
        let mut k = 0u64;
        while t.elapsed().as_secs() < 3 {
            for _ in 0..1000 {
                k += jit.run(&mut mem, &[]).unwrap();
            }
        }
        println!("{k} runs");
        return;
    }
    let mut h = Helpers::new();
    h.register(1, |_e, a| Ok(a[0] ^ 1));
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "program", "interp ns", "jit ns", "speedup"
    );
    for (name, text) in PROGRAMS.iter().filter(|_| !compile_only) {
        let p = prog(text);
        let mut pkt = [7u8; 64];
        let mut mem = Memory::new();
        let addr = mem.add(RegionKind::Packet, &mut pkt);
        let args = [addr, 64];
        let mut vm = Interpreter::new(&p, &h).unwrap();
        let mut jit = Jit::new(&p, &h).unwrap();
        assert_eq!(vm.run(&mut mem, &args), jit.run(&mut mem, &args), "{name}");
        let ti = time(|| vm.run(&mut mem, &args).unwrap());
        let tj = time(|| jit.run(&mut mem, &args).unwrap());
        println!("{name:<44} {ti:>12.1} {tj:>12.1} {:>7.1}x", ti / tj);
        if disasm && name.starts_with("packet") {
            print_code(jit.code().bytes());
        }
    }
    {
        // The same loop with an instruction budget (exact counting).
        let (name, text) = PROGRAMS[0];
        let p = prog(text);
        let mut mem = Memory::new();
        let mut vm = Interpreter::builder()
            .budget(1 << 40)
            .build(&p, &h)
            .unwrap();
        let mut jit = Jit::builder().budget(1 << 40).build(&p, &h).unwrap();
        assert_eq!(vm.run(&mut mem, &[]), jit.run(&mut mem, &[]));
        let ti = time(|| vm.run(&mut mem, &[]).unwrap());
        let tj = time(|| jit.run(&mut mem, &[]).unwrap());
        let name = format!("{name}, budget");
        println!("{name:<44} {ti:>12.1} {tj:>12.1} {:>7.1}x", ti / tj);
    }
    for size in [100usize, 4000, 8800] {
        let tp = time(|| bpfkit_jit::memory::publish(vec![0xc3; size]).unwrap().len() as u64);
        println!("publish + drop of {size} bytes: {:.2} us", tp / 1000.0);
    }
    let tp = time(|| bpfkit_jit::memory::publish(vec![0xc3; 8800]).unwrap().len() as u64);
    // The two halves separately (best of 5 batches of 2,000).
    let (mut pub_best, mut drop_best) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let (mut tpub, mut tdrop) = (0u128, 0u128);
        for _ in 0..2000 {
            let code = vec![0xc3; 8800];
            let t0 = Instant::now();
            let c = bpfkit_jit::memory::publish(code).unwrap();
            let t1 = Instant::now();
            drop(black_box(c));
            tdrop += t1.elapsed().as_nanos();
            tpub += (t1 - t0).as_nanos();
        }
        pub_best = pub_best.min(tpub as f64 / 2000.0);
        drop_best = drop_best.min(tdrop as f64 / 2000.0);
    }
    println!(
        "publish + unmap of 8.8 KB: {:.1} us (publish {:.1} us, drop {:.1} us)",
        tp / 1000.0,
        pub_best / 1000.0,
        drop_best / 1000.0
    );
    for n in [0usize, 1_000, 10_000, 100_000] {
        // n = 0: `r0 = 1; exit`, the fixed cost of a compile.
        let p = if n == 0 { prog(PROGRAMS[6].1) } else { big(n) };
        let n = n.max(1);
        let h = Helpers::new();
        let tc = time(|| Jit::new(&p, &h).unwrap().code().len() as u64);
        let ti = time(|| Interpreter::new(&p, &h).map(|_| 0).unwrap());
        let tl = time(|| match Jit::builder().lower_only().build(&p, &h) {
            Err(bpfkit_jit::CompileError::TooLarge { insns }) => insns as u64,
            _ => unreachable!(),
        });
        let bytes = Jit::new(&p, &h).unwrap().code().len();
        println!(
            "compile {n:>6} insns: jit {:>8.1} us ({:.1} us per 1000; lowering alone {:.1} us per 1000; {:.1} bytes/insn), interp {:>8.1} us",
            tc / 1000.0,
            tc / 1000.0 / (n as f64 / 1000.0),
            tl / 1000.0 / (n as f64 / 1000.0),
            bytes as f64 / n as f64,
            ti / 1000.0
        );
    }
}

fn print_code(code: &[u8]) {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut s = String::new();
    while d.can_decode() {
        let i = d.decode();
        s.clear();
        f.format(&i, &mut s);
        println!("  {:04x}: {s}", i.ip());
    }
}
