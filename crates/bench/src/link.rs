//! Just enough linking to turn a benchmark object into flat bytecode.
//!
//! clang puts the entry function in its named section (`bench`) and every
//! non-inlined `static` function in `.text`. A call from the entry to `.text`
//! is encoded `call imm` with `src = 1` (`BPF_PSEUDO_CALL`) and an
//! `R_BPF_64_32` relocation against a symbol of `.text`; calls inside `.text`
//! are already pc-relative and carry no relocation. Like libbpf
//! (`bpf_object__reloc_code`), we append `.text` after the entry section and
//! rewrite each relocated call so that its `imm` counts slots from the next
//! instruction to the callee in the combined program:
//!
//! ```text
//! callee slot in .text = sym.st_value / 8 + imm + 1   (imm as clang left it)
//! new imm              = text_base + callee slot - (call slot + 1)
//! ```
//!
//! (For a section symbol clang stores the callee offset in `imm`; for a
//! function symbol `imm` is `-1` and `st_value` is the callee, so the one
//! formula covers both.) Anything else (map references, global data, helper
//! relocations) is an error: the benchmark programs use none. The real loader
//! is `bpfkit-elf`; this stays local and small on purpose.

use object::elf::R_BPF_64_32;
use object::read::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use object::RelocationFlags;
use thiserror::Error;

/// Size of one instruction slot.
const SLOT: usize = 8;
/// Opcode of `call` (class JMP, op CALL).
const OP_CALL: u8 = 0x85;
/// `src` of a bpf-to-bpf call.
const PSEUDO_CALL: u8 = 1;

