//! Guards the kernel benchmark (`benches/kernel.rs`): every case gives the
//! same return value and output packet in bpfkit's interpreter and JIT and,
//! where `bpf()` works and the case may be sent, in the kernel; the wrapped
//! benchmark programs return their Rust reference result; and each wrapper
//! runs the benchmark function compiled to the same instructions as the
//! interpreter benchmark's object. No timing.

use bpfkit::Engine;
use bpfkit_bench::programs::by_name;
use bpfkit_bench::xdp::{
    corpus_cases, empty_case, suite_cases, wrapped_cases, BpfkitSide, Case, KernelSide, Source,
};
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::BTreeMap;

/// Runs a few times in a row: `repeat` keeps the packet and maps of the
/// previous run on both sides, so the last result checks that too.
const REPEAT: u32 = 3;

fn kernel_available() -> bool {
    match bpfkit_kernel::probe() {
        Ok(()) => true,
        Err(e) => {
            println!("kernel side skipped: bpf() is not available here: {e}");
            false
        }
    }
}

fn bpfkit_result(case: &Case, engine: Engine) -> Result<(u64, Vec<u8>), String> {
    let mut side = BpfkitSide::load(case, engine)?;
    let r = side.run(REPEAT)?;
    Ok((r.retval, r.data_out))
}

/// Compares one case on every side; `Ok(false)` when bpfkit cannot load
/// it (corpus programs bpfkit does not support).
fn check(case: &Case, kernel: bool) -> Result<bool, String> {
    let interp = match bpfkit_result(case, Engine::Interp) {
        Ok(r) => r,
        Err(e) if case.source == Source::Corpus => {
            println!("{}: not run by bpfkit: {e}", case.name);
            return Ok(false);
        }
        Err(e) => return Err(format!("{}: interp: {e}", case.name)),
    };
    let jit = bpfkit_result(case, Engine::Jit).map_err(|e| format!("{}: jit: {e}", case.name))?;
    if interp != jit {
        return Err(format!(
            "{}: interp {:?} != jit {:?}",
            case.name, interp.0, jit.0
        ));
    }
    if case.source == Source::Wrapped {
        let prog = by_name(&case.name).unwrap();
        let want = prog.reference(&prog.input()) as u32;
        if interp.0 != u64::from(want) {
            return Err(format!(
                "{}: retval {:#x}, reference {want:#x}",
                case.name, interp.0
            ));
        }
    }
    if !kernel {
        return Ok(true);
    }
    let k = match KernelSide::load(case) {
        Ok(k) => k,
        // The benchmark programs were written for VMs without a verifier:
        // the kernel's rejects most of them as they are (BENCHMARKS.md).
        Err(e) if case.source != Source::Suite => {
            println!("{}: kernel side skipped: {e}", case.name);
            return Ok(true);
        }
        Err(e) => return Err(format!("{}: kernel: {e}", case.name)),
    };
    let (retval, data_out, _) = k.run(REPEAT)?;
    if (u64::from(retval), data_out.clone()) != interp {
        return Err(format!(
            "{}: kernel retval {retval} ({} bytes out), bpfkit {} ({} bytes out)",
            case.name,
            data_out.len(),
            interp.0,
            interp.1.len()
        ));
    }
    Ok(true)
}

#[test]
fn kernel_and_bpfkit_agree_on_every_case() {
    let kernel = kernel_available();
    let mut cases = vec![empty_case()];
    cases.extend(wrapped_cases());
    cases.extend(suite_cases());
    assert!(cases.len() >= 1 + 6 + 20, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check(case, kernel) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn corpus_cases_agree_where_both_run_them() {
    let kernel = kernel_available();
    let cases = corpus_cases();
    if cases.is_empty() {
        println!("skipped: the ebpf-samples corpus is not here (BPFKIT_SHARED)");
        return;
    }
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check(case, kernel) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Instructions of each function symbol of a BPF object, `call` immediates
/// zeroed (their targets depend on the order of functions in .text).
fn functions(object: &[u8]) -> BTreeMap<String, Vec<[u8; 8]>> {
    let file = object::File::parse(object).unwrap();
    let mut out = BTreeMap::new();
    for sym in file.symbols() {
        if sym.kind() != object::SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Some(idx) = sym.section_index() else {
            continue;
        };
        let data = file.section_by_index(idx).unwrap().data().unwrap();
        let body = &data[sym.address() as usize..(sym.address() + sym.size()) as usize];
        let insns = body
            .chunks(8)
            .map(|c| {
                let mut i: [u8; 8] = c.try_into().unwrap();
                if i[0] == 0x85 {
                    i[4..].fill(0);
                }
                i
            })
            .collect();
        out.insert(sym.name().unwrap().to_string(), insns);
    }
    out
}

/// Instructions that the wrapped object's copy of a function may differ in
/// from the original: `bench/kernel/csum_verifiable.c` reads the odd byte
/// at `len & ~1` instead of `len - 1` (one ALU instruction).
fn allowed_differences(program: &str) -> usize {
    usize::from(program == "csum")
}

#[test]
fn wrappers_run_the_benchmark_functions_unchanged() {
    for case in wrapped_cases() {
        let original = functions(by_name(&case.name).unwrap().object());
        let wrapped = functions(&case.object);
        assert!(!original.is_empty());
        for (name, insns) in &original {
            let w = wrapped
                .get(name)
                .unwrap_or_else(|| panic!("{}: no function {name}", case.name));
            assert_eq!(w.len(), insns.len(), "{}: function {name}", case.name);
            let differ = w.iter().zip(insns).filter(|(a, b)| a != b).count();
            assert!(
                differ <= allowed_differences(&case.name),
                "{}: function {name} differs from bench/programs/{}.o in {differ} instructions",
                case.name,
                case.name
            );
        }
    }
}

/// The committed wrapper objects are what `bench/kernel/build.sh` makes
/// from the committed sources (program instructions compared). Skips where
/// clang-19 is not installed.
#[test]
fn committed_wrappers_match_their_sources() {
    use std::process::Command;
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    if Command::new(&clang).arg("--version").output().is_err() {
        println!("skipped: {clang} not found");
        return;
    }
    let dir = bpfkit_bench::xdp::workspace_dir().join("bench/kernel");
    let arch_inc = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let out = std::env::temp_dir().join(format!("bpfkit-bench-wrappers-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let insns = |bytes: &[u8]| {
        let obj = bpfkit_elf::LoadedObject::load(bytes).unwrap();
        obj.programs
            .iter()
            .map(|p| (p.name.clone(), p.insns.insns().to_vec()))
            .collect::<Vec<_>>()
    };
    let mut cases = wrapped_cases();
    cases.push(empty_case());
    for case in cases {
        let stem = case.program.clone();
        let obj = out.join(format!("{stem}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I"])
            .arg(&arch_inc)
            .arg("-c")
            .arg(dir.join(format!("{stem}.c")))
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap();
        assert!(status.success(), "{clang} failed on {stem}.c");
        assert!(
            insns(&std::fs::read(&obj).unwrap()) == insns(&case.object),
            "bench/kernel/{stem}.o is stale: run bench/kernel/build.sh"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
