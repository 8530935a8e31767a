//! The verdict corpus: data files of small programs with the verdict the
//! running kernel gave them (see `README.md` beside this file for the
//! format). Shared by the `verdicts` test and the `verify_time` example,
//! each of which uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bpfkit_abi::{MapDef, MapType, ProgType};
use bpfkit_isa::{assemble, Imm64, Insn, Program, Syntax};

/// What the kernel said about a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Loaded.
    Accepted,
    /// Rejected at `insn` (when the log names one) with `message`.
    Rejected {
        insn: Option<usize>,
        message: String,
    },
}

impl Expect {
    pub fn accepted(&self) -> bool {
        *self == Expect::Accepted
    }

    /// The `@expect` line's text after the keyword.
    pub fn render(&self) -> String {
        match self {
            Expect::Accepted => "accepted".into(),
            Expect::Rejected { insn, message } => match insn {
                Some(i) => format!("rejected {i}: {message}"),
                None => format!("rejected -: {message}"),
            },
        }
    }

    fn parse(s: &str) -> Result<Expect, String> {
        if s == "accepted" {
            return Ok(Expect::Accepted);
        }
        let rest = s
            .strip_prefix("rejected ")
            .ok_or_else(|| format!("bad @expect `{s}`"))?;
        let (at, message) = rest
            .split_once(": ")
            .ok_or_else(|| format!("bad @expect `{s}`: no `INSN: message`"))?;
        let insn = if at == "-" {
            None
        } else {
            Some(at.parse().map_err(|_| format!("bad insn `{at}`"))?)
        };
        Ok(Expect::Rejected {
            insn,
            message: message.to_string(),
        })
    }
}

/// Where a case's instructions come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Assembly in the file (map references by index into `maps`).
    Asm(String),
    /// A program of a clang-built object beside the data file.
    Object { path: PathBuf, prog: String },
}

/// One program of the corpus.
#[derive(Clone, Debug)]
pub struct Case {
    /// The data file's stem (the theme).
    pub theme: String,
    pub name: String,
    pub prog_type: ProgType,
    pub unprivileged: bool,
    pub maps: Vec<MapDef>,
    pub source: Source,
    pub expect: Option<Expect>,
    /// Why bpfkit is known to decide otherwise (the case still counts).
    pub known: Option<String>,
    /// Line of `=== name` in the file (1-based).
    pub line: usize,
}

/// A program ready for both verifiers.
pub struct Loaded {
    pub prog: Program,
    pub maps: Vec<MapDef>,
    pub license: String,
    /// Global data contents, by map index.
    pub initial_data: Vec<Option<Vec<u8>>>,
}

impl Case {
    /// The instructions and map definitions.
    pub fn load(&self) -> Result<Loaded, String> {
        match &self.source {
            Source::Asm(text) => {
                let insns = assemble(text, Syntax::Llvm).map_err(|e| e.to_string())?;
                let prog = Program::from_insns(insns).map_err(|e| e.to_string())?;
                Ok(Loaded {
                    prog,
                    maps: self.maps.clone(),
                    license: "GPL".into(),
                    initial_data: vec![None; self.maps.len()],
                })
            }
            Source::Object { path, prog } => {
                let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let obj = bpfkit_elf::LoadedObject::load(&data).map_err(|e| e.to_string())?;
                let p = obj
                    .program(prog)
                    .ok_or_else(|| format!("no program {prog} in {}", path.display()))?;
                Ok(Loaded {
                    prog: p.insns.clone(),
                    maps: obj.maps.iter().map(|m| m.def.clone()).collect(),
                    license: p.license.clone(),
                    initial_data: obj.maps.iter().map(|m| m.initial_data.clone()).collect(),
                })
            }
        }
    }
}

/// The corpus directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/verdicts")
}

/// Every `*.txt` data file of the corpus, sorted.
pub fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/verdicts")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

fn parse_map(s: &str) -> Result<MapDef, String> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 4 && f.len() != 5 {
        return Err(format!(
            "bad @map `{s}`: TYPE KEY_SIZE VALUE_SIZE MAX_ENTRIES [FLAGS]"
        ));
    }
    let t = MapType::from_name(f[0]).ok_or_else(|| format!("unknown map type {}", f[0]))?;
    let n = |x: &str| x.parse::<u32>().map_err(|_| format!("bad number {x}"));
    let mut d = MapDef::new(t, n(f[1])?, n(f[2])?, n(f[3])?);
    if let Some(flags) = f.get(4) {
        d.map_flags = n(flags)?;
    }
    Ok(d)
}

