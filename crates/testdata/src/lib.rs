//! # bpfkit-testdata
//!
//! Reads test data files in the bpf_conformance format (`*.data`: `-- asm`,
//! `-- raw`, `-- mem`, `-- result`, `-- error`) exactly as the upstream
//! runner does, and finds the shared test data folder.
//!
//! Format rules (see `shared/conformance/README.md`):
//! - a trailing `\r` is dropped; everything from the first `#` is a
//!   comment; blank lines are skipped;
//! - a line containing `--` starts a section, its kind found by substring in
//!   this order: `asm`, `result`, `mem`, `raw`, `no register offset`
//!   (ignored), ` c` (ignored), `error`; any other `--` line makes upstream
//!   skip the file ([`DataFile::skip_reason`]);
//! - `raw` words (`0x` hex or decimal, one instruction slot each, opcode in
//!   the low byte) override `asm`;
//! - `mem` is hex bytes separated by white space, lines joined;
//! - `result` and `error`: the last non-empty line counts; a result is hex
//!   if it contains `0x` (either case), decimal otherwise, as a u64.
//!
//! ```
//! let f = bpfkit_testdata::parse("-- asm\nmov %r0, 1 # one\nexit\n-- mem\n01 02\n-- result\n0x1\n").unwrap();
//! assert_eq!(f.asm, "mov %r0, 1 \nexit\n");
//! assert_eq!(f.mem, [1, 2]);
//! assert_eq!(f.result, Some(1));
//! assert_eq!(f.program().unwrap().insns().len(), 2);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use bpfkit_isa::asm::{assemble, AsmError, Syntax};
use bpfkit_isa::{DecodeError, Program, RawInsn};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// One parsed data file.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct DataFile {
    /// The `asm` section, comments removed, one line per instruction line.
    pub asm: String,
    /// The `raw` section's words, when the file has one (it overrides `asm`).
    pub raw: Option<Vec<u64>>,
    /// The `mem` section's bytes (empty when absent).
    pub mem: Vec<u8>,
    /// The expected `r0`.
    pub result: Option<u64>,
    /// The expected error text.
    pub error: Option<String>,
    /// A `--` line of an unknown kind, which makes upstream skip the file.
    pub unknown_section: Option<String>,
}

