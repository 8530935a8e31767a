//! `bpfkit disasm OBJECT [--prog NAME]`

use crate::helpers::helper_name;
use crate::{read_input, write_stdout, CmdResult};
use anyhow::anyhow;
use bpfkit_elf::{Function, Object, ProgramSection, RelocTarget};
use bpfkit_isa::disasm::format_llvm;
use bpfkit_isa::{decode_one, Imm64, Insn, Pc, RawInsn};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A BPF ELF object, as built by `clang -target bpf`.
    object: PathBuf,
    /// Only this program: a function name (`xdp_prog`) or a section name
    /// (`xdp`, which selects every function in it).
    #[arg(long, value_name = "NAME")]
    prog: Option<String>,
}

/// What gets a header: a function, or slots of a section that no
/// function symbol covers (a whole section without symbols).
struct Unit<'a, 'data> {
    section: &'a ProgramSection<'data>,
    function: Option<&'a Function<'data>>,
    /// Slot range `start..end` in the section.
    start: usize,
    end: usize,
}

pub fn run(args: Args) -> CmdResult {
    let name = args.object.display().to_string();
    let data = read_input(&args.object)?;
    let obj = Object::parse(&data).map_err(|e| anyhow!("{name}: {e}"))?;
    let mut units = Vec::new();
    for sec in obj.programs() {
        // Functions are sorted and do not overlap (sizes are clipped by the
        // reader); slots outside every function get a unit of their own.
        let mut pc = 0;
        for f in &sec.functions {
            let start = f.start().0;
            if start > pc {
                units.push(Unit {
                    section: sec,
                    function: None,
                    start: pc,
                    end: start,
                });
            }
            let end = (start + f.slot_count()).max(start);
            units.push(Unit {
                section: sec,
                function: Some(f),
                start,
                end,
            });
            pc = pc.max(end);
        }
        if pc < sec.slot_count() {
            units.push(Unit {
                section: sec,
                function: None,
                start: pc,
                end: sec.slot_count(),
            });
        }
    }
    if let Some(want) = &args.prog {
        let mut all: Vec<String> = units.iter().map(unit_name).collect();
        all.dedup();
        units.retain(|u| u.function.is_some_and(|f| f.name == want) || u.section.name == want);
        if units.is_empty() {
            let known = if all.is_empty() {
                "it has none".to_string()
            } else {
                format!("programs: {}", all.join(", "))
            };
            return Err(anyhow!("no program named '{want}' in {name} ({known})"));
        }
    }
    if units.is_empty() {
        return Err(anyhow!("{name} has no program sections"));
    }
    let mut out = String::new();
    for (i, unit) in units.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        print_unit(&obj, unit, &mut out);
    }
    write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn unit_name(u: &Unit<'_, '_>) -> String {
    match u.function {
        Some(f) => f.name.to_string(),
        None => u.section.name.to_string(),
    }
}

fn print_unit(obj: &Object<'_>, unit: &Unit<'_, '_>, out: &mut String) {
    let sec = unit.section;
    let (start, end) = (unit.start, unit.end.min(sec.slot_count()));
    match unit.function {
        Some(f) => {
            let _ = writeln!(
                out,
                "section {}, function {} ({}{} instructions):",
                sec.name,
                f.name,
                if f.global { "" } else { "static, " },
                end - start
            );
        }
        None if start == 0 && end == sec.slot_count() => {
            let _ = writeln!(out, "section {} ({} instructions):", sec.name, end - start);
        }
        None => {
            let _ = writeln!(
                out,
                "section {}, instructions {start}..{end} outside any function:",
                sec.name
            );
        }
    }
    let slots: Vec<RawInsn> = sec
        .data
        .chunks_exact(8)
        .map(|c| RawInsn::from_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let mut pc = start;
    while pc < end {
        let offset = pc as u64 * 8;
        for label in sec.labels.iter().filter(|l| l.offset == offset) {
            let _ = writeln!(out, "{}:", label.name);
        }
        let next = if pc + 1 < end {
            slots.get(pc + 1).copied()
        } else {
            None
        };
        match decode_one(slots[pc], next) {
            Ok(insn) => {
                let _ = writeln!(out, "{pc:>6}: {}", describe(obj, sec, Pc(pc), &insn));
                pc += insn.slots();
            }
            Err(e) => {
                let _ = writeln!(out, "{pc:>6}: <invalid: {e}>");
                pc += 1;
            }
        }
    }
}

/// The instruction in llvm syntax, with its target or referent.
fn describe(obj: &Object<'_>, sec: &ProgramSection<'_>, pc: Pc, insn: &Insn) -> String {
    let mut s = format_llvm(insn);
    let reloc = sec.relocation_at(pc);
    match *insn {
        Insn::Ja { .. } | Insn::Jmp { .. } => {
            if let Some(t) = insn.branch_target(pc) {
                let _ = write!(s, " <{}>", slot_name(sec, t));
            }
        }
        Insn::CallLocal(imm) => {
            let target = match reloc.and_then(|r| r.call_target(imm)) {
                Some((idx, slot)) => obj.program_by_index(idx).map(|t| (t, slot)),
                None if reloc.is_none() => insn.branch_target(pc).map(|t| (sec, t)),
                None => None,
            };
            match (target, reloc) {
                (Some((tsec, slot)), _) => {
                    let _ = write!(s, " <{}>", slot_name(tsec, slot));
                }
                (None, Some(r)) => {
                    let _ = write!(s, " <{}>", r.symbol);
                }
                (None, None) => {}
            }
        }
        Insn::Call(h) => match reloc {
            Some(r) if !r.symbol.is_empty() => {
                let _ = write!(s, "  ; {}", r.symbol);
            }
            _ => {
                if let Some(name) = helper_name(h.0) {
                    let _ = write!(s, "  ; {name}");
                }
            }
        },
        Insn::CallKfunc { .. } => {
            if let Some(r) = reloc {
                let _ = write!(s, "  ; kfunc {}", r.symbol);
            }
        }
        Insn::LoadImm64 { imm, .. } => {
            if let Some(r) = reloc {
                match r.target {
                    RelocTarget::Map { name } => {
                        let _ = write!(s, "  ; map {name}");
                    }
                    RelocTarget::Data { section, offset } => {
                        if r.symbol == section {
                            let _ = write!(s, "  ; data {section}");
                        } else {
                            let _ = write!(s, "  ; data {} ({section}+{offset:#x})", r.symbol);
                        }
                    }
                    RelocTarget::Code { section, offset } => {
                        let tname = obj
                            .program_by_index(section)
                            .and_then(|t| t.function_at(offset))
                            .map_or(r.symbol, |f| f.name);
                        let _ = write!(s, "  ; function {tname}");
                    }
                    RelocTarget::Extern => {
                        let _ = write!(s, "  ; extern {}", r.symbol);
                    }
                    RelocTarget::Other => {
                        let _ = write!(s, "  ; {}", r.symbol);
                    }
                }
            } else if let Imm64::Func(_) = imm {
                if let Some(t) = insn.branch_target(pc) {
                    let _ = write!(s, "  ; function {}", slot_name(sec, t));
                }
            }
        }
        _ => {}
    }
    s
}

/// A function or label name at `slot` of `sec`, else the slot index.
fn slot_name(sec: &ProgramSection<'_>, slot: Pc) -> String {
    let offset = slot.0 as u64 * 8;
    if let Some(f) = sec.function_at(offset) {
        return f.name.to_string();
    }
    if let Some(l) = sec.label_at(offset) {
        return l.name.to_string();
    }
    slot.0.to_string()
}