/// Parses one data file.
pub fn parse(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let theme = path.file_stem().unwrap().to_string_lossy().into_owned();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cases: Vec<Case> = Vec::new();
    let mut asm = String::new();
    let mut object: Option<PathBuf> = None;
    let mut prog: Option<String> = None;
    let finish = |cases: &mut Vec<Case>,
                  asm: &mut String,
                  object: &mut Option<PathBuf>,
                  prog: &mut Option<String>|
     -> Result<(), String> {
        if let Some(c) = cases.last_mut() {
            c.source = match (object.take(), prog.take()) {
                (Some(path), Some(prog)) => Source::Object { path, prog },
                (None, None) => Source::Asm(std::mem::take(asm)),
                _ => return Err(format!("{}: @object needs @prog and back", c.name)),
            };
            asm.clear();
        }
        Ok(())
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |e: String| format!("{}:{}: {e}", path.display(), i + 1);
        if let Some(name) = line.strip_prefix("=== ") {
            finish(&mut cases, &mut asm, &mut object, &mut prog).map_err(at)?;
            if cases.iter().any(|c| c.name == name.trim()) {
                return Err(at(format!("duplicate name {name}")));
            }
            cases.push(Case {
                theme: theme.clone(),
                name: name.trim().to_string(),
                prog_type: ProgType::SocketFilter,
                unprivileged: false,
                maps: Vec::new(),
                source: Source::Asm(String::new()),
                expect: None,
                known: None,
                line: i + 1,
            });
            continue;
        }
        let Some(c) = cases.last_mut() else {
            // The file's preamble.
            continue;
        };
        if let Some(d) = line.strip_prefix('@') {
            let (key, val) = d.split_once(' ').unwrap_or((d, ""));
            let val = val.trim();
            match key {
                "type" => {
                    c.prog_type = ProgType::from_name(val)
                        .ok_or_else(|| at(format!("unknown program type {val}")))?
                }
                "unpriv" => c.unprivileged = true,
                "map" => c.maps.push(parse_map(val).map_err(at)?),
                "expect" => c.expect = Some(Expect::parse(val).map_err(at)?),
                "known" => c.known = Some(val.to_string()),
                "object" => object = Some(base.join(val)),
                "prog" => prog = Some(val.to_string()),
                _ => return Err(at(format!("unknown directive @{key}"))),
            }
        } else {
            asm.push_str(raw);
            asm.push('\n');
        }
    }
    finish(&mut cases, &mut asm, &mut object, &mut prog)?;
    Ok(cases)
}

/// Every case of the corpus.
pub fn all() -> Vec<Case> {
    let mut all = Vec::new();
    for f in files() {
        all.extend(parse(&f).unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

/// What the kernel said, with its own verification time.
pub struct KernelResult {
    pub expect: Expect,
    pub time_usec: Option<u64>,
}

fn create_map(d: &MapDef) -> Result<bpfkit_kernel::Map, String> {
    // Maps of maps need a template inner map for their creation only.
    let inner = match &d.inner {
        Some(t) => Some(create_map(t)?),
        None => None,
    };
    bpfkit_kernel::Map::create(&bpfkit_kernel::MapSpec {
        map_type: d.map_type as u32,
        key_size: d.key_size,
        value_size: d.value_size,
        max_entries: d.max_entries,
        map_flags: d.map_flags,
        inner_map_fd: inner.as_ref().map(|m| m.fd()),
        ..Default::default()
    })
    .map_err(|e| format!("map {d:?}: {e}"))
}

/// Loads the program of `l` as `prog_type` into the running kernel at
/// `log_level` (its maps created for it and closed after), `unprivileged`
/// as `@unpriv` says: whether it was accepted, and the verifier log.
pub fn kernel_load_raw(
    prog_type: ProgType,
    unprivileged: bool,
    l: &Loaded,
    log_level: u32,
) -> Result<(bool, String), String> {
    let mut maps = Vec::new();
    for (d, init) in l.maps.iter().zip(&l.initial_data) {
        let m = create_map(d)?;
        if let Some(data) = init {
            m.update(&0u32.to_le_bytes(), data, 0)
                .map_err(|e| e.to_string())?;
        }
        maps.push(m);
    }
    let fd = |idx: i32| maps.get(idx as usize).map(|m| m.fd()).unwrap_or(-1);
    let bytes = l.prog.to_bytes_with_map_fds(fd);
    let load = || {
        let mut load = bpfkit_kernel::ProgLoad::new(prog_type as u32, &bytes);
        load.license = l.license.clone();
        load.log_level = log_level;
        load.func_starts = func_starts(&l.prog);
        match load.load() {
            Ok(p) => Ok((true, p.log().to_string())),
            Err(bpfkit_kernel::KernelError::Rejected { log, .. }) => Ok((false, log)),
            Err(e) => Err(e.to_string()),
        }
    };
    if unprivileged {
        bpfkit_kernel::without_ptr_leak_caps(load).map_err(|e| e.to_string())?
    } else {
        load()
    }
}

/// The kernel's verdict on `case`: level 4 (statistics only) for the
/// verdict, message and time, as kernel-verdicts.jsonl was taken; level 1
/// again for the instruction of a rejection.
/// The subprograms' first slots, main first, when the program takes a
/// function's address (the kernel needs their BTF then); else none.
fn func_starts(prog: &Program) -> Vec<u32> {
    let mut starts = vec![0u32];
    let mut takes_address = false;
    for (pc, insn) in prog.iter() {
        takes_address |= matches!(
            insn,
            Insn::LoadImm64 {
                imm: Imm64::Func(_),
                ..
            }
        );
        if matches!(
            insn,
            Insn::CallLocal(_)
                | Insn::LoadImm64 {
                    imm: Imm64::Func(_),
                    ..
                }
        ) {
            if let Some(t) = insn.branch_target(pc) {
                starts.push(t.0 as u32);
            }
        }
    }
    if !takes_address {
        return Vec::new();
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

pub fn kernel_load(case: &Case, l: &Loaded) -> Result<KernelResult, String> {
    let (ok, log) = kernel_load_raw(case.prog_type, case.unprivileged, l, 4)?;
    let time_usec = bpfkit_kernel::verification_time_usec(&log);
    if ok {
        return Ok(KernelResult {
            expect: Expect::Accepted,
            time_usec,
        });
    }
    let message = bpfkit_kernel::rejection_message(&log).to_string();
    let (_, log1) = kernel_load_raw(case.prog_type, case.unprivileged, l, 1)?;
    Ok(KernelResult {
        expect: Expect::Rejected {
            insn: bpfkit_kernel::rejection_insn(&log1, &message),
            message,
        },
        time_usec,
    })
}