/// Why a data file could not be read.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a data file's program could not be built.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
pub enum ProgramError {
    /// The `asm` section does not assemble.
    #[error("assembly: {0}")]
    Asm(#[from] AsmError),
    /// The instructions do not form a valid program.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Asm,
    Result,
    Mem,
    Raw,
    Ignored,
    Error,
}

/// Parses the text of a data file.
pub fn parse(text: &str) -> Result<DataFile, ParseError> {
    let mut f = DataFile::default();
    let mut section = Section::None;
    let mut result_line: Option<(usize, String)> = None;
    let mut raw = Vec::new();
    let mut has_raw = false;
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = match line.find('#') {
            Some(p) => &line[..p],
            None => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        if line.contains("--") {
            section = if line.contains("asm") {
                Section::Asm
            } else if line.contains("result") {
                Section::Result
            } else if line.contains("mem") {
                Section::Mem
            } else if line.contains("raw") {
                has_raw = true;
                Section::Raw
            } else if line.contains("no register offset") || line.contains(" c") {
                Section::Ignored
            } else if line.contains("error") {
                Section::Error
            } else {
                f.unknown_section.get_or_insert_with(|| line.to_string());
                Section::Ignored
            };
            continue;
        }
        let err = |message: String| ParseError {
            line: line_no,
            message,
        };
        match section {
            Section::None | Section::Ignored => {}
            Section::Asm => {
                f.asm.push_str(line);
                f.asm.push('\n');
            }
            Section::Result => result_line = Some((line_no, line.trim().to_string())),
            Section::Error => f.error = Some(line.trim().to_string()),
            Section::Mem => {
                for w in line.split_whitespace() {
                    let b = u8::from_str_radix(w.trim_start_matches("0x"), 16)
                        .map_err(|_| err(format!("bad memory byte '{w}'")))?;
                    f.mem.push(b);
                }
            }
            Section::Raw => {
                for w in line.split_whitespace() {
                    raw.push(parse_u64(w).ok_or_else(|| err(format!("bad raw word '{w}'")))?);
                }
            }
        }
    }
    if has_raw {
        f.raw = Some(raw);
    }
    if let Some((line, text)) = result_line {
        f.result = Some(parse_u64(&text).ok_or(ParseError {
            line,
            message: format!("bad result '{text}'"),
        })?);
    }
    Ok(f)
}

/// A number as the data files write them: hex when it contains `0x` or `0X`
/// (after an optional `-`), decimal otherwise; negative values wrap to u64.
fn parse_u64(s: &str) -> Option<u64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let v = match lower.find("0x") {
        Some(p) => u64::from_str_radix(&lower[p + 2..], 16).ok()?,
        None => body.parse::<u64>().ok()?,
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

impl DataFile {
    /// Why upstream would skip this file: an unknown section, neither a
    /// result nor an error, or no instructions. `None` when it runs.
    pub fn skip_reason(&self) -> Option<String> {
        if let Some(s) = &self.unknown_section {
            return Some(format!("unknown section '{s}'"));
        }
        if self.result.is_none() && self.error.is_none() {
            return Some("neither a result nor an error".into());
        }
        let empty = match &self.raw {
            Some(r) => r.is_empty(),
            None => self.asm.trim().is_empty(),
        };
        if empty {
            return Some("no instructions".into());
        }
        None
    }

    /// The program bytes: the `raw` words if present, else the assembled
    /// `asm` section.
    pub fn program_bytes(&self) -> Result<Vec<u8>, ProgramError> {
        match &self.raw {
            Some(words) => Ok(words.iter().flat_map(|w| w.to_le_bytes()).collect()),
            None => Ok(bpfkit_isa::encode_all(&assemble(&self.asm, Syntax::Ubpf)?)),
        }
    }

    /// The decoded program (from `raw` or `asm`, as [`DataFile::program_bytes`]).
    pub fn program(&self) -> Result<Program, ProgramError> {
        match &self.raw {
            Some(words) => {
                let raws: Vec<RawInsn> = words.iter().map(|&w| RawInsn::from_u64(w)).collect();
                Ok(Program::decode_raw(&raws)?)
            }
            None => Ok(Program::from_insns(assemble(&self.asm, Syntax::Ubpf)?)?),
        }
    }
}

/// Bytes as the plugin protocol writes them: each byte as two lower-case
/// hex digits followed by two spaces (`"00  01  "`).
pub fn protocol_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}  ")).collect()
}

/// The shared test data folder: `$BPFKIT_SHARED`, else `<workspace>/../shared`;
/// `None` when it does not exist (callers print a skip reason).
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BPFKIT_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    dir.is_dir().then_some(dir)
}

/// `shared/conformance`, if present.
pub fn conformance_dir() -> Option<PathBuf> {
    let d = shared_dir()?.join("conformance");
    d.is_dir().then_some(d)
}

/// A data file read from disk.
#[derive(Clone, Debug)]
pub struct TestCase {
    /// File name without `.data`.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// The parsed contents.
    pub file: Result<DataFile, ParseError>,
}

