//! The bpf_conformance suite (shared/conformance, 313 files), run two ways:
//! through the plugin binary with the suite's exact protocol, and in
//! process through the interpreter. Every file must pass; there are no
//! exclusions. Skipped, with a message, when the shared folder is absent.

use bpfkit_conformance_plugin::{run_interp, run_jit};
use bpfkit_testdata::{conformance_dir, load_dir, protocol_hex, DataFile, TestCase};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

fn cases() -> Option<Vec<TestCase>> {
    let Some(dir) = conformance_dir() else {
        eprintln!("skipped: shared/conformance not found (set BPFKIT_SHARED to the shared folder)");
        return None;
    };
    let cases = load_dir(&dir).expect("read conformance folder");
    assert_eq!(cases.len(), 313, "expected the 313 conformance files");
    Some(cases)
}

/// The value the upstream runner reads from a plugin's stdout: one
/// trailing newline dropped, then `strtoull(s, 16)`.
fn parse_strtoull16(out: &str) -> Option<u64> {
    let s = out.strip_suffix('\n').unwrap_or(out).trim_start();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits: String = s.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    if digits.is_empty() {
        return None;
    }
    // strtoull saturates on overflow.
    Some(u64::from_str_radix(&digits, 16).unwrap_or(u64::MAX))
}

/// A minimal ELF64 relocatable object as the suite's ELF mode makes it:
/// EM_BPF, one executable section `section` holding `code`, and a global
/// FUNC symbol `main` covering it.
fn elf_object(code: &[u8], section: &str) -> Vec<u8> {
    fn align8(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(8) {
            v.push(0);
        }
    }
    let strtab = b"\0main\0".to_vec();
    let mut shstrtab = b"\0.symtab\0.strtab\0.shstrtab\0".to_vec();
    let text_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(section.as_bytes());
    shstrtab.push(0);
    let mut out = vec![0u8; 64];
    let text_off = out.len();
    out.extend_from_slice(code);
    align8(&mut out);
    let strtab_off = out.len();
    out.extend_from_slice(&strtab);
    let shstrtab_off = out.len();
    out.extend_from_slice(&shstrtab);
    align8(&mut out);
    let symtab_off = out.len();
    out.extend_from_slice(&[0u8; 24]);
    out.extend_from_slice(&1u32.to_le_bytes()); // "main"
    out.push(0x12); // STB_GLOBAL, STT_FUNC
    out.push(0);
    out.extend_from_slice(&1u16.to_le_bytes()); // section 1
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(code.len() as u64).to_le_bytes());
    align8(&mut out);
    let shoff = out.len();
    #[allow(clippy::too_many_arguments)]
    fn sh(
        out: &mut Vec<u8>,
        name: u32,
        ty: u32,
        flags: u64,
        off: usize,
        size: usize,
        link: u32,
        info: u32,
        entsize: u64,
    ) {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&(off as u64).to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        out.extend_from_slice(&info.to_le_bytes());
        out.extend_from_slice(&8u64.to_le_bytes());
        out.extend_from_slice(&entsize.to_le_bytes());
    }
    out.extend_from_slice(&[0u8; 64]);
    sh(&mut out, text_name, 1, 0x6, text_off, code.len(), 0, 0, 0);
    sh(&mut out, 1, 2, 0, symtab_off, 48, 3, 1, 24);
    sh(&mut out, 9, 3, 0, strtab_off, strtab.len(), 0, 0, 0);
    sh(&mut out, 17, 3, 0, shstrtab_off, shstrtab.len(), 0, 0, 0);
    let mut h = Vec::new();
    h.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
    h.extend_from_slice(&247u16.to_le_bytes()); // EM_BPF
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    h.extend_from_slice(&(shoff as u64).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 0, 0, 64, 5, 4] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    out[..64].copy_from_slice(&h);
    out
}

/// Runs the plugin binary on one file, in hex mode or (with `elf`) ELF
/// mode; Ok(()) when it passes.
fn run_plugin(f: &DataFile, elf: Option<&str>) -> Result<(), String> {
    run_plugin_with(f, elf, None)
}

/// [`run_plugin`] with `--engine ENGINE` among the plugin options (which
/// the upstream runner places after MEM and before `--elf`).
fn run_plugin_engine(f: &DataFile, elf: Option<&str>, engine: &str) -> Result<(), String> {
    run_plugin_with(f, elf, Some(engine))
}

fn run_plugin_with(f: &DataFile, elf: Option<&str>, engine: Option<&str>) -> Result<(), String> {
    let code = f.program_bytes().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bpfkit-conformance-plugin"));
    if !f.mem.is_empty() {
        cmd.arg(protocol_hex(&f.mem));
    }
    if let Some(engine) = engine {
        cmd.args(["--engine", engine]);
    }
    let input = match elf {
        Some(section) => {
            cmd.arg("--elf");
            elf_object(&code, section)
        }
        None => format!("{}\n", protocol_hex(&code)).into_bytes(),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(st) => break st,
            None if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {}s", TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if status.success() {
        if let Some(e) = &f.error {
            return Err(format!(
                "expected error '{e}', plugin exited 0 ({stdout:?})"
            ));
        }
        let got = parse_strtoull16(&stdout).ok_or(format!("unparsable output {stdout:?}"))?;
        let want = f.result.unwrap_or(0);
        if got != want {
            return Err(format!("r0 = {got:#x}, expected {want:#x}"));
        }
        Ok(())
    } else {
        let msg = if stdout.is_empty() { &stderr } else { &stdout };
        let msg = msg.split('\r').next().unwrap_or("").trim_end();
        match &f.error {
            Some(e) if e == msg => Ok(()),
            Some(e) => Err(format!("error '{msg}', expected '{e}'")),
            None => Err(format!("plugin failed ({status}): {msg}")),
        }
    }
}

