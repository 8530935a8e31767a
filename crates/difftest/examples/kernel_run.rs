//! Prints the kernel's `bpfkit run --json` document for one spec, raw and
//! normalised: what bpfkit has to reproduce.
//!
//! ```sh
//! cargo run -p bpfkit-difftest --example kernel_run -- tests/xdp/lb_tx.json
//! ```

use bpfkit_difftest::{compare, kernel, rules_for, spec::Spec};
use std::path::PathBuf;

fn main() {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: kernel_run SPEC.json");
        std::process::exit(2);
    };
    let spec = Spec::read(&path).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let object = std::fs::read(spec.object_path(&path)).unwrap_or_else(|e| {
        eprintln!("{}: {e}", spec.object_path(&path).display());
        std::process::exit(2)
    });
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("bpf() is not available here: {e}");
        std::process::exit(1);
    }
    let rules = rules_for(&spec, &object).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    match kernel::run(&spec, &object) {
        Ok(run) => {
            println!("{}", serde_json::to_string_pretty(&run.doc).unwrap());
            println!("normalised:");
            let normal = compare::normalise(&run.doc, &rules);
            println!("{}", serde_json::to_string_pretty(&normal).unwrap());
        }
        Err(e) => {
            eprintln!("{e}");
            if let bpfkit_difftest::DiffError::Rejected { log, .. } = e {
                eprintln!("{log}");
            }
            std::process::exit(1);
        }
    }
}