/// Every `*.data` file of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<TestCase>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "data") {
            let text = std::fs::read(&path)?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(TestCase {
                name,
                file: parse(&String::from_utf8_lossy(&text)),
                path,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// uBPF's plugin helpers, by the README's definitions:
/// 0 `gather_bytes`, 1 `memfrob`, 2 `no_op`, 3 `sqrti`, 4 `strcmp_ext`,
/// 5 `unwind` (returns its argument; returning 0 ends the program with
/// r0 = 0).
pub fn conformance_helpers() -> bpfkit_runtime::Helpers {
    let mut h = bpfkit_runtime::Helpers::new();
    h.register(0, |_env, a| {
        Ok((a[0] & 0xff) << 32
            | (a[1] & 0xff) << 24
            | (a[2] & 0xff) << 16
            | (a[3] & 0xff) << 8
            | (a[4] & 0xff))
    });
    h.register(1, |env, a| {
        let g = env.guest();
        for i in 0..a[1] {
            let p = a[0].wrapping_add(i);
            let [b] = g.load::<1>(p)?;
            g.store::<1>(p, [b ^ 42])?;
        }
        Ok(0)
    });
    h.register(2, |_env, _a| Ok(0));
    h.register(3, |_env, a| Ok((a[0] as f64).sqrt() as u64));
    h.register(4, |env, a| {
        let g = env.guest();
        let mut i = 0u64;
        loop {
            let [x] = g.load::<1>(a[0].wrapping_add(i))?;
            let [y] = g.load::<1>(a[1].wrapping_add(i))?;
            if x != y || x == 0 {
                return Ok((x as i64 - y as i64) as u64);
            }
            i += 1;
        }
    });
    h.register(5, |_env, a| match a[0] {
        0 => Err(bpfkit_runtime::HelperAbort::Stop { r0: 0 }),
        x => Ok(x),
    });
    h
}

/// A minimal BPF ELF object, as tests need them: one program `f` (a global
/// function symbol) filling section `section` with `code`, and a `GPL`
/// license section. For objects with maps or BTF, tests commit clang-built
/// fixtures instead.
pub fn bpf_object(section: &str, code: &[u8]) -> Vec<u8> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let sec = obj.add_section(Vec::new(), section.as_bytes().to_vec(), SectionKind::Text);
    obj.append_section_data(sec, code, 8);
    obj.add_symbol(Symbol {
        name: b"f".to_vec(),
        value: 0,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(sec),
        flags: SymbolFlags::None,
    });
    let lic = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(lic, b"GPL\0", 1);
    obj.write().expect("writing an in-memory ELF object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_numbers() {
        let f = parse(
            "# header\r\n-- asm\r\nmov %r0, 1\r\nexit # done\r\n-- mem\r\n00 ff\r\n0a\r\n\
             -- raw\r\n0x95 149\r\n-- result\r\n0x5\r\n12\r\n-- no register offset\r\nx\r\n",
        )
        .unwrap();
        assert_eq!(f.asm, "mov %r0, 1\nexit \n");
        assert_eq!(f.mem, [0, 0xff, 0x0a]);
        assert_eq!(f.raw, Some(vec![0x95, 149]));
        assert_eq!(f.result, Some(12), "last line counts, decimal");
        assert_eq!(f.skip_reason(), None);
        assert_eq!(parse("-- result\n0X1f\n").unwrap().result, Some(0x1f));
        assert_eq!(parse("-- result\n-1\n").unwrap().result, Some(u64::MAX));
        assert!(parse("-- result\nzz\n").is_err());
        assert!(parse("-- mem\n0g\n").is_err());
    }

    #[test]
    fn error_and_skips() {
        let f = parse("-- asm\nexit\n-- error\nfirst\nBad thing\n").unwrap();
        assert_eq!(f.error.as_deref(), Some("Bad thing"));
        assert_eq!(f.skip_reason(), None);
        let f = parse("-- asm\nexit\n").unwrap();
        assert!(f.skip_reason().unwrap().contains("neither"));
        let f = parse("-- asm\nexit\n-- weird\n-- result\n1\n").unwrap();
        assert!(f.skip_reason().unwrap().contains("unknown section"));
        let f = parse("-- asm\n-- result\n1\n").unwrap();
        assert_eq!(f.skip_reason().as_deref(), Some("no instructions"));
        // C source sections are ignored, `--` lines inside too are sections.
        let f = parse("-- c\nint x;\n-- asm\nexit\n-- result\n0\n").unwrap();
        assert_eq!(f.asm, "exit\n");
    }

    #[test]
    fn raw_overrides_asm() {
        let f = parse("-- asm\nmov %r0, 2\nexit\n-- raw\n0x00000001000000b7\n0x95\n-- result\n1\n")
            .unwrap();
        let p = f.program().unwrap();
        assert_eq!(p.insns().len(), 2);
        assert_eq!(f.program_bytes().unwrap(), p.to_bytes());
        assert_eq!(protocol_hex(&[0, 0xab]), "00  ab  ");
    }

    #[test]
    fn conformance_files_parse() {
        let Some(dir) = conformance_dir() else {
            eprintln!("skipped: shared/conformance not found (set BPFKIT_SHARED)");
            return;
        };
        let cases = load_dir(&dir).unwrap();
        assert_eq!(cases.len(), 313);
        for c in &cases {
            let f = c
                .file
                .as_ref()
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(f.skip_reason(), None, "{}", c.name);
            f.program().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }
}
