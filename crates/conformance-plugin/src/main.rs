//! `bpfkit-conformance-plugin [MEM] [--engine interp|jit] [--elf] [--debug]` (`jit`: the x86-64 JIT, checked mode)
//!
//! Speaks the bpf_conformance plugin protocol: MEM (hex bytes) as the first
//! argument when present, the program as hex on stdin (or a small ELF
//! object with `--elf`), r0 printed in hex on stdout. Exit status: 0 with
//! r0 printed; 1 when the program trapped; 2 for unusable input or usage,
//! with a one-line message on stderr.
#![forbid(unsafe_code)]

use bpfkit_conformance_plugin::{elf_program, parse_hex, run_interp, run_jit};
use bpfkit_isa::Program;
use std::io::Read;
use std::process::ExitCode;

const USAGE: &str =
    "usage: bpfkit-conformance-plugin [MEM] [--engine interp|jit] [--elf] [--debug] [--program HEX]";

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mem_hex: Option<String> = None;
    let mut engine = "interp".to_string();
    let mut elf = false;
    let mut debug = false;
    let mut program_hex: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--engine" | "--program" => {
                let Some(v) = args.get(i + 1) else {
                    return fail(2, format!("{a} needs a value\n{USAGE}"));
                };
                if a == "--engine" {
                    engine = v.clone();
                } else {
                    program_hex = Some(v.clone());
                }
                i += 1;
            }
            "--elf" => elf = true,
            "--debug" => debug = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if i == 0 && !a.starts_with("--") => mem_hex = Some(a.to_string()),
            _ => return fail(2, format!("unknown argument '{a}'\n{USAGE}")),
        }
        i += 1;
    }
    let jit = match engine.as_str() {
        "interp" => false,
        "jit" => true,
        other => return fail(2, format!("unknown engine '{other}' (interp or jit)")),
    };
    let mem = match mem_hex.as_deref().map(parse_hex).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => return fail(2, format!("bad memory: {e}")),
    };
    let mut input = Vec::new();
    if program_hex.is_none() {
        if let Err(e) = std::io::stdin().read_to_end(&mut input) {
            return fail(2, format!("cannot read stdin: {e}"));
        }
    }
    let code = if elf {
        match elf_program(&input) {
            Ok(c) => c,
            Err(e) => return fail(2, e),
        }
    } else {
        let text = match &program_hex {
            Some(h) => h.clone(),
            None => String::from_utf8_lossy(&input).into_owned(),
        };
        match parse_hex(&text) {
            Ok(c) => c,
            Err(e) => return fail(2, format!("bad program: {e}")),
        }
    };
    let prog = match Program::decode(&code) {
        Ok(p) => p,
        Err(e) => return fail(2, format!("invalid program: {e}")),
    };
    let result = if jit {
        if debug {
            eprintln!("--debug: the JIT does not trace; run with --engine interp for a trace");
        }
        match run_jit(&prog, &mem) {
            Ok(r) => r,
            Err(e) => return fail(2, e),
        }
    } else {
        run_interp(&prog, &mem, debug)
    };
    match result {
        Ok(r0) => {
            println!("{r0:x}");
            ExitCode::SUCCESS
        }
        Err(trap) => fail(1, trap),
    }
}
