//! Writes the x86-64 code the JIT emits for a program of an ELF object, for
//! reading with `objdump -D -b binary -mi386:x86-64 FILE`.
//!
//! `cargo run --release -p bpfkit-jit --example dump -- OBJ.o PROG OUT.bin [--verified]`:
//! checked mode by default; `--verified` verifies the program as XDP with
//! the object's maps and compiles it unchecked. Unresolved `lddw`s and
//! unregistered helpers are emitted as they would be without a runtime.

use bpfkit_abi::ProgType;
use bpfkit_elf::LoadedObject;
use bpfkit_jit::{Jit, VerifiedProgram};
use bpfkit_runtime::Helpers;
use bpfkit_verifier::Options;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [obj, name, out, rest @ ..] = args.as_slice() else {
        eprintln!("usage: dump OBJ.o PROG OUT.bin [--verified]");
        std::process::exit(2);
    };
    let fail = |what: String| -> ! {
        eprintln!("dump: {what}");
        std::process::exit(1);
    };
    let data = std::fs::read(obj).unwrap_or_else(|e| fail(format!("{obj}: {e}")));
    let o = LoadedObject::load(&data).unwrap_or_else(|e| fail(format!("{obj}: {e}")));
    let Some(p) = o.program(name) else {
        let names: Vec<&str> = o.programs.iter().map(|p| p.name.as_str()).collect();
        fail(format!("no program {name} in {obj} (programs: {names:?})"));
    };
    let h = Helpers::new();
    let jit = if rest.iter().any(|a| a == "--verified") {
        let maps: Vec<_> = o.maps.iter().map(|m| m.def.clone()).collect();
        let (report, v) =
            VerifiedProgram::verify(&p.insns, ProgType::Xdp, &maps, &Options::default());
        let v = v.unwrap_or_else(|| fail(format!("rejected: {:?}", report.error)));
        Jit::compile_verified(&v, &h)
    } else {
        Jit::new(&p.insns, &h)
    };
    let jit = jit.unwrap_or_else(|e| fail(format!("compile: {e}")));
    std::fs::write(out, jit.code().bytes()).unwrap_or_else(|e| fail(format!("{out}: {e}")));
    println!(
        "{} bytes for {} instructions",
        jit.code().len(),
        p.insns.insns().len()
    );
}