/// Runs one file in process through the interpreter.
fn run_in_process(f: &DataFile) -> Result<(), String> {
    let prog = f.program().map_err(|e| e.to_string())?;
    match (run_interp(&prog, &f.mem, false), &f.error) {
        (Ok(r0), None) => {
            let want = f.result.unwrap_or(0);
            if r0 == want {
                Ok(())
            } else {
                Err(format!("r0 = {r0:#x}, expected {want:#x}"))
            }
        }
        (Ok(r0), Some(e)) => Err(format!("r0 = {r0:#x}, expected error '{e}'")),
        (Err(t), Some(_)) => {
            // Error texts are plugin-specific; a trap is what we can check.
            let _ = t;
            Ok(())
        }
        (Err(t), None) => Err(t.to_string()),
    }
}

fn run_all(what: &str, run: impl Fn(&DataFile) -> Result<(), String>) {
    let Some(cases) = cases() else { return };
    let (mut passed, mut failed) = (0, 0);
    for c in &cases {
        let result = match &c.file {
            Err(e) => Err(format!("parse: {e}")),
            Ok(f) => match f.skip_reason() {
                Some(reason) => Err(format!("would be skipped: {reason}")),
                None => run(f),
            },
        };
        match result {
            Ok(()) => passed += 1,
            Err(e) => {
                failed += 1;
                println!("FAIL {what} {}: {e}", c.name);
            }
        }
    }
    println!("{what}: {passed} passed, {failed} failed");
    assert_eq!(failed, 0, "{failed} conformance tests failed ({what})");
}

#[test]
fn conformance_plugin_protocol() {
    run_all("plugin", |f| run_plugin(f, None));
}

#[test]
fn conformance_plugin_elf_mode() {
    run_all("elf", |f| run_plugin(f, Some(".text")));
}

#[test]
fn elf_mode_xdp_section() {
    let f = bpfkit_testdata::parse("-- asm\nmov %r0, %r2\nexit\n-- mem\n00 01 02\n-- result\n3\n")
        .unwrap();
    assert_eq!(run_plugin(&f, Some("xdp")), Ok(()));
    assert!(run_plugin(&f, Some(".data")).is_err());
}

#[test]
fn conformance_plugin_protocol_jit() {
    if !bpfkit_jit::is_supported() {
        eprintln!("skipped: the JIT does not run on this platform");
        return;
    }
    run_all("plugin-jit", |f| run_plugin_engine(f, None, "jit"));
}

#[test]
fn conformance_in_process_jit() {
    if !bpfkit_jit::is_supported() {
        eprintln!("skipped: the JIT does not run on this platform");
        return;
    }
    run_all("jit", |f| {
        let prog = f.program().map_err(|e| e.to_string())?;
        let r = run_jit(&prog, &f.mem)?;
        match (r, &f.error) {
            (Ok(r0), None) if r0 == f.result.unwrap_or(0) => Ok(()),
            (Ok(r0), None) => Err(format!(
                "r0 = {r0:#x}, expected {:#x}",
                f.result.unwrap_or(0)
            )),
            (Ok(r0), Some(e)) => Err(format!("r0 = {r0:#x}, expected error '{e}'")),
            (Err(_), Some(_)) => Ok(()),
            (Err(t), None) => Err(t.to_string()),
        }
    });
}

#[test]
fn conformance_in_process() {
    run_all("interp", run_in_process);
}

#[test]
fn strtoull16_like_upstream() {
    assert_eq!(parse_strtoull16("2a\n"), Some(42));
    assert_eq!(parse_strtoull16("  0x2A"), Some(42));
    assert_eq!(parse_strtoull16("ffz"), Some(0xff));
    assert_eq!(parse_strtoull16("\n"), None);
}

#[test]
fn plugin_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_bpfkit-conformance-plugin");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The plugin may exit before reading stdin (usage errors).
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let exit42 = "b7  00  00  00  2a  00  00  00  95  00  00  00  00  00  00  00  \n";
    assert_eq!(run(&[], exit42).1, "2a\n");
    assert_eq!(run(&["--engine", "interp"], exit42).0, Some(0));
    let (code, out, _) = run(&["--engine", "jit"], exit42);
    if bpfkit_jit::is_supported() {
        assert_eq!((code, out.as_str()), (Some(0), "2a\n"));
    } else {
        assert_eq!(code, Some(2));
    }
    assert_eq!(run(&["--engine", "wasm"], exit42).0, Some(2));
    assert_eq!(run(&["zz  "], exit42).0, Some(2));
    assert_eq!(run(&[], "b7  00\n").0, Some(2));
    assert_eq!(run(&[], "ff  00  00  00  00  00  00  00\n").0, Some(2));
    assert_eq!(run(&["--elf"], "garbage").0, Some(2));
    // r1 = memory address, r2 = length; reading past it traps (exit 1).
    let ldx = "61  10  04  00  00  00  00  00  95  00  00  00  00  00  00  00  \n";
    assert_eq!(
        run(&["01  02  03  04  05  06  07  08  "], ldx).1,
        "8070605\n"
    );
    let (code, _, err) = run(&["01  02  "], ldx);
    assert_eq!(code, Some(1));
    assert!(err.contains("out-of-bounds read of 4 bytes"), "{err}");
    let (code, out, err) = run(&["--debug"], exit42);
    assert_eq!((code, out.as_str()), (Some(0), "2a\n"));
    assert!(
        err.contains("mov %r0, 0x2a") || err.contains("mov %r0, 42"),
        "{err}"
    );
}