/// Why an object could not be linked.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The bytes are not a readable ELF object.
    #[error("not a readable object file")]
    Parse(#[from] object::read::Error),
    /// No section of that name.
    #[error("no section named {name:?}")]
    NoSection {
        /// The section looked for.
        name: String,
    },
    /// A section's size is not a whole number of instructions.
    #[error("section {name:?} is {len} bytes, not a multiple of 8")]
    Misaligned {
        /// Section name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A relocation this linker does not handle.
    #[error("unsupported relocation at byte {offset:#x} of {section:?}: {what}")]
    Unsupported {
        /// Section holding the relocated instruction.
        section: String,
        /// Byte offset of the relocation in that section.
        offset: u64,
        /// What is unsupported.
        what: &'static str,
    },
    /// A call whose target falls outside `.text`.
    #[error("call at slot {slot} of {section:?} targets slot {target} outside .text")]
    CallOutOfRange {
        /// Section holding the call.
        section: String,
        /// Slot of the call in that section.
        slot: usize,
        /// The computed target slot in `.text`.
        target: i64,
    },
}

/// Links the entry section `entry` of the ELF object `data` with `.text`
/// (if the object has one) into one flat program, as raw little-endian
/// instruction bytes.
pub fn link(data: &[u8], entry: &str) -> Result<Vec<u8>, LinkError> {
    let file = object::File::parse(data)?;
    let entry_sec = file
        .section_by_name(entry)
        .ok_or_else(|| LinkError::NoSection {
            name: entry.to_owned(),
        })?;
    let text_sec = file.section_by_name(".text").filter(|s| s.size() > 0);

    let mut code = section_code(&entry_sec, entry)?;
    let text_base = code.len() / SLOT;
    let text_index = text_sec.as_ref().map(|s| s.index());
    if let Some(text) = &text_sec {
        code.extend_from_slice(&section_code(text, ".text")?);
    }
    let text_slots = (code.len() / SLOT - text_base) as i64;

    // Relocations of the entry section (base 0) and of .text (base text_base).
    let mut sections = vec![(entry_sec, 0usize)];
    if let Some(text) = text_sec {
        sections.push((text, text_base));
    }
    for (section, base) in &sections {
        let name = section.name().unwrap_or("?").to_owned();
        for (offset, reloc) in section.relocations() {
            let unsupported = |what| LinkError::Unsupported {
                section: name.clone(),
                offset,
                what,
            };
            if !matches!(reloc.flags(), RelocationFlags::Elf { r_type } if r_type == R_BPF_64_32) {
                return Err(unsupported("not R_BPF_64_32"));
            }
            let RelocationTarget::Symbol(sym_index) = reloc.target() else {
                return Err(unsupported("target is not a symbol"));
            };
            let sym = file.symbol_by_index(sym_index)?;
            if sym.section_index() != text_index || text_index.is_none() {
                return Err(unsupported("symbol is not in .text"));
            }
            if offset % SLOT as u64 != 0 {
                return Err(unsupported("offset is not at an instruction"));
            }
            let slot = offset as usize / SLOT;
            let at = (base + slot) * SLOT;
            let insn = code
                .get_mut(at..at + SLOT)
                .ok_or_else(|| unsupported("offset beyond the section"))?;
            if insn[0] != OP_CALL || insn[1] >> 4 != PSEUDO_CALL {
                return Err(unsupported("not a bpf-to-bpf call"));
            }
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as i64;
            let target = sym.address() as i64 / SLOT as i64 + imm + 1;
            if !(0..text_slots).contains(&target) {
                return Err(LinkError::CallOutOfRange {
                    section: name.clone(),
                    slot,
                    target,
                });
            }
            let new_imm = text_base as i64 + target - (base + slot) as i64 - 1;
            let new_imm = i32::try_from(new_imm).map_err(|_| unsupported("call too far"))?;
            insn[4..8].copy_from_slice(&new_imm.to_le_bytes());
        }
    }
    Ok(code)
}

fn section_code(section: &object::Section<'_, '_>, name: &str) -> Result<Vec<u8>, LinkError> {
    let bytes = section.data()?;
    if bytes.len() % SLOT != 0 {
        return Err(LinkError::Misaligned {
            name: name.to_owned(),
            len: bytes.len(),
        });
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::{Insn, Program};

    const CALLS: &[u8] = include_bytes!("../../../bench/programs/calls.o");
    const CSUM: &[u8] = include_bytes!("../../../bench/programs/csum.o");

    #[test]
    fn object_without_text_is_its_entry_section() {
        let code = link(CSUM, "bench").unwrap();
        let file = object::File::parse(CSUM).unwrap();
        let sec = file.section_by_name("bench").unwrap();
        assert_eq!(code, sec.data().unwrap());
    }

    #[test]
    fn relocated_calls_land_on_function_entries() {
        let code = link(CALLS, "bench").unwrap();
        let prog = Program::decode(&code).unwrap();
        let file = object::File::parse(CALLS).unwrap();
        let entry_slots = file.section_by_name("bench").unwrap().size() as usize / SLOT;
        let text = file.section_by_name(".text").unwrap().index();
        // Function entries of .text, as slots of the linked program.
        let mut entries: Vec<usize> = file
            .symbols()
            .filter(|s| s.section_index() == Some(text) && s.kind() == object::SymbolKind::Text)
            .map(|s| entry_slots + s.address() as usize / SLOT)
            .collect();
        entries.sort();
        assert_eq!(entries.len(), 6, "six noinline functions in calls.c");

        let mut calls = 0;
        for (pc, insn) in prog.iter() {
            if let Insn::CallLocal(_) = insn {
                let target = insn.branch_target(pc).unwrap();
                assert!(entries.contains(&target.0), "call at {pc} to {target}");
                calls += 1;
            }
        }
        // 4 calls in the entry, 4 inside .text (hash_block x2, hash_tail, scramble).
        assert_eq!(calls, 8);
    }

    #[test]
    fn missing_section_is_an_error() {
        assert!(matches!(
            link(CSUM, "xdp"),
            Err(LinkError::NoSection { name }) if name == "xdp"
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            link(b"not an elf", "bench"),
            Err(LinkError::Parse(_))
        ));
        let mut truncated = CALLS.to_vec();
        truncated.truncate(200);
        assert!(link(&truncated, "bench").is_err());
    }
}
