//! Compiles the benchmark programs' C (`bench/programs/*.c`) for the host
//! with clang-19 -O2 (loops aligned to 64 bytes) into a static library, so the kernel benchmark can
//! compare the JITs with the same C compiled natively. Each entry function
//! `<name>` becomes `bpfkit_native_<name>`. Without clang (or not on
//! x86-64) nothing is built and the benchmark's native column says so; the
//! cfg `bench_native` tells the benchmark that the library is there.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: [&str; 6] = ["parser", "csum", "crc32", "tokenizer", "calls", "acl"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bench_native)");
    // Read at run time: a build script binary compiled for one checkout can
    // be reused by cargo for another checkout sharing the target directory.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../../bench/programs");
    println!("cargo::rerun-if-changed={}", dir.display());
    println!("cargo::rerun-if-env-changed=CLANG");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        println!("cargo::warning=native benchmark programs: not an x86-64 target, skipped");
        return;
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut objects = Vec::new();
    for name in PROGRAMS {
        let obj = out.join(format!("{name}.o"));
        let status = Command::new(&clang)
            // Loops start 64-byte blocks, as the JIT's do: clang's default
            // (16) left the native acl at 416-557 ns by where the link put
            // it (BENCHMARKS.md, "Code placement").
            .args(["-O2", "-falign-loops=64", "-g0", "-fPIC", "-c"])
            .arg(format!("-D{name}=bpfkit_native_{name}"))
            .arg(dir.join(format!("{name}.c")))
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => objects.push(obj),
            r => {
                println!("cargo::warning=native benchmark programs: {clang} failed on {name}.c ({r:?}), skipped");
                return;
            }
        }
    }
    let lib = out.join("libbpfkit_bench_native.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new("ar")
        .arg("crs")
        .arg(&lib)
        .args(&objects)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        println!("cargo::warning=native benchmark programs: ar failed ({status:?}), skipped");
        return;
    }
    println!("cargo::rustc-link-search=native={}", out.display());
    println!("cargo::rustc-link-lib=static=bpfkit_bench_native");
    println!("cargo::rustc-cfg=bench_native");
}
