//! The committed objects in `bench/programs/` are what `build.sh` makes from
//! the committed sources: each `.c` is rebuilt with clang-19 into a temporary
//! directory and its linked code must equal the committed object's. Skips
//! (with a message) where clang-19 is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use bpfkit_bench::link::link;
use bpfkit_bench::programs::PROGRAMS;

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/programs")
}

#[test]
fn committed_objects_match_their_sources() {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    if Command::new(&clang).arg("--version").output().is_err() {
        eprintln!("skipping: {clang} not found");
        return;
    }
    let arch_inc = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let out_dir = std::env::temp_dir().join(format!("bpfkit-bench-objects-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    for p in &PROGRAMS {
        let src = programs_dir().join(format!("{}.c", p.name));
        let obj = out_dir.join(format!("{}.o", p.name));
        let status = Command::new(&clang)
            .args(["-O2", "-g0", "-target", "bpf", "-mcpu=v3", "-I"])
            .arg(&arch_inc)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap();
        assert!(status.success(), "{clang} failed on {}", src.display());
        let fresh = link(&std::fs::read(&obj).unwrap(), "bench").unwrap();
        assert_eq!(
            fresh,
            p.bytecode().unwrap(),
            "bench/programs/{}.o is stale: run bench/programs/build.sh",
            p.name
        );
    }
    std::fs::remove_dir_all(&out_dir).unwrap();
}
